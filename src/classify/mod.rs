//! The local classifier: Job -> (task, complexity, deciding reason). Pure and
//! deterministic, no API call. It scores weighted cues (verbs, artifacts, roleplay
//! framing, math and code shapes) found by one Aho-Corasick pass over the head and tail
//! of the last user message (system prompt at half weight), plus structural signals
//! (image parts, tool messages, `labels`, JSON output, conversation length, size).

use std::fmt;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

mod cues;
pub mod llm;
pub mod model;
pub mod train;

use crate::config::ClassifierConfig;
use crate::record::{head, tail, word_enum, Complexity, Job, Task};
use cues::{Vote, CUES, LANGUAGES, LANGUAGE_WEIGHT};
use Task::*;

word_enum!(
    /// How the task was decided: the record's own `task` field, the local rules, or
    /// the LLM classifier (`[classifier.llm]`).
    ClassifiedBy {
        Explicit = "explicit",
        Local = "local",
        Llm = "llm",
    }
);

/// The signal that decided the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Explicit,
    Images,
    ToolMessages,
    Labels,
    /// The strongest cue of the winning task, and the task's total score.
    Cue(&'static str, u16),
    CodeShape(u16),
    MathShape(u16),
    /// Nothing scored high enough: conversation.
    Default,
    /// The learned model decided (see [`Decision::confidence`]).
    Model,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Explicit => f.write_str("task field"),
            Reason::Images => f.write_str("image parts"),
            Reason::ToolMessages => f.write_str("tool messages"),
            Reason::Labels => f.write_str("labels field"),
            Reason::Cue(cue, score) => {
                write!(f, "cue '{}' (score {score})", cue.trim_end_matches('*'))
            }
            Reason::CodeShape(score) => write!(f, "code shape (score {score})"),
            Reason::MathShape(score) => write!(f, "math shape (score {score})"),
            Reason::Default => f.write_str("no strong cue"),
            Reason::Model => f.write_str("model"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub task: Task,
    pub complexity: Complexity,
    pub classified_by: ClassifiedBy,
    pub reason: Reason,
    /// How likely the task is right, 0 to 1: the model's calibrated probability; 1
    /// for a fact of the record (its `task`, images, tool messages).
    pub confidence: f32,
}

/// A task needs at least this score (in half-points) to beat the `chat` default.
const THRESHOLD: u16 = 6;
/// Roleplay cue weight (user text) that frames the whole request as creative.
const PERSONA_THRESHOLD: u16 = 4;

struct Automaton {
    ac: AhoCorasick,
    /// Per pattern: index into CUES, or CUES.len() + i for LANGUAGES[i].
    prefix: Vec<bool>,
}

static AUTOMATON: LazyLock<Automaton> = LazyLock::new(|| {
    let mut patterns: Vec<&str> = CUES.iter().map(|c| c.0.trim_end_matches('*')).collect();
    patterns.extend(LANGUAGES.iter().copied());
    let mut prefix: Vec<bool> = CUES.iter().map(|c| c.0.ends_with('*')).collect();
    prefix.extend(LANGUAGES.iter().map(|_| false));
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::Standard)
        .kind(Some(AhoCorasickKind::DFA))
        .build(&patterns)
        .expect("cue patterns build");
    Automaton { ac, prefix }
});

const TASK_COUNT: usize = Task::ALL.len();
/// Bytes read from the head and the tail of a long message: instructions live there,
/// not in the middle of the pasted document.
const HEAD_BYTES: usize = 2048;
const TAIL_BYTES: usize = 768;
const SYSTEM_BYTES: usize = 768;

#[derive(Default)]
struct Scores {
    task: [u16; TASK_COUNT],
    best_cue: [Option<(&'static str, u16)>; TASK_COUNT],
    hard: u16,
    /// Roleplay framing in the user's words, and its strongest cue.
    persona: u16,
    persona_cue: Option<&'static str>,
    seen: [u64; 6],
    language_seen: bool,
}

impl Scores {
    fn add(&mut self, task: Task, weight: u16, cue: Option<&'static str>) {
        let i = task as usize;
        self.task[i] += weight;
        if let Some(cue) = cue {
            if self.best_cue[i].is_none_or(|(_, w)| weight > w) {
                self.best_cue[i] = Some((cue, weight));
            }
        }
    }

    /// Scans `text`; `double` weights count twice (user text) vs once (system text).
    fn scan(&mut self, text: &str, user: bool) {
        let auto = &*AUTOMATON;
        let bytes = text.as_bytes();
        let factor = if user { 2 } else { 1 };
        for m in auto.ac.find_overlapping_iter(text) {
            let p = m.pattern().as_usize();
            if m.start() > 0 && is_word(bytes[m.start() - 1]) {
                continue;
            }
            let last = bytes[m.end() - 1];
            if is_word(last) && !auto.prefix[p] && m.end() < bytes.len() && is_word(bytes[m.end()])
            {
                continue;
            }
            let (word, bit) = (p / 64, 1u64 << (p % 64));
            if self.seen[word] & bit != 0 {
                continue;
            }
            self.seen[word] |= bit;
            if p >= CUES.len() {
                if !self.language_seen {
                    self.language_seen = true;
                    self.add(
                        Code,
                        LANGUAGE_WEIGHT * factor,
                        Some(LANGUAGES[p - CUES.len()]),
                    );
                }
                continue;
            }
            let (cue, vote, weight) = CUES[p];
            match vote {
                Vote::Task(t) => self.add(t, weight * factor, Some(cue)),
                Vote::Roleplay if user => {
                    self.persona += weight;
                    if self.persona_cue.is_none() {
                        self.persona_cue = Some(cue);
                    }
                }
                Vote::Roleplay => {}
                Vote::Hard => self.hard += 1,
            }
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The bytes that can start a shape in [`shapes`] (the first bytes of its match arms).
static SHAPE_START: [bool; 256] = {
    let mut table = [false; 256];
    let starts = b"{};(=-^+*/<>0123456789$`#df";
    let mut i = 0;
    while i < starts.len() {
        table[starts[i] as usize] = true;
        i += 1;
    }
    table
};

/// Counts shapes in the text: code punctuation and math notation.
fn shapes(text: &str) -> (u16, u16) {
    let b = text.as_bytes();
    let (mut code, mut math) = (0u16, 0u16);
    let mut numbers = 0u16;
    let mut fence = false;
    let mut keyword = false;
    for i in 0..b.len() {
        // Most bytes (letters, spaces) start no shape: one table lookup skips them.
        if !SHAPE_START[usize::from(b[i])] {
            continue;
        }
        let prev = if i > 0 { b[i - 1] } else { b' ' };
        let next = b.get(i + 1).copied().unwrap_or(b' ');
        match b[i] {
            b'{' | b'}' | b';' => code += 1,
            b'(' if next == b')' => code += 1,
            b'=' if next == b'>' || next == b'=' => code += 1,
            b'-' if next == b'>' => code += 1,
            b'^' => math += 2,
            b'=' if prev == b' ' && next == b' ' => math += 2,
            b'+' | b'*' | b'/' | b'<' | b'>'
                if (prev.is_ascii_alphanumeric() || prev == b' ')
                    && (next.is_ascii_alphanumeric() || next == b' ') =>
            {
                math += 1
            }
            b'0'..=b'9' if !prev.is_ascii_digit() && prev != b'.' && prev != b',' => numbers += 1,
            b'$' if next.is_ascii_digit() => math += 2,
            b'`' if b[i..].starts_with(b"```") => fence = true,
            b'#' if b[i..].starts_with(b"#include") => keyword = true,
            b'd' | b'f'
                if !is_word(prev)
                    && (b[i..].starts_with(b"def ") || b[i..].starts_with(b"fn ")) =>
            {
                keyword = true
            }
            _ => {}
        }
    }
    if fence {
        code += 12;
    }
    if keyword {
        code += 3;
    }
    math += match numbers {
        0..=2 => 0,
        3..=4 => 4,
        _ => 6,
    };
    (code.min(16), math.min(8))
}

/// Classifies a record. `prompt_tokens` is its o200k prompt size.
pub fn classify(job: &Job, prompt_tokens: u64, cfg: &ClassifierConfig) -> Decision {
    let user = job.last_user_text();
    let mut s = Scores::default();
    s.scan(head(user, HEAD_BYTES), true);
    if user.len() > HEAD_BYTES + TAIL_BYTES {
        s.scan(tail(user, TAIL_BYTES), true);
    }
    for sys in job.system_text() {
        s.scan(head(sys, SYSTEM_BYTES), false);
    }
    let (code_shape, math_shape) = shapes(head(user, HEAD_BYTES));
    let opening = user.trim_start().as_bytes();
    let starts = |p: &[u8]| opening.len() >= p.len() && opening[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"as a ") || starts(b"as an ") {
        s.persona += 5;
        s.persona_cue.get_or_insert("as a");
    }

    let (task, reason, confidence, by) = if let Some(t) = job.task {
        (t, Reason::Explicit, 1.0, ClassifiedBy::Explicit)
    } else if job.has_images() {
        (Vision, Reason::Images, 1.0, ClassifiedBy::Local)
    } else if job
        .messages
        .iter()
        .any(|m| m.role == "tool" || m.role == "function")
    {
        (Agent, Reason::ToolMessages, 1.0, ClassifiedBy::Local)
    } else if let Some(m) = &cfg.model {
        let p = SCRATCH.with_borrow_mut(|scratch| m.predict(job, scratch));
        (p.task, Reason::Model, p.confidence, ClassifiedBy::Local)
    } else {
        if job.labels.as_ref().is_some_and(|l| !l.is_empty()) {
            s.add(Classification, 16, None);
        }
        if job
            .response_format
            .as_ref()
            .and_then(|r| r.get("type"))
            .and_then(|t| t.as_str())
            .is_some_and(|t| t.starts_with("json"))
        {
            s.add(Extraction, 3, None);
        }
        s.add(Code, code_shape, None);
        s.add(Reasoning, math_shape, None);
        let (task, reason, margin, by) = pick(&s, job, code_shape, math_shape);
        (
            task,
            reason,
            f32::from(margin) / (f32::from(margin) + 6.0),
            by,
        )
    };

    let complexity = complexity(task, &s, job, prompt_tokens, cfg, math_shape);
    Decision {
        task,
        complexity,
        classified_by: by,
        reason,
        confidence,
    }
}

thread_local! {
    /// Each worker's buffer for a record's model features.
    static SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn pick(
    s: &Scores,
    job: &Job,
    code_shape: u16,
    math_shape: u16,
) -> (Task, Reason, u16, ClassifiedBy) {
    // Ties resolve in this order: the more specific request wins.
    const ORDER: [Task; 8] = [
        Translation,
        Summarization,
        Extraction,
        Classification,
        Code,
        Reasoning,
        Creative,
        Chat,
    ];
    let mut best = Chat;
    let mut best_score = 0u16;
    let mut second = 0u16;
    for t in ORDER {
        let v = s.task[t as usize];
        if v > best_score {
            second = best_score;
            best = t;
            best_score = v;
        } else if v > second {
            second = v;
        }
    }
    // A persona frame ("act as a ...", "pretend to be ...") makes the request a
    // performance whatever its topic, unless it carries code to work on.
    if s.persona >= PERSONA_THRESHOLD && code_shape < 12 {
        let cue = s.persona_cue.unwrap_or("persona");
        return (
            Creative,
            Reason::Cue(cue, s.persona * 2),
            s.persona * 2,
            ClassifiedBy::Local,
        );
    }
    if best_score < THRESHOLD || best == Chat {
        return (
            Chat,
            Reason::Default,
            THRESHOLD.saturating_sub(best_score),
            ClassifiedBy::Local,
        );
    }
    let reason = match s.best_cue[best as usize] {
        Some((cue, _)) => Reason::Cue(cue, best_score),
        None if best == Code && code_shape > 0 => Reason::CodeShape(best_score),
        None if best == Reasoning && math_shape > 0 => Reason::MathShape(best_score),
        None if best == Classification && job.labels.is_some() => Reason::Labels,
        None => Reason::Default,
    };
    (best, reason, best_score - second, ClassifiedBy::Local)
}

fn complexity(
    task: Task,
    s: &Scores,
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
    if s.hard >= 2 {
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
