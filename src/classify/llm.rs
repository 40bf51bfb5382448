//! The LLM classifier (`[classifier.llm]`, seed 003): a cheap model asked for one word
//! about the records the local rules were unsure of (scope `unsure`), or about every
//! record they decided (`all`). Everything about it but the call itself lives here:
//! who is asked, the question, reading the answer, and its own line in reports. The
//! router prices the question (`route::classifier_question`); `run` makes the call,
//! reserved, rate-limited and charged like any other.

use std::sync::LazyLock;

use super::{ClassifiedBy, Decision};
use crate::config::{ClassifierConfig, LlmScope, Tokenizer};
use crate::record::{head, Job, Task};
use crate::tokens::{count_messages, count_text, is_letter_or_number, is_symbol};

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
/// encoding its whole text again, when that is exact: the record is one plain user
/// message, shown whole. o200k's pre-tokenizer splits the question where the text
/// starts (the `:\n` before it takes in only a line break or `/` that follows), so
/// the text's pieces are the message's own up to its last one; a text ending in a
/// letter or digit keeps that one too (`\n\n` joins no letter), and one ending in
/// punctuation after a letter or digit (and at most one space) hands that piece the
/// `\n\n`, so only it is counted again (after a mark, the punctuation run could have
/// begun earlier: not taken).
/// `None`: count the question itself.
pub fn question_o200k(job: &Job, cfg: &ClassifierConfig, record_o200k: u64) -> Option<u64> {
    let [m] = job.messages.as_slice() else {
        return None;
    };
    let text = m.text.as_str();
    let plain = m.role == "user" && m.name.is_none() && m.images.is_empty();
    let first = text.chars().next()?;
    if !plain || text.len() > cfg.llm.max_prompt_chars || matches!(first, '\n' | '\r' | '/') {
        return None;
    }
    static FIXED: LazyLock<[u64; 4]> = LazyLock::new(|| {
        let o = Tokenizer::O200k;
        [
            count_messages(o, &Job::from_prompt("", "").messages),
            count_text(o, &QUESTION_START),
            count_text(o, QUESTION_END),
            count_text(o, QUESTION_END.trim_start()),
        ]
    });
    let [empty, start, end, end_word] = *FIXED;
    let body = record_o200k.checked_sub(empty)?;
    let last = text.chars().next_back()?;
    if is_letter_or_number(last) {
        return Some(empty + start + body + end);
    }
    // The last piece: the closing run of punctuation, with one space before it.
    let run = text.trim_end_matches(is_symbol);
    let before = run.chars().next_back();
    let piece_at = match before {
        Some(c) if is_letter_or_number(c) => run.len(),
        Some(' ')
            if run[..run.len() - 1]
                .chars()
                .next_back()
                .is_some_and(is_letter_or_number) =>
        {
            run.len() - 1
        }
        _ => return None,
    };
    if piece_at == text.len() {
        return None;
    }
    let piece = &text[piece_at..];
    let o = Tokenizer::O200k;
    let joined = count_text(o, &format!("{piece}\n\n"));
    (empty + start + body + joined + end_word).checked_sub(count_text(o, piece))
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
        let bodies = [
            "hello world",
            "Summarize this ticket: the login page times out after 30 seconds",
            "Переведи на английский: доброе утро, как дела",
            "把这句话翻译成英文 谢谢",
            "café naïve déjà vu 2024",
            "x",
            "Explain   spaced   words\n\nacross lines 42",
            "नमस्ते दुनिया",
            "\"quoted\" start and (parens",
            "#include <stdio.h>\nint main() { return 0; }",
        ];
        let ends = [
            "",
            ".",
            "?",
            "!?",
            " .",
            "  ?",
            "...",
            "。",
            "！",
            "।",
            "\"",
            ")",
            ":",
            "/",
            " /",
            "\t.",
            "\n?",
            " ",
            "\n",
            " 🎉",
            "🎉",
            "e\u{301}",
            ".\u{301}",
            "\u{301}.",
            "..\u{301}.",
            "'s",
            " 's.",
            "123.",
            "1234",
        ];
        let starts = ["", " ", "\n", "/", "(", "¿", "**", "\t", "🎉 "];
        let (mut shortcut, mut all) = (0, 0);
        for body in bodies {
            for end in ends {
                for start in starts {
                    let t = format!("{start}{body}{end}");
                    let job = Job::from_prompt("1", &t);
                    let record = count_messages(Tokenizer::O200k, &job.messages);
                    let asked = count_messages(Tokenizer::O200k, &question(&job, &cfg).messages);
                    all += 1;
                    if let Some(n) = question_o200k(&job, &cfg, record) {
                        assert_eq!(n, asked, "{t:?}");
                        shortcut += 1;
                    }
                }
            }
        }
        assert!(
            shortcut * 5 > all * 2,
            "{shortcut} of {all} take the shortcut"
        );
        // The common shapes all do.
        for t in [
            "Fix my loop.",
            "What is this?",
            "Summarize this .",
            "翻译成英文。",
            "Why 42",
        ] {
            let job = Job::from_prompt("1", t);
            let record = count_messages(Tokenizer::O200k, &job.messages);
            assert!(question_o200k(&job, &cfg, record).is_some(), "{t:?}");
        }
        let long = "word ".repeat(1000) + "end";
        let job = Job::from_prompt("1", &long);
        let record = count_messages(Tokenizer::O200k, &job.messages);
        assert_eq!(question_o200k(&job, &cfg, record), None, "cut to its head");
    }
}
