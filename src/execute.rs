//! `run`: the records of a job executed with bounded concurrency. One owner (the
//! dispatch loop) holds the run state — budget ledger, circuit breakers, cost tally,
//! output sink — and record tasks ask it for budget and report to it over channels.
//! Per record: walk the route's candidates; reserve the worst case before sending;
//! retry transient failures per `policy`; fall back to the next candidate; check the
//! answer and escalate a weak one; settle what was used.
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
use crate::checks::{check, CheckSet};
use crate::classify::{parse_llm_answer, wants_llm, ClassifiedBy, Decision};
use crate::config::{Config, ModelId};
use crate::input::Input;
use crate::journal::{self, Journal, Mode, Restored};
use crate::limits::Limits;
use crate::money::{group_thousands, Usd};
use crate::output::{write_jsonl, Call, ResultRow};
use crate::plan::{classifier_question, model_label, Evaluated, Outcome};
use crate::policy::Failure;
use crate::policy::{decide, Action, RetryPolicy};
use crate::progress::Progress;
use crate::provider::wire::Answer;
use crate::provider::Backend;
use crate::record::{Job, Task};
use crate::route::{price, Route};
use crate::tokens::PromptTokens;

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
    /// Records the input holds that have no result yet.
    pub remaining: u64,
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
    let (mut rows, mut not_ok, mut remaining) = (0u64, 0u64, 0u64);
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
        // Count what the input still holds, for the resume hint.
        while let Some((e, _)) = input_rx.recv().await {
            remaining += u64::from(!done.contains(e.position.number()));
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
        remaining: remaining + in_flight as u64,
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
                    execute(&cfg, &provider, &tx, on_budget, *job, decision, route, row).await
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

async fn ask(tx: &mpsc::UnboundedSender<ToOwner>, model: ModelId, worst: Usd) -> Grant {
    let (reply, answer) = oneshot::channel();
    if tx
        .send(ToOwner::Reserve {
            model,
            worst,
            reply,
        })
        .is_err()
    {
        return Grant::BreakerOpen;
    }
    answer.await.unwrap_or(Grant::BreakerOpen)
}

/// Runs one record through its candidates. Every call is charged to the model that
/// made it; the row keeps the final (or best) answer.
#[allow(clippy::too_many_arguments)]
async fn execute(
    cfg: &Config,
    provider: &Clients,
    tx: &mpsc::UnboundedSender<ToOwner>,
    on_budget: OnBudget,
    job: Job,
    decision: Decision,
    route: Route,
    mut row: ResultRow,
) -> ResultRow {
    let policy = RetryPolicy {
        max_retries: cfg.run.max_retries,
        base_delay: Duration::from_millis(cfg.run.retry_base_ms),
        ..RetryPolicy::default()
    };
    let (decision, route) = match cfg
        .llm_classifier
        .filter(|_| wants_llm(&decision, &cfg.classifier))
    {
        Some(m) => llm_reclassify(cfg, provider, tx, &job, decision, route, m, &mut row).await,
        None => (decision, route),
    };
    let checks = CheckSet::default();
    let candidates = &route.candidates;
    let mut escalations_left = cfg.run.max_escalations;
    let mut best: Option<ResultRow> = None;
    let mut last_error = String::new();
    let mut refused_by_budget = false;
    let mut idx = 0;
    'candidates: while idx < candidates.len() {
        let c = candidates[idx];
        let model = &cfg.models[c.model];
        let reservation = match ask(tx, c.model, c.worst_cost).await {
            Grant::Granted(r) => r,
            Grant::BreakerOpen => {
                last_error = format!("{}: circuit open", model.name);
                idx += 1;
                row.fallbacks += 1;
                continue;
            }
            Grant::NoBudget(short) => {
                last_error = format!(
                    "budget: {} needs up to {}, {} left",
                    model.name, short.needed, short.available
                );
                let cheaper = (idx + 1..candidates.len())
                    .filter(|&j| candidates[j].worst_cost < c.worst_cost)
                    .min_by_key(|&j| candidates[j].worst_cost);
                match (on_budget, cheaper) {
                    (OnBudget::Downgrade, Some(j)) => {
                        idx = j;
                        continue;
                    }
                    (OnBudget::Stop, _) => {
                        let _ = tx.send(ToOwner::StopOnBudget);
                    }
                    _ => {}
                }
                refused_by_budget = true;
                break 'candidates;
            }
        };
        let started = Instant::now();
        let mut attempt = 0u32;
        let mut needs_larger_context = false;
        let answer = loop {
            attempt += 1;
            row.attempts += 1;
            let cap = job
                .max_tokens
                .map_or(u64::from(model.max_output_tokens), u64::from);
            provider
                .limits
                .acquire(model, c.input_tokens + c.output_tokens)
                .await;
            match provider
                .backend
                .complete(&job, decision.task, model, &c, cap, attempt)
                .await
            {
                Ok(a) => break Some(a),
                Err((failure, msg)) => {
                    last_error = format!("{}: {msg}", model.name);
                    if let Failure::Http {
                        status: 429,
                        retry_after: Some(wait),
                        ..
                    } = &failure
                    {
                        provider.limits.pause(model, *wait);
                    }
                    let jitter = (row.attempts as f64 * 0.618_034).fract();
                    match decide(&failure, attempt, &policy, jitter) {
                        Action::Retry(delay) => tokio::time::sleep(delay).await,
                        Action::NextCandidate => break None,
                        Action::NextLargerContext => {
                            needs_larger_context = true;
                            break None;
                        }
                        Action::Fail => {
                            let _ = tx.send(ToOwner::Release {
                                reservation,
                                model: c.model,
                                failed: false,
                            });
                            break 'candidates;
                        }
                    }
                }
            }
        };
        let Some(answer) = answer else {
            // A prompt too long for this model is not the model failing.
            let _ = tx.send(ToOwner::Release {
                reservation,
                model: c.model,
                failed: !needs_larger_context,
            });
            row.fallbacks += 1;
            idx = if needs_larger_context {
                // Our count said it fits; the provider counts more. Only a larger
                // window can help.
                match (idx + 1..candidates.len()).find(|&j| {
                    cfg.models[candidates[j].model].context_window > model.context_window
                }) {
                    Some(j) => j,
                    None => break 'candidates,
                }
            } else {
                idx + 1
            };
            continue;
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let weakness = check(
            &job,
            decision.task,
            &answer.text,
            answer.finish_reason.as_deref(),
            &checks,
        );
        let escalate = weakness.is_some() && escalations_left > 0 && idx + 1 < candidates.len();
        let call = billed_call(
            cfg,
            c.model,
            model.name.clone(),
            &answer,
            escalate,
            latency_ms,
        );
        row.cost_usd += call.cost;
        let _ = tx.send(ToOwner::Settle {
            reservation,
            model: c.model,
            call,
        });
        row.input_tokens += answer.input_tokens;
        row.output_tokens += answer.output_tokens;
        row.latency_ms = Some(row.latency_ms.unwrap_or(0) + latency_ms);
        row.final_model = Some(model.name.clone());
        row.provider = Some(model.provider.clone());
        row.response = Some(answer.text);
        row.finish_reason = answer.finish_reason;
        row.status = "ok".into();
        if escalate {
            row.escalations.push(
                weakness
                    .expect("escalating on a weakness")
                    .as_str()
                    .to_string(),
            );
            escalations_left -= 1;
            best = Some(row.clone());
            idx += 1;
            continue;
        }
        return row;
    }
    match best {
        // An escalation that found nothing better keeps the answer it had, with the
        // spend of every call.
        Some(mut b) => {
            b.cost_usd = row.cost_usd;
            b.attempts = row.attempts;
            b.fallbacks = row.fallbacks;
            b.error = Some(last_error);
            b
        }
        None => {
            row.status = if refused_by_budget {
                "skipped_budget"
            } else {
                "failed"
            }
            .into();
            row.error = Some(if last_error.is_empty() {
                "no candidate answered".into()
            } else {
                last_error
            });
            row
        }
    }
}

/// Asks the `[classifier.llm]` model for the record's task: one attempt, reserved,
/// rate-limited and charged like any call, on its own report line. A usable answer
/// naming another task re-routes the record; anything else keeps the local decision.
#[allow(clippy::too_many_arguments)]
async fn llm_reclassify(
    cfg: &Config,
    provider: &Clients,
    tx: &mpsc::UnboundedSender<ToOwner>,
    job: &Job,
    decision: Decision,
    route: Route,
    m: ModelId,
    row: &mut ResultRow,
) -> (Decision, Route) {
    let question = classifier_question(job, cfg);
    let mut tokens = PromptTokens::default();
    let Ok(c) = price(cfg, &question, &decision, m, &mut tokens) else {
        return (decision, route);
    };
    let Grant::Granted(reservation) = ask(tx, m, c.worst_cost).await else {
        return (decision, route);
    };
    let model = &cfg.models[m];
    provider
        .limits
        .acquire(model, c.input_tokens + c.output_tokens)
        .await;
    let started = Instant::now();
    let answer = provider
        .backend
        .complete(
            &question,
            Task::Classification,
            model,
            &c,
            c.output_tokens,
            1,
        )
        .await;
    let Ok(answer) = answer else {
        let _ = tx.send(ToOwner::Release {
            reservation,
            model: m,
            failed: true,
        });
        return (decision, route);
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let call = billed_call(
        cfg,
        m,
        model_label(cfg, m, true),
        &answer,
        false,
        latency_ms,
    );
    row.cost_usd += call.cost;
    let _ = tx.send(ToOwner::Settle {
        reservation,
        model: m,
        call,
    });
    let Some(task) = parse_llm_answer(&answer.text) else {
        return (decision, route);
    };
    let asked = Decision {
        task,
        classified_by: ClassifiedBy::Llm,
        ..decision
    };
    match crate::route::route(cfg, job, &asked, cfg.tier, &mut tokens) {
        Ok(rerouted) => {
            row.task = Some(task.as_str().into());
            row.classified_by = Some(ClassifiedBy::Llm.as_str().into());
            row.tier = Some(rerouted.tier.as_str().into());
            row.routed_model = Some(cfg.models[rerouted.chosen().model].name.clone());
            (asked, rerouted)
        }
        // The answer's task has no eligible model for this record: keep ours.
        Err(_) => (decision, route),
    }
}

/// An answered call, charged to `model` (reported as `name`) at its prices, with what
/// the same tokens would have cost on the baseline.
fn billed_call(
    cfg: &Config,
    model: ModelId,
    name: String,
    answer: &Answer,
    escalated: bool,
    latency_ms: u64,
) -> Call {
    let (m, base) = (&cfg.models[model], &cfg.models[cfg.baseline]);
    let (input, output) = (answer.input_tokens, answer.output_tokens);
    Call {
        model: name,
        provider: m.provider.clone(),
        ok: true,
        escalated,
        input_tokens: input,
        output_tokens: output,
        cost: m.input_price.cost(input) + m.output_price.cost(output),
        baseline_cost: base.input_price.cost(input) + base.output_price.cost(output),
        latency_ms,
    }
}
