//! Configuration: the embedded default (seeds' prices and routing matrix) layered with
//! `--config FILE` field by field, then a LiteLLM price import, then flags (clap maps
//! `SWITCHYARD_*` environment variables onto flags). Produces a validated [`Config`]
//! whose catalog the router and pricer index by number. No I/O beyond reading files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::checks::CheckSet;
use crate::money::PerMtok;
use crate::record::{Task, Tier};

pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

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

#[derive(Debug, Clone, Deserialize)]
struct RawModel {
    provider: String,
    api_model: Option<String>,
    litellm_name: Option<String>,
    input_per_mtok: Option<f64>,
    output_per_mtok: Option<f64>,
    context_window: Option<u64>,
    max_output_tokens: Option<u32>,
    #[serde(default)]
    tokenizer: Tokenizer,
    token_factor: Option<f64>,
    rpm: Option<u32>,
    tpm: Option<u64>,
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
    pub context_window: u64,
    pub max_output_tokens: u32,
    pub tokenizer: Tokenizer,
    /// Multiplies the BPE count, for providers whose tokenizer is not OpenAI's.
    pub token_factor: f64,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub price_source: PriceSource,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchModel {
    Pin,
    Route,
}

#[derive(Debug, Deserialize)]
struct RawDefaults {
    tier: Tier,
    baseline: String,
    output_tokens: BTreeMap<Task, u32>,
    prices: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RawRouting {
    complex_upgrades_tier: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClassifierConfig {
    pub long_context_tokens: u64,
    pub max_turns: usize,
    #[serde(default)]
    pub llm: LlmClassifierConfig,
}

/// Which records the LLM classifier sees.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LlmScope {
    /// Records the local rules decided by a small margin.
    #[default]
    Unsure,
    All,
}

/// `[classifier.llm]`: a cheap model asked for one word (seed 003), off by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct LlmClassifierConfig {
    pub enabled: bool,
    pub model: String,
    pub scope: LlmScope,
    /// A local decision whose winning margin is below this is unsure.
    pub max_margin: u16,
    /// How much of the record's last user message the classifier is shown.
    pub max_prompt_chars: usize,
}

impl Default for LlmClassifierConfig {
    fn default() -> LlmClassifierConfig {
        LlmClassifierConfig {
            enabled: false,
            model: "deepseek-chat".into(),
            scope: LlmScope::Unsure,
            max_margin: 4,
            max_prompt_chars: 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawInput {
    batch_model: BatchModel,
    max_line_bytes: u64,
}

/// The simulated provider of `run --simulate`: latency and injected faults, so a
/// rehearsal exercises budgets, retries and limits. Rates are fractions of attempts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct SimulateConfig {
    pub latency_ms: u64,
    pub rate_429: f64,
    pub rate_5xx: f64,
    pub rate_timeout: f64,
    /// Answers that are cut short (`finish_reason = length`), to exercise escalation.
    pub rate_truncated: f64,
    pub seed: u64,
}

impl Default for SimulateConfig {
    fn default() -> SimulateConfig {
        SimulateConfig {
            latency_ms: 20,
            rate_429: 0.0,
            rate_5xx: 0.0,
            rate_timeout: 0.0,
            rate_truncated: 0.0,
            seed: 0,
        }
    }
}

/// How `run` executes: retries, escalations.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct RunConfig {
    pub max_retries: u32,
    pub retry_base_ms: u64,
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
}

impl Default for RunConfig {
    fn default() -> RunConfig {
        RunConfig {
            max_retries: 3,
            retry_base_ms: 500,
            max_escalations: 1,
            breaker_failures: 5,
            breaker_cooldown_s: 30,
            max_retry_after_s: 120,
            journal_sync_ms: 1000,
            drain_timeout_s: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    defaults: RawDefaults,
    routing: RawRouting,
    classifier: ClassifierConfig,
    input: RawInput,
    providers: BTreeMap<String, Provider>,
    models: BTreeMap<String, RawModel>,
    routes: BTreeMap<Task, BTreeMap<Tier, Vec<String>>>,
    #[serde(default)]
    simulate: SimulateConfig,
    #[serde(default)]
    run: RunConfig,
    #[serde(default)]
    checks: CheckSet,
}

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
    pub batch_model: BatchModel,
    /// A JSONL line longer than this is an invalid record, not read into memory.
    pub max_line_bytes: u64,
    pub simulate: SimulateConfig,
    pub run: RunConfig,
    /// `[checks]`: which escalation checks run on answers.
    pub checks: CheckSet,
    pub providers: BTreeMap<String, Provider>,
    pub models: Vec<Model>,
    /// `routes[task][tier]`: candidate models in order of preference.
    routes: BTreeMap<(Task, Tier), Vec<ModelId>>,
    /// Warnings found while loading (unknown keys), for the caller to print.
    pub warnings: Vec<String>,
}

/// What the command line (and environment, via clap) says about config.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub prices_file: Option<PathBuf>,
    pub tier: Option<Tier>,
    pub baseline: Option<String>,
}

impl Config {
    /// The embedded default alone.
    pub fn embedded() -> Config {
        Config::load(&Overrides::default()).expect("embedded default config is valid")
    }

    pub fn load(over: &Overrides) -> Result<Config> {
        let mut merged: toml::Table = DEFAULT_TOML.parse().expect("embedded default parses");
        let mut user = toml::Table::new();
        if let Some(path) = &over.config_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            user = text
                .parse::<toml::Table>()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut merged, user.clone());
        }
        let origin = over
            .config_file
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the embedded default".into());

        let mut warnings = Vec::new();
        let raw: RawConfig = serde_ignored::deserialize(toml::Value::Table(merged), |path| {
            warnings.push(format!("config {origin}: unknown key `{path}` ignored"))
        })
        .map_err(|e| anyhow::anyhow!("config {origin}: {}", e.to_string().trim()))?;

        let prices_file = over.prices_file.clone().or_else(|| {
            raw.defaults
                .prices
                .as_ref()
                .map(|p| match &over.config_file {
                    Some(cfg) if p.is_relative() => cfg.parent().unwrap_or(Path::new(".")).join(p),
                    _ => p.clone(),
                })
        });
        let litellm = match &prices_file {
            Some(p) => Some(crate::catalog::LitellmPrices::read(p)?),
            None => None,
        };

        let user_models = user.get("models").and_then(|m| m.as_table());
        let user_sets = |model: &str, key: &str| {
            user_models
                .and_then(|m| m.get(model))
                .and_then(|m| m.as_table())
                .is_some_and(|m| m.contains_key(key))
        };

        let mut models = Vec::with_capacity(raw.models.len());
        for (name, m) in &raw.models {
            if !raw.providers.contains_key(&m.provider) {
                bail!(
                    "config {origin}: model `{name}` names unknown provider `{}`",
                    m.provider
                );
            }
            let mut source =
                if user_sets(name, "input_per_mtok") || user_sets(name, "output_per_mtok") {
                    PriceSource::Config
                } else {
                    PriceSource::Default
                };
            let mut input = m.input_per_mtok;
            let mut output = m.output_per_mtok;
            let mut context = m.context_window;
            let mut max_out = m.max_output_tokens;
            if let Some(entry) = litellm.as_ref().and_then(|l| {
                l.find(
                    name,
                    m.litellm_name.as_deref(),
                    m.api_model.as_deref(),
                    &m.provider,
                )
            }) {
                if !user_sets(name, "input_per_mtok") {
                    if let Some(p) = entry.input_per_mtok() {
                        input = Some(p);
                        source = PriceSource::Litellm;
                    }
                }
                if !user_sets(name, "output_per_mtok") {
                    if let Some(p) = entry.output_per_mtok() {
                        output = Some(p);
                        source = PriceSource::Litellm;
                    }
                }
                if !user_sets(name, "context_window") {
                    context = entry.context_window().or(context);
                }
                if !user_sets(name, "max_output_tokens") {
                    max_out = entry.max_output_tokens().or(max_out);
                }
            }
            let price = |v: Option<f64>, key: &str| -> Result<PerMtok> {
                let v =
                    v.with_context(|| format!("config {origin}: model `{name}` has no `{key}`"))?;
                PerMtok::from_usd_per_mtok(v)
                    .with_context(|| format!("config {origin}: model `{name}`: `{key}` must be a non-negative number, got {v}"))
            };
            let factor = m.token_factor.unwrap_or(1.0);
            if !(factor.is_finite() && factor > 0.0) {
                bail!("config {origin}: model `{name}`: `token_factor` must be positive, got {factor}");
            }
            models.push(Model {
                name: name.clone(),
                provider: m.provider.clone(),
                api_model: m.api_model.clone().unwrap_or_else(|| name.clone()),
                input_price: price(input, "input_per_mtok")?,
                output_price: price(output, "output_per_mtok")?,
                context_window: context.with_context(|| {
                    format!("config {origin}: model `{name}` has no `context_window`")
                })?,
                max_output_tokens: max_out.unwrap_or(4096),
                tokenizer: m.tokenizer,
                token_factor: factor,
                rpm: m.rpm,
                tpm: m.tpm,
                price_source: source,
            });
        }
        let index = |name: &str| models.iter().position(|m| m.name == name);

        let mut routes = BTreeMap::new();
        for (task, tiers) in &raw.routes {
            for (tier, names) in tiers {
                let mut ids = Vec::with_capacity(names.len());
                for n in names {
                    let id = index(n).with_context(|| {
                        format!("config {origin}: route `{task}.{tier}` names unknown model `{n}`")
                    })?;
                    ids.push(id);
                }
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

        let baseline_name = over.baseline.clone().unwrap_or(raw.defaults.baseline);
        let baseline = index(&baseline_name).with_context(|| {
            format!(
                "baseline model `{baseline_name}` is not in the catalog (see `switchyard models`)"
            )
        })?;

        let llm = &raw.classifier.llm;
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
            llm_classifier,
            tier: over.tier.unwrap_or(raw.defaults.tier),
            baseline,
            output_tokens: raw.defaults.output_tokens,
            complex_upgrades_tier: raw.routing.complex_upgrades_tier,
            classifier: raw.classifier,
            batch_model: raw.input.batch_model,
            max_line_bytes: raw.input.max_line_bytes,
            simulate: raw.simulate,
            run: raw.run,
            checks: raw.checks,
            providers: raw.providers,
            models,
            routes,
            warnings,
        })
    }

    pub fn route(&self, task: Task, tier: Tier) -> &[ModelId] {
        &self.routes[&(task, tier)]
    }

    pub fn model_id(&self, name: &str) -> Option<ModelId> {
        self.models.iter().position(|m| m.name == name)
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

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
