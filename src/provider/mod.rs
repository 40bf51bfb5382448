//! Providers: how a request reaches a model. `wire` holds the pure request/response
//! formats; `http` sends them to OpenAI-compatible and Anthropic endpoints;
//! `simulated` answers in-process for `run --simulate`. [`Backend`] is what the
//! executor calls: one or the other, never a silent mix.

pub mod http;
pub mod simulated;
pub mod wire;

use std::collections::HashMap;

use anyhow::Result;

use crate::config::{Config, Model};
use crate::policy::Failure;
use crate::record::{Job, Task};
use crate::route::Candidate;
use wire::Answer;

pub enum Backend {
    Simulated(simulated::Simulated),
    /// One client per configured provider, by provider name.
    Http(HashMap<String, http::HttpProvider>),
}

impl Backend {
    pub fn simulated(cfg: &Config) -> Backend {
        Backend::Simulated(simulated::Simulated::new(cfg.simulate.clone()))
    }

    pub fn http(cfg: &Config) -> Result<Backend> {
        let mut map = HashMap::with_capacity(cfg.providers.len());
        for (name, p) in &cfg.providers {
            map.insert(name.clone(), http::HttpProvider::new(name, p)?);
        }
        Ok(Backend::Http(map))
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
            Backend::Http(map) => map[&model.provider].complete(job, model, max_tokens).await,
        }
    }
}
