//! The router: a classified record + its tier -> the ordered candidates that may
//! answer it, each priced. Pure. Eligibility: the prompt plus the output fits the
//! context window, `max_tokens` fits the model's output cap, the provider is allowed
//! every tag on the record, and the expected cost fits `max_cost_usd` (the run's budget
//! is the gate's to check, at send time). No eligible candidate is a reason, not a
//! panic.

use crate::classify::{llm, Decision};
use crate::config::{Config, ModelId};
use crate::money::Usd;
use crate::record::{Complexity, Job, Tier};
use crate::tokens::PromptTokens;

/// A model that may answer the record, with its price for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub model: ModelId,
    pub input_tokens: u64,
    /// Expected output tokens: with `plan --history`, what past answers of the model
    /// (or the task) averaged, within `max_tokens`; else the record's `max_tokens`,
    /// else the task default; capped by the model's output limit.
    pub output_tokens: u64,
    /// The variance of that (tokens², from history; 0 without).
    pub output_variance: u64,
    /// input × input price + expected output × output price.
    pub cost: Usd,
    /// input × input price + the most output the request allows × output price:
    /// what a run reserves against the budget before sending.
    pub worst_cost: Usd,
    /// Sent through the provider's batch API (`--via batch|auto`): both costs are
    /// at the model's batch prices.
    pub batch: bool,
}

impl Candidate {
    /// This candidate sent as a realtime call: priced at the model's list prices.
    /// (The classifier's question, and a batch record's fallbacks, escalations and
    /// retries, are realtime.)
    pub fn realtime(mut self, cfg: &Config, job: &Job) -> Candidate {
        if self.batch {
            let m = &cfg.models[self.model];
            self.batch = false;
            self.cost = m.cost(self.input_tokens, self.output_tokens);
            self.worst_cost = m.cost(self.input_tokens, worst_output(m, job));
        }
        self
    }
}

/// The most output a request of `job` to `m` can answer: its `max_tokens`, else the
/// model's output limit.
pub fn worst_output(m: &crate::config::Model, job: &Job) -> u64 {
    job.max_tokens
        .map_or(u64::from(m.max_output_tokens), u64::from)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The tier whose list was used (after a `complex` upgrade).
    pub tier: Tier,
    /// Eligible candidates, in the route's order of preference.
    pub candidates: Vec<Candidate>,
}

impl Route {
    pub fn chosen(&self) -> &Candidate {
        &self.candidates[0]
    }

    /// The cheapest eligible candidate (the plan's "cheapest eligible routing").
    pub fn cheapest(&self) -> &Candidate {
        self.candidates
            .iter()
            .min_by_key(|c| c.cost)
            .expect("a route has candidates")
    }
}

/// The tier a record uses: its own, else the run's; `complex` records go one up.
pub fn effective_tier(cfg: &Config, job: &Job, decision: &Decision, run_tier: Tier) -> Tier {
    let tier = job.tier.unwrap_or(run_tier);
    if cfg.complex_upgrades_tier && decision.complexity == Complexity::Complex && job.tier.is_none()
    {
        tier.next_up()
    } else {
        tier
    }
}

/// The record's system prompt as a prefix `model` may serve from its prompt cache —
/// a hash of the text and its tokens — when the model has a cache read price and the
/// prompt reaches its `cache_min_tokens` (a text shorter in bytes is not counted).
pub fn cacheable_system(m: &crate::config::Model, job: &Job) -> Option<(u64, u64)> {
    m.cache_read_price?;
    let bytes: usize = job.system_text().map(str::len).sum();
    if job.system_text().next().is_none() || (bytes as u64) < m.cache_min_tokens {
        return None;
    }
    let text = job.system_text().collect::<Vec<_>>().join("\n\n");
    let tokens = (crate::tokens::count_text(m.tokenizer, &text) as f64 * m.token_factor) as u64;
    (tokens >= m.cache_min_tokens).then(|| (xxhash_rust::xxh3::xxh3_64(text.as_bytes()), tokens))
}

/// A hash of the record's system prompt (its parts joined by blank lines, as
/// [`cacheable_system`] hashes it), or `None` without one. Nothing is copied.
pub fn system_hash(job: &Job) -> Option<u64> {
    let mut parts = job.system_text();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(parts.next()?.as_bytes());
    for p in parts {
        h.update(b"\n\n");
        h.update(p.as_bytes());
    }
    Some(h.digest())
}

/// What a provider's prompt cache does for the `nth` record (from 1) that sends the
/// same cacheable prefix to model `m` — the one rule `plan`, the simulator and the
/// requests share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The first sender: nothing cached yet.
    Miss,
    /// On a model whose cache writes cost more than input (Anthropic, which caches
    /// only what a request marks), the second sender writes it.
    Write,
    /// Every later sender reads it.
    Read,
}

pub fn cache_use(m: &crate::config::Model, nth: u32) -> CacheUse {
    match (nth, m.cache_write_price) {
        (0 | 1, _) => CacheUse::Miss,
        (2, Some(write)) if write > m.input_price => CacheUse::Write,
        _ => CacheUse::Read,
    }
}

/// Prices one model for one record, or says why it cannot take it.
pub fn price(
    cfg: &Config,
    job: &Job,
    decision: &Decision,
    model: ModelId,
    tokens: &mut PromptTokens,
) -> Result<Candidate, String> {
    let m = &cfg.models[model];
    let input = tokens.for_model(m, &job.messages);
    let cap = u64::from(m.max_output_tokens);
    let output = match job.max_tokens {
        Some(t) if u64::from(t) > cap => {
            return Err(format!(
                "{}: max_tokens {t} exceeds its output limit {cap}",
                m.name
            ))
        }
        Some(t) => u64::from(t),
        None => u64::from(cfg.output_tokens[&decision.task]).min(cap),
    };
    if input + output > m.context_window {
        return Err(format!(
            "{}: {input} prompt + {output} output tokens exceed its {} context",
            m.name, m.context_window
        ));
    }
    let provider = cfg.provider_of(model);
    if let Some(tag) = job.tags.iter().find(|t| !provider.allowed_tags.contains(t)) {
        return Err(format!(
            "{}: provider {} is not allowed tag '{tag}'",
            m.name, m.provider
        ));
    }
    let learned = cfg
        .output_history
        .as_ref()
        .and_then(|h| h.expected(decision.task, model));
    let (output, output_variance) = match learned {
        // The limit still bounds what a call can answer.
        Some(e) => (
            e.tokens.min(job.max_tokens.map_or(cap, u64::from)).max(1),
            e.variance.round() as u64,
        ),
        None => (output, 0),
    };
    let worst_output = worst_output(m, job);
    let batch = cfg.via_batch(model);
    let priced = cfg.priced(model, batch);
    let cost = priced.cost(input, output);
    let worst_cost = priced.cost(input, worst_output);
    if let Some(limit) = job.max_cost {
        if cost > limit {
            return Err(format!(
                "{}: expected cost {cost} exceeds max_cost_usd {limit}",
                m.name
            ));
        }
    }
    Ok(Candidate {
        model,
        input_tokens: input,
        output_tokens: output,
        output_variance,
        cost,
        worst_cost,
        batch,
    })
}

/// The `[classifier.llm]` question about `job` and its price on the classifier's
/// model, when that model is to be asked and can take it.
pub fn classifier_question(
    cfg: &Config,
    job: &Job,
    decision: &Decision,
    tokens: &mut PromptTokens,
) -> Option<(Job, Candidate)> {
    let model = cfg
        .llm_classifier
        .filter(|_| llm::wants(decision, &cfg.classifier))?;
    let q = llm::question(job, &cfg.classifier);
    let c = price(cfg, &q, decision, model, tokens)
        .ok()?
        .realtime(cfg, &q);
    Some((q, c))
}

/// The `[classifier.llm]` question about a record the local model is unsure of,
/// priced on `[classifier.llm] model` whether or not the LLM classifier is on: what
/// asking about it costs.
pub fn unsure_question(
    cfg: &Config,
    job: &Job,
    decision: &Decision,
    tokens: &mut PromptTokens,
) -> Option<Candidate> {
    let model = cfg
        .llm_model
        .filter(|_| llm::is_unsure(decision, &cfg.classifier))?;
    let q = llm::question(job, &cfg.classifier);
    let c = price(cfg, &q, decision, model, tokens).ok()?;
    Some(c.realtime(cfg, &q))
}

/// Routes a record: the candidates of its task × tier (or its pinned model) that are
/// eligible, or why none is.
pub fn route(
    cfg: &Config,
    job: &Job,
    decision: &Decision,
    run_tier: Tier,
    tokens: &mut PromptTokens,
) -> Result<Route, String> {
    let tier = effective_tier(cfg, job, decision, run_tier);
    let pinned;
    let list: &[ModelId] = match &job.model {
        Some(name) => {
            pinned = [cfg
                .model_id(name)
                .ok_or_else(|| format!("pinned model '{name}' is not in the catalog"))?];
            &pinned
        }
        None => cfg.route(decision.task, tier),
    };
    let mut candidates = Vec::with_capacity(list.len());
    let mut rejected = Vec::new();
    for &id in list {
        match price(cfg, job, decision, id, tokens) {
            Ok(c) => candidates.push(c),
            Err(why) => rejected.push(why),
        }
    }
    if candidates.is_empty() {
        let what = match &job.model {
            Some(_) => "pinned model".to_string(),
            None => format!("{}/{tier}", decision.task),
        };
        return Err(format!(
            "no eligible model for {what}: {}",
            rejected.join("; ")
        ));
    }
    Ok(Route { tier, candidates })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{ClassifiedBy, Reason};
    use crate::record::Task;

    fn job(text: &str) -> Job {
        Job {
            max_tokens: Some(100),
            ..Job::from_prompt("1", text)
        }
    }

    fn decision(task: Task, complexity: Complexity) -> Decision {
        Decision {
            task,
            complexity,
            classified_by: ClassifiedBy::Explicit,
            reason: Reason::Explicit,
            confidence: 1.0,
        }
    }

    #[test]
    fn prices_exactly() {
        let cfg = Config::embedded();
        let j = job("hello world"); // 9 prompt tokens with chat overhead
        let r = route(
            &cfg,
            &j,
            &decision(Task::Summarization, Complexity::Simple),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap();
        let c = r.chosen();
        assert_eq!(cfg.models[c.model].name, "deepseek-v4-flash");
        assert_eq!((c.input_tokens, c.output_tokens), (9, 100));
        // 9 × $0.14/M + 100 × $0.28/M = $0.00000126 + $0.000028
        assert_eq!(c.cost.exact(), "0.000029260000");
    }

    #[test]
    fn tags_exclude_providers() {
        let cfg = Config::embedded();
        let mut j = job("summarize this");
        j.tags = vec!["pii".into()];
        let r = route(
            &cfg,
            &j,
            &decision(Task::Summarization, Complexity::Simple),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap();
        assert!(r.candidates.iter().all(|c| cfg
            .provider_of(c.model)
            .allowed_tags
            .contains(&"pii".to_string())));
        assert_eq!(cfg.models[r.chosen().model].name, "gpt-4o-mini");
        j.tags = vec!["secret".into()];
        let err = route(
            &cfg,
            &j,
            &decision(Task::Summarization, Complexity::Simple),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap_err();
        assert!(err.starts_with("no eligible model for summarization/balanced: deepseek-v4-flash: provider deepseek is not allowed tag 'secret'"), "{err}");
    }

    #[test]
    fn complex_goes_up_a_tier_and_max_cost_filters() {
        let cfg = Config::embedded();
        let j = job("x");
        let r = route(
            &cfg,
            &j,
            &decision(Task::Code, Complexity::Complex),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap();
        assert_eq!(r.tier, Tier::Quality);
        let mut j = job("x");
        j.max_cost = Some(Usd::parse("0.0005").unwrap());
        let r = route(
            &cfg,
            &j,
            &decision(Task::Code, Complexity::Moderate),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap();
        // gpt-4o at 100 output tokens costs $0.001+: filtered; deepseek-v4-pro stays.
        assert_eq!(r.candidates.len(), 1);
        assert_eq!(cfg.models[r.chosen().model].name, "deepseek-v4-pro");
    }

    #[test]
    fn context_window_restricts() {
        let cfg = Config::embedded();
        let mut j = job("x");
        j.max_tokens = None;
        j.model = Some("glm-4v".into());
        j.messages[0].text = "word ".repeat(9000);
        let err = route(
            &cfg,
            &j,
            &decision(Task::Vision, Complexity::Simple),
            Tier::Balanced,
            &mut PromptTokens::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("glm-4v: 9008 prompt + 300 output tokens exceed its 8192 context"),
            "{err}"
        );
    }
}
