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
}
