//! What reaches stderr besides errors. `--quiet` silences notes, warnings, progress
//! and summaries (errors always print). `-v` adds the run's events (start, breaker,
//! budget, stops), `-vv` every record's decision, request, retry and fallback, as
//! `tracing` events; prompts and answers only with `--log-prompts`, keys never.
//! `NO_COLOR` (any non-empty value) turns colour off, as does a stderr that is not a
//! terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);
static LOG_PROMPTS: AtomicBool = AtomicBool::new(false);

/// Sets up stderr for the process: once, before any command runs.
pub fn init(verbose: u8, quiet: bool, log_prompts: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    LOG_PROMPTS.store(log_prompts && verbose >= 2, Ordering::Relaxed);
    let level = match verbose {
        0 => return,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(color(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .init();
}

/// Colour on stderr: only on a terminal, and not when `NO_COLOR` is set non-empty
/// (<https://no-color.org>).
pub fn color(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `--quiet`: only errors on stderr.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `-vv --log-prompts`: events may carry prompts and answers.
pub fn log_prompts() -> bool {
    LOG_PROMPTS.load(Ordering::Relaxed)
}

/// `eprintln!` for what is not an error: a note or warning `--quiet` silences.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::log::quiet() {
            eprintln!($($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(color(true, None));
        assert!(color(true, Some("".into())));
        assert!(!color(true, Some("1".into())));
        assert!(!color(false, None));
    }
}
