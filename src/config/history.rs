//! What past runs answered: output tokens per task and model, learned from their
//! `results.parquet` (`plan --history DIR…`), so an estimate prices the answers a job
//! really gets instead of `max_tokens` or a task default. Pure data: the command reads
//! the files, the router asks [`OutputHistory::expected`].

use std::collections::HashMap;

use super::ModelId;
use crate::record::Task;

/// Fewer answers than this for a task and model, and the task's answers on every
/// model are used; fewer for the task too, and the default stands.
pub const MIN_ANSWERS: u64 = 20;

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: u64,
    sum: u128,
    sum_sq: u128,
}

impl Stats {
    fn add(&mut self, tokens: u64) {
        self.n += 1;
        self.sum += u128::from(tokens);
        self.sum_sq += u128::from(tokens) * u128::from(tokens);
    }

    fn mean(&self) -> f64 {
        self.sum as f64 / self.n as f64
    }

    fn variance(&self) -> f64 {
        let m = self.mean();
        (self.sum_sq as f64 / self.n as f64 - m * m).max(0.0)
    }
}

/// Expected output tokens of one answer, and their variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expected {
    pub tokens: u64,
    pub variance: f64,
}

#[derive(Debug, Clone, Default)]
pub struct OutputHistory {
    by_model: HashMap<(Task, ModelId), Stats>,
    by_task: HashMap<Task, Stats>,
    /// Answers read, and the past results files they came from.
    pub answers: u64,
    pub files: usize,
}

impl OutputHistory {
    /// Learns from one past answer: the record's task, the model that answered, the
    /// output tokens it was billed.
    pub fn add(&mut self, task: Task, model: ModelId, tokens: u64) {
        self.by_model.entry((task, model)).or_default().add(tokens);
        self.by_task.entry(task).or_default().add(tokens);
        self.answers += 1;
    }

    /// What an answer of `model` for a `task` record is expected to be, from enough
    /// past answers of the model (else of the task), or `None`.
    pub fn expected(&self, task: Task, model: ModelId) -> Option<Expected> {
        let s = self
            .by_model
            .get(&(task, model))
            .filter(|s| s.n >= MIN_ANSWERS)
            .or_else(|| self.by_task.get(&task).filter(|s| s.n >= MIN_ANSWERS))?;
        Some(Expected {
            tokens: s.mean().round() as u64,
            variance: s.variance(),
        })
    }

    /// Task × model pairs with enough answers to be used on their own.
    pub fn pairs(&self) -> usize {
        self.by_model
            .values()
            .filter(|s| s.n >= MIN_ANSWERS)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_with_enough_answers_is_used_else_its_task() {
        let mut h = OutputHistory::default();
        for i in 0..20 {
            h.add(Task::Summarization, 0, 90 + (i % 2) * 20); // 90, 110, …: mean 100
        }
        for _ in 0..5 {
            h.add(Task::Summarization, 1, 300);
        }
        let e = h.expected(Task::Summarization, 0).unwrap();
        assert_eq!(e.tokens, 100);
        assert!((e.variance - 100.0).abs() < 1e-9);
        // Model 1 has 5 answers: the task's 25 decide (20 × 100 + 5 × 300) / 25.
        assert_eq!(h.expected(Task::Summarization, 1).unwrap().tokens, 140);
        assert_eq!(h.expected(Task::Chat, 0), None);
        assert_eq!(h.pairs(), 1);
    }
}
