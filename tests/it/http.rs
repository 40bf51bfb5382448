//! `run` against an in-process OpenAI/Anthropic-compatible server on 127.0.0.1 that
//! can inject faults and records what it received (with its own timestamps).

use std::sync::Arc;
use std::time::Instant;

use crate::fake::{config, error, ok_openai, rows, run, serve, Reply, CANARY};
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

/// Rewrites the test config: `(from, to)` replacements, then `extra` appended.
fn edit(cfg: &std::path::Path, replace: &[(&str, &str)], extra: &str) {
    let mut text = std::fs::read_to_string(cfg).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    text.push_str(extra);
    std::fs::write(cfg, text).unwrap();
}

fn prompt_number(req: &crate::fake::Seen) -> usize {
    req.prompt()
        .trim_start_matches("question ")
        .parse()
        .unwrap()
}

#[test]
fn every_record_is_accounted_once_under_hangs_resets_cut_and_malformed_bodies() {
    use std::collections::HashSet;
    use std::sync::Mutex;
    use std::time::Duration;
    const RECORDS: usize = 40;
    // Each prompt's first request meets a fault chosen by its number; retries succeed.
    let first = Mutex::new(HashSet::new());
    let server = serve(Arc::new(move |_, req| {
        let i = prompt_number(req);
        if !first.lock().unwrap().insert(i) {
            return ok_openai("fine");
        }
        match i % 8 {
            0 => Reply::Hang(Duration::from_secs(4)),
            1 => Reply::Reset,
            2 => Reply::Cut(
                r#"{"choices":[{"message":{"content":"half"}}],"usage":{"prompt_tokens":100}}"#
                    .into(),
            ),
            3 => Reply::Respond(200, vec![], "{not json".into()),
            4 => error(503, "overloaded"),
            5 => Reply::Respond(429, vec![("retry-after", "0".into())], "{}".into()),
            _ => ok_openai("fine"),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(&cfg, &[("timeout_s = 5", "timeout_s = 1")], "");
    let job: String = (0..RECORDS)
        .map(|i| {
            format!("{{\"id\":\"r{i:02}\",\"prompt\":\"question {i}\",\"model\":\"cheap\"}}\n")
        })
        .collect();
    let o = run(&cfg, &job, &["--concurrency", "8"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = rows(&o);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let want: Vec<String> = (0..RECORDS).map(|i| format!("r{i:02}")).collect();
    assert_eq!(ids, want, "every id exactly once");
    for r in &rows {
        let i: usize = r["id"].as_str().unwrap()[1..].parse().unwrap();
        let faulted = i % 8 < 6;
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["attempts"], if faulted { 2 } else { 1 }, "{r}");
        assert_eq!(
            r["cost_usd"].as_f64(),
            Some(0.00012),
            "only the answered call is billed: {r}"
        );
    }
    // 30 faults injected (5 of each kind), 40 records ok, 70 requests in all.
    assert_eq!(server.seen().len(), RECORDS + 30);
}

#[test]
fn the_breaker_opens_after_repeated_failures_and_recovers_by_a_probe() {
    use std::time::Duration;
    // `cheap` fails its first two requests, then answers; `strong` takes 300 ms, so
    // the 1 s cooldown passes while records go to `strong`.
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let server = serve(Arc::new(move |_, req| {
        if req.model() == "cheap" && failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
        {
            return error(500, "down");
        }
        std::thread::sleep(Duration::from_millis(if req.model() == "strong" {
            300
        } else {
            0
        }));
        ok_openai("fine")
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(
        &cfg,
        &[(
            "max_retries = 2",
            "max_retries = 0\nbreaker_failures = 2\nbreaker_cooldown_s = 1",
        )],
        "",
    );
    let job: String = (0..12)
        .map(|i| format!("{{\"id\":\"r{i:02}\",\"prompt\":\"question {i}\",\"task\":\"chat\"}}\n"))
        .collect();
    let o = run(&cfg, &job, &["--concurrency", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let seen = server.seen();
    let cheap: Vec<&crate::fake::Seen> = seen.iter().filter(|s| s.model() == "cheap").collect();
    // Two failures open the breaker; the next cheap request is the probe, sent only
    // after the cooldown (server clock), and it closes the breaker again.
    let opened_at = cheap[1].at;
    let probe = cheap[2];
    assert!(
        probe.at - opened_at >= Duration::from_secs(1),
        "probe after {:?}",
        probe.at - opened_at
    );
    let skipped: Vec<usize> = seen
        .iter()
        .filter(|s| s.at > opened_at && s.at < probe.at)
        .map(|s| {
            assert_eq!(s.model(), "strong", "no cheap request while open");
            prompt_number(s)
        })
        .collect();
    assert!(skipped.len() >= 3, "{skipped:?}");
    // After the probe every record is answered by cheap again.
    let after: Vec<&str> = seen
        .iter()
        .filter(|s| s.at > probe.at)
        .map(|s| s.model())
        .collect();
    assert!(
        after.iter().all(|m| *m == "cheap") && !after.is_empty(),
        "{after:?}"
    );
    let rows = rows(&o);
    assert_eq!(rows.len(), 12);
    let open_row = rows
        .iter()
        .find(|r| r["id"] == format!("r{:02}", skipped[1]))
        .unwrap();
    assert_eq!(open_row["final_model"], "strong");
    assert_eq!(
        open_row["attempts"], 1,
        "an open breaker sends nothing: {open_row}"
    );
}

#[test]
fn a_tagged_record_never_reaches_a_provider_without_that_tag() {
    let server = serve(Arc::new(|_, _| ok_openai("fine")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    // `safe` is served by the same server under /safe/v1 and may receive `pii`.
    let safe = format!(
        "[providers.safe]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/safe/v1\"\napi_key_env = \"FAKE_KEY\"\nallowed_tags = [\"pii\"]\n\
         [models.safe]\nprovider = \"safe\"\ninput_per_mtok = 5.0\noutput_per_mtok = 10.0\ncontext_window = 100000\nmax_output_tokens = 1000\n",
        server.port
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace(
        "balanced = [\"cheap\", \"strong\"]",
        "balanced = [\"cheap\", \"safe\"]",
    );
    text.push_str(&safe);
    std::fs::write(&cfg, text).unwrap();
    let job = "{\"id\":\"plain\",\"prompt\":\"question 1\",\"task\":\"chat\"}\n\
               {\"id\":\"tagged\",\"prompt\":\"question 2\",\"task\":\"chat\",\"tags\":[\"pii\"]}\n\
               {\"id\":\"pinned\",\"prompt\":\"question 3\",\"model\":\"cheap\",\"tags\":[\"pii\"]}\n";
    let o = run(&cfg, job, &[]);
    assert_eq!(
        o.code, 1,
        "the pinned record has no allowed model: {}",
        o.stderr
    );
    let seen = server.seen();
    for s in &seen {
        let tagged = s.prompt() != "question 1";
        assert_eq!(
            s.path.starts_with("/safe/"),
            tagged,
            "{} went to {}",
            s.prompt(),
            s.path
        );
    }
    assert!(!seen.iter().any(|s| s.prompt() == "question 3"));
    let rows = rows(&o);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("plain")["final_model"], "cheap");
    assert_eq!(by_id("tagged")["final_model"], "safe");
    let pinned = by_id("pinned");
    assert_eq!(pinned["status"], "failed");
    assert!(
        pinned["error"].as_str().unwrap().contains("pii"),
        "{pinned}"
    );
}

#[test]
fn a_context_length_400_moves_to_a_larger_window_not_the_next_model() {
    let server = serve(Arc::new(|_, req| {
        match req.model() {
        "cheap" => Reply::Respond(
            400,
            vec![],
            r#"{"error":{"message":"This model's maximum context length is 100000 tokens.","code":"context_length_exceeded"}}"#.into(),
        ),
        _ => ok_openai("fine"),
    }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replace(
        "balanced = [\"cheap\", \"strong\"]",
        "balanced = [\"cheap\", \"strong\", \"big\"]",
    );
    text.push_str("[models.big]\nprovider = \"fake\"\ninput_per_mtok = 20.0\noutput_per_mtok = 40.0\ncontext_window = 1000000\nmax_output_tokens = 1000\n");
    std::fs::write(&cfg, text).unwrap();
    let o = run(
        &cfg,
        "{\"id\":\"long\",\"prompt\":\"question 1\",\"task\":\"chat\"}\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let models: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.model().to_string())
        .collect();
    assert_eq!(
        models,
        ["cheap", "big"],
        "strong has the same window as cheap"
    );
    let r = &rows(&o)[0];
    assert_eq!(
        (r["final_model"].as_str(), r["fallbacks"].as_u64()),
        (Some("big"), Some(1))
    );
}

#[test]
fn the_llm_classifier_reroutes_on_a_usable_word_and_is_charged_on_its_own_line() {
    let server = serve(Arc::new(|_, req| {
        let p = req.prompt();
        if p.starts_with("Classify the request below.") {
            if p.contains("question 1") {
                ok_openai("Code.")
            } else {
                ok_openai("banana")
            }
        } else {
            ok_openai("fine")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replacen(
        "[routes.code]\nbudget = [\"cheap\", \"strong\"]\nbalanced = [\"cheap\", \"strong\"]",
        "[routes.code]\nbudget = [\"strong\"]\nbalanced = [\"strong\"]",
        1,
    );
    text.push_str("[classifier.llm]\nenabled = true\nmodel = \"cheap\"\nscope = \"all\"\n");
    std::fs::write(&cfg, text).unwrap();
    let job =
        "{\"id\":\"a\",\"prompt\":\"question 1\"}\n{\"id\":\"b\",\"prompt\":\"question 2\"}\n";

    // plan prices the two questions on their own line.
    let input = crate::fake::write_job(&cfg, job);
    let plan = crate::common::bin()
        .args([
            "plan",
            input.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let line = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "cheap (classifier)")
        .unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(line["requests"], 2, "{line}");

    let o = run(&cfg, job, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = rows(&o);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    let a = by_id("a");
    assert_eq!(
        (
            a["task"].as_str(),
            a["classified_by"].as_str(),
            a["final_model"].as_str()
        ),
        (Some("code"), Some("llm"), Some("strong"))
    );
    // The question (100 × $1/M + 10 × $2/M) plus the answer on strong ($10/$20 per M).
    assert_eq!(a["cost_usd"].as_f64(), Some(0.00132));
    let b = by_id("b");
    assert_eq!(
        (
            b["task"].as_str(),
            b["classified_by"].as_str(),
            b["final_model"].as_str()
        ),
        (Some("chat"), Some("local"), Some("cheap")),
        "an unusable word keeps the local decision"
    );
    assert_eq!(b["cost_usd"].as_f64(), Some(0.00024));
    let report = o
        .stderr
        .lines()
        .find(|l| l.contains("cheap (classifier)"))
        .unwrap_or_else(|| panic!("{}", o.stderr));
    let cols: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(
        &cols[..5],
        ["cheap", "(classifier)", "fake", "2", "2"],
        "{report}"
    );
    assert_eq!(server.seen().len(), 4);
}
