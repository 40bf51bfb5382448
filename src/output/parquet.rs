//! Parquet files that appear whole: written under a temporary name and renamed into
//! place, so a reader never sees half of one. `results.parquet` is streamed through
//! it in row groups; the cost report is one batch.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::ResultRow;

/// A Parquet file being written to `PATH.tmp`; [`AtomicParquet::finish`] renames it.
pub struct AtomicParquet {
    path: PathBuf,
    tmp: PathBuf,
    writer: ArrowWriter<File>,
}

impl AtomicParquet {
    pub fn create(path: &Path, schema: SchemaRef) -> Result<AtomicParquet> {
        let tmp = path.with_extension("parquet.tmp");
        let file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(AtomicParquet {
            path: path.to_path_buf(),
            tmp,
            writer,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .with_context(|| format!("cannot write {}", self.tmp.display()))
    }

    pub fn finish(self) -> Result<()> {
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

/// Writes one batch as the whole file at `path`.
pub fn write_one(path: &Path, batch: &RecordBatch) -> Result<()> {
    let mut file = AtomicParquet::create(path, batch.schema())?;
    file.write(batch)?;
    file.finish()
}

const ROW_GROUP: usize = 8192;

/// `DIR/results.parquet`, fed row by row, written a row group at a time.
pub struct ParquetResults {
    file: AtomicParquet,
    pending: Vec<ResultRow>,
}

fn schema() -> SchemaRef {
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
        i("cached_input_tokens"),
        s("via"),
        Field::new("cost_usd", DataType::Float64, false),
        i("latency_ms"),
        s("error"),
        s("metadata"),
    ]))
}

impl ParquetResults {
    pub fn create(dir: &Path) -> Result<ParquetResults> {
        Ok(ParquetResults {
            file: AtomicParquet::create(&dir.join("results.parquet"), schema())?,
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
                rows.iter().map(|r| r.status.as_str()),
            )),
            text(|r| r.task.map(|t| t.as_str())),
            text(|r| r.complexity.map(|c| c.as_str())),
            text(|r| r.classified_by.map(|c| c.as_str())),
            text(|r| r.tier.map(|t| t.as_str())),
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
            int(|r| Some(r.cached_input_tokens as i64)),
            text(|r| r.via.map(|v| v.as_str())),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.cost_usd.as_f64()),
            )),
            int(|r| r.latency_ms.map(|l| l as i64)),
            text(|r| r.error.as_deref()),
            Arc::new(StringArray::from(metadata)),
        ];
        let batch =
            RecordBatch::try_new(schema(), columns).expect("results schema matches columns");
        self.file.write(&batch)
    }

    pub fn finish(mut self) -> Result<()> {
        self.flush()?;
        self.file.finish()
    }
}

/// One record batch of a run's `results.parquet`, its columns looked up by name with
/// errors that name the file.
struct ResultsBatch<'a> {
    path: &'a Path,
    batch: RecordBatch,
}

impl ResultsBatch<'_> {
    fn column(&self, name: &str) -> Result<&ArrayRef> {
        self.batch.column_by_name(name).with_context(|| {
            format!(
                "{} has no `{name}` column: is it a run's results.parquet?",
                self.path.display()
            )
        })
    }

    fn text(&self, name: &str) -> Result<StringArray> {
        use arrow::array::AsArray;
        self.column(name)?
            .as_string_opt::<i32>()
            .cloned()
            .with_context(|| format!("{}: `{name}` is not a text column", self.path.display()))
    }

    fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// Calls `each` on every record batch of the results file at `path`.
fn read_results(path: &Path, mut each: impl FnMut(&ResultsBatch) -> Result<()>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .build()?;
    for batch in reader {
        let batch = batch.with_context(|| format!("cannot read {}", path.display()))?;
        each(&ResultsBatch { path, batch })?;
    }
    Ok(())
}

/// One answered row of a past run: its task, the model that answered, the output
/// tokens billed, and whether it escalated.
pub struct Answered {
    pub task: String,
    pub model: String,
    pub output_tokens: u64,
    pub escalated: bool,
}

/// The `ok` rows of a `results.parquet`, for `plan --history`.
pub fn read_answered(path: &Path) -> Result<Vec<Answered>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let mut out = Vec::new();
    read_results(path, |b| {
        let (status, task, model) = (b.text("status")?, b.text("task")?, b.text("final_model")?);
        let tokens = b
            .column("output_tokens")?
            .as_primitive_opt::<Int64Type>()
            .cloned()
            .with_context(|| {
                format!(
                    "{}: `output_tokens` is not an integer column",
                    path.display()
                )
            })?;
        let escalations = b
            .column("escalations")?
            .as_list_opt::<i32>()
            .cloned()
            .with_context(|| format!("{}: `escalations` is not a list column", path.display()))?;
        for i in 0..b.rows() {
            if status.is_null(i) || status.value(i) != "ok" || task.is_null(i) || model.is_null(i) {
                continue;
            }
            out.push(Answered {
                task: task.value(i).to_string(),
                model: model.value(i).to_string(),
                output_tokens: u64::try_from(tokens.value(i)).unwrap_or(0),
                escalated: !escalations.is_null(i) && escalations.value_length(i) > 0,
            });
        }
        Ok(())
    })?;
    Ok(out)
}

/// One row of a run's decisions: its id, its task, who decided it.
pub struct Label {
    pub id: String,
    pub task: Option<String>,
    pub classified_by: Option<String>,
}

/// Each row's id, task and who decided it, from a `results.parquet` — what `train`
/// learns from a run.
pub fn read_labels(path: &Path) -> Result<Vec<Label>> {
    use arrow::array::Array;
    let mut out = Vec::new();
    read_results(path, |b| {
        let (ids, tasks, by) = (b.text("id")?, b.text("task")?, b.text("classified_by")?);
        for i in 0..b.rows() {
            let text = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            out.push(Label {
                id: ids.value(i).to_string(),
                task: text(&tasks),
                classified_by: text(&by),
            });
        }
        Ok(())
    })?;
    Ok(out)
}
