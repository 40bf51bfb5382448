//! A fake of the providers' batch APIs on 127.0.0.1 — OpenAI Batch (files, batches,
//! output and error files) and Anthropic Message Batches — plus their realtime chat
//! endpoints, with faults to inject: a 413 for an oversized upload, lines that
//! expire or fail, a whole batch that expires, and a hold at any phase (upload,
//! creation before or after the batch exists, status polls) so a test can kill the
//! client there. Batches move validating → in_progress → finalizing → completed, one
//! state per status poll. It keeps what it was sent, so a test can check that no
//! record was submitted twice. Never a real API.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where the server can hold a request (not answer it) until released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Upload,
    /// Before the batch exists.
    Create,
    /// After the batch exists, before the answer goes out.
    Created,
    Poll,
}

#[derive(Default)]
pub struct Knobs {
    /// Uploads (OpenAI) or creations (Anthropic) larger than this get a 413.
    pub max_bytes: Option<usize>,
    pub hold: Option<Phase>,
    /// Prompts whose lines expire (the batch ends `expired`).
    pub expire: HashSet<String>,
    /// Prompts whose lines fail with this status.
    pub fail: HashMap<String, u16>,
    /// Status polls a batch takes to end after `validating` (default 3).
    pub polls: Option<u32>,
    /// Cached prompt tokens reported per answer (of 100).
    pub cached: u64,
    /// Prompts whose answer is weak (a refusal), to make the client escalate.
    pub refuse: HashSet<String>,
}

struct Batch {
    id: String,
    anthropic: bool,
    input_file: Option<String>,
    /// (custom_id, prompt, model)
    lines: Vec<(String, String, String)>,
    polls: u32,
    cancelled: bool,
    created_at: u64,
    metadata: Value,
}

#[derive(Default)]
pub struct State {
    pub knobs: Knobs,
    files: HashMap<String, Vec<u8>>,
    batches: Vec<Batch>,
    /// The phase a request is held at, once one is.
    pub held_at: Option<Phase>,
    /// Every custom_id submitted in a created batch, with its prompt.
    pub submitted: Vec<(String, String)>,
    /// Prompts of realtime chat requests.
    pub realtime: Vec<String>,
    /// Paths requested, in order.
    pub paths: Vec<String>,
}

pub struct FakeBatch {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
}

impl FakeBatch {
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.state().knobs)
    }

    /// Waits (at most 30 s) until a request is held at `phase`.
    pub fn wait_held(&self, phase: Phase) {
        let until = Instant::now() + Duration::from_secs(30);
        while self.state().held_at != Some(phase) {
            assert!(Instant::now() < until, "nothing reached {phase:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn release(&self) {
        let mut s = self.state();
        s.knobs.hold = None;
        s.held_at = None;
    }

    /// The batches created, with their states as the next poll would see them.
    pub fn batch_ids(&self) -> Vec<String> {
        self.state().batches.iter().map(|b| b.id.clone()).collect()
    }
}

pub fn serve() -> FakeBatch {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let state: Arc<Mutex<State>> = Arc::default();
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            let st = st.clone();
            std::thread::spawn(move || handle(conn, st, port));
        }
    });
    FakeBatch { port, state }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let path = words.next()?.to_string();
    let mut headers = Vec::new();
    let mut len = 0;
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
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn handle(conn: TcpStream, st: Arc<Mutex<State>>, port: u16) {
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    while let Some(req) = read(&mut reader) {
        let Some((status, body)) = respond(&req, &st, port) else {
            break;
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// Holds the request at `phase` if the knobs say so: until released, or (if the
/// client is killed meanwhile) for good. `None` closes the connection.
fn hold(st: &Arc<Mutex<State>>, phase: Phase) -> Option<()> {
    {
        let mut s = st.lock().unwrap();
        if s.knobs.hold != Some(phase) {
            return Some(());
        }
        s.held_at = Some(phase);
    }
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
        if st.lock().unwrap().knobs.hold != Some(phase) {
            return None; // released: this connection's client is gone
        }
    }
    None
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn error(status: u16, msg: &str) -> Option<(u16, Vec<u8>)> {
    Some((
        status,
        json!({"error": {"message": msg, "type": "invalid_request_error"}})
            .to_string()
            .into_bytes(),
    ))
}

fn ok(v: Value) -> Option<(u16, Vec<u8>)> {
    Some((200, v.to_string().into_bytes()))
}

/// The last message's text of a chat body (OpenAI or Anthropic).
fn prompt_of(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string()
}

fn answer_text(knobs: &Knobs, prompt: &str) -> String {
    match knobs.refuse.contains(prompt) {
        true => "I'm sorry, but I can't help with that.".into(),
        false => format!("answer to {prompt}"),
    }
}

fn openai_completion(knobs: &Knobs, prompt: &str) -> Value {
    json!({"choices": [{"message": {"role": "assistant", "content": answer_text(knobs, prompt)}, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 100, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": knobs.cached}}})
}

fn anthropic_message(knobs: &Knobs, prompt: &str) -> Value {
    json!({"type": "message", "content": [{"type": "text", "text": answer_text(knobs, prompt)}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 100 - knobs.cached, "output_tokens": 10, "cache_read_input_tokens": knobs.cached}})
}

/// Extracts the file part of a multipart upload.
fn multipart_file(req: &Request) -> Option<Vec<u8>> {
    let ct = req
        .headers
        .iter()
        .find(|(k, _)| k == "content-type")?
        .1
        .clone();
    let boundary = format!("--{}", ct.split("boundary=").nth(1)?);
    let body = &req.body;
    let name = b"filename=";
    let at = body.windows(name.len()).position(|w| w == name)?;
    let start = at + body[at..].windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let end_marker = format!("\r\n{boundary}");
    let end = start
        + body[start..]
            .windows(end_marker.len())
            .position(|w| w == end_marker.as_bytes())?;
    Some(body[start..end].to_vec())
}

fn status_json(b: &Batch, knobs: &Knobs, port: u16) -> Value {
    let polls_to_end = knobs.polls.unwrap_or(3);
    let expired = b.lines.iter().any(|(_, p, _)| knobs.expire.contains(p));
    let ended = b.cancelled || b.polls >= polls_to_end;
    let failed_lines = b
        .lines
        .iter()
        .filter(|(_, p, _)| knobs.expire.contains(p) || knobs.fail.contains_key(p))
        .count() as u64;
    let total = b.lines.len() as u64;
    let done = if ended {
        if b.cancelled {
            0
        } else {
            total - failed_lines
        }
    } else {
        (total * u64::from(b.polls) / u64::from(polls_to_end.max(1))).min(total - failed_lines)
    };
    if b.anthropic {
        let state = if ended {
            "ended"
        } else if b.cancelled {
            "canceling"
        } else {
            "in_progress"
        };
        let (canceled, expired_n, errored) = match (ended, b.cancelled) {
            (true, true) => (total, 0, 0),
            (true, false) => (
                0,
                b.lines
                    .iter()
                    .filter(|(_, p, _)| knobs.expire.contains(p))
                    .count() as u64,
                b.lines
                    .iter()
                    .filter(|(_, p, _)| knobs.fail.contains_key(p))
                    .count() as u64,
            ),
            _ => (0, 0, 0),
        };
        json!({
            "id": b.id, "type": "message_batch", "processing_status": state,
            "request_counts": {"processing": if ended {0} else {total - done}, "succeeded": done, "errored": errored, "canceled": canceled, "expired": expired_n},
            "created_at": rfc3339(b.created_at),
            "results_url": if ended { Value::String(format!("http://127.0.0.1:{port}/v1/messages/batches/{}/results", b.id)) } else { Value::Null },
        })
    } else {
        let state = match (b.polls, ended) {
            (_, true) if b.cancelled => "cancelled",
            (_, true) if expired => "expired",
            (_, true) => "completed",
            (0, _) => "validating",
            (p, _) if p + 1 >= polls_to_end => "finalizing",
            _ => "in_progress",
        };
        json!({
            "id": b.id, "object": "batch", "status": state, "input_file_id": b.input_file,
            "endpoint": "/v1/chat/completions", "metadata": b.metadata, "created_at": b.created_at,
            // Like OpenAI: no output file when no line succeeded.
            "output_file_id": if ended && done > 0 { Value::String(format!("{}-out", b.id)) } else { Value::Null },
            "error_file_id": if ended { Value::String(format!("{}-err", b.id)) } else { Value::Null },
            "request_counts": {"total": total, "completed": done, "failed": if ended { failed_lines } else { 0 }},
        })
    }
}

fn rfc3339(secs: u64) -> String {
    // Days to a civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000000Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The output and error files (OpenAI) or results (Anthropic) of an ended batch.
fn results(b: &Batch, knobs: &Knobs, errors: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (cid, prompt, _) in &b.lines {
        let expired = knobs.expire.contains(prompt);
        let fail = knobs.fail.get(prompt);
        let line = if b.anthropic {
            if b.cancelled {
                json!({"custom_id": cid, "result": {"type": "canceled"}})
            } else if expired {
                json!({"custom_id": cid, "result": {"type": "expired"}})
            } else if let Some(status) = fail {
                let kind = if *status == 400 {
                    "invalid_request_error"
                } else {
                    "api_error"
                };
                json!({"custom_id": cid, "result": {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": format!("failed {status}")}}}})
            } else {
                json!({"custom_id": cid, "result": {"type": "succeeded", "message": anthropic_message(knobs, prompt)}})
            }
        } else {
            let is_error = b.cancelled || expired || fail.is_some();
            if is_error != errors {
                continue;
            }
            if b.cancelled {
                json!({"id": "x", "custom_id": cid, "response": null, "error": {"code": "batch_cancelled", "message": "cancelled"}})
            } else if expired {
                json!({"id": "x", "custom_id": cid, "response": null, "error": {"code": "batch_expired", "message": "expired"}})
            } else if let Some(status) = fail {
                json!({"id": "x", "custom_id": cid, "response": {"status_code": status, "body": {"error": {"message": format!("failed {status}"), "type": "server_error"}}}, "error": null})
            } else {
                json!({"id": "x", "custom_id": cid, "response": {"status_code": 200, "body": openai_completion(knobs, prompt)}, "error": null})
            }
        };
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn respond(req: &Request, st: &Arc<Mutex<State>>, port: u16) -> Option<(u16, Vec<u8>)> {
    st.lock()
        .unwrap()
        .paths
        .push(format!("{} {}", req.method, req.path));
    let path = req.path.trim_start_matches("/v1");
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<&str> = route.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("POST", ["chat", "completions"]) | ("POST", ["messages"]) => {
            let body: Value = serde_json::from_slice(&req.body).ok()?;
            let prompt = prompt_of(&body);
            let mut s = st.lock().unwrap();
            s.realtime.push(prompt.clone());
            match parts[0] {
                "chat" => ok(openai_completion(&s.knobs, &prompt)),
                _ => ok(anthropic_message(&s.knobs, &prompt)),
            }
        }
        ("POST", ["files"]) => {
            hold(st, Phase::Upload)?;
            let file = multipart_file(req)?;
            let mut s = st.lock().unwrap();
            if s.knobs.max_bytes.is_some_and(|m| file.len() > m) {
                return error(413, "file too large");
            }
            let id = format!("file-{}", s.files.len() + 1);
            s.files.insert(id.clone(), file);
            ok(json!({"id": id, "object": "file", "purpose": "batch"}))
        }
        ("POST", ["batches"]) | ("POST", ["messages", "batches"]) => {
            hold(st, Phase::Create)?;
            let anthropic = parts[0] == "messages";
            let body: Value = serde_json::from_slice(&req.body).ok()?;
            let v = {
                let mut s = st.lock().unwrap();
                let mut lines = Vec::new();
                let mut input_file = None;
                if anthropic {
                    if s.knobs.max_bytes.is_some_and(|m| req.body.len() > m) {
                        return error(413, "request too large");
                    }
                    for r in body["requests"].as_array()? {
                        lines.push((
                            r["custom_id"].as_str()?.to_string(),
                            prompt_of(&r["params"]),
                            r["params"]["model"].as_str()?.to_string(),
                        ));
                    }
                } else {
                    let file = body["input_file_id"].as_str()?.to_string();
                    let Some(bytes) = s.files.get(&file) else {
                        return error(404, "no such file");
                    };
                    for l in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        let l: Value = serde_json::from_slice(l).ok()?;
                        lines.push((
                            l["custom_id"].as_str()?.to_string(),
                            prompt_of(&l["body"]),
                            l["body"]["model"].as_str()?.to_string(),
                        ));
                    }
                    input_file = Some(file);
                }
                let id = format!("batch_{}", s.batches.len() + 1);
                for (cid, prompt, _) in &lines {
                    s.submitted.push((cid.clone(), prompt.clone()));
                }
                let b = Batch {
                    id,
                    anthropic,
                    input_file,
                    lines,
                    polls: 0,
                    cancelled: false,
                    created_at: now(),
                    metadata: body["metadata"].clone(),
                };
                let v = status_json(&b, &s.knobs, port);
                s.batches.push(b);
                v
            };
            hold(st, Phase::Created)?;
            ok(v)
        }
        ("GET", ["batches"]) | ("GET", ["messages", "batches"]) => {
            let anthropic = parts[0] == "messages";
            let _ = query;
            let s = st.lock().unwrap();
            let data: Vec<Value> = s
                .batches
                .iter()
                .rev()
                .filter(|b| b.anthropic == anthropic)
                .map(|b| status_json(b, &s.knobs, port))
                .collect();
            ok(json!({"data": data, "has_more": false, "object": "list"}))
        }
        ("GET", ["batches", id]) | ("GET", ["messages", "batches", id]) => {
            hold(st, Phase::Poll)?;
            let mut s = st.lock().unwrap();
            let State { batches, knobs, .. } = &mut *s;
            let Some(b) = batches.iter_mut().find(|b| b.id == *id) else {
                return error(404, "no such batch");
            };
            b.polls += 1;
            ok(status_json(b, knobs, port))
        }
        ("POST", ["batches", id, "cancel"]) | ("POST", ["messages", "batches", id, "cancel"]) => {
            let mut s = st.lock().unwrap();
            let State { batches, knobs, .. } = &mut *s;
            let Some(b) = batches.iter_mut().find(|b| b.id == *id) else {
                return error(404, "no such batch");
            };
            b.cancelled = true;
            b.polls = b.polls.max(1);
            ok(status_json(b, knobs, port))
        }
        ("GET", ["files", file, "content"]) => {
            let s = st.lock().unwrap();
            let (id, errors) = match file.strip_suffix("-out") {
                Some(id) => (id, false),
                None => (file.strip_suffix("-err")?, true),
            };
            let b = s.batches.iter().find(|b| b.id == id)?;
            Some((200, results(b, &s.knobs, errors)))
        }
        ("GET", ["messages", "batches", id, "results"]) => {
            let s = st.lock().unwrap();
            let b = s.batches.iter().find(|b| b.id == *id)?;
            Some((200, results(b, &s.knobs, false)))
        }
        _ => error(404, &format!("no route {} {}", req.method, req.path)),
    }
}

/// How many times each prompt was submitted in a batch.
pub fn submissions(state: &State) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for (_, prompt) in &state.submitted {
        *n.entry(prompt.clone()).or_default() += 1;
    }
    n
}
