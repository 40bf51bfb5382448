//! The LLM classifier (`[classifier.llm]`, seed 003): a cheap model asked for one word
//! about the records the local rules were unsure of (scope `unsure`), or about every
//! record they decided (`all`). Everything about it but the call itself lives here:
//! who is asked, the question, reading the answer, and its own line in reports. The
//! router prices the question (`route::classifier_question`); `run` makes the call,
//! reserved, rate-limited and charged like any other.

use super::{ClassifiedBy, Decision};
use crate::config::{ClassifierConfig, LlmScope};
use std::sync::LazyLock;

use crate::config::Tokenizer;
use crate::record::{head, Job, Task};
use crate::tokens::{count_messages, count_text, is_letter_or_number};

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

/// The question's words before the record's text, and after it.
static QUESTION_START: LazyLock<String> = LazyLock::new(|| {
    let words: Vec<&str> = TASKS.iter().map(|t| t.as_str()).collect();
    format!(
        "Classify the request below. Return one word, one of: {}.\n\nRequest:\n",
        words.join(", ")
    )
});
const QUESTION_END: &str = "\n\nClassification:";

/// The record as the model is asked about it: seed 003's one-word question over our
/// task words, showing the first `max_prompt_chars` of the last user message. It
/// carries the record's tags, so a tagged record's text only goes where the tag is
/// allowed (otherwise the local decision stands).
pub fn question(job: &Job, cfg: &ClassifierConfig) -> Job {
    let text = format!(
        "{}{}{QUESTION_END}",
        *QUESTION_START,
        head(job.last_user_text(), cfg.llm.max_prompt_chars)
    );
    Job {
        max_tokens: Some(OUTPUT_TOKENS as u32),
        temperature: Some(0.0),
        tags: job.tags.clone(),
        ..Job::from_prompt(&job.id, &text)
    }
}

/// The o200k tokens of [`question`], from the record's own o200k count instead of
/// encoding its text again, when the two add up exactly: the record is one plain user
/// message, shown whole, that starts and ends with a letter or digit. o200k's
/// pre-tokenizer then splits the question at the text's ends (the `:\n` before it
/// takes no letter, the `\n\n` after it joins no letter), so the text's pieces are the
/// message's own. `None`: count the question itself.
pub fn question_o200k(job: &Job, cfg: &ClassifierConfig, record_o200k: u64) -> Option<u64> {
    let [m] = job.messages.as_slice() else {
        return None;
    };
    let plain = m.role == "user" && m.name.is_none() && m.images.is_empty();
    let clean = |c: Option<char>| c.is_some_and(is_letter_or_number);
    if !plain
        || m.text.len() > cfg.llm.max_prompt_chars
        || !clean(m.text.chars().next())
        || !clean(m.text.chars().next_back())
    {
        return None;
    }
    static FIXED: LazyLock<(u64, u64)> = LazyLock::new(|| {
        let o = Tokenizer::O200k;
        let empty = count_messages(o, &Job::from_prompt("", "").messages);
        let words = count_text(o, &QUESTION_START) + count_text(o, QUESTION_END);
        (empty, words)
    });
    let (empty, words) = *FIXED;
    Some(record_o200k.checked_sub(empty)? + empty + words)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_question_is_counted_from_the_record_exactly_when_it_can_be() {
        let cfg = Config::embedded().classifier;
        let texts = [
            "hello world",
            "Summarize this ticket: the login page times out after 30 seconds",
            "Переведи на английский: доброе утро, как дела",
            "把这句话翻译成英文 谢谢",
            "café naïve déjà vu 2024",
            "x",
            "Explain   spaced   words\n\nacross lines 42",
            "ends with a dot.",
            "ends with a space ",
            "\nstarts with a newline",
            "/starts with a slash",
            "ends with an emoji 🎉",
            " starts with a space",
        ];
        let mut shortcut = 0;
        for t in texts {
            let job = Job::from_prompt("1", t);
            let record = count_messages(Tokenizer::O200k, &job.messages);
            let asked = count_messages(Tokenizer::O200k, &question(&job, &cfg).messages);
            if let Some(n) = question_o200k(&job, &cfg, record) {
                assert_eq!(n, asked, "{t:?}");
                shortcut += 1;
            }
        }
        assert_eq!(
            shortcut, 7,
            "plain texts take the shortcut, the others are counted"
        );
        let long = "word ".repeat(1000) + "end";
        let job = Job::from_prompt("1", &long);
        let record = count_messages(Tokenizer::O200k, &job.messages);
        assert_eq!(question_o200k(&job, &cfg, record), None, "cut to its head");
    }
}
