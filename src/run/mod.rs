//! `run`: the records of a job executed with bounded concurrency. The [`dispatch`]er
//! owns the run's output (journal or stdout), the cost tally and progress; each record
//! is one [`task`], which walks its candidates ([`walk`]), passes the [`gate`] (budget
//! ledger and circuit breakers) before each request, waits for the rate [`limits`],
//! retries per [`policy`], [`checks`] the answer, and reports calls and its row back
//! over a channel. Only `commands::run` uses this module.
//!
//! Providers are the configured HTTP APIs, or with `--simulate` the in-process
//! simulator; a run never mixes them.

mod batcher;
mod breaker;
mod budget;
mod checks;
mod dispatch;
mod gate;
mod limits;
mod policy;
mod preflight;
mod progress;
mod reorder;
mod signals;
mod task;
mod walk;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::sync::mpsc;

use crate::config::{Config, OnBudget, Via};
use crate::exit::OutputFailed;
use crate::input::Input;
use crate::journal::{self, Journal, Mode, Restored};
use crate::money::{group_thousands, Usd};
use crate::output::reasons::Reasons;
use crate::output::report::ReportRow;
use crate::provider::Backend;
use dispatch::{dispatch, Output};
use gate::{Gate, Shared};

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
    /// Without `out`: rows on stdout in input order.
    pub keep_order: bool,
    /// `--ledger URL` and `--budget-name NAME`: budget and rate limits shared with
    /// every process naming them.
    pub ledger: Option<(String, String)>,
    /// `--shard K/N`: only the records whose id hashes to this shard.
    pub shard: Option<crate::cli::Shard>,
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
    /// Records that stopped waiting on their submitted batches at the interrupt:
    /// `--resume` re-attaches to those batches.
    pub in_batches: u64,
    /// After an interrupt: records the input file holds that have no result yet
    /// (`None` for stdin, which is not read to its end).
    pub remaining: Option<u64>,
    pub spent: Usd,
    pub report: Vec<ReportRow>,
    /// Why the records that are not ok are not (over every run of this `--out`).
    pub reasons: Reasons,
    /// The run stopped starting records after a streak of the same lasting failure;
    /// `remaining` counts what it left (for `--resume`).
    pub halted: Option<Halted>,
}

/// Why a run stopped starting records: `[run] stop_after_same_failures` reached, or
/// the shared ledger unreachable for `[ledger] reconnect_s`.
#[derive(Debug, Clone)]
pub struct Halted {
    /// Records in a row that failed on every model for the same lasting reason (0:
    /// the ledger was lost).
    pub records: u64,
    /// That reason, from the last of them (or why the ledger is unreachable).
    pub why: Arc<str>,
    pub ledger_lost: bool,
}

/// Runs the job: opens the output (and the journal a resume continues), executes
/// every record, then writes `results.parquet` and `cost_report.parquet` from the
/// journal. An error before any request names what is wrong; one after work started
/// carries [`OutputFailed`] when it was the output that failed.
pub fn run(cfg: Config, s: RunSettings) -> Result<RunSummary> {
    if s.resume && !s.force && matches!(s.input, Input::Stdin) {
        bail!(
            "--resume cannot check stdin against the journal; give the input file (or add --force)"
        );
    }
    if !s.simulate {
        preflight::check(&cfg, &s.input)?;
    }
    let batching = !s.simulate && cfg.run.via != Via::Realtime;
    if batching && s.out.is_none() {
        bail!(
            "--via {} needs --out DIR: its journal is what lets a crash or Ctrl-C re-attach to the batches already submitted",
            cfg.run.via
        );
    }
    if batching && cfg.run.via == Via::Batch {
        let realtime: Vec<&str> = cfg
            .routed_models()
            .into_iter()
            .filter(|m| !cfg.provider_of(*m).batch)
            .map(|m| cfg.models[m].provider.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !realtime.is_empty() {
            crate::note!(
                "--via batch: provider{} {} {} no batch API (`batch = true`): records routed there run realtime",
                if realtime.len() == 1 { "" } else { "s" },
                realtime.join(", "),
                if realtime.len() == 1 { "has" } else { "have" }
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The ledger must answer before anything is written or sent.
    let ledger = match &s.ledger {
        Some((url, name)) => {
            let lease = Duration::from_secs(cfg.ledger.lease_s.max(1));
            Some(rt.block_on(crate::ledger::SharedLedger::join(
                url, name, s.budget, lease,
            ))?)
        }
        None => None,
    };
    let (output, mut restored) = open_output(&cfg, &s)?;
    if s.simulate && cfg.run.via != Via::Realtime {
        crate::note!("--simulate answers every request in-process: --via {} is priced as realtime in this rehearsal (plan --via prices batch)", cfg.run.via);
    }
    tracing::info!(
        input = %s.input.label(),
        concurrency = s.concurrency,
        budget = s.budget.map(|b| b.to_string()),
        already_spent = %restored.spent,
        simulate = s.simulate,
        "run starts"
    );
    let backend = if s.simulate {
        Backend::simulated(&cfg)
    } else {
        Backend::http(&cfg)?
    };
    let (tx, from_tasks) = mpsc::unbounded_channel();
    let shared = {
        // The limits' clocks start on the runtime that waits on them.
        let _entered = rt.enter();
        // With a shared ledger, what may be reserved is what was claimed from it
        // (none yet): a request's reservation claims a block first.
        let ceiling = match (&ledger, s.budget) {
            (Some(_), Some(_)) => Some(restored.spent),
            (_, budget) => budget,
        };
        Shared {
            backend,
            limits: limits::Limits::new(&cfg),
            gate: Mutex::new(Gate::new(
                &cfg,
                budget::Ledger::new(ceiling, restored.spent),
            )),
            ledger: ledger.clone(),
            claiming: tokio::sync::Mutex::new(()),
        }
    };
    let ctx = Arc::new(task::Context {
        policy: policy::RetryPolicy::new(&cfg.run),
        concurrency: s.concurrency.max(1),
        cfg: Arc::new(cfg),
        settings: Arc::new(s),
        shared,
        tx,
        batcher: std::sync::OnceLock::new(),
    });
    if batching {
        let _entered = rt.enter();
        let batches = std::mem::take(&mut restored.batches);
        let billed = std::mem::take(&mut restored.billed_lines);
        let b = batcher::Batcher::start(&ctx, batches, restored.next_batch, billed);
        let _ = ctx.batcher.set(b);
    }
    // The dispatcher runs as a task among the record tasks (not on this thread), so
    // their messages to it rarely need a thread woken.
    let task = rt.spawn(dispatch(ctx.clone(), output, restored, from_tasks));
    let outcome = rt.block_on(task);
    if let Some(l) = &ledger {
        // Every settled cost reaches the server; then what this process claimed and
        // did not spend goes back to the budget.
        let within = Duration::from_secs(ctx.cfg.ledger.reconnect_s);
        if let Err(e) = rt.block_on(l.flush(within)) {
            crate::note!("error: {e}: this run's last costs are not on the shared ledger (its journal has them)");
        }
        if let Err(e) = rt.block_on(l.give_back(Usd::ZERO, true)) {
            crate::note!(
                "warning: {e}; its unspent claim returns when its lease expires ({}s)",
                ctx.cfg.ledger.lease_s
            );
        }
    }
    // Record tasks still running (abandoned by an abort or the drain timeout) are
    // dropped, not waited for.
    rt.shutdown_background();
    let mut summary =
        outcome.map_err(|e| anyhow::anyhow!("the run's dispatcher failed: {e}"))??;
    if let Some(dir) = &ctx.settings.out {
        let written =
            journal::write_results(&dir.join(journal::FILE), dir).context(OutputFailed)?;
        summary.rows = written.records;
        summary.not_ok = written.not_ok;
        summary.reasons = written.reasons;
        crate::output::report::write_parquet(&dir.join("cost_report.parquet"), &summary.report)
            .context(OutputFailed)?;
    }
    tracing::info!(
        records = summary.rows,
        not_ok = summary.not_ok,
        spent = %summary.spent,
        "run ends"
    );
    Ok(summary)
}

/// `run --out DIR --cancel`: asks the providers to cancel every batch the run in
/// `dir` submitted that still holds records without a row. Nothing is journaled:
/// a later `--resume` reads what the cancelled batches answered (billed, and kept)
/// and runs the rest.
pub fn cancel(cfg: &Config, dir: &std::path::Path) -> Result<()> {
    let pending = journal::pending_batches(dir)?;
    if pending.is_empty() {
        crate::note!("{}: no batch is waiting; nothing to cancel", dir.display());
        return Ok(());
    }
    let backend = Backend::http(cfg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut failed = 0;
    for sub in pending {
        let records = group_thousands(sub.positions.len() as u64);
        let (Some(id), Some(model)) = (&sub.id, cfg.model_id(&sub.model)) else {
            crate::note!(
                "batch {} ({records} records): never submitted; nothing to cancel",
                sub.seq
            );
            continue;
        };
        let Some(p) = backend.batch_provider(cfg, model) else {
            crate::note!(
                "batch {} ({id}): provider {} has no batch API in this config",
                sub.seq,
                sub.provider
            );
            failed += 1;
            continue;
        };
        match rt.block_on(p.cancel(id)) {
            Ok(s) => crate::note!(
                "batch {} ({id}, {records} records, {}): {}",
                sub.seq,
                sub.model,
                s.state
            ),
            Err((_, msg)) => {
                crate::note!("batch {} ({id}): cannot cancel: {msg}", sub.seq);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} batches could not be cancelled");
    }
    crate::note!("continue with --resume: it keeps what the batches answered and runs the rest");
    Ok(())
}

/// Stdout, or the journal in `--out` (opened per `--resume`/`--overwrite`, its
/// fingerprint checked) with what earlier runs of it did.
fn open_output(cfg: &Config, s: &RunSettings) -> Result<(Output, Restored)> {
    let Some(dir) = &s.out else {
        let stdout = std::io::BufWriter::new(std::io::stdout());
        let order = s.keep_order.then(reorder::Reorder::default);
        return Ok((Output::Stdout(stdout, order), Restored::default()));
    };
    let mode = match (s.resume, s.overwrite) {
        (true, _) => Mode::Resume { force: s.force },
        (false, true) => Mode::Overwrite,
        (false, false) => Mode::Fresh,
    };
    let fingerprint = journal::fingerprint(cfg, &s.input, s.simulate)?;
    let sync_every = Duration::from_millis(cfg.run.journal_sync_ms);
    let (j, r) = Journal::open(dir, &fingerprint, mode, sync_every)?;
    if r.torn_tail {
        crate::note!(
            "warning: {}: dropped a torn last line (a crash mid-write); that record runs again",
            j.path().display()
        );
    }
    if !r.carried.is_empty() {
        crate::note!(
            "resuming {} on a changed input (--force): {} finished records whose lines are unchanged keep their results; every other record runs; {} already spent",
            dir.display(),
            group_thousands(r.carried.len() as u64),
            r.spent
        );
    } else if r.records > 0 {
        crate::note!(
            "resuming {}: {} records already done, {} already spent",
            dir.display(),
            group_thousands(r.done.count()),
            r.spent
        );
    }
    Ok((Output::Journal(j), r))
}
