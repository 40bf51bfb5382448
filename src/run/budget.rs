//! The budget ledger for `run`: reserve a request's worst case before it is sent,
//! settle with what the provider reports, release what was not used. Plain data; `run`
//! keeps it behind one lock (`gate::Gate`), so reservations are granted one at a time:
//! committed + reserved never exceeds the ceiling as long as every settlement is within
//! its reservation, whatever the concurrency. (A settlement beyond it, an overrun, is
//! committed as billed; the gate records it per call and raises later reservations.)

use crate::money::Usd;

/// A granted reservation; hand it back to [`Ledger::settle`] or [`Ledger::release`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    amount: Usd,
}

impl Reservation {
    pub fn amount(&self) -> Usd {
        self.amount
    }
}

/// Why a reservation was refused: what it needed and what was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub needed: Usd,
    pub available: Usd,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    ceiling: Option<Usd>,
    committed: Usd,
    reserved: Usd,
}

impl Ledger {
    /// A ledger with an optional ceiling and what earlier runs already spent (resume).
    pub fn new(ceiling: Option<Usd>, already_spent: Usd) -> Ledger {
        Ledger {
            ceiling,
            committed: already_spent,
            ..Ledger::default()
        }
    }

    /// What can still be reserved; `None` without a ceiling.
    pub fn available(&self) -> Option<Usd> {
        self.ceiling
            .map(|c| c.saturating_sub(self.committed + self.reserved))
    }

    pub fn committed(&self) -> Usd {
        self.committed
    }

    pub fn reserved(&self) -> Usd {
        self.reserved
    }

    /// Reserves `worst` if it fits under the ceiling.
    pub fn reserve(&mut self, worst: Usd) -> Result<Reservation, Shortfall> {
        match self.available() {
            Some(available) if worst > available => Err(Shortfall {
                needed: worst,
                available,
            }),
            _ => {
                self.reserved += worst;
                Ok(Reservation { amount: worst })
            }
        }
    }

    /// Commits the actual cost of a finished (billed) request and frees its reservation.
    pub fn settle(&mut self, r: Reservation, actual: Usd) {
        self.reserved = self.reserved - r.amount;
        self.committed += actual;
    }

    /// Raises the ceiling by `amount`: money claimed from a shared ledger.
    pub fn grow(&mut self, amount: Usd) {
        if let Some(c) = &mut self.ceiling {
            *c += amount;
        }
    }

    /// Lowers the ceiling by `amount` (given back to the shared ledger).
    pub fn shrink(&mut self, amount: Usd) {
        if let Some(c) = &mut self.ceiling {
            *c = c.saturating_sub(amount);
        }
    }

    /// What could be given back without touching a reservation or the spend.
    pub fn headroom(&self) -> Usd {
        self.available().unwrap_or(Usd::ZERO)
    }

    /// Frees a reservation whose request was never billed.
    pub fn release(&mut self, r: Reservation) {
        self.reserved = self.reserved - r.amount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Usd {
        Usd::parse(s).unwrap()
    }

    #[test]
    fn reserve_settle_release() {
        let mut l = Ledger::new(Some(usd("1.00")), usd("0.25"));
        assert_eq!(l.available(), Some(usd("0.75")));
        let a = l.reserve(usd("0.50")).unwrap();
        assert_eq!(
            l.reserve(usd("0.30")),
            Err(Shortfall {
                needed: usd("0.30"),
                available: usd("0.25")
            })
        );
        let b = l.reserve(usd("0.25")).unwrap();
        assert_eq!(l.available(), Some(Usd::ZERO));
        l.settle(a, usd("0.10"));
        l.release(b);
        assert_eq!(l.committed(), usd("0.35"));
        assert_eq!(l.reserved(), Usd::ZERO);
        assert_eq!(l.available(), Some(usd("0.65")));
    }

    #[test]
    fn never_exceeds_the_ceiling_under_interleaving() {
        // Many in-flight reservations settled in a scrambled order: the invariant
        // committed + reserved <= ceiling holds after every step.
        let ceiling = usd("0.010");
        let mut l = Ledger::new(Some(ceiling), Usd::ZERO);
        let mut inflight = Vec::new();
        let mut state = 12345u64;
        for step in 0..10_000u64 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if state % 3 != 0 || inflight.is_empty() {
                if let Ok(r) = l.reserve(Usd::from_pico(u128::from(state % 900_000_000) + 1)) {
                    inflight.push(r);
                }
            } else {
                let r = inflight.swap_remove((state as usize >> 7) % inflight.len());
                let actual = Usd::from_pico(r.amount().pico() * u128::from(step % 4) / 4);
                l.settle(r, actual);
            }
            assert!(l.committed() + l.reserved() <= ceiling, "step {step}");
        }
    }

    #[test]
    fn no_ceiling_always_grants() {
        let mut l = Ledger::new(None, Usd::ZERO);
        let r = l.reserve(usd("1000")).unwrap();
        assert_eq!(l.available(), None);
        l.settle(r, usd("1200"));
        assert_eq!(
            l.committed(),
            usd("1200"),
            "an overrun is committed as billed"
        );
    }
}
