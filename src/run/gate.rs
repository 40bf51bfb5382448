//! The gate record tasks pass before every request: the budget ledger and the
//! per-model circuit breakers under one short lock, so a reservation costs no round
//! trip and committed + reserved never exceeds the ceiling however many tasks ask at
//! once. A granted reservation is a [`Held`] guard: settled, released, or — if its
//! task panics or is abandoned — released on drop.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::budget::{Ledger, Reservation, Shortfall};
use super::limits::Limits;
use crate::config::{Config, ModelId};
use crate::money::Usd;
use crate::provider::Backend;

/// Why a request failed, without the model's name: what a row's error ends with.
#[derive(Debug, Clone)]
pub(super) struct Cause {
    pub text: Arc<str>,
    /// It will not go away by itself ([`super::policy::is_lasting`]).
    pub lasting: bool,
}

pub(super) enum Grant<'a> {
    Granted(Held<'a>),
    /// With the last failure the model had, if any (what opened it, most likely).
    BreakerOpen(Option<Cause>),
    NoBudget(Shortfall),
}

/// What a request that was not billed says about its model, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// It failed in a way that counts against the model (5xx, timeout, 401…).
    Failed,
    /// It asked for a longer wait than we accept: open the breaker at once.
    Unavailable,
    /// The model answered, with a 400/422 or a context-length error: it is up.
    Answered,
    /// Nothing was learned: it was never sent, or its task was abandoned.
    Unknown,
}

/// The budget ledger and the per-model circuit breakers, shared by record tasks under
/// one lock. Every grant, settlement and release is one short critical section, so
/// committed + reserved never exceeds the ceiling however many tasks ask at once.
pub(super) struct Gate {
    ledger: Ledger,
    /// By model id.
    breakers: Vec<Breaker>,
    /// By model id: the largest (billed, estimated worst case) a call of that model
    /// was ever charged beyond its reservation. Later reservations for the model are
    /// scaled by it, so a provider that counts more tokens than we do surprises the
    /// budget once per model (and per call in flight), not on every call.
    overrun_ratio: Vec<Option<(u128, u128)>>,
    /// By model id: the last failure a request to it met, to say why its breaker is
    /// open.
    last_failure: Vec<Option<Cause>>,
    /// By model id, for log events.
    names: Vec<String>,
}

impl Gate {
    pub(super) fn new(cfg: &Config, ledger: Ledger) -> Gate {
        let cooldown = Duration::from_secs(cfg.run.breaker_cooldown_s);
        Gate {
            ledger,
            breakers: (0..cfg.models.len())
                .map(|_| Breaker::new(cfg.run.breaker_failures, cooldown))
                .collect(),
            overrun_ratio: vec![None; cfg.models.len()],
            last_failure: vec![None; cfg.models.len()],
            names: cfg.models.iter().map(|m| m.name.clone()).collect(),
        }
    }

    /// The spend settled so far (earlier runs included).
    pub(super) fn committed(&self) -> Usd {
        self.ledger.committed()
    }

    /// Money claimed from the shared ledger joins what may be reserved.
    pub(super) fn grow(&mut self, amount: Usd) {
        self.ledger.grow(amount);
    }

    /// What the shared ledger must back for this process: its reservations and the
    /// claimed money no reservation holds yet.
    pub(super) fn claimed_unspent(&self) -> (Usd, Usd) {
        (self.ledger.reserved(), self.ledger.headroom())
    }

    /// Drops claimed money no reservation holds, beyond `keep`.
    pub(super) fn drop_headroom(&mut self, keep: Usd) {
        let h = self.ledger.headroom();
        self.ledger.shrink(h.saturating_sub(keep));
    }

    /// Claimed money beyond `keep` that no reservation holds, taken off what may be
    /// reserved here (to give back to the shared ledger).
    pub(super) fn spare(&mut self, keep: Usd) -> Option<Usd> {
        let h = self.ledger.headroom();
        (h > keep + keep).then(|| {
            let give = h - keep;
            self.ledger.shrink(give);
            give
        })
    }

    /// Reserves `worst` (scaled by the model's overrun ratio) for a request to
    /// `model`, if the budget and its breaker allow.
    fn reserve(&mut self, model: ModelId, worst: Usd) -> Result<Reservation, Refused> {
        let worst = match self.overrun_ratio[model] {
            Some((billed, estimated)) => {
                Usd::from_pico((worst.pico() * billed).div_ceil(estimated.max(1)))
            }
            None => worst,
        };
        // Budget first: a refused reservation must not use up a half-open breaker's
        // single probe.
        match self.ledger.available() {
            Some(available) if worst > available => Err(Refused::NoBudget(Shortfall {
                needed: worst,
                available,
            })),
            _ if !self.breakers[model].allow(Instant::now()) => Err(Refused::BreakerOpen),
            _ => self.ledger.reserve(worst).map_err(Refused::NoBudget),
        }
    }

    /// An answered call: its cost replaces the reservation; the model is healthy. A
    /// cost beyond the reservation raises the model's overrun ratio (`estimated` is the
    /// call's unscaled worst case).
    fn settle(
        &mut self,
        reservation: Reservation,
        model: ModelId,
        cost: Usd,
        estimated: Usd,
    ) -> Usd {
        if cost > reservation.amount() && !estimated.is_zero() {
            let ratio = &mut self.overrun_ratio[model];
            let higher = ratio.is_none_or(|(b, e)| cost.pico() * e > b * estimated.pico());
            if higher {
                *ratio = Some((cost.pico(), estimated.pico()));
            }
        }
        self.ledger.settle(reservation, cost);
        let was_closed = self.breakers[model].is_closed();
        self.breakers[model].record_success();
        if !was_closed {
            tracing::info!(model = %self.names[model], "circuit closed: the model answers again");
        }
        self.ledger.committed()
    }

    /// A request that was not billed: the reservation is freed, and the breaker learns
    /// what `health` says.
    fn release(&mut self, reservation: Reservation, model: ModelId, health: Health) {
        self.ledger.release(reservation);
        let now = Instant::now();
        let breaker = &mut self.breakers[model];
        let was_open = breaker.is_open();
        match health {
            Health::Failed => breaker.record_failure(now),
            Health::Unavailable => breaker.trip(now),
            Health::Answered => breaker.record_success(),
            Health::Unknown => breaker.record_nothing(now),
        }
        if !was_open && breaker.is_open() {
            let why = self.last_failure[model].as_ref().map(|c| &*c.text);
            tracing::warn!(model = %self.names[model], last_error = why, "circuit open: the model is skipped for the cooldown");
        }
    }
}

enum Refused {
    BreakerOpen,
    NoBudget(Shortfall),
}

/// A granted reservation, tied to the gate until it is settled or released. Dropped
/// any other way — the record task panicked or was abandoned — it releases itself,
/// so money is never left reserved and a half-open breaker's probe is given back.
pub(super) struct Held<'a> {
    shared: &'a Shared,
    model: ModelId,
    /// The call's worst case as estimated (before any overrun scaling).
    estimated: Usd,
    reservation: Option<Reservation>,
}

impl Held<'_> {
    /// Charges an answered call; returns the run's spend after it, and what the call
    /// cost beyond its reservation.
    pub(super) fn settle(mut self, cost: Usd) -> (Usd, Usd) {
        let r = self.reservation.take().expect("held until consumed");
        let overrun = cost.saturating_sub(r.amount());
        let spent = self
            .shared
            .gate()
            .settle(r, self.model, cost, self.estimated);
        (spent, overrun)
    }

    pub(super) fn release(mut self, health: Health) {
        let r = self.reservation.take().expect("held until consumed");
        self.shared.gate().release(r, self.model, health);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.shared.gate().release(r, self.model, Health::Unknown);
        }
    }
}

impl Shared {
    /// Remembers the failure a request to `model` met (only failures take the lock).
    pub(super) fn note_failure(&self, model: ModelId, cause: Cause) {
        self.gate().last_failure[model] = Some(cause);
    }

    /// Asks the gate for `worst` on `model`.
    pub(super) fn ask(&self, model: ModelId, worst: Usd) -> Grant<'_> {
        // One lock: the reservation, or why there is none.
        let reserved = {
            let mut gate = self.gate();
            let r = gate.reserve(model, worst);
            let why = match r {
                Err(Refused::BreakerOpen) => gate.last_failure[model].clone(),
                _ => None,
            };
            (r, why)
        };
        match reserved.0 {
            Ok(r) => Grant::Granted(Held {
                shared: self,
                model,
                estimated: worst,
                reservation: Some(r),
            }),
            Err(Refused::BreakerOpen) => Grant::BreakerOpen(reserved.1),
            Err(Refused::NoBudget(short)) => Grant::NoBudget(short),
        }
    }
}

/// What record tasks share: the providers, the rate limits, and the gate.
pub(super) struct Shared {
    pub backend: Backend,
    pub limits: Limits,
    pub gate: Mutex<Gate>,
    /// `--ledger`: the budget and rate limits shared with other processes.
    pub ledger: Option<Arc<crate::ledger::SharedLedger>>,
    /// One claim on the shared ledger at a time: a task that waited re-checks what
    /// the one before it claimed instead of claiming a block of its own.
    pub claiming: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn gate(&self) -> MutexGuard<'_, Gate> {
        // A panic never happens while the gate is held (its methods are plain
        // arithmetic), but a poisoned lock still holds consistent numbers.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::breaker::State;

    #[test]
    fn a_reservation_held_by_a_panicking_task_is_released_and_its_probe_given_back() {
        let cfg = Config::embedded();
        let budget = Usd::parse("1").unwrap();
        let mut gate = Gate::new(&cfg, Ledger::new(Some(budget), Usd::ZERO));
        // Model 0's breaker is open with its cooldown over: the next request probes.
        gate.breakers[0] = Breaker::new(1, Duration::ZERO);
        gate.breakers[0].record_failure(Instant::now());
        let shared = Shared {
            backend: Backend::simulated(&cfg),
            limits: Limits::new(&cfg),
            gate: Mutex::new(gate),
            ledger: None,
            claiming: tokio::sync::Mutex::new(()),
        };
        let half = Usd::parse("0.5").unwrap();
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Grant::Granted(_held) = shared.ask(0, half) else {
                unreachable!("the budget and the breaker allow it")
            };
            assert_eq!(shared.gate().breakers[0].state(), State::HalfOpen);
            panic!("the record task fails while its request is out");
        }));
        assert!(died.is_err());
        let mut gate = shared.gate();
        assert_eq!(gate.ledger.reserved(), Usd::ZERO, "no money stays reserved");
        assert_eq!(gate.ledger.available(), Some(budget));
        assert!(
            gate.breakers[0].allow(Instant::now()),
            "the probe was given back"
        );
    }
}
