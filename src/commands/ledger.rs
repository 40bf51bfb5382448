//! `switchyard ledger status`: what the shared ledger holds for one budget name —
//! the limit, spend, live reservations (leases) and who holds them, and the next
//! free slot of every rate limit processes have used.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

use super::render::{table, usd};
use crate::cli::{Format, LedgerCommand};
use crate::exit::Exit;
use crate::ledger::{connect, redact, status, Keys};

pub fn ledger(cmd: LedgerCommand) -> Result<Exit> {
    let LedgerCommand::Status(args) = cmd;
    let cfg = super::load_config(&args.config.overrides())?;
    let url = match args.ledger.ledger.clone() {
        Some(u) => u,
        None if !cfg.ledger.url.trim().is_empty() => cfg.ledger.url.trim().to_string(),
        None => bail!("no ledger: give --ledger URL (or SWITCHYARD_LEDGER, or [ledger] url)"),
    };
    let name = &args.ledger.budget_name;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(async {
        let mut conn = connect(&url, Duration::from_secs(5)).await?;
        status(&mut conn, &Keys::new(name))
            .await
            .map_err(|e| anyhow::anyhow!(e.0))
    })?;
    let mut out = io::stdout().lock();
    if let Format::Json = args.format {
        let v = json!({
            "ledger": redact(&url), "budget_name": name,
            "limit_usd": s.limit.map(usd), "spent_usd": usd(s.spent), "reserved_usd": usd(s.reserved),
            "available_usd": s.limit.map(|l| usd(l.saturating_sub(s.spent + s.reserved))),
            "expired_leases_usd": usd(s.expired),
            "leases": s.leases.iter().map(|(h, a, ms)| json!({"holder": h, "reserved_usd": usd(*a), "expires_in_ms": ms})).collect::<Vec<_>>(),
            "limits": s.limits.iter().map(|(scope, ms)| json!({"scope": scope, "next_free_in_ms": (*ms).max(0)})).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
        return Ok(Exit::Ok);
    }
    writeln!(out, "ledger {} budget `{name}`", redact(&url))?;
    match s.limit {
        Some(l) => writeln!(
            out,
            "limit {l}: spent {}, reserved {}, available {}",
            s.spent,
            s.reserved,
            l.saturating_sub(s.spent + s.reserved)
        )?,
        None => writeln!(out, "no limit: spent {}, reserved {}", s.spent, s.reserved)?,
    }
    if !s.expired.is_zero() {
        writeln!(out, "returned from expired leases: {}", s.expired)?;
    }
    if s.leases.is_empty() {
        writeln!(out, "no live leases")?;
    } else {
        let mut t = table(&["holder", "reserved", "expires in"], 1);
        for (h, a, ms) in &s.leases {
            t.add_row(vec![
                h.clone(),
                a.to_string(),
                format!("{:.1}s", *ms as f64 / 1000.0),
            ]);
        }
        writeln!(out, "{t}")?;
    }
    if !s.limits.is_empty() {
        let mut t = table(&["rate limit", "next free slot"], 1);
        for (scope, ms) in &s.limits {
            let when = match *ms {
                ms if ms <= 0 => "now".to_string(),
                ms => format!("in {:.3}s", ms as f64 / 1000.0),
            };
            t.add_row(vec![scope.clone(), when]);
        }
        writeln!(out, "{t}")?;
    }
    Ok(Exit::Ok)
}
