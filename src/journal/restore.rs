//! Reading a journal back for `--resume`: the spend of every billed call, the
//! positions (or, after a changed input, the record keys) already finished, the cost
//! tally, a torn last line dropped; and the check that the job is still the one the
//! journal ran.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{Fingerprint, Line, VERSION};
use crate::money::Usd;
use crate::output::report::CostTally;
use crate::output::Status;

/// What earlier runs in the journal already did.
#[derive(Default)]
pub struct Restored {
    /// Input positions finished for good (a `skipped_budget` record runs again: it
    /// was never sent, so it cannot be paid twice).
    pub done: PositionSet,
    /// After a forced resume on a changed input, instead of `done`: the finished rows
    /// of the old input by record key, to carry to the records' new positions.
    pub carried: Carried,
    pub spent: Usd,
    pub tally: CostTally,
    pub records: u64,
    /// A torn last line was dropped.
    pub torn_tail: bool,
    /// Batch submissions that still hold records without a row, in order.
    pub batches: Vec<Submission>,
    /// The next batch submission number.
    pub next_batch: u64,
    /// Batch lines already billed (journaled calls): `(seq, position)`.
    pub billed_lines: std::collections::HashSet<(u64, u64)>,
}

/// A batch submission journaled by an earlier run, folded from its steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submission {
    pub seq: u64,
    pub model: String,
    pub provider: String,
    /// Every record position it holds (some may have a row by now).
    pub positions: Vec<u64>,
    pub at: u64,
    pub file: Option<String>,
    pub id: Option<String>,
}

/// Finished rows by the key of their record's bytes: where each row line is in the
/// journal. A key finished twice (two identical lines) carries two rows, one each.
#[derive(Default)]
pub struct Carried(pub(super) HashMap<u64, Vec<(u64, u32)>>);

impl Carried {
    /// The journal line (offset, length) of a finished row for a record with `key`.
    pub fn take(&mut self, key: u64) -> Option<(u64, u32)> {
        let rows = self.0.get_mut(&key)?;
        let row = rows.pop();
        if rows.is_empty() {
            self.0.remove(&key);
        }
        row
    }

    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A growable bit set of input positions.
#[derive(Default)]
pub struct PositionSet(Vec<u64>);

impl PositionSet {
    pub fn insert(&mut self, pos: u64) {
        let (word, bit) = ((pos / 64) as usize, pos % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    pub fn remove(&mut self, pos: u64) {
        if let Some(w) = self.0.get_mut((pos / 64) as usize) {
            *w &= !(1 << (pos % 64));
        }
    }

    pub fn contains(&self, pos: u64) -> bool {
        self.0
            .get((pos / 64) as usize)
            .is_some_and(|w| w & (1 << (pos % 64)) != 0)
    }

    /// How many positions the set holds.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Reads a journal for a resume: what is done, the length of its valid prefix, and the
/// fingerprint the job was last run with. `by_content` (a forced resume on a changed
/// input) gathers the finished rows by record key into `carried` instead of `done`.
pub(super) fn read(path: &Path, by_content: bool) -> Result<(Restored, u64, Fingerprint)> {
    let mut restored = Restored::default();
    let mut valid_len = 0u64;
    let mut fingerprint = None;
    let mut finished = PositionSet::default();
    // By position since the last renumbering: the latest row line's (key, offset,
    // length), or `None` for a skipped record.
    let mut latest: HashMap<u64, Option<(u64, u64, u32)>> = HashMap::new();
    let mut batches: std::collections::BTreeMap<u64, Option<Submission>> = Default::default();
    scan(path, |n, offset, bytes, last| {
        let line: Line = match serde_json::from_slice(bytes) {
            Ok(l) if bytes.ends_with(b"\n") => l,
            // A crash mid-write leaves at most one torn line, the last.
            _ if last => {
                restored.torn_tail = true;
                return Ok(());
            }
            Ok(_) | Err(_) => bail!(
                "{} line {n} is not a journal line; the journal is damaged (move it away to start over)",
                path.display()
            ),
        };
        valid_len = offset + bytes.len() as u64;
        if n == 1 {
            match line.switchyard_journal {
                Some(VERSION) => {}
                Some(v) => bail!(
                    "{} is a version {v} journal; this switchyard reads version {VERSION}",
                    path.display()
                ),
                None => bail!("{} is not a switchyard journal", path.display()),
            }
        }
        if let Some(fp) = line.fingerprint {
            fingerprint = Some(fp);
            if line.renumbered {
                // Positions from before belong to an older input.
                finished = PositionSet::default();
                restored.done = PositionSet::default();
                latest.clear();
                // Batches hold positions of the old input: not re-attached.
                for b in batches.values_mut() {
                    *b = None;
                }
            }
        } else if let Some(b) = line.batch {
            restored.next_batch = restored.next_batch.max(b.seq + 1);
            let entry = batches.entry(b.seq).or_insert_with(|| {
                Some(Submission {
                    seq: b.seq,
                    ..Default::default()
                })
            });
            if let Some(sub) = entry {
                if b.dropped {
                    *entry = None;
                } else {
                    if let Some(m) = b.model {
                        sub.model = m;
                    }
                    if let Some(p) = b.provider {
                        sub.provider = p;
                    }
                    if let Some(p) = b.positions {
                        sub.positions = p;
                    }
                    if let Some(at) = b.at {
                        sub.at = at;
                    }
                    if b.file.is_some() {
                        sub.file = b.file;
                    }
                    if b.id.is_some() {
                        sub.id = b.id;
                    }
                }
            }
        } else if let Some(call) = line.call {
            if let Some([seq, pos]) = call.batch {
                restored.billed_lines.insert((seq, pos));
            }
            restored.spent += call.cost;
            restored.tally.add(&call);
        } else if let Some(pos) = line.pos {
            finished.insert(pos);
            let skipped = line.status == Some(Status::SkippedBudget) || line.again;
            if skipped {
                restored.done.remove(pos);
            } else {
                restored.done.insert(pos);
            }
            if by_content {
                let row = line
                    .key
                    .filter(|_| !skipped)
                    .map(|k| (k, offset, bytes.len() as u32));
                latest.insert(pos, row);
            }
        }
        Ok(())
    })?;
    if by_content {
        restored.done = PositionSet::default();
        for (key, offset, len) in latest.into_values().flatten() {
            restored
                .carried
                .0
                .entry(key)
                .or_default()
                .push((offset, len));
        }
    }
    let Some(fingerprint) = fingerprint else {
        bail!(
            "{} has no header line; move it away to start over",
            path.display()
        );
    };
    restored.records = finished.count();
    restored.batches = batches
        .into_values()
        .flatten()
        .filter(|b| {
            !b.positions.is_empty() && b.positions.iter().any(|p| !restored.done.contains(*p))
        })
        .collect();
    Ok((restored, valid_len, fingerprint))
}

/// Whether the job changed; an error when it did and the resume is not forced.
pub(super) fn check_fingerprint(
    path: &Path,
    was: &Fingerprint,
    now: &Fingerprint,
    force: bool,
) -> Result<bool> {
    let changed: Vec<&str> = now
        .iter()
        .filter(|(k, v)| was.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    if force || changed.is_empty() {
        return Ok(!changed.is_empty());
    }
    let detail = match (was.get("input"), now.get("input")) {
        (Some(a), Some(b)) if a != b => format!(" (input was {a}, now {b})"),
        _ => String::new(),
    };
    bail!(
        "cannot resume {}: the {} changed since it was started{detail}; \
         rerun with the same input and config, or add --force to resume anyway",
        path.display(),
        changed.join(", ")
    )
}

/// Calls `f(line_number, byte_offset, line_bytes, is_last)` for every line.
pub(super) fn scan(
    path: &Path,
    mut f: impl FnMut(u64, u64, &[u8], bool) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut n, mut offset) = (0u64, 0u64);
    let (mut line, mut next) = (Vec::new(), Vec::new());
    let read = |r: &mut BufReader<File>, buf: &mut Vec<u8>| -> Result<usize> {
        buf.clear();
        r.read_until(b'\n', buf)
            .with_context(|| format!("cannot read {}", path.display()))
    };
    read(&mut reader, &mut line)?;
    while !line.is_empty() {
        read(&mut reader, &mut next)?;
        n += 1;
        f(n, offset, &line, next.is_empty())?;
        offset += line.len() as u64;
        std::mem::swap(&mut line, &mut next);
    }
    Ok(())
}
