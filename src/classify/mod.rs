//! The local classifier: Job -> (task, complexity, confidence, what decided it). Pure
//! and deterministic, no API call. Facts of the record decide first: its own `task`,
//! image parts (`vision`), tool messages (`agent`), `labels` (`classification`), a
//! JSON `response_format` (`extraction`). Otherwise the learned [`model`] reads the
//! text and says how sure it is. Complexity comes from the task, the prompt's size,
//! the conversation's length, math notation and a few marks of a demanding request.
//! [`llm`] holds the optional LLM classifier; [`train`] fits a model.

pub mod llm;
pub mod model;
pub mod train;

use std::fmt;

use crate::config::ClassifierConfig;
use crate::record::{word_enum, Complexity, Job, Task};
use Task::*;

word_enum!(
    /// How the task was decided: the record's own `task` field, the local classifier,
    /// or the LLM classifier (`[classifier.llm]`).
    ClassifiedBy {
        Explicit = "explicit",
        Local = "local",
        Llm = "llm",
    }
);

/// What decided the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Explicit,
    Images,
    ToolMessages,
    Labels,
    JsonFormat,
    /// The learned model (see [`Decision::confidence`]).
    Model,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Explicit => "task field",
            Reason::Images => "image parts",
            Reason::ToolMessages => "tool messages",
            Reason::Labels => "labels field",
            Reason::JsonFormat => "JSON response_format",
            Reason::Model => "model",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub task: Task,
    pub complexity: Complexity,
    pub classified_by: ClassifiedBy,
    pub reason: Reason,
    /// How likely the task is right, 0 to 1: the model's calibrated probability; 1
    /// for a fact of the record.
    pub confidence: f32,
}

thread_local! {
    /// Each worker's buffer for a record's model features.
    static SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Classifies a record. `prompt_tokens` is its o200k prompt size.
pub fn classify(job: &Job, prompt_tokens: u64, cfg: &ClassifierConfig) -> Decision {
    let json_format = job
        .response_format
        .as_ref()
        .and_then(|r| r.get("type"))
        .and_then(|t| t.as_str())
        .is_some_and(|t| t.starts_with("json"));
    let fact = |task, reason| (task, reason, 1.0, ClassifiedBy::Local);
    let mut read = None;
    let (task, reason, confidence, classified_by) = if let Some(t) = job.task {
        (t, Reason::Explicit, 1.0, ClassifiedBy::Explicit)
    } else if job.has_images() {
        fact(Vision, Reason::Images)
    } else if job
        .messages
        .iter()
        .any(|m| m.role == "tool" || m.role == "function")
    {
        fact(Agent, Reason::ToolMessages)
    } else if job.labels.as_ref().is_some_and(|l| !l.is_empty()) {
        fact(Classification, Reason::Labels)
    } else if json_format {
        fact(Extraction, Reason::JsonFormat)
    } else {
        let m = cfg.model.as_ref().expect("the config loads a model");
        let p = SCRATCH.with_borrow_mut(|scratch| m.predict(job, scratch));
        read = Some(p.shapes);
        (p.task, Reason::Model, p.confidence, ClassifiedBy::Local)
    };
    // The model read the text's shapes when it decided; a fact did not.
    let read = read.unwrap_or_else(|| model::marks(job.last_user_text()));
    let complexity = complexity(task, read.hard, job, prompt_tokens, cfg, read.math);
    Decision {
        task,
        complexity,
        classified_by,
        reason,
        confidence,
    }
}

fn complexity(
    task: Task,
    hard: u16,
    job: &Job,
    tokens: u64,
    cfg: &ClassifierConfig,
    math_shape: u16,
) -> Complexity {
    let mut c = if tokens >= cfg.long_context_tokens {
        Complexity::Complex
    } else {
        match task {
            Summarization | Translation | Classification | Extraction => {
                if tokens >= 4000 {
                    Complexity::Moderate
                } else {
                    Complexity::Simple
                }
            }
            Chat => {
                if tokens >= 400 {
                    Complexity::Moderate
                } else {
                    Complexity::Simple
                }
            }
            Reasoning if math_shape >= 6 || tokens >= 1500 => Complexity::Complex,
            Code if tokens >= 3000 => Complexity::Complex,
            Agent => Complexity::Complex,
            _ => Complexity::Moderate,
        }
    };
    if hard >= 2 {
        c = c.raised();
    }
    if job.turns() > cfg.max_turns {
        c = c.raised();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Message;

    fn job(text: &str) -> Job {
        Job::from_prompt("1", text)
    }

    fn task_of(text: &str) -> Task {
        let cfg = ClassifierConfig {
            long_context_tokens: 16000,
            max_turns: 10,
            ..crate::config::Config::embedded().classifier
        };
        classify(&job(text), 50, &cfg).task
    }

    #[test]
    fn reads_the_obvious() {
        assert_eq!(
            task_of("Summarize this support ticket in two sentences: ..."),
            Summarization
        );
        assert_eq!(
            task_of("Translate to French: the button is disabled"),
            Translation
        );
        assert_eq!(
            task_of("Write a Python function to parse ISO 8601 dates"),
            Code
        );
        assert_eq!(task_of("hello, how are you today?"), Chat);
        assert_eq!(task_of("Write a haiku about autumn rain"), Creative);
        assert_eq!(task_of("Solve for y: 2y + 6 = 14"), Reasoning);
        assert_eq!(
            task_of("Extract every date and amount from this invoice as JSON"),
            Extraction
        );
        assert_eq!(
            task_of("Classify the sentiment of this review: great phone"),
            Classification
        );
    }

    #[test]
    fn word_bounds_hold() {
        // "class" inside "classic", "api" inside "capital": no code vote.
        assert_eq!(task_of("What is a classic capital city?"), Chat);
    }

    #[test]
    fn explicit_task_and_images_win() {
        let cfg = ClassifierConfig {
            long_context_tokens: 16000,
            max_turns: 10,
            ..crate::config::Config::embedded().classifier
        };
        let mut j = job("Summarize this");
        j.task = Some(Code);
        let d = classify(&j, 10, &cfg);
        assert_eq!((d.task, d.classified_by), (Code, ClassifiedBy::Explicit));
        let mut j = job("What is in this picture?");
        j.messages[0].images.push(crate::record::Image {
            url: "https://example.com/cat.png".into(),
            detail: crate::record::ImageDetail::Low,
        });
        assert_eq!(classify(&j, 10, &cfg).task, Vision);
    }

    #[test]
    fn long_conversations_raise_complexity() {
        let cfg = ClassifierConfig {
            long_context_tokens: 16000,
            max_turns: 10,
            ..crate::config::Config::embedded().classifier
        };
        let mut j = job("thanks! and what about tomorrow?");
        assert_eq!(classify(&j, 20, &cfg).complexity, Complexity::Simple);
        let turn = j.messages[0].clone();
        j.messages = (0..12)
            .map(|i| Message {
                role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
                ..turn.clone()
            })
            .collect();
        assert_eq!(classify(&j, 20, &cfg).complexity, Complexity::Moderate);
        assert_eq!(classify(&j, 20_000, &cfg).complexity, Complexity::Complex);
    }
}
