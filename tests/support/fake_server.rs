//! A fake OpenAI/Anthropic-compatible server on 127.0.0.1: it answers every request
//! by a script, can inject faults (status codes, hangs, connection resets, cut bodies)
//! and records what it received with its own timestamps. One thread per connection.
//! The integration tests script it request by request; `examples/fake_server` runs it
//! as a process for the benchmarks. Never a real API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    /// The body's length in bytes.
    pub len: usize,
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
    /// Every request, when the server records them (see [`serve_on`]).
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
        len,
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

/// Serves `script` on a fresh port until the process ends, recording every request.
pub fn serve(script: Arc<Script>) -> Server {
    serve_on(0, true, script)
}

/// Serves `script` on `port` (0: any free one) until the process ends. `record`
/// keeps every request in [`Server::seen`]; a benchmark's millions would not fit.
pub fn serve_on(port: u16, record: bool, script: Arc<Script>) -> Server {
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
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
                let _ = writer.set_nodelay(true);
                while let Some(req) = read_request(&mut reader) {
                    let n = {
                        let mut l = log.lock().unwrap();
                        if record {
                            l.push(req.clone());
                            l.len() - 1
                        } else {
                            0
                        }
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
