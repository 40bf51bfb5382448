//! The per-model cost report: rows per model plus a total, written to Parquet with the
//! columns DESIGN.md fixes (`plan --report` fills estimates; `run` fills actuals), and
//! rendered as a terminal table.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

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
    write_batch_atomically(path, &batch)
}

/// Writes one batch as a Parquet file via a temporary sibling and a rename, so readers
/// never see a half-written file.
pub fn write_batch_atomically(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer
        .write(batch)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    writer
        .close()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
