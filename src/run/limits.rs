//! Request and token rate limits per model and per provider, plus the pause a 429
//! imposes. Shared by record tasks; waiting happens in the task, never in the
//! dispatcher.
//!
//! - `rpm` is spread smoothly (governor's GCRA): one request every 60/rpm seconds, no
//!   bursts.
//! - `tpm` charges each request its whole estimate (prompt + output cap). Requests are
//!   paced at tpm/60 tokens a second, with a second's share as the burst; a request
//!   larger than that share waits until the tokens before it are paid off and goes
//!   alone. On top of the pacing, a 60 s window makes sure no 60 s ever holds more
//!   than `tpm` tokens. Requests take their turn in arrival order, so a large one is
//!   never starved by a stream of small ones. A request larger than `tpm` itself can
//!   never be sent to that model: [`Limits::acquire`] says so.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::{Config, ModelId};

/// Width of one slot of the 60 s token window.
const SLOT: Duration = Duration::from_millis(100);
/// Slots the window keeps: enough to cover any 60 s ending now (the oldest slot may be
/// partly older than 60 s; counting it whole errs on the safe side).
const SLOTS: usize = 601;

/// Tokens sent in each [`SLOT`] of the last minute, with their running sum.
struct Window {
    origin: Instant,
    /// The slot `now` fell in at the last update (slots count from `origin`).
    newest: u64,
    slots: Box<[u64; SLOTS]>,
    sum: u64,
}

impl Window {
    fn new(origin: Instant) -> Window {
        Window {
            origin,
            newest: 0,
            slots: Box::new([0; SLOTS]),
            sum: 0,
        }
    }

    fn slot_of(&self, at: Instant) -> u64 {
        (at.duration_since(self.origin).as_nanos() / SLOT.as_nanos()) as u64
    }

    /// Moves the window to `now`, forgetting slots that left it.
    fn advance(&mut self, now: Instant) {
        let slot = self.slot_of(now);
        if slot >= self.newest + SLOTS as u64 {
            *self.slots = [0; SLOTS];
            self.sum = 0;
        } else {
            while self.newest < slot {
                self.newest += 1;
                let i = (self.newest % SLOTS as u64) as usize;
                self.sum -= self.slots[i];
                self.slots[i] = 0;
            }
        }
        self.newest = self.newest.max(slot);
    }

    /// How long from `now` (already advanced to) until `n` more tokens keep the window
    /// at or under `cap`. `n <= cap`.
    fn wait(&self, now: Instant, n: u64, cap: u64) -> Duration {
        let mut sum = self.sum;
        if sum + n <= cap {
            return Duration::ZERO;
        }
        // Slots leave the window oldest first.
        let oldest = self.newest.saturating_sub(SLOTS as u64 - 1);
        for slot in oldest..=self.newest {
            sum -= self.slots[(slot % SLOTS as u64) as usize];
            if sum + n <= cap {
                let gone =
                    self.origin + SLOT * u32::try_from(slot + SLOTS as u64).unwrap_or(u32::MAX);
                return gone.saturating_duration_since(now);
            }
        }
        unreachable!("a request no larger than the cap fits an empty window")
    }

    fn add(&mut self, n: u64) {
        self.slots[(self.newest % SLOTS as u64) as usize] += n;
        self.sum += n;
    }
}

/// What a token limit knows: the GCRA's theoretical arrival time and the window.
struct TokenState {
    /// When the tokens admitted so far are paid off at the sustained rate.
    paid_off: Instant,
    window: Window,
}

struct TokenLimit {
    tpm: u64,
    /// Time one token takes at the sustained rate (60 s / tpm).
    per_token: Duration,
    /// Tokens that may go at once: a second's share.
    burst: u64,
    /// Held by the request whose turn it is, while it waits: arrival order.
    turn: tokio::sync::Mutex<TokenState>,
}

/// A request that can never fit a scope's `tpm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    pub tokens: u64,
    pub tpm: u64,
}

impl TokenLimit {
    fn new(tpm: u64) -> Option<TokenLimit> {
        if tpm == 0 {
            return None;
        }
        let now = Instant::now();
        Some(TokenLimit {
            tpm,
            per_token: Duration::from_secs(60).div_f64(tpm as f64),
            burst: (tpm / 60).max(1),
            turn: tokio::sync::Mutex::new(TokenState {
                paid_off: now,
                window: Window::new(now),
            }),
        })
    }

    /// How long from `now` until `n` tokens may go; `ZERO` when they may go now.
    fn wait(&self, s: &mut TokenState, now: Instant, n: u64) -> Duration {
        s.window.advance(now);
        let debt = s.paid_off.saturating_duration_since(now);
        let allowed = self.per_token * u32::try_from(self.burst.saturating_sub(n)).unwrap_or(0);
        debt.saturating_sub(allowed)
            .max(s.window.wait(now, n, self.tpm))
    }

    /// Waits for `n` tokens, in arrival order, and charges them.
    async fn take(&self, n: u64) -> Result<(), TooLarge> {
        let n = n.max(1);
        if n > self.tpm {
            return Err(TooLarge {
                tokens: n,
                tpm: self.tpm,
            });
        }
        let mut s = self.turn.lock().await;
        loop {
            let now = Instant::now();
            let wait = self.wait(&mut s, now, n);
            if wait.is_zero() {
                s.paid_off = s.paid_off.max(now) + self.per_token.mul_f64(n as f64);
                s.window.add(n);
                return Ok(());
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// One rate-limited scope: a model, or a provider all its models share.
struct Scope {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenLimit>,
}

impl Scope {
    fn new(rpm: Option<u32>, tpm: Option<u64>) -> Scope {
        Scope {
            requests: rpm.and_then(rpm_limiter),
            tokens: tpm.and_then(TokenLimit::new),
        }
    }
}

/// Scopes are indexed: model `i` is scope `i`, and each model also names its
/// provider's scope, so a request looks up nothing by name.
pub struct Limits {
    scopes: Vec<Scope>,
    /// By model id: its own scope and its provider's.
    of_model: Vec<[usize; 2]>,
    /// Until when a 429 paused each scope.
    paused: Mutex<Vec<Option<Instant>>>,
}

fn rpm_limiter(rpm: u32) -> Option<DefaultDirectRateLimiter> {
    let rpm = NonZeroU32::new(rpm)?;
    let period = Duration::from_secs(60) / rpm.get();
    Some(RateLimiter::direct(
        Quota::with_period(period)?.allow_burst(NonZeroU32::MIN),
    ))
}

impl Limits {
    pub fn new(cfg: &Config) -> Limits {
        let mut scopes: Vec<Scope> = cfg
            .models
            .iter()
            .map(|m| Scope::new(m.rpm, m.tpm))
            .collect();
        scopes.extend(cfg.providers.values().map(|p| Scope::new(p.rpm, p.tpm)));
        let of_model = (0..cfg.models.len())
            // Validation guarantees the provider exists; without it the model's own
            // scope stands in.
            .map(|i| [i, cfg.provider_index(i).map_or(i, |p| cfg.models.len() + p)])
            .collect();
        let paused = Mutex::new(vec![None; scopes.len()]);
        Limits {
            scopes,
            of_model,
            paused,
        }
    }

    /// Waits until `model` (and its provider) may take a request of `tokens`; an error
    /// when the request is larger than the model's or the provider's `tpm`.
    pub async fn acquire(&self, model: ModelId, tokens: u64) -> Result<(), TooLarge> {
        let keys = self.of_model[model];
        for k in keys {
            if let Some(t) = &self.scopes[k].tokens {
                if tokens.max(1) > t.tpm {
                    return Err(TooLarge { tokens, tpm: t.tpm });
                }
            }
        }
        let until = {
            let paused = self.paused.lock().expect("pause map");
            keys.iter().filter_map(|&k| paused[k]).max()
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
        for k in keys {
            let scope = &self.scopes[k];
            if let Some(r) = &scope.requests {
                r.until_ready().await;
            }
            if let Some(t) = &scope.tokens {
                t.take(tokens).await?;
            }
        }
        Ok(())
    }

    /// A 429 asked us to wait: hold every request to this model and provider until then.
    /// The caller bounds `wait` (a longer one opens the model's breaker instead).
    pub fn pause(&self, model: ModelId, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused.lock().expect("pause map");
        for k in self.of_model[model] {
            paused[k] = Some(paused[k].map_or(until, |u| u.max(until)));
        }
    }
}

/// Shared slots are 0.1% longer than 60 s / limit: a minute of them spans 60.06 s, so
/// the jitter between a slot and the request's arrival (scheduling, the network)
/// cannot put one more request than the limit in a 60 s window.
const SHARED_MARGIN: f64 = 1.001;

/// The pause scopes of a request to `model` on a shared ledger.
pub fn shared_pauses(cfg: &Config, model: ModelId) -> [String; 2] {
    let m = &cfg.models[model];
    [
        format!("model:{}", m.name),
        format!("provider:{}", m.provider),
    ]
}

/// The scopes a request to `model` counts against on a shared ledger: its model's
/// and provider's `rpm` and `tpm`, named for the server.
pub fn shared_scopes(cfg: &Config, model: ModelId) -> Vec<crate::ledger::Scope> {
    let m = &cfg.models[model];
    let p = cfg.provider_of(model);
    let mut scopes = Vec::new();
    for (kind, name, rpm, tpm) in [
        ("model", &m.name, m.rpm, m.tpm),
        ("provider", &m.provider, p.rpm, p.tpm),
    ] {
        if let Some(rpm) = rpm.filter(|r| *r > 0) {
            scopes.push(crate::ledger::Scope {
                name: format!("{kind}:{name}:rpm"),
                interval_us: 60e6 * SHARED_MARGIN / f64::from(rpm),
                per_token: false,
                burst_us: 0.0,
            });
        }
        if let Some(tpm) = tpm.filter(|t| *t > 0) {
            // A second's share may go at once, as locally.
            scopes.push(crate::ledger::Scope {
                name: format!("{kind}:{name}:tpm"),
                interval_us: 60e6 * SHARED_MARGIN / tpm as f64,
                per_token: true,
                burst_us: 1e6,
            });
        }
    }
    scopes
}

/// A request of `tokens` that can never fit `model`'s or its provider's `tpm`.
pub fn too_large(cfg: &Config, model: ModelId, tokens: u64) -> Result<(), TooLarge> {
    let tpms = [cfg.models[model].tpm, cfg.provider_of(model).tpm];
    match tpms
        .into_iter()
        .flatten()
        .filter(|t| *t > 0)
        .find(|t| tokens.max(1) > *t)
    {
        Some(tpm) => Err(TooLarge { tokens, tpm }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of request sizes between 1 and `max`.
    fn sizes(count: usize, max: u64) -> Vec<u64> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                1 + state % max
            })
            .collect()
    }

    /// Requests through one limit on tokio's paused clock: returns (time, tokens) of
    /// each admission.
    async fn admit(tpm: u64, requests: &[u64], tasks: usize) -> Vec<(Duration, u64)> {
        let limit = std::sync::Arc::new(TokenLimit::new(tpm).unwrap());
        let start = Instant::now();
        let log = std::sync::Arc::new(Mutex::new(Vec::new()));
        let queue = std::sync::Arc::new(Mutex::new(requests.to_vec()));
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (limit, log, queue) = (limit.clone(), log.clone(), queue.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let Some(n) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    limit.take(n).await.unwrap();
                    log.lock().unwrap().push((start.elapsed(), n));
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut log = log.lock().unwrap().clone();
        log.sort();
        log
    }

    /// The most tokens admitted in any 60 s (a window starting at each admission).
    fn most_in_a_minute(log: &[(Duration, u64)]) -> u64 {
        (0..log.len())
            .map(|i| {
                log[i..]
                    .iter()
                    .take_while(|(t, _)| *t < log[i].0 + Duration::from_secs(60))
                    .map(|(_, n)| n)
                    .sum()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn large_requests_are_charged_whole_and_no_minute_exceeds_tpm() {
        // 20,000-token requests under tpm = 200,000: ten a minute, not sixty.
        let log = admit(200_000, &[20_000; 40], 16).await;
        assert_eq!(most_in_a_minute(&log), 200_000);
        let last = log.last().unwrap().0;
        assert!(
            last >= Duration::from_secs(180),
            "800,000 tokens at 200,000 a minute take 3 minutes at least, not {last:?}"
        );
        // Paced, not bunched: a large request waits for the one before it.
        for pair in log.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= Duration::from_secs(6), "{pair:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn mixed_sizes_never_exceed_tpm_in_any_minute_and_keep_the_rate() {
        let requests = sizes(3_000, 9_000);
        let total: u64 = requests.iter().sum();
        let log = admit(300_000, &requests, 32).await;
        assert_eq!(log.len(), requests.len());
        assert!(most_in_a_minute(&log) <= 300_000);
        // Sustained rate within 5% of tpm: the window does not starve the pacing.
        let minutes = log.last().unwrap().0.as_secs_f64() / 60.0;
        let rate = total as f64 / minutes;
        assert!(rate > 0.95 * 300_000.0, "{rate} tokens a minute");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_tpm_is_refused() {
        let limit = TokenLimit::new(1_000).unwrap();
        assert_eq!(
            limit.take(1_001).await,
            Err(TooLarge {
                tokens: 1_001,
                tpm: 1_000
            })
        );
        assert_eq!(limit.take(1_000).await, Ok(()));
    }
}
