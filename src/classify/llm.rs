//! The LLM classifier (`[classifier.llm]`, seed 003): a cheap model asked for one word
//! about the records the local rules were unsure of (scope `unsure`), or about every
//! record they decided (`all`). Everything about it but the call itself lives here:
//! who is asked, the question, reading the answer, and its own line in reports. The
//! router prices the question (`route::classifier_question`); `run` makes the call,
//! reserved, rate-limited and charged like any other.

use super::{ClassifiedBy, Decision};
use crate::config::{ClassifierConfig, LlmScope};
use crate::record::{head, Job, Task};

/// Output tokens a one-word answer is estimated (and capped) at.
pub const OUTPUT_TOKENS: u64 = 4;

/// The task words the model may answer (the ones the rules decide too).
const TASKS: [Task; 8] = [
    Task::Code,
    Task::Summarization,
    Task::Translation,
    Task::Classification,
    Task::Extraction,
    Task::Creative,
    Task::Reasoning,
    Task::Chat,
];

/// Whether the local model was unsure of this decision: it decided from text (never
/// an explicit task, images or tool messages) with a confidence below the threshold
/// (`min_confidence`, else the one the local model was calibrated with). `plan` counts
/// these whether or not the LLM classifier is on.
pub fn is_unsure(d: &Decision, cfg: &ClassifierConfig) -> bool {
    d.classified_by == ClassifiedBy::Local && d.confidence < unsure_below(cfg)
}

/// The confidence below which a local decision is unsure.
pub fn unsure_below(cfg: &ClassifierConfig) -> f32 {
    cfg.llm
        .min_confidence
        .unwrap_or_else(|| cfg.model.as_ref().map_or(0.5, |m| m.header.unsure_below))
}

/// Whether the model should be asked about this record: only decisions of the local
/// classifier from text, and with scope `unsure` only those it is unsure of.
pub fn wants(d: &Decision, cfg: &ClassifierConfig) -> bool {
    cfg.llm.enabled
        && d.classified_by == ClassifiedBy::Local
        && d.confidence < 1.0
        && (cfg.llm.scope == LlmScope::All || is_unsure(d, cfg))
}

/// The record as the model is asked about it: seed 003's one-word question over our
/// task words, showing the first `max_prompt_chars` of the last user message. It
/// carries the record's tags, so a tagged record's text only goes where the tag is
/// allowed (otherwise the local decision stands).
pub fn question(job: &Job, cfg: &ClassifierConfig) -> Job {
    let words: Vec<&str> = TASKS.iter().map(|t| t.as_str()).collect();
    let text = format!(
        "Classify the request below. Return one word, one of: {}.\n\nRequest:\n{}\n\nClassification:",
        words.join(", "),
        head(job.last_user_text(), cfg.llm.max_prompt_chars)
    );
    Job {
        max_tokens: Some(OUTPUT_TOKENS as u32),
        temperature: Some(0.0),
        tags: job.tags.clone(),
        ..Job::from_prompt(&job.id, &text)
    }
}

/// The decision an answer makes: its first word, if it is a task word, with the
/// record's complexity kept; `None` for an answer that is not one.
pub fn decided(decision: &Decision, answer: &str) -> Option<Decision> {
    let word = answer
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_alphabetic())
        .to_ascii_lowercase();
    let task: Task = word.parse().ok()?;
    TASKS.contains(&task).then_some(Decision {
        task,
        classified_by: ClassifiedBy::Llm,
        ..*decision
    })
}

/// The report line its calls are charged to: `MODEL (classifier)`.
pub fn report_label(model: &str) -> String {
    format!("{model} (classifier)")
}
