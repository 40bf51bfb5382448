//! The learned local classifier: a linear model (multinomial logistic regression) over
//! hashed features of a record — its words, word pairs, opening and closing words,
//! system-prompt words, and a few shapes (code punctuation, math notation, length,
//! scripts, turns) — read from the head and tail of the last user message. Integer
//! weights (i16, one scale), so a prediction is a few hundred table lookups and adds;
//! calibrated (a temperature fitted on held-out records) so that its probability of
//! the winning task says how likely it is to be right.
//!
//! A model file is `switchyard-classifier 2`, a line of JSON (classes, scale, biases,
//! temperature, the confidence below which a decision is unsure, how it was trained),
//! then the weights. `train` writes one; `--classifier FILE` loads one; a built-in one
//! is embedded in the binary.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::record::{head, head as head_of, tail, Job, Task};
use crate::tokens::{is_letter, is_letter_or_number};

/// The tasks a model decides between (the structural ones — vision, agent, rag —
/// come from the record itself, never from text).
pub const CLASSES: [Task; 8] = [
    Task::Chat,
    Task::Code,
    Task::Summarization,
    Task::Translation,
    Task::Classification,
    Task::Extraction,
    Task::Creative,
    Task::Reasoning,
];
pub const K: usize = CLASSES.len();

/// Hash buckets of the feature space: 2^17.
pub const BITS: u32 = 17;
pub const BUCKETS: usize = 1 << BITS;

/// Bytes of the last user message read from its head and its tail: instructions live
/// there, not in the middle of a pasted document.
pub const HEAD_BYTES: usize = 512;
pub const TAIL_BYTES: usize = 384;
const SYSTEM_BYTES: usize = 384;

const MAGIC: &str = "switchyard-classifier 2";

/// What a model file says about itself, besides its weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub classes: Vec<Task>,
    pub bits: u32,
    /// A weight is `i16 × scale`.
    pub scale: f32,
    pub bias: Vec<f32>,
    /// Logits are divided by this before the softmax (fitted on held-out records).
    pub temperature: f32,
    /// A decision whose probability is below this is unsure (the LLM classifier's
    /// `scope = "unsure"` asks about those).
    pub unsure_below: f32,
    /// Where the model came from: sources, counts, held-out accuracy.
    #[serde(default)]
    pub trained: serde_json::Value,
}

pub struct TaskModel {
    pub header: Header,
    /// `weights[bucket * K + class]`.
    weights: Vec<i16>,
    /// A short hash of the file, to tell models apart (resume fingerprints).
    id: u64,
}

impl fmt::Debug for TaskModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskModel({:016x})", self.id)
    }
}

/// A model's decision about one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub task: Task,
    /// The calibrated probability of `task`.
    pub confidence: f32,
    /// What the head of the message looks like (complexity reads the math score).
    pub shapes: Shapes,
}

static EMBEDDED: LazyLock<Arc<TaskModel>> = LazyLock::new(|| {
    let bytes: &[u8] = include_bytes!("../../models/default.model");
    Arc::new(TaskModel::from_bytes(bytes).expect("the built-in model reads"))
});

impl TaskModel {
    /// The model built into the binary (`models/default.model`).
    pub fn embedded() -> Arc<TaskModel> {
        EMBEDDED.clone()
    }

    pub fn load(path: &Path) -> Result<TaskModel> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read classifier model {}", path.display()))?;
        TaskModel::from_bytes(&bytes)
            .with_context(|| format!("{} is not a switchyard classifier model", path.display()))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<TaskModel> {
        let text_end = |from: usize| {
            bytes[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from + i)
        };
        let Some(magic_end) = text_end(0) else {
            bail!("no header line")
        };
        if bytes[..magic_end].starts_with(b"switchyard-classifier 1") {
            bail!("it was made by an older switchyard, which read other features: train it again");
        }
        if &bytes[..magic_end] != MAGIC.as_bytes() {
            bail!("it does not start with `{MAGIC}`");
        }
        let Some(json_end) = text_end(magic_end + 1) else {
            bail!("no metadata line")
        };
        let header: Header = serde_json::from_slice(&bytes[magic_end + 1..json_end])
            .context("its metadata line is not valid")?;
        if header.classes != CLASSES || header.bits != BITS || header.bias.len() != K {
            bail!("it was made for other classes or another feature space");
        }
        let body = &bytes[json_end + 1..];
        if body.len() != BUCKETS * K * 2 {
            bail!(
                "its weights are {} bytes, not {}",
                body.len(),
                BUCKETS * K * 2
            );
        }
        let weights = body
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(TaskModel {
            header,
            weights,
            id: xxhash_rust::xxh3::xxh3_64(bytes),
        })
    }

    /// The model from float weights (`weights[bucket * K + class]`), quantized.
    pub fn quantize(weights: &[f32], mut header: Header) -> TaskModel {
        let max = weights.iter().fold(0f32, |m, w| m.max(w.abs())).max(1e-9);
        header.scale = max / f32::from(i16::MAX);
        let weights: Vec<i16> = weights
            .iter()
            .map(|w| (w / header.scale).round() as i16)
            .collect();
        let mut m = TaskModel {
            header,
            weights,
            id: 0,
        };
        m.id = xxhash_rust::xxh3::xxh3_64(&m.to_bytes());
        m
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BUCKETS * K * 2 + 4096);
        out.extend_from_slice(MAGIC.as_bytes());
        out.push(b'\n');
        serde_json::to_writer(&mut out, &self.header).expect("a header serializes");
        out.push(b'\n');
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// The raw (uncalibrated) logits for a record's features.
    pub fn logits(&self, features: &[u32]) -> [f32; K] {
        let mut sums = [0i32; K];
        for &f in features {
            let row = &self.weights[f as usize * K..f as usize * K + K];
            for k in 0..K {
                sums[k] += i32::from(row[k]);
            }
        }
        let x = feature_value(features.len());
        std::array::from_fn(|k| self.header.bias[k] + sums[k] as f32 * self.header.scale * x)
    }

    /// The calibrated probabilities of [`CLASSES`] for a record's features.
    pub fn probabilities(&self, features: &[u32]) -> [f32; K] {
        softmax(&self.logits(features), self.header.temperature)
    }

    pub fn predict(&self, job: &Job, scratch: &mut Vec<u32>) -> Prediction {
        let shapes = features(job, scratch);
        let p = self.probabilities(scratch);
        let (k, confidence) = p
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |best, (k, v)| if v > best.1 { (k, v) } else { best },
            );
        Prediction {
            task: CLASSES[k],
            confidence,
            shapes,
        }
    }
}

/// Each distinct feature of a record counts 1/√n, so long and short records weigh
/// the same.
pub fn feature_value(n: usize) -> f32 {
    if n == 0 {
        0.0
    } else {
        1.0 / (n as f32).sqrt()
    }
}

pub fn softmax(logits: &[f32; K], temperature: f32) -> [f32; K] {
    let t = temperature.max(1e-3);
    let max = logits.iter().fold(f32::MIN, |m, &v| m.max(v));
    let e: [f32; K] = std::array::from_fn(|k| ((logits[k] - max) / t).exp());
    let sum: f32 = e.iter().sum();
    std::array::from_fn(|k| e[k] / sum)
}

/// A 64-bit hash step (FxHash's), for building feature hashes without allocating.
#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// Kinds of feature, so that the same word in another role is another feature.
#[derive(Clone, Copy)]
#[repr(u64)]
enum Kind {
    Word = 1,
    Pair,
    First,
    Last,
    System,
    Shape,
    Stem,
    /// A word of the message's first line (its request, before any pasted material).
    Lead,
    /// A word of the message's last words (a request after pasted material).
    End,
}

/// Words of the first line read as [`Kind::Lead`], and last words as [`Kind::End`].
const LEAD_WORDS: usize = 24;
const END_WORDS: usize = 16;
/// Bytes read for the last words of a message longer than the head but too short for a
/// tail window of its own.
const END_BYTES: usize = 160;

/// The last [`END_WORDS`] words read, as a ring.
struct Ending {
    last: [u64; END_WORDS],
    n: usize,
}

impl Ending {
    fn new() -> Ending {
        Ending {
            last: [0; END_WORDS],
            n: 0,
        }
    }

    fn push(&mut self, word: u64) {
        self.last[self.n % END_WORDS] = word;
        self.n += 1;
    }

    /// The features of how a message ends: its last three words by position, and its
    /// last [`END_WORDS`] words.
    fn features(&self, sink: &mut Sink) {
        let (last, n) = (&self.last, self.n);
        for i in 1..=3.min(n) {
            sink.push(Kind::Last, mix(3 - i as u64, last[(n - i) % END_WORDS]));
        }
        for w in &last[..n.min(END_WORDS)] {
            sink.push(Kind::End, *w);
        }
    }
}

/// Collects a record's distinct features: a bit per bucket says which are in, so a
/// feature seen twice is kept once without sorting.
struct Sink<'a> {
    out: &'a mut Vec<u32>,
    seen: &'a mut [u64],
}

impl Sink<'_> {
    fn push(&mut self, kind: Kind, h: u64) {
        let h = mix(mix(0x9e37_79b9_7f4a_7c15, kind as u64), h);
        // Fold the high bits in: the multiply leaves the low ones weak.
        let h = h ^ (h >> 29);
        let f = (h.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> (64 - BITS)) as usize;
        let (word, bit) = (f / 64, 1u64 << (f % 64));
        if self.seen[word] & bit == 0 {
            self.seen[word] |= bit;
            self.out.push(f as u32);
        }
    }

    fn shape(&mut self, name: u64, bucket: u64) {
        self.push(Kind::Shape, mix(name, bucket));
    }
}

/// Is `c` written without spaces between words (CJK, kana, hangul, Thai)? Each such
/// character is a word of its own.
fn unspaced(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0E7F      // Thai
        | 0x3040..=0x30FF    // kana
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK
        | 0xAC00..=0xD7AF    // hangul
        | 0xF900..=0xFAFF) // CJK compatibility
}

/// A word as [`words`] hashes it: the whole word, and its first five chars when it is
/// longer (so `summarize`, `summary` and `summaries` share a feature).
#[derive(Clone, Copy)]
struct Word {
    hash: u64,
    stem: Option<u64>,
}

/// Chars of a word's stem.
const STEM: u32 = 5;

/// A word being read: its hash so far, its length, its stem's hash.
#[derive(Default)]
struct Reading {
    hash: u64,
    chars: u32,
    stem: u64,
}

impl Reading {
    fn push(&mut self, c: u64) {
        self.hash = mix(self.hash, c);
        self.chars += 1;
        if self.chars == STEM {
            self.stem = self.hash;
        }
    }

    /// The word read, if any; ready for the next.
    fn take(&mut self) -> Option<Word> {
        let w = (self.chars > 0).then(|| Word {
            hash: self.hash,
            stem: (self.chars > STEM).then_some(self.stem),
        });
        *self = Reading::default();
        w
    }
}

/// The words of `text`, hashed (lowercased). Punctuation that shapes a request (`?`
/// `:` `` ` `` `{` `=` `#`…) counts as a word; so does each char of a script written
/// without spaces. Returns the letters read: (all, not ASCII).
fn words(text: &str, mut each: impl FnMut(Word)) -> (usize, usize) {
    let (mut letters, mut foreign) = (0usize, 0usize);
    let b = text.as_bytes();
    let mut i = 0;
    let mut word = Reading::default();
    let alone = |hash: u64| Word { hash, stem: None };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'\'' {
            letters += usize::from(c.is_ascii_alphabetic());
            word.push(u64::from(c.to_ascii_lowercase()));
            i += 1;
        } else if c < 0x80 {
            if let Some(w) = word.take() {
                each(w);
            }
            if matches!(
                c,
                b'?' | b':'
                    | b'`'
                    | b'{'
                    | b'}'
                    | b';'
                    | b'='
                    | b'#'
                    | b'$'
                    | b'*'
                    | b'('
                    | b'<'
                    | b'"'
                    | b'\n'
            ) {
                each(alone(mix(0xfeed, u64::from(c))));
            }
            i += 1;
        } else {
            let ch = text[i..].chars().next().expect("a char starts here");
            if is_letter(ch) {
                letters += 1;
                foreign += 1;
            }
            if unspaced(ch) {
                if let Some(w) = word.take() {
                    each(w);
                }
                each(alone(mix(0xc7c, u64::from(ch))));
            } else if is_letter_or_number(ch) {
                // Non-ASCII case is kept: lowering it costs more than it helps.
                word.push(u64::from(ch));
            } else if let Some(w) = word.take() {
                each(w);
            }
            i += ch.len_utf8();
        }
    }
    if let Some(w) = word.take() {
        each(w);
    }
    (letters, foreign)
}

/// What a record's text looks like besides its words: code punctuation and math
/// notation (scores from [`shapes`]), a code fence, and how many different marks of
/// a demanding request it holds ([`HARD_WORDS`], [`HARD_PAIRS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shapes {
    pub code: u16,
    pub math: u16,
    pub fence: bool,
    pub hard: u16,
}

/// Words that mark a demanding request (complexity, not the task).
const HARD_WORDS: &[&str] = &[
    "architecture",
    "distributed",
    "scalable",
    "scalability",
    "concurrency",
    "concurrent",
    "optimize",
    "optimise",
    "optimization",
    "optimisation",
    "tradeoff",
    "tradeoffs",
    "rigorous",
    "rigorously",
    "comprehensive",
    "security",
];
/// Word pairs that do (`o(` is big-O notation).
const HARD_PAIRS: &[(&str, &str)] = &[
    ("trade", "off"),
    ("trade", "offs"),
    ("multi", "step"),
    ("in", "depth"),
    ("thread", "safe"),
    ("production", "ready"),
    ("design", "a"),
    ("o", "("),
];

/// The hash [`words`] gives a line break.
static NEWLINE: LazyLock<u64> = LazyLock::new(|| {
    let mut h = 0;
    words("\n", |w| h = w.hash);
    h
});

/// The hashes [`words`] gives the hard marks (single words, then pairs), and a
/// 256-bit filter of their low bytes that turns nearly every other word away at once.
struct Hard {
    hashes: Vec<u64>,
    filter: [u64; 4],
}

static HARD: LazyLock<Hard> = LazyLock::new(|| {
    let one = |w: &str| {
        let mut h = 0;
        words(w, |word| h = word.hash);
        h
    };
    let hashes: Vec<u64> = HARD_WORDS
        .iter()
        .map(|w| one(w))
        .chain(HARD_PAIRS.iter().map(|(a, b)| mix(one(a), one(b))))
        .collect();
    let mut filter = [0u64; 4];
    for h in &hashes {
        filter[(h & 0xff) as usize / 64] |= 1 << (h & 63);
    }
    Hard { hashes, filter }
});

/// Which hard marks a word (and the pair it ends) is, as bits.
fn hard_bits(hard: &Hard, word: u64, pair: u64) -> u32 {
    let maybe = |h: u64| hard.filter[(h & 0xff) as usize / 64] & (1 << (h & 63)) != 0;
    if !maybe(word) && !maybe(pair) {
        return 0;
    }
    hard.hashes
        .iter()
        .enumerate()
        .filter(|(i, h)| **h == if *i < HARD_WORDS.len() { word } else { pair })
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// The shapes of a message's head (and its hard marks, head and tail), for a record
/// the model does not read.
pub fn marks(user: &str) -> Shapes {
    let hard = &*HARD;
    let mut bits = 0u32;
    let mut scan = |text: &str| {
        let mut prev = 0;
        words(text, |w| {
            bits |= hard_bits(hard, w.hash, mix(prev, w.hash));
            prev = w.hash;
        });
    };
    let head = head(user, HEAD_BYTES);
    scan(head);
    if user.len() > HEAD_BYTES + TAIL_BYTES {
        scan(tail(user, TAIL_BYTES));
    }
    Shapes {
        hard: bits.count_ones() as u16,
        ..shapes(head)
    }
}

thread_local! {
    /// Each thread's bit per bucket for [`Sink`], cleared after every record.
    static SEEN: std::cell::RefCell<Vec<u64>> = std::cell::RefCell::new(vec![0; BUCKETS / 64]);
}

/// The distinct features of a record's text, as bucket indexes (in the order met);
/// returns the shapes of the head of its last user message.
pub fn features(job: &Job, out: &mut Vec<u32>) -> Shapes {
    out.clear();
    SEEN.with_borrow_mut(|seen| {
        let shapes = collect(job, &mut Sink { out, seen });
        for &f in out.iter() {
            seen[f as usize / 64] = 0;
        }
        shapes
    })
}

fn collect(job: &Job, sink: &mut Sink) -> Shapes {
    let user = job.last_user_text();
    let hard = &*HARD;
    let mut hard_found = 0u32;
    let long = user.len() > HEAD_BYTES + TAIL_BYTES;
    let newline = *NEWLINE;
    let mut window = |text: &str, sink: &mut Sink, first: bool, reaches_end: bool| {
        let (mut prev, mut n) = (0u64, 0usize);
        let mut ending = Ending::new();
        let mut lead = first;
        let letters = words(text, |Word { hash: w, stem }| {
            sink.push(Kind::Word, w);
            if let Some(s) = stem {
                sink.push(Kind::Stem, s);
            }
            let pair = mix(prev, w);
            sink.push(Kind::Pair, pair);
            hard_found |= hard_bits(hard, w, pair);
            if first && n < 4 {
                sink.push(Kind::First, mix(n as u64, w));
            }
            if lead {
                // The first line ends the lead once it has a few words.
                lead = n < LEAD_WORDS && !(w == newline && n >= 3);
                if lead {
                    sink.push(Kind::Lead, w);
                }
            }
            ending.push(w);
            prev = w;
            n += 1;
        });
        if reaches_end {
            ending.features(sink);
        }
        (n, letters)
    };
    // How the message ends comes from the window that reaches its end; a message a
    // little longer than the head has its last words read on their own.
    let head = head(user, HEAD_BYTES);
    let all_read = head.len() == user.len();
    let (n, (letters, foreign)) = window(head, sink, true, all_read);
    if long {
        window(tail(user, TAIL_BYTES), sink, false, true);
    } else if !all_read {
        let mut ending = Ending::new();
        words(tail(user, END_BYTES), |w| ending.push(w.hash));
        ending.features(sink);
    }
    for sys in job.system_text() {
        words(head_of(sys, SYSTEM_BYTES), |w| {
            sink.push(Kind::System, w.hash)
        });
    }
    // Shapes: the message's size in words and bytes, its lines, code fences, how much
    // of it is in another script than Latin, its turns, code and math notation.
    let found = shapes(head);
    let log2 = |v: usize| u64::from(usize::BITS - v.leading_zeros());
    sink.shape(1, log2(n));
    sink.shape(2, log2(user.len()));
    sink.shape(3, log2(head.bytes().filter(|&b| b == b'\n').count()));
    sink.shape(4, u64::from(found.fence));
    sink.shape(5, (foreign * 4 / letters.max(1)) as u64);
    sink.shape(6, u64::from(foreign > 0 && foreign < letters));
    sink.shape(7, job.turns().min(6) as u64);
    sink.shape(8, u64::from(job.system_text().next().is_some()));
    sink.shape(9, u64::from(found.code));
    sink.shape(10, u64::from(found.math));
    Shapes {
        hard: hard_found.count_ones() as u16,
        ..found
    }
}

pub(super) fn is_word(b: u8) -> bool {
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
pub fn shapes(text: &str) -> Shapes {
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
    Shapes {
        code: code.min(16),
        math: math.min(8),
        fence,
        hard: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_deterministic_and_see_words_pairs_and_scripts() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        features(
            &Job::from_prompt("1", "Translate to French: good night"),
            &mut a,
        );
        features(
            &Job::from_prompt("2", "translate to french: GOOD night"),
            &mut b,
        );
        assert_eq!(a, b, "ASCII case does not matter");
        features(
            &Job::from_prompt("3", "Translate to French: night good"),
            &mut b,
        );
        assert_ne!(a, b, "word order does (pairs)");
        let mut cjk = Vec::new();
        features(&Job::from_prompt("4", "把这句话翻译成英文"), &mut cjk);
        assert!(
            cjk.len() > 15,
            "each CJK character is a word: {}",
            cjk.len()
        );
        assert!(a.iter().all(|&f| (f as usize) < BUCKETS));
    }

    #[test]
    fn a_model_round_trips_through_its_file() {
        let mut w = vec![0f32; BUCKETS * K];
        w[7 * K + 1] = 2.5;
        w[9 * K + 3] = -1.25;
        let header = Header {
            classes: CLASSES.to_vec(),
            bits: BITS,
            scale: 0.0,
            bias: vec![0.1; K],
            temperature: 1.5,
            unsure_below: 0.6,
            trained: serde_json::json!({"records": 3}),
        };
        let m = TaskModel::quantize(&w, header);
        let back = TaskModel::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.header, m.header);
        assert_eq!(back.logits(&[7, 9]), m.logits(&[7, 9]));
        let l = back.logits(&[7]);
        assert!((l[1] - (0.1 + 2.5)).abs() < 1e-3, "{l:?}");
        let p = back.probabilities(&[7]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(TaskModel::from_bytes(b"switchyard-classifier 2\n{}\n").is_err());
        let old = TaskModel::from_bytes(b"switchyard-classifier 1\n{}\n").unwrap_err();
        assert!(old.to_string().contains("train it again"), "{old}");
    }
}
