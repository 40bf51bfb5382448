//! An in-process OpenAI/Anthropic-compatible server on 127.0.0.1 for the tests: it
//! answers by a script, can inject faults (status codes, hangs, connection resets,
//! cut bodies) and records what it received with its own timestamps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{json, Value};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Seen {
    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The text of the last message: the record's prompt.
    pub fn prompt(&self) -> &str {
        self.body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
    }
}

/// What the server does with a request.
pub enum Reply {
    /// Status, extra headers, body.
    Respond(u16, Vec<(&'static str, String)>, String),
    /// Say nothing for this long, then close.
    Hang(Duration),
    /// Close the connection without answering.
    Reset,
    /// Promise the whole body in content-length, send half of it, close.
    Cut(String),
}

/// Decides the reply to the n-th request (0-based).
pub type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

pub struct Server {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
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

fn head(status: u16, len: usize, headers: &[(&'static str, String)]) -> String {
    let mut resp = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n"
    );
    for (k, v) in headers {
        resp.push_str(&format!("{k}: {v}\r\n"));
    }
    resp.push_str("\r\n");
    resp
}

/// Serves `script` on a fresh port until the test process ends.
pub fn serve(script: Arc<Script>) -> Server {
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
                    let sent = match script(n, &req) {
                        Reply::Respond(status, headers, body) => {
                            let mut resp = head(status, body.len(), &headers);
                            resp.push_str(&body);
                            writer.write_all(resp.as_bytes())
                        }
                        Reply::Hang(d) => {
                            std::thread::sleep(d);
                            break;
                        }
                        Reply::Reset => break,
                        Reply::Cut(body) => {
                            let mut resp = head(200, body.len(), &[]);
                            resp.push_str(&body[..body.len() / 2]);
                            let _ = writer.write_all(resp.as_bytes());
                            break;
                        }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown(Shutdown::Both);
            });
        }
    });
    Server { port, seen }
}

pub fn ok_openai(text: &str) -> Reply {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 100, "completion_tokens": 10}});
    Reply::Respond(200, vec![], body.to_string())
}

pub fn error(status: u16, message: &str) -> Reply {
    let body = json!({"error": {"message": message}});
    Reply::Respond(status, vec![], body.to_string())
}

pub const CANARY: &str = "sk-canary-7f3a9d1e5b";

/// What one call answered by [`ok_openai`] costs on `cheap`: 100 × $1/M + 10 × $2/M.
pub const CHEAP_CALL_PICO: u128 = 120_000_000;

/// A config whose every route goes to the fake server: `cheap` first, then `strong`.
pub fn config(dir: &Path, port: u16, kind: &str) -> PathBuf {
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

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `switchyard run` on `job` (written next to `cfg`) with the canary key.
pub fn run(cfg: &Path, job: &str, extra: &[&str]) -> Output {
    let input = write_job(cfg, job);
    let o = command(cfg, &input).args(extra).output().unwrap();
    Output {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

pub fn write_job(cfg: &Path, job: &str) -> PathBuf {
    let input = cfg.parent().unwrap().join("job.jsonl");
    std::fs::write(&input, job).unwrap();
    input
}

/// `switchyard run INPUT --config CFG` with the canary key, not yet started.
pub fn command(cfg: &Path, input: &Path) -> Command {
    let mut c = crate::common::bin();
    // No test run may hang the suite: a stuck run is killed and fails its test.
    c.timeout(Duration::from_secs(120));
    c.env("FAKE_KEY", CANARY).args([
        "run",
        input.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    c
}

/// Every row of a Parquet file (`results.parquet`, `cost_report.parquet`) as a JSON
/// object, through arrow's JSON writer.
pub fn parquet_rows(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        for batch in reader {
            w.write(&batch.unwrap()).unwrap();
        }
        w.finish().unwrap();
    }
    String::from_utf8(buf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A decimal dollar amount (`"0.000120000000"`, `$0.000120`) in pico-dollars, exactly.
pub fn pico(usd: &str) -> u128 {
    let usd = usd.trim_start_matches('$');
    let (whole, frac) = usd.split_once('.').unwrap_or((usd, ""));
    assert!(frac.len() <= 12, "{usd}");
    whole.parse::<u128>().unwrap() * 1_000_000_000_000
        + format!("{frac:0<12}").parse::<u128>().unwrap()
}

pub fn rows(o: &Output) -> Vec<Value> {
    o.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `switchyard run INPUT --config CFG EXTRA…` as a child process (stdout discarded,
/// stderr piped), for tests that signal or kill it.
pub fn spawn(cfg: &Path, input: &Path, extra: &[&str]) -> std::process::Child {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    for var in crate::common::ENV_VARS {
        c.env_remove(var);
    }
    c.env("FAKE_KEY", CANARY)
        .args([
            "run",
            input.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}
