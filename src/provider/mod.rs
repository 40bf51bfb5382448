//! Providers: how a request reaches a model. `wire` holds the pure request/response
//! formats; `http` sends them to OpenAI-compatible and Anthropic endpoints;
//! `simulated` answers in-process for `run --simulate`. [`Backend`] is what a record
//! task calls: one or the other, never a silent mix. [`Failure`] is how a request
//! failed, for `run`'s retry policy to decide on.

pub mod batch;
pub mod http;
pub mod simulated;
pub mod wire;

use anyhow::Result;

use std::time::Duration;

use crate::config::{Config, Model};
use crate::record::{Job, Task};
use crate::route::Candidate;
use wire::Answer;

/// How a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered with a non-success status.
    Http {
        status: u16,
        /// From `Retry-After` (seconds or date) or `x-ratelimit-reset-*`, if present.
        retry_after: Option<Duration>,
        /// A 400 whose body says the prompt exceeds the context window.
        context_length_exceeded: bool,
    },
    /// No answer within the provider's `timeout_s`.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// The connection dropped mid-request.
    Reset,
    /// A success status with a body we cannot use (truncated or malformed JSON).
    Malformed,
    /// Not sent: the provider cannot take requests (its key variable is unset, its
    /// URL may not be used).
    Unusable,
}

pub enum Backend {
    Simulated(simulated::Simulated),
    /// One per configured provider, and which one serves each model (by model id).
    Http {
        providers: Vec<http::HttpProvider>,
        of_model: Vec<usize>,
    },
}

impl Backend {
    pub fn simulated(cfg: &Config) -> Backend {
        Backend::Simulated(simulated::Simulated::new(cfg.simulate.clone()))
    }

    pub fn http(cfg: &Config) -> Result<Backend> {
        let client = http::HttpProvider::client()?;
        let providers = cfg
            .providers
            .iter()
            .map(|(name, p)| http::HttpProvider::new(name, p, client.clone()))
            .collect();
        let of_model = (0..cfg.models.len())
            .map(|m| {
                cfg.provider_index(m).ok_or_else(|| {
                    let model = &cfg.models[m];
                    anyhow::anyhow!("model `{}`: no provider `{}`", model.name, model.provider)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Backend::Http {
            providers,
            of_model,
        })
    }

    /// The provider that serves `model` through its batch API, when the run may use
    /// one (`batch = true`; never for the simulator).
    pub fn batch_provider(&self, cfg: &Config, model: usize) -> Option<&http::HttpProvider> {
        match self {
            Backend::Simulated(_) => None,
            Backend::Http {
                providers,
                of_model,
            } => cfg
                .provider_of(model)
                .batch
                .then(|| &providers[of_model[model]]),
        }
    }

    /// One attempt at one model. `attempt` is 1-based (the simulator's faults use it).
    pub async fn complete(
        &self,
        job: &Job,
        task: Task,
        model: &Model,
        candidate: &Candidate,
        max_tokens: u64,
        attempt: u32,
    ) -> Result<Answer, (Failure, String)> {
        match self {
            Backend::Simulated(s) => {
                s.complete(job, task, model, candidate, max_tokens, attempt)
                    .await
            }
            Backend::Http {
                providers,
                of_model,
            } => {
                providers[of_model[candidate.model]]
                    .complete(job, model, max_tokens)
                    .await
            }
        }
    }
}
