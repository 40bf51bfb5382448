//! The test side of the fake provider: scripted answers, a config whose every route
//! goes to it, and the `run` commands that use it.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{json, Value};

use crate::common::Output;
pub use crate::fake_server::{serve, Reply, Seen, Server};

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

/// `switchyard run` on `job` (written next to `cfg`) with the canary key.
pub fn run(cfg: &Path, job: &str, extra: &[&str]) -> Output {
    let input = write_job(cfg, job);
    crate::common::output(command(cfg, &input).args(extra))
}

pub fn write_job(cfg: &Path, job: &str) -> PathBuf {
    let input = cfg.parent().unwrap().join("job.jsonl");
    std::fs::write(&input, job).unwrap();
    input
}

/// `switchyard run INPUT --config CFG` with the canary key, not yet started.
pub fn command(cfg: &Path, input: &Path) -> Command {
    let mut c = crate::common::bin();
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

/// Rewrites the config file at `cfg`: each `(from, to)` replaced (`from` must be
/// there), then `extra` appended.
pub fn edit(cfg: &Path, replace: &[(&str, &str)], extra: &str) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    text.push_str(extra);
    std::fs::write(cfg, text).unwrap();
}

/// N of a record whose prompt is "question N" (as the fake's scripts send them).
pub fn prompt_number(req: &Seen) -> usize {
    req.prompt()
        .trim_start_matches("question ")
        .parse()
        .unwrap()
}
