//! The fingerprint of a job: what its results depend on — the input's bytes, the
//! provider mode, and the config's decision parts — hashed part by part, so a refused
//! resume can say which part changed.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::input::{read_chunks, Input};

/// What a run's results depend on, part by part (name → hash), so a refused resume
/// can say which part changed.
pub type Fingerprint = BTreeMap<String, String>;

/// Hashes the input file's bytes and the config's decision parts.
pub fn fingerprint(cfg: &Config, input: &Input, simulate: bool) -> Result<Fingerprint> {
    let mut fp = Fingerprint::new();
    let input_part = match input {
        Input::Stdin => "stdin".to_string(),
        Input::File(path) => {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            let size = read_chunks(path, |chunk| {
                h.update(chunk);
                true
            })
            .with_context(|| format!("cannot read {}", path.display()))?;
            format!("{size} bytes, xxh3 {:032x}", h.digest128())
        }
    };
    fp.insert("input".into(), input_part);
    let provider = if simulate {
        "simulated"
    } else {
        "configured APIs"
    };
    fp.insert("provider".into(), provider.into());
    // A run that submitted batches must be resumed the same way, or its records
    // would be sent again realtime (realtime runs keep their old fingerprint).
    if cfg.run.via != crate::config::Via::Realtime && !simulate {
        fp.insert("via".into(), cfg.run.via.to_string());
    }
    for (name, text) in cfg.decision_parts() {
        let hash = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        fp.insert(name.into(), format!("{hash:032x}"));
    }
    Ok(fp)
}
