//! `run --simulate` end to end: every record accounted once, the budget ceiling held
//! at high concurrency, escalation charged to both models, faults retried.

use std::collections::HashMap;
use std::path::Path;

use crate::common::bin;
use serde_json::Value;

struct Run {
    code: i32,
    rows: Vec<Value>,
    stderr: String,
}

fn run(config: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = bin();
    cmd.arg("run").args(args).arg("--simulate");
    if let Some(cfg) = config {
        cmd.arg("--config").arg(cfg);
    }
    let o = cmd.output().unwrap();
    let stdout = String::from_utf8(o.stdout).unwrap();
    Run {
        code: o.status.code().unwrap(),
        rows: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[simulate]\nlatency_ms = 1\n{text}")).unwrap();
    (dir, path)
}

fn ids(rows: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn statuses(rows: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r["status"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

fn cost(rows: &[Value]) -> f64 {
    rows.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum()
}

#[test]
fn every_record_is_accounted_once() {
    let (_d, cfg) = config("");
    let r = run(Some(&cfg), &["jobs/mixed.jsonl", "--concurrency", "8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want: Vec<String> = {
        let mut v: Vec<String> = (1..=100).map(|i| format!("m-{i:03}")).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&r.rows), want);
    assert_eq!(statuses(&r.rows)["ok"], 100);

    let bad = run(Some(&cfg), &["fixtures/bad_lines.jsonl"]);
    assert_eq!(bad.code, 1, "invalid records -> exit 1");
    assert_eq!(bad.rows.len(), 7, "invalid records are result rows too");
    assert_eq!(statuses(&bad.rows)["invalid_input"], 5);
}

#[test]
fn budget_ceiling_holds_at_concurrency_64() {
    // The whole job costs far more than the ceiling; 64 records in flight at once.
    let (_d, cfg) = config("");
    let full = run(
        Some(&cfg),
        &["jobs/tickets_nightly.jsonl", "--concurrency", "64"],
    );
    let full_cost = cost(&full.rows);
    let ceiling = full_cost / 3.0;
    let ceiling_arg = format!("{ceiling:.9}");
    for policy in ["skip", "downgrade"] {
        let r = run(
            Some(&cfg),
            &[
                "jobs/tickets_nightly.jsonl",
                "--concurrency",
                "64",
                "--budget",
                &ceiling_arg,
                "--on-budget",
                policy,
            ],
        );
        assert_eq!(r.rows.len(), 40);
        let spent = cost(&r.rows);
        assert!(
            spent <= ceiling + 1e-12,
            "{policy}: spent {spent} over ceiling {ceiling}"
        );
        assert!(spent > 0.0);
        assert!(
            statuses(&r.rows)
                .get("skipped_budget")
                .copied()
                .unwrap_or(0)
                > 0,
            "{policy}: {:?}",
            statuses(&r.rows)
        );
        assert_eq!(r.code, 1);
    }
    let stop = run(
        Some(&cfg),
        &[
            "jobs/tickets_nightly.jsonl",
            "--concurrency",
            "4",
            "--budget",
            &ceiling_arg,
            "--on-budget",
            "stop",
        ],
    );
    assert_eq!(stop.code, 3, "{}", stop.stderr);
    assert_eq!(
        stop.rows.len(),
        40,
        "stopped runs still account for every record"
    );
    assert!(cost(&stop.rows) <= ceiling + 1e-12);
}

#[test]
fn escalation_reaches_a_stronger_model_and_both_calls_are_charged() {
    let (_d, cfg) = config("rate_truncated = 1.0\n");
    let r = run(Some(&cfg), &["jobs/tickets_nightly.jsonl"]);
    let row = r.rows.iter().find(|r| r["id"] == "ticket-0001").unwrap();
    assert_eq!(row["escalations"], serde_json::json!(["truncated"]));
    assert_eq!(row["routed_model"], "deepseek-v4-flash");
    assert_eq!(row["final_model"], "deepseek-v4-pro");
    // 120 output tokens (truncated at max_tokens) on each model, plus the prompt twice.
    let input = row["input_tokens"].as_u64().unwrap() / 2;
    let expected = (input as f64 * (0.14 + 0.50) + 120.0 * (0.28 + 2.19)) / 1e6;
    assert!(
        (row["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{row}"
    );
}

#[test]
fn injected_faults_are_retried_and_every_record_still_answers() {
    let (_d, cfg) =
        config("rate_429 = 0.2\nrate_5xx = 0.2\n[run]\nretry_base_ms = 1\nmax_retries = 6\n");
    let r = run(Some(&cfg), &["jobs/mixed.jsonl", "--concurrency", "32"]);
    assert_eq!(r.rows.len(), 100);
    let attempts: u64 = r.rows.iter().map(|r| r["attempts"].as_u64().unwrap()).sum();
    assert!(
        attempts > 100,
        "faults should cost extra attempts: {attempts}"
    );
    assert_eq!(
        statuses(&r.rows).get("ok").copied().unwrap_or(0),
        100,
        "{}",
        r.stderr
    );
}

#[test]
fn out_dir_gets_both_parquet_files_and_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let (_d, cfg) = config("");
    let o = bin()
        .args([
            "run",
            "jobs/reviews_labels.jsonl",
            "--simulate",
            "--format",
            "json",
            "--out",
        ])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["records"], 60);
    let file = std::fs::File::open(out.join("results.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 60);
    assert!(out.join("cost_report.parquet").exists());
    let again = bin()
        .args(["run", "jobs/reviews_labels.jsonl", "--simulate", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a run"));
}

#[test]
fn a_missing_key_fails_records_clearly_without_sending() {
    // No key variables at all: every candidate refuses before any request is made.
    let mut cmd = bin();
    for var in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "DEEPSEEK_API_KEY",
        "DASHSCOPE_API_KEY",
        "ZHIPUAI_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    let o = cmd
        .args(["run", "fixtures/hand_checked.jsonl"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let rows: Vec<Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let b = rows.iter().find(|r| r["id"] == "b").unwrap();
    assert_eq!(b["status"], "failed");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY is not set"),
        "{b}"
    );
}
