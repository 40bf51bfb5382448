//! What `run` writes for every input record: one [`ResultRow`] with its [`Status`] —
//! JSONL on stdout as records finish, or `results.parquet` in `--out DIR` (written
//! from the journal, `parquet`) — and the per-model cost report (`report`).

pub mod parquet;
pub mod reasons;
pub mod report;

use std::io::Write;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::classify::ClassifiedBy;
use crate::money::Usd;
use crate::record::{word_enum, Complexity, Task, Tier};

word_enum!(
    /// How a record ended.
    Status {
        Ok = "ok",
        Failed = "failed",
        SkippedBudget = "skipped_budget",
        InvalidInput = "invalid_input",
    }
);

/// The outcome of one input record (DESIGN.md "Outputs").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub id: String,
    pub status: Status,
    pub task: Option<Task>,
    pub complexity: Option<Complexity>,
    pub classified_by: Option<ClassifiedBy>,
    pub tier: Option<Tier>,
    pub routed_model: Option<String>,
    pub final_model: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub fallbacks: u32,
    pub escalations: Vec<String>,
    pub response: Option<String>,
    pub finish_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those the providers served from their prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// How the final answer was sent: `realtime` or `batch` (`None`: no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::config::Via>,
    #[serde(serialize_with = "usd_number", deserialize_with = "usd_from_number")]
    pub cost_usd: Usd,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl ResultRow {
    /// A row for record `id` that has not got anywhere yet (`failed`, nothing set).
    pub fn new(id: String) -> ResultRow {
        ResultRow {
            id,
            status: Status::Failed,
            task: None,
            complexity: None,
            classified_by: None,
            tier: None,
            routed_model: None,
            final_model: None,
            provider: None,
            attempts: 0,
            fallbacks: 0,
            escalations: Vec::new(),
            response: None,
            finish_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            via: None,
            cost_usd: Usd::ZERO,
            latency_ms: None,
            error: None,
            metadata: None,
        }
    }

    /// A row that ended with `status` for `error`.
    pub fn ended(id: String, status: Status, error: String) -> ResultRow {
        ResultRow {
            status,
            error: Some(error),
            ..ResultRow::new(id)
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }
}

fn usd_number<S: serde::Serializer>(u: &Usd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(u.as_f64())
}

fn usd_from_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
    let f = f64::deserialize(d)?;
    Usd::from_f64(f).ok_or_else(|| serde::de::Error::custom(format!("bad cost_usd {f}")))
}

/// One JSON result per line (stdout), flushed by the caller after each burst.
pub fn write_jsonl(out: &mut impl Write, row: &ResultRow) -> Result<()> {
    serde_json::to_writer(&mut *out, row)?;
    out.write_all(b"\n")?;
    Ok(())
}
