//! Request and token rate limits per model and per provider (governor's GCRA), plus
//! the pause a 429 imposes. `rpm` is spread smoothly: one request every 60/rpm seconds,
//! no bursts. `tpm` is charged with each request's estimated tokens. Shared read-only
//! by record tasks; waiting happens in the task, never in the dispatcher.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::{Config, Model};

struct TokenLimit {
    limiter: DefaultDirectRateLimiter,
    /// The most tokens one request may charge at once (the bucket's size).
    burst: u32,
}

#[derive(Default)]
pub struct Limits {
    requests: HashMap<String, DefaultDirectRateLimiter>,
    tokens: HashMap<String, TokenLimit>,
    paused: Mutex<HashMap<String, Instant>>,
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
        let mut l = Limits::default();
        for (name, p) in &cfg.providers {
            let key = format!("provider:{name}");
            if let Some(r) = p.rpm.and_then(rpm_limiter) {
                l.requests.insert(key.clone(), r);
            }
            if let Some(t) = p.tpm.and_then(tpm_limiter) {
                l.tokens.insert(key, t);
            }
        }
        for m in &cfg.models {
            let key = format!("model:{}", m.name);
            if let Some(r) = m.rpm.and_then(rpm_limiter) {
                l.requests.insert(key.clone(), r);
            }
            if let Some(t) = m.tpm.and_then(tpm_limiter) {
                l.tokens.insert(key, t);
            }
        }
        l
    }

    /// Waits until `model` (and its provider) may take a request of `tokens`.
    pub async fn acquire(&self, model: &Model, tokens: u64) {
        let keys = [
            format!("model:{}", model.name),
            format!("provider:{}", model.provider),
        ];
        for key in &keys {
            let until = self.paused.lock().expect("pause map").get(key).copied();
            if let Some(until) = until {
                tokio::time::sleep_until(until.into()).await;
            }
        }
        for key in &keys {
            if let Some(r) = self.requests.get(key) {
                r.until_ready().await;
            }
            if let Some(t) = self.tokens.get(key) {
                let n =
                    NonZeroU32::new(u32::try_from(tokens).unwrap_or(u32::MAX).clamp(1, t.burst))
                        .expect("clamped to at least 1");
                // Cannot fail: n never exceeds the bucket.
                let _ = t.limiter.until_n_ready(n).await;
            }
        }
    }

    /// A 429 asked us to wait: hold every request to this model and provider until then.
    pub fn pause(&self, model: &Model, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused.lock().expect("pause map");
        for key in [
            format!("model:{}", model.name),
            format!("provider:{}", model.provider),
        ] {
            let e = paused.entry(key).or_insert(until);
            *e = (*e).max(until);
        }
    }
}
