//! The fake OpenAI- and Anthropic-compatible server of the tests (the same code:
//! `tests/support/fake_server.rs`) as a process, for benchmarks and experiments: it
//! answers every chat request after `--latency-ms` and can log each request (its own
//! clock in nanoseconds, the model, the prompt) so a harness can count requests per
//! prompt and measure rate limits by the server's timestamps. Never a real API.
//!
//!     cargo run --release --example fake_server -- --latency-ms 0 --log bench-data/server.log
//!
//! Prints `listening 127.0.0.1:PORT` on its first line, then serves until killed.

// The tests script faults (hangs, resets, cut bodies) this process never injects.
#[allow(dead_code)]
#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use fake_server::{serve_on, Reply, Seen};
use serde_json::json;

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

fn main() {
    let args = Args::parse();
    let log =
        Mutex::new(args.log.map(|p| {
            std::io::BufWriter::new(std::fs::File::create(p).expect("cannot create --log"))
        }));
    let start = Instant::now();
    let latency = Duration::from_millis(args.latency_ms);
    let answer = "A short, plain answer to the question.";
    let script = move |_: usize, req: &Seen| {
        if let Some(f) = log.lock().unwrap().as_mut() {
            let prompt = req.prompt().replace('\n', " ");
            let _ = writeln!(f, "{} {} {prompt}", start.elapsed().as_nanos(), req.model());
            let _ = f.flush();
        }
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        // About a token for every four bytes of the request.
        let input_tokens = req.len / 4;
        let body = if req.path.ends_with("/messages") {
            json!({"content": [{"type": "text", "text": answer}], "stop_reason": "end_turn",
                   "usage": {"input_tokens": input_tokens, "output_tokens": 9}})
        } else {
            json!({"choices": [{"message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": input_tokens, "completion_tokens": 9}})
        };
        Reply::Respond(200, vec![], body.to_string())
    };
    let server = serve_on(args.port, false, Arc::new(script));
    println!("listening 127.0.0.1:{}", server.port);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
