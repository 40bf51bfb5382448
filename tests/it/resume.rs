//! Crash safety: the real binary as a child process against the in-process fake
//! server, killed with SIGKILL or interrupted with SIGINT, then resumed. The server's
//! own log says which prompts were requested when.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fake::{config, ok_openai, serve, spawn, write_job, Reply, Server, CHEAP_CALL_PICO};
use serde_json::Value;

const CONCURRENCY: usize = 8;

/// `n` chat records `r000…`, each with its own prompt `question N`.
fn job(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i:03}\",\"prompt\":\"question {i}\",\"task\":\"chat\"}}\n"))
        .collect()
}

/// A server that answers every request after `ms` milliseconds of its own time.
fn slow_server(ms: u64) -> Server {
    serve(Arc::new(move |_, _| {
        std::thread::sleep(Duration::from_millis(ms));
        ok_openai("an answer")
    }))
}

struct Journal {
    /// Ids with a result line, in order (may repeat only for skipped records).
    ids: Vec<String>,
    statuses: BTreeMap<String, String>,
    calls: u128,
    spent_pico: u128,
}

/// Reads `out/journal.jsonl` as a resume would: whole lines only.
fn journal(out: &Path) -> Journal {
    let text = std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_default();
    let mut j = Journal {
        ids: vec![],
        statuses: BTreeMap::new(),
        calls: 0,
        spent_pico: 0,
    };
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(row) = v.get("row") {
            let id = row["id"].as_str().unwrap().to_string();
            j.statuses
                .insert(id.clone(), row["status"].as_str().unwrap().into());
            j.ids.push(id);
        } else if let Some(call) = v.get("call") {
            j.calls += 1;
            let cost = call["cost"].as_str().unwrap();
            let (whole, frac) = cost.split_once('.').unwrap();
            j.spent_pico +=
                whole.parse::<u128>().unwrap() * 1_000_000_000_000 + frac.parse::<u128>().unwrap();
        }
    }
    j
}

/// Blocks until the journal holds at least `rows` results (or fails after 60 s).
fn wait_for_rows(out: &Path, rows: usize, child: &mut Child) {
    let start = Instant::now();
    while journal(out).ids.len() < rows {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {rows} results"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (id, status) of every row of `out/results.parquet`.
fn results(out: &Path) -> Vec<(String, String)> {
    let file = std::fs::File::open(out.join("results.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = vec![];
    for batch in reader {
        let batch = batch.unwrap();
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .clone()
        };
        let (ids, statuses) = (col("id"), col("status"));
        for i in 0..batch.num_rows() {
            rows.push((ids.value(i).to_string(), statuses.value(i).to_string()));
        }
    }
    rows
}

fn stderr_of(child: Child) -> (i32, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn signal(child: &Child, name: &str) {
    let ok = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {name}");
}

struct Setup {
    _dir: tempfile::TempDir,
    cfg: PathBuf,
    input: PathBuf,
    out: PathBuf,
}

fn setup(server: &Server, records: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let input = write_job(&cfg, &job(records));
    let out = dir.path().join("out");
    Setup {
        _dir: dir,
        cfg,
        input,
        out,
    }
}

#[test]
fn kill_9_at_several_points_then_resume_loses_nothing_and_pays_nothing_twice() {
    const RECORDS: usize = 240;
    let server = slow_server(3);
    let s = setup(&server, RECORDS);
    let conc = CONCURRENCY.to_string();
    let args = ["--out", s.out.to_str().unwrap(), "--concurrency", &conc];
    let mut resent_total = 0;
    for (round, kill_at) in [1usize, 80, 160].into_iter().enumerate() {
        let mut extra = args.to_vec();
        if round > 0 {
            extra.push("--resume");
        }
        let requests_before = server.seen().len();
        let mut child = spawn(&s.cfg, &s.input, &extra);
        wait_for_rows(&s.out, kill_at, &mut child);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let done_at_kill: BTreeSet<String> = journal(&s.out).ids.into_iter().collect();
        let seen = server.seen();
        // What this process sent that had not finished when it died: in flight.
        let in_flight: BTreeSet<&str> = seen[requests_before..]
            .iter()
            .map(|r| r.prompt())
            .filter(|p| {
                let id = format!(
                    "r{:03}",
                    p.trim_start_matches("question ").parse::<usize>().unwrap()
                );
                !done_at_kill.contains(&id)
            })
            .collect();
        assert!(
            in_flight.len() <= CONCURRENCY,
            "round {round}: {} in flight",
            in_flight.len()
        );
        resent_total += in_flight.len();
    }
    let before_final = server.seen().len();
    let done_before_final: BTreeSet<String> = journal(&s.out).ids.into_iter().collect();
    let mut extra = args.to_vec();
    extra.extend(["--resume", "--format", "json"]);
    let child = spawn(&s.cfg, &s.input, &extra);
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");

    // Every id exactly once, all ok, in input order.
    let rows = results(&s.out);
    let want: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("r{i:03}"), "ok".to_string()))
        .collect();
    assert_eq!(rows, want);

    // No record finished before the last kill was requested again.
    for r in &server.seen()[before_final..] {
        let i: usize = r.prompt().trim_start_matches("question ").parse().unwrap();
        assert!(
            !done_before_final.contains(&format!("r{i:03}")),
            "{} sent again",
            r.prompt()
        );
    }
    // Each prompt was requested once, plus at most the in-flight ones of each kill.
    let mut per_prompt: BTreeMap<String, usize> = BTreeMap::new();
    for r in server.seen() {
        *per_prompt.entry(r.prompt().to_string()).or_default() += 1;
    }
    assert_eq!(per_prompt.len(), RECORDS);
    let extra_requests: usize = per_prompt.values().map(|n| n - 1).sum();
    assert!(
        extra_requests <= resent_total,
        "{extra_requests} > {resent_total}"
    );
    assert!(resent_total <= 3 * CONCURRENCY);

    // The spend covers every billed call of every run, exactly.
    let j = journal(&s.out);
    assert_eq!(j.spent_pico, j.calls * CHEAP_CALL_PICO);
    assert!(j.calls >= RECORDS as u128);
    let line = stderr
        .lines()
        .find(|l| l.contains("records, 0 not ok"))
        .unwrap_or("");
    assert!(
        line.starts_with(&format!("{RECORDS} records, 0 not ok; spent $")),
        "{stderr}"
    );
}

#[test]
fn the_budget_ceiling_covers_the_whole_job_across_resumes() {
    const RECORDS: usize = 300;
    const BUDGET_PICO: u128 = 24_000_000_000; // $0.024
    let server = slow_server(1);
    let s = setup(&server, RECORDS);
    // Each answer costs $0.00012, but a reservation is the worst case (~$0.00201:
    // 1,000 output tokens at $2/M), so one run stops near $0.024 − 2 × $0.00201
    // ≈ 150 answers. Killed after 120 and resumed, the job must stop near 150 in
    // all; were the first run's spend forgotten, it would reach about 270.
    let args = [
        "--out",
        s.out.to_str().unwrap(),
        "--budget",
        "0.024",
        "--on-budget",
        "skip",
        "--concurrency",
        "2",
    ];
    let mut child = spawn(&s.cfg, &s.input, &args);
    wait_for_rows(&s.out, 120, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = journal(&s.out);
    assert!(at_kill.statuses.values().all(|st| st == "ok"));

    let mut extra = args.to_vec();
    extra.push("--resume");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 1, "some records are skipped_budget: {stderr}");
    assert!(
        stderr.contains(&format!("{} already spent", usd(at_kill.spent_pico))),
        "{stderr}"
    );
    let j = journal(&s.out);
    assert!(j.spent_pico <= BUDGET_PICO, "spent {} pico", j.spent_pico);
    let rows = results(&s.out);
    assert_eq!(rows.len(), RECORDS);
    let ok = rows.iter().filter(|(_, st)| st == "ok").count();
    let skipped = rows.iter().filter(|(_, st)| st == "skipped_budget").count();
    assert_eq!(ok + skipped, RECORDS);
    assert!(ok >= at_kill.ids.len(), "the first run's answers are kept");
    assert!(ok as u128 * CHEAP_CALL_PICO <= BUDGET_PICO);
    assert!(
        ok < 200,
        "{ok} answers: the resume forgot the first run's spend"
    );
    assert!(
        stderr.contains(&format!("{RECORDS} records, {skipped} not ok")),
        "{stderr}"
    );
}

/// `$0.014400`: how the summary prints an amount of this size.
fn usd(pico: u128) -> String {
    format!(
        "${}.{:06}",
        pico / 1_000_000_000_000,
        (pico % 1_000_000_000_000) / 1_000_000
    )
}

#[test]
fn sigint_and_sigterm_drain_in_flight_write_the_outputs_and_say_how_to_resume() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const RECORDS: usize = 200;
    const HELD_FROM: usize = 30;
    for sig in ["-INT", "-TERM"] {
        // Requests from the 31st on are held by the server until the test has seen
        // the run take the signal: the run cannot finish before it is interrupted,
        // and the requests in flight then finish during the drain.
        let released = Arc::new(AtomicBool::new(false));
        let gate = released.clone();
        let server = serve(Arc::new(move |n, _| {
            while n >= HELD_FROM && !gate.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            ok_openai("an answer")
        }));
        let s = setup(&server, RECORDS);
        let conc = CONCURRENCY.to_string();
        let args = ["--out", s.out.to_str().unwrap(), "--concurrency", &conc];
        let mut child = spawn(&s.cfg, &s.input, &args);
        let lines = stderr_lines(&mut child);
        let start = Instant::now();
        while server.seen().len() < HELD_FROM + CONCURRENCY {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{sig}: no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        signal(&child, sig);
        let mut stderr = wait_for_line(&lines, "interrupted: finishing 8 records in flight");
        released.store(true, Ordering::SeqCst);
        let code = child.wait().unwrap().code();
        stderr.extend(lines.iter());
        let stderr = stderr.join("\n");
        assert_eq!(code, Some(130), "{sig}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "continue with: {}",
                env!("CARGO_BIN_EXE_switchyard")
            )) && stderr.trim_end().ends_with("--resume"),
            "{sig}: {stderr}"
        );
        // Drained: every request the server answered became a journaled call and row,
        // and nothing started after the signal.
        let j = journal(&s.out);
        assert_eq!(server.seen().len(), HELD_FROM + CONCURRENCY, "{sig}");
        assert_eq!(j.calls as usize, HELD_FROM + CONCURRENCY, "{sig}");
        assert_eq!(j.ids.len(), HELD_FROM + CONCURRENCY, "{sig}");
        assert!(
            stderr.contains(&format!(
                "interrupted: {} records done, {} not yet",
                HELD_FROM + CONCURRENCY,
                RECORDS - HELD_FROM - CONCURRENCY
            )),
            "{sig}: {stderr}"
        );
        // The outputs hold what is done.
        assert_eq!(results(&s.out).len(), j.ids.len(), "{sig}");

        let mut extra = args.to_vec();
        extra.push("--resume");
        let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
        assert_eq!(code, 0, "{sig}: {stderr}");
        assert_eq!(results(&s.out).len(), RECORDS);
        assert_eq!(
            server.seen().len(),
            RECORDS,
            "{sig}: nothing was sent twice"
        );
    }
}

#[test]
fn a_second_ctrl_c_aborts_at_once_and_leaves_the_journal_resumable() {
    const RECORDS: usize = 40;
    // The first 4 requests hang for 20 s; the rest answer at once.
    let server = serve(Arc::new(|n, _| {
        if n < 4 {
            Reply::Hang(Duration::from_secs(20))
        } else {
            ok_openai("an answer")
        }
    }));
    let s = setup(&server, RECORDS);
    let args = ["--out", s.out.to_str().unwrap(), "--concurrency", "4"];
    let mut child = spawn(&s.cfg, &s.input, &args);
    let lines = stderr_lines(&mut child);
    let start = Instant::now();
    while server.seen().len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, "-INT");
    wait_for_line(&lines, "interrupted: finishing 4 records in flight");
    signal(&child, "-INT");
    wait_for_line(&lines, "aborted");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        journal(&s.out).ids.is_empty(),
        "the hung requests never finished"
    );

    let mut extra = args.to_vec();
    extra.push("--resume");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(results(&s.out).len(), RECORDS);
}

fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Reads lines until one contains `needle`; returns every line read.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no line containing {needle:?} in {seen:#?}"));
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

#[test]
fn a_torn_journal_tail_is_dropped_and_that_record_runs() {
    const RECORDS: usize = 30;
    let server = slow_server(0);
    let s = setup(&server, RECORDS);
    let args = ["--out", s.out.to_str().unwrap()];
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &args));
    assert_eq!(code, 0, "{stderr}");
    // Cut the journal in the middle of its last line, as a crash mid-write would.
    let path = s.out.join("journal.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    let torn_id = journal(&s.out).ids.last().unwrap().clone();
    std::fs::write(&path, &text[..last_start + 20]).unwrap();

    let mut extra = args.to_vec();
    extra.push("--resume");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "journal.jsonl: dropped a torn last line (a crash mid-write); that record runs again"
        ),
        "{stderr}"
    );
    assert_eq!(results(&s.out).len(), RECORDS);
    let i: usize = torn_id[1..].parse().unwrap();
    let asked = server
        .seen()
        .iter()
        .filter(|r| r.prompt() == format!("question {i}"))
        .count();
    assert_eq!(asked, 2, "only the torn record ran again");
    assert_eq!(server.seen().len(), RECORDS + 1);
}

#[test]
fn a_resume_after_the_input_changed_is_refused_unless_forced() {
    let server = slow_server(0);
    let s = setup(&server, 10);
    let args = ["--out", s.out.to_str().unwrap()];
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &args));
    assert_eq!(code, 0, "{stderr}");

    // Without --resume the directory is not overwritten.
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &args));
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "already holds a run; add --resume to continue it or --overwrite to replace it"
        ),
        "{stderr}"
    );

    std::fs::write(&s.input, job(11)).unwrap();
    let mut extra = args.to_vec();
    extra.push("--resume");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the input changed since it was started (input was ")
            && stderr.contains("add --force to resume anyway"),
        "{stderr}"
    );
    assert_eq!(server.seen().len(), 10, "a refused resume sends nothing");

    extra.push("--force");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(results(&s.out).len(), 11);
    assert_eq!(server.seen().len(), 11, "only the new record was sent");

    // A changed route is refused the same way.
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(
        &s.cfg,
        text.replace(
            "balanced = [\"cheap\", \"strong\"]",
            "balanced = [\"strong\"]",
        ),
    )
    .unwrap();
    extra.pop();
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &extra));
    assert_eq!(code, 2);
    assert!(stderr.contains("the tier and routes changed"), "{stderr}");
}

#[test]
fn an_out_that_cannot_be_created_is_an_error_naming_it() {
    let server = slow_server(0);
    let s = setup(&server, 3);
    let blocker = s.input.clone(); // a regular file: nothing can be created under it
    let out = blocker.join("out");
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &["--out", out.to_str().unwrap()]));
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(&format!("error: cannot create --out {}:", out.display())),
        "{stderr}"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn an_input_error_at_the_end_keeps_every_paid_result_in_the_journal() {
    // 1,100 records, then a line that is not JSON. The input is read in batches of
    // 1,024, so the first batch is answered and paid while the reader meets the bad
    // line; with --strict the run stops there. Every answered record must be in the
    // journal, so that a resume sends none of them again.
    const RECORDS: usize = 1_100;
    let server = slow_server(0);
    let s = setup(&server, RECORDS);
    let mut text = std::fs::read_to_string(&s.input).unwrap();
    text.push_str("{not json\n");
    std::fs::write(&s.input, text).unwrap();
    let args = ["--out", s.out.to_str().unwrap(), "--strict"];
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &args));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 1101: not valid JSON") && stderr.contains("--strict stops"),
        "{stderr}"
    );
    let sent = server.seen().len();
    assert!(sent >= 1_024, "{sent}");
    let j = journal(&s.out);
    assert_eq!(
        (j.calls as usize, j.ids.len()),
        (sent, sent),
        "every paid call and row is kept"
    );

    // Without --strict the bad line is an invalid record; nothing is sent again.
    let (code, stderr) = stderr_of(spawn(
        &s.cfg,
        &s.input,
        &["--out", s.out.to_str().unwrap(), "--resume"],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(server.seen().len(), RECORDS, "nothing paid for twice");
    let rows = results(&s.out);
    assert_eq!(rows.len(), RECORDS + 1);
    assert_eq!(
        rows[RECORDS],
        ("1101".to_string(), "invalid_input".to_string())
    );
}

#[test]
fn resume_from_stdin_is_refused_naming_the_reason() {
    let server = slow_server(0);
    let s = setup(&server, 3);
    let o = crate::common::bin()
        .args(["run", "-", "--config", s.cfg.to_str().unwrap(), "--out"])
        .arg(&s.out)
        .arg("--resume")
        .write_stdin(std::fs::read(&s.input).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "error: --resume cannot check stdin against the journal; give the input file (or add --force)"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn a_closed_stdout_is_not_a_finished_run() {
    // `switchyard run - | head -1`: the reader goes away after one result.
    let server = slow_server(20);
    let s = setup(&server, 200);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .env("FAKE_KEY", crate::fake::CANARY)
        .args([
            "run",
            "-",
            "--config",
            s.cfg.to_str().unwrap(),
            "--concurrency",
            "2",
        ])
        .stdin(std::fs::File::open(&s.input).unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"id\":\"r00"), "{first}");
    // The pipe is closed when the reader is dropped, here.
    let (code, stderr) = stderr_of(child);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(
            "error: stdout was closed before the run finished (broken pipe); results of records still running were not delivered"
        ),
        "{stderr}"
    );
    assert!(server.seen().len() < 200, "the run stopped");
}

#[test]
fn a_forced_resume_after_a_line_was_inserted_sends_only_the_new_record() {
    // A finished run, then a record inserted in the middle of the input: every later
    // record moves down a line. A forced resume must recognise the finished records
    // where they now are (by their content), send only the new one, and write one
    // result per record of the new input, in its order.
    let server = slow_server(0);
    let s = setup(&server, 10);
    let args = ["--out", s.out.to_str().unwrap()];
    let (code, stderr) = stderr_of(spawn(&s.cfg, &s.input, &args));
    assert_eq!(code, 0, "{stderr}");
    let before = crate::fake::parquet_rows(&s.out.join("results.parquet"));

    let mut lines: Vec<String> = job(10).lines().map(String::from).collect();
    lines.insert(
        3,
        "{\"id\":\"new\",\"prompt\":\"question new\",\"task\":\"chat\"}".into(),
    );
    std::fs::write(&s.input, lines.join("\n") + "\n").unwrap();
    let (code, stderr) = stderr_of(spawn(
        &s.cfg,
        &s.input,
        &[&args[..], &["--resume", "--force"]].concat(),
    ));
    assert_eq!(code, 0, "{stderr}");
    let prompts: Vec<String> = server.seen()[10..]
        .iter()
        .map(|r| r.prompt().to_string())
        .collect();
    assert_eq!(prompts, ["question new"], "only the new record is sent");

    let after = crate::fake::parquet_rows(&s.out.join("results.parquet"));
    let ids: Vec<&str> = after.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["r000", "r001", "r002", "new", "r003", "r004", "r005", "r006", "r007", "r008", "r009"]
    );
    for old in &before {
        let now = after.iter().find(|r| r["id"] == old["id"]).unwrap();
        assert_eq!(now, old, "a finished record keeps its result");
    }
    // The spend covers 11 calls, each paid once.
    let j = journal(&s.out);
    assert_eq!((j.calls, j.spent_pico), (11, 11 * CHEAP_CALL_PICO));

    // A later resume of the same input finds everything done.
    let (code, stderr) = stderr_of(spawn(
        &s.cfg,
        &s.input,
        &[&args[..], &["--resume"]].concat(),
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(server.seen().len(), 11);
    assert_eq!(
        crate::fake::parquet_rows(&s.out.join("results.parquet")),
        after
    );
}
