//! `run` against an in-process OpenAI/Anthropic-compatible server on 127.0.0.1 that
//! can inject faults and records what it received (with its own timestamps).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::fake::{config, error, ok_openai, rows, run, serve, Reply, CANARY};
use serde_json::json;

#[test]
fn retry_after_is_honoured_by_the_server_clock() {
    let server = serve(Arc::new(|n, _| {
        if n == 0 {
            Reply::Respond(
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
        "cheap" => error(500, "boom"),
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

    let server = serve(Arc::new(|_, _| error(401, "bad key")));
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
            error(400, "rejected")
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
        Reply::Respond(200, vec![], body.to_string())
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
