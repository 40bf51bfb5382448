//! Run results: one [`ResultRow`] per input record — JSONL on stdout as they
//! complete, or `results.parquet` in `--out DIR` (written from the journal in row
//! groups, renamed into place) — and the per-model tally behind `cost_report.parquet`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::money::Usd;
use crate::report::ReportRow;

/// A word from a fixed vocabulary (status, task, tier…): borrowed when the run makes
/// it, owned when it is read back from the journal.
pub type Label = Cow<'static, str>;

/// The outcome of one input record (DESIGN.md "Outputs").
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResultRow {
    pub id: String,
    pub status: Label,
    pub task: Option<Label>,
    pub complexity: Option<Label>,
    pub classified_by: Option<Label>,
    pub tier: Option<Label>,
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
    #[serde(serialize_with = "usd_number", deserialize_with = "usd_from_number")]
    pub cost_usd: Usd,
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

impl ResultRow {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
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

const ROW_GROUP: usize = 8192;

/// `results.parquet`, streamed in row groups to a temporary name.
pub struct ParquetResults {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
    pending: Vec<ResultRow>,
}

fn schema() -> Arc<Schema> {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        s("task"),
        s("complexity"),
        s("classified_by"),
        s("tier"),
        s("routed_model"),
        s("final_model"),
        s("provider"),
        i("attempts"),
        i("fallbacks"),
        Field::new(
            "escalations",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        s("response"),
        s("finish_reason"),
        i("input_tokens"),
        i("output_tokens"),
        Field::new("cost_usd", DataType::Float64, false),
        i("latency_ms"),
        s("error"),
        s("metadata"),
    ]))
}

impl ParquetResults {
    pub fn create(dir: &Path) -> Result<ParquetResults> {
        let path = dir.join("results.parquet");
        let tmp = dir.join("results.parquet.tmp");
        let file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props))?;
        Ok(ParquetResults {
            path,
            tmp,
            writer,
            pending: Vec::with_capacity(ROW_GROUP),
        })
    }

    pub fn push(&mut self, row: ResultRow) -> Result<()> {
        self.pending.push(row);
        if self.pending.len() >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let text = |f: fn(&ResultRow) -> Option<&str>| -> ArrayRef {
            Arc::new(StringArray::from_iter(rows.iter().map(f)))
        };
        let int = |f: fn(&ResultRow) -> Option<i64>| -> ArrayRef {
            Arc::new(Int64Array::from_iter(rows.iter().map(f)))
        };
        let mut esc = ListBuilder::new(StringBuilder::new());
        for r in &rows {
            for e in &r.escalations {
                esc.values().append_value(e);
            }
            esc.append(true);
        }
        let metadata: Vec<Option<String>> = rows
            .iter()
            .map(|r| r.metadata.as_ref().map(|m| m.to_string()))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.status.as_ref()),
            )),
            text(|r| r.task.as_deref()),
            text(|r| r.complexity.as_deref()),
            text(|r| r.classified_by.as_deref()),
            text(|r| r.tier.as_deref()),
            text(|r| r.routed_model.as_deref()),
            text(|r| r.final_model.as_deref()),
            text(|r| r.provider.as_deref()),
            int(|r| Some(i64::from(r.attempts))),
            int(|r| Some(i64::from(r.fallbacks))),
            Arc::new(esc.finish()),
            text(|r| r.response.as_deref()),
            text(|r| r.finish_reason.as_deref()),
            int(|r| Some(r.input_tokens as i64)),
            int(|r| Some(r.output_tokens as i64)),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.cost_usd.as_f64()),
            )),
            int(|r| r.latency_ms.map(|l| l as i64)),
            text(|r| r.error.as_deref()),
            Arc::new(StringArray::from(metadata)),
        ];
        let batch =
            RecordBatch::try_new(schema(), columns).expect("results schema matches columns");
        self.writer
            .write(&batch)
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.writer
            .close()
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })
    }
}

/// One billed (or failed) call, charged to the model that made it.
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
        t.latencies.push(c.latency_ms);
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
