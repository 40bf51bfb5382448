//! Parquet job files, read one record batch at a time. Each row is rendered as a JSON
//! object by arrow's JSON writer, so Parquet and JSONL share one record parser and
//! give the same plan: lists, structs and JSON-string columns all work.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use arrow::json::LineDelimitedWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::{Batch, Source, BATCH_RECORDS};
use crate::record::Position;

pub struct ParquetSource {
    reader: ParquetRecordBatchReader,
    label: String,
    row: u64,
}

impl ParquetSource {
    pub fn new(file: File, path: &Path) -> Result<ParquetSource> {
        let label = path.display().to_string();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{label}: not a readable Parquet file"))?
            .with_batch_size(BATCH_RECORDS)
            .build()
            .with_context(|| format!("{label}: cannot read Parquet"))?;
        Ok(ParquetSource {
            reader,
            label,
            row: 0,
        })
    }
}

impl Source for ParquetSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        let Some(rb) = self.reader.next() else {
            return Ok(None);
        };
        let rb = rb.with_context(|| {
            format!("{}: Parquet read error after row {}", self.label, self.row)
        })?;
        let mut buf = Vec::with_capacity(rb.num_rows() * 256);
        {
            let mut w = LineDelimitedWriter::new(&mut buf);
            w.write(&rb)
                .with_context(|| format!("{}: cannot convert rows to records", self.label))?;
            w.finish()?;
        }
        let mut records = Vec::with_capacity(rb.num_rows());
        let mut start = 0;
        for (i, nl) in buf.iter().enumerate() {
            if *nl == b'\n' {
                self.row += 1;
                records.push((Position::Row(self.row), start..i));
                start = i + 1;
            }
        }
        Ok(Some(Batch { buf, records }))
    }
}
