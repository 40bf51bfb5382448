//! How the process ends: one exit status for each outcome (README "Exit codes"), the
//! rule that turns a count of bad records into one, and the errors that decide it when
//! a command stops instead of finishing.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every record is fine (`plan`: routed, and the estimate fits `--budget`).
    Ok,
    /// Some records are invalid, unroutable, failed or skipped; the rest ran.
    SomeFailed,
    /// A usage, config or input error: found before any work, or an input that
    /// `--strict` (or a damaged file) stopped part way.
    Usage,
    /// `plan`: the estimate does not fit `--budget`; `run`: stopped on `--budget`.
    Budget,
    /// `run` had started work, then could not deliver its results: an output file, the
    /// journal or stdout failed. What the journal holds stays resumable.
    Output,
    /// Ctrl-C or SIGTERM: the run drained (or, at a second signal, stopped at once);
    /// `--resume` continues it.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::SomeFailed => 1,
            Exit::Usage => 2,
            Exit::Budget => 3,
            Exit::Output => 4,
            Exit::Interrupted => 130,
        }
    }

    /// `Ok`, or `SomeFailed` when any record did not make it.
    pub fn of_records(not_ok: u64) -> Exit {
        if not_ok > 0 {
            Exit::SomeFailed
        } else {
            Exit::Ok
        }
    }

    /// The status for a command that stopped with `err`.
    pub fn of_error(err: &anyhow::Error) -> Exit {
        if err.downcast_ref::<Aborted>().is_some() {
            Exit::Interrupted
        } else if err.downcast_ref::<OutputFailed>().is_some() {
            Exit::Output
        } else {
            Exit::Usage
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Context on an error that happened after `run` started work: writing the journal,
/// stdout or an output file. Exit 4, never mistaken for a usage error.
#[derive(Debug, thiserror::Error)]
#[error("the run could not finish its output (what the journal holds stays resumable)")]
pub struct OutputFailed;

/// A second Ctrl-C or SIGTERM: the run stopped without waiting for requests in flight.
#[derive(Debug, thiserror::Error)]
#[error("aborted; every finished record is in the journal: run again with --resume")]
pub struct Aborted;

/// `--strict` met a bad record: exit 2, the record named.
#[derive(Debug, thiserror::Error)]
#[error("{0} (--strict stops at the first invalid record)")]
pub struct StrictStop(pub String);

/// A write to a closed pipe anywhere in the error's chain.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn errors_map_to_their_exit() {
        let io = || std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let output = Err::<(), _>(io()).context(OutputFailed).unwrap_err();
        assert_eq!(Exit::of_error(&output), Exit::Output);
        assert_eq!(
            format!("{output:#}"),
            "the run could not finish its output (what the journal holds stays resumable): disk full"
        );
        assert_eq!(
            Exit::of_error(&anyhow::Error::new(Aborted)),
            Exit::Interrupted
        );
        let strict = anyhow::Error::new(StrictStop("a.jsonl: line 3: not valid JSON".into()));
        assert_eq!(Exit::of_error(&strict), Exit::Usage);
        assert_eq!(
            Exit::of_error(&anyhow::anyhow!("no such file")),
            Exit::Usage
        );
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::new(pipe).context("writing")));
        assert_eq!(Exit::of_records(0), Exit::Ok);
        assert_eq!(Exit::of_records(2), Exit::SomeFailed);
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::SomeFailed,
            Exit::Usage,
            Exit::Budget,
            Exit::Output,
            Exit::Interrupted,
        ]
        .map(Exit::code)
        .to_vec();
        assert_eq!(codes, [0, 1, 2, 3, 4, 130]);
    }
}
