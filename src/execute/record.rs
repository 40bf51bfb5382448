//! One record's execution, as a task: walk the route's candidates, reserve the worst
//! case with the dispatcher before each request, retry transient failures per
//! `policy`, fall back, check the answer and escalate a weak one, settle what was
//! used; and, when configured, ask the LLM classifier first.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Grant, Health, Held, OnBudget, Shared, ToOwner};
use crate::checks::check;
use crate::classify::{parse_llm_answer, wants_llm, ClassifiedBy, Decision};
use crate::config::{Config, ModelId};
use crate::money::Usd;
use crate::output::{Call, ResultRow};
use crate::plan::{classifier_question, model_label};
use crate::policy::{decide, Action, Failure, RetryPolicy};
use crate::provider::wire::Answer;
use crate::record::{Job, Task};
use crate::route::{price, Route};
use crate::tokens::PromptTokens;

/// Charges an answered call: settled in the gate, then journaled by the dispatcher.
fn settle(tx: &mpsc::UnboundedSender<ToOwner>, held: Held<'_>, mut call: Call) {
    let spent;
    (spent, call.overrun) = held.settle(call.cost);
    let _ = tx.send(ToOwner::Call(call, spent));
}

/// How the attempts on one candidate ended.
enum Tried {
    Answered(Answer),
    /// Give up on this model (after retries, or at once); the breaker learns `Health`.
    Next(Health),
    /// The prompt is too long for this model: only a larger window can help.
    LargerContext,
    /// The request itself is bad; no model will take it.
    Fail,
}

/// Runs one record through its candidates. Every call is charged to the model that
/// made it; the row ends with the final (or best) answer.
#[allow(clippy::too_many_arguments)]
pub(super) async fn execute(
    cfg: &Config,
    shared: &Shared,
    tx: &mpsc::UnboundedSender<ToOwner>,
    on_budget: OnBudget,
    job: Job,
    decision: Decision,
    route: Route,
    row: &mut ResultRow,
) {
    let policy = RetryPolicy {
        max_retries: cfg.run.max_retries,
        base_delay: Duration::from_millis(cfg.run.retry_base_ms),
        max_retry_after: Duration::from_secs(cfg.run.max_retry_after_s),
        ..RetryPolicy::default()
    };
    let (decision, route) = match cfg
        .llm_classifier
        .filter(|_| wants_llm(&decision, &cfg.classifier))
    {
        Some(m) => llm_reclassify(cfg, shared, tx, &job, decision, route, m, row).await,
        None => (decision, route),
    };
    let checks = cfg.checks;
    let candidates = &route.candidates;
    let mut escalations_left = cfg.run.max_escalations;
    let mut best: Option<ResultRow> = None;
    let mut last_error = String::new();
    let mut refused_by_budget = false;
    let mut idx = 0;
    'candidates: while idx < candidates.len() {
        let c = candidates[idx];
        let model = &cfg.models[c.model];
        let held = match shared.ask(c.model, c.worst_cost) {
            Grant::Granted(held) => held,
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
        let tried = loop {
            attempt += 1;
            row.attempts += 1;
            let cap = job
                .max_tokens
                .map_or(u64::from(model.max_output_tokens), u64::from);
            if let Err(big) = shared
                .limits
                .acquire(c.model, c.input_tokens + c.output_tokens)
                .await
            {
                row.attempts -= 1;
                last_error = format!(
                    "{}: the request needs up to {} tokens, more than the tpm of {}",
                    model.name, big.tokens, big.tpm
                );
                break Tried::Next(Health::Unknown);
            }
            let failure = match shared
                .backend
                .complete(&job, decision.task, model, &c, cap, attempt)
                .await
            {
                Ok(a) => break Tried::Answered(a),
                Err((failure, msg)) => {
                    last_error = format!("{}: {msg}", model.name);
                    failure
                }
            };
            let jitter = (row.attempts as f64 * 0.618_034).fract();
            let action = decide(&failure, attempt, &policy, jitter);
            if let Failure::Http {
                status: 429,
                retry_after: Some(wait),
                ..
            } = failure
            {
                if wait > policy.max_retry_after {
                    // Out of quota for longer than we wait: the model is unavailable,
                    // and its breaker (not a pause) keeps other records off it.
                    break Tried::Next(Health::Unavailable);
                }
                shared.limits.pause(c.model, wait);
            }
            match action {
                Action::Retry(delay) => tokio::time::sleep(delay).await,
                Action::NextCandidate => break Tried::Next(Health::Failed),
                Action::NextLargerContext => break Tried::LargerContext,
                Action::Fail => break Tried::Fail,
            }
        };
        let answer = match tried {
            Tried::Answered(answer) => answer,
            Tried::Fail => {
                held.release(Health::Answered);
                break 'candidates;
            }
            Tried::Next(health) => {
                held.release(health);
                row.fallbacks += 1;
                idx += 1;
                continue;
            }
            Tried::LargerContext => {
                // Our count said it fits; the provider counts more. Only a larger
                // window can help. The model answered: it is not failing.
                held.release(Health::Answered);
                row.fallbacks += 1;
                match (idx + 1..candidates.len()).find(|&j| {
                    cfg.models[candidates[j].model].context_window > model.context_window
                }) {
                    Some(j) => idx = j,
                    None => break 'candidates,
                }
                continue;
            }
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
        settle(tx, held, call);
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
        return;
    }
    match best {
        // An escalation that found nothing better keeps the answer it had, with the
        // spend of every call.
        Some(mut b) => {
            b.cost_usd = row.cost_usd;
            b.attempts = row.attempts;
            b.fallbacks = row.fallbacks;
            b.error = Some(last_error);
            *row = b;
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
        }
    }
}

/// Asks the `[classifier.llm]` model for the record's task: one attempt, reserved,
/// rate-limited and charged like any call, on its own report line. A usable answer
/// naming another task re-routes the record; anything else keeps the local decision.
#[allow(clippy::too_many_arguments)]
async fn llm_reclassify(
    cfg: &Config,
    shared: &Shared,
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
    let Grant::Granted(held) = shared.ask(m, c.worst_cost) else {
        return (decision, route);
    };
    let model = &cfg.models[m];
    if shared
        .limits
        .acquire(m, c.input_tokens + c.output_tokens)
        .await
        .is_err()
    {
        return (decision, route);
    }
    let started = Instant::now();
    let answer = shared
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
        held.release(Health::Failed);
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
    settle(tx, held, call);
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
        overrun: Usd::ZERO,
    }
}
