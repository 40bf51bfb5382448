//! `run --ledger`: several processes on one budget and one rate limit, through a real
//! `redis-server` each test starts on a unix socket in its own temporary directory
//! (Debian's `redis-server`; `.ci/run` installs it), against the loopback fake
//! provider: shards on one budget never pass it and run every record once, a shared
//! rpm is held by the server's timestamps, a killed shard's claim comes back after
//! its lease, and a Redis restart mid-run stops requests until it is back.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::output;
use crate::fake::{
    command, config, edit, ok_openai, parquet_rows, pico, serve, spawn, write_job, Server,
};
use serde_json::Value;

/// A redis-server of the test's own, persisting every write (AOF, fsync always) so a
/// restart keeps the ledger.
struct Redis {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Redis { dir, child: None };
        r.up();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed (Debian package redis-server; .ci/run installs it)",
            );
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = UnixStream::connect(self.socket()) {
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` chat records `r000…`, each with its own prompt `question N`.
fn job(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i:03}\",\"prompt\":\"question {i}\",\"task\":\"chat\"}}\n"))
        .collect()
}

/// The same with `max_tokens` 20: each reserves about $0.00005 on `cheap`.
fn small_job(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i:03}\",\"prompt\":\"question {i}\",\"task\":\"chat\",\"max_tokens\":20}}\n"))
        .collect()
}

/// An answer billed 5 prompt + 10 completion tokens: $0.000025 on `cheap`, within
/// what a `small_job` record reserves.
fn small_answer() -> crate::fake::Reply {
    let body = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": "an answer"}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 10}});
    crate::fake::Reply::Respond(200, vec![], body.to_string())
}

fn server(delay_ms: u64) -> Server {
    serve(Arc::new(move |_, _| {
        std::thread::sleep(Duration::from_millis(delay_ms));
        ok_openai("an answer")
    }))
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    input: PathBuf,
}

fn setup(server: &Server, records: usize, run: &str, extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(&cfg, &[("[run]\n", &format!("[run]\n{run}"))], extra);
    let input = write_job(&cfg, &job(records));
    Setup { dir, cfg, input }
}

impl Setup {
    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ledger_args<'a>(redis: &'a str, name: &'a str) -> Vec<&'a str> {
    vec!["--ledger", redis, "--budget-name", name]
}

fn status(redis: &Redis, name: &str) -> Value {
    let o = output(crate::common::bin().args([
        "ledger",
        "status",
        "--ledger",
        &redis.url(),
        "--budget-name",
        name,
        "--format",
        "json",
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    serde_json::from_str(&o.stdout).unwrap()
}

fn usd_pico(v: &Value) -> u128 {
    pico(&format!("{:.12}", v.as_f64().unwrap()))
}

/// Pico-dollars the journal in `out` says were billed.
fn journal_spent(out: &Path) -> u128 {
    std::fs::read_to_string(out.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("call").map(|c| pico(c["cost"].as_str().unwrap())))
        .sum()
}

#[test]
fn four_shards_on_one_budget_never_pass_it_and_run_every_record_once() {
    let redis = Redis::start();
    let server = serve(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(2));
        small_answer()
    }));
    let s = setup(&server, 0, "", "");
    std::fs::write(&s.input, small_job(1000)).unwrap();
    let url = redis.url();
    // 1,000 answers would cost $0.025.
    let budget = "0.015";
    let children: Vec<(PathBuf, Child)> = (1..=4)
        .map(|k| {
            let out = s.out(&format!("shard{k}"));
            let shard = format!("{k}/4");
            let mut args = ledger_args(&url, "shared");
            args.extend([
                "--budget",
                budget,
                "--on-budget",
                "skip",
                "--concurrency",
                "32",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
            ]);
            let child = spawn(&s.cfg, &s.input, &args);
            (out, child)
        })
        .collect();
    let mut spent = 0u128;
    let mut ids = Vec::new();
    for (out, child) in children {
        let o = child.wait_with_output().unwrap();
        let code = o.status.code().unwrap();
        assert!(
            code == 0 || code == 1,
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        spent += journal_spent(&out);
        for r in parquet_rows(&out.join("results.parquet")) {
            assert!(
                r["status"] == "ok" || r["status"] == "skipped_budget",
                "{r}"
            );
            ids.push(r["id"].as_str().unwrap().to_string());
        }
    }
    // Every record once across the shards, and the budget held to the pico.
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (1000, 1000));
    assert!(spent <= pico(budget), "spent {spent} pico of {budget}");
    // The budget bound, and most of it was used (128 records in flight reserve up
    // to $0.0064 at once; what a record cannot reserve when it starts is skipped).
    assert!(spent > pico("0.009"), "only {spent} pico spent");
    let st = status(&redis, "shared");
    assert_eq!(usd_pico(&st["reserved_usd"]), 0, "{st}");
    assert!(st["leases"].as_array().unwrap().is_empty(), "{st}");
    // The server counts each process's exact spend rounded up to the micro-dollar.
    let server_spent = usd_pico(&st["spent_usd"]);
    assert!(
        server_spent >= spent && server_spent <= spent + 4_000_000,
        "{server_spent} vs {spent}"
    );
    // The shards merge into one run: every record in input order, one cost report.
    let merged = s.out("merged");
    let dirs: Vec<String> = (1..=4)
        .map(|k| s.out(&format!("shard{k}")).to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["merge"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = output(crate::common::bin().args(&args));
    assert!(o.code == 0 || o.code == 1, "{}", o.stderr);
    let rows = parquet_rows(&merged.join("results.parquet"));
    let order: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..1000).map(|i| format!("r{i:03}")).collect();
    assert_eq!(order, expected);
    let report = parquet_rows(&merged.join("cost_report.parquet"));
    let total = report.iter().find(|r| r["model"] == "total").unwrap();
    assert_eq!(usd_pico(&total["cost_usd"]), spent);
    // Merging overlapping shards is refused.
    let o = output(crate::common::bin().args([
        "merge",
        &dirs[0],
        &dirs[0],
        "--out",
        s.out("bad").to_str().unwrap(),
    ]));
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn a_shared_rpm_is_held_across_processes_by_the_servers_clock() {
    let redis = Redis::start();
    let server = server(0);
    // 1,200 rpm on `cheap`: one request every 50 ms for all processes together.
    let s = setup(&server, 60, "", "");
    edit(
        &s.cfg,
        &[("[models.cheap]\n", "[models.cheap]\nrpm = 1200\n")],
        "",
    );
    let url = redis.url();
    let children: Vec<Child> = (1..=4)
        .map(|k| {
            let out = s.out(&format!("shard{k}"));
            let shard = format!("{k}/4");
            let mut args = ledger_args(&url, "rpm");
            args.extend([
                "--concurrency",
                "32",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
            ]);
            spawn(&s.cfg, &s.input, &args)
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut at: Vec<Instant> = server.seen().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 60);
    // Four processes that each held 1,200 rpm alone would send 60 requests in about
    // 0.75 s; together they take 59 intervals of 50 ms.
    let span = at[59] - at[0];
    assert!(
        span >= Duration::from_millis(59 * 50 - 100),
        "60 requests in {span:?}"
    );
    // And no second of the server's log holds more than 20 (+1 for arrival jitter).
    for (i, &t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|&&u| u - t < Duration::from_secs(1))
            .count();
        assert!(
            within <= 21,
            "{within} requests within 1 s from request {i}"
        );
    }
}

#[test]
fn a_shard_killed_with_9_gives_its_claim_back_after_its_lease_and_others_use_it() {
    let redis = Redis::start();
    // Answers that never come in time: the killed shard's requests stay in flight.
    let slow = serve(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_secs(20));
        ok_openai("late")
    }));
    let s = setup(&slow, 10, "", "[ledger]\nlease_s = 2\nblock_share = 0.5\n");
    let url = redis.url();
    let out = s.out("killed");
    let mut args = ledger_args(&url, "lease");
    args.extend([
        "--budget",
        "0.01",
        "--concurrency",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut child = spawn(&s.cfg, &s.input, &args);
    // Its claim: a block of half the budget.
    let until = Instant::now() + Duration::from_secs(20);
    while slow.seen().len() < 2 {
        assert!(Instant::now() < until, "the shard sent nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = status(&redis, "lease");
    assert_eq!(usd_pico(&held["reserved_usd"]), pico("0.005"), "{held}");
    assert_eq!(held["leases"].as_array().unwrap().len(), 1, "{held}");
    child.kill().unwrap();
    child.wait().unwrap();
    // After the lease (2 s) the money is back; nothing was settled.
    let until = Instant::now() + Duration::from_secs(15);
    let back = loop {
        // Reading the status does not reap; a claim does. Another process joining
        // (`ledger status` then a run) sees it; poll the status until the lease is
        // past its expiry.
        let st = status(&redis, "lease");
        let leases = st["leases"].as_array().unwrap().clone();
        if leases
            .iter()
            .all(|l| l["expires_in_ms"].as_i64().unwrap() <= 0)
        {
            break st;
        }
        assert!(Instant::now() < until, "the lease never expired: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(usd_pico(&back["spent_usd"]), 0, "{back}");
    // Another shard now gets the whole budget: 10 records at $0.00012 each, each
    // reserving about $0.002 (two at a time) from claims of $0.005.
    let fast = server(0);
    let s2 = setup(&fast, 10, "", "[ledger]\nlease_s = 2\nblock_share = 0.5\n");
    let out2 = s2.out("other");
    let mut c = command(&s2.cfg, &s2.input);
    c.args(ledger_args(&url, "lease")).args([
        "--budget",
        "0.01",
        "--concurrency",
        "4",
        "--out",
        out2.to_str().unwrap(),
    ]);
    let o = output(&mut c);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = status(&redis, "lease");
    assert_eq!(usd_pico(&st["expired_leases_usd"]), pico("0.005"), "{st}");
    assert_eq!(usd_pico(&st["reserved_usd"]), 0, "{st}");
    assert_eq!(
        usd_pico(&st["spent_usd"]),
        10 * crate::fake::CHEAP_CALL_PICO,
        "{st}"
    );
}

#[test]
fn redis_restarted_mid_run_stops_requests_until_it_is_back_then_the_run_finishes() {
    let mut redis = Redis::start();
    let server = server(20);
    let s = setup(&server, 60, "", "[ledger]\nreconnect_s = 30\n");
    // A rate limit, so every request goes through the ledger first.
    edit(
        &s.cfg,
        &[("[models.cheap]\n", "[models.cheap]\nrpm = 60000\n")],
        "",
    );
    let url = redis.url();
    let out = s.out("out");
    let mut args = ledger_args(&url, "restart");
    args.extend([
        "--budget",
        "1",
        "--concurrency",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let child = spawn(&s.cfg, &s.input, &args);
    let until = Instant::now() + Duration::from_secs(20);
    while server.seen().len() < 10 {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(5));
    }
    redis.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let up = Instant::now();
    redis.up();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("the ledger is unreachable"), "{stderr}");
    // Fail closed: nothing new was sent while Redis was down (requests already out
    // when it went arrive within the first few ms).
    let during = server
        .seen()
        .iter()
        .filter(|r| r.at > down + Duration::from_millis(200) && r.at < up)
        .count();
    assert_eq!(during, 0);
    let rows = parquet_rows(&out.join("results.parquet"));
    assert_eq!(rows.len(), 60);
    assert!(rows.iter().all(|r| r["status"] == "ok"));
    // The restarted server kept the spend (AOF) and counted every call once.
    let st = status(&redis, "restart");
    let spent = journal_spent(&out);
    let server_spent = usd_pico(&st["spent_usd"]);
    assert!(
        server_spent >= spent && server_spent <= spent + 1_000_000,
        "{server_spent} vs {spent}"
    );
}

#[test]
fn a_ledger_down_for_longer_than_reconnect_s_stops_resumably() {
    let mut redis = Redis::start();
    let server = server(20);
    let s = setup(&server, 40, "", "[ledger]\nreconnect_s = 1\n");
    edit(
        &s.cfg,
        &[("[models.cheap]\n", "[models.cheap]\nrpm = 60000\n")],
        "",
    );
    let url = redis.url();
    let out = s.out("out");
    let mut args = ledger_args(&url, "gone");
    args.extend([
        "--budget",
        "1",
        "--concurrency",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let child = spawn(&s.cfg, &s.input, &args);
    while server.seen().len() < 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    redis.kill();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped: the shared ledger did not answer"),
        "{stderr}"
    );
    assert!(stderr.contains("--resume"), "{stderr}");
    redis.up();
    let mut c = command(&s.cfg, &s.input);
    c.args(ledger_args(&url, "gone")).args([
        "--budget",
        "1",
        "--concurrency",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ]);
    let o = output(&mut c);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = parquet_rows(&out.join("results.parquet"));
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|r| r["status"] == "ok"));
    // Every record sent once, but for those in flight when it stopped.
    let prompts: Vec<String> = server
        .seen()
        .iter()
        .map(|r| r.prompt().to_string())
        .collect();
    let unique: BTreeSet<&String> = prompts.iter().collect();
    assert_eq!(unique.len(), 40);
    assert!(prompts.len() <= 40 + 4, "{} requests", prompts.len());
}

#[test]
fn an_unreachable_ledger_or_another_limit_is_refused_before_any_request() {
    let redis = Redis::start();
    let server = server(0);
    let s = setup(&server, 3, "", "");
    let gone = format!("redis+unix://{}", s.dir.path().join("none.sock").display());
    let mut c = command(&s.cfg, &s.input);
    c.args(ledger_args(&gone, "x"))
        .args(["--out", s.out("a").to_str().unwrap()]);
    let o = output(&mut c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("--ledger redis+unix://") && o.stderr.contains("cannot connect"),
        "{}",
        o.stderr
    );
    assert!(!s.out("a").exists(), "nothing written");
    let url = redis.url();
    let mut c = command(&s.cfg, &s.input);
    c.args(ledger_args(&url, "lim"))
        .args(["--budget", "1", "--out", s.out("b").to_str().unwrap()]);
    assert_eq!(output(&mut c).code, 0);
    let mut c = command(&s.cfg, &s.input);
    c.args(ledger_args(&url, "lim"))
        .args(["--budget", "2", "--out", s.out("c").to_str().unwrap()]);
    let o = output(&mut c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("ledger budget `lim` has the limit $1.0"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("this run says $2.0"), "{}", o.stderr);
    assert!(server.seen().len() == 3);
}

#[test]
fn a_shared_rpm_holds_in_every_60_s_window_across_four_processes() {
    let redis = Redis::start();
    let server = server(0);
    // 120 rpm shared by 4 processes: 130 requests take 65 s; each alone would
    // finish its 32 or so in 16 s.
    let s = setup(&server, 130, "", "");
    edit(
        &s.cfg,
        &[("[models.cheap]\n", "[models.cheap]\nrpm = 120\n")],
        "",
    );
    let url = redis.url();
    let children: Vec<Child> = (1..=4)
        .map(|k| {
            let out = s.out(&format!("shard{k}"));
            let shard = format!("{k}/4");
            let mut args = ledger_args(&url, "minute");
            args.extend([
                "--concurrency",
                "32",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
            ]);
            spawn(&s.cfg, &s.input, &args)
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut at: Vec<Instant> = server.seen().iter().map(|r| r.at).collect();
    at.sort();
    assert_eq!(at.len(), 130);
    for (i, &t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|&&u| u - t < Duration::from_secs(60))
            .count();
        assert!(
            within <= 120,
            "{within} requests in the 60 s from request {i}"
        );
    }
    // And the limit was used: the first 60 s are full.
    let first = at
        .iter()
        .take_while(|&&u| u - at[0] < Duration::from_secs(60))
        .count();
    assert!(first >= 118, "{first}");
}

#[test]
fn a_429_seen_by_one_process_pauses_the_others() {
    let redis = Redis::start();
    let first = std::sync::atomic::AtomicBool::new(true);
    let server = serve(Arc::new(move |_, _| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return crate::fake::Reply::Respond(
                429,
                vec![("retry-after", "2".into())],
                "{\"error\":{\"message\":\"slow down\"}}".into(),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
        ok_openai("an answer")
    }));
    let s = setup(&server, 30, "", "");
    let url = redis.url();
    let children: Vec<Child> = (1..=2)
        .map(|k| {
            let out = s.out(&format!("shard{k}"));
            let shard = format!("{k}/2");
            let mut args = ledger_args(&url, "pause");
            args.extend([
                "--concurrency",
                "1",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
            ]);
            spawn(&s.cfg, &s.input, &args)
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let seen = server.seen();
    let t429 = seen[0].at;

    // Requests already on their way arrive within a few ms; then nobody sends until
    // the 2 s are over.
    let paused = seen
        .iter()
        .filter(|r| {
            r.at > t429 + Duration::from_millis(200) && r.at < t429 + Duration::from_millis(1900)
        })
        .count();
    assert_eq!(paused, 0, "requests during the pause");
    assert_eq!(seen.len(), 31);
}

/// Runs a Lua script on the test's Redis (RESP by hand); its reply's first line.
fn eval(redis: &Redis, script: &str, keys: &[&str]) -> String {
    let mut parts = vec![
        "EVAL".to_string(),
        script.to_string(),
        keys.len().to_string(),
    ];
    parts.extend(keys.iter().map(|k| k.to_string()));
    let mut cmd = format!("*{}\r\n", parts.len());
    for p in &parts {
        cmd.push_str(&format!("${}\r\n{p}\r\n", p.len()));
    }
    let mut s = UnixStream::connect(redis.socket()).unwrap();
    s.write_all(cmd.as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_lease_the_server_took_back_from_a_live_process_is_claimed_again() {
    let redis = Redis::start();
    let server = server(100);
    let s = setup(&server, 40, "", "");
    let url = redis.url();
    let out = s.out("out");
    let mut args = ledger_args(&url, "stall");
    args.extend([
        "--budget",
        "1",
        "--concurrency",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let child = spawn(&s.cfg, &s.input, &args);
    while server.seen().len() < 8 {
        std::thread::sleep(Duration::from_millis(5));
    }
    // What the server does to a lease not renewed in time, done now: its money goes
    // back to the budget.
    let reaped = eval(
        &redis,
        "local hs = redis.call('HKEYS', KEYS[2]) \
         for _, h in ipairs(hs) do \
           local amt = tonumber(redis.call('HGET', KEYS[2], h)) \
           redis.call('HINCRBY', KEYS[1], 'reserved', -amt) \
           redis.call('HDEL', KEYS[2], h) redis.call('ZREM', KEYS[3], h) end \
         return #hs",
        &[
            "switchyard:{stall}:budget",
            "switchyard:{stall}:leases",
            "switchyard:{stall}:expiry",
        ],
    );
    assert_eq!(reaped, ":1");
    // The process notices at its next settlement and claims again what its requests
    // in flight hold.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&redis, "stall");
        if usd_pico(&st["reserved_usd"]) > 0 && !st["leases"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < until, "never claimed again: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the ledger took back this process's claim"),
        "{stderr}"
    );
    let st = status(&redis, "stall");
    assert_eq!(usd_pico(&st["reserved_usd"]), 0, "{st}");
    let spent = journal_spent(&out);
    let server_spent = usd_pico(&st["spent_usd"]);
    assert!(
        server_spent >= spent && server_spent <= spent + 1_000_000,
        "{server_spent} vs {spent}"
    );
}
