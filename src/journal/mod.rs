//! The run journal, `--out DIR/journal.jsonl`: the durable record of a run that
//! `--resume` continues and the Parquet outputs are written from.
//!
//! One JSON object per line:
//! - a header: `{"switchyard_journal": 1, "fingerprint": {...}}` — what the input and
//!   the routing config were, so a resume can refuse when they changed;
//! - `{"call": {...}}` for every billed call, exact to the pico-dollar (this is what
//!   restores the spend, including calls whose record had not finished);
//! - `{"pos": N, "status": "...", "row": {...}, "key": K}` for every finished record,
//!   keyed by its position in the input (ids may repeat in a bad input; positions do
//!   not); `key` hashes the record's bytes; `"again": true` on a record that failed
//!   for a lasting reason (a refused key, an unknown model, a host that cannot be
//!   reached), which a resume sends again once the cause is fixed;
//! - `{"batch": {"seq": N, ...}}` for a batch submission (`run --via batch`), written
//!   and synced before the step it records is taken further: first the record
//!   positions it holds (`positions`, `model`, `provider`, `at`), then the uploaded
//!   input `file`, then the provider's batch `id`; `dropped` when it was never
//!   submitted (split after a 413, or abandoned before creation). A resume re-attaches
//!   to every submission that still has records without a row, so no record is
//!   submitted twice. A call answered by a batch carries `"batch": [seq, pos]`;
//! - `{"fingerprint": {...}, "renumbered": true}` when a `--force`d resume accepted a
//!   changed input: positions before it belong to the old input. Finished records of
//!   the old input are matched to the new one by `key` (the same bytes), re-journaled
//!   at their new positions and not sent again; every other record runs.
//!
//! Durability: lines are buffered only until the dispatcher next takes a record from
//! the input (or 100 ms pass): then they reach the kernel in one `write(2)`. So a
//! killed process (`kill -9`, OOM killer) loses only results of records that were in
//! flight or had just finished in the same burst — at most `--concurrency` records,
//! which a resume sends again — never a record finished before the current window.
//! `fdatasync` runs at most every `[run] journal_sync_ms` (default 1000; 0 = at
//! every write) and at the end, so a power loss or kernel crash can lose at most that
//! last interval; those records run again. A torn last line (a crash in the middle of
//! a write) is dropped on resume.

mod fingerprint;
mod merge;
mod restore;
mod results;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::output::report::Call;
use crate::output::{ResultRow, Status};
pub use fingerprint::{fingerprint, Fingerprint};
pub use merge::{merge_journals, Merged};
use restore::{check_fingerprint, read};
pub use restore::{Carried, PositionSet, Restored, Submission};
pub use results::{write_results, Written};

pub const FILE: &str = "journal.jsonl";
const VERSION: u32 = 1;

/// How `run` treats an `--out` directory that may already hold a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse a directory that holds a run.
    Fresh,
    /// Replace whatever run the directory holds.
    Overwrite,
    /// Continue the directory's run (or start one); `force` accepts a changed input or
    /// config.
    Resume { force: bool },
}

#[derive(Serialize, Deserialize)]
struct Header {
    switchyard_journal: u32,
    fingerprint: Fingerprint,
}

/// Written by a `--force`d resume: what the job is from here on; `renumbered` when
/// the input changed, so earlier positions no longer name the same records.
#[derive(Serialize)]
struct Refingerprint {
    fingerprint: Fingerprint,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    renumbered: bool,
}

/// A line, read without materializing its row.
#[derive(Deserialize)]
pub(super) struct Line {
    #[serde(default)]
    switchyard_journal: Option<u32>,
    #[serde(default)]
    fingerprint: Option<Fingerprint>,
    #[serde(default)]
    call: Option<Call>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    key: Option<u64>,
    #[serde(default)]
    renumbered: bool,
    #[serde(default)]
    again: bool,
    #[serde(default)]
    batch: Option<BatchLine>,
}

/// One step of a batch submission (see the module docs); fields not known at that
/// step are left out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchLine {
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<Vec<u64>>,
    /// Unix seconds when the submission was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

#[derive(Serialize)]
struct BatchJournalLine<'a> {
    batch: &'a BatchLine,
}

#[derive(Serialize)]
struct RowLine<'a> {
    pos: u64,
    status: Status,
    row: &'a ResultRow,
    key: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    again: bool,
}

#[derive(Serialize)]
struct CallLine<'a> {
    call: &'a Call,
}

#[derive(Deserialize)]
struct StoredRow {
    row: ResultRow,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    /// Whole lines not yet written.
    pending: Vec<u8>,
    sync_every: Duration,
    last_sync: Instant,
    unsynced: bool,
}

/// The batch submissions of the run journaled in `dir` that still hold records
/// without a row (`run --cancel`).
pub fn pending_batches(dir: &Path) -> Result<Vec<Submission>> {
    let path = dir.join(FILE);
    if !path.exists() {
        bail!("--out {} holds no run journal ({FILE})", dir.display());
    }
    Ok(read(&path, false)?.0.batches)
}

/// Does `dir` hold a run (a journal or results)?
pub fn holds_run(dir: &Path) -> bool {
    dir.join(FILE).exists() || dir.join("results.parquet").exists()
}

impl Journal {
    /// Opens the journal of `--out dir` per `mode`, checking a resumed run's
    /// fingerprint. Returns the journal, ready to append, and what it already holds.
    pub fn open(
        dir: &Path,
        fingerprint: &Fingerprint,
        mode: Mode,
        sync_every: Duration,
    ) -> Result<(Journal, Restored)> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --out {}", dir.display()))?;
        let path = dir.join(FILE);
        let existing = path.exists();
        let restored = match mode {
            Mode::Fresh if holds_run(dir) => bail!(
                "--out {} already holds a run; add --resume to continue it or --overwrite to replace it",
                dir.display()
            ),
            Mode::Resume { force } if existing => {
                let (mut restored, valid_len, was) = read(&path, false)?;
                let changed = check_fingerprint(&path, &was, fingerprint, force)?;
                let renumbered = changed && was.get("input") != fingerprint.get("input");
                if renumbered {
                    restored = read(&path, true)?.0;
                }
                Some((restored, valid_len, changed, renumbered))
            }
            Mode::Resume { .. } if dir.join("results.parquet").exists() => bail!(
                "--out {} holds results.parquet but no {FILE} to resume from; use --overwrite to replace it",
                dir.display()
            ),
            _ => None,
        };
        let cannot = |e: std::io::Error| {
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        };
        let mut journal = match restored {
            Some((_, valid_len, changed, renumbered)) => {
                // Read too: a forced resume on a changed input reads old rows back.
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(cannot)?;
                // Drop a torn last line so the next append starts on a fresh line.
                file.set_len(valid_len).map_err(cannot)?;
                let mut j = Journal::with_file(path.clone(), file, sync_every);
                if changed {
                    // --force: later resumes compare against what this one ran with.
                    j.append(&Refingerprint {
                        fingerprint: fingerprint.clone(),
                        renumbered,
                    })?;
                }
                j
            }
            None => {
                for stale in ["results.parquet", "cost_report.parquet"] {
                    let _ = std::fs::remove_file(dir.join(stale));
                }
                let file = File::create(&path).map_err(cannot)?;
                let mut j = Journal::with_file(path.clone(), file, sync_every);
                let header = Header {
                    switchyard_journal: VERSION,
                    fingerprint: fingerprint.clone(),
                };
                j.append(&header)?;
                j.sync()?;
                j
            }
        };
        journal.last_sync = Instant::now();
        Ok((journal, restored.map(|(r, ..)| r).unwrap_or_default()))
    }

    fn with_file(path: PathBuf, file: File, sync_every: Duration) -> Journal {
        Journal {
            path,
            file,
            pending: Vec::with_capacity(1 << 16),
            sync_every,
            last_sync: Instant::now(),
            unsynced: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a finished record; `key` hashes its bytes in the input.
    /// A finished record; `again` when a resume should send it again (it failed for
    /// a lasting reason, not one of its own).
    pub fn row(&mut self, pos: u64, key: u64, row: &ResultRow, again: bool) -> Result<()> {
        self.append(&RowLine {
            pos,
            status: row.status,
            row,
            key,
            again,
        })
    }

    /// A row an earlier run journaled at (`offset`, `len`) (see [`Carried`]).
    pub fn stored_row(&self, offset: u64, len: u32) -> Result<ResultRow> {
        let mut bytes = vec![0; len as usize];
        self.file
            .read_exact_at(&mut bytes, offset)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let stored: StoredRow = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} at byte {offset} is damaged", self.path.display()))?;
        Ok(stored.row)
    }

    /// Appends a billed call.
    pub fn call(&mut self, call: &Call) -> Result<()> {
        self.append(&CallLine { call })
    }

    /// A step of a batch submission, on disk (synced) before this returns: the step
    /// it records may now be taken.
    pub fn batch(&mut self, line: &BatchLine) -> Result<()> {
        self.append(&BatchJournalLine { batch: line })?;
        self.sync()
    }

    /// Buffers one line; [`Journal::flush`] writes it.
    fn append(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.pending, value)?;
        self.pending.push(b'\n');
        Ok(())
    }

    /// Writes the buffered lines with one `write(2)` (a killed process leaves whole
    /// lines, or at worst a torn last one, which the reader drops), and
    /// `fdatasync`s when `journal_sync_ms` has passed.
    pub fn flush(&mut self) -> Result<()> {
        self.write_pending()?;
        if self.unsynced && self.last_sync.elapsed() >= self.sync_every {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes what is buffered and `fdatasync`s.
    pub fn sync(&mut self) -> Result<()> {
        self.write_pending()?;
        if self.unsynced {
            self.file
                .sync_data()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn write_pending(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.file
                .write_all(&self.pending)
                .with_context(|| format!("cannot append to {}", self.path.display()))?;
            self.pending.clear();
            self.unsynced = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Usd;

    fn fp(input: &str) -> Fingerprint {
        [("input".to_string(), input.to_string())].into()
    }

    fn row(id: &str, status: &str) -> ResultRow {
        ResultRow {
            status: status.parse().unwrap(),
            ..ResultRow::new(id.into())
        }
    }

    fn call(pico: u128) -> Call {
        Call {
            model: "m".into(),
            provider: "p".into(),
            ok: true,
            escalated: false,
            input_tokens: 10,
            output_tokens: 5,
            cost: Usd::from_pico(pico),
            baseline_cost: Usd::from_pico(pico * 10),
            latency_ms: 3,
            overrun: Usd::ZERO,
            batch: None,
        }
    }

    const NOW: Duration = Duration::from_secs(1);

    #[test]
    fn resume_restores_spend_done_positions_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path(), &fp("a"), Mode::Fresh, NOW).unwrap();
        assert_eq!(r.records, 0);
        j.call(&call(1_234_567)).unwrap();
        j.row(0, 0, &row("a", "ok"), false).unwrap();
        j.call(&call(7)).unwrap(); // paid, but its record never finished
        j.row(2, 0, &row("c", "skipped_budget"), false).unwrap();
        j.row(3, 0, &row("d", "failed"), false).unwrap();
        j.flush().unwrap();
        j.row(4, 0, &row("e", "ok"), false).unwrap(); // buffered, never written: the process dies
        drop(j);
        // A crash in the middle of a write.
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"pos":1,"status":"ok","ro"#).unwrap();
        drop(f);
        let len_before = std::fs::metadata(&path).unwrap().len();

        let (mut j, r) =
            Journal::open(dir.path(), &fp("a"), Mode::Resume { force: false }, NOW).unwrap();
        assert!(r.torn_tail);
        assert_eq!(r.spent, Usd::from_pico(1_234_574));
        assert!(r.done.contains(0) && r.done.contains(3));
        assert!(!r.done.contains(1), "the torn line's record runs again");
        assert!(!r.done.contains(2), "a skipped record runs again");
        assert!(!r.done.contains(4), "an unwritten line's record runs again");
        assert_eq!(r.records, 3);
        assert!(std::fs::metadata(&path).unwrap().len() < len_before);
        j.row(1, 0, &row("b", "ok"), false).unwrap();
        j.row(2, 0, &row("c", "ok"), false).unwrap();
        j.sync().unwrap();
        drop(j);

        let w = write_results(&path, dir.path()).unwrap();
        assert_eq!((w.records, w.not_ok), (4, 1));
        let (_, r) =
            Journal::open(dir.path(), &fp("a"), Mode::Resume { force: false }, NOW).unwrap();
        assert!(!r.torn_tail);
        assert_eq!(r.done.count(), 4);
    }

    #[test]
    fn a_changed_input_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        drop(Journal::open(dir.path(), &fp("1 bytes"), Mode::Fresh, NOW).unwrap());
        let err = Journal::open(
            dir.path(),
            &fp("2 bytes"),
            Mode::Resume { force: false },
            NOW,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("the input changed since it was started (input was 1 bytes, now 2 bytes)"),
            "{err}"
        );
        assert!(err.contains("--force"), "{err}");
        assert!(Journal::open(
            dir.path(),
            &fp("2 bytes"),
            Mode::Resume { force: true },
            NOW
        )
        .is_ok());
        let err = Journal::open(dir.path(), &fp("1 bytes"), Mode::Fresh, NOW)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("already holds a run; add --resume"), "{err}");
        let (_, r) = Journal::open(dir.path(), &fp("2 bytes"), Mode::Overwrite, NOW).unwrap();
        assert_eq!(r.records, 0);
    }

    #[test]
    fn a_damaged_middle_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), &fp("a"), Mode::Fresh, NOW).unwrap();
        j.row(0, 0, &row("a", "ok"), false).unwrap();
        j.flush().unwrap();
        drop(j);
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n{\"pos\":1,\"status\":\"ok\",\"row\":{}}\n")
            .unwrap();
        drop(f);
        let err = Journal::open(dir.path(), &fp("a"), Mode::Resume { force: false }, NOW)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.ends_with(&format!(
            "{} line 3 is not a journal line; the journal is damaged (move it away to start over)",
            path.display()
        )),
            "{err}"
        );
    }

    #[test]
    fn a_full_disk_is_an_error_naming_the_file() {
        // Linux's /dev/full fails every write with ENOSPC. Without it this test cannot
        // say anything, and it fails rather than pass silently.
        let full = Path::new("/dev/full");
        assert!(
            full.exists(),
            "this test needs /dev/full (Linux) to simulate a full disk"
        );
        let file = OpenOptions::new().write(true).open(full).unwrap();
        let mut j = Journal::with_file(full.to_path_buf(), file, NOW);
        j.row(0, 0, &row("a", "ok"), false).unwrap();
        let err = format!("{:#}", j.flush().err().unwrap());
        assert!(
            err.starts_with("cannot append to /dev/full: No space left on device"),
            "{err}"
        );
    }

    #[test]
    fn journal_sync_ms_zero_syncs_at_every_flush_and_a_longer_interval_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (mut every, _) =
            Journal::open(dir.path(), &fp("a"), Mode::Fresh, Duration::ZERO).unwrap();
        every.row(0, 0, &row("a", "ok"), false).unwrap();
        every.flush().unwrap();
        assert!(!every.unsynced, "journal_sync_ms = 0: synced at the flush");
        let other = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let (mut lazy, _) = Journal::open(other.path(), &fp("a"), Mode::Fresh, hour).unwrap();
        lazy.row(0, 0, &row("a", "ok"), false).unwrap();
        lazy.flush().unwrap();
        assert!(lazy.unsynced, "written, not yet synced");
        lazy.sync().unwrap();
        assert!(!lazy.unsynced);
    }

    #[test]
    fn row_position_reads_the_row_line_shape_the_journal_writes() {
        let mut line = serde_json::to_vec(&RowLine {
            pos: 1234567,
            status: Status::Ok,
            row: &row("r1", "ok"),
            key: 99,
            again: false,
        })
        .unwrap();
        line.push(b'\n');
        assert_eq!(results::row_position(&line), Some(1234567));
        let call = serde_json::to_vec(&CallLine { call: &call(5) }).unwrap();
        assert!(call.starts_with(results::CALL_PREFIX));
        assert_eq!(results::row_position(&call), None);
        for other in [
            &b"{\"pos\":,\"status\":\"ok\"}"[..],
            b"{\"pos\":12}",
            b"{\"pos\":99999999999999999999999,\"status\":\"ok\"}",
            b"{\"switchyard_journal\":1}",
        ] {
            assert_eq!(
                results::row_position(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
