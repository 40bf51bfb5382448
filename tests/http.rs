//! `run` against an in-process OpenAI/Anthropic-compatible server on 127.0.0.1 that
//! can inject faults and records what it received (with its own timestamps).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use assert_cmd::Command;
use serde_json::{json, Value};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or("")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decides the response (status, extra headers, body) for the n-th request (0-based).
type Script = dyn Fn(usize, &Seen) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync;

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
        if k == "content-length" {
            len = v.parse().ok()?;
        }
        headers.push((k, v));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        at: Instant::now(),
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

fn serve(script: Arc<Script>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let (script, log) = (script.clone(), log.clone());
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut reader = BufReader::new(conn);
                while let Some(req) = read_request(&mut reader) {
                    let n = {
                        let mut l = log.lock().unwrap();
                        l.push(req.clone());
                        l.len() - 1
                    };
                    let (status, headers, body) = script(n, &req);
                    let mut resp = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
                    for (k, v) in headers {
                        resp.push_str(&format!("{k}: {v}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(&body);
                    if writer.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Server { port, seen }
}

fn ok_openai(text: &str) -> (u16, Vec<(&'static str, String)>, String) {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 100, "completion_tokens": 10}});
    (200, vec![], body.to_string())
}

const CANARY: &str = "sk-canary-7f3a9d1e5b";

/// A config whose every route goes to the fake server: `cheap` first, then `strong`.
fn config(dir: &std::path::Path, port: u16, kind: &str) -> std::path::PathBuf {
    let mut t = format!(
        "[providers.fake]\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi_key_env = \"FAKE_KEY\"\ntimeout_s = 5\nallowed_tags = []\n\
         [models.cheap]\nprovider = \"fake\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\ncontext_window = 100000\nmax_output_tokens = 1000\n\
         [models.strong]\nprovider = \"fake\"\ninput_per_mtok = 10.0\noutput_per_mtok = 20.0\ncontext_window = 100000\nmax_output_tokens = 1000\n\
         [run]\nretry_base_ms = 10\nmax_retries = 2\n"
    );
    for task in [
        "chat",
        "code",
        "summarization",
        "translation",
        "classification",
        "extraction",
        "creative",
        "reasoning",
        "vision",
        "agent",
        "rag",
    ] {
        t.push_str(&format!("[routes.{task}]\nbudget = [\"cheap\", \"strong\"]\nbalanced = [\"cheap\", \"strong\"]\nquality = [\"strong\"]\n"));
    }
    let path = dir.join("fake.toml");
    std::fs::write(&path, t).unwrap();
    path
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cfg: &std::path::Path, job: &str, extra: &[&str]) -> Output {
    let dir = cfg.parent().unwrap();
    let input = dir.join("job.jsonl");
    std::fs::write(&input, job).unwrap();
    let o = Command::cargo_bin("switchyard")
        .unwrap()
        .env("FAKE_KEY", CANARY)
        .args([
            "run",
            input.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    Output {
        code: o.status.code().unwrap(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

fn rows(o: &Output) -> Vec<Value> {
    o.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn retry_after_is_honoured_by_the_server_clock() {
    let server = serve(Arc::new(|n, _| {
        if n == 0 {
            (
                429,
                vec![("retry-after", "1".into())],
                json!({"error": {"message": "slow down"}}).to_string(),
            )
        } else {
            ok_openai("hello")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let o = run(
        &cfg,
        "{\"id\":\"a\",\"prompt\":\"hi there\",\"task\":\"chat\"}\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap.as_millis() >= 1000,
        "retried after {gap:?}, before Retry-After: 1"
    );
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {CANARY}").as_str())
    );
    let r = &rows(&o)[0];
    assert_eq!(
        (r["status"].as_str(), r["attempts"].as_u64()),
        (Some("ok"), Some(2))
    );
    // 100 × $1/M + 10 × $2/M, from the server's usage
    assert_eq!(r["cost_usd"].as_f64(), Some(0.00012));
}

#[test]
fn a_failing_model_falls_back_and_401_is_not_retried() {
    let server = serve(Arc::new(|_, req| match req.model() {
        "cheap" => (500, vec![], "{\"error\":{\"message\":\"boom\"}}".into()),
        _ => ok_openai("from strong"),
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let o = run(
        &cfg,
        "{\"id\":\"a\",\"prompt\":\"hi\",\"task\":\"chat\"}\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = &rows(&o)[0];
    assert_eq!(r["final_model"], "strong");
    assert_eq!(r["fallbacks"], 1);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|s| s.model() == "cheap").count(),
        3,
        "1 try + 2 retries on 500"
    );

    let server = serve(Arc::new(|_, _| {
        (401, vec![], "{\"error\":{\"message\":\"bad key\"}}".into())
    }));
    let cfg = config(dir.path(), server.port, "openai");
    let o = run(
        &cfg,
        "{\"id\":\"a\",\"prompt\":\"hi\",\"model\":\"cheap\"}\n",
        &[],
    );
    assert_eq!(o.code, 1);
    assert_eq!(server.seen.lock().unwrap().len(), 1, "401 is not retried");
    let r = &rows(&o)[0];
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("HTTP 401: bad key"),
        "{r}"
    );
}

#[test]
fn the_key_never_appears_in_any_output() {
    let server = serve(Arc::new(|n, _| {
        if n % 2 == 0 {
            (400, vec![], "{\"error\":{\"message\":\"rejected\"}}".into())
        } else {
            ok_openai("fine")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let out = dir.path().join("out");
    let job = "{\"id\":\"a\",\"prompt\":\"hi\"}\n{\"id\":\"b\",\"prompt\":\"yo\"}\n{\"id\":\"c\",\"prompt\":\"hey\"}\n";
    let o = run(
        &cfg,
        job,
        &["--out", out.to_str().unwrap(), "--format", "json"],
    );
    assert!(!o.stdout.contains(CANARY) && !o.stderr.contains(CANARY));
    for f in ["results.parquet", "cost_report.parquet"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{f}"
        );
    }
}

#[test]
fn anthropic_request_shape_and_usage() {
    let server = serve(Arc::new(|_, _| {
        let body = json!({"content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn",
                          "usage": {"input_tokens": 40, "output_tokens": 5}});
        (200, vec![], body.to_string())
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "anthropic");
    let o = run(&cfg, "{\"id\":\"a\",\"system\":\"Be brief.\",\"prompt\":\"Translate to French: hello\",\"model\":\"cheap\"}\n", &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let seen = server.seen.lock().unwrap().clone();
    let req = &seen[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.header("x-api-key"), Some(CANARY));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.body["system"], "Be brief.");
    assert_eq!(
        req.body["max_tokens"], 1000,
        "max_tokens is always sent (the model's cap here)"
    );
    assert_eq!(
        req.body["messages"],
        json!([{"role": "user", "content": "Translate to French: hello"}])
    );
    let r = &rows(&o)[0];
    assert_eq!(
        (r["response"].as_str(), r["finish_reason"].as_str()),
        (Some("Bonjour"), Some("stop"))
    );
    assert_eq!(
        (r["input_tokens"].as_u64(), r["output_tokens"].as_u64()),
        (Some(40), Some(5))
    );
}

#[test]
fn rpm_spreads_requests_by_the_server_clock() {
    let server = serve(Arc::new(|_, _| ok_openai("ok")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    // 240 rpm: one request every 250 ms, never a burst, whatever the concurrency.
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace("[models.cheap]\n", "[models.cheap]\nrpm = 240\n");
    std::fs::write(&cfg, text).unwrap();
    let job: String = (0..6)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"hi {i}\",\"model\":\"cheap\"}}\n"))
        .collect();
    let o = run(&cfg, &job, &["--concurrency", "16"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut at: Vec<Instant> = server.seen.lock().unwrap().iter().map(|s| s.at).collect();
    at.sort();
    assert_eq!(at.len(), 6);
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap.as_millis() >= 200, "requests {gap:?} apart at 240 rpm");
    }
}
