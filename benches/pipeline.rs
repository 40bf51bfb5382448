//! Criterion benches for the per-record hot path of `plan`: each stage on its own, so
//! a regression points at its stage. Inputs are the repo's example jobs (real-shaped
//! prompts), processed record by record as the planner does.
//!
//!     cargo bench --bench pipeline

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchyard::classify::classify;
use switchyard::config::{Config, Tokenizer};
use switchyard::input::parse::parse_record;
use switchyard::record::{Job, Tier};
use switchyard::route::route;
use switchyard::tokens::{count_messages, PromptTokens};

fn lines() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "jobs/mixed.jsonl",
        "jobs/tickets_nightly.jsonl",
        "jobs/reviews_labels.jsonl",
    ]
    .iter()
    .flat_map(|f| {
        std::fs::read_to_string(root.join(f))
            .unwrap()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    })
    .collect()
}

fn jobs(cfg: &Config, lines: &[String]) -> Vec<Job> {
    lines
        .iter()
        .map(|l| parse_record(l.as_bytes(), 1, cfg.batch_model).job.unwrap())
        .collect()
}

fn stages(c: &mut Criterion) {
    let cfg = Config::embedded();
    let lines = lines();
    let jobs = jobs(&cfg, &lines);
    let n = jobs.len() as u64;
    let mut g = c.benchmark_group("per_record");
    g.throughput(Throughput::Elements(n));

    // JSON line -> validated Job (serde + field checks).
    g.bench_function("parse", |b| {
        b.iter(|| {
            lines
                .iter()
                .map(|l| parse_record(l.as_bytes(), 1, cfg.batch_model).job.is_ok() as u32)
                .sum::<u32>()
        })
    });
    // o200k prompt tokens with chat overhead (pre-tokenizer + BPE + piece cache).
    g.bench_function("count_tokens", |b| {
        b.iter(|| {
            jobs.iter()
                .map(|j| count_messages(Tokenizer::O200k, &j.messages))
                .sum::<u64>()
        })
    });
    // Task and complexity from cues and shapes.
    let tokens: Vec<u64> = jobs
        .iter()
        .map(|j| count_messages(Tokenizer::O200k, &j.messages))
        .collect();
    g.bench_function("classify", |b| {
        b.iter(|| {
            jobs.iter()
                .zip(&tokens)
                .map(|(j, t)| classify(j, *t, &cfg.classifier).margin as u64)
                .sum::<u64>()
        })
    });
    // Eligibility and exact pricing of every candidate (token counts reused per record).
    let decisions: Vec<_> = jobs
        .iter()
        .zip(&tokens)
        .map(|(j, t)| classify(j, *t, &cfg.classifier))
        .collect();
    g.bench_function("route_and_price", |b| {
        b.iter_batched(
            || {
                jobs.iter()
                    .map(|j| {
                        let mut t = PromptTokens::default();
                        t.bpe(Tokenizer::O200k, &j.messages);
                        t
                    })
                    .collect::<Vec<_>>()
            },
            |mut counts| {
                for (i, (j, d)) in jobs.iter().zip(&decisions).enumerate() {
                    let _ = route(&cfg, j, d, Tier::Balanced, &mut counts[i]);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
