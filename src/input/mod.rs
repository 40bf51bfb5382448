//! Job file readers: JSONL (plain, `.gz`, `.zst`, or stdin) and Parquet (read in record
//! batches). Every source yields batches of raw records (JSON bytes + position) so that
//! parsing, classification and pricing can run on worker threads; memory is bounded
//! by the batch size, never by the file.

mod parquet;
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
    /// Records the reader already knows are bad (a line over the length limit, a
    /// Parquet value that is not UTF-8), by index into `records`, ascending.
    pub problems: Vec<(usize, String)>,
}

impl Batch {
    /// Each record's position, bytes, and the problem the reader found, if any.
    pub fn iter(&self) -> impl Iterator<Item = (Position, &[u8], Option<&str>)> {
        let mut problems = self.problems.iter().peekable();
        self.records.iter().enumerate().map(move |(i, (p, r))| {
            let problem = problems
                .next_if(|(at, _)| *at == i)
                .map(|(_, text)| text.as_str());
            (*p, &self.buf[r.clone()], problem)
        })
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

    /// Opens the input; a JSONL line longer than `max_line` bytes is a bad record,
    /// read past without being kept.
    pub fn open(&self, max_line: u64) -> Result<Box<dyn Source>> {
        match self {
            Input::Stdin => Ok(Box::new(JsonlSource::new(
                decompress(Box::new(io::stdin()))?,
                max_line,
            ))),
            Input::File(path) => {
                let file =
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
                if is_parquet(path, &file)? {
                    Ok(Box::new(parquet::ParquetSource::new(file, path)?))
                } else {
                    let reader = decompress(Box::new(file))
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Ok(Box::new(JsonlSource::new(reader, max_line)))
                }
            }
        }
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gzip,
    Zstd,
    Parquet,
    /// Anything else: read as plain JSONL.
    Plain,
}

impl Kind {
    pub fn of(head: &[u8]) -> Kind {
        if head.starts_with(&[0x1f, 0x8b]) {
            Kind::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Kind::Zstd
        } else if head.starts_with(b"PAR1") {
            Kind::Parquet
        } else {
            Kind::Plain
        }
    }
}

/// Calls `f` on the file's bytes a chunk (1 MiB) at a time, until it returns false;
/// returns the bytes read.
pub fn read_chunks(path: &Path, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(size);
        }
        size += n as u64;
        if !f(&buf[..n]) {
            return Ok(size);
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
    Ok(Kind::of(&magic[..n]) == Kind::Parquet)
}

/// Wraps a reader in gzip or zstd decoding when its first bytes say so.
fn decompress(inner: Box<dyn Read + Send>) -> Result<Box<dyn BufRead + Send>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, inner);
    match Kind::of(buffered.fill_buf()?) {
        Kind::Gzip => {
            let gz = flate2::bufread::MultiGzDecoder::new(buffered);
            Ok(Box::new(BufReader::with_capacity(256 * 1024, gz)))
        }
        Kind::Zstd => {
            let zst = zstd::stream::read::Decoder::with_buffer(buffered)?;
            Ok(Box::new(BufReader::with_capacity(256 * 1024, zst)))
        }
        Kind::Parquet | Kind::Plain => Ok(Box::new(buffered)),
    }
}

/// Lines of a JSONL stream. Blank lines are skipped but still counted, so that the
/// numbers in error messages match an editor's.
pub struct JsonlSource {
    reader: Box<dyn BufRead + Send>,
    line: u64,
    max_line: u64,
    done: bool,
}

impl JsonlSource {
    pub fn new(reader: Box<dyn BufRead + Send>, max_line: u64) -> JsonlSource {
        JsonlSource {
            reader,
            line: 0,
            max_line,
            done: false,
        }
    }

    /// Reads the rest of an over-long line without keeping it.
    fn skip_line(&mut self) -> Result<()> {
        loop {
            let buf = self.reader.fill_buf().context("read error")?;
            if buf.is_empty() {
                return Ok(());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.reader.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.reader.consume(n);
                }
            }
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
            problems: Vec::new(),
        };
        while batch.records.len() < BATCH_RECORDS && batch.buf.len() < 4 * 1024 * 1024 {
            let start = batch.buf.len();
            let n = (&mut self.reader)
                .take(self.max_line + 1)
                .read_until(b'\n', &mut batch.buf)
                .context("read error")?;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            if n as u64 > self.max_line && batch.buf.last() != Some(&b'\n') {
                batch.buf.truncate(start);
                self.skip_line()?;
                batch.problems.push((
                    batch.records.len(),
                    format!(
                        "the line is longer than {} bytes ([input] max_line_bytes); skipped",
                        crate::money::group_thousands(self.max_line)
                    ),
                ));
                batch
                    .records
                    .push((Position::Line(self.line), start..start));
                continue;
            }
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
        let mut src = JsonlSource::new(Box::new(&data[..]), 1 << 20);
        let b = src.next_batch().unwrap().unwrap();
        let got: Vec<(u64, &[u8])> = b.iter().map(|(p, r, _)| (p.number(), r)).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (4, &b"{\"prompt\":\"b\"}"[..]));
        assert_eq!(got[2].0, 5);
        assert!(src.next_batch().unwrap().is_none());
    }

    #[test]
    fn an_over_long_line_is_a_bad_record_in_its_place() {
        let long = format!("{{\"prompt\":\"{}\"}}", "x".repeat(100));
        let data = format!("{{\"prompt\":\"a\"}}\n{long}\n{{\"prompt\":\"b\"}}\n{long}");
        let mut src = JsonlSource::new(Box::new(std::io::Cursor::new(data.into_bytes())), 50);
        let b = src.next_batch().unwrap().unwrap();
        let got: Vec<(u64, &[u8], Option<&str>)> =
            b.iter().map(|(p, r, e)| (p.number(), r, e)).collect();
        let long = Some("the line is longer than 50 bytes ([input] max_line_bytes); skipped");
        assert_eq!(
            got,
            [
                (1, &b"{\"prompt\":\"a\"}"[..], None),
                (2, &b""[..], long),
                (3, &b"{\"prompt\":\"b\"}"[..], None),
                (4, &b""[..], long),
            ]
        );
        assert!(b.buf.len() < 100, "the long lines were not kept");
    }
}
