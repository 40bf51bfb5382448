//! `switchyard plan`: price a whole job without a single API call.

use std::io::{self, BufWriter, Write};

use anyhow::Result;

use super::render::{plan_json, write_plan_table};
use crate::cli::{Format, PlanArgs};
use crate::evaluate::evaluate_all;
use crate::exit::Exit;

pub fn plan(args: PlanArgs) -> Result<Exit> {
    let (cfg, input) = super::load(&args.routing, args.baseline.clone())?;
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
