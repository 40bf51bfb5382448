//! The per-model cost report: rows per model plus a total, written to Parquet with the
//! columns DESIGN.md fixes (`plan --report` fills estimates; `run` fills actuals from
//! its billed [`Call`]s, tallied by [`CostTally`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::money::Usd;

/// One line of the report: a model, or the total (`provider` = None).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportRow {
    pub model: String,
    pub provider: Option<String>,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub escalated: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Usd,
    pub baseline_cost: Usd,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Billed beyond the reserved worst case (`run` only), and on how many calls.
    pub overrun: Usd,
    pub overrun_calls: u64,
}

impl ReportRow {
    /// Saving against the baseline in percent (negative when dearer).
    pub fn savings_pct(&self) -> f64 {
        savings_pct(self.cost, self.baseline_cost)
    }
}

/// `cost` against `baseline` in percent saved (negative when dearer; 0 with no baseline).
pub fn savings_pct(cost: Usd, baseline: Usd) -> f64 {
    if baseline == Usd::ZERO {
        0.0
    } else {
        (1.0 - cost.as_f64() / baseline.as_f64()) * 100.0
    }
}

/// Sums model rows into the total row.
pub fn total_row(rows: &[ReportRow]) -> ReportRow {
    let mut t = ReportRow {
        model: "total".into(),
        ..Default::default()
    };
    for r in rows {
        t.requests += r.requests;
        t.ok += r.ok;
        t.failed += r.failed;
        t.escalated += r.escalated;
        t.input_tokens += r.input_tokens;
        t.output_tokens += r.output_tokens;
        t.cost += r.cost;
        t.baseline_cost += r.baseline_cost;
        t.overrun += r.overrun;
        t.overrun_calls += r.overrun_calls;
    }
    t
}

fn schema() -> Arc<Schema> {
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let f = |n: &str, null: bool| Field::new(n, DataType::Float64, null);
    Arc::new(Schema::new(vec![
        Field::new("model", DataType::Utf8, false),
        Field::new("provider", DataType::Utf8, true),
        i("requests"),
        i("ok"),
        i("failed"),
        i("escalated"),
        i("input_tokens"),
        i("output_tokens"),
        f("cost_usd", false),
        f("share_of_cost", false),
        f("latency_p50_ms", true),
        f("latency_p95_ms", true),
        f("baseline_cost_usd", false),
        f("savings_pct", false),
        f("overrun_usd", false),
    ]))
}

/// Writes model rows and their total to `path`, atomically (temp file, then rename).
pub fn write_parquet(path: &Path, rows: &[ReportRow]) -> Result<()> {
    let total = total_row(rows);
    let all: Vec<&ReportRow> = rows.iter().chain(std::iter::once(&total)).collect();
    let int = |f: fn(&ReportRow) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            all.iter().map(|r| f(r) as i64),
        ))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            all.iter().map(|r| r.model.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            all.iter().map(|r| r.provider.as_deref()),
        )),
        int(|r| r.requests),
        int(|r| r.ok),
        int(|r| r.failed),
        int(|r| r.escalated),
        int(|r| r.input_tokens),
        int(|r| r.output_tokens),
        Arc::new(Float64Array::from_iter_values(
            all.iter().map(|r| r.cost.as_f64()),
        )),
        Arc::new(Float64Array::from_iter_values(
            all.iter().map(|r| total.cost.share(r.cost)),
        )),
        Arc::new(Float64Array::from_iter(
            all.iter().map(|r| r.latency_p50_ms),
        )),
        Arc::new(Float64Array::from_iter(
            all.iter().map(|r| r.latency_p95_ms),
        )),
        Arc::new(Float64Array::from_iter_values(
            all.iter().map(|r| r.baseline_cost.as_f64()),
        )),
        Arc::new(Float64Array::from_iter_values(
            all.iter().map(|r| r.savings_pct()),
        )),
        Arc::new(Float64Array::from_iter_values(
            all.iter().map(|r| r.overrun.as_f64()),
        )),
    ];
    let batch = RecordBatch::try_new(schema(), columns).expect("report schema matches columns");
    super::parquet::write_one(path, &batch)
}

/// One billed call, charged to the model that made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub model: String,
    pub provider: String,
    pub ok: bool,
    pub escalated: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(with = "crate::money::exact")]
    pub cost: Usd,
    #[serde(with = "crate::money::exact")]
    pub baseline_cost: Usd,
    pub latency_ms: u64,
    /// What the provider billed beyond the worst case reserved for this call (it
    /// counted more tokens than switchyard did): real money, outside the reservation.
    #[serde(
        default,
        with = "crate::money::exact",
        skip_serializing_if = "Usd::is_zero"
    )]
    pub overrun: Usd,
    /// A batch line's answer: `[submission, record position]`, so a resume that
    /// reads the batch's results again does not bill it twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<[u64; 2]>,
}

#[derive(Default)]
struct Tally {
    row: ReportRow,
    latencies: Vec<u64>,
}

/// Per-model totals of every call of a run.
#[derive(Default)]
pub struct CostTally {
    models: BTreeMap<String, Tally>,
}

impl CostTally {
    pub fn add(&mut self, c: &Call) {
        let t = self.models.entry(c.model.clone()).or_default();
        t.row.model = c.model.clone();
        t.row.provider = Some(c.provider.clone());
        t.row.requests += 1;
        t.row.ok += u64::from(c.ok);
        t.row.failed += u64::from(!c.ok);
        t.row.escalated += u64::from(c.escalated);
        t.row.input_tokens += c.input_tokens;
        t.row.output_tokens += c.output_tokens;
        t.row.cost += c.cost;
        t.row.baseline_cost += c.baseline_cost;
        t.row.overrun += c.overrun;
        t.row.overrun_calls += u64::from(!c.overrun.is_zero());
        // Latency percentiles are of answers; a failure's time says little.
        if c.ok {
            t.latencies.push(c.latency_ms);
        }
    }

    pub fn rows(&mut self) -> Vec<ReportRow> {
        self.models
            .values_mut()
            .map(|t| {
                t.latencies.sort_unstable();
                let pct = |p: f64| -> Option<f64> {
                    (!t.latencies.is_empty()).then(|| {
                        t.latencies[((t.latencies.len() - 1) as f64 * p).round() as usize] as f64
                    })
                };
                ReportRow {
                    latency_p50_ms: pct(0.5),
                    latency_p95_ms: pct(0.95),
                    ..t.row.clone()
                }
            })
            .collect()
    }
}
