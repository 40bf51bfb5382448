//! `run --keep-order` without `--out`: rows reach stdout in input order, not as they
//! finish. A row that finishes ahead of an earlier record waits here; the dispatcher
//! starts no record while [`Reorder::len`] is at its window, so memory is bounded
//! however slow one record is.

use std::collections::{HashMap, VecDeque};

use anyhow::Result;

use crate::output::ResultRow;

#[derive(Default)]
pub(super) struct Reorder {
    /// Positions started and not yet written, in input order.
    started: VecDeque<u64>,
    /// Rows that finished ahead of an earlier record, by position.
    waiting: HashMap<u64, ResultRow>,
}

impl Reorder {
    /// Records started and not yet written (in flight or waiting).
    pub fn len(&self) -> usize {
        self.started.len()
    }

    /// A record at `pos` starts (positions come in input order).
    pub fn start(&mut self, pos: u64) {
        self.started.push_back(pos);
    }

    /// The record at `pos` finished: writes it and every waiting row after it that
    /// is now next in order.
    pub fn finish(
        &mut self,
        pos: u64,
        row: &ResultRow,
        mut write: impl FnMut(&ResultRow) -> Result<()>,
    ) -> Result<()> {
        if self.started.front() != Some(&pos) {
            self.waiting.insert(pos, row.clone());
            return Ok(());
        }
        write(row)?;
        self.started.pop_front();
        while let Some(next) = self.started.front() {
            let Some(row) = self.waiting.remove(next) else {
                break;
            };
            write(&row)?;
            self.started.pop_front();
        }
        Ok(())
    }

    /// The rows still waiting when the run stops without its earlier records (an
    /// abort, the drain timeout), in input order.
    pub fn rest(mut self) -> Vec<ResultRow> {
        let order = std::mem::take(&mut self.started);
        order
            .into_iter()
            .filter_map(|p| self.waiting.remove(&p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_leave_in_input_order_whatever_order_they_finish_in() {
        let mut r = Reorder::default();
        for pos in [1, 2, 4, 7] {
            r.start(pos);
        }
        let mut out = Vec::new();
        let row = |id: &str| ResultRow::new(id.to_string());
        let mut write = |row: &ResultRow| {
            out.push(row.id.clone());
            Ok(())
        };
        r.finish(4, &row("4"), &mut write).unwrap();
        r.finish(2, &row("2"), &mut write).unwrap();
        assert_eq!(r.len(), 4, "nothing written before the first finishes");
        r.finish(1, &row("1"), &mut write).unwrap();
        assert_eq!(r.len(), 1);
        r.start(9);
        r.finish(9, &row("9"), &mut write).unwrap();
        assert_eq!(r.len(), 2, "9 waits for 7");
        let rest: Vec<String> = r.rest().into_iter().map(|r| r.id).collect();
        assert_eq!(out, ["1", "2", "4"]);
        assert_eq!(rest, ["9"]);
    }
}
