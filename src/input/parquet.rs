//! Parquet job files, read one record batch at a time. Each row is rendered as a JSON
//! object by arrow's JSON writer, so Parquet and JSONL share one record parser and
//! give the same plan: lists, structs and JSON-string columns all work.
//!
//! A batch the arrow reader rejects — a writer stored bytes that are not UTF-8 in a
//! string column, which arrow checks a whole page at a time — is read again column by
//! column: the readable columns as usual, and a failing flat text column value by
//! value from its raw bytes, so only the rows whose own value is bad become bad
//! records (naming the field) and the rest of the file still runs.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use arrow::json::LineDelimitedWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{Batch, Source, BATCH_RECORDS};
use crate::record::Position;

pub struct ParquetSource {
    file: File,
    metadata: ArrowReaderMetadata,
    reader: ParquetRecordBatchReader,
    label: String,
    /// Rows read so far.
    row: u64,
}

impl ParquetSource {
    pub fn new(file: File, path: &Path) -> Result<ParquetSource> {
        let label = path.display().to_string();
        let metadata = ArrowReaderMetadata::load(&file, Default::default())
            .with_context(|| format!("{label}: not a readable Parquet file"))?;
        Ok(ParquetSource {
            reader: reader(&file, &metadata, 0, BATCH_RECORDS, None)
                .with_context(|| format!("{label}: cannot read Parquet"))?,
            file,
            metadata,
            label,
            row: 0,
        })
    }

    /// Reads the `count` rows from `self.row` column by column, after the reader
    /// rejected their batch, then continues after them with a fresh reader.
    fn recover(&mut self, count: usize, failure: arrow::error::ArrowError) -> Result<Batch> {
        let at = self.row as usize;
        let schema = self.metadata.schema().clone();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        let mut fields = Vec::with_capacity(schema.fields().len());
        // Per row: the fields whose value could not be read.
        let mut bad: Vec<Vec<String>> = vec![Vec::new(); count];
        for (c, field) in schema.fields().iter().enumerate() {
            let read = reader(&self.file, &self.metadata, at, count, Some(c))
                .and_then(|mut r| r.next().transpose().map_err(anyhow::Error::from));
            match read {
                Ok(Some(rb)) if rb.num_rows() == count => {
                    columns.push(rb.column(0).clone());
                    fields.push(field.clone());
                }
                _ => match self.raw_text(c, at, count) {
                    // A flat text column: only the values that are not UTF-8 are bad.
                    Some(values) => {
                        for (i, v) in values.iter().enumerate() {
                            if v.is_err() {
                                bad[i].push(field.name().clone());
                            }
                        }
                        let text = values.into_iter().map(|v| v.ok().flatten());
                        columns.push(Arc::new(StringArray::from_iter(text)));
                        fields.push(Arc::new(Field::new(
                            field.name(),
                            arrow::datatypes::DataType::Utf8,
                            true,
                        )));
                    }
                    // Anything else: the column is unreadable for every row here.
                    None => bad.iter_mut().for_each(|b| b.push(field.name().clone())),
                },
            }
        }
        let why = if failure.to_string().to_lowercase().contains("utf-8") {
            "not valid UTF-8"
        } else {
            "cannot be read"
        };
        let mut batch = Batch::default();
        if !columns.is_empty() {
            let rb = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
            self.push_rows(&rb, &mut batch)?;
        } else {
            for _ in 0..count {
                self.row += 1;
                batch.records.push((Position::Row(self.row), 0..0));
            }
        }
        for (i, fields) in bad.iter().enumerate().filter(|(_, f)| !f.is_empty()) {
            let text = match fields.as_slice() {
                [one] => format!("field `{one}`: {why}"),
                many => format!("fields `{}`: {why}", many.join("`, `")),
            };
            batch.problems.push((i, text));
        }
        self.reader = reader(
            &self.file,
            &self.metadata,
            self.row as usize,
            BATCH_RECORDS,
            None,
        )?;
        Ok(batch)
    }

    /// The values of top-level column `c` for rows `at..at + count`, straight from
    /// the file's bytes, when it is a flat byte-array column: each `Ok(text)` (or
    /// `Ok(None)` for null), or `Err` for bytes that are not UTF-8.
    #[allow(clippy::type_complexity)]
    fn raw_text(
        &self,
        c: usize,
        at: usize,
        count: usize,
    ) -> Option<Vec<Result<Option<String>, ()>>> {
        let parquet = self.metadata.metadata();
        let descr = parquet.file_metadata().schema_descr();
        let leaves: Vec<usize> = (0..descr.num_columns())
            .filter(|&l| descr.get_column_root_idx(l) == c)
            .collect();
        let [leaf] = leaves[..] else { return None };
        let col = descr.column(leaf);
        if col.max_rep_level() != 0 || col.physical_type() != PhysicalType::BYTE_ARRAY {
            return None;
        }
        let file = SerializedFileReader::new(self.file.try_clone().ok()?).ok()?;
        let mut out = Vec::with_capacity(count);
        let mut first = 0usize; // the first row of the current row group
        for g in 0..file.num_row_groups() {
            let rows = parquet.row_group(g).num_rows() as usize;
            let (from, to) = (at.max(first), (at + count).min(first + rows));
            if from < to {
                let group = file.get_row_group(g).ok()?;
                let ColumnReader::ByteArrayColumnReader(mut r) =
                    group.get_column_reader(leaf).ok()?
                else {
                    return None;
                };
                r.skip_records(from - first).ok()?;
                let (mut defs, mut values): (Vec<i16>, Vec<ByteArray>) = (Vec::new(), Vec::new());
                let (records, _, _) = r
                    .read_records(to - from, Some(&mut defs), None, &mut values)
                    .ok()?;
                let mut next = values.into_iter();
                // A required column has no definition levels: every value is there.
                let max_def = col.max_def_level();
                let present = |i: usize| max_def == 0 || defs.get(i) == Some(&max_def);
                for i in 0..records {
                    out.push(match present(i) {
                        false => Ok(None),
                        true => {
                            let v = next.next()?;
                            String::from_utf8(v.data().to_vec())
                                .map(Some)
                                .map_err(|_| ())
                        }
                    });
                }
            }
            first += rows;
        }
        (out.len() == count).then_some(out)
    }

    /// Renders `rb`'s rows as JSON records at the end of `batch`.
    fn push_rows(&mut self, rb: &RecordBatch, batch: &mut Batch) -> Result<()> {
        let from = batch.buf.len();
        {
            let mut w = LineDelimitedWriter::new(&mut batch.buf);
            w.write(rb)
                .with_context(|| format!("{}: cannot convert rows to records", self.label))?;
            w.finish()?;
        }
        let mut start = from;
        for (i, b) in batch.buf.iter().enumerate().skip(from) {
            if *b == b'\n' {
                self.row += 1;
                batch.records.push((Position::Row(self.row), start..i));
                start = i + 1;
            }
        }
        Ok(())
    }
}

/// A reader of `batch` rows at a time from row `offset`: of every column, or of
/// top-level column `column` alone.
fn reader(
    file: &File,
    metadata: &ArrowReaderMetadata,
    offset: usize,
    batch: usize,
    column: Option<usize>,
) -> Result<ParquetRecordBatchReader> {
    let mut b =
        ParquetRecordBatchReaderBuilder::new_with_metadata(file.try_clone()?, metadata.clone())
            .with_batch_size(batch)
            .with_offset(offset);
    if let Some(c) = column {
        let mask = ProjectionMask::roots(b.parquet_schema(), [c]);
        b = b.with_projection(mask);
    }
    Ok(b.build()?)
}

impl Source for ParquetSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let rb = match self.reader.next() {
            None => return Ok(None),
            Some(Ok(rb)) => rb,
            Some(Err(failure)) => {
                let total = self.metadata.metadata().file_metadata().num_rows() as u64;
                let left = total.saturating_sub(self.row) as usize;
                if left == 0 {
                    return Err(failure).with_context(|| {
                        format!("{}: Parquet read error after row {}", self.label, self.row)
                    });
                }
                let batch = self
                    .recover(BATCH_RECORDS.min(left), failure)
                    .with_context(|| {
                        format!("{}: Parquet read error after row {}", self.label, self.row)
                    })?;
                return Ok(Some(batch));
            }
        };
        let mut batch = Batch {
            buf: Vec::with_capacity(rb.num_rows() * 256),
            ..Batch::default()
        };
        self.push_rows(&rb, &mut batch)?;
        Ok(Some(batch))
    }
}
