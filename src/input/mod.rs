//! Job file readers: JSONL (plain, `.gz`, `.zst`, or stdin) and Parquet (read in record
//! batches). Every source yields batches of raw records (JSON bytes + position) so that
//! parsing, classification and pricing can run on worker threads; memory is bounded
//! by the batch size, never by the file.

mod parquet_rows;
pub mod parse;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::record::Position;

/// Records per batch handed to a worker.
pub const BATCH_RECORDS: usize = 1024;

/// A run of raw records sharing one buffer.
#[derive(Default)]
pub struct Batch {
    pub buf: Vec<u8>,
    pub records: Vec<(Position, Range<usize>)>,
}

impl Batch {
    pub fn iter(&self) -> impl Iterator<Item = (Position, &[u8])> {
        self.records.iter().map(|(p, r)| (*p, &self.buf[r.clone()]))
    }
}

pub trait Source: Send {
    /// The next batch, or `None` at the end.
    fn next_batch(&mut self) -> Result<Option<Batch>>;
}

/// What the input argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn from_arg(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    /// How errors name it: the path, or `<stdin>`.
    pub fn label(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File(p) => p.display().to_string(),
        }
    }

    pub fn open(&self) -> Result<Box<dyn Source>> {
        match self {
            Input::Stdin => Ok(Box::new(JsonlSource::new(decompress(Box::new(
                io::stdin(),
            ))?))),
            Input::File(path) => {
                let file =
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                if is_parquet(path, &file)? {
                    Ok(Box::new(parquet_rows::ParquetSource::new(file, path)?))
                } else {
                    let reader = decompress(Box::new(file))
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Ok(Box::new(JsonlSource::new(reader)))
                }
            }
        }
    }
}

fn is_parquet(path: &Path, file: &File) -> Result<bool> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        return Ok(true);
    }
    let mut magic = [0u8; 4];
    let n = (&*file).read(&mut magic)?;
    use std::io::Seek;
    (&*file).seek(io::SeekFrom::Start(0))?;
    Ok(n == 4 && &magic == b"PAR1")
}

/// Wraps a reader in gzip or zstd decoding when its first bytes say so.
fn decompress(inner: Box<dyn Read + Send>) -> Result<Box<dyn BufRead + Send>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, inner);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::bufread::MultiGzDecoder::new(buffered);
        Ok(Box::new(BufReader::with_capacity(256 * 1024, gz)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let zst = zstd::stream::read::Decoder::with_buffer(buffered)?;
        Ok(Box::new(BufReader::with_capacity(256 * 1024, zst)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Lines of a JSONL stream. Blank lines are skipped but still counted, so that the
/// numbers in error messages match an editor's.
pub struct JsonlSource {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    done: bool,
}

impl JsonlSource {
    pub fn new(reader: Box<dyn BufRead + Send>) -> JsonlSource {
        JsonlSource {
            reader,
            line: 0,
            done: false,
        }
    }
}

impl Source for JsonlSource {
    fn next_batch(&mut self) -> Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Batch {
            buf: Vec::with_capacity(256 * 1024),
            records: Vec::with_capacity(BATCH_RECORDS),
        };
        while batch.records.len() < BATCH_RECORDS && batch.buf.len() < 4 * 1024 * 1024 {
            let start = batch.buf.len();
            let n = self
                .reader
                .read_until(b'\n', &mut batch.buf)
                .context("read error")?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let mut end = batch.buf.len();
            while end > start && matches!(batch.buf[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if batch.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                batch.buf.truncate(start);
                continue;
            }
            batch.records.push((Position::Line(self.line), start..end));
        }
        Ok((!batch.records.is_empty()).then_some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_numbers_lines_and_skips_blanks() {
        let data = b"{\"prompt\":\"a\"}\n\n  \r\n{\"prompt\":\"b\"}\r\n{\"prompt\":\"c\"}";
        let mut src = JsonlSource::new(Box::new(&data[..]));
        let b = src.next_batch().unwrap().unwrap();
        let got: Vec<(u64, &[u8])> = b.iter().map(|(p, r)| (p.number(), r)).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (4, &b"{\"prompt\":\"b\"}"[..]));
        assert_eq!(got[2].0, 5);
        assert!(src.next_batch().unwrap().is_none());
    }
}
