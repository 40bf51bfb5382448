//! One record's task: ask the LLM classifier first when configured, then walk the
//! route's candidates ([`Walk`] decides the order) — reserve the worst case at the
//! gate, wait for the rate limits, send, retry transient failures per `policy`, check
//! the answer — and report each billed call and the finished row to the dispatcher.

use std::sync::Arc;
use std::time::Instant;

use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use super::batcher::Batcher;
use super::checks::check;
use super::gate::{Cause, Grant, Health, Held, Shared};
use super::limits::{shared_pauses, shared_scopes, too_large, TooLarge};
use super::policy::{decide, is_lasting, Action, RetryPolicy};
use super::walk::{Event, Next, Step, Walk};
use super::RunSettings;
use crate::classify::{llm, ClassifiedBy, Decision};
use crate::config::{BatchRetry, Config, Model, ModelId, Via};
use crate::journal::BatchLine;
use crate::money::Usd;
use crate::output::report::Call;
use crate::output::{ResultRow, Status};
use crate::provider::batch::LineResult;
use crate::provider::wire::Answer;
use crate::provider::Failure;
use crate::record::{Job, Task};
use crate::route::{classifier_question, Candidate, Route};
use crate::tokens::PromptTokens;

/// What record tasks (and the batcher) tell the dispatcher.
pub(super) enum ToOwner {
    /// An answered call (already settled in the gate), with the spend after it.
    Call(Call, Usd),
    StopOnBudget,
    /// A finished record: its position, its key, its row, and — when it failed on
    /// every model for a lasting reason — that reason; `batch` when it was started
    /// as a batch record.
    Done {
        pos: u64,
        key: u64,
        row: Box<ResultRow>,
        lasting: Option<Arc<str>>,
        batch: bool,
    },
    /// A record stopped without a row: a batch record on Ctrl-C (its batch keeps
    /// running), or any record when the shared ledger stayed unreachable;
    /// `--resume` picks it up.
    Left {
        batch: bool,
    },
    /// The shared ledger stopped answering (said once; requests wait for it).
    LedgerDown(String),
    /// …and did not come back within `[ledger] reconnect_s`: start no more records.
    LedgerLost(Arc<str>),
    /// A batch submission step to journal (synced) before it goes further; the
    /// answer says whether it is on disk.
    Batch(BatchLine, oneshot::Sender<bool>),
    /// A line for the operator (batch progress).
    Note(String),
}

/// A batch record that stopped waiting for its batch (see [`ToOwner::Left`]).
pub(super) struct Left;

/// What the dispatcher and every record task share for the run.
pub(super) struct Context {
    pub cfg: Arc<Config>,
    pub settings: Arc<RunSettings>,
    pub shared: Shared,
    pub policy: RetryPolicy,
    pub concurrency: usize,
    pub tx: mpsc::UnboundedSender<ToOwner>,
    /// `--via batch|auto`: where batch records wait for their batches (set once the
    /// context exists, since the batcher's tasks hold it).
    pub batcher: OnceLock<Batcher>,
}

impl Context {
    /// Whether a record routed this way waits on a batch (its first model goes
    /// through its provider's batch API).
    pub fn batch_bound(&self, route: &Route) -> bool {
        let c = route.chosen();
        c.batch
            && self.batcher.get().is_some()
            && self
                .shared
                .backend
                .batch_provider(&self.cfg, c.model)
                .is_some()
    }
}

/// A row for a record about to run (or that cannot): its id, decision and metadata.
pub(super) fn row_for(id: String, decision: &Decision, job: &mut Job) -> ResultRow {
    ResultRow {
        task: Some(decision.task),
        complexity: Some(decision.complexity),
        classified_by: Some(decision.classified_by),
        metadata: job.metadata.take(),
        ..ResultRow::new(id)
    }
}

/// Starts the record's task. Its row reaches the dispatcher when it ends, however it
/// ends (see [`Finish`]).
pub(super) fn spawn(
    ctx: Arc<Context>,
    pos: u64,
    key: u64,
    job: Job,
    decision: Decision,
    route: Route,
    row: ResultRow,
) {
    let mut finish = Finish {
        pos,
        key,
        row: Some(row),
        lasting: None,
        batch: ctx.batch_bound(&route),
        tx: ctx.tx.clone(),
    };
    tokio::spawn(async move {
        let row = finish.row.as_mut().expect("taken only when finishing");
        match execute(&ctx, pos, job, decision, route, row).await {
            Ok(lasting) => {
                finish.lasting = lasting;
                finish.send();
            }
            Err(Left) => {
                finish.row.take();
                let _ = ctx.tx.send(ToOwner::Left {
                    batch: finish.batch,
                });
            }
        }
    });
}

/// A record task's row, sent to the dispatcher when the task ends. Should the task
/// panic, dropping this during the unwind still sends the row (as failed), so every
/// record ends with a row and the run always finishes.
struct Finish {
    pos: u64,
    key: u64,
    row: Option<ResultRow>,
    lasting: Option<Arc<str>>,
    batch: bool,
    tx: mpsc::UnboundedSender<ToOwner>,
}

impl Finish {
    fn send(&mut self) {
        if let Some(row) = self.row.take() {
            let _ = self.tx.send(ToOwner::Done {
                pos: self.pos,
                key: self.key,
                row: Box::new(row),
                lasting: self.lasting.take(),
                batch: self.batch,
            });
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(row) = &mut self.row {
            row.status = Status::Failed;
            row.error = Some("internal error while executing this record".into());
            self.send();
        }
    }
}

/// A request that failed: nothing billed, but the cost report counts it against its
/// model (`requests`, `failed`), journaled like an answered one.
fn failed_call(ctx: &Context, model: ModelId, name: String, latency_ms: u64) {
    let m = &ctx.cfg.models[model];
    let call = Call {
        model: name,
        provider: m.provider.clone(),
        ok: false,
        escalated: false,
        input_tokens: 0,
        output_tokens: 0,
        cost: Usd::ZERO,
        baseline_cost: Usd::ZERO,
        latency_ms,
        overrun: Usd::ZERO,
        batch: None,
    };
    let spent = ctx.shared.gate().committed();
    let _ = ctx.tx.send(ToOwner::Call(call, spent));
}

/// What a request reserves: its worst case, plus — when it may write the provider's
/// prompt cache (a system prompt to a model whose cache writes cost more than input)
/// — the write premium on the whole prompt, so the billed write never passes it.
fn reservation(model: &Model, job: &Job, c: &Candidate) -> Usd {
    match model.cache_write_price {
        Some(write) if write > model.input_price && job.system_text().next().is_some() => {
            c.worst_cost + write.cost(c.input_tokens) - model.input_price.cost(c.input_tokens)
        }
        _ => c.worst_cost,
    }
}

/// Charges an answered call: settled in the gate (and on the shared ledger), then
/// journaled by the dispatcher.
async fn settle(ctx: &Context, held: Held<'_>, mut call: Call) {
    let spent;
    let cost = call.cost;
    (spent, call.overrun) = held.settle(cost);
    let _ = ctx.tx.send(ToOwner::Call(call, spent));
    if let Some(l) = &ctx.shared.ledger {
        // Sent once: the ledger's reporter resends it until the server takes it.
        if let Err(e) = l.settle(cost).await {
            tracing::debug!(cost = %cost, error = %e, "a settled cost waits for the ledger");
        }
        // Claimed money this process does not use goes back (it keeps one block).
        let spare = block(ctx).and_then(|b| ctx.shared.gate().spare(b));
        if let Some(give) = spare {
            let _ = l.give_back(give, false).await;
        }
    }
}

/// What a process claims from the shared ledger at a time: `[ledger] block_share`
/// of `--budget`.
fn block(ctx: &Context) -> Option<Usd> {
    let budget = ctx.settings.budget?;
    let share = ctx.cfg.ledger.block_share.clamp(0.0, 1.0);
    Some(Usd::from_pico((budget.pico() as f64 * share) as u128))
}

/// A ledger operation, retried while the ledger is unreachable: no request starts
/// meanwhile. After `[ledger] reconnect_s` without it the record stops (no row,
/// `--resume` runs it) and the run starts no more records.
async fn with_ledger<T, F, Fut>(ctx: &Context, mut op: F) -> Result<T, Left>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::ledger::Lost>>,
{
    let deadline = Instant::now() + std::time::Duration::from_secs(ctx.cfg.ledger.reconnect_s);
    let mut delay = std::time::Duration::from_millis(50);
    let mut said = false;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(lost) => {
                if !said {
                    said = true;
                    let _ = ctx.tx.send(ToOwner::LedgerDown(lost.0.clone()));
                }
                if Instant::now() >= deadline {
                    let _ = ctx.tx.send(ToOwner::LedgerLost(lost.0.into()));
                    return Err(Left);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Reserves `worst` for a request to `model`; with a shared ledger, a reservation
/// the claimed money does not cover first claims a block (or at least what it
/// needs) from the ledger.
async fn ask<'a>(ctx: &'a Context, model: ModelId, worst: Usd) -> Result<Grant<'a>, Left> {
    if let (Some(l), Some(_)) = (&ctx.shared.ledger, ctx.settings.budget) {
        if l.lease_lost() {
            let _one = ctx.shared.claiming.lock().await;
            if l.lease_lost() {
                // The server gave this process's claim back (it could not renew it in
                // time): claim again what its reservations and headroom need.
                let (reserved, headroom) = ctx.shared.gate().claimed_unspent();
                let got = with_ledger(ctx, || l.reclaim(reserved, reserved + headroom)).await?;
                let _ = ctx.tx.send(ToOwner::Note(match got < reserved {
                    true => format!("warning: the ledger took back this process's claim (its lease was not renewed in time); claimed {got} again, less than the {reserved} its requests in flight reserve"),
                    false => format!("warning: the ledger took back this process's claim (its lease was not renewed in time); claimed {got} again"),
                }));
                ctx.shared
                    .gate()
                    .drop_headroom(got.saturating_sub(reserved));
            }
        }
    }
    loop {
        match ctx.shared.ask(model, worst) {
            Grant::NoBudget(short) => {
                let (Some(l), Some(block)) = (&ctx.shared.ledger, block(ctx)) else {
                    return Ok(Grant::NoBudget(short));
                };
                let _one = ctx.shared.claiming.lock().await;
                // Another task may have claimed while this one waited.
                let short = match ctx.shared.ask(model, worst) {
                    Grant::NoBudget(short) => short,
                    other => return Ok(other),
                };
                let need = short.needed.saturating_sub(short.available);
                let got = with_ledger(ctx, || l.claim(need, block)).await?;
                if got.is_zero() {
                    return Ok(Grant::NoBudget(short));
                }
                ctx.shared.gate().grow(got);
            }
            other => return Ok(other),
        }
    }
}

/// Waits for the rate limits of `model` (on the shared ledger when there is one).
async fn take_slot(
    ctx: &Context,
    model: ModelId,
    tokens: u64,
) -> Result<Result<(), TooLarge>, Left> {
    let Some(l) = &ctx.shared.ledger else {
        return Ok(ctx.shared.limits.acquire(model, tokens).await);
    };
    if let Err(big) = too_large(&ctx.cfg, model, tokens) {
        return Ok(Err(big));
    }
    // Asked even without rpm/tpm: another process's 429 may pause the model.
    let plan = l.plan(model, || {
        (
            shared_pauses(&ctx.cfg, model).to_vec(),
            shared_scopes(&ctx.cfg, model),
        )
    });
    let wait = with_ledger(ctx, || l.slot(&plan, tokens)).await?;
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    Ok(Ok(()))
}

/// How the attempts on one candidate ended.
enum Tried {
    Answered(Answer),
    /// Give up on this model (after retries, or at once) for this cause; the breaker
    /// learns `Health`.
    Next(Health, Cause),
    /// The prompt is too long for this model.
    TooLong,
    /// The request itself is bad (400/422).
    Rejected,
}

/// Runs one record through its candidates. Every call is charged to the model that
/// made it; the row ends with the final (or best) answer. Returns the reason when the
/// record failed on every candidate for a lasting reason (a refused key, say).
async fn execute(
    ctx: &Context,
    pos: u64,
    job: Job,
    decision: Decision,
    route: Route,
    row: &mut ResultRow,
) -> Result<Option<Arc<str>>, Left> {
    let cfg = &ctx.cfg;
    let (decision, mut route) = match llm::wants(&decision, &cfg.classifier) {
        true => ask_llm(ctx, &job, decision, route, row).await,
        false => (decision, route),
    };
    // Only the first model goes through a batch (when the run batches it): its
    // fallbacks and escalations are realtime calls, reserved at list prices.
    let batch_first = ctx.batch_bound(&route);
    for (i, c) in route.candidates.iter_mut().enumerate() {
        if i > 0 || !batch_first {
            *c = c.realtime(cfg, &job);
        }
    }
    let steps = route
        .candidates
        .iter()
        .map(|c| Step {
            worst_cost: reservation(cfg.priced(c.model, c.batch), &job, c),
            context_window: cfg.models[c.model].context_window,
        })
        .collect();
    tracing::debug!(
        id = %job.id,
        task = decision.task.as_str(),
        complexity = decision.complexity.as_str(),
        confidence = decision.confidence,
        by = decision.classified_by.as_str(),
        tier = route.tier.as_str(),
        candidates = %route
            .candidates
            .iter()
            .map(|c| cfg.models[c.model].name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        "routed"
    );
    if crate::log::log_prompts() {
        tracing::debug!(id = %job.id, prompt = job.last_user_text(), "prompt");
    }
    let mut walk = Walk::new(steps, ctx.settings.on_budget, cfg.run.max_escalations);
    let mut best: Option<ResultRow> = None;
    let mut last_error = String::new();
    // The latest failure, and whether every candidate given up so far was given up
    // for a lasting one.
    let mut cause: Option<Cause> = None;
    let mut all_lasting = true;
    // Lines sent again in a new batch (`batch_retry = "batch"`), and whether the
    // next batch attempt sends its line anew (not waiting on an earlier run's batch).
    let mut rebatched = 0u32;
    let mut fresh_line = false;
    let mut next = walk.first();
    let ending = loop {
        // Kept current, so a row sent by a panicking task still counts its fallbacks.
        row.fallbacks = walk.fallbacks();
        let i = match next {
            Next::Try(i) => i,
            ending => break ending,
        };
        let c = route.candidates[i];
        let model = &cfg.models[c.model];
        let priced = cfg.priced(c.model, c.batch);
        let held = match ask(ctx, c.model, reservation(priced, &job, &c)).await? {
            Grant::Granted(held) => held,
            Grant::BreakerOpen(why) => {
                tracing::debug!(id = %job.id, model = %model.name, "circuit open: next candidate");
                last_error = match &why {
                    Some(why) => format!("{}: circuit open after: {}", model.name, why.text),
                    None => format!("{}: circuit open", model.name),
                };
                all_lasting &= why.as_ref().is_some_and(|c| c.lasting);
                cause = why.or(cause);
                next = walk.after(Event::BreakerOpen);
                continue;
            }
            Grant::NoBudget(short) => {
                tracing::debug!(
                    id = %job.id, model = %model.name, needs = %short.needed, left = %short.available,
                    "budget: the worst case does not fit"
                );
                all_lasting = false;
                last_error = format!(
                    "budget: {} needs up to {}, {} left",
                    model.name, short.needed, short.available
                );
                next = walk.after(Event::NoBudget);
                if walk.stops_the_run() {
                    let _ = ctx.tx.send(ToOwner::StopOnBudget);
                }
                continue;
            }
        };
        let started = Instant::now();
        let mut from_batch = None;
        let tried = match c.batch {
            false => try_candidate(ctx, &job, decision.task, &c, row, &mut last_error).await?,
            true => match try_batch(ctx, pos, &job, &c, fresh_line, row, &mut last_error).await {
                Batched::Left => {
                    held.release(Health::Unknown);
                    return Err(Left);
                }
                // Not answered and not billed: the same model again, realtime (or in
                // a new batch, `batch_retry = "batch"`, up to `max_retries` times).
                Batched::Resubmit => {
                    held.release(Health::Unknown);
                    fresh_line = true;
                    continue;
                }
                Batched::Again => {
                    held.release(Health::Unknown);
                    fresh_line = true;
                    let rebatch = cfg.run.batch_retry == BatchRetry::Batch
                        && rebatched < ctx.policy.max_retries;
                    match rebatch {
                        true => rebatched += 1,
                        false => route.candidates[i] = c.realtime(cfg, &job),
                    }
                    continue;
                }
                Batched::Tried(tried, seq, billed) => {
                    from_batch = Some((seq, billed));
                    tried
                }
            },
        };
        let answer = match tried {
            Tried::Answered(answer) => answer,
            Tried::Next(health, why) => {
                all_lasting &= why.lasting;
                cause = Some(why);
                held.release(health);
                next = walk.after(Event::GaveUp);
                continue;
            }
            // Our count said it fits; the provider counts more. The model answered:
            // it is not failing.
            Tried::TooLong => {
                all_lasting = false;
                held.release(Health::Answered);
                next = walk.after(Event::TooLong);
                continue;
            }
            Tried::Rejected => {
                all_lasting = false;
                held.release(Health::Answered);
                next = walk.after(Event::Rejected);
                continue;
            }
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let weakness = check(
            &job,
            decision.task,
            &answer.text,
            answer.finish_reason.as_deref(),
            &cfg.checks,
        );
        let escalate = walk.escalates(weakness.is_some());
        tracing::debug!(
            id = %job.id,
            model = %model.name,
            input_tokens = answer.input_tokens,
            output_tokens = answer.output_tokens,
            latency_ms,
            weak = weakness.map(|w| w.as_str()),
            escalate,
            "answered"
        );
        if crate::log::log_prompts() {
            tracing::debug!(id = %job.id, answer = answer.text.as_str(), "answer");
        }
        let mut call = billed_call(
            cfg,
            c.model,
            model.name.clone(),
            &answer,
            escalate,
            latency_ms,
            c.batch,
        );
        row.cost_usd += call.cost;
        match from_batch {
            // An earlier run journaled this very answer: it is in the spend already.
            Some((_, true)) => held.release(Health::Answered),
            Some((seq, false)) => {
                call.batch = Some([seq, pos]);
                settle(ctx, held, call).await;
            }
            None => settle(ctx, held, call).await,
        }
        row.via = Some(if c.batch { Via::Batch } else { Via::Realtime });
        row.input_tokens += answer.input_tokens;
        row.output_tokens += answer.output_tokens;
        row.cached_input_tokens += answer.cached_input_tokens;
        row.latency_ms = Some(row.latency_ms.unwrap_or(0) + latency_ms);
        row.final_model = Some(model.name.clone());
        row.provider = Some(model.provider.clone());
        row.response = Some(answer.text);
        row.finish_reason = answer.finish_reason;
        row.status = Status::Ok;
        if let (true, Some(w)) = (escalate, weakness) {
            row.escalations.push(w.as_str().to_string());
            best = Some(row.clone());
        }
        all_lasting = false;
        next = walk.after(Event::Answered {
            weak: weakness.is_some(),
        });
    };
    row.fallbacks = walk.fallbacks();
    match ending {
        Next::Done => {}
        // An escalation that found nothing better keeps the answer it had, with the
        // spend of every call.
        Next::KeepEarlier => {
            let mut b = best.take().expect("an escalation keeps its earlier answer");
            b.cost_usd = row.cost_usd;
            b.attempts = row.attempts;
            b.fallbacks = row.fallbacks;
            b.error = Some(last_error);
            *row = b;
        }
        Next::Failed | Next::SkippedBudget => {
            row.status = match ending {
                Next::SkippedBudget => Status::SkippedBudget,
                _ => Status::Failed,
            };
            row.error = Some(if last_error.is_empty() {
                "no candidate answered".into()
            } else {
                last_error
            });
        }
        Next::Try(_) => unreachable!("the walk ended"),
    }
    Ok(match (ending, cause) {
        (Next::Failed, Some(c)) if all_lasting => Some(c.text),
        _ => None,
    })
}

/// How a batch attempt ended.
enum Batched {
    /// Answered or failed as a call would have: from submission `seq`; `billed` when
    /// an earlier run already journaled its answer.
    Tried(Tried, u64, bool),
    /// Not answered, not billed (expired, cancelled, a retryable error): try again.
    Again,
    /// Never submitted (an earlier run was killed before creating its batch): send
    /// it in a new batch.
    Resubmit,
    /// Ctrl-C: the record stops waiting.
    Left,
}

/// Sends the record's request in its model's next batch (or waits for the batch an
/// earlier run submitted it in) and maps the line's result the way a call's would
/// be: an answer, or a failure the retry policy decides on.
#[allow(clippy::too_many_arguments)]
async fn try_batch(
    ctx: &Context,
    pos: u64,
    job: &Job,
    c: &Candidate,
    again: bool,
    row: &mut ResultRow,
    last_error: &mut String,
) -> Batched {
    let cfg = &ctx.cfg;
    let model = &cfg.models[c.model];
    let (Some(batcher), Some(provider)) = (
        ctx.batcher.get(),
        ctx.shared.backend.batch_provider(cfg, c.model),
    ) else {
        return Batched::Again;
    };
    let cap = job
        .max_tokens
        .map_or(u64::from(model.max_output_tokens), u64::from);
    let rx = batcher.join(c.model, pos, c.input_tokens, again, |id| {
        provider.batch_line(job, model, cap, id)
    });
    row.attempts += 1;
    let delivered = tokio::select! {
        d = rx => d,
        _ = batcher.left() => return Batched::Left,
    };
    let Ok(d) = delivered else {
        // The batcher dropped the line (the run is stopping).
        return Batched::Left;
    };
    if d.resubmit {
        row.attempts -= 1;
        return Batched::Resubmit;
    }
    let failure = match d.result {
        LineResult::Answered(a) => return Batched::Tried(Tried::Answered(a), d.seq, d.billed),
        LineResult::NotRun(why) => {
            tracing::debug!(id = %job.id, model = %model.name, reason = %why, "batch line not run");
            *last_error = format!("{}: {why}", model.name);
            return Batched::Again;
        }
        LineResult::Failed(f, msg) => {
            *last_error = format!("{}: {msg}", model.name);
            let cause = Cause {
                text: msg.into(),
                lasting: is_lasting(&f),
            };
            ctx.shared.note_failure(c.model, cause.clone());
            (f, cause)
        }
    };
    let (failure, cause) = failure;
    let tried = match decide(&failure, 1, &ctx.policy, 0.0) {
        Action::Retry(_) => return Batched::Again,
        Action::NextCandidate => Tried::Next(Health::Failed, cause),
        Action::NextLargerContext => Tried::TooLong,
        Action::Fail => Tried::Rejected,
    };
    Batched::Tried(tried, d.seq, d.billed)
}

/// Sends the record to one candidate, retrying as the policy says, until it answers
/// or the candidate is given up. `last_error` keeps the latest reason.
async fn try_candidate(
    ctx: &Context,
    job: &Job,
    task: Task,
    c: &Candidate,
    row: &mut ResultRow,
    last_error: &mut String,
) -> Result<Tried, Left> {
    let (cfg, shared, policy) = (&ctx.cfg, &ctx.shared, &ctx.policy);
    let model = &cfg.models[c.model];
    let cap = job
        .max_tokens
        .map_or(u64::from(model.max_output_tokens), u64::from);
    let mut attempt = 0u32;
    loop {
        if let Err(big) = take_slot(ctx, c.model, c.input_tokens + c.output_tokens).await? {
            let why = format!(
                "the request needs up to {} tokens, more than the tpm of {}",
                big.tokens, big.tpm
            );
            *last_error = format!("{}: {why}", model.name);
            let cause = Cause {
                text: why.into(),
                lasting: false,
            };
            return Ok(Tried::Next(Health::Unknown, cause));
        }
        attempt += 1;
        row.attempts += 1;
        let sent = Instant::now();
        let failure = match shared
            .backend
            .complete(job, task, model, c, cap, attempt)
            .await
        {
            Ok(a) => return Ok(Tried::Answered(a)),
            Err((failure, msg)) => {
                tracing::debug!(id = %job.id, model = %model.name, attempt, error = %msg, "request failed");
                if failure != Failure::Unusable {
                    failed_call(
                        ctx,
                        c.model,
                        model.name.clone(),
                        sent.elapsed().as_millis() as u64,
                    );
                }
                *last_error = format!("{}: {msg}", model.name);
                let cause = Cause {
                    text: msg.into(),
                    lasting: is_lasting(&failure),
                };
                shared.note_failure(c.model, cause.clone());
                (failure, cause)
            }
        };
        let (failure, cause) = failure;
        if let Failure::Http {
            status: 429,
            retry_after: Some(wait),
            ..
        } = failure
        {
            if wait > policy.max_retry_after {
                // Out of quota for longer than we wait: the model is unavailable, and
                // its breaker (not a pause) keeps other records off it.
                return Ok(Tried::Next(Health::Unavailable, cause));
            }
            shared.limits.pause(c.model, wait);
            if let Some(l) = &shared.ledger {
                // Every process on the ledger waits it out.
                let _ = l.pause(&shared_pauses(cfg, c.model), wait).await;
            }
        }
        let jitter = (row.attempts as f64 * 0.618_034).fract();
        match decide(&failure, attempt, policy, jitter) {
            Action::Retry(delay) => {
                tracing::debug!(id = %job.id, model = %model.name, delay_ms = delay.as_millis() as u64, "retry");
                tokio::time::sleep(delay).await
            }
            Action::NextCandidate => {
                tracing::debug!(id = %job.id, model = %model.name, "giving up on this model");
                return Ok(Tried::Next(Health::Failed, cause));
            }
            Action::NextLargerContext => return Ok(Tried::TooLong),
            Action::Fail => return Ok(Tried::Rejected),
        }
    }
}

/// Asks the `[classifier.llm]` model for the record's task: one attempt, reserved,
/// rate-limited and charged like any call, on its own report line. A usable answer
/// naming another task re-routes the record; anything else keeps the local decision.
async fn ask_llm(
    ctx: &Context,
    job: &Job,
    decision: Decision,
    route: Route,
    row: &mut ResultRow,
) -> (Decision, Route) {
    let cfg = &ctx.cfg;
    let mut tokens = PromptTokens::default();
    let Some((question, c)) = classifier_question(cfg, job, &decision, &mut tokens) else {
        return (decision, route);
    };
    let Ok(Grant::Granted(held)) = ask(ctx, c.model, c.worst_cost).await else {
        return (decision, route);
    };
    let model = &cfg.models[c.model];
    if !matches!(
        take_slot(ctx, c.model, c.input_tokens + c.output_tokens).await,
        Ok(Ok(()))
    ) {
        return (decision, route);
    }
    let started = Instant::now();
    let answer = ctx
        .shared
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
    let answer = match answer {
        Ok(answer) => answer,
        Err((failure, _)) => {
            if failure != Failure::Unusable {
                let label = llm::report_label(&model.name);
                failed_call(ctx, c.model, label, started.elapsed().as_millis() as u64);
            }
            held.release(Health::Failed);
            return (decision, route);
        }
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let label = llm::report_label(&model.name);
    let call = billed_call(cfg, c.model, label, &answer, false, latency_ms, false);
    row.cost_usd += call.cost;
    settle(ctx, held, call).await;
    let Some(asked) = llm::decided(&decision, &answer.text) else {
        return (decision, route);
    };
    match crate::route::route(cfg, job, &asked, cfg.tier, &mut tokens) {
        Ok(rerouted) => {
            row.task = Some(asked.task);
            row.classified_by = Some(ClassifiedBy::Llm);
            row.tier = Some(rerouted.tier);
            row.routed_model = Some(cfg.models[rerouted.chosen().model].name.clone());
            (asked, rerouted)
        }
        // The answer's task has no eligible model for this record: keep ours.
        Err(_) => (decision, route),
    }
}

/// An answered call, charged to `model` (reported as `name`) at its prices, with what
/// the same tokens would have cost on the baseline.
/// A batch answer is charged at the model's batch prices and reported on its own
/// line, `NAME (batch)`.
fn billed_call(
    cfg: &Config,
    model: ModelId,
    name: String,
    answer: &Answer,
    escalated: bool,
    latency_ms: u64,
    batch: bool,
) -> Call {
    let (input, output) = (answer.input_tokens, answer.output_tokens);
    let (read, write) = (answer.cached_input_tokens, answer.cache_write_tokens);
    Call {
        model: match batch {
            true => format!("{name} (batch)"),
            false => name,
        },
        provider: cfg.models[model].provider.clone(),
        ok: true,
        escalated,
        input_tokens: input,
        output_tokens: output,
        cost: cfg.priced(model, batch).charge(input, read, write, output),
        baseline_cost: cfg.models[cfg.baseline].charge(input, read, write, output),
        latency_ms,
        overrun: Usd::ZERO,
        batch: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Message;

    #[test]
    fn a_request_that_may_write_the_cache_reserves_the_write_premium() {
        let cfg = Config::embedded();
        let sonnet = &cfg.models[cfg.model_id("claude-sonnet-4.6").unwrap()];
        let mini = &cfg.models[cfg.model_id("gpt-4o-mini").unwrap()];
        let c = |worst: &str| Candidate {
            model: 0,
            input_tokens: 1_000_000,
            output_tokens: 0,
            output_variance: 0,
            cost: Usd::ZERO,
            worst_cost: Usd::parse(worst).unwrap(),
            batch: false,
        };
        let mut job = Job::from_prompt("a", "hi");
        // No system prompt: nothing to cache.
        assert_eq!(reservation(sonnet, &job, &c("3")), Usd::parse("3").unwrap());
        job.messages.insert(
            0,
            Message {
                role: "system".into(),
                text: "You summarize.".into(),
                images: vec![],
                name: None,
            },
        );
        // 1M prompt tokens: written at $3.75 instead of $3.00.
        assert_eq!(
            reservation(sonnet, &job, &c("3")),
            Usd::parse("3.75").unwrap()
        );
        // A model whose cache writes cost no more than input reserves its worst case.
        assert_eq!(reservation(mini, &job, &c("3")), Usd::parse("3").unwrap());
    }
}
