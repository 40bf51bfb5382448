//! Configuration: the embedded default (`default.toml`: the seeds' prices and routing
//! matrix, and every default) layered with `--config FILE` field by field, then a
//! LiteLLM price import, then flags (clap maps `SWITCHYARD_*` variables onto flags).
//! Produces a validated [`Config`] whose catalog the router and pricer index by
//! number. No I/O beyond reading files.

pub mod history;
mod litellm;
mod raw;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::classify::model::TaskModel;
use crate::money::{PerMtok, Usd};
use crate::record::{word_enum, Task, Tier};
use litellm::LitellmPrices;
pub use raw::DEFAULT_TOML;
use raw::{Layers, RawConfig, RawModel};

/// A provider endpoint: how to reach it and what it may receive.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Provider {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub allowed_tags: Vec<String>,
    /// Permit plain `http://` to a non-loopback host.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Send OpenAI's `prompt_cache_key` (one per system prompt), so requests that
    /// share a prefix reach the same cache.
    #[serde(default)]
    pub prompt_cache_key: bool,
    /// The provider has a batch API (OpenAI Batch, Anthropic Message Batches) that
    /// `run --via batch|auto` may use.
    #[serde(default)]
    pub batch: bool,
    /// What one batch may hold: requests, bytes of its input, and prompt tokens
    /// enqueued at once for one model (the provider's enqueued-token limit, which
    /// also bounds the batches in progress together). Unset: the provider's
    /// documented limits (OpenAI 50,000 requests / 200 MB, Anthropic 100,000 /
    /// 256 MB) and no token limit.
    #[serde(default)]
    pub batch_max_requests: Option<usize>,
    #[serde(default)]
    pub batch_max_bytes: Option<usize>,
    #[serde(default)]
    pub batch_max_tokens: Option<u64>,
}

impl Provider {
    /// Requests and bytes one batch may hold.
    pub fn batch_limits(&self) -> (usize, usize) {
        let (requests, bytes) = match self.kind {
            ProviderKind::Openai => (50_000, 200 << 20),
            ProviderKind::Anthropic => (100_000, 256 << 20),
        };
        (
            self.batch_max_requests.unwrap_or(requests).max(1),
            self.batch_max_bytes.unwrap_or(bytes).max(1),
        )
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    #[default]
    O200k,
    Cl100k,
}

/// Where a model's price came from, shown by `switchyard models`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceSource {
    Default,
    Config,
    Litellm,
}

impl PriceSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Default => "default",
            PriceSource::Config => "config",
            PriceSource::Litellm => "litellm",
        }
    }
}

/// A model in the catalog, with exact prices.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub provider: String,
    /// The name sent to the provider's API (defaults to `name`).
    pub api_model: String,
    pub input_price: PerMtok,
    pub output_price: PerMtok,
    /// Prompt tokens served from the provider's cache; `None`: charged as input.
    pub cache_read_price: Option<PerMtok>,
    /// Prompt tokens written to the provider's cache (Anthropic bills 1.25× input);
    /// `None`: charged as input.
    pub cache_write_price: Option<PerMtok>,
    /// The shortest prompt prefix the provider caches (Anthropic: 1,024 tokens on
    /// Sonnet); a shorter system prompt is not marked for caching.
    pub cache_min_tokens: u64,
    /// Prices through the provider's batch API (`batch_input_per_mtok`,
    /// `batch_output_per_mtok`; half the list price when neither the config nor the
    /// LiteLLM catalog says).
    pub batch_input_price: PerMtok,
    pub batch_output_price: PerMtok,
    pub context_window: u64,
    pub max_output_tokens: u32,
    pub tokenizer: Tokenizer,
    /// Multiplies the BPE count, for providers whose tokenizer is not OpenAI's.
    pub token_factor: f64,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub price_source: PriceSource,
}

impl Model {
    /// This model as its provider's batch API bills it: batch input and output
    /// prices, and cache reads and writes discounted as input is (the discounts
    /// stack; a batch's cached tokens are not charged at the full batch rate).
    pub fn at_batch_prices(&self) -> Model {
        let scale = |p: PerMtok| p.scaled(self.batch_input_price, self.input_price);
        Model {
            input_price: self.batch_input_price,
            output_price: self.batch_output_price,
            cache_read_price: self.cache_read_price.map(scale),
            cache_write_price: self.cache_write_price.map(scale),
            ..self.clone()
        }
    }

    /// What `input` prompt tokens and `output` completion tokens cost on this model:
    /// each count times its price, never a sum of per-token prices.
    pub fn cost(&self, input: u64, output: u64) -> Usd {
        self.input_price.cost(input) + self.output_price.cost(output)
    }

    /// What a call is billed, by the usage its provider reported: `input` counts every
    /// prompt token; of them `cache_read` came from the prompt cache and `cache_write`
    /// were written to it, each at its own price (the input price when the model has
    /// none, so a cache is never assumed cheaper than it is).
    pub fn charge(&self, input: u64, cache_read: u64, cache_write: u64, output: u64) -> Usd {
        let read = cache_read.min(input);
        let write = cache_write.min(input - read);
        let fresh = input - read - write;
        self.input_price.cost(fresh)
            + self.cache_read_price.unwrap_or(self.input_price).cost(read)
            + self
                .cache_write_price
                .unwrap_or(self.input_price)
                .cost(write)
            + self.output_price.cost(output)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchModel {
    Pin,
    Route,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClassifierConfig {
    pub long_context_tokens: u64,
    pub max_turns: usize,
    /// `[classifier] model`: a model file made by `switchyard train` (relative to the
    /// config file), instead of the built-in one.
    #[serde(rename = "model", default)]
    pub model_file: Option<PathBuf>,
    /// The local model in use: `--classifier`, else `model_file`, else the built-in.
    #[serde(skip)]
    pub model: Option<Arc<TaskModel>>,
    pub llm: LlmClassifierConfig,
}

/// Which records the LLM classifier sees.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LlmScope {
    /// Records the local classifier was unsure of (its confidence is low).
    Unsure,
    All,
}

/// `[classifier.llm]`: a cheap model asked for one word (seed 003); see
/// `classify::llm` for what it does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlmClassifierConfig {
    pub enabled: bool,
    pub model: String,
    pub scope: LlmScope,
    /// A local decision whose confidence is below this is unsure; without it, the
    /// threshold the local model was calibrated with.
    #[serde(default)]
    pub min_confidence: Option<f32>,
    /// How much of the record's last user message the classifier is shown.
    pub max_prompt_chars: usize,
}

/// The simulated provider of `run --simulate`: latency and injected faults, so a
/// rehearsal exercises budgets, retries and limits. Rates are fractions of attempts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SimulateConfig {
    pub latency_ms: u64,
    pub rate_429: f64,
    pub rate_5xx: f64,
    pub rate_timeout: f64,
    /// Answers that are cut short (`finish_reason = length`), to exercise escalation.
    pub rate_truncated: f64,
    pub seed: u64,
    /// Answer lengths: log-normal per task around this median (tokens)…
    pub output_tokens: BTreeMap<Task, u32>,
    /// …with this sigma (of the natural log).
    pub output_sigma: f64,
}

/// How `run` executes: concurrency, the budget policy, retries, escalations,
/// breakers, the journal, the drain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RunConfig {
    /// Records in flight at once (`--concurrency` overrides).
    pub concurrency: usize,
    /// `--on-budget` overrides.
    pub on_budget: OnBudget,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_delay_ms: u64,
    pub max_escalations: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown_s: u64,
    /// A 429 asking to wait longer than this opens the model's breaker instead of
    /// pausing it.
    pub max_retry_after_s: u64,
    /// The journal is fdatasync'ed at most this often (0: after every line).
    pub journal_sync_ms: u64,
    /// After Ctrl-C/SIGTERM, how long in-flight records may take to finish.
    pub drain_timeout_s: u64,
    /// Records in a row that failed the same lasting way before the run stops
    /// starting more (0: never).
    pub stop_after_same_failures: u32,
    /// `--via`: realtime calls, the providers' batch APIs, or batch where available.
    pub via: Via,
    /// A batch's first status check waits this long; later ones back off (doubling)
    /// up to `batch_poll_max_ms`.
    pub batch_poll_ms: u64,
    pub batch_poll_max_ms: u64,
    /// A model's batch is submitted once no record joined it for this long (or it is
    /// full).
    pub batch_linger_ms: u64,
    /// Records waiting on batches at once (each holds its request in memory).
    pub batch_max_pending: usize,
    /// Where expired, cancelled and retryable failed batch lines go: realtime calls
    /// or a new batch.
    pub batch_retry: BatchRetry,
}

/// `[ledger]`: the shared budget and rate limits of `run --ledger`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LedgerConfig {
    /// `--ledger` (env `SWITCHYARD_LEDGER`) overrides; empty: none.
    #[serde(default)]
    pub url: String,
    /// A process's claim on the budget lives this long unless renewed (a killed
    /// process's claim returns to the budget after it).
    pub lease_s: u64,
    /// After the ledger becomes unreachable mid-run, how long to wait for it before
    /// stopping (resumably).
    pub reconnect_s: u64,
    /// A process claims budget in blocks of this share of it (or what one request
    /// needs, if more).
    pub block_share: f64,
}

word_enum!(
    /// How `run` sends requests (`--via`, `[run] via`).
    Via {
        Realtime = "realtime",
        Batch = "batch",
        Auto = "auto",
    }
);

word_enum!(
    /// Where a batch line that did not get an answer goes next (`[run] batch_retry`).
    BatchRetry {
        Realtime = "realtime",
        Batch = "batch",
    }
);

/// `[checks]`: which escalation checks run on every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ChecksConfig {
    pub empty: bool,
    pub truncated: bool,
    pub refusal: bool,
    pub code_stub: bool,
    pub hedging: bool,
    pub labels: bool,
    pub json: bool,
}

word_enum!(
    /// What `run` does with a record whose worst case no longer fits the budget:
    /// use the cheapest later candidate that fits (`downgrade`), mark it
    /// `skipped_budget` (`skip`), or finish what is in flight and mark the rest
    /// `skipped_budget`, exit 3 (`stop`).
    OnBudget {
        Downgrade = "downgrade",
        Skip = "skip",
        Stop = "stop",
    }
);

/// Index of a model in [`Config::models`].
pub type ModelId = usize;

/// The validated, resolved configuration every stage reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub tier: Tier,
    pub baseline: ModelId,
    pub output_tokens: BTreeMap<Task, u32>,
    pub complex_upgrades_tier: bool,
    pub classifier: ClassifierConfig,
    /// The LLM classifier's model, when `[classifier.llm] enabled`.
    pub llm_classifier: Option<ModelId>,
    /// `[classifier.llm] model` whether or not it is enabled: `plan` prices asking it
    /// about the unsure records with it.
    pub llm_model: Option<ModelId>,
    pub batch_model: BatchModel,
    /// A JSONL line longer than this is an invalid record, not read into memory.
    pub max_line_bytes: u64,
    pub simulate: SimulateConfig,
    pub run: RunConfig,
    pub checks: ChecksConfig,
    pub ledger: LedgerConfig,
    pub providers: BTreeMap<String, Provider>,
    pub models: Vec<Model>,
    /// Each model as its provider's batch API bills it ([`Model::at_batch_prices`]).
    pub batch_priced: Vec<Model>,
    /// `routes[task][tier]`: candidate models in order of preference.
    routes: BTreeMap<(Task, Tier), Vec<ModelId>>,
    /// Warnings found while loading (unknown keys), for the caller to print.
    pub warnings: Vec<String>,
    /// `plan --history`: output tokens learned from past runs.
    pub output_history: Option<Arc<history::OutputHistory>>,
}

/// What the command line (and environment, via clap) says about config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub prices_file: Option<PathBuf>,
    pub tier: Option<Tier>,
    pub baseline: Option<String>,
    /// `--classifier FILE`: a local classifier model instead of the configured one.
    pub classifier: Option<PathBuf>,
}

impl Config {
    /// The embedded default alone.
    pub fn embedded() -> Config {
        Config::load(&Overrides::default()).expect("embedded default config is valid")
    }

    /// The layers read and merged, the prices imported, the catalog and routes
    /// resolved by name to indexes, the flags applied.
    pub fn load(over: &Overrides) -> Result<Config> {
        let layers = Layers::read(over.config_file.as_deref())?;
        let mut warnings = Vec::new();
        let raw = layers.deserialize(&mut warnings)?;
        let litellm = match prices_file(over, &raw) {
            Some(p) => Some(LitellmPrices::read(&p)?),
            None => None,
        };
        let origin = &layers.origin;
        let models = raw
            .models
            .iter()
            .map(|(name, m)| build_model(name, m, &raw, &layers, litellm.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let index = |name: &str| models.iter().position(|m| m.name == name);
        let routes = build_routes(&raw, origin, index)?;
        let baseline_name = over.baseline.clone().unwrap_or(raw.defaults.baseline);
        let baseline = index(&baseline_name).with_context(|| {
            format!(
                "baseline model `{baseline_name}` is not in the catalog (see `switchyard models`)"
            )
        })?;
        let mut classifier = raw.classifier;
        classifier.model = Some(match classifier_file(over, &classifier) {
            Some(path) => Arc::new(TaskModel::load(&path)?),
            None => TaskModel::embedded(),
        });
        let sigma = raw.simulate.output_sigma;
        if !(0.0..=3.0).contains(&sigma) {
            bail!("config {origin}: [simulate] output_sigma must be between 0 and 3, got {sigma}");
        }
        let llm = &classifier.llm;
        let llm_classifier = match llm.enabled {
            false => None,
            true => Some(index(&llm.model).with_context(|| {
                format!(
                    "[classifier.llm] model `{}` is not in the catalog (see `switchyard models`)",
                    llm.model
                )
            })?),
        };
        Ok(Config {
            batch_priced: models.iter().map(Model::at_batch_prices).collect(),
            llm_classifier,
            llm_model: index(&llm.model),
            tier: over.tier.unwrap_or(raw.defaults.tier),
            baseline,
            output_tokens: raw.defaults.output_tokens,
            complex_upgrades_tier: raw.routing.complex_upgrades_tier,
            classifier,
            batch_model: raw.input.batch_model,
            max_line_bytes: raw.input.max_line_bytes,
            simulate: raw.simulate,
            run: raw.run,
            checks: raw.checks,
            ledger: raw.ledger,
            providers: raw.providers,
            models,
            routes,
            warnings,
            output_history: None,
        })
    }

    pub fn route(&self, task: Task, tier: Tier) -> &[ModelId] {
        &self.routes[&(task, tier)]
    }

    /// Every model some route lists, in id order.
    pub fn routed_models(&self) -> Vec<ModelId> {
        let mut ids: Vec<ModelId> = self.routes.values().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn model_id(&self, name: &str) -> Option<ModelId> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Whether requests to `model` go through its provider's batch API: `--via
    /// batch|auto` and a provider with `batch = true`.
    pub fn via_batch(&self, model: ModelId) -> bool {
        self.run.via != Via::Realtime && self.provider_of(model).batch
    }

    /// `model` at its batch prices (`batch`) or its list prices.
    pub fn priced(&self, model: ModelId, batch: bool) -> &Model {
        match batch {
            true => &self.batch_priced[model],
            false => &self.models[model],
        }
    }

    pub fn provider_of(&self, model: ModelId) -> &Provider {
        &self.providers[&self.models[model].provider]
    }

    /// The position of `model`'s provider in `providers` (name order), for tables
    /// indexed by provider; `None` only for a config that skipped validation.
    pub fn provider_index(&self, model: ModelId) -> Option<usize> {
        let name = &self.models[model].provider;
        self.providers.keys().position(|p| p == name)
    }

    /// The parts of the config that decide what a record gets, and what it costs, each
    /// as a canonical text: a resumed run compares them with the journal's. Limits,
    /// timeouts, URLs and retry settings may change between resumes; these may not.
    pub fn decision_parts(&self) -> Vec<(&'static str, String)> {
        let name = |id: &ModelId| self.models[*id].name.as_str();
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|(k, ids)| (k, ids.iter().map(name).collect::<Vec<_>>()))
            .collect();
        let models: Vec<_> = self
            .models
            .iter()
            .map(|m| {
                let p = &self.providers[&m.provider];
                format!(
                    "{} {} {} {} {:?} {} {} {:?} {:?} {:?}",
                    m.name,
                    m.api_model,
                    m.input_price.usd_per_mtok(),
                    m.output_price.usd_per_mtok(),
                    (m.context_window, m.max_output_tokens),
                    m.provider,
                    m.token_factor,
                    m.tokenizer,
                    p.kind,
                    p.allowed_tags,
                )
            })
            .collect();
        vec![
            (
                "tier and routes",
                format!(
                    "{:?} {:?} {} {:?}",
                    self.tier, routes, self.complex_upgrades_tier, self.output_tokens
                ),
            ),
            ("models and prices", models.join("\n")),
            (
                "classifier",
                format!("{:?} {:?}", self.classifier, self.batch_model),
            ),
        ]
    }
}

/// The local classifier model to load: `--classifier`, else `[classifier] model`
/// (relative to the config file that names it).
fn classifier_file(over: &Overrides, c: &ClassifierConfig) -> Option<PathBuf> {
    over.classifier
        .clone()
        .or_else(|| c.model_file.as_deref().map(|p| beside_config(over, p)))
}

/// A path the config file names: relative paths are relative to that file.
fn beside_config(over: &Overrides, p: &Path) -> PathBuf {
    match &over.config_file {
        Some(cfg) if p.is_relative() => cfg.parent().unwrap_or(Path::new(".")).join(p),
        _ => p.to_path_buf(),
    }
}

/// The LiteLLM catalog to import: `--prices`, else `[defaults] prices` (relative to
/// the config file that names it).
fn prices_file(over: &Overrides, raw: &RawConfig) -> Option<PathBuf> {
    over.prices_file.clone().or_else(|| {
        raw.defaults
            .prices
            .as_deref()
            .map(|p| beside_config(over, p))
    })
}

/// One catalog entry, its prices by precedence: the user's file, then the LiteLLM
/// import, then the embedded default.
fn build_model(
    name: &str,
    m: &RawModel,
    raw: &RawConfig,
    layers: &Layers,
    litellm: Option<&LitellmPrices>,
) -> Result<Model> {
    let origin = &layers.origin;
    if !raw.providers.contains_key(&m.provider) {
        bail!(
            "config {origin}: model `{name}` names unknown provider `{}`",
            m.provider
        );
    }
    let user_sets = |key: &str| layers.user_sets(name, key);
    let mut source = if user_sets("input_per_mtok") || user_sets("output_per_mtok") {
        PriceSource::Config
    } else {
        PriceSource::Default
    };
    let (mut input, mut output) = (m.input_per_mtok, m.output_per_mtok);
    let (mut cache_read, mut cache_write) = (m.cache_read_per_mtok, m.cache_write_per_mtok);
    let (mut batch_in, mut batch_out) = (m.batch_input_per_mtok, m.batch_output_per_mtok);
    let (mut context, mut max_out) = (m.context_window, m.max_output_tokens);
    let entry = litellm.and_then(|l| {
        l.find(
            name,
            m.litellm_name.as_deref(),
            m.api_model.as_deref(),
            &m.provider,
        )
    });
    if let Some(entry) = entry {
        if !user_sets("input_per_mtok") {
            if let Some(p) = entry.input_per_mtok() {
                input = Some(p);
                source = PriceSource::Litellm;
            }
        }
        if !user_sets("output_per_mtok") {
            if let Some(p) = entry.output_per_mtok() {
                output = Some(p);
                source = PriceSource::Litellm;
            }
        }
        if !user_sets("cache_read_per_mtok") {
            cache_read = entry.cache_read_per_mtok().or(cache_read);
        }
        if !user_sets("cache_write_per_mtok") {
            cache_write = entry.cache_write_per_mtok().or(cache_write);
        }
        if !user_sets("batch_input_per_mtok") {
            batch_in = entry.batch_input_per_mtok().or(batch_in);
        }
        if !user_sets("batch_output_per_mtok") {
            batch_out = entry.batch_output_per_mtok().or(batch_out);
        }
        if !user_sets("context_window") {
            context = entry.context_window().or(context);
        }
        if !user_sets("max_output_tokens") {
            max_out = entry.max_output_tokens().or(max_out);
        }
    }
    let price = |v: Option<f64>, key: &str| -> Result<PerMtok> {
        let v = v.with_context(|| format!("config {origin}: model `{name}` has no `{key}`"))?;
        PerMtok::from_usd_per_mtok(v).with_context(|| {
            format!(
                "config {origin}: model `{name}`: `{key}` must be a non-negative number, got {v}"
            )
        })
    };
    let input_price = price(input, "input_per_mtok")?;
    let output_price = price(output, "output_per_mtok")?;
    let factor = m.token_factor.unwrap_or(1.0);
    if !(factor.is_finite() && factor > 0.0) {
        bail!("config {origin}: model `{name}`: `token_factor` must be positive, got {factor}");
    }
    Ok(Model {
        name: name.to_string(),
        provider: m.provider.clone(),
        api_model: m.api_model.clone().unwrap_or_else(|| name.to_string()),
        input_price,
        output_price,
        cache_read_price: cache_read
            .map(|v| price(Some(v), "cache_read_per_mtok"))
            .transpose()?,
        cache_write_price: cache_write
            .map(|v| price(Some(v), "cache_write_per_mtok"))
            .transpose()?,
        cache_min_tokens: m.cache_min_tokens.unwrap_or(1024),
        batch_input_price: match batch_in {
            Some(v) => price(Some(v), "batch_input_per_mtok")?,
            None => input_price.half(),
        },
        batch_output_price: match batch_out {
            Some(v) => price(Some(v), "batch_output_per_mtok")?,
            None => output_price.half(),
        },
        context_window: context
            .with_context(|| format!("config {origin}: model `{name}` has no `context_window`"))?,
        max_output_tokens: max_out.unwrap_or(4096),
        tokenizer: m.tokenizer,
        token_factor: factor,
        rpm: m.rpm,
        tpm: m.tpm,
        price_source: source,
    })
}

/// Every task × tier route as model indexes; every task must have every tier and an
/// output default.
fn build_routes(
    raw: &RawConfig,
    origin: &str,
    index: impl Fn(&str) -> Option<ModelId>,
) -> Result<BTreeMap<(Task, Tier), Vec<ModelId>>> {
    let mut routes = BTreeMap::new();
    for (task, tiers) in &raw.routes {
        for (tier, names) in tiers {
            let ids = names
                .iter()
                .map(|n| {
                    index(n).with_context(|| {
                        format!("config {origin}: route `{task}.{tier}` names unknown model `{n}`")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if ids.is_empty() {
                bail!("config {origin}: route `{task}.{tier}` has no candidates");
            }
            routes.insert((*task, *tier), ids);
        }
    }
    for task in Task::ALL {
        for tier in Tier::ALL {
            if !routes.contains_key(&(*task, *tier)) {
                bail!("config {origin}: no route for task `{task}` on tier `{tier}`");
            }
        }
        if !raw.defaults.output_tokens.contains_key(task) {
            bail!("config {origin}: `defaults.output_tokens` has no entry for `{task}`");
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_charged_by_what_the_cache_served_and_took() {
        let cfg = Config::embedded();
        let sonnet = &cfg.models[cfg.model_id("claude-sonnet-4.6").unwrap()];
        // 100 fresh × $3 + 800 read × $0.30 + 100 written × $3.75 + 10 out × $15, per M.
        assert_eq!(sonnet.charge(1000, 800, 100, 10).pico(), 1_065_000_000);
        // Counts a provider over-reports are bounded by the prompt.
        assert_eq!(
            sonnet.charge(100, 500, 500, 0),
            sonnet.charge(100, 100, 0, 0)
        );
        // No cache price: every prompt token at the input price.
        let flash = &cfg.models[cfg.model_id("deepseek-v4-flash").unwrap()];
        assert_eq!(flash.charge(1000, 800, 0, 10), flash.cost(1000, 10));
    }

    fn load_str(toml: &str) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&Overrides {
            config_file: Some(path),
            ..Default::default()
        })
    }

    #[test]
    fn embedded_default_is_complete() {
        let c = Config::embedded();
        assert_eq!(c.tier, Tier::Balanced);
        assert_eq!(c.models[c.baseline].name, "gpt-4o");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let flash = &c.models[c.model_id("deepseek-v4-flash").unwrap()];
        assert_eq!(flash.input_price, PerMtok::from_micro(140_000));
        assert_eq!(flash.output_price, PerMtok::from_micro(280_000));
    }

    #[test]
    fn file_layers_field_by_field() {
        let c = load_str("[providers.openai]\nbase_url = \"http://127.0.0.1:9999/v1\"\n").unwrap();
        let p = &c.providers["openai"];
        assert_eq!(p.base_url, "http://127.0.0.1:9999/v1");
        assert_eq!(p.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        assert_eq!(p.allowed_tags, vec!["pii".to_string()]);
        assert_eq!(c.models.len(), Config::embedded().models.len());
    }

    #[test]
    fn unknown_keys_warn() {
        let c = load_str("[providers.openai]\nrmp = 5\n[extra]\nx = 1\n").unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("`extra`")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn unknown_route_model_names_both() {
        let err = load_str("[routes.code]\nbalanced = [\"gpt-9\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("route `code.balanced` names unknown model `gpt-9`"),
            "{err}"
        );
    }
}
