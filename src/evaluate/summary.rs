//! The plan, folded record by record in input order: per-model and per-task totals,
//! the baseline comparison, the cheapest routing, the LLM classifier's questions, and
//! the bad records (duplicate ids among them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rustc_hash::FxHasher;

use super::{Evaluated, Outcome};
use crate::classify::llm;
use crate::config::{Config, ModelId};
use crate::money::Usd;
use crate::output::reasons::Reasons;
use crate::output::report::{savings_pct, ReportRow};
use crate::output::Status;
use crate::record::Task;
use crate::route::{cache_use, CacheUse};

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
    /// Records the local model was unsure of, and what asking `[classifier.llm] model`
    /// about them costs (whether or not it is asked; when it is, this is part of
    /// `classifier`).
    pub unsure: Line,
    /// Unsure records the LLM classifier cannot be asked about (a tag its provider may
    /// not receive, a prompt too long for it); the local decision stands.
    pub unsure_unaskable: u64,
    /// Why the invalid and unroutable records are.
    pub reasons: Reasons,
    /// With `--history`: the variance of the total (USD²), each record's output
    /// drawn independently from what past answers of its model were.
    pub cost_variance: f64,
    /// What prompt caching is expected to change in the total.
    pub cache: CacheEstimate,
    /// `--via batch|auto`: the records whose model goes through a batch API, at
    /// batch prices (part of `total`), and what they would cost as realtime calls.
    pub batch: Line,
    pub batch_at_realtime: Usd,
    /// Cacheable system prompts met so far, by model and hash (a cache is the
    /// model's): how many records sent each.
    prefixes: HashMap<(ModelId, u64), u32>,
}

/// Records whose system prompt an earlier record of the job already sent (to a model
/// with cache prices, at least its `cache_min_tokens`): those tokens are expected to
/// be served from the cache. On a model whose cache writes cost more (Anthropic) the
/// first repeat writes the cache instead.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheEstimate {
    pub records: u64,
    pub tokens: u64,
    /// Cache reads' discount less the write premium: what the total drops by.
    pub saving: Usd,
    pub premium: Usd,
}

impl PlanSummary {
    /// Folds one record in. Returns the problem to report, if it has one.
    pub fn add(&mut self, e: &Evaluated, dedup: &mut Dedup, cfg: &Config) -> Option<String> {
        self.records += 1;
        if !dedup.first(&e.id) {
            self.invalid += 1;
            self.reasons.add(
                Status::InvalidInput,
                Some("duplicate id (an earlier record has it)"),
            );
            return Some(format!(
                "{}: duplicate id '{}' (an earlier record has it)",
                e.position, e.id
            ));
        }
        match &e.outcome {
            Outcome::Done => None,
            Outcome::Invalid(reason) => {
                self.invalid += 1;
                self.reasons.add(Status::InvalidInput, Some(reason));
                Some(format!("{}: {reason}", e.position))
            }
            Outcome::Unroutable { reason, .. } => {
                self.unroutable += 1;
                self.reasons.add_kind("unroutable", Some(reason));
                Some(format!("{} (id {}): {reason}", e.position, e.id))
            }
            Outcome::Routed {
                decision,
                route,
                baseline_cost,
                classifier_tokens,
                unsure,
                unsure_tokens,
                cacheable,
                ..
            } => {
                if *unsure {
                    match (unsure_tokens, cfg.llm_model) {
                        (Some(input), Some(m)) => {
                            let out = llm::OUTPUT_TOKENS;
                            let cost = cfg.models[m].cost(*input, out);
                            self.unsure.add(*input, out, cost, Usd::ZERO);
                        }
                        _ => {
                            self.unsure.records += 1;
                            self.unsure_unaskable += 1;
                        }
                    }
                }
                if let (Some(input), Some(m)) = (classifier_tokens, cfg.llm_classifier) {
                    let out = llm::OUTPUT_TOKENS;
                    let cost = cfg.models[m].cost(*input, out);
                    let baseline = cfg.models[cfg.baseline].cost(*input, out);
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
                if c.batch {
                    self.batch
                        .add(c.input_tokens, c.output_tokens, c.cost, *baseline_cost);
                    self.batch_at_realtime +=
                        cfg.models[c.model].cost(c.input_tokens, c.output_tokens);
                }
                let priced = cfg.priced(c.model, c.batch);
                let per_token = priced.output_price.usd_per_mtok() / 1e6;
                self.cost_variance += c.output_variance as f64 * per_token * per_token;
                self.cheapest_cost += route.cheapest().cost;
                if let Some((hash, tokens)) = cacheable {
                    self.cached_prefix(cfg, c.model, c.batch, *hash, *tokens);
                }
                None
            }
        }
    }

    /// A routed record whose system prompt (`tokens` long) is cacheable on `model`.
    /// At batch prices when it goes through a batch (the discounts stack).
    fn cached_prefix(&mut self, cfg: &Config, model: ModelId, batch: bool, hash: u64, tokens: u64) {
        let seen = self.prefixes.entry((model, hash)).or_insert(0);
        *seen += 1;
        let m = cfg.priced(model, batch);
        let input = m.input_price.cost(tokens);
        match cache_use(m, *seen) {
            CacheUse::Miss => {}
            CacheUse::Write => {
                let write = m.cache_write_price.unwrap_or(m.input_price);
                self.cache.premium += write.cost(tokens).saturating_sub(input);
            }
            CacheUse::Read => {
                let read = m.cache_read_price.unwrap_or(m.input_price).cost(tokens);
                self.cache.records += 1;
                self.cache.tokens += tokens;
                self.cache.saving += input.saturating_sub(read);
            }
        }
    }

    /// The total with the expected cache discount and write premium.
    pub fn total_with_cache(&self) -> Usd {
        (self.total.cost + self.cache.premium).saturating_sub(self.cache.saving)
    }

    /// The 95th percentile of the total under `--history` (normal approximation of
    /// a sum of many independent answers), in USD.
    pub fn p95_cost_usd(&self) -> f64 {
        self.total.cost.as_f64() + 1.645 * self.cost_variance.sqrt()
    }

    pub fn savings_pct(&self) -> f64 {
        savings_pct(self.total.cost, self.total.baseline_cost)
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
                model: match std::ptr::eq(l, &self.classifier) {
                    true => llm::report_label(&cfg.models[id].name),
                    false => cfg.models[id].name.clone(),
                },
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
