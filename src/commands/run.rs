//! `switchyard run`: flags into [`RunSettings`], the run, then its per-model report
//! and summary (stderr, or JSON on stdout), and the exit status its outcome calls for.

use std::io::{self, Write};

use anyhow::Result;

use serde_json::json;

use super::render::{table, usd};
use crate::cli::{Format, RunArgs};
use crate::exit::{is_broken_pipe, Exit};
use crate::money::{group_thousands, Usd};
use crate::output::report::total_row;
use crate::run::{RunSettings, RunSummary};

pub fn run(args: RunArgs) -> Result<Exit> {
    let (mut cfg, input) = super::load(&args.routing, args.baseline.clone())?;
    cfg.run.via = args.via.unwrap_or(cfg.run.via);
    if args.cancel {
        let dir = args
            .out
            .as_deref()
            .expect("clap requires --out with --cancel");
        crate::run::cancel(&cfg, dir)?;
        return Ok(Exit::Ok);
    }
    let settings = RunSettings {
        input,
        budget: args.budget,
        on_budget: args.on_budget.unwrap_or(cfg.run.on_budget),
        concurrency: args.concurrency.unwrap_or(cfg.run.concurrency),
        out: args.out.clone(),
        strict: args.routing.strict,
        simulate: args.simulate,
        resume: args.resume,
        force: args.force,
        overwrite: args.overwrite,
        keep_order: args.keep_order,
        ledger: match args.ledger.ledger.clone().or_else(|| {
            let url = cfg.ledger.url.trim();
            (!url.is_empty()).then(|| url.to_string())
        }) {
            Some(url) => Some((url, args.ledger.budget_name.clone())),
            None => None,
        },
        shard: args.shard,
    };
    let summary = match crate::run::run(cfg, settings) {
        Err(err) if is_broken_pipe(&err) => {
            // A reader that stops reading does not make a finished job.
            eprintln!(
                "error: stdout was closed before the run finished (broken pipe); results of \
                 records still running were not delivered; use --out DIR to keep every result"
            );
            return Ok(Exit::Output);
        }
        other => other?,
    };
    let hint = args.out.as_ref().map(|_| resume_command());
    run_summary(&summary, args.budget, hint);
    if let (Format::Json, Some(_)) = (args.format, &args.out) {
        writeln!(io::stdout().lock(), "{}", run_json(&summary, args.budget))?;
    }
    Ok(if summary.interrupted {
        Exit::Interrupted
    } else if summary.stopped_on_budget {
        Exit::Budget
    } else if summary.halted.is_some() {
        Exit::SomeFailed
    } else {
        Exit::of_records(summary.not_ok)
    })
}

/// This command line with `--resume` (keys come from the environment, never flags).
fn resume_command() -> String {
    let mut words: Vec<String> = std::env::args()
        .filter(|a| a != "--overwrite")
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect();
    if !words.iter().any(|w| w == "--resume") {
        words.push("--resume".into());
    }
    words.join(" ")
}

/// `run`'s per-model report and summary line on stderr, and what a user must know
/// about how it ended: an overrun of the budget, a stop on it, an interrupt.
pub fn run_summary(s: &RunSummary, budget: Option<Usd>, resume_hint: Option<String>) {
    let total = total_row(&s.report);
    let mut t = table(
        &[
            "model",
            "provider",
            "requests",
            "ok",
            "failed",
            "escalated",
            "cost",
            "p50 ms",
            "p95 ms",
        ],
        2,
    );
    for r in s.report.iter().chain(std::iter::once(&total)) {
        let ms = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
        t.add_row(vec![
            r.model.clone(),
            r.provider.clone().unwrap_or_default(),
            group_thousands(r.requests),
            group_thousands(r.ok),
            group_thousands(r.failed),
            group_thousands(r.escalated),
            r.cost.to_string(),
            ms(r.latency_p50_ms),
            ms(r.latency_p95_ms),
        ]);
    }
    crate::note!("{t}");
    crate::note!(
        "{} records, {} not ok; spent {} (baseline {} on the same tokens){}",
        group_thousands(s.rows),
        group_thousands(s.not_ok),
        s.spent,
        total.baseline_cost,
        budget.map_or(String::new(), |b| format!("; budget {b}"))
    );
    for line in s.reasons.lines() {
        crate::note!("  {line}");
    }
    if total.overrun_calls > 0 {
        let over = budget.filter(|b| s.spent > *b).map_or(String::new(), |b| {
            format!("; spend is over --budget by {}", s.spent - b)
        });
        crate::note!(
            "warning: {} calls were billed {} more than the worst case reserved for them \
             (the provider counted more tokens than switchyard); new requests are refused \
             once the budget is used{over}",
            group_thousands(total.overrun_calls),
            total.overrun
        );
    }
    if s.stopped_on_budget {
        eprintln!("error: the run stopped on --budget; records not sent are marked skipped_budget");
    }
    if let Some(h) = s.halted.as_ref().filter(|h| h.ledger_lost) {
        let left = s.remaining.map_or("the rest of stdin was".into(), |n| {
            format!("{} records were", group_thousands(n))
        });
        eprintln!(
            "error: stopped: the shared ledger did not answer: {}; {left} not done",
            h.why
        );
        match &resume_hint {
            Some(hint) => eprintln!("once it answers, continue with: {hint}"),
            None => eprintln!("once it answers, run the job again"),
        }
    } else if let Some(h) = &s.halted {
        let left = s.remaining.map_or("the rest of stdin was".into(), |n| {
            format!("{} records were", group_thousands(n))
        });
        eprintln!(
            "error: stopped: {} records in a row failed on every model: {}; {left} not started (`[run] stop_after_same_failures`)",
            group_thousands(h.records),
            h.why
        );
        match &resume_hint {
            Some(hint) => eprintln!("fix that, then continue with: {hint}"),
            None => {
                eprintln!("fix that and run the job again (with --out DIR a run can be resumed)")
            }
        }
    }
    if s.interrupted {
        let abandoned = match s.abandoned {
            0 => String::new(),
            n => format!(" ({n} still in flight were abandoned)"),
        };
        let left = s
            .remaining
            .map_or("the rest of stdin".into(), group_thousands);
        eprintln!(
            "interrupted: {} records done, {left} not yet{abandoned}",
            group_thousands(s.rows)
        );
        if s.in_batches > 0 {
            eprintln!(
                "{} records wait in batches already submitted; they keep running at the provider, and --resume reads their results (--cancel cancels them)",
                group_thousands(s.in_batches)
            );
        }
        if let Some(hint) = resume_hint {
            eprintln!("continue with: {hint}");
        }
    }
}

/// `run --format json`'s summary (with `--out`): one line on stdout.
pub fn run_json(s: &RunSummary, budget: Option<Usd>) -> serde_json::Value {
    let total = total_row(&s.report);
    json!({
        "records": s.rows, "not_ok": s.not_ok, "spent_usd": usd(s.spent),
        "spent_exact": s.spent.exact(), "budget_usd": budget.map(usd),
        "stopped_on_budget": s.stopped_on_budget, "interrupted": s.interrupted,
        "stopped_on_failures": s.halted.as_ref().filter(|h| !h.ledger_lost).map(|h| json!({
            "records": h.records, "reason": &*h.why, "not_started": s.remaining,
        })),
        "stopped_on_ledger": s.halted.as_ref().filter(|h| h.ledger_lost).map(|h| json!({
            "reason": &*h.why, "not_done": s.remaining,
        })),
        "baseline_cost_usd": usd(total.baseline_cost), "savings_pct": total.savings_pct(),
        "overrun_usd": usd(total.overrun), "overrun_calls": total.overrun_calls,
        "reasons": s.reasons.json(),
    })
}
