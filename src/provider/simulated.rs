//! The simulated provider of `run --simulate`: no network, no keys. Answers are
//! derived from the prompt (same record, same model, same answer), sized with the real
//! tokenizer, delayed by the configured latency, and faults (429, 5xx, timeouts,
//! truncation) are injected at configured rates, deterministically per attempt.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::config::{Model, SimulateConfig, Tokenizer};
use crate::provider::wire::Answer;
use crate::provider::Failure;
use crate::record::{Job, Task};
use crate::route::Candidate;
use crate::tokens::count_text;

pub struct Simulated {
    cfg: SimulateConfig,
}

/// A uniform draw in [0, 1) from a hash of what identifies one attempt.
fn draw(parts: impl Hash) -> f64 {
    let mut h = std::hash::DefaultHasher::new();
    parts.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

impl Simulated {
    pub fn new(cfg: SimulateConfig) -> Simulated {
        Simulated { cfg }
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
        let text = match (&job.labels, task) {
            (Some(labels), _) if !labels.is_empty() => {
                labels[(answer_seed * labels.len() as f64) as usize].clone()
            }
            (_, Task::Code) => {
                "```python\ndef solution(data):\n    return sorted(set(data))\n```".to_string()
            }
            _ => {
                // Between 50% and 150% of the expected output, in words of one token.
                let target = ((0.5 + answer_seed) * candidate.output_tokens as f64)
                    .clamp(1.0, max_tokens as f64) as usize;
                let mut t = format!("Simulated answer from {}.", model.name);
                let base = count_text(Tokenizer::O200k, &t) as usize;
                for _ in base..target {
                    t.push_str(" the");
                }
                t
            }
        };
        let mut output = count_text(Tokenizer::O200k, &text).min(max_tokens);
        let finish = if truncated {
            output = max_tokens;
            "length"
        } else {
            "stop"
        };
        Ok(Answer {
            text,
            finish_reason: Some(finish.into()),
            input_tokens: candidate.input_tokens,
            output_tokens: output,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
        })
    }
}
