//! Writes a deterministic synthetic job file for benchmarks: a mix like the seeds'
//! side project (chat 40%, summaries 25%, code 15%, translation 10%, classification
//! 10%), with varied lengths and a few records carrying messages, tags or max_tokens.
//!
//!     cargo run --release --example gen_jobs -- 1000000 bench-data/1m.jsonl
//!     cargo run --release --example gen_jobs -- 100000 bench-data/ml.jsonl --multilingual
//!
//! `--multilingual` makes about a quarter of the records non-ASCII (Chinese, Japanese,
//! Russian, accented Latin, emoji, code with Unicode identifiers) and the records
//! longer (about 700 bytes on average), like a real international workload.

use std::io::{BufWriter, Write};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: fast, deterministic, good enough to vary text.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "account",
    "billing",
    "customer",
    "delivery",
    "error",
    "invoice",
    "login",
    "order",
    "payment",
    "refund",
    "screen",
    "shipping",
    "subscription",
    "update",
    "the",
    "and",
    "after",
    "before",
    "with",
    "without",
    "yesterday",
    "today",
    "again",
    "still",
    "never",
    "always",
    "quickly",
    "slowly",
    "team",
    "report",
    "meeting",
    "release",
    "budget",
    "server",
    "latency",
    "database",
    "migration",
    "feature",
];

/// Words of other scripts, for `--multilingual`: one list per language.
const FOREIGN: &[&[&str]] = &[
    &[
        "客户",
        "账单",
        "登录",
        "错误",
        "订单",
        "付款",
        "退款",
        "屏幕",
        "更新",
        "今天",
        "昨天",
        "服务器",
        "数据库",
        "团队",
        "报告",
    ],
    &[
        "お客様",
        "請求書",
        "ログイン",
        "エラー",
        "注文",
        "支払い",
        "返金",
        "画面",
        "更新",
        "今日",
        "昨日",
        "サーバー",
        "データベース",
    ],
    &[
        "клиент",
        "счёт",
        "вход",
        "ошибка",
        "заказ",
        "оплата",
        "возврат",
        "экран",
        "обновление",
        "сегодня",
        "вчера",
        "сервер",
        "база",
    ],
    &[
        "señor",
        "facturación",
        "añadir",
        "pequeño",
        "después",
        "rápido",
        "información",
        "además",
        "también",
        "corazón",
        "mañana",
    ],
    &[
        "größe",
        "über",
        "gemäß",
        "schließlich",
        "Rückerstattung",
        "Bestellung",
        "Fehler",
        "Anmeldung",
        "heute",
        "gestern",
        "Straße",
    ],
    &[
        "café",
        "déjà",
        "élève",
        "être",
        "façon",
        "garçon",
        "hôpital",
        "mère",
        "noël",
        "où",
        "très",
        "problème",
        "réponse",
    ],
];
const EMOJI: &[&str] = &["🙂", "👍", "🚀", "😡", "🎉", "❤️", "🤔", "✅"];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s.push('.');
    s
}

/// A sentence in one foreign script, sometimes with an emoji.
fn foreign_sentence(rng: &mut Rng, words: usize) -> String {
    let lang = FOREIGN[(rng.next() % FOREIGN.len() as u64) as usize];
    let cjk = lang[0].chars().next().is_some_and(|c| c as u32 > 0x2E80);
    let mut s = String::new();
    for i in 0..words {
        if i > 0 && !cjk {
            s.push(' ');
        }
        s.push_str(rng.pick(lang));
    }
    if rng.next() % 3 == 0 {
        s.push(' ');
        s.push_str(rng.pick(EMOJI));
    }
    s.push(if cjk { '。' } else { '.' });
    s
}

fn paragraph(rng: &mut Rng, sentences: usize) -> String {
    let mut parts = Vec::with_capacity(sentences);
    for _ in 0..sentences {
        let words = 8 + (rng.next() % 10) as usize;
        parts.push(sentence(rng, words));
    }
    parts.join(" ")
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("usage: gen_jobs N OUT.jsonl");
    let out = std::fs::File::create(args.get(2).expect("usage: gen_jobs N OUT.jsonl"))?;
    let multilingual = args.iter().any(|a| a == "--multilingual");
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for i in 1..=n {
        let roll = rng.next() % 100;
        if multilingual {
            serde_json::to_writer(&mut w, &multilingual_record(&mut rng, i, roll))?;
            w.write_all(b"\n")?;
            continue;
        }
        let record = match roll {
            0..=39 => {
                let q = rng.pick(&[
                    "How can I improve my sleep schedule?",
                    "What is the best way to learn Spanish quickly?",
                    "Can you recommend a good book about history?",
                    "What should I cook for dinner tonight with rice and beans?",
                ]);
                if rng.next() % 10 == 0 {
                    serde_json::json!({"id": format!("r{i}"), "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": paragraph(&mut rng, 2)},
                        {"role": "user", "content": "thanks, and what about weekends?"}]})
                } else {
                    serde_json::json!({"id": format!("r{i}"), "prompt": q})
                }
            }
            40..=64 => {
                let sentences = 3 + (rng.next() % 25) as usize;
                let body = paragraph(&mut rng, sentences);
                let mut r = serde_json::json!({"id": format!("r{i}"),
                    "system": "You write short, factual summaries for support engineers.",
                    "prompt": format!("Summarize this support ticket in two sentences.\n\n{body}"),
                    "max_tokens": 120});
                if rng.next() % 20 == 0 {
                    r["tags"] = serde_json::json!(["pii"]);
                }
                r
            }
            65..=79 => {
                let lang = rng.pick(&["Python", "Rust", "TypeScript", "Go"]);
                serde_json::json!({"id": format!("r{i}"), "prompt": format!(
                    "Fix the bug in this {lang} function and explain it:\n```\nfn total(xs) {{ let mut t = 0; for x in xs {{ t += x }}; return t - 1; }}\n```\n{}",
                    sentence(&mut rng, 12))})
            }
            80..=89 => {
                let lang = rng.pick(&["French", "German", "Japanese", "Spanish"]);
                serde_json::json!({"id": format!("r{i}"), "prompt": format!("Translate to {lang}: {}", sentence(&mut rng, 14))})
            }
            _ => serde_json::json!({"id": format!("r{i}"),
                "prompt": format!("Classify the sentiment of this review as positive, negative or neutral: {}", sentence(&mut rng, 20)),
                "labels": ["positive", "negative", "neutral"], "max_tokens": 3}),
        };
        serde_json::to_writer(&mut w, &record)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// A record of the multilingual mix: the same tasks, longer, and in about a quarter
/// of cases in another script.
fn multilingual_record(rng: &mut Rng, i: u64, roll: u64) -> serde_json::Value {
    let foreign = rng.next() % 4 == 0;
    let text = |rng: &mut Rng, sentences: usize| -> String {
        (0..sentences)
            .map(|_| {
                let words = 8 + (rng.next() % 10) as usize;
                if foreign {
                    foreign_sentence(rng, words)
                } else {
                    sentence(rng, words)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let id = format!("m{i}");
    match roll {
        0..=39 => {
            let body = {
                let n = 3 + (rng.next() % 6) as usize;
                text(rng, n)
            };
            serde_json::json!({"id": id, "prompt": format!("I have a question about my account. {body} What should I do?")})
        }
        40..=64 => {
            let body = {
                let n = 6 + (rng.next() % 14) as usize;
                text(rng, n)
            };
            serde_json::json!({"id": id,
                "system": "You write short, factual summaries for support engineers.",
                "prompt": format!("Summarize this support ticket in two sentences.\n\n{body}"),
                "max_tokens": 120})
        }
        65..=79 => {
            let (name, var) = if foreign {
                ("größe_berechnen", "δ")
            } else {
                ("compute_size", "delta")
            };
            let note = text(rng, 2);
            serde_json::json!({"id": id, "prompt": format!(
                "Fix the bug in this Rust function and explain it:\n```\nfn {name}(xs: &[f64], {var}: f64) -> f64 {{\n    let mut t = 0.0;\n    for x in xs {{ t += x * {var} }}\n    t - 1.0\n}}\n```\n{note}")})
        }
        80..=89 => {
            let lang = rng.pick(&["French", "German", "Japanese", "Spanish", "English"]);
            let body = {
                let n = 2 + (rng.next() % 4) as usize;
                text(rng, n)
            };
            serde_json::json!({"id": id, "prompt": format!("Translate to {lang}: {body}")})
        }
        _ => {
            let body = {
                let n = 2 + (rng.next() % 3) as usize;
                text(rng, n)
            };
            serde_json::json!({"id": id,
                "prompt": format!("Classify the sentiment of this review as positive, negative or neutral: {body}"),
                "labels": ["positive", "negative", "neutral"], "max_tokens": 3})
        }
    }
}
