//! `switchyard plan`: price a whole job without a single API call.

use std::io::{self, BufWriter, Write};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};

use super::render::{plan_json, write_plan_table};
use crate::cli::{Format, PlanArgs};
use crate::config::history::OutputHistory;
use crate::config::Config;
use crate::evaluate::evaluate_all;
use crate::exit::Exit;

pub fn plan(args: PlanArgs) -> Result<Exit> {
    let (mut cfg, input) = super::load(&args.routing, args.baseline.clone())?;
    cfg.run.via = args.via.unwrap_or(cfg.run.via);
    if !args.history.is_empty() {
        cfg.output_history = Some(Arc::new(history(&cfg, &args.history)?));
    }
    let summary = evaluate_all(&cfg, &input, args.routing.strict, |_, _| Ok(()))?;
    if let Some(path) = &args.report {
        crate::output::report::write_parquet(path, &summary.report_rows(&cfg))?;
    }
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
    if let Some(budget) = args.budget.filter(|b| summary.total.cost > *b) {
        eprintln!(
            "error: estimated cost {} exceeds --budget {} by {}; every record on its cheapest eligible model would cost {}",
            summary.total.cost,
            budget,
            summary.total.cost - budget,
            summary.cheapest_cost
        );
        return Ok(Exit::Budget);
    }
    Ok(Exit::of_records(summary.invalid + summary.unroutable))
}

/// Output tokens per task and model from past runs' results: each `--history` path
/// is an `--out` directory or a results.parquet. Rows that escalated are left out
/// (their tokens are two answers'), as are models the catalog no longer has.
fn history(cfg: &Config, paths: &[PathBuf]) -> Result<OutputHistory> {
    let mut h = OutputHistory::default();
    for path in paths {
        let file = match path.is_dir() {
            true => path.join("results.parquet"),
            false => path.clone(),
        };
        if !Path::new(&file).exists() {
            bail!("--history {}: no results.parquet there", path.display());
        }
        for row in crate::output::parquet::read_answered(&file)? {
            let (Ok(task), Some(model)) = (row.task.parse(), cfg.model_id(&row.model)) else {
                continue;
            };
            if !row.escalated {
                h.add(task, model, row.output_tokens);
            }
        }
        h.files += 1;
    }
    if h.answers == 0 {
        bail!("--history: no answered records in {} file(s)", h.files);
    }
    Ok(h)
}
