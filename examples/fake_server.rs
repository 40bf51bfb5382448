//! A loopback OpenAI- and Anthropic-compatible server for benchmarks and experiments:
//! it answers every chat request after `--latency-ms`, and logs each request (its
//! own clock in nanoseconds, the model, the prompt) so a harness can count requests
//! per prompt and measure rate limits by the server's timestamps. Never a real API.
//!
//!     cargo run --release --example fake_server -- --latency-ms 0 --log bench-data/server.log
//!
//! Prints `listening 127.0.0.1:PORT` on its first line; on SIGTERM or Ctrl-C it
//! prints `requests N` and stops.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Time before each answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Append `nanoseconds model prompt` per request to this file.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
}

type Log = Arc<Mutex<Option<std::fs::File>>>;

static REQUESTS: AtomicU64 = AtomicU64::new(0);

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    let log: Log = Arc::new(Mutex::new(
        args.log
            .map(|p| std::fs::File::create(p).expect("cannot create --log")),
    ));
    let start = Instant::now();
    let latency = Duration::from_millis(args.latency_ms);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((conn, _)) = conn else { continue };
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, log, start, latency).await;
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("requests {}", REQUESTS.load(Ordering::Relaxed));
}

async fn serve(
    conn: TcpStream,
    log: Log,
    start: Instant,
    latency: Duration,
) -> std::io::Result<()> {
    let _ = conn.set_nodelay(true);
    let (read, mut write) = conn.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        let at = start.elapsed().as_nanos();
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let model = req["model"].as_str().unwrap_or("").to_string();
        let prompt = req["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .replace('\n', " ");
        if let Some(f) = log.lock().unwrap().as_mut() {
            let _ = writeln!(f, "{at} {model} {prompt}");
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let input_tokens = (len / 4) as u64;
        let answer = "A short, plain answer to the question.";
        let resp = if path.ends_with("/messages") {
            json!({"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": input_tokens, "output_tokens": 9}})
        } else {
            json!({"choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": input_tokens, "completion_tokens": 9}})
        }
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            resp.len()
        );
        write.write_all(head.as_bytes()).await?;
        write.write_all(resp.as_bytes()).await?;
    }
}
