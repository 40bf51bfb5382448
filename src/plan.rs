//! The planner's core: every record evaluated (parsed, classified, routed, priced) on
//! worker threads, then folded in input order by one owner into a [`PlanSummary`]:
//! per-model and per-task totals, the baseline comparison, and the bad records.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rustc_hash::FxHasher;

use crate::classify::{classify, llm_prompt, wants_llm, Decision};
use crate::config::{Config, ModelId, Tokenizer};
use crate::input::parse::parse_record;
use crate::input::Batch;
use crate::money::Usd;
use crate::record::{Job, Position, Task, Tier};
use crate::report::ReportRow;
use crate::route::{price, route, Route};
use crate::tokens::PromptTokens;

/// One record after evaluation.
pub struct Evaluated {
    pub position: Position,
    /// The record's id: its own, else its line/row number.
    pub id: String,
    /// A hash of the record's bytes: what `run --resume --force` recognises a
    /// finished record by when the input changed and positions moved.
    pub key: u64,
    pub outcome: Outcome,
}

pub enum Outcome {
    /// Finished in an earlier run (`run --resume`): only its id was read, for the
    /// duplicate check; it is not tokenized, classified or priced again.
    Done,
    Invalid(String),
    Unroutable {
        job: Box<Job>,
        decision: Decision,
        tier: Tier,
        prompt_tokens: u64,
        reason: String,
    },
    Routed {
        job: Box<Job>,
        decision: Decision,
        route: Route,
        baseline_cost: Usd,
        /// Input tokens of the `[classifier.llm]` question, when it will be asked.
        classifier_tokens: Option<u64>,
    },
}

/// Evaluates every record of a batch. Pure; runs on worker threads. Positions `done`
/// says are finished only have their id read ([`Outcome::Done`]).
pub fn evaluate_batch(
    batch: Batch,
    cfg: &Config,
    tier: Tier,
    done: &(dyn Fn(u64) -> bool + Sync),
) -> Vec<Evaluated> {
    batch
        .iter()
        .map(|(position, bytes, problem)| {
            let parsed = parse_record(bytes, position.number(), cfg.batch_model);
            let id = parsed.id.unwrap_or_else(|| position.number().to_string());
            let outcome = match parsed.job {
                _ if done(position.number()) => Outcome::Done,
                _ if problem.is_some() => Outcome::Invalid(problem.unwrap_or_default().into()),
                Err(reason) => Outcome::Invalid(reason),
                Ok(job) => {
                    let mut tokens = PromptTokens::default();
                    let prompt_tokens = tokens.bpe(Tokenizer::O200k, &job.messages);
                    let decision = classify(&job, prompt_tokens, &cfg.classifier);
                    match route(cfg, &job, &decision, tier, &mut tokens) {
                        Ok(route) => {
                            let c = route.chosen();
                            let base = &cfg.models[cfg.baseline];
                            let baseline_cost = base.input_price.cost(c.input_tokens)
                                + base.output_price.cost(c.output_tokens);
                            let classifier_tokens = cfg
                                .llm_classifier
                                .filter(|_| wants_llm(&decision, &cfg.classifier))
                                .and_then(|m| {
                                    let q = classifier_question(&job, cfg);
                                    price(cfg, &q, &decision, m, &mut tokens).ok()
                                })
                                .map(|c| c.input_tokens);
                            Outcome::Routed {
                                job: Box::new(job),
                                decision,
                                route,
                                baseline_cost,
                                classifier_tokens,
                            }
                        }
                        Err(reason) => Outcome::Unroutable {
                            tier: crate::route::effective_tier(cfg, &job, &decision, tier),
                            job: Box::new(job),
                            decision,
                            prompt_tokens,
                            reason,
                        },
                    }
                }
            };
            Evaluated {
                position,
                id,
                key: xxhash_rust::xxh3::xxh3_64(bytes),
                outcome,
            }
        })
        .collect()
}

/// Remembers ids to reject duplicates. Keeps a 64-bit hash per id (8 bytes a record,
/// the only memory that grows with the input), not the ids themselves; a false
/// duplicate needs a hash collision, about 1 in 10^7 for a 10M-record file. The
/// hashes are spread over 16 tables, so when one grows (the old and the new table
/// both live for a moment) the transient is a sixteenth of the whole set, not all of it.
#[derive(Default)]
pub struct Dedup {
    shards: [HashSet<u64, BuildHasherDefault<FxHasher>>; 16],
}

impl Dedup {
    /// True the first time an id is seen.
    pub fn first(&mut self, id: &str) -> bool {
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        let hash = h.finish();
        self.shards[(hash >> 60) as usize].insert(hash)
    }
}

#[derive(Debug, Default, Clone)]
pub struct Line {
    pub records: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: Usd,
    pub baseline_cost: Usd,
}

impl Line {
    fn add(&mut self, input: u64, output: u64, cost: Usd, baseline: Usd) {
        self.records += 1;
        self.input_tokens += input;
        self.output_tokens += output;
        self.cost += cost;
        self.baseline_cost += baseline;
    }
}

/// Problems printed in full before the rest are only counted.
pub const SHOWN_PROBLEMS: usize = 50;

/// The whole plan, folded record by record in input order.
#[derive(Debug, Default)]
pub struct PlanSummary {
    pub records: u64,
    pub invalid: u64,
    pub unroutable: u64,
    pub models: BTreeMap<ModelId, Line>,
    pub tasks: BTreeMap<Task, Line>,
    pub total: Line,
    /// Every routed record on its cheapest eligible candidate instead.
    pub cheapest_cost: Usd,
    /// Questions to the `[classifier.llm]` model (part of `total`'s cost).
    pub classifier: Line,
}

/// Output tokens a one-word classifier answer is estimated (and capped) at.
pub const CLASSIFIER_OUTPUT_TOKENS: u64 = 4;

impl PlanSummary {
    /// Folds one record in. Returns the problem to report, if it has one.
    pub fn add(&mut self, e: &Evaluated, dedup: &mut Dedup, cfg: &Config) -> Option<String> {
        self.records += 1;
        if !dedup.first(&e.id) {
            self.invalid += 1;
            return Some(format!(
                "{}: duplicate id '{}' (an earlier record has it)",
                e.position, e.id
            ));
        }
        match &e.outcome {
            Outcome::Done => None,
            Outcome::Invalid(reason) => {
                self.invalid += 1;
                Some(format!("{}: {reason}", e.position))
            }
            Outcome::Unroutable { reason, .. } => {
                self.unroutable += 1;
                Some(format!("{} (id {}): {reason}", e.position, e.id))
            }
            Outcome::Routed {
                decision,
                route,
                baseline_cost,
                classifier_tokens,
                ..
            } => {
                if let (Some(input), Some(m)) = (classifier_tokens, cfg.llm_classifier) {
                    let (m, base) = (&cfg.models[m], &cfg.models[cfg.baseline]);
                    let out = CLASSIFIER_OUTPUT_TOKENS;
                    let cost = m.input_price.cost(*input) + m.output_price.cost(out);
                    let baseline = base.input_price.cost(*input) + base.output_price.cost(out);
                    self.classifier.add(*input, out, cost, baseline);
                    self.total.cost += cost;
                    self.total.baseline_cost += baseline;
                }
                let c = route.chosen();
                self.models.entry(c.model).or_default().add(
                    c.input_tokens,
                    c.output_tokens,
                    c.cost,
                    *baseline_cost,
                );
                self.tasks.entry(decision.task).or_default().add(
                    c.input_tokens,
                    c.output_tokens,
                    c.cost,
                    *baseline_cost,
                );
                self.total
                    .add(c.input_tokens, c.output_tokens, c.cost, *baseline_cost);
                self.cheapest_cost += route.cheapest().cost;
                None
            }
        }
    }

    pub fn savings_pct(&self) -> f64 {
        crate::report::savings_pct(self.total.cost, self.total.baseline_cost)
    }

    /// The per-model report (estimates: `ok` = routed records, no latency).
    pub fn report_rows(&self, cfg: &Config) -> Vec<ReportRow> {
        let classifier = cfg
            .llm_classifier
            .filter(|_| self.classifier.records > 0)
            .map(|m| (m, &self.classifier));
        self.models
            .iter()
            .map(|(id, l)| (*id, l))
            .chain(classifier)
            .map(|(id, l)| ReportRow {
                model: model_label(cfg, id, std::ptr::eq(l, &self.classifier)),
                provider: Some(cfg.models[id].provider.clone()),
                requests: l.records,
                ok: l.records,
                failed: 0,
                escalated: 0,
                input_tokens: l.input_tokens,
                output_tokens: l.output_tokens,
                cost: l.cost,
                baseline_cost: l.baseline_cost,
                ..ReportRow::default()
            })
            .collect()
    }
}

/// The record as the `[classifier.llm]` model is asked about it: one short
/// question carrying the record's tags (so a tagged record's text goes only where
/// the tag is allowed; otherwise the local decision stands).
pub fn classifier_question(job: &Job, cfg: &Config) -> Job {
    Job {
        max_tokens: Some(CLASSIFIER_OUTPUT_TOKENS as u32),
        temperature: Some(0.0),
        tags: job.tags.clone(),
        ..Job::from_prompt(&job.id, &llm_prompt(job, &cfg.classifier))
    }
}

/// A model's name in a report; its classifier questions get their own line.
pub fn model_label(cfg: &Config, id: ModelId, classifier: bool) -> String {
    let name = &cfg.models[id].name;
    if classifier {
        format!("{name} (classifier)")
    } else {
        name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Position;

    #[test]
    fn done_positions_are_read_for_their_id_only_and_still_claim_it() {
        let cfg = Config::embedded();
        let mut batch = Batch::default();
        for (n, line) in [
            r#"{"id":"a","prompt":"Summarize this ticket: the login page times out."}"#,
            r#"{"id":"b","prompt":"Hello there"}"#,
            r#"{"id":"a","prompt":"A later record reusing the id"}"#,
        ]
        .iter()
        .enumerate()
        {
            let start = batch.buf.len();
            batch.buf.extend_from_slice(line.as_bytes());
            batch
                .records
                .push((Position::Line(n as u64 + 1), start..batch.buf.len()));
        }
        let out = evaluate_batch(batch, &cfg, cfg.tier, &|pos| pos == 1);
        assert!(matches!(out[0].outcome, Outcome::Done));
        assert_eq!(out[0].id, "a");
        assert!(matches!(out[1].outcome, Outcome::Routed { .. }));
        assert!(matches!(out[2].outcome, Outcome::Routed { .. }));

        let (mut summary, mut dedup) = (PlanSummary::default(), Dedup::default());
        assert_eq!(summary.add(&out[0], &mut dedup, &cfg), None);
        assert_eq!(summary.add(&out[1], &mut dedup, &cfg), None);
        assert_eq!(
            summary.add(&out[2], &mut dedup, &cfg).as_deref(),
            Some("line 3: duplicate id 'a' (an earlier record has it)")
        );
    }
}
