//! Token counting with OpenAI's BPE vocabularies (o200k, cl100k), including the chat
//! format's per-message overhead and image parts. The count for a model applies that
//! model's `token_factor` for providers whose tokenizer differs from OpenAI's.

use std::cell::RefCell;

use crate::config::{Model, Tokenizer};
mod pretokenize;
use crate::record::{ImageDetail, Message};
pub use pretokenize::{is_letter, is_letter_or_number, is_symbol};

/// Chat format overhead (OpenAI cookbook, gpt-4o/gpt-4): every message is wrapped in
/// 3 tokens, a `name` costs 1 more, and every reply is primed with 3.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const REPLY_PRIMING: u64 = 3;
/// Image parts: `detail: low` is a flat 85 tokens; `high`/`auto` is priced as a
/// 1024×1024 image (85 + 4 tiles × 170), since the pixels are not fetched.
const IMAGE_LOW_TOKENS: u64 = 85;
const IMAGE_HIGH_TOKENS: u64 = 765;

/// Pieces (pre-tokenizer splits) up to this many bytes have their counts cached.
const CACHED_PIECE_BYTES: usize = 15;
/// Cached pieces per thread and tokenizer: 2^16 slots.
const CACHE_BITS: u32 = 16;
const CACHE_ENTRIES: usize = 1 << CACHE_BITS;

/// A short piece packed into one integer (its bytes, then its length in the top
/// byte): exact, no allocation, and hashed in two multiplications.
type PieceKey = u128;

fn piece_key(bytes: &[u8]) -> PieceKey {
    let mut key = [0u8; 16];
    key[..bytes.len()].copy_from_slice(bytes);
    key[15] = bytes.len() as u8;
    u128::from_le_bytes(key)
}

/// Piece -> token count, direct-mapped: a piece's slot is a hash of its key, and a
/// piece meeting another in its slot replaces it. One multiply and one compare per
/// lookup; text repeats its words, and a lookup is far cheaper than a BPE encoding.
struct PieceCache {
    keys: Vec<PieceKey>,
    counts: Vec<u32>,
}

impl PieceCache {
    fn new() -> PieceCache {
        PieceCache {
            keys: vec![0; CACHE_ENTRIES],
            counts: vec![0; CACHE_ENTRIES],
        }
    }

    fn count(&mut self, key: PieceKey, encode: impl FnOnce() -> u32) -> u32 {
        let h = ((key as u64) ^ ((key >> 64) as u64).rotate_left(29))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let slot = (h >> (64 - CACHE_BITS)) as usize;
        // A piece's key is never 0: its length is in the top byte.
        if self.keys[slot] != key {
            self.keys[slot] = key;
            self.counts[slot] = encode();
        }
        self.counts[slot]
    }
}

thread_local! {
    /// Per-thread piece counts, per tokenizer (made when first used).
    static PIECE_COUNTS: RefCell<[Option<PieceCache>; 2]> = RefCell::default();
}

/// The number of tokens `text` encodes to (no special tokens), exactly as tiktoken.
pub fn count_text(tokenizer: Tokenizer, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let (bpe, slot) = match tokenizer {
        Tokenizer::O200k => (bpe_openai::o200k_base(), 0),
        Tokenizer::Cl100k => (bpe_openai::cl100k_base(), 1),
    };
    PIECE_COUNTS.with_borrow_mut(|caches| {
        let cache = caches[slot].get_or_insert_with(PieceCache::new);
        let mut total = 0u64;
        let mut count_piece = |bytes: &[u8]| {
            let encode = || bpe.bpe.count(bytes) as u32;
            total += u64::from(if bytes.len() > CACHED_PIECE_BYTES {
                encode()
            } else {
                cache.count(piece_key(bytes), encode)
            });
        };
        match tokenizer {
            Tokenizer::O200k if pretokenize::is_plain_ascii(text.as_bytes()) => {
                pretokenize::for_each_piece(text.as_bytes(), count_piece)
            }
            Tokenizer::O200k => pretokenize::for_each_piece_unicode(text, count_piece),
            Tokenizer::Cl100k => bpe
                .split(text)
                .for_each(|piece| count_piece(piece.as_bytes())),
        }
        total
    })
}

/// Prompt tokens of a chat request as the provider will count them.
pub fn count_messages(tokenizer: Tokenizer, messages: &[Message]) -> u64 {
    let mut total = REPLY_PRIMING;
    for m in messages {
        total +=
            TOKENS_PER_MESSAGE + count_text(tokenizer, &m.role) + count_text(tokenizer, &m.text);
        if let Some(name) = &m.name {
            total += TOKENS_PER_NAME + count_text(tokenizer, name);
        }
        for img in &m.images {
            total += match img.detail {
                ImageDetail::Low => IMAGE_LOW_TOKENS,
                ImageDetail::High => IMAGE_HIGH_TOKENS,
            };
        }
    }
    total
}

/// Counts a record's prompt once per tokenizer and answers per model.
#[derive(Debug, Default, Clone)]
pub struct PromptTokens {
    o200k: Option<u64>,
    cl100k: Option<u64>,
}

impl PromptTokens {
    /// A prompt whose o200k count is already known.
    pub fn with_o200k(n: u64) -> PromptTokens {
        PromptTokens {
            o200k: Some(n),
            cl100k: None,
        }
    }

    pub fn bpe(&mut self, tokenizer: Tokenizer, messages: &[Message]) -> u64 {
        let slot = match tokenizer {
            Tokenizer::O200k => &mut self.o200k,
            Tokenizer::Cl100k => &mut self.cl100k,
        };
        *slot.get_or_insert_with(|| count_messages(tokenizer, messages))
    }

    /// Input tokens for `model`: its tokenizer's count times its correction factor.
    pub fn for_model(&mut self, model: &Model, messages: &[Message]) -> u64 {
        let n = self.bpe(model.tokenizer, messages);
        if model.token_factor == 1.0 {
            n
        } else {
            (n as f64 * model.token_factor).ceil() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Message {
        Message {
            role: "user".into(),
            text: text.into(),
            images: vec![],
            name: None,
        }
    }

    #[test]
    fn counts_known_strings() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(count_text(Tokenizer::O200k, "hello world"), 2);
        assert_eq!(count_text(Tokenizer::Cl100k, "hello world"), 2);
        assert_eq!(count_text(Tokenizer::O200k, ""), 0);
    }

    #[test]
    fn chat_overhead_matches_the_cookbook() {
        // 3 priming + 3 wrapper + 1 ("user") + 2 ("hello world")
        assert_eq!(count_messages(Tokenizer::O200k, &[user("hello world")]), 9);
    }

    #[test]
    fn images_are_priced_by_detail() {
        let mut m = user("");
        let img = |detail| crate::record::Image {
            url: "https://example.com/a.png".into(),
            detail,
        };
        m.images = vec![img(ImageDetail::Low), img(ImageDetail::High)];
        assert_eq!(count_messages(Tokenizer::O200k, &[m]), 3 + 3 + 1 + 85 + 765);
    }
}
