//! Shared by the integration tests: the built binary, run from the repo root with no
//! `SWITCHYARD_*` variables from the caller's environment, and what a run of it said.

use std::time::Duration;

use assert_cmd::Command;

/// The variables that would change what the binary does; tests start without them.
pub const ENV_VARS: [&str; 7] = [
    "SWITCHYARD_CONFIG",
    "SWITCHYARD_PRICES",
    "SWITCHYARD_TIER",
    "SWITCHYARD_BUDGET",
    "SWITCHYARD_BASELINE",
    "SWITCHYARD_CLASSIFIER",
    "SWITCHYARD_LEDGER",
];

/// The binary, not yet started. No test may hang the suite: a run still going after
/// two minutes is killed and fails its test.
pub fn bin() -> Command {
    let mut c = Command::cargo_bin("switchyard").unwrap();
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.timeout(Duration::from_secs(120));
    for var in ENV_VARS {
        c.env_remove(var);
    }
    c
}

/// What a finished command said.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end.
pub fn output(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    Output {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}
