//! `run`'s progress line on stderr (indicatif), only when stderr is a terminal:
//! records done / total, ok / failed / escalated, spend against the budget, rate and
//! ETA. Nothing is drawn otherwise, so logs and pipes stay clean.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::input::{read_chunks, Input, Kind};
use crate::money::Usd;
use crate::output::ResultRow;

pub struct Progress {
    bar: Option<ProgressBar>,
    budget: Option<Usd>,
    /// The most spend reported so far: calls settle on several threads, so their
    /// reports can arrive out of order, and the line never goes backwards.
    spent: Usd,
    ok: u64,
    failed: u64,
    escalated: u64,
}

impl Progress {
    /// A progress line when stderr is a terminal; otherwise one that draws nothing.
    pub fn new(input: &Input, already_done: u64, budget: Option<Usd>) -> Progress {
        let bar = (std::io::stderr().is_terminal() && !crate::log::quiet()).then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(count_lines(input)),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            let style =
                ProgressStyle::with_template("{spinner} {pos}/{len} {msg} | {per_sec} | ETA {eta}")
                    .expect("a valid template");
            bar.set_style(style);
            bar.set_position(already_done);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let mut p = Progress {
            bar,
            budget,
            spent: Usd::ZERO,
            ok: 0,
            failed: 0,
            escalated: 0,
        };
        p.spent(Usd::ZERO);
        p
    }

    pub fn finished(&mut self, row: &ResultRow) {
        if self.bar.is_none() {
            return;
        }
        if row.is_ok() {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.escalated += u64::from(!row.escalations.is_empty());
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The spend so far (committed), against the budget.
    pub fn spent(&mut self, spent: Usd) {
        let Some(bar) = &self.bar else { return };
        self.spent = self.spent.max(spent);
        let spent = self.spent;
        let budget = self.budget.map_or(String::new(), |b| format!(" of {b}"));
        bar.set_message(format!(
            "| ok {} failed {} escalated {} | {spent}{budget}",
            self.ok, self.failed, self.escalated
        ));
    }

    /// The input ended: its record count is now known.
    pub fn input_done(&self, records: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(records);
        }
    }

    /// A line above the progress line (or plainly on stderr without one).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => crate::note!("{line}"),
        }
    }

    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Records in a plain JSONL file, counted by newlines (about 1 GB/s); 0 when unknown
/// (stdin, compressed, Parquet) until the input ends.
fn count_lines(input: &Input) -> u64 {
    let Input::File(path) = input else { return 0 };
    let (mut lines, mut last, mut plain) = (0u64, None, true);
    let read = read_chunks(path, |chunk| {
        if last.is_none() && Kind::of(chunk) != Kind::Plain {
            plain = false;
            return false;
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        last = chunk.last().copied();
        true
    });
    match (read, plain) {
        (Ok(_), true) => lines + u64::from(last.is_some_and(|b| b != b'\n')),
        _ => 0,
    }
}
