//! The evaluated input as a stream: batches evaluated on worker threads, folded into
//! the plan in input order, and handed to the command a batch at a time. Bad records
//! are reported on stderr as they are met (the first few in full, then a count), and
//! `--strict` stops at the first.

use std::ops::ControlFlow;

use anyhow::Result;

use super::pipeline::{default_workers, ordered_map};
use super::{evaluate_batch, Dedup, Evaluated, Outcome, PlanSummary};
use crate::config::Config;
use crate::exit::StrictStop;
use crate::input::Input;

/// Problems printed in full before the rest are only counted.
const SHOWN_PROBLEMS: usize = 50;

/// Reports bad records on stderr: the first few in full, then a count.
struct Problems {
    label: String,
    shown: usize,
    hidden: u64,
}

impl Problems {
    fn report(&mut self, problem: &str) {
        if self.shown < SHOWN_PROBLEMS {
            self.shown += 1;
            crate::note!("warning: {}: {problem}", self.label);
        } else {
            self.hidden += 1;
        }
    }

    fn finish(&self) {
        if self.hidden > 0 {
            crate::note!(
                "warning: {}: {} more bad records not shown (`switchyard classify` lists them all)",
                self.label,
                self.hidden
            );
        }
    }
}

/// Evaluates the whole input and folds it, calling `each` on every record in order
/// with the problem that makes it invalid, if any.
pub fn evaluate_all(
    cfg: &Config,
    input: &Input,
    strict: bool,
    mut each: impl FnMut(Evaluated, Option<&str>) -> Result<()>,
) -> Result<PlanSummary> {
    evaluate_batches(cfg, input, strict, default_workers(), &|_| false, |batch| {
        batch
            .into_iter()
            .try_for_each(|(e, problem)| each(e, problem.as_deref()))
    })
}

/// [`evaluate_all`] a batch at a time (the input's own batches, in order): one
/// hand-off per batch to a consumer on another thread, instead of one per record.
/// `workers` threads evaluate batches in parallel; positions `done` says are finished
/// are only read for their id.
pub fn evaluate_batches(
    cfg: &Config,
    input: &Input,
    strict: bool,
    workers: usize,
    done: &(dyn Fn(u64) -> bool + Sync),
    mut each: impl FnMut(Vec<(Evaluated, Option<String>)>) -> Result<()>,
) -> Result<PlanSummary> {
    let label = input.label();
    let source = input.open(cfg.max_line_bytes)?;
    let tier = cfg.tier;
    let mut summary = PlanSummary::default();
    let mut dedup = Dedup::default();
    let mut problems = Problems {
        label: label.clone(),
        shown: 0,
        hidden: 0,
    };
    ordered_map(
        source,
        workers,
        |batch| evaluate_batch(batch, cfg, tier, done),
        |records| {
            let mut out = Vec::with_capacity(records.len());
            for e in records {
                let problem = summary.add(&e, &mut dedup, cfg);
                let invalid = problem.is_some() && !matches!(e.outcome, Outcome::Unroutable { .. });
                if let Some(p) = &problem {
                    if strict && invalid {
                        return Err(StrictStop(format!("{label}: {p}")).into());
                    }
                    problems.report(p);
                }
                out.push((e, problem.filter(|_| invalid)));
            }
            each(out)?;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    problems.finish();
    if summary.records == 0 {
        crate::note!("warning: {label}: no records");
    }
    Ok(summary)
}
