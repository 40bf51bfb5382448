//! Our token counts against tiktoken's (tiktoken-rs, the reference implementation's
//! vocabulary and split pattern) on real prompts: every count must match exactly.

use switchyard::config::Tokenizer;
use switchyard::record::Message;
use switchyard::tokens::{count_messages, count_text};

fn prompts() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for f in [
        "fixtures/classifier_labelled.jsonl",
        "jobs/mixed.jsonl",
        "jobs/tickets_nightly.jsonl",
    ] {
        for line in std::fs::read_to_string(root.join(f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push(v["prompt"].as_str().unwrap().to_string());
        }
    }
    out.extend(
        [
            "",
            " ",
            "  leading and trailing spaces  ",
            "Ünïcödé, emoji 🚀🚀, 中文文本, العربية, 日本語のテキスト",
            "tabs\tand\nnewlines\r\n\n\nand    runs of     spaces",
            "numbers 1234567890 3.14159 1,000,000 and code: fn main() { println!(\"{}\", x); }",
            "I'm, you're, they'll, we've, she'd, IT'S SHOUTING'S",
        ]
        .map(String::from),
    );
    out
}

#[test]
fn o200k_and_cl100k_counts_match_tiktoken() {
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let cl100k = tiktoken_rs::cl100k_base().unwrap();
    let prompts = prompts();
    assert!(prompts.len() > 100);
    for p in &prompts {
        assert_eq!(
            count_text(Tokenizer::O200k, p),
            o200k.encode_ordinary(p).len() as u64,
            "o200k: {p:?}"
        );
        assert_eq!(
            count_text(Tokenizer::Cl100k, p),
            cl100k.encode_ordinary(p).len() as u64,
            "cl100k: {p:?}"
        );
    }
}

#[test]
fn chat_counts_match_tiktoken_rs_for_gpt_4o() {
    use tiktoken_rs::ChatCompletionRequestMessage as M;
    let msg = |role: &str, text: &str| Message {
        role: role.into(),
        text: text.into(),
        images: vec![],
        name: None,
    };
    let ours = [
        msg("system", "You are terse."),
        msg("user", "Summarize: the cat sat on the mat."),
        msg("assistant", "Cat sat."),
        msg("user", "Shorter?"),
    ];
    let theirs: Vec<M> = ours
        .iter()
        .map(|m| M {
            role: m.role.clone(),
            content: Some(m.text.clone()),
            ..Default::default()
        })
        .collect();
    let expected = tiktoken_rs::num_tokens_from_messages("gpt-4o", &theirs).unwrap() as u64;
    assert_eq!(count_messages(Tokenizer::O200k, &ours), expected);
}

/// Random strings over an alphabet rich in the cases the pre-tokenizer distinguishes
/// (case changes, contractions, digit runs, punctuation, whitespace runs, newlines).
#[test]
fn random_ascii_counts_match_tiktoken() {
    let o200k = tiktoken_rs::o200k_base().unwrap();
    let alphabet: &[&str] = &[
        "a", "b", "Z", "Qu", "ex", "'s", "'T", "'re", "'LL", "'", "0", "12", "3456", " ", "  ",
        "\t", "\n", "\r\n", " \n ", ".", ",", "!?", "/", "//", "()", "{}", "-", "_", "\"", "#",
        "@", "x'y", "ABC", "dEf",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut s = String::new();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = 1 + state % 24;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            s.push_str(alphabet[(state % alphabet.len() as u64) as usize]);
        }
        assert_eq!(
            count_text(Tokenizer::O200k, &s),
            o200k.encode_ordinary(&s).len() as u64,
            "{s:?}"
        );
    }
}

/// Multilingual text (CJK, Cyrillic, accents, emoji, marks, other digits): our char
/// path's counts against tiktoken's.
#[test]
fn multilingual_counts_match_tiktoken() {
    let o200k = tiktoken_rs::o200k_base().unwrap();
    for s in [
        "请把这封邮件翻译成英文：我们下周一开会，讨论第三季度的预算。",
        "お客様の注文番号は12345です。返金は3〜5営業日かかります🙂",
        "Клиент пишет: «Вход не работает уже два дня». Что ответить?",
        "Größe über Straße: déjà vu, façon, naïve coöperation, Ærøskøbing.",
        "emoji 👍🏽🎉 and ZWJ 👨‍👩‍👧 family, flags 🇫🇷🇯🇵",
        "Arabic digits ١٢٣٤٥ and Devanagari ०१२३, Roman Ⅻ, fractions ½",
        "fn größe_berechnen(xs: &[f64], δ: f64) -> f64 { xs.iter().map(|x| x * δ).sum() }",
        "한국어 문장도 있습니다. 감사합니다!",
        "\u{a0}non-breaking\u{2003}em-space\u{3000}ideographic",
    ] {
        assert_eq!(
            count_text(Tokenizer::O200k, s),
            o200k.encode_ordinary(s).len() as u64,
            "{s:?}"
        );
    }
}
