//! What an operator meets: a run that cannot send anything stops before it starts,
//! a mass failure stops early and says why, the summary groups failure reasons, and
//! the CLI's conventions (completions, -v/-vv, --quiet, --keep-order).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::common::{bin, output};
use crate::fake::{
    command, config, error, ok_openai, parquet_rows, prompt_number, rows, run, serve, write_job,
    CANARY,
};

const KEY_VARS: [&str; 5] = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "DEEPSEEK_API_KEY",
    "DASHSCOPE_API_KEY",
    "ZHIPUAI_API_KEY",
];

fn edit(cfg: &std::path::Path, from: &str, to: &str) {
    crate::fake::edit(cfg, &[(from, to)], "");
}

fn jobs(n: usize, task: &str) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"question {i}\",\"task\":\"{task}\"}}\n"))
        .collect()
}

#[test]
fn no_key_set_stops_before_any_request_or_output_naming_the_variables() {
    // The embedded default with no key at all.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut cmd = bin();
    for var in KEY_VARS {
        cmd.env_remove(var);
    }
    let o = output(cmd.args(["run", "jobs/mixed.jsonl", "--out", out.to_str().unwrap()]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("error: no model this job routes to can be used; set one of "),
        "{}",
        o.stderr
    );
    for var in KEY_VARS {
        assert!(
            o.stderr.contains(&format!("{var} is not set")),
            "{var}: {}",
            o.stderr
        );
    }
    assert!(
        o.stderr.contains("or add --simulate to try the job"),
        "{}",
        o.stderr
    );
    assert!(
        !out.exists(),
        "no journal is started for a run that cannot send"
    );

    // A loopback provider whose key variable is unset: not one request.
    let server = serve(Arc::new(|_, _| ok_openai("never")));
    let cfg = config(dir.path(), server.port, "openai");
    let input = write_job(&cfg, &jobs(5, "chat"));
    let o = output(command(&cfg, &input).env_remove("FAKE_KEY"));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(
        o.stderr,
        "error: no model this job routes to can be used; set FAKE_KEY, or add --simulate to try \
         the job without requests or spend:\n  provider fake: FAKE_KEY is not set\n"
    );
    assert!(o.stdout.is_empty());
    assert!(server.seen().is_empty());

    // --simulate needs no key.
    let o = output(
        command(&cfg, &input)
            .env_remove("FAKE_KEY")
            .arg("--simulate"),
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(rows(&o).len(), 5);
}

#[test]
fn a_provider_that_cannot_be_used_is_named_once_with_the_records_it_affects() {
    let server = serve(Arc::new(|_, _| ok_openai("fine")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    // A second provider whose key is not set: translation has only its model, chat
    // has it first with `cheap` behind it.
    edit(
        &cfg,
        "[models.cheap]",
        "[providers.other]\nkind = \"openai\"\nbase_url = \"https://other.invalid/v1\"\napi_key_env = \"OTHER_KEY\"\nallowed_tags = []\n\
         [models.far]\nprovider = \"other\"\ninput_per_mtok = 0.1\noutput_per_mtok = 0.2\ncontext_window = 100000\nmax_output_tokens = 1000\n\
         [models.cheap]",
    );
    edit(
        &cfg,
        "[routes.chat]\nbudget = [\"cheap\", \"strong\"]\nbalanced = [\"cheap\", \"strong\"]",
        "[routes.chat]\nbudget = [\"far\", \"cheap\"]\nbalanced = [\"far\", \"cheap\"]",
    );
    edit(
        &cfg,
        "[routes.translation]\nbudget = [\"cheap\", \"strong\"]\nbalanced = [\"cheap\", \"strong\"]",
        "[routes.translation]\nbudget = [\"far\"]\nbalanced = [\"far\"]",
    );
    // Three stranded records in a row do not stop the run (its start said so), even
    // with a stop after 2 records of the same lasting failure.
    edit(&cfg, "[run]\n", "[run]\nstop_after_same_failures = 2\n");
    let job = format!(
        "{}{}",
        jobs(3, "translation").replace("\"r", "\"t"),
        jobs(3, "chat")
    );
    let o = run(&cfg, &job, &["--concurrency", "1"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with(
            "warning: 1 of the job's providers cannot be used; of 6 routed records, 3 have no \
             other model and will fail, 3 more lose a fallback:\n  provider other: OTHER_KEY is not set\n"
        ),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("stopped"), "{}", o.stderr);
    let rows = rows(&o);
    assert_eq!(rows.len(), 6);
    let t = rows.iter().find(|r| r["id"] == "t0").unwrap();
    assert_eq!(t["status"], "failed");
    assert_eq!(t["error"], "far: provider other: OTHER_KEY is not set");
    assert_eq!(rows.iter().filter(|r| r["status"] == "ok").count(), 3);
    // Nothing was sent for the unusable model; the chat records went to `cheap`.
    let models: Vec<String> = server.seen().iter().map(|s| s.model().into()).collect();
    assert_eq!(models, ["cheap", "cheap", "cheap"]);
    assert!(
        o.stderr
            .contains("\n  3 failed: far: provider other: OTHER_KEY is not set\n"),
        "{}",
        o.stderr
    );

    // Only the translation record: every routed record is stranded, so nothing runs.
    let o = run(&cfg, &jobs(2, "translation"), &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .starts_with("error: no model this job routes to can be used; set OTHER_KEY,"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_run_that_meets_the_same_401_stops_early_says_why_and_resumes_once_fixed() {
    let fixed = Arc::new(AtomicBool::new(false));
    let server = {
        let fixed = fixed.clone();
        serve(Arc::new(move |_, _| match fixed.load(Ordering::SeqCst) {
            true => ok_openai("fine"),
            false => error(401, "Incorrect API key provided"),
        }))
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(&cfg, "[run]\n", "[run]\nstop_after_same_failures = 3\n");
    let out = dir.path().join("out");
    let input = write_job(&cfg, &jobs(10, "chat"));
    let args = ["--out", out.to_str().unwrap(), "--concurrency", "1"];
    let o = output(command(&cfg, &input).args(args));
    assert_eq!(o.code, 1, "{}", o.stderr);
    let why = "provider fake: HTTP 401: Incorrect API key provided";
    assert!(
        o.stderr.contains(&format!(
            "error: stopped: 3 records in a row failed on every model: {why}; 7 records were not \
             started (`[run] stop_after_same_failures`)\nfix that, then continue with: "
        )),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains(" --resume\n"), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!("\n  3 failed: strong: {why}\n")),
        "{}",
        o.stderr
    );
    // Each of the 3 records asked both models once (a 401 is not retried).
    assert_eq!(server.seen().len(), 6);
    assert_eq!(parquet_rows(&out.join("results.parquet")).len(), 3);

    // The key fixed: the resume runs the 7 records never started and the 3 that met
    // the refusal (nothing was billed for them).
    fixed.store(true, Ordering::SeqCst);
    let o = output(command(&cfg, &input).args(args).arg("--resume"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let results = parquet_rows(&out.join("results.parquet"));
    assert_eq!(results.len(), 10);
    assert!(results.iter().all(|r| r["status"] == "ok"));
    assert_eq!(server.seen().len(), 16);
    // A resume of the finished run sends nothing.
    let o = output(command(&cfg, &input).args(args).arg("--resume"));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(server.seen().len(), 16);

    // 0 turns the circuit off: every record is tried.
    edit(
        &cfg,
        "stop_after_same_failures = 3",
        "stop_after_same_failures = 0",
    );
    fixed.store(false, Ordering::SeqCst);
    let o = output(command(&cfg, &input).args(["--concurrency", "1"]));
    assert_eq!(o.code, 1);
    assert_eq!(rows(&o).len(), 10);
    assert!(!o.stderr.contains("stopped"), "{}", o.stderr);
}

#[test]
fn failures_of_other_kinds_or_an_answer_between_them_do_not_stop_the_run() {
    // 401, then a 500 (a passing failure), alternating per record: no streak of the
    // same lasting reason reaches 2.
    let server = serve(Arc::new(|_, req| {
        let n = prompt_number(req);
        match n % 2 {
            0 => error(401, "no"),
            _ => error(500, "busy"),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    edit(
        &cfg,
        "[run]\n",
        "[run]\nstop_after_same_failures = 2\nbreaker_failures = 100\n",
    );
    let o = run(&cfg, &jobs(6, "chat"), &["--concurrency", "1"]);
    assert_eq!(o.code, 1);
    assert_eq!(rows(&o).len(), 6, "{}", o.stderr);
    assert!(!o.stderr.contains("stopped"), "{}", o.stderr);
}

#[test]
fn the_summary_groups_reasons_with_counts_in_table_and_json() {
    // Records 0-3 meet a 403 on both models; 4-5 are answered.
    let server = serve(Arc::new(|_, req| {
        let n = prompt_number(req);
        if n < 4 {
            error(403, "model not enabled for this project")
        } else {
            ok_openai("fine")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let out = dir.path().join("out");
    let job = format!("{}{{\"id\":\"bad\",\"prompt\":5}}\n", jobs(6, "chat"));
    let args = [
        "--out",
        out.to_str().unwrap(),
        "--concurrency",
        "1",
        "--format",
        "json",
    ];
    let o = run(&cfg, &job, &args);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(
            "7 records, 5 not ok; spent $0.000240 (baseline $0.000700 on the same tokens)\n  \
             4 failed: strong: provider fake: HTTP 403: model not enabled for this project\n  \
             1 invalid_input: line 7: field `prompt`: invalid type: integer `5`, expected a string\n"
        ),
        "{}",
        o.stderr
    );
    // The cost report counts the failed requests against their models (a 403 is not
    // retried: one request per record per model).
    let report = parquet_rows(&out.join("cost_report.parquet"));
    let counts = |m: &str| {
        let r = report.iter().find(|r| r["model"] == m).unwrap();
        (
            r["requests"].as_i64(),
            r["ok"].as_i64(),
            r["failed"].as_i64(),
        )
    };
    assert_eq!(counts("cheap"), (Some(6), Some(2), Some(4)));
    assert_eq!(counts("strong"), (Some(4), Some(0), Some(4)));
    assert_eq!(counts("total"), (Some(10), Some(2), Some(8)));
    let summary: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(
        summary["reasons"],
        serde_json::json!([
            {"status": "failed", "count": 4, "reason": "strong: provider fake: HTTP 403: model not enabled for this project"},
            {"status": "invalid_input", "count": 1, "reason": "line 7: field `prompt`: invalid type: integer `5`, expected a string"},
        ])
    );
}

#[test]
fn plan_lists_why_records_are_not_routed() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("tagged.jsonl");
    std::fs::write(
        &job,
        "{\"id\":\"s\",\"prompt\":\"Summarize: x\",\"tags\":[\"secret\"]}\n\
         {\"id\":\"s2\",\"prompt\":\"Summarize: z\",\"tags\":[\"secret\"]}\n\
         {\"id\":\"p\",\"prompt\":\"Summarize: y\"}\n",
    )
    .unwrap();
    let o = output(bin().args(["plan", job.to_str().unwrap()]));
    assert_eq!(o.code, 1);
    assert!(
        o.stdout.contains(
            "not routed:\n  2 unroutable: no eligible model for summarization/balanced: \
             deepseek-v4-flash: provider deepseek is not allowed tag 'secret';"
        ),
        "{}",
        o.stdout
    );
    let o = output(bin().args(["plan", job.to_str().unwrap(), "--format", "json"]));
    let plan: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(plan["reasons"][0]["status"], "unroutable");
    assert_eq!(plan["reasons"][0]["count"], 2);
    assert_eq!(plan["reasons"].as_array().unwrap().len(), 1);
}

#[test]
fn completions_generate_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _switchyard"),
        ("zsh", "#compdef switchyard"),
        ("fish", "complete -c switchyard"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = output(bin().args(["completions", shell]));
        assert_eq!(o.code, 0, "{shell}: {}", o.stderr);
        assert!(o.stdout.contains(marker), "{shell}");
        assert!(
            o.stdout.contains("keep-order"),
            "{shell}: run's flags are in it"
        );
    }
    let o = output(bin().args(["completions", "tcsh"]));
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("invalid value 'tcsh'"), "{}", o.stderr);
}

#[test]
fn verbose_logs_say_what_happened_but_never_a_prompt_answer_or_key() {
    // The server echoes the key it was sent, in an error and in an answer.
    let server = serve(Arc::new(|n, req| {
        let key = req.header("authorization").unwrap_or("").to_string();
        match n {
            0 => error(500, &format!("upstream saw {key}")),
            _ => ok_openai(&format!("answer-canary {key}")),
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let job = "{\"id\":\"a\",\"prompt\":\"prompt-canary-31337\",\"task\":\"chat\"}\n";
    let o = run(&cfg, job, &["-vv"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    for event in [
        "run starts",
        "routed",
        "request failed",
        "retry",
        "answered",
        "run ends",
    ] {
        assert!(o.stderr.contains(event), "{event}: {}", o.stderr);
    }
    for secret in [CANARY, "prompt-canary-31337", "answer-canary"] {
        assert!(!o.stderr.contains(secret), "{secret}: {}", o.stderr);
    }
    // Asked for, prompts and answers are logged (the key still is not).
    let o = run(&cfg, job, &["-vv", "--log-prompts"]);
    assert!(o.stderr.contains("prompt-canary-31337"), "{}", o.stderr);
    assert!(o.stderr.contains("answer-canary"), "{}", o.stderr);
    assert!(!o.stderr.contains(CANARY), "{}", o.stderr);
    // -v: the run's events, not each record's.
    let o = run(&cfg, job, &["-v"]);
    assert!(o.stderr.contains("run starts"), "{}", o.stderr);
    assert!(!o.stderr.contains("routed"), "{}", o.stderr);
}

#[test]
fn quiet_leaves_stderr_to_errors() {
    let server = serve(Arc::new(|_, _| ok_openai("fine")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let out = dir.path().join("out");
    // An invalid record (a warning) and a finished run (a summary): neither printed.
    let job = format!("{}{{\"id\":\"bad\",\"prompt\":5}}\n", jobs(2, "chat"));
    let o = run(&cfg, &job, &["--quiet", "--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr, "");
    assert_eq!(parquet_rows(&out.join("results.parquet")).len(), 3);
    // Errors still are.
    let o = run(&cfg, &job, &["-q", "--out", out.to_str().unwrap()]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.starts_with("error: --out"), "{}", o.stderr);
    let o = output(bin().args(["run", "jobs/mixed.jsonl", "-q", "-v"]));
    assert_eq!(o.code, 2, "--quiet and --verbose conflict");
}

#[test]
fn keep_order_writes_rows_in_input_order_whatever_finishes_first() {
    // The first record is answered only after the other 7 arrived, and a second
    // later: it finishes last.
    let others = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let firsts = std::sync::atomic::AtomicUsize::new(0);
    let server = serve(Arc::new(move |_, req| {
        if req.prompt() != "question 0" {
            others.fetch_add(1, Ordering::SeqCst);
            return ok_openai("fine");
        }
        let runs = firsts.fetch_add(1, Ordering::SeqCst) + 1;
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while others.load(Ordering::SeqCst) < 7 * runs && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs(1));
        ok_openai("fine")
    }));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let ids = |o: &crate::common::Output| -> Vec<String> {
        rows(o)
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let o = run(
        &cfg,
        &jobs(8, "chat"),
        &["--concurrency", "8", "--keep-order"],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(ids(&o), want);
    let o = run(&cfg, &jobs(8, "chat"), &["--concurrency", "8"]);
    assert_ne!(ids(&o)[0], "r0", "the test would pass without --keep-order");
    let o = output(bin().args(["run", "jobs/mixed.jsonl", "--keep-order", "--out", "x"]));
    assert_eq!(o.code, 2, "results.parquet is in input order already");
}
