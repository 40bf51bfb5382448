//! `plan --history`: answer lengths learned from a past run's results make the
//! estimate of the next, similar job match what running it costs.

use serde_json::Value;

use crate::common::{bin, output};

/// `n` records of three tasks with prompts of varied length, ids from `start`.
fn job(dir: &std::path::Path, name: &str, start: usize, n: usize) -> std::path::PathBuf {
    let tasks = ["chat", "summarization", "code"];
    let text: String = (start..start + n)
        .map(|i| {
            let words = "report on the quarterly numbers ".repeat(1 + i % 7);
            format!(
                "{{\"id\":\"r{i}\",\"prompt\":\"{words}{i}\",\"task\":\"{}\"}}\n",
                tasks[i % 3]
            )
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn plan_total(input: &std::path::Path, extra: &[&str]) -> (f64, Value) {
    let o = output(
        bin()
            .args(["plan", input.to_str().unwrap(), "--format", "json"])
            .args(extra),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    (v["total_cost_usd"].as_f64().unwrap(), v)
}

#[test]
fn an_estimate_from_history_is_within_five_percent_of_the_simulated_bill() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        job(dir.path(), "a.jsonl", 0, 600),
        job(dir.path(), "b.jsonl", 600, 600),
    );
    let past = dir.path().join("past");
    let run = |input: &std::path::Path, out: &std::path::Path| -> f64 {
        let o = output(bin().args([
            "run",
            input.to_str().unwrap(),
            "--simulate",
            "--concurrency",
            "64",
            "--format",
            "json",
            "--out",
            out.to_str().unwrap(),
        ]));
        assert_eq!(o.code, 0, "{}", o.stderr);
        let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
        v["spent_usd"].as_f64().unwrap()
    };
    run(&a, &past);
    let billed = run(&b, &dir.path().join("now"));
    let (without, _) = plan_total(&b, &[]);
    let (with, v) = plan_total(&b, &["--history", past.to_str().unwrap()]);
    let off = |estimate: f64| (estimate - billed).abs() / billed;
    assert!(off(with) < 0.05, "with history {with} vs billed {billed}");
    assert!(
        off(without) > 0.05,
        "the default estimate {without} would pass too"
    );
    let h = &v["history"];
    assert_eq!(h["files"], 1);
    assert_eq!(h["answers"].as_u64().unwrap() + escalated(&past), 600);
    assert!(h["p95_cost_usd"].as_f64().unwrap() > with);
    // The table says where the lengths came from.
    let o = output(
        bin()
            .args(["plan", b.to_str().unwrap(), "--history"])
            .arg(past.join("results.parquet")),
    );
    assert!(
        o.stdout.contains("history: answer lengths from "),
        "{}",
        o.stdout
    );
}

/// Rows of a run that escalated (left out of the history).
fn escalated(out: &std::path::Path) -> u64 {
    crate::fake::parquet_rows(&out.join("results.parquet"))
        .iter()
        .filter(|r| r["escalations"].as_array().is_some_and(|e| !e.is_empty()))
        .count() as u64
}

#[test]
fn a_history_path_without_results_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = output(
        bin()
            .args(["plan", "jobs/mixed.jsonl", "--history"])
            .arg(dir.path()),
    );
    assert_eq!(o.code, 2);
    assert_eq!(
        o.stderr,
        format!(
            "error: --history {}: no results.parquet there\n",
            dir.path().display()
        )
    );
}
