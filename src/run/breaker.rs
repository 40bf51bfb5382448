//! A per-model circuit breaker: after `threshold` consecutive failures the model is
//! open (skipped) for `cooldown`; then one half-open probe decides whether it closes
//! again or re-opens. Pure: the caller passes the clock, so tests need no sleeps.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe request is in flight; others are refused until it reports.
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: State,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: State::Closed { failures: 0 },
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    /// May a request be sent now? Moving from open to half-open admits exactly one.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn record_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// The model cannot be used for a while (a 429 asking for a longer wait than we
    /// accept): open at once, whatever the count.
    pub fn trip(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.cooldown,
        };
    }

    /// A request that ended without saying anything about the model's health (it was
    /// never sent, or its task was abandoned). A half-open probe that ends so is given
    /// back: the next request may probe at once. Any other state is unchanged.
    pub fn record_nothing(&mut self, now: Instant) {
        if self.state == State::HalfOpen {
            self.state = State::Open { until: now };
        }
    }

    /// Records a failure that counts against the model (not a 400 for a bad request).
    pub fn record_failure(&mut self, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => State::Open {
                until: now + self.cooldown,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_cools_down_probes_and_recovers() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(30);
        let mut b = Breaker::new(3, cool);
        b.record_failure(t0);
        b.record_failure(t0);
        assert!(b.allow(t0), "two failures: still closed");
        b.record_success();
        b.record_failure(t0);
        b.record_failure(t0);
        assert!(b.allow(t0), "a success resets the count");
        b.record_failure(t0);
        assert_eq!(b.state(), State::Open { until: t0 + cool });
        assert!(!b.allow(t0 + Duration::from_secs(29)));
        assert!(b.allow(t0 + cool), "cooldown over: one probe");
        assert!(!b.allow(t0 + cool), "only one probe at a time");
        b.record_failure(t0 + cool);
        assert_eq!(
            b.state(),
            State::Open {
                until: t0 + cool + cool
            },
            "a failed probe re-opens"
        );
        assert!(b.allow(t0 + cool + cool));
        b.record_success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(b.allow(t0 + cool + cool));
    }

    #[test]
    fn a_probe_that_says_nothing_is_given_back_and_a_trip_opens_at_once() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(30);
        let mut b = Breaker::new(3, cool);
        b.trip(t0);
        assert_eq!(b.state(), State::Open { until: t0 + cool });
        assert!(b.allow(t0 + cool));
        assert_eq!(b.state(), State::HalfOpen);
        b.record_nothing(t0 + cool);
        assert!(b.allow(t0 + cool), "the next request probes");
        assert!(!b.allow(t0 + cool), "one probe at a time");
        b.record_nothing(t0 + cool);
        b.record_nothing(t0 + cool);
        assert!(b.allow(t0 + cool));
        b.record_success();
        assert_eq!(b.state(), State::Closed { failures: 0 });
        b.record_nothing(t0);
        assert_eq!(
            b.state(),
            State::Closed { failures: 0 },
            "closed stays closed"
        );
    }
}
