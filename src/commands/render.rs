//! How results look: the plan as a table or JSON, and the borderless tables `plan`,
//! `models` and `run` print.

use std::io::Write;

use anyhow::Result;
use comfy_table::{presets, CellAlignment, Table};
use serde_json::json;

use crate::classify::llm;
use crate::config::Config;
use crate::evaluate::PlanSummary;
use crate::input::Input;
use crate::money::{group_thousands, Usd};

pub fn usd(u: Usd) -> f64 {
    u.as_f64()
}

pub fn plan_json(
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
        "unsure": unsure_json(cfg, s),
        "reasons": s.reasons.json(),
        "cache": json!({
            "records": s.cache.records, "tokens": s.cache.tokens,
            "saving_usd": usd(s.cache.saving), "write_premium_usd": usd(s.cache.premium),
            "total_with_cache_usd": usd(s.total_with_cache()),
            "total_with_cache_exact": s.total_with_cache().exact(),
        }),
        "via": cfg.run.via,
        "batch": json!({
            "records": s.batch.records, "cost_usd": usd(s.batch.cost),
            "realtime_cost_usd": usd(s.batch_at_realtime),
            "saving_usd": usd(s.batch_at_realtime.saturating_sub(s.batch.cost)),
        }),
        "history": cfg.output_history.as_ref().map(|h| json!({
            "answers": h.answers, "files": h.files, "pairs": h.pairs(),
            "p95_cost_usd": s.p95_cost_usd(),
        })),
    })
}

/// The records the local classifier was unsure of and what asking the LLM classifier
/// about them costs.
fn unsure_json(cfg: &Config, s: &PlanSummary) -> serde_json::Value {
    json!({
        "records": s.unsure.records,
        "min_confidence": (f64::from(llm::unsure_below(&cfg.classifier)) * 1e4).round() / 1e4,
        "model": cfg.llm_model.map(|m| &cfg.models[m].name),
        "asked": cfg.llm_classifier.is_some(),
        "cannot_ask": s.unsure_unaskable,
        "ask_cost_usd": cfg.llm_model.map(|_| usd(s.unsure.cost)),
    })
}

/// One line on the unsure records: how many, and what asking about them costs.
fn unsure_line(cfg: &Config, s: &PlanSummary) -> String {
    let u = &s.unsure;
    let routed = s.total.records.max(1);
    let head = format!(
        "unsure: {} of {} routed records ({:.1}%) below confidence {:.2}",
        group_thousands(u.records),
        group_thousands(s.total.records),
        u.records as f64 * 100.0 / routed as f64,
        llm::unsure_below(&cfg.classifier)
    );
    let asked = cfg.llm_classifier.is_some();
    let head = match s.unsure_unaskable {
        0 => head,
        n => format!(
            "{head} ({} cannot be asked: a tag its provider may not receive, or too long)",
            group_thousands(n)
        ),
    };
    match cfg.llm_model {
        Some(m) if asked => format!(
            "{head}; asking {} costs {} (in the total)",
            cfg.models[m].name, u.cost
        ),
        Some(m) => format!(
            "{head}; asking {} would cost {} (off: [classifier.llm] enabled = true asks)",
            cfg.models[m].name, u.cost
        ),
        None => head,
    }
}

/// A borderless table whose columns from `numeric_from` on are right-aligned.
pub fn table(header: &[&str], numeric_from: usize) -> Table {
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

pub fn write_plan_table(
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
            llm::report_label(&cfg.models[m].name),
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
    writeln!(out, "{}", unsure_line(cfg, s))?;
    if s.batch.records > 0 {
        writeln!(
            out,
            "via {}: {} records go through batch APIs at batch prices: {} (realtime {}); answers within 24 h",
            cfg.run.via,
            group_thousands(s.batch.records),
            s.batch.cost,
            s.batch_at_realtime,
        )?;
    } else if cfg.run.via != crate::config::Via::Realtime {
        writeln!(
            out,
            "via {}: no routed model's provider has a batch API (`batch = true`); every request is realtime",
            cfg.run.via
        )?;
    }
    if s.cache.records > 0 || !s.cache.premium.is_zero() {
        writeln!(
            out,
            "prompt cache: {} records repeat a system prompt an earlier record sent ({} tokens at cache prices): expected {} less{}; total with it {}",
            group_thousands(s.cache.records),
            group_thousands(s.cache.tokens),
            s.cache.saving,
            match s.cache.premium.is_zero() {
                true => String::new(),
                false => format!(", {} more for cache writes", s.cache.premium),
            },
            s.total_with_cache()
        )?;
    }
    if let Some(h) = &cfg.output_history {
        writeln!(
            out,
            "history: answer lengths from {} past answers in {} results file(s) ({} task × model pairs with {}+); expected {}, p95 ${:.6}",
            group_thousands(h.answers),
            h.files,
            h.pairs(),
            crate::config::history::MIN_ANSWERS,
            s.total.cost,
            s.p95_cost_usd()
        )?;
    }
    if !s.reasons.is_empty() {
        writeln!(out, "not routed:")?;
        for line in s.reasons.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    if let Some(b) = budget {
        if total <= b {
            writeln!(out, "budget {b}: fits ({} of it)", pct(b.share(total)))?;
        } else {
            writeln!(out, "budget {b}: DOES NOT FIT (over by {})", total - b)?;
        }
    }
    Ok(())
}
