//! Import of LiteLLM's `model_prices_and_context_window.json` as a price catalog:
//! per-token USD prices and context limits for the models the config names.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// One LiteLLM entry; fields we do not use are ignored.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct LitellmEntry {
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub input_cost_per_token_batches: Option<f64>,
    pub output_cost_per_token_batches: Option<f64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
}

impl LitellmEntry {
    pub fn input_per_mtok(&self) -> Option<f64> {
        self.input_cost_per_token.map(|p| p * 1e6)
    }
    pub fn output_per_mtok(&self) -> Option<f64> {
        self.output_cost_per_token.map(|p| p * 1e6)
    }
    pub fn cache_read_per_mtok(&self) -> Option<f64> {
        self.cache_read_input_token_cost.map(|p| p * 1e6)
    }
    pub fn cache_write_per_mtok(&self) -> Option<f64> {
        self.cache_creation_input_token_cost.map(|p| p * 1e6)
    }
    pub fn batch_input_per_mtok(&self) -> Option<f64> {
        self.input_cost_per_token_batches.map(|p| p * 1e6)
    }
    pub fn batch_output_per_mtok(&self) -> Option<f64> {
        self.output_cost_per_token_batches.map(|p| p * 1e6)
    }
    pub fn context_window(&self) -> Option<u64> {
        self.max_input_tokens.or(self.max_tokens)
    }
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_output_tokens.and_then(|t| u32::try_from(t).ok())
    }
}

pub struct LitellmPrices {
    entries: HashMap<String, LitellmEntry>,
}

impl LitellmPrices {
    pub fn read(path: &Path) -> Result<LitellmPrices> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read price catalog {}", path.display()))?;
        LitellmPrices::parse(&text).with_context(|| format!("price catalog {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<LitellmPrices> {
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).context("not a JSON object of models")?;
        let mut entries = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            if name == "sample_spec" {
                continue;
            }
            // Entries with odd shapes (strings where numbers belong) are skipped, not fatal:
            // the file is large and community-maintained.
            if let Ok(entry) = serde_json::from_value::<LitellmEntry>(value) {
                entries.insert(name, entry);
            }
        }
        Ok(LitellmPrices { entries })
    }

    /// Finds the entry for a configured model: its `litellm_name`, its own name, its
    /// API name, then `provider/name`.
    pub fn find(
        &self,
        name: &str,
        litellm_name: Option<&str>,
        api_model: Option<&str>,
        provider: &str,
    ) -> Option<&LitellmEntry> {
        let mut keys: Vec<String> = Vec::with_capacity(5);
        if let Some(l) = litellm_name {
            keys.push(l.to_string());
        }
        keys.push(name.to_string());
        if let Some(a) = api_model {
            keys.push(a.to_string());
            keys.push(format!("{provider}/{a}"));
        }
        keys.push(format!("{provider}/{name}"));
        keys.iter().find_map(|k| self.entries.get(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_sample_spec() {
        let p = LitellmPrices::parse(
            r#"{"sample_spec": {"input_cost_per_token": "0.0"},
                "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                           "max_input_tokens": 128000, "max_output_tokens": 16384,
                           "litellm_provider": "openai", "mode": "chat"}}"#,
        )
        .unwrap();
        assert_eq!(p.entries.len(), 1);
        let e = &p.entries["gpt-4o"];
        assert_eq!(
            crate::money::PerMtok::from_usd_per_token(e.input_cost_per_token.unwrap()),
            crate::money::PerMtok::from_usd_per_mtok(2.5)
        );
        assert_eq!(e.context_window(), Some(128000));
    }
}
