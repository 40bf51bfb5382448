//! The local classifier: Job -> (task, complexity, deciding reason). Pure and
//! deterministic, no API call. It scores weighted cues (verbs, artifacts, roleplay
//! framing, math and code shapes) found by one Aho-Corasick pass over the head and tail
//! of the last user message (system prompt at half weight), plus structural signals
//! (image parts, tool messages, `labels`, JSON output, conversation length, size).

use std::fmt;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};

use crate::config::{ClassifierConfig, LlmScope};
use crate::record::{Complexity, Job, Task};

/// How the task was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifiedBy {
    /// The record's own `task` field.
    Explicit,
    /// The local rules.
    Local,
    /// The LLM classifier (`[classifier.llm]`).
    Llm,
}

impl ClassifiedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ClassifiedBy::Explicit => "explicit",
            ClassifiedBy::Local => "local",
            ClassifiedBy::Llm => "llm",
        }
    }
}

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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub task: Task,
    pub complexity: Complexity,
    pub classified_by: ClassifiedBy,
    pub reason: Reason,
    /// Winning score minus the runner-up; low values mark an unsure decision.
    pub margin: u16,
}

/// Whether `[classifier.llm]` should see this record: only decisions of the local
/// rules (never an explicit task, images or tool messages), and with scope `unsure`
/// only those won by a small margin.
pub fn wants_llm(d: &Decision, cfg: &ClassifierConfig) -> bool {
    cfg.llm.enabled
        && d.classified_by == ClassifiedBy::Local
        && d.margin != u16::MAX
        && (cfg.llm.scope == LlmScope::All || d.margin < cfg.llm.max_margin)
}

/// The task words the LLM classifier may answer (the ones the rules decide too).
const LLM_TASKS: [Task; 8] = [
    Task::Code,
    Task::Summarization,
    Task::Translation,
    Task::Classification,
    Task::Extraction,
    Task::Creative,
    Task::Reasoning,
    Task::Chat,
];

/// The one-word question (seed 003's prompt, over our task words), showing the first
/// `max_prompt_chars` of the record's last user message.
pub fn llm_prompt(job: &Job, cfg: &ClassifierConfig) -> String {
    let text = job
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| m.text.as_str());
    let mut end = text.len().min(cfg.llm.max_prompt_chars);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let words: Vec<&str> = LLM_TASKS.iter().map(|t| t.as_str()).collect();
    format!(
        "Classify the request below. Return one word, one of: {}.\n\nRequest:\n{}\n\nClassification:",
        words.join(", "),
        &text[..end]
    )
}

/// The task in an LLM classifier's answer: its first word, if it is a task word.
pub fn parse_llm_answer(answer: &str) -> Option<Task> {
    let word = answer
        .split_whitespace()
        .next()?
        .trim_matches(|c: char| !c.is_ascii_alphabetic())
        .to_ascii_lowercase();
    let task: Task = word.parse().ok()?;
    LLM_TASKS.contains(&task).then_some(task)
}

/// A task needs at least this score (in half-points) to beat the `chat` default.
const THRESHOLD: u16 = 6;
/// Roleplay cue weight (user text) that frames the whole request as creative.
const PERSONA_THRESHOLD: u16 = 4;

/// Cue kinds: which task a phrase votes for, or the complexity it signals.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Vote {
    Task(Task),
    /// Only counted in the user's own words, never in a system prompt.
    Roleplay,
    Hard,
}

use Task::*;
use Vote::Hard;
use Vote::Roleplay;

/// (phrase, vote, weight). A trailing `*` matches any word ending (`summar*` covers
/// summary, summarize, summarise). Matching is ASCII case-insensitive on word bounds.
const CUES: &[(&str, Vote, u16)] = &[
    // summarization
    ("summar*", Vote::Task(Summarization), 7),
    ("tl;dr", Vote::Task(Summarization), 5),
    ("tldr", Vote::Task(Summarization), 5),
    ("key takeaways", Vote::Task(Summarization), 4),
    ("main points", Vote::Task(Summarization), 3),
    ("key points", Vote::Task(Summarization), 3),
    ("meeting notes", Vote::Task(Summarization), 2),
    ("condense", Vote::Task(Summarization), 4),
    ("recap", Vote::Task(Summarization), 4),
    ("boil down", Vote::Task(Summarization), 4),
    ("gist", Vote::Task(Summarization), 4),
    ("shorten", Vote::Task(Summarization), 4),
    ("boil", Vote::Task(Summarization), 2),
    ("in one paragraph", Vote::Task(Summarization), 2),
    ("to one paragraph", Vote::Task(Summarization), 2),
    ("brief overview", Vote::Task(Summarization), 2),
    ("in one sentence", Vote::Task(Summarization), 2),
    ("in two sentences", Vote::Task(Summarization), 2),
    ("in three sentences", Vote::Task(Summarization), 2),
    ("in a few sentences", Vote::Task(Summarization), 2),
    ("abstract", Vote::Task(Summarization), 1),
    // translation
    ("translat*", Vote::Task(Translation), 7),
    ("localize", Vote::Task(Translation), 3),
    ("localise", Vote::Task(Translation), 3),
    ("how do you say", Vote::Task(Translation), 4),
    ("into english", Vote::Task(Translation), 3),
    ("into french", Vote::Task(Translation), 3),
    ("into spanish", Vote::Task(Translation), 3),
    ("into german", Vote::Task(Translation), 3),
    ("into chinese", Vote::Task(Translation), 3),
    ("into japanese", Vote::Task(Translation), 3),
    ("into korean", Vote::Task(Translation), 3),
    ("into arabic", Vote::Task(Translation), 3),
    ("into portuguese", Vote::Task(Translation), 3),
    ("into italian", Vote::Task(Translation), 3),
    ("into russian", Vote::Task(Translation), 3),
    ("into hindi", Vote::Task(Translation), 3),
    ("into dutch", Vote::Task(Translation), 3),
    ("into turkish", Vote::Task(Translation), 3),
    ("into vietnamese", Vote::Task(Translation), 3),
    ("into polish", Vote::Task(Translation), 3),
    ("to english", Vote::Task(Translation), 2),
    ("to french", Vote::Task(Translation), 2),
    ("to spanish", Vote::Task(Translation), 2),
    ("to german", Vote::Task(Translation), 2),
    ("to chinese", Vote::Task(Translation), 2),
    ("to japanese", Vote::Task(Translation), 2),
    ("from english", Vote::Task(Translation), 2),
    ("in french", Vote::Task(Translation), 1),
    ("in spanish", Vote::Task(Translation), 1),
    ("in german", Vote::Task(Translation), 1),
    ("in chinese", Vote::Task(Translation), 1),
    ("in japanese", Vote::Task(Translation), 1),
    // classification
    ("classif*", Vote::Task(Classification), 7),
    ("categori*", Vote::Task(Classification), 4),
    ("sentiment", Vote::Task(Classification), 5),
    ("label*", Vote::Task(Classification), 3),
    ("positive or negative", Vote::Task(Classification), 4),
    ("positive, negative", Vote::Task(Classification), 4),
    ("positive, neutral", Vote::Task(Classification), 4),
    ("spam", Vote::Task(Classification), 2),
    ("which category", Vote::Task(Classification), 4),
    ("one of the following", Vote::Task(Classification), 2),
    ("on a scale of", Vote::Task(Classification), 3),
    ("intent", Vote::Task(Classification), 2),
    ("toxic", Vote::Task(Classification), 2),
    ("tag each", Vote::Task(Classification), 3),
    ("assign", Vote::Task(Classification), 2),
    ("answer with only", Vote::Task(Classification), 2),
    ("respond with only", Vote::Task(Classification), 2),
    ("yes or no", Vote::Task(Classification), 2),
    // extraction
    ("extract*", Vote::Task(Extraction), 7),
    ("named entit*", Vote::Task(Extraction), 6),
    ("entities", Vote::Task(Extraction), 3),
    ("pull out", Vote::Task(Extraction), 3),
    ("identify the", Vote::Task(Extraction), 2),
    ("json format", Vote::Task(Extraction), 3),
    ("as json", Vote::Task(Extraction), 3),
    ("in json", Vote::Task(Extraction), 3),
    ("json object", Vote::Task(Extraction), 3),
    ("json dictionary", Vote::Task(Extraction), 3),
    ("json string", Vote::Task(Extraction), 3),
    ("json array", Vote::Task(Extraction), 3),
    ("csv", Vote::Task(Extraction), 2),
    ("key-value", Vote::Task(Extraction), 3),
    ("fields", Vote::Task(Extraction), 1),
    ("list all the", Vote::Task(Extraction), 2),
    ("from the following", Vote::Task(Extraction), 2),
    ("the following data", Vote::Task(Extraction), 2),
    ("the following text", Vote::Task(Extraction), 2),
    ("from the presented", Vote::Task(Extraction), 2),
    ("mentioned in", Vote::Task(Extraction), 2),
    ("how many times", Vote::Task(Extraction), 2),
    ("return the results", Vote::Task(Extraction), 2),
    ("output in the format", Vote::Task(Extraction), 2),
    ("in the format", Vote::Task(Extraction), 1),
    ("structured data", Vote::Task(Extraction), 3),
    ("schema", Vote::Task(Extraction), 3),
    ("invoice", Vote::Task(Extraction), 1),
    // code
    ("function", Vote::Task(Code), 3),
    ("program", Vote::Task(Code), 1),
    ("a program", Vote::Task(Code), 2),
    ("program that", Vote::Task(Code), 2),
    ("program to", Vote::Task(Code), 2),
    ("algorithm", Vote::Task(Code), 3),
    ("data structure*", Vote::Task(Code), 3),
    ("implement", Vote::Task(Code), 3),
    ("refactor*", Vote::Task(Code), 6),
    ("debug*", Vote::Task(Code), 5),
    ("bug", Vote::Task(Code), 3),
    ("bugs", Vote::Task(Code), 3),
    ("compile*", Vote::Task(Code), 3),
    ("stack trace", Vote::Task(Code), 5),
    ("traceback", Vote::Task(Code), 5),
    ("exception", Vote::Task(Code), 2),
    ("unit test*", Vote::Task(Code), 4),
    ("code", Vote::Task(Code), 3),
    ("snippet", Vote::Task(Code), 3),
    ("script", Vote::Task(Code), 2),
    ("class", Vote::Task(Code), 1),
    ("method", Vote::Task(Code), 1),
    ("endpoint", Vote::Task(Code), 2),
    ("api", Vote::Task(Code), 1),
    ("regex", Vote::Task(Code), 4),
    ("regular expression", Vote::Task(Code), 4),
    ("sql", Vote::Task(Code), 3),
    ("query", Vote::Task(Code), 1),
    ("array*", Vote::Task(Code), 2),
    ("linked list", Vote::Task(Code), 3),
    ("binary tree", Vote::Task(Code), 3),
    ("binary search", Vote::Task(Code), 3),
    ("hash map", Vote::Task(Code), 3),
    ("recursion", Vote::Task(Code), 3),
    ("recursive*", Vote::Task(Code), 2),
    ("dynamic programming", Vote::Task(Code), 3),
    ("time complexity", Vote::Task(Code), 3),
    ("space complexity", Vote::Task(Code), 3),
    ("pseudocode", Vote::Task(Code), 4),
    ("syntax", Vote::Task(Code), 2),
    ("html", Vote::Task(Code), 2),
    ("css", Vote::Task(Code), 2),
    ("website", Vote::Task(Code), 1),
    ("dockerfile", Vote::Task(Code), 4),
    ("stack", Vote::Task(Code), 1),
    ("stacks", Vote::Task(Code), 1),
    ("queue", Vote::Task(Code), 1),
    // creative writing (and editing someone's prose)
    ("story", Vote::Task(Creative), 4),
    ("stories", Vote::Task(Creative), 4),
    ("poem*", Vote::Task(Creative), 5),
    ("poetry", Vote::Task(Creative), 5),
    ("haiku", Vote::Task(Creative), 5),
    ("limerick", Vote::Task(Creative), 5),
    ("sonnet", Vote::Task(Creative), 5),
    ("lyrics", Vote::Task(Creative), 5),
    ("song", Vote::Task(Creative), 3),
    ("essay", Vote::Task(Creative), 4),
    ("blog", Vote::Task(Creative), 4),
    ("article", Vote::Task(Creative), 2),
    ("letter", Vote::Task(Creative), 3),
    ("email", Vote::Task(Creative), 3),
    ("speech", Vote::Task(Creative), 3),
    ("screenplay", Vote::Task(Creative), 5),
    ("podcast", Vote::Task(Creative), 2),
    ("podcast script", Vote::Task(Creative), 3),
    ("script for a", Vote::Task(Creative), 2),
    ("youtube", Vote::Task(Creative), 2),
    ("dialogue", Vote::Task(Creative), 2),
    ("narrative", Vote::Task(Creative), 3),
    ("fiction*", Vote::Task(Creative), 4),
    ("character", Vote::Task(Creative), 2),
    ("plot", Vote::Task(Creative), 2),
    ("slogan", Vote::Task(Creative), 4),
    ("tagline", Vote::Task(Creative), 4),
    ("headline", Vote::Task(Creative), 4),
    ("catchy", Vote::Task(Creative), 3),
    ("tweet", Vote::Task(Creative), 2),
    ("caption", Vote::Task(Creative), 2),
    ("product description", Vote::Task(Creative), 3),
    ("advertisement", Vote::Task(Creative), 3),
    ("marketing copy", Vote::Task(Creative), 3),
    ("social media post", Vote::Task(Creative), 3),
    ("announcement", Vote::Task(Creative), 3),
    ("invitation", Vote::Task(Creative), 3),
    ("toast", Vote::Task(Creative), 3),
    ("linkedin", Vote::Task(Creative), 2),
    ("a post", Vote::Task(Creative), 2),
    ("review", Vote::Task(Creative), 1),
    ("rewrite", Vote::Task(Creative), 3),
    ("rephrase", Vote::Task(Creative), 3),
    ("paraphrase", Vote::Task(Creative), 3),
    ("proofread", Vote::Task(Creative), 4),
    ("grammatical", Vote::Task(Creative), 3),
    ("grammar", Vote::Task(Creative), 3),
    ("edit the following", Vote::Task(Creative), 3),
    ("vivid", Vote::Task(Creative), 3),
    ("imagery", Vote::Task(Creative), 3),
    ("creative", Vote::Task(Creative), 3),
    ("sensory", Vote::Task(Creative), 2),
    ("descriptive", Vote::Task(Creative), 2),
    ("paragraph", Vote::Task(Creative), 1),
    ("outline", Vote::Task(Creative), 2),
    ("compose", Vote::Task(Creative), 2),
    ("draft", Vote::Task(Creative), 2),
    ("craft", Vote::Task(Creative), 2),
    ("brainstorm", Vote::Task(Creative), 3),
    ("persuasive", Vote::Task(Creative), 3),
    ("captivating", Vote::Task(Creative), 2),
    ("engaging", Vote::Task(Creative), 2),
    ("write a", Vote::Task(Creative), 2),
    ("letter of", Vote::Task(Creative), 2),
    ("formal", Vote::Task(Creative), 1),
    // roleplay framing: creative, and strong
    ("pretend", Roleplay, 6),
    ("roleplay", Roleplay, 6),
    ("role-play", Roleplay, 6),
    ("role play", Roleplay, 6),
    ("role of", Roleplay, 5),
    ("act as", Roleplay, 6),
    ("imagine you are a", Roleplay, 6),
    ("imagine you are an", Roleplay, 6),
    ("pretend to be", Roleplay, 6),
    ("yourself as a", Roleplay, 5),
    ("yourself as an", Roleplay, 5),
    ("suppose you are a", Roleplay, 5),
    ("if you were a", Roleplay, 5),
    ("you are a", Roleplay, 4),
    ("you are an", Roleplay, 4),
    ("persona", Roleplay, 5),
    ("embody", Roleplay, 5),
    ("in character", Roleplay, 5),
    ("speak like", Roleplay, 5),
    ("talk like", Roleplay, 5),
    ("in the voice of", Roleplay, 4),
    // reasoning and math
    ("solve", Vote::Task(Reasoning), 4),
    ("calculat*", Vote::Task(Reasoning), 4),
    ("equation*", Vote::Task(Reasoning), 4),
    ("probability", Vote::Task(Reasoning), 4),
    ("how many", Vote::Task(Reasoning), 2),
    ("how much", Vote::Task(Reasoning), 2),
    ("total cost", Vote::Task(Reasoning), 2),
    ("km/h", Vote::Task(Reasoning), 2),
    ("mph", Vote::Task(Reasoning), 2),
    ("per hour", Vote::Task(Reasoning), 1),
    ("segment", Vote::Task(Reasoning), 2),
    ("triangle", Vote::Task(Reasoning), 3),
    ("circle", Vote::Task(Reasoning), 2),
    ("angle", Vote::Task(Reasoning), 2),
    ("coordinates", Vote::Task(Reasoning), 2),
    ("length of", Vote::Task(Reasoning), 1),
    ("with an explanation", Vote::Task(Reasoning), 2),
    ("answer the question*", Vote::Task(Reasoning), 1),
    ("total amount", Vote::Task(Reasoning), 2),
    ("explain your reasoning", Vote::Task(Reasoning), 3),
    ("find the value", Vote::Task(Reasoning), 4),
    ("what is the value", Vote::Task(Reasoning), 4),
    ("area", Vote::Task(Reasoning), 2),
    ("perimeter", Vote::Task(Reasoning), 3),
    ("volume", Vote::Task(Reasoning), 1),
    ("radius", Vote::Task(Reasoning), 2),
    ("remainder", Vote::Task(Reasoning), 3),
    ("integer*", Vote::Task(Reasoning), 2),
    ("inequality", Vote::Task(Reasoning), 3),
    ("prove", Vote::Task(Reasoning), 4),
    ("proof", Vote::Task(Reasoning), 3),
    ("theorem", Vote::Task(Reasoning), 4),
    ("derivative", Vote::Task(Reasoning), 4),
    ("integral", Vote::Task(Reasoning), 4),
    ("math*", Vote::Task(Reasoning), 3),
    ("percent*", Vote::Task(Reasoning), 1),
    ("average", Vote::Task(Reasoning), 1),
    ("total", Vote::Task(Reasoning), 1),
    ("step by step", Vote::Task(Reasoning), 3),
    ("step-by-step", Vote::Task(Reasoning), 3),
    ("riddle", Vote::Task(Reasoning), 4),
    ("puzzle", Vote::Task(Reasoning), 4),
    ("logic*", Vote::Task(Reasoning), 3),
    ("deduce", Vote::Task(Reasoning), 3),
    ("true or false", Vote::Task(Reasoning), 2),
    ("true, false", Vote::Task(Reasoning), 2),
    ("reasoning", Vote::Task(Reasoning), 3),
    ("explain your answer", Vote::Task(Reasoning), 3),
    ("estimate", Vote::Task(Reasoning), 2),
    ("relationship between", Vote::Task(Reasoning), 2),
    ("does not belong", Vote::Task(Reasoning), 4),
    ("position", Vote::Task(Reasoning), 1),
    ("direction", Vote::Task(Reasoning), 1),
    ("brother*", Vote::Task(Reasoning), 1),
    ("sister*", Vote::Task(Reasoning), 1),
    ("father", Vote::Task(Reasoning), 1),
    ("statements", Vote::Task(Reasoning), 2),
    // chat: advice and open questions (weak; chat is also the default)
    ("how can i", Vote::Task(Chat), 2),
    ("tips", Vote::Task(Chat), 2),
    ("advice", Vote::Task(Chat), 2),
    ("recommend", Vote::Task(Chat), 2),
    ("what are some", Vote::Task(Chat), 1),
    ("programming language*", Vote::Task(Chat), 3),
    // signals of a hard request (complexity, not task)
    ("architecture", Hard, 1),
    ("design a system", Hard, 1),
    ("distributed", Hard, 1),
    ("scalab*", Hard, 1),
    ("concurren*", Hard, 1),
    ("optimi*", Hard, 1),
    ("production-ready", Hard, 1),
    ("trade-off*", Hard, 1),
    ("tradeoff*", Hard, 1),
    ("multi-step", Hard, 1),
    ("rigorous*", Hard, 1),
    ("in depth", Hard, 1),
    ("in-depth", Hard, 1),
    ("comprehensive", Hard, 1),
    ("thread-safe", Hard, 1),
    ("security", Hard, 1),
    ("o(1)", Hard, 1),
    ("o(n)", Hard, 1),
    ("o(log n)", Hard, 1),
];

/// Programming language names: together they count at most once (a question *about*
/// languages is not a coding request).
const LANGUAGES: &[&str] = &[
    "python",
    "javascript",
    "typescript",
    "java",
    "c++",
    "c#",
    "rust",
    "golang",
    "ruby",
    "php",
    "swift",
    "kotlin",
    "scala",
    "haskell",
    "bash",
    "powershell",
    "perl",
    "react",
    "node.js",
];
const LANGUAGE_WEIGHT: u16 = 2;

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

/// The first `n` bytes of `s`, cut on a char boundary.
fn head(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
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

    let (task, reason, margin, by) = if let Some(t) = job.task {
        (t, Reason::Explicit, u16::MAX, ClassifiedBy::Explicit)
    } else if job.has_images() {
        (Vision, Reason::Images, u16::MAX, ClassifiedBy::Local)
    } else if job
        .messages
        .iter()
        .any(|m| m.role == "tool" || m.role == "function")
    {
        (Agent, Reason::ToolMessages, u16::MAX, ClassifiedBy::Local)
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
        pick(&s, job, code_shape, math_shape)
    };

    let complexity = complexity(task, &s, job, prompt_tokens, cfg, math_shape);
    Decision {
        task,
        complexity,
        classified_by: by,
        reason,
        margin,
    }
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
            llm: Default::default(),
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
            llm: Default::default(),
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
            llm: Default::default(),
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
