//! The config as written: TOML layers (the embedded default, then `--config FILE`)
//! merged field by field, and the serde shapes they deserialize into before
//! validation. Every section's defaults (`[run]`, `[checks]`, `[classifier]`,
//! `[simulate]`, `[input]`, `[defaults]`) live in `default.toml` alone, so the merged
//! table always holds those keys. A provider or model the user adds has its optional
//! fields defaulted where they are read (`timeout_s`, `token_factor`,
//! `max_output_tokens`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{
    BatchModel, ChecksConfig, ClassifierConfig, LedgerConfig, Provider, RunConfig, SimulateConfig,
    Tokenizer,
};
use crate::record::{Task, Tier};

pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Deserialize)]
pub(super) struct RawConfig {
    pub defaults: RawDefaults,
    pub routing: RawRouting,
    pub classifier: ClassifierConfig,
    pub input: RawInput,
    pub providers: BTreeMap<String, Provider>,
    pub models: BTreeMap<String, RawModel>,
    pub routes: BTreeMap<Task, BTreeMap<Tier, Vec<String>>>,
    pub simulate: SimulateConfig,
    pub run: RunConfig,
    pub checks: ChecksConfig,
    pub ledger: LedgerConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct RawModel {
    pub provider: String,
    pub api_model: Option<String>,
    pub litellm_name: Option<String>,
    pub input_per_mtok: Option<f64>,
    pub output_per_mtok: Option<f64>,
    pub cache_read_per_mtok: Option<f64>,
    pub cache_write_per_mtok: Option<f64>,
    pub cache_min_tokens: Option<u64>,
    pub batch_input_per_mtok: Option<f64>,
    pub batch_output_per_mtok: Option<f64>,
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub tokenizer: Tokenizer,
    pub token_factor: Option<f64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawDefaults {
    pub tier: Tier,
    pub baseline: String,
    pub output_tokens: BTreeMap<Task, u32>,
    pub prices: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRouting {
    pub complex_upgrades_tier: bool,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawInput {
    pub batch_model: BatchModel,
    pub max_line_bytes: u64,
}

/// The layers, read: the merged table, and what the user's file itself says (for
/// price precedence: a price the file sets beats an import).
pub(super) struct Layers {
    pub merged: toml::Table,
    pub user: toml::Table,
    /// How errors name the config: the file, or the embedded default.
    pub origin: String,
}

impl Layers {
    pub fn read(config_file: Option<&Path>) -> Result<Layers> {
        let mut merged: toml::Table = DEFAULT_TOML.parse().expect("embedded default parses");
        let mut user = toml::Table::new();
        if let Some(path) = config_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            user = text
                .parse::<toml::Table>()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut merged, user.clone());
        }
        let origin = config_file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the embedded default".into());
        Ok(Layers {
            merged,
            user,
            origin,
        })
    }

    /// The merged table as [`RawConfig`]; unknown keys become warnings.
    pub fn deserialize(&self, warnings: &mut Vec<String>) -> Result<RawConfig> {
        let origin = &self.origin;
        serde_ignored::deserialize(toml::Value::Table(self.merged.clone()), |path| {
            warnings.push(format!("config {origin}: unknown key `{path}` ignored"))
        })
        .map_err(|e| anyhow::anyhow!("config {origin}: {}", e.to_string().trim()))
    }

    /// Does the user's file itself set `key` on `model`?
    pub fn user_sets(&self, model: &str, key: &str) -> bool {
        self.user
            .get("models")
            .and_then(|m| m.as_table())
            .and_then(|m| m.get(model))
            .and_then(|m| m.as_table())
            .is_some_and(|m| m.contains_key(key))
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
