//! Criterion benches for the per-record hot path of `plan`: each stage on its own, so
//! a regression points at its stage. Inputs are the repo's example jobs (real-shaped
//! prompts), processed record by record as the planner does. Plus `run`'s results
//! file, written 10,000 rows at a time.
//!
//!     cargo bench --bench pipeline

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchyard::classify::{classify, ClassifiedBy};
use switchyard::config::{Config, Tokenizer};
use switchyard::input::parse::parse_record;
use switchyard::money::Usd;
use switchyard::output::parquet::ParquetResults;
use switchyard::output::{ResultRow, Status};
use switchyard::record::{Complexity, Job, Task, Tier};
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
                .map(|(j, t)| classify(j, *t, &cfg.classifier).complexity as u64)
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

/// `run`'s results file: 10,000 finished rows (a 200-character response each, like a
/// short summary) written to `results.parquet` in row groups and renamed into place —
/// the per-record cost of the final pass over the journal.
fn parquet_results(c: &mut Criterion) {
    let rows: Vec<ResultRow> = (0..10_000)
        .map(|i| ResultRow {
            status: Status::Ok,
            task: Some(Task::Summarization),
            complexity: Some(Complexity::Simple),
            classified_by: Some(ClassifiedBy::Local),
            tier: Some(Tier::Balanced),
            routed_model: Some("deepseek-v4-flash".into()),
            final_model: Some("deepseek-v4-flash".into()),
            provider: Some("deepseek".into()),
            attempts: 1,
            response: Some("The customer reports a billing error on invoice 4411. ".repeat(4)),
            finish_reason: Some("stop".into()),
            input_tokens: 412,
            output_tokens: 57,
            cost_usd: Usd::from_pico(73_640_000 + i),
            latency_ms: Some(840),
            ..ResultRow::new(format!("rec-{i:06}"))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("results");
    g.throughput(Throughput::Elements(rows.len() as u64));
    g.bench_function("parquet_write_10k", |b| {
        b.iter_batched(
            || rows.clone(),
            |rows| {
                let mut out = ParquetResults::create(dir.path()).unwrap();
                for r in rows {
                    out.push(r).unwrap();
                }
                out.finish().unwrap();
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, stages, parquet_results);
criterion_main!(benches);
