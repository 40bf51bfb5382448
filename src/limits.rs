//! Request and token rate limits per model and per provider (governor's GCRA), plus
//! the pause a 429 imposes. `rpm` is spread smoothly: one request every 60/rpm seconds,
//! no bursts. `tpm` is charged with each request's estimated tokens. Shared read-only
//! by record tasks; waiting happens in the task, never in the dispatcher.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Config, ModelId};

struct TokenLimit {
    limiter: DefaultDirectRateLimiter,
    /// The most tokens one request may charge at once (the bucket's size).
    burst: u32,
}

/// One rate-limited scope: a model, or a provider all its models share.
#[derive(Default)]
struct Scope {
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenLimit>,
}

impl Scope {
    fn new(rpm: Option<u32>, tpm: Option<u64>) -> Scope {
        Scope {
            requests: rpm.and_then(rpm_limiter),
            tokens: tpm.and_then(tpm_limiter),
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

fn tpm_limiter(tpm: u64) -> Option<TokenLimit> {
    let tpm = u32::try_from(tpm).unwrap_or(u32::MAX);
    let per_minute = NonZeroU32::new(tpm)?;
    // A second's worth of tokens may go at once, so one large prompt is not refused.
    let burst = NonZeroU32::new((tpm / 60).max(1))?;
    Some(TokenLimit {
        limiter: RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(burst)),
        burst: burst.get(),
    })
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

    /// Waits until `model` (and its provider) may take a request of `tokens`.
    pub async fn acquire(&self, model: ModelId, tokens: u64) {
        let keys = self.of_model[model];
        let until = {
            let paused = self.paused.lock().expect("pause map");
            keys.iter().filter_map(|&k| paused[k]).max()
        };
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
        for k in keys {
            let scope = &self.scopes[k];
            if let Some(r) = &scope.requests {
                r.until_ready().await;
            }
            if let Some(t) = &scope.tokens {
                let n =
                    NonZeroU32::new(u32::try_from(tokens).unwrap_or(u32::MAX).clamp(1, t.burst))
                        .expect("clamped to at least 1");
                // Cannot fail: n never exceeds the bucket.
                let _ = t.limiter.until_n_ready(n).await;
            }
        }
    }

    /// A 429 asked us to wait: hold every request to this model and provider until then.
    pub fn pause(&self, model: ModelId, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused.lock().expect("pause map");
        for k in self.of_model[model] {
            paused[k] = Some(paused[k].map_or(until, |u| u.max(until)));
        }
    }
}
