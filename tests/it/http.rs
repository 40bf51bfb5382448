//! `run` against an in-process OpenAI/Anthropic-compatible server on 127.0.0.1 that
//! can inject faults and records what it received (with its own timestamps).

use std::sync::Arc;
use std::time::Instant;

use crate::fake::{config, edit, error, ok_openai, prompt_number, rows, run, serve, Reply, CANARY};
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
    // The server echoes the key it was sent: in a 401's message (as some gateways do),
    // in a 400's, and inside an answer.
    let server = serve(Arc::new(|n, req| {
        let key = req.header("authorization").unwrap_or("").to_string();
        match n % 3 {
            0 => error(401, &format!("Incorrect API key provided: {key}")),
            1 => error(400, &format!("rejected request from {key}")),
            _ => ok_openai(&format!("you sent {key}")),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let out = dir.path().join("out");
    let job: String = (0..6)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"question {i}\",\"model\":\"cheap\"}}\n"))
        .collect();
    let o = run(
        &cfg,
        &job,
        &[
            "--out",
            out.to_str().unwrap(),
            "--format",
            "json",
            "--concurrency",
            "1",
        ],
    );
    assert!(server.seen().len() >= 6);
    assert!(!o.stdout.contains(CANARY) && !o.stderr.contains(CANARY));
    for f in ["results.parquet", "cost_report.parquet", "journal.jsonl"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{f}"
        );
    }
    // The echoes are there, with the key scrubbed.
    let results = crate::fake::parquet_rows(&out.join("results.parquet"));
    let texts: Vec<String> = results
        .iter()
        .map(|r| format!("{} {}", r["response"], r["error"]))
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Incorrect API key provided: Bearer [redacted key]")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("you sent Bearer [redacted key]")),
        "{texts:?}"
    );
}

#[test]
fn the_llm_classifier_on_unsure_asks_only_about_records_the_rules_were_unsure_of() {
    let server = serve(Arc::new(|_, req| {
        if req.prompt().starts_with("Classify the request below.") {
            ok_openai("creative")
        } else {
            ok_openai("fine")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(
        &cfg,
        &[],
        "[classifier.llm]\nenabled = true\nmodel = \"cheap\"\nscope = \"unsure\"\nmin_confidence = 0.8\n",
    );
    // The local model is sure of the first (a confidence near 1) and unsure of the
    // second (below 0.8: `classify` says so, checked below).
    let job = "{\"id\":\"sure\",\"prompt\":\"Summarize this support ticket in two sentences: the printer is jammed.\"}\n\
               {\"id\":\"unsure\",\"prompt\":\"the lighthouse keeper and the last ship\"}\n";
    let input = crate::fake::write_job(&cfg, job);
    let c = crate::common::output(crate::common::bin().args([
        "classify",
        input.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let unsure: Vec<bool> = rows(&c).iter().map(|r| r["unsure"] == true).collect();
    assert_eq!(unsure, [false, true], "{}", c.stdout);
    let o = run(&cfg, job, &["--concurrency", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let questions: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.prompt().starts_with("Classify the request below."))
        .map(|s| s.prompt().to_string())
        .collect();
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert!(
        questions[0].contains("the lighthouse keeper"),
        "{questions:?}"
    );
    let rows = rows(&o);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(
        (
            by_id("sure")["task"].as_str(),
            by_id("sure")["classified_by"].as_str()
        ),
        (Some("summarization"), Some("local"))
    );
    assert_eq!(
        (
            by_id("unsure")["task"].as_str(),
            by_id("unsure")["classified_by"].as_str()
        ),
        (Some("creative"), Some("llm"))
    );
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
    assert_eq!(
        req.len,
        serde_json::to_vec(&req.body).unwrap().len(),
        "one compact JSON body, its content-length exact"
    );
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
    // The limiter starts after `started`, and admits its (i+1)-th request no sooner
    // than i × 250 ms after it starts; a request arrives after it was sent. So the
    // server sees its i-th request at least i × 250 ms after `started`, however loaded
    // the machine (load only delays).
    let started = Instant::now();
    let o = run(&cfg, &job, &["--concurrency", "16"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let mut at: Vec<Instant> = server.seen.lock().unwrap().iter().map(|s| s.at).collect();
    at.sort();
    assert_eq!(at.len(), 6);
    for (i, t) in at.iter().enumerate() {
        let earliest = std::time::Duration::from_millis(250) * i as u32;
        assert!(
            *t - started >= earliest,
            "request {i} arrived {:?} after the start, before {earliest:?} at 240 rpm",
            *t - started
        );
    }
}

/// Rewrites the test config: `(from, to)` replacements, then `extra` appended.

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

/// What `classify` says of each record's request, by id: (input tokens, expected
/// output tokens). Their sum is what the request charges a `tpm` limit.
fn token_estimates(
    cfg: &std::path::Path,
    input: &std::path::Path,
) -> std::collections::HashMap<String, (u64, u64)> {
    let o = crate::common::bin()
        .args(["classify", input.to_str().unwrap(), "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let n = (
                v["input_tokens"].as_u64().unwrap(),
                v["output_tokens"].as_u64().unwrap(),
            );
            (v["id"].as_str().unwrap().to_string(), n)
        })
        .collect()
}

#[test]
fn tpm_charges_each_request_whole_by_the_server_clock() {
    use std::time::Duration;
    const TPM: u64 = 6_000;
    let server = serve(Arc::new(|_, _| ok_openai("ok")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(
        &cfg,
        &[("[models.cheap]\n", "[models.cheap]\ntpm = 6000\n")],
        "",
    );
    // Each request charges about 1,010 tokens: six fit a minute; a second's share is
    // only 100. Charged the share instead of the whole, they would go once a second.
    let job: String = (0..12)
        .map(|i| format!("{{\"id\":\"r{i:02}\",\"prompt\":\"question {i}\",\"model\":\"cheap\",\"max_tokens\":1000}}\n"))
        .collect();
    let input = crate::fake::write_job(&cfg, &job);
    let estimates = token_estimates(&cfg, &input);
    let started = Instant::now();
    let mut child = crate::fake::spawn(&cfg, &input, &["--concurrency", "12"]);
    // Watch the first 8 s of the run (the whole job needs two minutes), then stop it.
    while started.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let seen = server.seen();
    assert!(!seen.is_empty(), "the first request goes at once");
    let tokens = |s: &crate::fake::Seen| {
        let (input, output) = estimates[&format!("r{:02}", prompt_number(s))];
        input + output
    };
    for (i, first) in seen.iter().enumerate() {
        let in_window: u64 = seen[i..]
            .iter()
            .filter(|s| s.at < first.at + Duration::from_secs(60))
            .map(tokens)
            .sum();
        assert!(
            in_window <= TPM,
            "{in_window} tokens within 60 s of request {i} (tpm {TPM}); {} requests in 8 s",
            seen.len()
        );
    }

    // A request larger than the tpm itself can never go to that model: the record
    // moves to the next candidate, and the model is never asked.
    edit(&cfg, &[("tpm = 6000", "tpm = 900")], "");
    let o = run(
        &cfg,
        "{\"id\":\"big\",\"prompt\":\"question 1\",\"task\":\"chat\",\"max_tokens\":1000}\n",
        &[],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = &rows(&o)[0];
    assert_eq!(
        (r["final_model"].as_str(), r["fallbacks"].as_u64()),
        (Some("strong"), Some(1)),
        "{r}"
    );
    let last = server.seen().last().unwrap().clone();
    assert_eq!(last.model(), "strong");
}

#[test]
fn a_retry_after_beyond_the_limit_opens_the_breaker_and_no_record_waits_for_it() {
    let server = serve(Arc::new(|n, _| {
        if n == 0 {
            Reply::Respond(
                429,
                vec![("retry-after", "86400".into())],
                json!({"error": {"message": "daily quota exhausted"}}).to_string(),
            )
        } else {
            ok_openai("fine")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let job = "{\"id\":\"a\",\"prompt\":\"question 1\",\"task\":\"chat\"}\n\
               {\"id\":\"b\",\"prompt\":\"question 2\",\"task\":\"chat\"}\n";
    // Were `cheap` paused for the day, `b` (and the run) would wait until the harness
    // kills it.
    let o = run(&cfg, job, &["--concurrency", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = rows(&o);
    for r in &rows {
        assert_eq!(
            (
                r["status"].as_str(),
                r["final_model"].as_str(),
                r["fallbacks"].as_u64()
            ),
            (Some("ok"), Some("strong"), Some(1)),
            "{r}"
        );
    }
    let models: Vec<String> = server.seen().iter().map(|s| s.model().into()).collect();
    assert_eq!(
        models,
        ["cheap", "strong", "strong"],
        "b skips the unavailable model without asking it"
    );
    let b = rows.iter().find(|r| r["id"] == "b").unwrap();
    assert_eq!(b["attempts"], 1, "{b}");
    assert!(
        b["error"].is_null() || b["error"].as_str().unwrap().contains("circuit open"),
        "{b}"
    );
}

#[test]
fn a_retry_after_that_is_not_a_number_is_ignored_and_releases_nothing_twice() {
    // `inf` used to panic the record's task and keep its reservation: with a budget
    // that fits one worst case and a half, the second record then had no room.
    for value in ["inf", "1e20", "-3", "NaN"] {
        let server = serve(Arc::new(move |n, _| {
            if n == 0 {
                Reply::Respond(429, vec![("retry-after", value.into())], "{}".into())
            } else {
                ok_openai("fine")
            }
        }));
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), server.port, "openai");
        let job = "{\"id\":\"a\",\"prompt\":\"question 1\",\"model\":\"cheap\"}\n\
                   {\"id\":\"b\",\"prompt\":\"question 2\",\"model\":\"cheap\"}\n";
        // Worst case on cheap: ~10 input tokens + 1,000 output at $2/M ≈ $0.00202.
        let o = run(&cfg, job, &["--concurrency", "1", "--budget", "0.003"]);
        let rows = rows(&o);
        let ids: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap(),
                    r["status"].as_str().unwrap(),
                    r["attempts"].as_u64().unwrap(),
                )
            })
            .collect();
        if value == "1e20" {
            // A day (the cap) is beyond max_retry_after: the model opens, `a` has no
            // other candidate, and `b` finds the breaker open.
            assert_eq!(
                ids,
                [("a", "failed", 1), ("b", "failed", 0)],
                "{}",
                o.stderr
            );
            assert_eq!(server.seen().len(), 1);
        } else {
            assert_eq!(o.code, 0, "retry-after: {value}: {}", o.stderr);
            assert_eq!(
                ids,
                [("a", "ok", 2), ("b", "ok", 1)],
                "retry-after: {value}"
            );
        }
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
}

#[test]
fn a_429_pause_holds_a_record_that_starts_during_it() {
    use std::time::Duration;
    // `a` meets a 429 asking for 1 s; `b` is held 300 ms by the server, so `c`, which
    // starts when `b` finishes, starts inside the pause and must wait it out.
    let server = serve(Arc::new(|_, req| match req.prompt() {
        "question 1" if req.at.elapsed() < Duration::from_secs(30) => {
            static FIRST: std::sync::Once = std::sync::Once::new();
            let mut first = false;
            FIRST.call_once(|| first = true);
            if first {
                Reply::Respond(
                    429,
                    vec![("retry-after", "1".into())],
                    json!({"error": {"message": "slow down"}}).to_string(),
                )
            } else {
                ok_openai("a")
            }
        }
        "question 2" => {
            std::thread::sleep(Duration::from_millis(300));
            ok_openai("b")
        }
        _ => ok_openai("c"),
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let job: String = (1..=3)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"question {i}\",\"model\":\"cheap\"}}\n"))
        .collect();
    let o = run(&cfg, &job, &["--concurrency", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let seen = server.seen();
    let at = |p: &str| {
        seen.iter()
            .filter(|s| s.prompt() == p)
            .map(|s| s.at)
            .collect::<Vec<_>>()
    };
    let limited = at("question 1")[0];
    assert_eq!(at("question 1").len(), 2);
    let c = at("question 3");
    assert_eq!(c.len(), 1);
    assert!(
        c[0] - limited >= Duration::from_secs(1),
        "c was sent {:?} after the 429, inside its 1 s pause",
        c[0] - limited
    );
}

#[test]
fn a_half_open_probe_that_ends_in_a_400_still_closes_or_reopens_the_breaker() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    let probe_answers = [
        error(400, "bad request"),
        Reply::Respond(
            400,
            vec![],
            r#"{"error":{"message":"prompt is too long: 200000 tokens > 100000 maximum"}}"#.into(),
        ),
    ];
    for (case, probe) in probe_answers.into_iter().enumerate() {
        // `cheap`: two 500s open it; the probe after the 1 s cooldown gets `probe`;
        // then it answers. `strong` takes 300 ms, so the cooldown passes meanwhile.
        let cheap_requests = AtomicUsize::new(0);
        let probe = std::sync::Mutex::new(Some(probe));
        let server = serve(Arc::new(move |_, req| {
            if req.model() == "cheap" {
                match cheap_requests.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => return error(500, "down"),
                    2 => return probe.lock().unwrap().take().unwrap(),
                    _ => return ok_openai("cheap again"),
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            ok_openai("strong")
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
            .map(|i| {
                format!("{{\"id\":\"r{i:02}\",\"prompt\":\"question {i}\",\"task\":\"chat\"}}\n")
            })
            .collect();
        let o = run(&cfg, &job, &["--concurrency", "1"]);
        let seen = server.seen();
        let cheap: Vec<&crate::fake::Seen> = seen.iter().filter(|s| s.model() == "cheap").collect();
        assert!(
            cheap.len() > 3,
            "case {case}: after its probe, cheap was never asked again: the breaker stayed half-open ({} cheap requests, exit {}: {})",
            cheap.len(),
            o.code,
            o.stderr
        );
        assert!(cheap[2].at - cheap[1].at >= Duration::from_secs(1));
        // The rest of the job is back on cheap.
        let last = seen.last().unwrap();
        assert_eq!(last.model(), "cheap", "case {case}");
        assert_eq!(rows(&o).len(), 12);
    }
}

#[test]
fn anthropic_errors_over_http_rate_limit_headers_overload_and_a_prompt_too_long() {
    use std::time::{Duration, SystemTime};
    let first = std::sync::Mutex::new(std::collections::HashSet::new());
    let server = serve(Arc::new(move |_, req| {
        let prompt = req.body["messages"][0]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let again = !first
            .lock()
            .unwrap()
            .insert((prompt.clone(), req.model().to_string()));
        let ok = || {
            let body = json!({"content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
                              "usage": {"input_tokens": 40, "output_tokens": 5}});
            Reply::Respond(200, vec![], body.to_string())
        };
        let anthropic_error = |status, kind: &str, message: &str, headers| {
            let body = json!({"type": "error", "error": {"type": kind, "message": message}});
            Reply::Respond(status, headers, body.to_string())
        };
        match prompt.as_str() {
            "rate limited" if !again => {
                // Anthropic says when the window resets, as an RFC 3339 time.
                let reset = SystemTime::now() + Duration::from_secs(2);
                let reset = humantime::format_rfc3339_seconds(reset).to_string();
                anthropic_error(
                    429,
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                    vec![
                        ("anthropic-ratelimit-requests-reset", reset),
                        ("anthropic-ratelimit-requests-remaining", "0".into()),
                    ],
                )
            }
            "overloaded" if !again => {
                anthropic_error(529, "overloaded_error", "Overloaded", vec![])
            }
            "too long" if req.model() == "cheap" => anthropic_error(
                400,
                "invalid_request_error",
                "prompt is too long: 215000 tokens > 200000 maximum",
                vec![],
            ),
            _ => ok(),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "anthropic");
    edit(
        &cfg,
        &[(
            "balanced = [\"cheap\", \"strong\"]",
            "balanced = [\"cheap\", \"strong\", \"big\"]",
        )],
        "[models.big]\nprovider = \"fake\"\ninput_per_mtok = 20.0\noutput_per_mtok = 40.0\ncontext_window = 1000000\nmax_output_tokens = 1000\n",
    );
    let job = "{\"id\":\"rate\",\"prompt\":\"rate limited\",\"task\":\"chat\"}\n\
               {\"id\":\"over\",\"prompt\":\"overloaded\",\"task\":\"chat\"}\n\
               {\"id\":\"long\",\"prompt\":\"too long\",\"task\":\"chat\"}\n";
    let o = run(&cfg, job, &["--concurrency", "3"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = rows(&o);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    let rate = by_id("rate");
    assert_eq!(
        (rate["final_model"].as_str(), rate["attempts"].as_u64()),
        (Some("cheap"), Some(2)),
        "a 429 is retried on the same model after its reset: {rate}"
    );
    let over = by_id("over");
    assert_eq!(
        (over["final_model"].as_str(), over["attempts"].as_u64()),
        (Some("cheap"), Some(2)),
        "529 overloaded is transient: {over}"
    );
    let long = by_id("long");
    assert_eq!(
        (long["final_model"].as_str(), long["fallbacks"].as_u64()),
        (Some("big"), Some(1)),
        "prompt is too long moves to a larger window, skipping strong: {long}"
    );
    let seen = server.seen();
    let times: Vec<Instant> = seen
        .iter()
        .filter(|s| s.body["messages"][0]["content"] == "rate limited")
        .map(|s| s.at)
        .collect();
    assert_eq!(times.len(), 2);
    // The reset was 2 s ahead at whole-second precision: at least 1 s of waiting.
    assert!(
        times[1] - times[0] >= Duration::from_secs(1),
        "{:?}",
        times[1] - times[0]
    );
    assert!(!seen.iter().any(|s| s.model() == "strong"));
}

#[test]
fn a_provider_billing_more_than_the_reservation_is_recorded_and_the_ceiling_held() {
    // The server reports 300,000 prompt tokens for every call: $0.30002 on cheap, far
    // beyond the ~$0.002 reserved. That first surprise is real money: it is recorded
    // and reported. Then cheap's reservations are scaled by what it really billed, so
    // the next record no longer fits the $0.50 budget and nothing more is sent.
    let server = serve(Arc::new(|_, _| {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 300_000, "completion_tokens": 10}});
        Reply::Respond(200, vec![], body.to_string())
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let out = dir.path().join("out");
    let job: String = (0..10)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"question {i}\",\"model\":\"cheap\"}}\n"))
        .collect();
    let args = [
        "--concurrency",
        "1",
        "--budget",
        "0.50",
        "--on-budget",
        "skip",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ];
    let o = run(&cfg, &job, &args);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(
        server.seen().len(),
        1,
        "no request once the budget cannot cover one"
    );
    // 300,000 × $1/M + 10 × $2/M, from the server's usage.
    let summary: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(summary["spent_exact"], "0.300020000000");
    assert_eq!(summary["overrun_calls"], 1);
    let reserved = crate::fake::pico(&reserved_worst_case(&cfg));
    let overrun = crate::fake::pico("0.30002") - reserved;
    let warning = format!(
        "warning: 1 calls were billed ${:.6} more than the worst case reserved for them",
        overrun as f64 / 1e12
    );
    assert!(o.stderr.contains(&warning), "{warning}\n{}", o.stderr);
    assert!(!o.stderr.contains("over --budget"), "{}", o.stderr);
    let results = crate::fake::parquet_rows(&out.join("results.parquet"));
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [["ok"].as_slice(), &["skipped_budget"; 9]].concat()
    );
    let report = crate::fake::parquet_rows(&out.join("cost_report.parquet"));
    let cheap = report.iter().find(|r| r["model"] == "cheap").unwrap();
    assert_eq!(cheap["requests"], 1);
    assert_eq!(
        crate::fake::pico(&format!("{:.12}", cheap["overrun_usd"].as_f64().unwrap())),
        overrun
    );
    // The journal keeps the overrun across a resume.
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap();
    assert!(
        journal.contains(&format!("\"overrun\":\"0.{overrun:012}\"")),
        "{journal}"
    );
}

/// The worst case `run` reserves for `question 0` pinned to cheap: `classify`'s input
/// tokens at $1/M plus the 1,000-token output cap at $2/M, as a decimal.
fn reserved_worst_case(cfg: &std::path::Path) -> String {
    let input = crate::fake::write_job(
        cfg,
        "{\"id\":\"r0\",\"prompt\":\"question 0\",\"model\":\"cheap\"}\n",
    );
    let tokens = token_estimates(cfg, &input)["r0"].0;
    let pico = tokens as u128 * 1_000_000 + 1000 * 2_000_000;
    format!("0.{pico:012}")
}

#[test]
fn a_stub_answer_escalates_whatever_task_the_record_was_classified_as() {
    // Each record says its task (not code); cheap answers with a stub in a code
    // block, or hedges; strong answers properly.
    let server = serve(Arc::new(|_, req| match (req.model(), req.prompt()) {
        ("cheap", "question 1") => {
            ok_openai("Sure:\n```python\ndef parse(s):\n    # TODO: implement this\n    pass\n```")
        }
        ("cheap", "question 2") => ok_openai("It is probably Lisbon, but I might be wrong."),
        ("cheap", _) => ok_openai("Lisbon."),
        _ => ok_openai("```python\ndef parse(s):\n    return s.split(',')\n```"),
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let job = "{\"id\":\"stub\",\"prompt\":\"question 1\",\"task\":\"chat\"}\n\
               {\"id\":\"hedge\",\"prompt\":\"question 2\",\"task\":\"summarization\"}\n\
               {\"id\":\"fine\",\"prompt\":\"question 3\",\"task\":\"creative\"}\n";
    let o = run(&cfg, job, &[]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows = rows(&o);
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    for (id, reason) in [("stub", "code_stub"), ("hedge", "hedging")] {
        let r = by_id(id);
        assert_eq!(r["escalations"], json!([reason]), "{r}");
        assert_eq!(r["final_model"], "strong", "{r}");
    }
    assert_eq!(by_id("fine")["escalations"], json!([]));
    assert_eq!(by_id("fine")["final_model"], "cheap");
}
