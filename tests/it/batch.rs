//! `run --via batch` against the in-process fake of OpenAI Batch and Anthropic
//! Message Batches: every record answered once at batch prices, lines the batch did
//! not answer sent on (and only those), a 413 split, `kill -9` at every phase of a
//! submission then `--resume` (no record submitted twice, none lost), Ctrl-C and
//! `--cancel`, escalation of a weak batch answer, and `plan --via batch`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{output, Output};
use crate::fake::{command, config, edit, parquet_rows, pico, spawn, write_job};
use crate::fake_batch::{self, submissions, FakeBatch, Phase};
use serde_json::Value;

/// `n` chat records `r000…`, each with its own prompt `question N`.
fn job(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i:03}\",\"prompt\":\"question {i}\",\"task\":\"chat\"}}\n"))
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    input: PathBuf,
    out: PathBuf,
}

/// The fake config on the batch fake (`kind`), its provider batching, polls fast.
fn setup(server: &FakeBatch, kind: &str, records: usize, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, kind);
    let run =
        format!("[run]\nbatch_poll_ms = 5\nbatch_poll_max_ms = 20\nbatch_linger_ms = 50\n{extra}");
    edit(
        &cfg,
        &[
            ("timeout_s = 5\n", "timeout_s = 5\nbatch = true\n"),
            ("[run]\n", &run),
        ],
        "",
    );
    let input = write_job(&cfg, &job(records));
    let out = dir.path().join("out");
    Setup {
        _dir: dir,
        cfg,
        input,
        out,
    }
}

impl Setup {
    fn run(&self, extra: &[&str]) -> Output {
        let mut c = command(&self.cfg, &self.input);
        c.args(["--via", "batch", "--out", self.out.to_str().unwrap()])
            .args(extra);
        output(&mut c)
    }

    fn spawn(&self, extra: &[&str]) -> std::process::Child {
        let mut args = vec!["--via", "batch", "--out", self.out.to_str().unwrap()];
        args.extend_from_slice(extra);
        spawn(&self.cfg, &self.input, &args)
    }

    fn results(&self) -> Vec<Value> {
        parquet_rows(&self.out.join("results.parquet"))
    }

    fn report(&self) -> Vec<Value> {
        parquet_rows(&self.out.join("cost_report.parquet"))
    }
}

/// One batch line on `cheap` ($1/$2 per M, batch half): 100 in × $0.50 + 10 out × $1.
const BATCH_LINE_PICO: u128 = 60_000_000;
/// The same answer as a realtime call on `cheap`.
const REALTIME_PICO: u128 = 120_000_000;

fn cost_of(row: &Value) -> u128 {
    pico(&format!("{:.12}", row["cost_usd"].as_f64().unwrap()))
}

/// Every id of `0..n` exactly once, all ok.
fn all_ok_once(rows: &[Value], n: usize) {
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), n, "{ids:?}");
    assert_eq!(unique.len(), n);
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
    }
}

/// Every prompt of `0..n` submitted in exactly one batch.
fn submitted_once(server: &FakeBatch, n: usize) {
    let subs = submissions(&server.state());
    assert_eq!(subs.len(), n, "{subs:?}");
    for (prompt, times) in subs {
        assert_eq!(times, 1, "{prompt} submitted {times} times");
    }
}

#[test]
fn a_batch_run_answers_every_record_once_at_batch_prices_split_by_request_count() {
    let server = fake_batch::serve();
    let s = setup(&server, "openai", 20, "");
    edit(
        &s.cfg,
        &[("batch = true\n", "batch = true\nbatch_max_requests = 8\n")],
        "",
    );
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = s.results();
    all_ok_once(&rows, 20);
    for r in &rows {
        assert_eq!(r["via"], "batch", "{r}");
        assert_eq!(r["final_model"], "cheap");
        assert_eq!(cost_of(r), BATCH_LINE_PICO, "{r}");
    }
    submitted_once(&server, 20);
    assert!(server.state().realtime.is_empty());
    // 20 requests at most 8 a batch.
    assert_eq!(server.batch_ids().len(), 3);
    // Progress names each state; a batch is done only once it completed.
    for state in ["validating", "in_progress", "finalizing", "completed"] {
        assert!(o.stderr.contains(state), "{state}: {}", o.stderr);
    }
    let report = s.report();
    let line = report
        .iter()
        .find(|r| r["model"] == "cheap (batch)")
        .expect("a batch line");
    assert_eq!(line["requests"], 20);
    assert_eq!(
        pico(&format!("{:.12}", line["cost_usd"].as_f64().unwrap())),
        20 * BATCH_LINE_PICO
    );
}

#[test]
fn anthropic_batches_charge_cached_tokens_at_the_cache_price_with_the_batch_discount() {
    let server = fake_batch::serve();
    server.set(|k| k.cached = 40);
    let s = setup(&server, "anthropic", 6, "");
    // Cache reads at $0.10/M: in a batch, half of that.
    edit(
        &s.cfg,
        &[(
            "[models.cheap]\n",
            "[models.cheap]\ncache_read_per_mtok = 0.1\n",
        )],
        "",
    );
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = s.results();
    all_ok_once(&rows, 6);
    for r in &rows {
        assert_eq!(r["via"], "batch");
        assert_eq!(r["cached_input_tokens"], 40);
        // 60 fresh × $0.50 + 40 cached × $0.05 + 10 out × $1.00 per M.
        assert_eq!(cost_of(r), 42_000_000, "{r}");
    }
    submitted_once(&server, 6);
    assert!(server.state().realtime.is_empty());
}

#[test]
fn lines_a_batch_did_not_answer_go_realtime_and_answered_ones_never_run_again() {
    let server = fake_batch::serve();
    server.set(|k| {
        k.expire = ["question 1", "question 2"].map(String::from).into();
        k.fail = [
            ("question 3".to_string(), 500),
            ("question 4".to_string(), 400),
        ]
        .into();
    });
    let s = setup(&server, "openai", 10, "");
    let o = s.run(&[]);
    assert_eq!(o.code, 1, "one record is rejected: {}", o.stderr);
    let rows = s.results();
    assert_eq!(rows.len(), 10);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    // Expired and retryable lines: once more, realtime, at list prices.
    for id in ["r001", "r002", "r003"] {
        let r = by_id(id);
        assert_eq!(
            (r["status"].as_str(), r["via"].as_str()),
            (Some("ok"), Some("realtime")),
            "{r}"
        );
        assert_eq!(cost_of(&r), REALTIME_PICO);
    }
    // A 400 is the request's own fault: not sent again.
    let bad = by_id("r004");
    assert_eq!(bad["status"], "failed", "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("HTTP 400"), "{bad}");
    let mut realtime = server.state().realtime.clone();
    realtime.sort();
    assert_eq!(realtime, ["question 1", "question 2", "question 3"]);
    for i in [0, 5, 6, 7, 8, 9] {
        let r = by_id(&format!("r{i:03}"));
        assert_eq!(r["via"], "batch");
        assert_eq!(cost_of(&r), BATCH_LINE_PICO);
    }
    submitted_once(&server, 10);
    assert!(o.stderr.contains("expired"), "{}", o.stderr);
}

#[test]
fn an_oversized_file_is_split_on_413_and_every_record_is_submitted_once() {
    let server = fake_batch::serve();
    // About three lines per file.
    server.set(|k| k.max_bytes = Some(500));
    let s = setup(&server, "openai", 12, "");
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    all_ok_once(&s.results(), 12);
    submitted_once(&server, 12);
    assert!(server.batch_ids().len() >= 4, "{:?}", server.batch_ids());
    assert!(o.stderr.contains("splitting"), "{}", o.stderr);
}

#[test]
fn a_weak_batch_answer_escalates_realtime_within_the_same_run() {
    let server = fake_batch::serve();
    server.set(|k| k.refuse = ["question 0".to_string()].into());
    let s = setup(&server, "openai", 3, "");
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = s.results();
    let r = rows.iter().find(|r| r["id"] == "r000").unwrap();
    assert_eq!(r["escalations"], serde_json::json!(["refusal"]), "{r}");
    assert_eq!(r["final_model"], "strong");
    assert_eq!(r["via"], "realtime");
    // The refused batch answer on cheap, then strong realtime: 100 × $10 + 10 × $20.
    assert_eq!(cost_of(r), BATCH_LINE_PICO + 1_200_000_000);
    assert_eq!(server.state().realtime, ["question 0"]);
}

/// Kills the run with SIGKILL once the fake holds a request at `phase`, then
/// resumes it: every record ends ok once, and none was submitted twice.
fn kill_at(kind: &str, phase: Phase) {
    let server = fake_batch::serve();
    let s = setup(&server, kind, 8, "");
    server.set(|k| k.hold = Some(phase));
    let mut child = s.spawn(&[]);
    server.wait_held(phase);
    child.kill().unwrap();
    child.wait().unwrap();
    server.release();
    let o = s.run(&["--resume"]);
    assert_eq!(o.code, 0, "{kind} {phase:?}: {}", o.stderr);
    all_ok_once(&s.results(), 8);
    submitted_once(&server, 8);
    assert!(server.state().realtime.is_empty(), "{kind} {phase:?}");
    for r in s.results() {
        assert_eq!(r["via"], "batch");
        assert_eq!(cost_of(&r), BATCH_LINE_PICO);
    }
}

#[test]
fn kill_9_while_uploading_then_resume_submits_every_record_once() {
    kill_at("openai", Phase::Upload);
}

#[test]
fn kill_9_while_creating_the_batch_then_resume_creates_it_from_the_uploaded_file() {
    kill_at("openai", Phase::Create);
}

#[test]
fn kill_9_after_the_batch_exists_but_before_its_id_came_back_then_resume_finds_it() {
    kill_at("openai", Phase::Created);
    kill_at("anthropic", Phase::Created);
}

#[test]
fn kill_9_while_polling_then_resume_re_attaches_to_the_batch() {
    kill_at("openai", Phase::Poll);
    kill_at("anthropic", Phase::Poll);
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn journal_has_batch_id(out: &Path) -> bool {
    std::fs::read_to_string(out.join("journal.jsonl"))
        .unwrap_or_default()
        .contains("\"id\":\"batch_")
}

#[test]
fn ctrl_c_while_waiting_leaves_the_batch_running_and_resume_reads_it() {
    let server = fake_batch::serve();
    // A batch that would take far longer than the test.
    server.set(|k| k.polls = Some(1_000_000));
    let s = setup(&server, "openai", 5, "");
    let child = s.spawn(&[]);
    wait_for("the batch id in the journal", || {
        journal_has_batch_id(&s.out)
    });
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("5 records wait in batches already submitted"),
        "{stderr}"
    );
    server.set(|k| k.polls = Some(2));
    let o = s.run(&["--resume"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    all_ok_once(&s.results(), 5);
    submitted_once(&server, 5);
    assert!(server.state().realtime.is_empty());
}

#[test]
fn cancel_stops_the_submitted_batches_and_resume_runs_their_lines_realtime() {
    let server = fake_batch::serve();
    server.set(|k| k.polls = Some(1_000_000));
    let s = setup(&server, "openai", 4, "");
    let mut child = s.spawn(&[]);
    wait_for("the batch id in the journal", || {
        journal_has_batch_id(&s.out)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let o = s.run(&["--cancel"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("batch_1") && o.stderr.contains("cancelled"),
        "{}",
        o.stderr
    );
    assert!(server
        .state()
        .paths
        .iter()
        .any(|p| p == "POST /v1/batches/batch_1/cancel"));
    let o = s.run(&["--resume"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = s.results();
    all_ok_once(&rows, 4);
    for r in &rows {
        assert_eq!(r["via"], "realtime", "{r}");
    }
    submitted_once(&server, 4);
    assert_eq!(server.state().realtime.len(), 4);
}

#[test]
fn plan_via_batch_prices_batch_lines_at_batch_prices() {
    let server = fake_batch::serve();
    let s = setup(&server, "openai", 10, "");
    let plan = |via: &str| {
        let o = output(crate::common::bin().args([
            "plan",
            s.input.to_str().unwrap(),
            "--config",
            s.cfg.to_str().unwrap(),
            "--via",
            via,
            "--format",
            "json",
        ]));
        assert_eq!(o.code, 0, "{}", o.stderr);
        serde_json::from_str::<Value>(&o.stdout).unwrap()
    };
    let (rt, batch) = (plan("realtime"), plan("batch"));
    let total = |v: &Value| pico(v["total_cost_exact"].as_str().unwrap());
    assert_eq!(total(&batch) * 2, total(&rt), "{batch}");
    assert_eq!(batch["batch"]["records"], 10);
    assert_eq!(rt["batch"]["records"], 0);
}

#[test]
fn a_batch_run_reserves_worst_cases_at_batch_prices_and_never_passes_the_budget() {
    let server = fake_batch::serve();
    let s = setup(&server, "openai", 10, "");
    // A line's worst case on cheap at batch prices is about 1,000 output tokens ×
    // $1/M: about $0.001. $0.0035 holds three at once; realtime (×2) only one.
    let o = s.run(&["--budget", "0.0035", "--on-budget", "skip"]);
    let rows = s.results();
    assert_eq!(rows.len(), 10, "{}", o.stderr);
    let ok = rows.iter().filter(|r| r["status"] == "ok").count();
    let skipped = rows
        .iter()
        .filter(|r| r["status"] == "skipped_budget")
        .count();
    assert_eq!(ok + skipped, 10);
    assert_eq!(ok, 3, "{}", o.stderr);
    let spent: u128 = rows.iter().map(cost_of).sum();
    assert_eq!(spent, 3 * BATCH_LINE_PICO);
    assert!(spent <= pico("0.0035"));
    submitted_once(&server, 3);
}

#[test]
fn a_resume_that_reads_a_batch_again_bills_no_answer_twice() {
    let server = fake_batch::serve();
    let s = setup(&server, "openai", 6, "");
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // As if the process died after journaling the answers' calls but before their
    // rows: drop every row line, keep the batch and call lines.
    let path = s.out.join("journal.jsonl");
    let kept: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("\"row\""))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        kept.contains("\"batch\":[0,"),
        "calls carry their batch line"
    );
    std::fs::write(&path, kept).unwrap();
    let o = s.run(&["--resume"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("re-attached to batch_1"), "{}", o.stderr);
    let rows = s.results();
    all_ok_once(&rows, 6);
    submitted_once(&server, 6);
    assert!(server.state().realtime.is_empty());
    // The rows cost what the answers cost; the spend counts each answer once.
    for r in &rows {
        assert_eq!(cost_of(r), BATCH_LINE_PICO);
    }
    let report = s.report();
    let total = report.iter().find(|r| r["model"] == "total").unwrap();
    assert_eq!(
        pico(&format!("{:.12}", total["cost_usd"].as_f64().unwrap())),
        6 * BATCH_LINE_PICO
    );
    assert!(
        o.stderr.contains(&format!("spent ${:.6}", 6.0 * 60e-6)),
        "{}",
        o.stderr
    );
}

#[test]
fn a_completed_batch_whose_lines_all_failed_has_only_an_error_file_and_its_records_still_run() {
    let server = fake_batch::serve();
    server.set(|k| k.fail = (0..4).map(|i| (format!("question {i}"), 503)).collect());
    let s = setup(&server, "openai", 4, "");
    let o = s.run(&[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("completed — 0 of 4 answered, 4 failed"),
        "{}",
        o.stderr
    );
    let rows = s.results();
    all_ok_once(&rows, 4);
    for r in &rows {
        assert_eq!(r["via"], "realtime");
        assert_eq!(cost_of(r), REALTIME_PICO);
    }
    assert_eq!(server.state().realtime.len(), 4);
    submitted_once(&server, 4);
}
