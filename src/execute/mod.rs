//! `run`: the records of a job executed with bounded concurrency. One owner (the
//! dispatch loop here) holds the run state — budget ledger, circuit breakers, cost
//! tally, journal or stdout, progress — and record tasks (`record`) ask it for budget
//! and report to it over channels. It also owns the journal's flush points, resume
//! and the Ctrl-C drain.
//!
//! Providers are the configured HTTP APIs, or with `--simulate` the in-process
//! simulator; a run never mixes them.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{mpsc, oneshot};

use crate::app::{evaluate_all, EXIT_BUDGET, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
use crate::breaker::Breaker;
use crate::budget::{Ledger, Reservation, Shortfall};
use crate::classify::Decision;
use crate::config::{Config, ModelId};
use crate::input::Input;
use crate::journal::{self, Journal, Mode, Restored};
use crate::limits::Limits;
use crate::money::{group_thousands, Usd};
use crate::output::{write_jsonl, Call, ResultRow};
use crate::plan::{Evaluated, Outcome};
use crate::progress::Progress;

mod record;
use crate::provider::Backend;
use crate::record::Job;

/// What `--on-budget` does with a record whose worst case no longer fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnBudget {
    /// Use the cheapest remaining candidate that still fits.
    Downgrade,
    /// Mark the record `skipped_budget`.
    Skip,
    /// Finish what is in flight, mark the rest `skipped_budget`, exit 3.
    Stop,
}

pub struct RunSettings {
    pub input: Input,
    pub budget: Option<Usd>,
    pub on_budget: OnBudget,
    pub concurrency: usize,
    pub out: Option<PathBuf>,
    pub strict: bool,
    /// Answer with the simulated provider instead of the configured HTTP APIs.
    pub simulate: bool,
    /// Continue the run journaled in `out` (`--resume`); `force` accepts a changed
    /// input or config.
    pub resume: bool,
    pub force: bool,
    /// Replace a run `out` already holds.
    pub overwrite: bool,
}

/// What record tasks share read-only: the providers and the rate limits.
struct Clients {
    backend: Backend,
    limits: Limits,
}

enum Grant {
    Granted(Reservation),
    BreakerOpen,
    NoBudget(Shortfall),
}

enum ToOwner {
    Reserve {
        model: ModelId,
        worst: Usd,
        reply: oneshot::Sender<Grant>,
    },
    Settle {
        reservation: Reservation,
        model: ModelId,
        call: Call,
    },
    Release {
        reservation: Reservation,
        model: ModelId,
        failed: bool,
    },
    StopOnBudget,
    Done(u64, Box<ResultRow>),
}

/// Where finished records go: stdout, or the journal in `--out`.
enum Output {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    Journal(Journal),
}

impl Output {
    /// Called before the next record starts and every 100 ms: what finished so far
    /// reaches stdout or the journal file.
    fn flush(&mut self) -> Result<()> {
        match self {
            Output::Stdout(out) => Ok(out.flush()?),
            Output::Journal(j) => j.flush(),
        }
    }
}

/// The summary a run ends with.
pub struct RunSummary {
    /// Records with a result, over every run of this `--out` (resumes included).
    pub rows: u64,
    pub not_ok: u64,
    pub stopped_on_budget: bool,
    /// Ctrl-C or SIGTERM: the run drained and stopped; `--resume` continues it.
    pub interrupted: bool,
    /// Records still in flight when the drain time ran out (they run again on resume).
    pub abandoned: usize,
    /// After an interrupt: records the input file holds that have no result yet
    /// (`None` for stdin, which is not read to its end).
    pub remaining: Option<u64>,
    pub spent: Usd,
    pub report: Vec<crate::report::ReportRow>,
}

pub fn run(cfg: Config, s: RunSettings) -> Result<(u8, RunSummary)> {
    let (output, restored) = match &s.out {
        Some(dir) => {
            if s.resume && !s.force && matches!(s.input, Input::Stdin) {
                bail!("--resume cannot check stdin against the journal; give the input file (or add --force)");
            }
            let mode = match (s.resume, s.overwrite) {
                (true, _) => Mode::Resume { force: s.force },
                (false, true) => Mode::Overwrite,
                (false, false) => Mode::Fresh,
            };
            let fingerprint = journal::fingerprint(&cfg, &s.input, s.simulate)?;
            let sync_every = Duration::from_millis(cfg.run.journal_sync_ms);
            let (j, r) = Journal::open(dir, &fingerprint, mode, sync_every)?;
            if r.torn_tail {
                eprintln!(
                    "warning: {}: dropped a torn last line (a crash mid-write); that record runs again",
                    j.path().display()
                );
            }
            if r.records > 0 {
                eprintln!(
                    "resuming {}: {} records already done, {} already spent",
                    dir.display(),
                    group_thousands(r.done.len()),
                    r.spent
                );
            }
            (Output::Journal(j), r)
        }
        None => (
            Output::Stdout(std::io::BufWriter::new(std::io::stdout())),
            Restored::default(),
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let cfg = Arc::new(cfg);
    let s = Arc::new(s);
    // The dispatcher runs as a task among the record tasks (not on this thread), so
    // their messages to it rarely need a thread woken.
    let task = rt.spawn(dispatch(cfg.clone(), s.clone(), output, restored));
    let mut summary = rt
        .block_on(task)
        .map_err(|e| anyhow::anyhow!("the run's dispatcher failed: {e}"))??;
    rt.shutdown_background();
    if let Some(dir) = &s.out {
        let written = journal::write_results(&dir.join(journal::FILE), dir)?;
        summary.rows = written.records;
        summary.not_ok = written.not_ok;
        crate::report::write_parquet(&dir.join("cost_report.parquet"), &summary.report)?;
    }
    let code = if summary.interrupted {
        EXIT_INTERRUPTED
    } else if summary.stopped_on_budget {
        EXIT_BUDGET
    } else if summary.not_ok > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    };
    Ok((code, summary))
}

fn base_row(id: String, decision: Option<&Decision>, job: Option<&mut Job>) -> ResultRow {
    ResultRow {
        id,
        task: decision.map(|d| d.task.as_str().into()),
        complexity: decision.map(|d| d.complexity.as_str().into()),
        classified_by: decision.map(|d| d.classified_by.as_str().into()),
        metadata: job.and_then(|j| j.metadata.take()),
        ..ResultRow::default()
    }
}

/// Ctrl-C and SIGTERM: the first asks the run to drain (one message on the channel);
/// the second exits at once, which leaves the journal resumable (every line in it
/// was written whole).
fn watch_signals() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn terminate(term: &mut Option<Signal>) {
            match term {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let mut term = signal(SignalKind::terminate()).ok();
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate(&mut term) => {}
            }
            if n == 0 {
                let _ = tx.send(());
            } else {
                eprintln!(
                    "aborted; every finished record is in the journal: run again with --resume"
                );
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
        }
    });
    rx
}

async fn dispatch(
    cfg: Arc<Config>,
    s: Arc<RunSettings>,
    mut output: Output,
    restored: Restored,
) -> Result<RunSummary> {
    let (input_tx, mut input_rx) = mpsc::channel::<(Evaluated, Option<String>)>(1024);
    let reader = {
        let cfg = cfg.clone();
        let input = s.input.clone();
        let strict = s.strict;
        std::thread::spawn(move || {
            evaluate_all(&cfg, &input, strict, |e, problem| {
                input_tx
                    .blocking_send((e, problem.map(String::from)))
                    .map_err(|_| anyhow::anyhow!("run stopped"))
            })
        })
    };
    let (to_owner, mut from_tasks) = mpsc::unbounded_channel::<ToOwner>();
    let backend = if s.simulate {
        Backend::simulated(&cfg)
    } else {
        Backend::http(&cfg)?
    };
    let provider = Arc::new(Clients {
        backend,
        limits: Limits::new(&cfg),
    });
    let mut signals = watch_signals();
    let Restored {
        done,
        spent,
        mut tally,
        records: already_done,
        ..
    } = restored;
    let mut progress = Progress::new(&s.input, already_done, s.budget);
    let mut seen = 0u64;
    let mut ledger = Ledger::new(s.budget, spent);
    let mut breakers: HashMap<ModelId, Breaker> = HashMap::new();
    let (mut in_flight, mut input_done, mut stopping) = (0usize, false, false);
    let mut drain_until: Option<tokio::time::Instant> = None;
    let (mut rows, mut not_ok, mut remaining) = (0u64, 0u64, None);
    let concurrency = s.concurrency.max(1);
    let cooldown = Duration::from_secs(cfg.run.breaker_cooldown_s);
    let mut flush_tick = tokio::time::interval(Duration::from_millis(100));

    let mut emit =
        |pos: u64, row: &ResultRow, output: &mut Output, progress: &mut Progress| -> Result<()> {
            match output {
                Output::Stdout(out) => write_jsonl(out, row)?,
                Output::Journal(j) => j.row(pos, row)?,
            }
            rows += 1;
            not_ok += u64::from(!row.is_ok());
            progress.finished(row);
            Ok(())
        };

    while !(input_done && in_flight == 0) {
        tokio::select! {
            biased;
            Some(msg) = from_tasks.recv() => match msg {
                ToOwner::Reserve { model, worst, reply } => {
                    let breaker = breakers.entry(model).or_insert_with(|| Breaker::new(cfg.run.breaker_failures, cooldown));
                    // Budget first: a refused reservation must not use up a
                    // half-open breaker's single probe.
                    let grant = match ledger.available() {
                        Some(available) if worst > available => Grant::NoBudget(Shortfall { needed: worst, available }),
                        _ if !breaker.allow(Instant::now()) => Grant::BreakerOpen,
                        _ => match ledger.reserve(worst) {
                            Ok(r) => Grant::Granted(r),
                            Err(short) => Grant::NoBudget(short),
                        },
                    };
                    if let Err(Grant::Granted(r)) = reply.send(grant) {
                        ledger.release(r);
                    }
                }
                ToOwner::Settle { reservation, model, call } => {
                    ledger.settle(reservation, call.cost);
                    if let Some(b) = breakers.get_mut(&model) {
                        b.record_success();
                    }
                    if let Output::Journal(j) = &mut output {
                        j.call(&call)?;
                    }
                    tally.add(&call);
                    progress.spent(ledger.committed());
                }
                ToOwner::Release { reservation, model, failed } => {
                    ledger.release(reservation);
                    if let (true, Some(b)) = (failed, breakers.get_mut(&model)) {
                        b.record_failure(Instant::now());
                    }
                }
                ToOwner::StopOnBudget => stopping = true,
                ToOwner::Done(pos, row) => {
                    in_flight -= 1;
                    emit(pos, &row, &mut output, &mut progress)?;
                }
            },
            Some(()) = signals.recv(), if drain_until.is_none() => {
                let drain = Duration::from_secs(cfg.run.drain_timeout_s);
                progress.println(&format!(
                    "interrupted: finishing {in_flight} records in flight (at most {}s); Ctrl-C again to abort",
                    drain.as_secs()
                ));
                drain_until = Some(tokio::time::Instant::now() + drain);
                input_done = true;
            }
            _ = sleep_until_some(drain_until) => break,
            _ = flush_tick.tick() => output.flush()?,
            item = input_rx.recv(), if !input_done && in_flight < concurrency => match item {
                None => {
                    input_done = true;
                    progress.input_done(seen);
                }
                Some((e, problem)) => {
                    seen += 1;
                    // Results finished so far are written before another record
                    // starts: a crash can lose at most `concurrency` of them.
                    output.flush()?;
                    let pos = e.position.number();
                    if done.contains(pos) {
                        continue;
                    }
                    if let Some(row) = start(&cfg, &s, e, problem, stopping, &provider, &to_owner) {
                        emit(pos, &row, &mut output, &mut progress)?;
                    } else {
                        in_flight += 1;
                    }
                }
            },
        }
    }
    progress.clear();
    let interrupted = drain_until.is_some();
    if interrupted {
        // Count what the input file still holds, for the resume hint (not stdin: a
        // live pipe may never end).
        if matches!(s.input, Input::File(_)) {
            let mut left = in_flight as u64;
            while let Some((e, _)) = input_rx.recv().await {
                left += u64::from(!done.contains(e.position.number()));
            }
            remaining = Some(left);
        }
    }
    drop(input_rx);
    let read = reader.join().expect("reader thread panicked");
    if !interrupted {
        read?;
    }
    match output {
        Output::Stdout(mut out) => out.flush()?,
        Output::Journal(mut j) => j.sync()?,
    }
    Ok(RunSummary {
        rows,
        not_ok,
        stopped_on_budget: stopping,
        interrupted,
        abandoned: in_flight,
        remaining,
        spent: ledger.committed(),
        report: tally.rows(),
    })
}

/// Completes at `deadline`, or never without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Starts a record: returns its row at once when there is nothing to send.
fn start(
    cfg: &Arc<Config>,
    s: &RunSettings,
    e: Evaluated,
    problem: Option<String>,
    stopping: bool,
    provider: &Arc<Clients>,
    to_owner: &mpsc::UnboundedSender<ToOwner>,
) -> Option<ResultRow> {
    let pos = e.position.number();
    if let Some(p) = problem {
        return Some(ResultRow {
            status: "invalid_input".into(),
            error: Some(p),
            ..base_row(e.id, None, None)
        });
    }
    match e.outcome {
        Outcome::Invalid(reason) => Some(ResultRow {
            status: "invalid_input".into(),
            error: Some(reason),
            ..base_row(e.id, None, None)
        }),
        Outcome::Unroutable {
            mut job,
            decision,
            tier,
            reason,
            ..
        } => Some(ResultRow {
            status: "failed".into(),
            tier: Some(tier.as_str().into()),
            error: Some(reason),
            ..base_row(e.id, Some(&decision), Some(&mut job))
        }),
        Outcome::Routed {
            mut job,
            decision,
            route,
            ..
        } => {
            let mut row = base_row(e.id, Some(&decision), Some(&mut job));
            row.tier = Some(route.tier.as_str().into());
            row.routed_model = Some(cfg.models[route.chosen().model].name.clone());
            if stopping {
                row.status = "skipped_budget".into();
                row.error = Some("the run stopped on --budget".into());
                return Some(row);
            }
            let (cfg, provider, tx, on_budget) =
                (cfg.clone(), provider.clone(), to_owner.clone(), s.on_budget);
            // A record that panics still ends as a row, so the run always finishes.
            let fallback = ResultRow {
                status: "failed".into(),
                error: Some("internal error while executing this record".into()),
                ..row.clone()
            };
            let work = {
                let tx = tx.clone();
                tokio::spawn(async move {
                    record::execute(&cfg, &provider, &tx, on_budget, *job, decision, route, row)
                        .await
                })
            };
            tokio::spawn(async move {
                let row = work.await.unwrap_or(fallback);
                let _ = tx.send(ToOwner::Done(pos, Box::new(row)));
            });
            None
        }
    }
}
