//! `switchyard classify`: one JSON routing decision per record on stdout, bad records
//! included, in input order.

use std::io::{self, BufWriter, Write};

use anyhow::Result;
use serde::Serialize;

use crate::classify::{llm, ClassifiedBy};
use crate::cli::ClassifyArgs;
use crate::evaluate::{evaluate_all, Outcome};
use crate::exit::Exit;
use crate::output::Status;
use crate::record::{Complexity, Task, Tier};

#[derive(Serialize)]
struct ClassifyLine<'a> {
    id: &'a str,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<Task>,
    #[serde(skip_serializing_if = "Option::is_none")]
    complexity: Option<Complexity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classified_by: Option<ClassifiedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The local decision's calibrated confidence (1 for facts and explicit tasks).
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<f64>,
    /// Below the unsure threshold: the `[classifier.llm]` scope "unsure" asks about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    unsure: Option<bool>,
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

pub fn classify(args: ClassifyArgs) -> Result<Exit> {
    let (cfg, input) = super::load(&args.routing, None)?;
    let mut out = BufWriter::with_capacity(256 * 1024, io::stdout().lock());
    let summary = evaluate_all(&cfg, &input, args.routing.strict, |e, invalid| {
        let mut line = ClassifyLine {
            id: &e.id,
            status: Status::Ok,
            task: None,
            complexity: None,
            classified_by: None,
            reason: None,
            confidence: None,
            unsure: None,
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
                line.status = Status::InvalidInput;
                line.error = Some(problem);
            }
            (Outcome::Invalid(reason), None) => {
                line.status = Status::InvalidInput;
                line.error = Some(reason);
            }
            (Outcome::Done, None) => unreachable!("`classify` marks no record done"),
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
                line.status = Status::Failed;
                line.task = Some(decision.task);
                line.complexity = Some(decision.complexity);
                line.classified_by = Some(decision.classified_by);
                line.reason = Some(decision.reason.to_string());
                line.confidence = Some(rounded(decision.confidence));
                line.unsure = Some(llm::is_unsure(decision, &cfg.classifier));
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
                line.task = Some(decision.task);
                line.complexity = Some(decision.complexity);
                line.classified_by = Some(decision.classified_by);
                line.reason = Some(decision.reason.to_string());
                line.confidence = Some(rounded(decision.confidence));
                line.unsure = Some(llm::is_unsure(decision, &cfg.classifier));
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
    Ok(Exit::of_records(summary.invalid + summary.unroutable))
}

/// A confidence to 4 decimals: an f32 printed as f64 shows noise digits.
fn rounded(c: f32) -> f64 {
    (f64::from(c) * 1e4).round() / 1e4
}
