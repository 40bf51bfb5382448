//! Before the first request: can the providers this job needs take requests at all?
//! A provider whose key variable is unset, or whose URL may not be used, would fail
//! every record sent to it. When no catalog model can be used — or, for an input
//! file, no routed record has a usable model — the run does not start (exit 2, the
//! variables named). When only some cannot, the run says once
//! which, and — for an input file — how many records that leaves with no model, or
//! with fewer fallbacks, then goes on.

use std::ops::ControlFlow;

use anyhow::{bail, Result};

use crate::config::{Config, ModelId};
use crate::evaluate::{evaluate_batch, pipeline, Outcome};
use crate::input::Input;
use crate::money::group_thousands;
use crate::provider::http::unusable;

/// Checks the providers of the models the job's routes list; `Err` (exit 2) when
/// the job cannot send a single request.
pub(super) fn check(cfg: &Config, input: &Input) -> Result<()> {
    // By provider index: why it cannot be used.
    let why: Vec<Option<String>> = cfg
        .providers
        .iter()
        .map(|(name, p)| unusable(name, p))
        .collect();
    let blocked = |m: ModelId| cfg.provider_index(m).is_some_and(|p| why[p].is_some());
    let routed = cfg.routed_models();
    let mut names: Vec<usize> = routed
        .iter()
        .filter_map(|&m| cfg.provider_index(m))
        .collect();
    names.sort_unstable();
    names.dedup();
    let bad: Vec<usize> = names.into_iter().filter(|&p| why[p].is_some()).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let listed = bad
        .iter()
        .filter_map(|&p| why[p].as_deref())
        .map(|why| format!("\n  {why}"))
        .collect::<String>();
    // Records may pin any catalog model: only when none can be used is it certain
    // without reading the input.
    if routed.iter().all(|&m| blocked(m)) && (0..cfg.models.len()).all(blocked) {
        bail!("{}", nothing_can_run(cfg, &bad, &listed));
    }
    let n = bad.len();
    let Input::File(_) = input else {
        crate::note!(
            "warning: {n} of the job's providers cannot be used; records routed to their models fall back to other models, or fail:{listed}"
        );
        return Ok(());
    };
    let counts = count(cfg, input, &blocked)?;
    if counts.routed > 0 && counts.stranded == counts.routed {
        bail!("{}", nothing_can_run(cfg, &bad, &listed));
    }
    crate::note!(
        "warning: {n} of the job's providers cannot be used; of {} routed records, {} have no other model and will fail, {} more lose a fallback:{listed}",
        group_thousands(counts.routed),
        group_thousands(counts.stranded),
        group_thousands(counts.fewer),
    );
    Ok(())
}

/// The exit-2 message: what to set, and the way to try the job without keys.
fn nothing_can_run(cfg: &Config, bad: &[usize], listed: &str) -> String {
    let vars: Vec<&str> = bad
        .iter()
        .filter_map(|&p| cfg.providers.values().nth(p))
        .filter_map(|p| p.api_key_env.as_deref())
        .filter(|v| std::env::var(v).map_or(true, |k| k.is_empty()))
        .collect();
    let set = match vars.len() {
        0 => "fix the provider config".to_string(),
        1 => format!("set {}", vars[0]),
        _ => format!("set one of {}", vars.join(", ")),
    };
    format!(
        "no model this job routes to can be used; {set}, or add --simulate to try the job without requests or spend:{listed}"
    )
}

#[derive(Default)]
struct Counts {
    routed: u64,
    /// Routed records none of whose candidates can be used.
    stranded: u64,
    /// Routed records that lose some candidates, not all.
    fewer: u64,
}

/// Reads the input once, as `plan` does, counting what the unusable providers cost.
fn count(
    cfg: &Config,
    input: &Input,
    blocked: &(dyn Fn(ModelId) -> bool + Sync),
) -> Result<Counts> {
    let source = input.open(cfg.max_line_bytes)?;
    let mut total = Counts::default();
    pipeline::ordered_map(
        source,
        pipeline::default_workers(),
        |batch| {
            let mut c = Counts::default();
            for e in evaluate_batch(batch, cfg, cfg.tier, &|_| false) {
                let Outcome::Routed { route, .. } = e.outcome else {
                    continue;
                };
                let lost = route.candidates.iter().filter(|c| blocked(c.model)).count();
                c.routed += 1;
                c.stranded += u64::from(lost == route.candidates.len());
                c.fewer += u64::from(lost > 0 && lost < route.candidates.len());
            }
            c
        },
        |c| {
            total.routed += c.routed;
            total.stranded += c.stranded;
            total.fewer += c.fewer;
            Ok(ControlFlow::Continue(()))
        },
    )?;
    Ok(total)
}
