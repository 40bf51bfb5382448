//! The final pass: `results.parquet` written from the journal, one row per input
//! position (its last result), in input order, however many runs it took.

use crate::output::reasons::Reasons;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::restore::scan;
use super::{Line, StoredRow};
use crate::output::parquet::ParquetResults;

/// What the final pass found.
pub struct Written {
    pub records: u64,
    pub not_ok: u64,
    /// Why the records that are not ok are not.
    pub reasons: Reasons,
}

/// Writes `results.parquet` from the journal: one row per input position (its last
/// result), in input order, whatever order they finished in and however many runs it
/// took. The file appears by rename, so a reader never sees half of it.
pub fn write_results(path: &Path, dir: &Path) -> Result<Written> {
    let mut rows: Vec<(u64, u64, u32)> = Vec::new();
    scan(path, |_, offset, bytes, _| {
        if !bytes.ends_with(b"\n") || bytes.starts_with(CALL_PREFIX) {
            return Ok(());
        }
        let pos = match row_position(bytes) {
            Some(pos) => Some(pos),
            None => match serde_json::from_slice::<Line>(bytes) {
                // Rows before a renumbering were of an older input: those still
                // finished were journaled again at their new positions.
                Ok(l) if l.renumbered => {
                    rows.clear();
                    None
                }
                Ok(l) => l.pos,
                Err(_) => None,
            },
        };
        if let Some(pos) = pos {
            rows.push((pos, offset, bytes.len() as u32));
        }
        Ok(())
    })?;
    // Stable: for a position finished twice (skipped, then run), the later line wins.
    rows.sort_by_key(|&(pos, _, _)| pos);
    rows.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            *earlier = *later;
            true
        } else {
            false
        }
    });
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut blocks = Blocks {
        file,
        start: 0,
        buf: Vec::new(),
    };
    let mut out = ParquetResults::create(dir)?;
    let mut written = Written {
        records: 0,
        not_ok: 0,
        reasons: Reasons::default(),
    };
    for (_, offset, len) in rows {
        let bytes = blocks
            .get(offset, len as usize)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let stored: StoredRow = serde_json::from_slice(bytes)
            .with_context(|| format!("{} at byte {offset} is damaged", path.display()))?;
        written.records += 1;
        written.not_ok += u64::from(!stored.row.is_ok());
        written
            .reasons
            .add(stored.row.status, stored.row.error.as_deref());
        out.push(stored.row)?;
    }
    out.finish()?;
    Ok(written)
}

/// How a call line starts (`CallLine` serializes its one field first).
pub(super) const CALL_PREFIX: &[u8] = b"{\"call\":";

/// The position of a row line as `RowLine` writes it (`{"pos":N,"status":...`),
/// read without parsing the row; `None` for any other shape.
pub(super) fn row_position(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"pos\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !rest[digits..].starts_with(b",\"status\":") {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Reads lines by offset through a 4 MiB window. Rows in input order are nearly in
/// file order (they finish within a window of `--concurrency`), so most reads are
/// served from memory and the file is read about once, sequentially.
struct Blocks {
    file: File,
    start: u64,
    buf: Vec<u8>,
}

impl Blocks {
    const BEHIND: u64 = 256 << 10;
    const SIZE: usize = 4 << 20;

    fn get(&mut self, offset: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = offset + len as u64;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            self.start = offset.saturating_sub(Self::BEHIND);
            let want = (end - self.start) as usize + Self::SIZE;
            self.buf.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match self
                    .file
                    .read_at(&mut self.buf[filled..], self.start + filled as u64)?
                {
                    0 => break,
                    n => filled += n,
                }
            }
            self.buf.truncate(filled);
            if filled < (end - self.start) as usize {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + len])
    }
}
