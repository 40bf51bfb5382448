//! Providers: how a request reaches a model. `wire` holds the pure request/response
//! formats; `http` sends them to OpenAI-compatible and Anthropic endpoints;
//! `simulated` answers in-process for `run --simulate`. [`Backend`] is what the
//! executor calls: one or the other, never a silent mix.

pub mod http;
pub mod simulated;
pub mod wire;

use anyhow::Result;

use crate::config::{Config, Model};
use crate::policy::Failure;
use crate::record::{Job, Task};
use crate::route::Candidate;
use wire::Answer;

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
            .collect::<Result<Vec<_>>>()?;
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
