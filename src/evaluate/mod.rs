//! The front end every command shares: each record of the input evaluated — parsed,
//! classified, routed and priced — on worker threads (`pipeline`), handed on in input
//! order a batch at a time (`stream`), and folded into the plan (`summary`). It reads
//! the input and reports bad records on stderr, nothing else; `plan` and `classify`
//! render what it yields, `run` executes it.

pub mod pipeline;
mod stream;
mod summary;

pub use stream::{evaluate_all, evaluate_batches};
pub use summary::{Dedup, Line, PlanSummary};

use crate::classify::llm;
use crate::classify::{classify, Decision};
use crate::config::{Config, Tokenizer};
use crate::input::parse::parse_record;
use crate::input::Batch;
use crate::money::Usd;
use crate::record::{Job, Position, Tier};
use crate::route::{cacheable_system, classifier_question, route, unsure_question, Route};
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
        /// The local model was unsure of the record ([`llm::is_unsure`]).
        unsure: bool,
        /// Input tokens of the question about it on `[classifier.llm] model`, asked or
        /// not, when it is unsure.
        unsure_tokens: Option<u64>,
        /// Its system prompt, when the chosen model may serve it from a prompt cache:
        /// a hash of the text and its tokens (at least the model's `cache_min_tokens`).
        cacheable: Option<(u64, u64)>,
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
                            let baseline_cost =
                                cfg.models[cfg.baseline].cost(c.input_tokens, c.output_tokens);
                            let unsure = llm::is_unsure(&decision, &cfg.classifier);
                            // The question is another prompt: its own tokens (counted
                            // only for a record it is asked or priced for).
                            let asked = unsure || llm::wants(&decision, &cfg.classifier);
                            let mut question_tokens = asked
                                .then(|| llm::question_o200k(&job, &cfg.classifier, prompt_tokens))
                                .flatten()
                                .map_or_else(PromptTokens::default, PromptTokens::with_o200k);
                            let classifier_tokens =
                                classifier_question(cfg, &job, &decision, &mut question_tokens)
                                    .map(|(_, c)| c.input_tokens);
                            let unsure_tokens = match unsure {
                                false => None,
                                true => classifier_tokens.or_else(|| {
                                    unsure_question(cfg, &job, &decision, &mut question_tokens)
                                        .map(|c| c.input_tokens)
                                }),
                            };
                            let cacheable = cacheable_system(&cfg.models[c.model], &job);
                            Outcome::Routed {
                                cacheable,
                                job: Box::new(job),
                                decision,
                                route,
                                baseline_cost,
                                classifier_tokens,
                                unsure,
                                unsure_tokens,
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
