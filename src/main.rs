//! Thin entry point: parse flags, run the command, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use switchyard::app::{self, StrictStop, EXIT_USAGE};
use switchyard::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match app::run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<StrictStop>().is_some() {
                eprintln!("error: {err}");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `switchyard classify big.jsonl | head` ends quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}
