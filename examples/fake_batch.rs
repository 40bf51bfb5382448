//! The batch-API fake of the tests (`tests/support/fake_batch.rs`: OpenAI Batch and
//! Anthropic Message Batches, and their realtime chat endpoints) as a process, for
//! trying `run --via batch` by hand: batches end after `--polls` status checks;
//! `--expire PROMPT` makes that record's line expire. Never a real API.
//!
//!     cargo run --example fake_batch -- --polls 3 --expire "question 1"
//!
//! Prints `listening 127.0.0.1:PORT` on its first line, then serves until killed.

#[allow(dead_code)]
#[path = "../tests/support/fake_batch.rs"]
mod fake_batch;

use std::io::Write;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Status checks a batch takes to end.
    #[arg(long, default_value_t = 3)]
    polls: u32,
    /// A prompt whose line expires (repeatable).
    #[arg(long)]
    expire: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let server = fake_batch::serve();
    server.set(|k| {
        k.polls = Some(args.polls);
        k.expire = args.expire.into_iter().collect();
    });
    println!("listening 127.0.0.1:{}", server.port);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}
