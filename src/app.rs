//! The commands as pipelines: load config, read the job, evaluate on workers, fold in
//! order, print. Returns the process exit status; errors before any work are `Err`.

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;

use anyhow::{Context, Result};
use comfy_table::{presets, CellAlignment, Table};
use serde::Serialize;
use serde_json::json;

use crate::cli::{ClassifyArgs, Command, Format, ModelsArgs, PlanArgs, RoutingArgs, RunArgs};
use crate::config::Config;
use crate::input::Input;
use crate::money::{group_thousands, Usd};
use crate::pipeline::{default_workers, ordered_map};
use crate::plan::{evaluate_batch, Dedup, Evaluated, Outcome, PlanSummary, SHOWN_PROBLEMS};
use crate::record::Tier;

/// Exit codes (DESIGN.md).
pub const EXIT_OK: u8 = 0;
pub const EXIT_SOME_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_BUDGET: u8 = 3;
/// `run` could not deliver its results after work started: stdout closed
/// (`run - | head`). What `--out` journaled stays resumable.
pub const EXIT_OUTPUT: u8 = 4;
/// Ctrl-C or SIGTERM: the run drained and stopped; `--resume` continues it.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Raised when `--strict` meets a bad record: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0} (--strict stops at the first invalid record)")]
pub struct StrictStop(String);

pub fn run(command: Command) -> Result<u8> {
    match command {
        Command::Plan(a) => plan(a),
        Command::Run(a) => run_job(a),
        Command::Classify(a) => classify(a),
        Command::Models(a) => models(a),
    }
}

pub(crate) fn load(args: &RoutingArgs, baseline: Option<String>) -> Result<(Config, Input)> {
    let cfg = Config::load(&args.config.overrides(args.tier, baseline))?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    Ok((cfg, Input::from_arg(&args.input)))
}

/// Reports bad records on stderr: the first few in full, then a count.
struct Problems {
    label: String,
    shown: usize,
    hidden: u64,
}

impl Problems {
    fn new(label: String) -> Problems {
        Problems {
            label,
            shown: 0,
            hidden: 0,
        }
    }

    fn report(&mut self, problem: String) {
        if self.shown < SHOWN_PROBLEMS {
            self.shown += 1;
            eprintln!("warning: {}: {problem}", self.label);
        } else {
            self.hidden += 1;
        }
    }

    fn finish(&self) {
        if self.hidden > 0 {
            eprintln!(
                "warning: {}: {} more bad records not shown (`switchyard classify` lists them all)",
                self.label, self.hidden
            );
        }
    }
}

/// Evaluates the whole input and folds it, calling `each` on every record in order.
pub(crate) fn evaluate_all(
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
pub(crate) fn evaluate_batches(
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
    let mut problems = Problems::new(label.clone());
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
                    problems.report(p.clone());
                }
                out.push((e, problem.filter(|_| invalid)));
            }
            each(out)?;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    problems.finish();
    if summary.records == 0 {
        eprintln!("warning: {label}: no records");
    }
    Ok(summary)
}

fn plan(args: PlanArgs) -> Result<u8> {
    let (cfg, input) = load(&args.routing, args.baseline.clone())?;
    let summary = evaluate_all(&cfg, &input, args.routing.strict, |_, _| Ok(()))?;
    let rows = summary.report_rows(&cfg);
    if let Some(path) = &args.report {
        crate::report::write_parquet(path, &rows)?;
    }
    let fits = args.budget.map(|b| summary.total.cost <= b);
    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &plan_json(&cfg, &input, &summary, args.budget),
            )?;
            writeln!(out)?;
        }
        Format::Table => write_plan_table(&mut out, &cfg, &input, &summary, args.budget)?,
    }
    out.flush()?;
    if let (Some(budget), Some(false)) = (args.budget, fits) {
        eprintln!(
            "error: estimated cost {} exceeds --budget {} by {}; every record on its cheapest eligible model would cost {}",
            summary.total.cost,
            budget,
            summary.total.cost - budget,
            summary.cheapest_cost
        );
        return Ok(EXIT_BUDGET);
    }
    Ok(if summary.invalid + summary.unroutable > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

fn run_job(args: RunArgs) -> Result<u8> {
    let (cfg, input) = load(&args.routing, args.baseline.clone())?;
    let settings = crate::execute::RunSettings {
        input,
        budget: args.budget,
        on_budget: args.on_budget,
        concurrency: args.concurrency,
        out: args.out.clone(),
        strict: args.routing.strict,
        simulate: args.simulate,
        resume: args.resume,
        force: args.force,
        overwrite: args.overwrite,
    };
    let (code, summary) = match crate::execute::run(cfg, settings) {
        Err(err) if is_broken_pipe(&err) => {
            // A reader that stops reading does not make a finished job.
            eprintln!(
                "error: stdout was closed before the run finished (broken pipe); results of \
                 records still running were not delivered; use --out DIR to keep every result"
            );
            return Ok(EXIT_OUTPUT);
        }
        other => other?,
    };
    let total = crate::report::total_row(&summary.report);
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
    for r in summary.report.iter().chain(std::iter::once(&total)) {
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
    eprintln!("{t}");
    eprintln!(
        "{} records, {} not ok; spent {} (baseline {} on the same tokens){}",
        group_thousands(summary.rows),
        group_thousands(summary.not_ok),
        summary.spent,
        total.baseline_cost,
        args.budget
            .map_or(String::new(), |b| format!("; budget {b}"))
    );
    if total.overrun_calls > 0 {
        let over = args
            .budget
            .filter(|b| summary.spent > *b)
            .map_or(String::new(), |b| {
                format!("; spend is over --budget by {}", summary.spent - b)
            });
        eprintln!(
            "warning: {} calls were billed {} more than the worst case reserved for them \
             (the provider counted more tokens than switchyard); new requests are refused \
             once the budget is used{over}",
            group_thousands(total.overrun_calls),
            total.overrun
        );
    }
    if summary.stopped_on_budget {
        eprintln!("error: the run stopped on --budget; records not sent are marked skipped_budget");
    }
    if summary.interrupted {
        let abandoned = match summary.abandoned {
            0 => String::new(),
            n => format!(" ({n} still in flight were abandoned)"),
        };
        let left = summary
            .remaining
            .map_or("the rest of stdin".into(), group_thousands);
        eprintln!(
            "interrupted: {} records done, {left} not yet{abandoned}",
            group_thousands(summary.rows)
        );
        if args.out.is_some() {
            eprintln!("continue with: {}", resume_command());
        }
    }
    if let (Format::Json, Some(_)) = (args.format, &args.out) {
        let json = json!({
            "records": summary.rows, "not_ok": summary.not_ok, "spent_usd": usd(summary.spent),
            "spent_exact": summary.spent.exact(), "budget_usd": args.budget.map(usd),
            "stopped_on_budget": summary.stopped_on_budget, "interrupted": summary.interrupted,
            "baseline_cost_usd": usd(total.baseline_cost), "savings_pct": total.savings_pct(),
            "overrun_usd": usd(total.overrun), "overrun_calls": total.overrun_calls,
        });
        writeln!(io::stdout().lock(), "{json}")?;
    }
    Ok(code)
}

/// A write to a closed pipe, anywhere in the error's chain: `switchyard classify
/// big.jsonl | head` ends quietly, `run` does not.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
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

fn usd(u: Usd) -> f64 {
    u.as_f64()
}

fn plan_json(
    cfg: &Config,
    input: &Input,
    s: &PlanSummary,
    budget: Option<Usd>,
) -> serde_json::Value {
    let total = s.total.cost;
    let models: Vec<_> = s
        .report_rows(cfg)
        .iter()
        .map(|r| {
            json!({
                "model": r.model, "provider": r.provider, "requests": r.requests,
                "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                "cost_usd": usd(r.cost), "share_of_cost": total.share(r.cost),
                "baseline_cost_usd": usd(r.baseline_cost), "savings_pct": r.savings_pct(),
            })
        })
        .collect();
    let tasks: Vec<_> = s
        .tasks
        .iter()
        .map(|(t, l)| {
            json!({
                "task": t, "records": l.records, "input_tokens": l.input_tokens,
                "output_tokens": l.output_tokens, "cost_usd": usd(l.cost),
                "share_of_cost": total.share(l.cost),
            })
        })
        .collect();
    json!({
        "input": input.label(),
        "tier": cfg.tier,
        "baseline": cfg.models[cfg.baseline].name,
        "records": s.records,
        "requests": s.total.records,
        "invalid": s.invalid,
        "unroutable": s.unroutable,
        "input_tokens": s.total.input_tokens,
        "output_tokens": s.total.output_tokens,
        "total_cost_usd": usd(total),
        "total_cost_exact": total.exact(),
        "baseline_cost_usd": usd(s.total.baseline_cost),
        "savings_pct": s.savings_pct(),
        "cheapest_cost_usd": usd(s.cheapest_cost),
        "budget_usd": budget.map(usd),
        "fits_budget": budget.map(|b| total <= b),
        "models": models,
        "tasks": tasks,
    })
}

/// A borderless table whose columns from `numeric_from` on are right-aligned.
fn table(header: &[&str], numeric_from: usize) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(header.to_vec());
    for i in numeric_from..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn write_plan_table(
    out: &mut impl Write,
    cfg: &Config,
    input: &Input,
    s: &PlanSummary,
    budget: Option<Usd>,
) -> Result<()> {
    let total = s.total.cost;
    writeln!(
        out,
        "plan: {} · tier {} · {} records ({} routed, {} invalid, {} unroutable)\n",
        input.label(),
        cfg.tier,
        group_thousands(s.records),
        group_thousands(s.total.records),
        group_thousands(s.invalid),
        group_thousands(s.unroutable)
    )?;
    let mut t = table(
        &[
            "model",
            "provider",
            "records",
            "input tok",
            "output tok",
            "est. cost",
            "share",
        ],
        2,
    );
    for (id, l) in &s.models {
        let m = &cfg.models[*id];
        t.add_row(vec![
            m.name.clone(),
            m.provider.clone(),
            group_thousands(l.records),
            group_thousands(l.input_tokens),
            group_thousands(l.output_tokens),
            l.cost.to_string(),
            pct(total.share(l.cost)),
        ]);
    }
    if let (Some(m), true) = (cfg.llm_classifier, s.classifier.records > 0) {
        let l = &s.classifier;
        t.add_row(vec![
            crate::plan::model_label(cfg, m, true),
            cfg.models[m].provider.clone(),
            group_thousands(l.records),
            group_thousands(l.input_tokens),
            group_thousands(l.output_tokens),
            l.cost.to_string(),
            pct(total.share(l.cost)),
        ]);
    }
    let tl = &s.total;
    t.add_row(vec![
        "total".into(),
        String::new(),
        group_thousands(tl.records),
        group_thousands(tl.input_tokens),
        group_thousands(tl.output_tokens),
        tl.cost.to_string(),
        pct(if total == Usd::ZERO { 0.0 } else { 1.0 }),
    ]);
    writeln!(out, "{t}\n")?;

    let mut t = table(
        &[
            "task",
            "records",
            "input tok",
            "output tok",
            "est. cost",
            "share",
        ],
        1,
    );
    for (task, l) in &s.tasks {
        t.add_row(vec![
            task.to_string(),
            group_thousands(l.records),
            group_thousands(l.input_tokens),
            group_thousands(l.output_tokens),
            l.cost.to_string(),
            pct(total.share(l.cost)),
        ]);
    }
    writeln!(out, "{t}\n")?;
    writeln!(
        out,
        "baseline {}: {} for the same tokens; routing saves {:.1}%",
        cfg.models[cfg.baseline].name,
        tl.baseline_cost,
        s.savings_pct()
    )?;
    writeln!(out, "cheapest eligible routing: {}", s.cheapest_cost)?;
    if let Some(b) = budget {
        if total <= b {
            writeln!(out, "budget {b}: fits ({} of it)", pct(b.share(total)))?;
        } else {
            writeln!(out, "budget {b}: DOES NOT FIT (over by {})", total - b)?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ClassifyLine<'a> {
    id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    complexity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classified_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    est_cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn classify(args: ClassifyArgs) -> Result<u8> {
    let (cfg, input) = load(&args.routing, None)?;
    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let summary = evaluate_all(&cfg, &input, args.routing.strict, |e, invalid| {
        let mut line = ClassifyLine {
            id: &e.id,
            status: "ok",
            task: None,
            complexity: None,
            classified_by: None,
            reason: None,
            tier: None,
            candidates: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            est_cost_usd: None,
            error: None,
        };
        match (&e.outcome, invalid) {
            (_, Some(problem)) => {
                line.status = "invalid_input";
                line.error = Some(problem);
            }
            (Outcome::Invalid(reason), None) => {
                line.status = "invalid_input";
                line.error = Some(reason);
            }
            // `classify` marks nothing done.
            (Outcome::Done, None) => line.status = "done",
            (
                Outcome::Unroutable {
                    decision,
                    tier,
                    prompt_tokens,
                    reason,
                    ..
                },
                None,
            ) => {
                line.status = "failed";
                line.task = Some(decision.task.as_str());
                line.complexity = Some(decision.complexity.as_str());
                line.classified_by = Some(decision.classified_by.as_str());
                line.reason = Some(decision.reason.to_string());
                line.tier = Some(*tier);
                line.candidates = Some(vec![]);
                line.input_tokens = Some(*prompt_tokens);
                line.error = Some(reason);
            }
            (
                Outcome::Routed {
                    decision, route, ..
                },
                None,
            ) => {
                let c = route.chosen();
                line.task = Some(decision.task.as_str());
                line.complexity = Some(decision.complexity.as_str());
                line.classified_by = Some(decision.classified_by.as_str());
                line.reason = Some(decision.reason.to_string());
                line.tier = Some(route.tier);
                line.candidates = Some(
                    route
                        .candidates
                        .iter()
                        .map(|c| cfg.models[c.model].name.as_str())
                        .collect(),
                );
                line.model = Some(&cfg.models[c.model].name);
                line.input_tokens = Some(c.input_tokens);
                line.output_tokens = Some(c.output_tokens);
                line.est_cost_usd = Some(c.cost.as_f64());
            }
        }
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(if summary.invalid + summary.unroutable > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    })
}

fn models(args: ModelsArgs) -> Result<u8> {
    let cfg = Config::load(&args.config.overrides(None, None))?;
    for w in &cfg.warnings {
        eprintln!("warning: {w}");
    }
    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Json => {
            let list: Vec<_> = cfg
                .models
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name, "provider": m.provider,
                        "input_per_mtok": m.input_price.usd_per_mtok(),
                        "output_per_mtok": m.output_price.usd_per_mtok(),
                        "context_window": m.context_window,
                        "max_output_tokens": m.max_output_tokens,
                        "api_model": m.api_model,
                        "token_factor": m.token_factor,
                        "price_source": m.price_source.as_str(),
                        "allowed_tags": cfg.providers[&m.provider].allowed_tags,
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
        Format::Table => {
            let mut t = table(
                &[
                    "model",
                    "provider",
                    "in $/Mtok",
                    "out $/Mtok",
                    "context",
                    "max out",
                    "tags",
                    "price",
                ],
                2,
            );
            for m in &cfg.models {
                t.add_row(vec![
                    m.name.clone(),
                    m.provider.clone(),
                    format!("{:.3}", m.input_price.usd_per_mtok()),
                    format!("{:.3}", m.output_price.usd_per_mtok()),
                    group_thousands(m.context_window),
                    group_thousands(m.max_output_tokens),
                    cfg.providers[&m.provider].allowed_tags.join(","),
                    m.price_source.as_str().to_string(),
                ]);
            }
            writeln!(out, "{t}")?;
        }
    }
    out.flush().context("cannot write to stdout")?;
    Ok(EXIT_OK)
}
