//! Shared by the integration tests: the built binary, run from the repo root with no
//! `SWITCHYARD_*` variables from the caller's environment.

use assert_cmd::Command;

pub fn bin() -> Command {
    let mut c = Command::cargo_bin("switchyard").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    for var in [
        "SWITCHYARD_CONFIG",
        "SWITCHYARD_PRICES",
        "SWITCHYARD_TIER",
        "SWITCHYARD_BUDGET",
        "SWITCHYARD_BASELINE",
    ] {
        c.env_remove(var);
    }
    c
}
