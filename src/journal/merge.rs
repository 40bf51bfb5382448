//! `switchyard merge`: the journals of a job's shards (`run --shard K/N`, each its own
//! `--out`) joined into one: every shard ran the same input, so record positions
//! never collide unless two shards overlap (an error), and the merged journal
//! yields `results.parquet` in input order and the cost report of every call.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::restore::scan;
use super::{Line, FILE};
use crate::output::report::CostTally;

/// What a merge found.
pub struct Merged {
    pub shards: usize,
    pub tally: CostTally,
}

/// Writes `out/journal.jsonl` from the journals of `dirs`.
pub fn merge_journals(dirs: &[PathBuf], out: &Path) -> Result<Merged> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    let target = out.join(FILE);
    for d in dirs {
        if d.join(FILE) == target {
            bail!(
                "--out {} is one of the shards; merge into another directory",
                out.display()
            );
        }
    }
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&target)
            .with_context(|| format!("cannot write {}", target.display()))?,
    );
    let mut input: Option<(String, PathBuf)> = None;
    let mut owner: HashMap<u64, usize> = HashMap::new();
    let mut tally = CostTally::default();
    for (i, dir) in dirs.iter().enumerate() {
        let path = dir.join(FILE);
        if !path.exists() {
            bail!(
                "{} holds no run journal ({FILE}); give the shards' --out directories",
                dir.display()
            );
        }
        scan(&path, |n, _, bytes, last| {
            if !bytes.ends_with(b"\n") {
                // A torn last line (a crash mid-write): that record has no result.
                return Ok(());
            }
            let line: Line = match serde_json::from_slice(bytes) {
                Ok(l) => l,
                Err(_) if last => return Ok(()),
                Err(e) => bail!("{} line {n}: not a journal line: {e}", path.display()),
            };
            if line.renumbered {
                bail!("{} was resumed with --force on a changed input; its positions cannot be merged", path.display());
            }
            if let Some(fp) = &line.fingerprint {
                let this = fp.get("input").cloned().unwrap_or_default();
                match &input {
                    None => {
                        input = Some((this, dir.clone()));
                        if n == 1 {
                            w.write_all(bytes)?;
                        }
                    }
                    Some((first, from)) if *first != this => bail!(
                        "{} ran another input than {} ({this} vs {first}): shards of one job run the same input file",
                        dir.display(),
                        from.display()
                    ),
                    Some(_) => {}
                }
                return Ok(());
            }
            if let Some(call) = &line.call {
                tally.add(call);
                w.write_all(bytes)?;
            } else if let Some(pos) = line.pos {
                match owner.insert(pos, i) {
                    Some(j) if j != i => bail!(
                        "{} and {} both hold record {} (line {}): the shards overlap (the same --shard twice, or different N)",
                        dirs[j].display(),
                        dir.display(),
                        pos,
                        pos
                    ),
                    _ => {}
                }
                w.write_all(bytes)?;
            }
            Ok(())
        })?;
    }
    w.flush()
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(Merged {
        shards: dirs.len(),
        tally,
    })
}
