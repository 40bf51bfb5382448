//! `switchyard models`: the catalog — prices, context windows, providers and where
//! each price came from — as a table or JSON.

use std::io::{self, BufWriter, Write};

use anyhow::{Context, Result};
use serde_json::json;

use super::render::table;
use crate::cli::{Format, ModelsArgs};
use crate::exit::Exit;
use crate::money::group_thousands;

pub fn models(args: ModelsArgs) -> Result<Exit> {
    let cfg = super::load_config(&args.config.overrides())?;
    let mut out = BufWriter::new(io::stdout().lock());
    match args.format {
        Format::Json => {
            let list: Vec<_> = cfg
                .models
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name, "provider": m.provider,
                        "input_per_mtok": m.input_price.usd_per_mtok(),
                        "output_per_mtok": m.output_price.usd_per_mtok(),
                        "cache_read_per_mtok": m.cache_read_price.map(|p| p.usd_per_mtok()),
                        "cache_write_per_mtok": m.cache_write_price.map(|p| p.usd_per_mtok()),
                        "batch_input_per_mtok": m.batch_input_price.usd_per_mtok(),
                        "batch_output_per_mtok": m.batch_output_price.usd_per_mtok(),
                        "context_window": m.context_window,
                        "max_output_tokens": m.max_output_tokens,
                        "api_model": m.api_model,
                        "token_factor": m.token_factor,
                        "price_source": m.price_source.as_str(),
                        "allowed_tags": cfg.providers[&m.provider].allowed_tags,
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &list)?;
            writeln!(out)?;
        }
        Format::Table => {
            let mut t = table(
                &[
                    "model",
                    "provider",
                    "in $/Mtok",
                    "out $/Mtok",
                    "context",
                    "max out",
                    "tags",
                    "price",
                ],
                2,
            );
            for m in &cfg.models {
                t.add_row(vec![
                    m.name.clone(),
                    m.provider.clone(),
                    format!("{:.3}", m.input_price.usd_per_mtok()),
                    format!("{:.3}", m.output_price.usd_per_mtok()),
                    group_thousands(m.context_window),
                    group_thousands(m.max_output_tokens),
                    cfg.providers[&m.provider].allowed_tags.join(","),
                    m.price_source.as_str().to_string(),
                ]);
            }
            writeln!(out, "{t}")?;
        }
    }
    out.flush().context("cannot write to stdout")?;
    Ok(Exit::Ok)
}
