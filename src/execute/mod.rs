//! `run`: the records of a job executed with bounded concurrency. One owner (the
//! dispatch loop here) holds the run's output state — cost tally, journal or stdout,
//! progress — and record tasks (`record`, one task each) report calls and results to
//! it over a channel. Budget and circuit breakers are the [`Gate`], which record tasks
//! consult directly under one short lock, so a reservation costs no round trip. The
//! dispatcher also owns the journal's flush points, resume and the Ctrl-C drain.
//!
//! Providers are the configured HTTP APIs, or with `--simulate` the in-process
//! simulator; a run never mixes them.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;

use crate::app::{evaluate_batches, EXIT_BUDGET, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED};
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

enum Grant<'a> {
    Granted(Held<'a>),
    BreakerOpen,
    NoBudget(Shortfall),
}

/// What a request that was not billed says about its model, for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// It failed in a way that counts against the model (5xx, timeout, 401…).
    Failed,
    /// It asked for a longer wait than we accept: open the breaker at once.
    Unavailable,
    /// The model answered, with a 400/422 or a context-length error: it is up.
    Answered,
    /// Nothing was learned: it was never sent, or its task was abandoned.
    Unknown,
}

/// The budget ledger and the per-model circuit breakers, shared by record tasks under
/// one lock. Every grant, settlement and release is one short critical section, so
/// committed + reserved never exceeds the ceiling however many tasks ask at once.
struct Gate {
    ledger: Ledger,
    /// By model id.
    breakers: Vec<Breaker>,
    /// By model id: the largest (billed, estimated worst case) a call of that model
    /// was ever charged beyond its reservation. Later reservations for the model are
    /// scaled by it, so a provider that counts more tokens than we do surprises the
    /// budget once per model (and per call in flight), not on every call.
    overrun_ratio: Vec<Option<(u128, u128)>>,
}

impl Gate {
    fn new(cfg: &Config, ledger: Ledger) -> Gate {
        let cooldown = Duration::from_secs(cfg.run.breaker_cooldown_s);
        Gate {
            ledger,
            breakers: (0..cfg.models.len())
                .map(|_| Breaker::new(cfg.run.breaker_failures, cooldown))
                .collect(),
            overrun_ratio: vec![None; cfg.models.len()],
        }
    }

    /// Reserves `worst` (scaled by the model's overrun ratio) for a request to
    /// `model`, if the budget and its breaker allow.
    fn reserve(&mut self, model: ModelId, worst: Usd) -> Result<Reservation, Refused> {
        let worst = match self.overrun_ratio[model] {
            Some((billed, estimated)) => {
                Usd::from_pico((worst.pico() * billed).div_ceil(estimated.max(1)))
            }
            None => worst,
        };
        // Budget first: a refused reservation must not use up a half-open breaker's
        // single probe.
        match self.ledger.available() {
            Some(available) if worst > available => Err(Refused::NoBudget(Shortfall {
                needed: worst,
                available,
            })),
            _ if !self.breakers[model].allow(Instant::now()) => Err(Refused::BreakerOpen),
            _ => self.ledger.reserve(worst).map_err(Refused::NoBudget),
        }
    }

    /// An answered call: its cost replaces the reservation; the model is healthy. A
    /// cost beyond the reservation raises the model's overrun ratio (`estimated` is the
    /// call's unscaled worst case).
    fn settle(
        &mut self,
        reservation: Reservation,
        model: ModelId,
        cost: Usd,
        estimated: Usd,
    ) -> Usd {
        if cost > reservation.amount() && !estimated.is_zero() {
            let ratio = &mut self.overrun_ratio[model];
            let higher = ratio.is_none_or(|(b, e)| cost.pico() * e > b * estimated.pico());
            if higher {
                *ratio = Some((cost.pico(), estimated.pico()));
            }
        }
        self.ledger.settle(reservation, cost);
        self.breakers[model].record_success();
        self.ledger.committed()
    }

    /// A request that was not billed: the reservation is freed, and the breaker learns
    /// what `health` says.
    fn release(&mut self, reservation: Reservation, model: ModelId, health: Health) {
        self.ledger.release(reservation);
        let now = Instant::now();
        let breaker = &mut self.breakers[model];
        match health {
            Health::Failed => breaker.record_failure(now),
            Health::Unavailable => breaker.trip(now),
            Health::Answered => breaker.record_success(),
            Health::Unknown => breaker.record_nothing(now),
        }
    }
}

enum Refused {
    BreakerOpen,
    NoBudget(Shortfall),
}

/// A granted reservation, tied to the gate until it is settled or released. Dropped
/// any other way — the record task panicked or was abandoned — it releases itself,
/// so money is never left reserved and a half-open breaker's probe is given back.
struct Held<'a> {
    shared: &'a Shared,
    model: ModelId,
    /// The call's worst case as estimated (before any overrun scaling).
    estimated: Usd,
    reservation: Option<Reservation>,
}

impl Held<'_> {
    /// Charges an answered call; returns the run's spend after it, and what the call
    /// cost beyond its reservation.
    fn settle(mut self, cost: Usd) -> (Usd, Usd) {
        let r = self.reservation.take().expect("held until consumed");
        let overrun = cost.saturating_sub(r.amount());
        let spent = self
            .shared
            .gate()
            .settle(r, self.model, cost, self.estimated);
        (spent, overrun)
    }

    fn release(mut self, health: Health) {
        let r = self.reservation.take().expect("held until consumed");
        self.shared.gate().release(r, self.model, health);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.shared.gate().release(r, self.model, Health::Unknown);
        }
    }
}

impl Shared {
    /// Asks the gate for `worst` on `model`.
    fn ask(&self, model: ModelId, worst: Usd) -> Grant<'_> {
        match self.gate().reserve(model, worst) {
            Ok(r) => Grant::Granted(Held {
                shared: self,
                model,
                estimated: worst,
                reservation: Some(r),
            }),
            Err(Refused::BreakerOpen) => Grant::BreakerOpen,
            Err(Refused::NoBudget(short)) => Grant::NoBudget(short),
        }
    }
}

/// What record tasks share: the providers, the rate limits, and the gate.
struct Shared {
    backend: Backend,
    limits: Limits,
    gate: Mutex<Gate>,
}

impl Shared {
    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        // A panic never happens while the gate is held (its methods are plain
        // arithmetic), but a poisoned lock still holds consistent numbers.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum ToOwner {
    /// An answered call (already settled in the gate), with the spend after it.
    Call(Call, Usd),
    StopOnBudget,
    /// A finished record: its position, its key, its row.
    Done(u64, u64, Box<ResultRow>),
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
            if !r.carried.is_empty() {
                eprintln!(
                    "resuming {} on a changed input (--force): {} finished records whose lines are unchanged keep their results; every other record runs; {} already spent",
                    dir.display(),
                    group_thousands(r.carried.len() as u64),
                    r.spent
                );
            } else if r.records > 0 {
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
    // Evaluated records arrive a batch (about 1,000) at a time: one wake-up of the
    // reader thread per batch, not per record.
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<(Evaluated, Option<String>)>>(1);
    let Restored {
        done,
        spent,
        mut tally,
        records: already_done,
        mut carried,
        ..
    } = restored;
    let done = Arc::new(done);
    let reader = {
        let cfg = cfg.clone();
        let input = s.input.clone();
        let strict = s.strict;
        let done = done.clone();
        std::thread::spawn(move || {
            // One evaluating thread outpaces the providers many times over; the cores
            // are for the requests. Records an earlier run finished are not evaluated
            // again.
            let done = |pos: u64| done.contains(pos);
            evaluate_batches(&cfg, &input, strict, 1, &done, |batch| {
                input_tx
                    .blocking_send(batch)
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
    let shared = Arc::new(Shared {
        backend,
        limits: Limits::new(&cfg),
        gate: Mutex::new(Gate::new(&cfg, Ledger::new(s.budget, spent))),
    });
    let mut signals = watch_signals();
    let mut progress = Progress::new(&s.input, already_done, s.budget);
    let mut seen = 0u64;
    let (mut in_flight, mut input_ended, mut stopping) = (0usize, false, false);
    let mut queue: std::vec::IntoIter<(Evaluated, Option<String>)> = Vec::new().into_iter();
    let mut drain_until: Option<tokio::time::Instant> = None;
    let (mut rows, mut not_ok, mut remaining) = (0u64, 0u64, None);
    let concurrency = s.concurrency.max(1);
    let mut flush_tick = tokio::time::interval(Duration::from_millis(100));

    let mut emit = |(pos, key): (u64, u64),
                    row: &ResultRow,
                    output: &mut Output,
                    progress: &mut Progress|
     -> Result<()> {
        match output {
            Output::Stdout(out) => write_jsonl(out, row)?,
            Output::Journal(j) => j.row(pos, key, row)?,
        }
        rows += 1;
        not_ok += u64::from(!row.is_ok());
        progress.finished(row);
        Ok(())
    };

    // The loop's errors (an output write, say) are held until the journal is synced
    // below: whatever ends the run, paid results reach the disk first.
    let driven: Result<()> = async {
        loop {
            // Start records while there is room (none after an interrupt).
            while drain_until.is_none() && in_flight < concurrency {
                let Some((e, problem)) = queue.next() else {
                    break;
                };
                seen += 1;
                // Results finished so far are written before another record starts: a
                // crash can lose at most `concurrency` of them.
                output.flush()?;
                let at = (e.position.number(), e.key);
                if done.contains(at.0) {
                    continue;
                }
                // A forced resume on a changed input: the same record (its bytes)
                // finished in an earlier run keeps that result at its new position.
                if let (Some((offset, len)), Output::Journal(j)) = (carried.take(e.key), &output) {
                    let mut row = j.stored_row(offset, len)?;
                    row.id = e.id;
                    emit(at, &row, &mut output, &mut progress)?;
                    continue;
                }
                if let Some(row) = start(&cfg, &s, e, problem, stopping, &shared, &to_owner) {
                    emit(at, &row, &mut output, &mut progress)?;
                } else {
                    in_flight += 1;
                }
            }
            let starting_done = drain_until.is_some() || (input_ended && queue.len() == 0);
            if starting_done && in_flight == 0 {
                break;
            }
            tokio::select! {
                biased;
                Some(first) = from_tasks.recv() => {
                    // Everything already queued, then start what the freed room allows.
                    let mut next = Some(first);
                    while let Some(msg) = next {
                        match msg {
                            ToOwner::Call(call, spent) => {
                                if let Output::Journal(j) = &mut output {
                                    j.call(&call)?;
                                }
                                tally.add(&call);
                                progress.spent(spent);
                            }
                            ToOwner::StopOnBudget => stopping = true,
                            ToOwner::Done(pos, key, row) => {
                                in_flight -= 1;
                                emit((pos, key), &row, &mut output, &mut progress)?;
                            }
                        }
                        next = from_tasks.try_recv().ok();
                    }
                },
                Some(()) = signals.recv(), if drain_until.is_none() => {
                    let drain = Duration::from_secs(cfg.run.drain_timeout_s);
                    progress.println(&format!(
                        "interrupted: finishing {in_flight} records in flight (at most {}s); Ctrl-C again to abort",
                        drain.as_secs()
                    ));
                    drain_until = Some(tokio::time::Instant::now() + drain);
                }
                _ = sleep_until_some(drain_until) => break,
                _ = flush_tick.tick() => output.flush()?,
                batch = input_rx.recv(), if !starting_done && queue.len() == 0 && in_flight < concurrency => match batch {
                    None => {
                        input_ended = true;
                        progress.input_done(seen);
                    }
                    Some(batch) => queue = batch.into_iter(),
                },
            }
        }
        Ok(())
    }
    .await;
    progress.clear();
    let interrupted = drain_until.is_some();
    if interrupted && driven.is_ok() {
        // Count what the input file still holds, for the resume hint (not stdin: a
        // live pipe may never end).
        if matches!(s.input, Input::File(_)) {
            let not_done =
                |(e, _): &(Evaluated, Option<String>)| !done.contains(e.position.number());
            let mut left = in_flight as u64 + queue.filter(not_done).count() as u64;
            while let Some(batch) = input_rx.recv().await {
                left += batch.iter().filter(|r| not_done(r)).count() as u64;
            }
            remaining = Some(left);
        }
    }
    drop(input_rx);
    let read = reader.join().expect("reader thread panicked");
    let closed = match output {
        Output::Stdout(mut out) => out.flush().map_err(anyhow::Error::from),
        Output::Journal(mut j) => j.sync(),
    };
    driven?;
    if !interrupted {
        read?;
    }
    closed?;
    let spent = shared.gate().ledger.committed();
    Ok(RunSummary {
        rows,
        not_ok,
        stopped_on_budget: stopping,
        interrupted,
        abandoned: in_flight,
        remaining,
        spent,
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
    shared: &Arc<Shared>,
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
        Outcome::Done => unreachable!("finished records are skipped before they start"),
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
            let (cfg, shared, on_budget) = (cfg.clone(), shared.clone(), s.on_budget);
            let mut done = Finish {
                pos,
                key: e.key,
                row: Some(row),
                tx: to_owner.clone(),
            };
            tokio::spawn(async move {
                let row = done.row.as_mut().expect("taken only when finishing");
                record::execute(
                    &cfg, &shared, &done.tx, on_budget, *job, decision, route, row,
                )
                .await;
                done.send();
            });
            None
        }
    }
}

/// A record task's row, sent to the dispatcher when the task ends. Should the task
/// panic, dropping this during the unwind still sends the row (as failed), so every
/// record ends with a row and the run always finishes.
struct Finish {
    pos: u64,
    key: u64,
    row: Option<ResultRow>,
    tx: mpsc::UnboundedSender<ToOwner>,
}

impl Finish {
    fn send(&mut self) {
        if let Some(row) = self.row.take() {
            let _ = self
                .tx
                .send(ToOwner::Done(self.pos, self.key, Box::new(row)));
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(row) = &mut self.row {
            row.status = "failed".into();
            row.error = Some("internal error while executing this record".into());
            self.send();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::State;

    #[test]
    fn a_reservation_held_by_a_panicking_task_is_released_and_its_probe_given_back() {
        let cfg = Config::embedded();
        let budget = Usd::parse("1").unwrap();
        let mut gate = Gate::new(&cfg, Ledger::new(Some(budget), Usd::ZERO));
        // Model 0's breaker is open with its cooldown over: the next request probes.
        gate.breakers[0] = Breaker::new(1, Duration::ZERO);
        gate.breakers[0].record_failure(Instant::now());
        let shared = Shared {
            backend: Backend::simulated(&cfg),
            limits: Limits::new(&cfg),
            gate: Mutex::new(gate),
        };
        let half = Usd::parse("0.5").unwrap();
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Grant::Granted(_held) = shared.ask(0, half) else {
                unreachable!("the budget and the breaker allow it")
            };
            assert_eq!(shared.gate().breakers[0].state(), State::HalfOpen);
            panic!("the record task fails while its request is out");
        }));
        assert!(died.is_err());
        let mut gate = shared.gate();
        assert_eq!(gate.ledger.reserved(), Usd::ZERO, "no money stays reserved");
        assert_eq!(gate.ledger.available(), Some(budget));
        assert!(
            gate.breakers[0].allow(Instant::now()),
            "the probe was given back"
        );
    }
}
