//! The dispatcher: the one owner of a run's output state — the journal (or stdout),
//! the cost tally, progress — and of when records start. It takes evaluated records
//! from the reader thread a batch at a time, starts one task per record while there
//! is room, and writes what the tasks report over a channel: billed calls and
//! finished rows. It owns the journal's flush points and the Ctrl-C drain.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use super::progress::Progress;
use super::reorder::Reorder;
use super::signals::{self, Interrupt};
use super::task::{self, Context, ToOwner};
use super::{Halted, RunSettings, RunSummary};
use crate::config::Config;
use crate::evaluate::{evaluate_batches, Evaluated, Outcome};
use crate::exit::{Aborted, OutputFailed};
use crate::input::Input;
use crate::journal::{Carried, Journal, PositionSet, Restored};
use crate::output::reasons::{shape, Reasons};
use crate::output::report::CostTally;
use crate::output::{write_jsonl, ResultRow, Status};

/// Where finished records go: stdout, or the journal in `--out`.
pub(super) enum Output {
    /// JSONL as records finish, or in input order (`--keep-order`).
    Stdout(std::io::BufWriter<std::io::Stdout>, Option<Reorder>),
    Journal(Journal),
}

impl Output {
    /// Called before the next record starts and every 100 ms: what finished so far
    /// reaches stdout or the journal file.
    fn flush(&mut self) -> Result<()> {
        match self {
            Output::Stdout(out, _) => Ok(out.flush()?),
            Output::Journal(j) => j.flush(),
        }
    }

    /// The last write: flushed and, for the journal, synced.
    fn close(self) -> Result<()> {
        match self {
            Output::Stdout(mut out, order) => {
                for row in order.map(Reorder::rest).unwrap_or_default() {
                    write_jsonl(&mut out, &row)?;
                }
                Ok(out.flush()?)
            }
            Output::Journal(mut j) => j.sync(),
        }
    }
}

type Record = (Evaluated, Option<String>);

/// How the loop ended.
#[derive(PartialEq, Eq)]
enum Ended {
    /// Every record finished.
    Finished,
    /// An interrupt drained what was in flight (or the drain time ran out).
    Drained,
    /// A second interrupt: stop without waiting.
    Aborted,
}

struct Dispatcher<'a> {
    ctx: &'a Arc<Context>,
    output: Output,
    progress: Progress,
    tally: CostTally,
    /// Positions an earlier run finished (unchanged input).
    done: &'a PositionSet,
    /// Rows an earlier run finished, by record key (a forced resume on a changed input).
    carried: Carried,
    queue: std::vec::IntoIter<Record>,
    seen: u64,
    /// Records running as calls (at most `concurrency`)…
    in_flight: usize,
    /// …and records waiting on batches (at most `[run] batch_max_pending`).
    in_batch: usize,
    /// Batch records that stopped waiting on Ctrl-C (their batches run on).
    left_in_batches: u64,
    /// Records that stopped unsent when the ledger was lost (they run on resume).
    left_unsent: u64,
    ledger_down_said: bool,
    input_ended: bool,
    stopping: bool,
    draining: bool,
    rows: u64,
    not_ok: u64,
    reasons: Reasons,
    /// `--keep-order`: records started and not yet written stay under this.
    window: usize,
    /// Records in a row that failed on every model for the same lasting reason.
    streak: Streak,
    /// Set when the streak reached `[run] stop_after_same_failures`: no record starts
    /// after it.
    halted: Option<Halted>,
}

/// The records that failed in a row for one lasting reason (by its [`shape`]).
#[derive(Default)]
struct Streak {
    shape: String,
    count: u64,
}

impl Streak {
    /// Counts a finished record: its lasting failure, or `None` for any other end.
    fn add(&mut self, lasting: Option<&str>) -> u64 {
        match lasting {
            Some(why) => {
                let s = shape(why);
                if s != self.shape {
                    self.shape = s;
                    self.count = 0;
                }
                self.count += 1;
            }
            None => self.count = 0,
        }
        self.count
    }
}

impl Dispatcher<'_> {
    /// A finished record to the output; `again` marks one a resume sends again.
    fn emit(&mut self, (pos, key): (u64, u64), row: &ResultRow, again: bool) -> Result<()> {
        match &mut self.output {
            Output::Stdout(out, None) => write_jsonl(out, row)?,
            Output::Stdout(out, Some(order)) => order.finish(pos, row, |r| write_jsonl(out, r))?,
            Output::Journal(j) => j.row(pos, key, row, again)?,
        }
        self.rows += 1;
        self.not_ok += u64::from(!row.is_ok());
        self.reasons.add(row.status, row.error.as_deref());
        self.progress.finished(row);
        Ok(())
    }

    /// Whether the next queued record may start: a batch record while fewer than
    /// `[run] batch_max_pending` wait on batches, any other while fewer than
    /// `concurrency` run.
    fn room(&self, concurrency: usize) -> bool {
        let next_is_batch = self.queue.as_slice().first().is_some_and(|(e, problem)| {
            problem.is_none()
                && matches!(&e.outcome, Outcome::Routed { route, .. } if self.ctx.batch_bound(route))
        });
        match next_is_batch {
            true => self.in_batch < self.ctx.cfg.run.batch_max_pending.max(1),
            false => self.in_flight < concurrency,
        }
    }

    /// Starts records while there is room: the queued ones first.
    fn start_ready(&mut self, concurrency: usize) -> Result<()> {
        while !self.draining && self.halted.is_none() && self.room(concurrency) {
            if let Output::Stdout(_, Some(order)) = &self.output {
                if order.len() >= self.window {
                    return Ok(());
                }
            }
            let Some((e, problem)) = self.queue.next() else {
                return Ok(());
            };
            self.seen += 1;
            // Results finished so far are written before another record starts: a
            // crash can lose at most `concurrency` of them.
            self.output.flush()?;
            let at = (e.position.number(), e.key);
            if self.done.contains(at.0) {
                continue;
            }
            // `--shard K/N`: another shard's record (no row here).
            if let Some(shard) = self.ctx.settings.shard {
                if !shard.holds(&e.id) {
                    continue;
                }
            }
            // A forced resume on a changed input: the same record (its bytes) finished
            // in an earlier run keeps that result at its new position.
            if let (Some((offset, len)), Output::Journal(j)) =
                (self.carried.take(e.key), &self.output)
            {
                let mut row = j.stored_row(offset, len)?;
                row.id = e.id;
                self.emit(at, &row, false)?;
                continue;
            }
            if let Output::Stdout(_, Some(order)) = &mut self.output {
                order.start(at.0);
            }
            let batch =
                matches!(&e.outcome, Outcome::Routed { route, .. } if self.ctx.batch_bound(route));
            match start(self.ctx, e, problem, self.stopping) {
                Some(row) => self.emit(at, &row, false)?,
                None if batch => self.in_batch += 1,
                None => self.in_flight += 1,
            }
        }
        Ok(())
    }

    fn take(&mut self, msg: ToOwner) -> Result<()> {
        match msg {
            ToOwner::Call(call, spent) => {
                if let Output::Journal(j) = &mut self.output {
                    j.call(&call)?;
                }
                self.tally.add(&call);
                self.progress.spent(spent);
            }
            ToOwner::StopOnBudget => {
                if !self.stopping {
                    tracing::info!(
                        "budget: stopping (--on-budget stop); records not sent are skipped"
                    );
                }
                self.stopping = true;
            }
            ToOwner::Done {
                pos,
                key,
                row,
                lasting,
                batch,
            } => {
                match batch {
                    true => self.in_batch -= 1,
                    false => self.in_flight -= 1,
                }
                self.emit((pos, key), &row, lasting.is_some())?;
                self.count_failure(&row, lasting);
            }
            ToOwner::Left { batch: true } => {
                self.in_batch -= 1;
                self.left_in_batches += 1;
            }
            ToOwner::Left { batch: false } => {
                self.in_flight -= 1;
                self.left_unsent += 1;
            }
            ToOwner::LedgerDown(why) => {
                if !self.ledger_down_said {
                    self.ledger_down_said = true;
                    tracing::warn!(error = %why, "ledger unreachable");
                    self.progress.println(&format!(
                        "warning: {why}; no request starts until it answers again (at most {}s, `[ledger] reconnect_s`)",
                        self.ctx.cfg.ledger.reconnect_s
                    ));
                }
            }
            ToOwner::LedgerLost(why) => {
                if self.halted.is_none() {
                    self.progress.println(&format!(
                        "stopping: the ledger did not answer for {}s; finishing {} in flight",
                        self.ctx.cfg.ledger.reconnect_s, self.in_flight
                    ));
                    self.halted = Some(Halted {
                        records: 0,
                        why,
                        ledger_lost: true,
                    });
                }
            }
            ToOwner::Batch(line, done) => {
                let written = match &mut self.output {
                    Output::Journal(j) => j.batch(&line).map(|_| true)?,
                    Output::Stdout(..) => false,
                };
                let _ = done.send(written);
            }
            ToOwner::Note(text) => {
                tracing::info!("{text}");
                self.progress.println(&text);
            }
        }
        Ok(())
    }

    /// Stops starting records once `[run] stop_after_same_failures` records in a row
    /// failed the same lasting way. A record skipped on the budget neither adds to
    /// the streak nor breaks it.
    fn count_failure(&mut self, row: &ResultRow, lasting: Option<Arc<str>>) {
        let limit = u64::from(self.ctx.cfg.run.stop_after_same_failures);
        if row.status == Status::SkippedBudget || limit == 0 {
            return;
        }
        let n = self.streak.add(lasting.as_deref());
        if let (Some(why), None) = (lasting, &self.halted) {
            if n >= limit {
                tracing::warn!(records = n, reason = %why, "stopping: the same lasting failure in a row");
                self.progress.println(&format!(
                    "stopping: {n} records in a row failed on every model: {why}; finishing {} in flight",
                    self.in_flight
                ));
                self.halted = Some(Halted {
                    records: n,
                    why,
                    ledger_lost: false,
                });
            }
        }
    }

    /// Runs until every record finished, or an interrupt drained or aborted the run.
    async fn drive(
        &mut self,
        input: &mut mpsc::Receiver<Vec<Record>>,
        from_tasks: &mut mpsc::UnboundedReceiver<ToOwner>,
        interrupts: &mut mpsc::UnboundedReceiver<Interrupt>,
    ) -> Result<Ended> {
        let cfg = &self.ctx.cfg;
        let concurrency = self.ctx.concurrency;
        let mut flush_tick = tokio::time::interval(Duration::from_millis(100));
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            self.start_ready(concurrency)?;
            let stopped = self.draining || self.halted.is_some();
            let starting_done = stopped || (self.input_ended && self.queue.len() == 0);
            if starting_done && self.in_flight == 0 && self.in_batch == 0 {
                return Ok(if stopped {
                    Ended::Drained
                } else {
                    Ended::Finished
                });
            }
            let wants_input = !starting_done
                && self.queue.len() == 0
                && (self.in_flight < concurrency
                    || self.in_batch < self.ctx.cfg.run.batch_max_pending.max(1));
            tokio::select! {
                // Interrupts first: a stream of task reports never holds up an abort.
                biased;
                Some(what) = interrupts.recv() => match what {
                    Interrupt::Abort => return Ok(Ended::Aborted),
                    Interrupt::Drain if !self.draining => {
                        let drain = Duration::from_secs(cfg.run.drain_timeout_s);
                        self.progress.println(&format!(
                            "interrupted: finishing {} records in flight (at most {}s); Ctrl-C again to abort",
                            self.in_flight,
                            drain.as_secs()
                        ));
                        self.draining = true;
                        drain_until = Some(tokio::time::Instant::now() + drain);
                        if let Some(b) = self.ctx.batcher.get() {
                            // Batch records stop waiting; their batches run on.
                            b.leave();
                        }
                    }
                    Interrupt::Drain => {}
                },
                Some(first) = from_tasks.recv() => {
                    // Everything already queued, then start what the freed room allows.
                    let mut next = Some(first);
                    while let Some(msg) = next {
                        self.take(msg)?;
                        next = from_tasks.try_recv().ok();
                    }
                },
                _ = sleep_until_some(drain_until) => return Ok(Ended::Drained),
                _ = flush_tick.tick() => self.output.flush()?,
                batch = input.recv(), if wants_input => match batch {
                    None => {
                        self.input_ended = true;
                        self.progress.input_done(self.seen);
                    }
                    Some(batch) => self.queue = batch.into_iter(),
                },
            }
        }
    }
}

/// Runs the job: a reader thread evaluates the input, this task starts and collects
/// the records. Whatever ends the run, the journal is synced before the error (or the
/// summary) is returned, so no paid result is lost.
pub(super) async fn dispatch(
    ctx: Arc<Context>,
    output: Output,
    restored: Restored,
    from_tasks: mpsc::UnboundedReceiver<ToOwner>,
) -> Result<RunSummary> {
    let Restored {
        done,
        tally,
        records: already_done,
        carried,
        ..
    } = restored;
    let done = Arc::new(done);
    // Evaluated records arrive a batch (about 1,000) at a time: one wake-up of the
    // reader thread per batch, not per record.
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<Record>>(1);
    let reader = {
        let (cfg, s, done) = (ctx.cfg.clone(), ctx.settings.clone(), done.clone());
        std::thread::spawn(move || read(&cfg, &s, &done, input_tx))
    };
    let s = &ctx.settings;
    let mut d = Dispatcher {
        ctx: &ctx,
        output,
        progress: Progress::new(&s.input, already_done, s.budget),
        tally,
        done: &done,
        carried,
        queue: Vec::new().into_iter(),
        seen: 0,
        in_flight: 0,
        in_batch: 0,
        left_in_batches: 0,
        left_unsent: 0,
        ledger_down_said: false,
        input_ended: false,
        stopping: false,
        draining: false,
        rows: 0,
        not_ok: 0,
        reasons: Reasons::default(),
        window: ctx.concurrency.saturating_mul(4).max(1),
        streak: Streak::default(),
        halted: None,
    };
    let mut from_tasks = from_tasks;
    let mut interrupts = signals::watch();
    let mut ended = d
        .drive(&mut input_rx, &mut from_tasks, &mut interrupts)
        .await;
    d.progress.clear();
    let mut remaining = None;
    if let (Ok(Ended::Drained), Input::File(_)) = (&ended, &s.input) {
        // Count what the input file still holds, for the resume hint (not stdin: a
        // live pipe may never end). A second interrupt cuts the count short.
        let not_done = |(e, _): &Record| !done.contains(e.position.number());
        let mut left = (d.in_flight + d.in_batch) as u64
            + d.left_in_batches
            + d.left_unsent
            + d.queue.by_ref().filter(not_done).count() as u64;
        loop {
            tokio::select! {
                biased;
                Some(Interrupt::Abort) = interrupts.recv() => {
                    ended = Ok(Ended::Aborted);
                    break;
                }
                batch = input_rx.recv() => match batch {
                    Some(batch) => left += batch.iter().filter(|r| not_done(r)).count() as u64,
                    None => {
                        remaining = Some(left);
                        break;
                    }
                },
            }
        }
    }
    if let Ok(Ended::Aborted) = ended {
        // Stop at once: sync what is journaled, leave the rest (in flight, unread).
        d.output.close().context(OutputFailed)?;
        return Err(Aborted.into());
    }
    let stopped = matches!(ended, Ok(Ended::Drained));
    let halted = d.halted.take().filter(|_| stopped);
    let interrupted = stopped && halted.is_none();
    drop(input_rx);
    let read = reader.join().expect("reader thread panicked");
    let closed = d.output.close();
    ended.context(OutputFailed)?;
    if !stopped {
        read?;
    }
    closed.context(OutputFailed)?;
    let spent = ctx.shared.gate().committed();
    Ok(RunSummary {
        rows: d.rows,
        not_ok: d.not_ok,
        stopped_on_budget: d.stopping,
        interrupted,
        abandoned: d.in_flight + d.in_batch,
        in_batches: d.left_in_batches,
        remaining,
        spent,
        report: d.tally.rows(),
        reasons: d.reasons,
        halted,
    })
}

/// The reader thread: evaluates the input and hands it over a batch at a time. One
/// evaluating thread outpaces the providers many times over; the cores are for the
/// requests. Records an earlier run finished are not evaluated again.
fn read(
    cfg: &Config,
    s: &RunSettings,
    done: &PositionSet,
    to_dispatcher: mpsc::Sender<Vec<Record>>,
) -> Result<()> {
    let done = |pos: u64| done.contains(pos);
    evaluate_batches(cfg, &s.input, s.strict, 1, &done, |batch| {
        to_dispatcher
            .blocking_send(batch)
            .map_err(|_| anyhow::anyhow!("run stopped"))
    })
    .map(drop)
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
    ctx: &Arc<Context>,
    e: Evaluated,
    problem: Option<String>,
    stopping: bool,
) -> Option<ResultRow> {
    let (pos, key) = (e.position.number(), e.key);
    if let Some(p) = problem {
        return Some(ResultRow::ended(e.id, Status::InvalidInput, p));
    }
    match e.outcome {
        Outcome::Done => unreachable!("finished records are skipped before they start"),
        Outcome::Invalid(reason) => Some(ResultRow::ended(e.id, Status::InvalidInput, reason)),
        Outcome::Unroutable {
            mut job,
            decision,
            tier,
            reason,
            ..
        } => {
            let mut row = task::row_for(e.id, &decision, &mut job);
            row.tier = Some(tier);
            row.error = Some(reason);
            Some(row)
        }
        Outcome::Routed {
            mut job,
            decision,
            route,
            ..
        } => {
            let mut row = task::row_for(e.id, &decision, &mut job);
            row.tier = Some(route.tier);
            row.routed_model = Some(ctx.cfg.models[route.chosen().model].name.clone());
            if stopping {
                row.status = Status::SkippedBudget;
                row.error = Some("the run stopped on --budget".into());
                return Some(row);
            }
            task::spawn(ctx.clone(), pos, key, *job, decision, route, row);
            None
        }
    }
}
