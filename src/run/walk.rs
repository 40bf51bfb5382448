//! The candidate walk: which of a route's candidates a record tries next, decided by a
//! pure state machine over what happened to the last one — a fallback after failures,
//! a downgrade when the budget no longer fits, a skip past an open breaker, a jump to a
//! larger context window, an escalation after a weak answer — and how the record ends
//! when there is nothing left to try. The record task performs each try; this only
//! decides, so every path has a unit test.

use crate::config::OnBudget;
use crate::money::Usd;

/// What happened to the candidate the walk is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its circuit breaker is open: nothing was sent.
    BreakerOpen,
    /// Its worst case does not fit what is left of the budget: nothing was sent.
    NoBudget,
    /// It failed (after its retries), or cannot be used now: move on.
    GaveUp,
    /// The prompt is too long for it: only a larger context window can help.
    TooLong,
    /// The request itself was rejected (400/422): no model will take it.
    Rejected,
    /// It answered; `weak` when an escalation check failed.
    Answered { weak: bool },
}

/// What the record does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try candidate `i`.
    Try(usize),
    /// The last answer stands.
    Done,
    /// An escalation found nothing better: the earlier answer stands.
    KeepEarlier,
    /// No candidate answered.
    Failed,
    /// The budget refused it before anything answered.
    SkippedBudget,
}

/// What the walk knows of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// What its request reserves against the budget.
    pub worst_cost: Usd,
    pub context_window: u64,
}

#[derive(Debug, Clone)]
pub struct Walk {
    steps: Vec<Step>,
    at: usize,
    on_budget: OnBudget,
    escalations_left: u32,
    /// An answer exists that a later one may replace.
    escalated: bool,
    /// Candidates given up for another (not downgrades, not escalations).
    fallbacks: u32,
    stop_run: bool,
}

impl Walk {
    pub fn new(steps: Vec<Step>, on_budget: OnBudget, max_escalations: u32) -> Walk {
        Walk {
            steps,
            at: 0,
            on_budget,
            escalations_left: max_escalations,
            escalated: false,
            fallbacks: 0,
            stop_run: false,
        }
    }

    /// Where the walk starts.
    pub fn first(&mut self) -> Next {
        self.at_or_end(0)
    }

    /// Whether a weak answer from the current candidate would be escalated (so its call
    /// is reported as escalated before the walk moves on).
    pub fn escalates(&self, weak: bool) -> bool {
        weak && self.escalations_left > 0 && self.at + 1 < self.steps.len()
    }

    pub fn fallbacks(&self) -> u32 {
        self.fallbacks
    }

    /// The budget refused a candidate under `--on-budget stop`: the run stops too.
    pub fn stops_the_run(&self) -> bool {
        self.stop_run
    }

    /// Moves on after `event` at the current candidate.
    pub fn after(&mut self, event: Event) -> Next {
        let at = self.at;
        match event {
            Event::BreakerOpen | Event::GaveUp => {
                self.fallbacks += 1;
                self.at_or_end(at + 1)
            }
            Event::NoBudget => {
                let worst = self.steps[at].worst_cost;
                let cheaper = (at + 1..self.steps.len())
                    .filter(|&j| self.steps[j].worst_cost < worst)
                    .min_by_key(|&j| self.steps[j].worst_cost);
                match (self.on_budget, cheaper) {
                    (OnBudget::Downgrade, Some(j)) => self.at_or_end(j),
                    (policy, _) => {
                        self.stop_run |= policy == OnBudget::Stop;
                        self.end(Next::SkippedBudget)
                    }
                }
            }
            Event::TooLong => {
                self.fallbacks += 1;
                let window = self.steps[at].context_window;
                match (at + 1..self.steps.len()).find(|&j| self.steps[j].context_window > window) {
                    Some(j) => self.at_or_end(j),
                    None => self.end(Next::Failed),
                }
            }
            Event::Rejected => self.end(Next::Failed),
            Event::Answered { weak } => {
                if self.escalates(weak) {
                    self.escalations_left -= 1;
                    self.escalated = true;
                    self.at_or_end(at + 1)
                } else {
                    Next::Done
                }
            }
        }
    }

    fn at_or_end(&mut self, i: usize) -> Next {
        if i < self.steps.len() {
            self.at = i;
            Next::Try(i)
        } else {
            self.end(Next::Failed)
        }
    }

    /// How the record ends, `how` unless an earlier answer stands.
    fn end(&self, how: Next) -> Next {
        if self.escalated {
            Next::KeepEarlier
        } else {
            how
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates with these worst costs (µ$) and context windows.
    fn walk(steps: &[(u128, u64)], on_budget: OnBudget, escalations: u32) -> Walk {
        let steps = steps
            .iter()
            .map(|&(micro, window)| Step {
                worst_cost: Usd::from_pico(micro * 1_000_000),
                context_window: window,
            })
            .collect();
        Walk::new(steps, on_budget, escalations)
    }

    const THREE: [(u128, u64); 3] = [(50, 8_000), (200, 8_000), (10, 128_000)];

    #[test]
    fn failures_fall_back_in_order_and_end_failed() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert_eq!(w.first(), Next::Try(0));
        assert_eq!(w.after(Event::GaveUp), Next::Try(1));
        assert_eq!(w.after(Event::GaveUp), Next::Try(2));
        assert_eq!(w.after(Event::GaveUp), Next::Failed);
        assert_eq!(w.fallbacks(), 3);
        assert!(walk(&[], OnBudget::Skip, 1).first() == Next::Failed);
    }

    #[test]
    fn an_open_breaker_is_skipped_as_a_fallback() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert_eq!(w.after(Event::BreakerOpen), Next::Try(1));
        assert_eq!(w.after(Event::Answered { weak: false }), Next::Done);
        assert_eq!(w.fallbacks(), 1);
    }

    #[test]
    fn no_budget_downgrades_to_the_cheapest_later_candidate() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert_eq!(w.after(Event::NoBudget), Next::Try(2), "skips the dearer 1");
        assert_eq!(w.fallbacks(), 0, "a downgrade is not a fallback");
        assert_eq!(
            w.after(Event::NoBudget),
            Next::SkippedBudget,
            "nothing cheaper"
        );
        assert!(!w.stops_the_run());
    }

    #[test]
    fn no_budget_skips_or_stops_the_run_by_policy() {
        let mut skip = walk(&THREE, OnBudget::Skip, 1);
        assert_eq!(skip.after(Event::NoBudget), Next::SkippedBudget);
        assert!(!skip.stops_the_run());
        let mut stop = walk(&THREE, OnBudget::Stop, 1);
        assert_eq!(stop.after(Event::NoBudget), Next::SkippedBudget);
        assert!(stop.stops_the_run());
    }

    #[test]
    fn too_long_jumps_to_a_larger_window_or_fails() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert_eq!(
            w.after(Event::TooLong),
            Next::Try(2),
            "1 has the same window"
        );
        assert_eq!(w.after(Event::TooLong), Next::Failed, "none larger");
        assert_eq!(w.fallbacks(), 2);
    }

    #[test]
    fn a_rejected_request_fails_at_once() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert_eq!(w.after(Event::Rejected), Next::Failed);
    }

    #[test]
    fn a_weak_answer_escalates_within_the_limit_and_keeps_the_earlier_one_if_nothing_better() {
        let mut w = walk(&THREE, OnBudget::Downgrade, 1);
        assert!(w.escalates(true));
        assert!(!w.escalates(false));
        assert_eq!(w.after(Event::Answered { weak: true }), Next::Try(1));
        assert!(!w.escalates(true), "one escalation allowed");
        assert_eq!(w.after(Event::Answered { weak: true }), Next::Done);

        let mut w = walk(&THREE, OnBudget::Downgrade, 2);
        assert_eq!(w.after(Event::Answered { weak: true }), Next::Try(1));
        assert_eq!(w.after(Event::GaveUp), Next::Try(2));
        assert_eq!(w.after(Event::NoBudget), Next::KeepEarlier);
        let mut w = walk(&THREE, OnBudget::Downgrade, 2);
        w.after(Event::Answered { weak: true });
        assert_eq!(w.after(Event::Rejected), Next::KeepEarlier);
        // The last candidate's weak answer has nowhere to go: it stands.
        let mut w = walk(&THREE[..1], OnBudget::Downgrade, 2);
        assert!(!w.escalates(true));
        assert_eq!(w.after(Event::Answered { weak: true }), Next::Done);
    }
}
