//! Shared by the integration tests: the built binary, run from the repo root with no
//! `SWITCHYARD_*` variables from the caller's environment.

use assert_cmd::Command;

/// The variables that would change what the binary does; tests start without them.
pub const ENV_VARS: [&str; 5] = [
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_PRICES",
    "SWITCHYARD_TIER",
    "SWITCHYARD_BUDGET",
    "SWITCHYARD_BASELINE",
];

pub fn bin() -> Command {
    let mut c = Command::cargo_bin("switchyard").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in ENV_VARS {
        c.env_remove(var);
    }
    c
}
