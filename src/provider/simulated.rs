//! The simulated provider of `run --simulate`: no network, no keys. Answers are
//! derived from the prompt (same record, same model, same answer), sized with the real
//! tokenizer, delayed by the configured latency, and faults (429, 5xx, timeouts,
//! truncation) are injected at configured rates, deterministically per attempt.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::{Model, SimulateConfig, Tokenizer};
use crate::provider::wire::Answer;
use crate::provider::Failure;
use crate::record::{Job, Task};
use crate::route::{cache_use, cacheable_system, CacheUse, Candidate};
use crate::tokens::count_text;

pub struct Simulated {
    cfg: SimulateConfig,
    /// Cacheable system prompts answered so far, by model and hash: how many
    /// records sent each (the first is a miss, as at a provider).
    prefixes: Mutex<HashMap<(String, u64), u32>>,
}

/// A uniform draw in [0, 1) from a hash of what identifies one attempt.
fn draw(parts: impl Hash) -> f64 {
    let mut h = std::hash::DefaultHasher::new();
    parts.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Appends `piece` (one or two tokens) to `t` until it is about `tokens` long.
fn pad(t: &mut String, tokens: u64, piece: &str) {
    let have = count_text(Tokenizer::O200k, t);
    let each = count_text(Tokenizer::O200k, piece.trim_start()).max(1);
    for _ in 0..tokens.saturating_sub(have) / each {
        t.push_str(piece);
    }
}

/// A standard normal draw from two uniform ones (Box-Muller).
fn normal(u1: f64, u2: f64) -> f64 {
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Simulated {
    pub fn new(cfg: SimulateConfig) -> Simulated {
        Simulated {
            cfg,
            prefixes: Mutex::default(),
        }
    }

    /// What the provider's prompt cache does for this request, as `plan` expects it:
    /// a system prompt a record already sent to this model is read from the cache;
    /// on a model whose writes cost more (Anthropic) the second sender writes it.
    fn cache(&self, job: &Job, model: &Model) -> (u64, u64) {
        let Some((hash, tokens)) = cacheable_system(model, job) else {
            return (0, 0);
        };
        let mut seen = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry((model.name.clone(), hash)).or_insert(0);
        *n += 1;
        match cache_use(model, *n) {
            CacheUse::Miss => (0, 0),
            CacheUse::Write => (0, tokens),
            CacheUse::Read => (tokens, 0),
        }
    }

    /// The answer's length in tokens before any cut: log-normal around the task's
    /// median (at most half the record's `max_tokens`), the same for the same record
    /// and model.
    fn length(&self, job: &Job, task: Task, model: &Model) -> u64 {
        let median = f64::from(self.cfg.output_tokens.get(&task).copied().unwrap_or(250));
        let median = match job.max_tokens {
            Some(t) => median.min(f64::from(t) / 2.0),
            None => median,
        };
        let z = normal(
            draw((&job.id, &model.name, "length", 1)),
            draw((&job.id, &model.name, "length", 2)),
        );
        (median * (self.cfg.output_sigma * z).exp())
            .round()
            .max(1.0) as u64
    }

    /// Answers `job` as `model` would, or fails as configured: bills the candidate's
    /// input tokens and writes around its expected output, within `max_tokens`.
    pub async fn complete(
        &self,
        job: &Job,
        task: Task,
        model: &Model,
        candidate: &Candidate,
        max_tokens: u64,
        attempt: u32,
    ) -> Result<Answer, (Failure, String)> {
        let key = (&job.id, &model.name, attempt, self.cfg.seed);
        tokio::time::sleep(Duration::from_millis(self.cfg.latency_ms)).await;
        let roll = draw((key, "fault"));
        let c = &self.cfg;
        if roll < c.rate_429 {
            let f = Failure::Http {
                status: 429,
                retry_after: Some(Duration::from_millis(50)),
                context_length_exceeded: false,
            };
            return Err((f, "HTTP 429: simulated rate limit".into()));
        }
        if roll < c.rate_429 + c.rate_5xx {
            let f = Failure::Http {
                status: 503,
                retry_after: None,
                context_length_exceeded: false,
            };
            return Err((f, "HTTP 503: simulated outage".into()));
        }
        if roll < c.rate_429 + c.rate_5xx + c.rate_timeout {
            return Err((Failure::Timeout, "simulated timeout".into()));
        }
        let truncated = draw((key, "truncate")) < c.rate_truncated;
        let answer_seed = draw((&job.id, &model.name, "answer"));
        // At most one token past the limit: the cut is what matters beyond it.
        let wanted = self.length(job, task, model).min(max_tokens + 1);
        let text = match (&job.labels, task) {
            (Some(labels), _) if !labels.is_empty() => {
                labels[(answer_seed * labels.len() as f64) as usize].clone()
            }
            (_, Task::Code) => {
                let mut t = "```python\ndef solution(data):\n".to_string();
                pad(&mut t, wanted, "    # step\n");
                t.push_str("    return sorted(set(data))\n```");
                t
            }
            _ => {
                let mut t = format!("Simulated answer from {}.", model.name);
                pad(&mut t, wanted, " the");
                t
            }
        };
        let written = count_text(Tokenizer::O200k, &text);
        let mut output = written.min(max_tokens);
        let finish = if truncated || written > max_tokens {
            output = max_tokens;
            "length"
        } else {
            "stop"
        };
        let (cached_input_tokens, cache_write_tokens) = self.cache(job, model);
        Ok(Answer {
            text,
            finish_reason: Some(finish.into()),
            input_tokens: candidate.input_tokens,
            output_tokens: output,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens: 0,
        })
    }
}
