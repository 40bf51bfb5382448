//! The learned local classifier: a linear model (multinomial logistic regression) over
//! hashed features of a record — its words, word pairs, opening and closing words,
//! system-prompt words, and a few shapes (code punctuation, math notation, length,
//! scripts, turns) — read from the head and tail of the last user message. Integer
//! weights (i16, one scale), so a prediction is a few hundred table lookups and adds;
//! calibrated (a temperature fitted on held-out records) so that its probability of
//! the winning task says how likely it is to be right.
//!
//! A model file is `switchyard-classifier 1`, a line of JSON (classes, scale, biases,
//! temperature, the confidence below which a decision is unsure, how it was trained),
//! then the weights. `train` writes one; `--classifier FILE` loads one; a built-in one
//! is embedded in the binary.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::record::{head, tail, Job, Task};

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
const HEAD_BYTES: usize = 1024;
const TAIL_BYTES: usize = 384;
const SYSTEM_BYTES: usize = 384;

const MAGIC: &str = "switchyard-classifier 1";

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
}

static EMBEDDED: LazyLock<Option<Arc<TaskModel>>> = LazyLock::new(|| {
    let bytes: &[u8] = include_bytes!("../../models/default.model");
    (!bytes.is_empty())
        .then(|| Arc::new(TaskModel::from_bytes(bytes).expect("the built-in model reads")))
});

impl TaskModel {
    /// The model built into the binary (`models/default.model`), if there is one.
    pub fn embedded() -> Option<Arc<TaskModel>> {
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
        features(job, scratch);
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
}

struct Sink<'a> {
    out: &'a mut Vec<u32>,
}

impl Sink<'_> {
    fn push(&mut self, kind: Kind, h: u64) {
        let h = mix(mix(0x9e37_79b9_7f4a_7c15, kind as u64), h);
        // Fold the high bits in: the multiply leaves the low ones weak.
        let h = h ^ (h >> 29);
        self.out
            .push((h.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> (64 - BITS)) as u32);
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

/// The words of `text`, hashed (ASCII letters lowercased), with what kind of script
/// each is in. Punctuation that shapes a request (`?` `:` `` ` `` `{` `=` `#`…) counts
/// as a word.
fn words(text: &str, mut each: impl FnMut(u64)) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut h = 0u64;
    let mut open = false;
    let flush = |h: &mut u64, open: &mut bool, each: &mut dyn FnMut(u64)| {
        if *open {
            each(*h);
            *h = 0;
            *open = false;
        }
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'\'' {
            h = mix(h, u64::from(c.to_ascii_lowercase()));
            open = true;
            i += 1;
        } else if c < 0x80 {
            flush(&mut h, &mut open, &mut each);
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
                each(mix(0xfeed, u64::from(c)));
            }
            i += 1;
        } else {
            let ch = text[i..].chars().next().expect("a char starts here");
            let len = ch.len_utf8();
            if unspaced(ch) {
                flush(&mut h, &mut open, &mut each);
                each(mix(0xc7c, u64::from(ch)));
            } else if ch.is_alphanumeric() {
                for lower in ch.to_lowercase() {
                    h = mix(h, u64::from(lower));
                }
                open = true;
            } else {
                flush(&mut h, &mut open, &mut each);
            }
            i += len;
        }
    }
    flush(&mut h, &mut open, &mut each);
}

/// The features of a record's text, as bucket indexes, deduplicated and sorted.
pub fn features(job: &Job, out: &mut Vec<u32>) {
    out.clear();
    let mut sink = Sink { out };
    let user = job.last_user_text();
    let window = |text: &str, sink: &mut Sink, first: bool| {
        let (mut prev, mut n) = (0u64, 0usize);
        let mut last = [0u64; 3];
        words(text, |w| {
            sink.push(Kind::Word, w);
            sink.push(Kind::Pair, mix(prev, w));
            if first && n < 4 {
                sink.push(Kind::First, mix(n as u64, w));
            }
            last = [last[1], last[2], w];
            prev = w;
            n += 1;
        });
        for (i, w) in last.iter().enumerate().filter(|(_, w)| **w != 0) {
            sink.push(Kind::Last, mix(i as u64, *w));
        }
        n
    };
    let n = window(head(user, HEAD_BYTES), &mut sink, true);
    if user.len() > HEAD_BYTES + TAIL_BYTES {
        window(tail(user, TAIL_BYTES), &mut sink, false);
    }
    for sys in job.system_text() {
        words(head(sys, SYSTEM_BYTES), |w| sink.push(Kind::System, w));
    }
    // Shapes: the message's size in words and bytes, its lines, code fences, how much
    // of it is in another script than Latin, its turns.
    let log2 = |v: usize| u64::from(usize::BITS - v.leading_zeros());
    sink.shape(1, log2(n));
    sink.shape(2, log2(user.len()));
    sink.shape(3, log2(user.bytes().filter(|&b| b == b'\n').count()));
    sink.shape(4, u64::from(user.contains("```")));
    let head = head(user, HEAD_BYTES);
    let non_ascii = head
        .chars()
        .filter(|c| !c.is_ascii() && c.is_alphabetic())
        .count();
    let letters = head.chars().filter(|c| c.is_alphabetic()).count().max(1);
    sink.shape(5, (non_ascii * 4 / letters) as u64);
    sink.shape(6, u64::from(non_ascii > 0 && non_ascii < letters));
    sink.shape(7, job.turns().min(6) as u64);
    sink.shape(8, u64::from(job.system_text().next().is_some()));
    out.sort_unstable();
    out.dedup();
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
        assert!(TaskModel::from_bytes(b"switchyard-classifier 1\n{}\n").is_err());
    }
}
