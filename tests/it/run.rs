//! `run --simulate` end to end: every record accounted once, the budget ceiling held
//! at high concurrency, escalation charged to both models, faults retried.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{bin, output};
use serde_json::Value;

struct Run {
    code: i32,
    rows: Vec<Value>,
    stderr: String,
}

/// `run --simulate ARGS` with the JSON result rows it printed.
fn run(config: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = bin();
    cmd.arg("run").args(args).arg("--simulate");
    if let Some(cfg) = config {
        cmd.arg("--config").arg(cfg);
    }
    let o = output(&mut cmd);
    Run {
        code: o.code,
        rows: crate::fake::rows(&o),
        stderr: o.stderr,
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

/// `run --simulate --out DIR --format json`: the exit code, the results as JSON rows,
/// the summary (whose `spent_exact` is the spend to the pico-dollar) and stderr.
fn run_out(config: &Path, args: &[&str]) -> (i32, Vec<Value>, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .arg("run")
        .args(args)
        .args(["--simulate", "--format", "json", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let summary: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let rows = crate::fake::parquet_rows(&out.join("results.parquet"));
    (o.status.code().unwrap(), rows, summary, stderr)
}

fn spent(summary: &Value) -> u128 {
    crate::fake::pico(summary["spent_exact"].as_str().unwrap())
}

#[test]
fn budget_ceiling_holds_under_skip_and_stop_at_concurrency_64() {
    // The whole job costs far more than the ceiling; 64 records in flight at once.
    let (_d, cfg) = config("");
    let (_, _, full, _) = run_out(&cfg, &["jobs/tickets_nightly.jsonl", "--concurrency", "64"]);
    let ceiling = spent(&full) / 3;
    let ceiling_arg = format!("0.{ceiling:012}");
    for (policy, concurrency, code) in [("skip", "64", 1), ("stop", "4", 3)] {
        let (got, rows, summary, stderr) = run_out(
            &cfg,
            &[
                "jobs/tickets_nightly.jsonl",
                "--concurrency",
                concurrency,
                "--budget",
                &ceiling_arg,
                "--on-budget",
                policy,
            ],
        );
        assert_eq!(got, code, "{policy}: {stderr}");
        assert_eq!(rows.len(), 40, "{policy}: every record is accounted for");
        assert!(spent(&summary) <= ceiling, "{policy}: {summary}");
        assert!(spent(&summary) > 0);
        assert!(
            statuses(&rows).get("skipped_budget").copied().unwrap_or(0) > 0,
            "{policy}: {:?}",
            statuses(&rows)
        );
    }
}

#[test]
fn budget_downgrades_to_a_cheaper_later_candidate_and_holds_the_ceiling() {
    // Forty summaries of equal size (29 prompt tokens, max_tokens 120) on a route
    // whose first model is not its cheapest: gpt-4o-mini, then gpt-4o (where a
    // truncated answer escalates), then glm-4-flash. Worst cases:
    //   gpt-4o-mini  29 × $0.15/M + 120 × $0.60/M = $0.00007635
    //   glm-4-flash  29 × $0.01/M + 120 × $0.04/M = $0.00000509
    // The ceiling fits ten on gpt-4o-mini and two more on glm-4-flash. All forty start
    // at once (concurrency 64); answers take 300 ms, so the first reservations are
    // made before any settles: ten go to gpt-4o-mini, the next are downgraded, the
    // rest skipped. A third of the answers come back truncated and try to escalate
    // within what is left.
    let (_d, cfg) = config(
        "rate_truncated = 0.3\n\
         [routes.summarization]\n\
         budget = [\"gpt-4o-mini\", \"gpt-4o\", \"glm-4-flash\"]\n\
         balanced = [\"gpt-4o-mini\", \"gpt-4o\", \"glm-4-flash\"]\n\
         quality = [\"gpt-4o-mini\", \"gpt-4o\", \"glm-4-flash\"]\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("latency_ms = 1\n", "latency_ms = 300\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("tickets.jsonl");
    let text: String = (1001..=1040)
        .map(|i| format!("{{\"id\":\"t{i}\",\"prompt\":\"Summarize this support ticket in one sentence: ticket {i}, the printer is jammed again.\",\"max_tokens\":120}}\n"))
        .collect();
    std::fs::write(&job, text).unwrap();
    let ceiling: u128 = 10 * 76_350_000 + 2 * 5_090_000 + 1;
    let ceiling_arg = format!("0.{ceiling:012}");
    let (code, rows, summary, stderr) = run_out(
        &cfg,
        &[
            job.to_str().unwrap(),
            "--concurrency",
            "64",
            "--budget",
            &ceiling_arg,
            "--on-budget",
            "downgrade",
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every id once");
    assert_eq!(rows.len(), 40);
    assert!(spent(&summary) <= ceiling, "{summary}");
    let downgraded = rows
        .iter()
        .filter(|r| {
            r["status"] == "ok"
                && r["routed_model"] == "gpt-4o-mini"
                && r["final_model"] == "glm-4-flash"
                && r["escalations"].as_array().is_none_or(|e| e.is_empty())
        })
        .count();
    assert!(downgraded >= 1, "{rows:#?}");
    assert!(
        statuses(&rows)["skipped_budget"] > 0,
        "{:?}",
        statuses(&rows)
    );
}

#[test]
fn escalation_reaches_a_stronger_model_and_both_calls_are_charged() {
    let (_d, cfg) = config("rate_truncated = 1.0\n");
    let r = run(Some(&cfg), &["jobs/tickets_nightly.jsonl"]);
    let row = r.rows.iter().find(|r| r["id"] == "ticket-0001").unwrap();
    assert_eq!(row["escalations"], serde_json::json!(["truncated"]));
    assert_eq!(row["routed_model"], "deepseek-v4-flash");
    assert_eq!(row["final_model"], "deepseek-v4-pro");
    // ticket-0001 is 83 prompt tokens (system + user, o200k, chat overhead), and each
    // answer is truncated at max_tokens = 120:
    //   deepseek-v4-flash  83 × $0.14/M + 120 × $0.28/M = $0.00004522
    //   deepseek-v4-pro    83 × $0.50/M + 120 × $2.19/M = $0.00030430
    assert_eq!(row["input_tokens"], 166);
    assert_eq!(row["output_tokens"], 240);
    assert_eq!(row["cost_usd"].as_f64(), Some(0.00034952), "{row}");
}

#[test]
fn checks_switched_off_in_config_do_not_escalate() {
    let (_d, cfg) = config("rate_truncated = 1.0\n[checks]\ntruncated = false\n");
    let r = run(Some(&cfg), &["jobs/tickets_nightly.jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for row in &r.rows {
        assert_eq!(row["finish_reason"], "length", "{row}");
        assert_eq!(row["escalations"], serde_json::json!([]), "{row}");
        assert_eq!(row["final_model"], row["routed_model"], "{row}");
    }
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
fn the_simulator_draws_faults_and_answers_per_record() {
    // Half the answers truncated: some records escalate and some do not. (Keyed by an
    // empty id, every record of a model once drew the same roll: all or none.)
    let (_d, cfg) = config("rate_truncated = 0.5\n");
    let r = run(Some(&cfg), &["jobs/tickets_nightly.jsonl"]);
    let escalated = r
        .rows
        .iter()
        .filter(|row| row["escalations"] != serde_json::json!([]))
        .count();
    assert!(
        (5..=35).contains(&escalated),
        "{escalated} of 40 escalated at rate 0.5"
    );
    let answers: std::collections::HashSet<&str> = r
        .rows
        .iter()
        .map(|row| row["response"].as_str().unwrap())
        .collect();
    assert!(answers.len() > 20, "{} distinct answers", answers.len());
}
