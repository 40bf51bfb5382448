//! Prompt-cache billing: every call charged by its provider's rule, to the pico-dollar,
//! and each record's `cached_input_tokens` in the results.

use std::sync::Arc;

use serde_json::json;

use crate::fake::{config, edit, parquet_rows, pico, run, serve, Reply};

fn openai_usage(usage: serde_json::Value) -> Reply {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                      "usage": usage});
    Reply::Respond(200, vec![], body.to_string())
}

/// The fake config, its `cheap` model given cache prices ($0.50 read, $1.25 write
/// per million; input $1, output $2) or not.
fn cached_config(dir: &std::path::Path, port: u16, kind: &str, prices: bool) -> std::path::PathBuf {
    let cfg = config(dir, port, kind);
    if prices {
        edit(&cfg, &[("[models.cheap]\nprovider = \"fake\"\n", "[models.cheap]\nprovider = \"fake\"\ncache_read_per_mtok = 0.5\ncache_write_per_mtok = 1.25\n")], "");
    }
    cfg
}

/// Runs one record against `reply` and returns (cost_usd in pico, cached_input_tokens,
/// input_tokens) from results.parquet, and the cost report's total in pico.
fn one(kind: &str, prices: bool, reply: fn() -> Reply) -> (u128, i64, i64, u128) {
    let server = serve(Arc::new(move |_, _| reply()));
    let dir = tempfile::tempdir().unwrap();
    let cfg = cached_config(dir.path(), server.port, kind, prices);
    let out = dir.path().join("out");
    let o = run(
        &cfg,
        "{\"id\":\"a\",\"prompt\":\"hi\",\"task\":\"chat\"}\n",
        &["--out", out.to_str().unwrap()],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let r = &parquet_rows(&out.join("results.parquet"))[0];
    let report = parquet_rows(&out.join("cost_report.parquet"));
    let total = report.iter().find(|r| r["model"] == "total").unwrap();
    (
        pico(&format!("{:.12}", r["cost_usd"].as_f64().unwrap())),
        r["cached_input_tokens"].as_i64().unwrap(),
        r["input_tokens"].as_i64().unwrap(),
        pico(&format!("{:.12}", total["cost_usd"].as_f64().unwrap())),
    )
}

#[test]
fn openai_cached_tokens_are_part_of_prompt_tokens() {
    // 1,000 prompt tokens of which 800 cached, 10 out:
    // 200 × $1/M + 800 × $0.50/M + 10 × $2/M = $0.000620.
    let reply = || {
        openai_usage(json!({"prompt_tokens": 1000, "completion_tokens": 10,
                            "prompt_tokens_details": {"cached_tokens": 800}}))
    };
    assert_eq!(
        one("openai", true, reply),
        (620_000_000, 800, 1000, 620_000_000)
    );
    // Without a cache price the cached tokens cost what input costs: $0.001020.
    assert_eq!(
        one("openai", false, reply),
        (1_020_000_000, 800, 1000, 1_020_000_000)
    );
}

#[test]
fn deepseek_hit_tokens_are_charged_at_the_cache_price() {
    let reply = || {
        openai_usage(json!({"prompt_tokens": 1000, "completion_tokens": 10,
                            "prompt_cache_hit_tokens": 800, "prompt_cache_miss_tokens": 200}))
    };
    assert_eq!(
        one("openai", true, reply),
        (620_000_000, 800, 1000, 620_000_000)
    );
}

#[test]
fn anthropic_input_excludes_cache_reads_and_writes_and_writes_cost_more() {
    // 100 uncached + 800 read + 100 written, 10 out:
    // 100 × $1/M + 800 × $0.50/M + 100 × $1.25/M + 10 × $2/M = $0.000645.
    let reply = || {
        let body = json!({"content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
                          "usage": {"input_tokens": 100, "output_tokens": 10,
                                    "cache_read_input_tokens": 800, "cache_creation_input_tokens": 100}});
        Reply::Respond(200, vec![], body.to_string())
    };
    assert_eq!(
        one("anthropic", true, reply),
        (645_000_000, 800, 1000, 645_000_000)
    );
}

fn ok_anthropic() -> Reply {
    let body = json!({"content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
                      "usage": {"input_tokens": 100, "output_tokens": 10}});
    Reply::Respond(200, vec![], body.to_string())
}

#[test]
fn requests_are_shaped_to_reach_the_cache() {
    // OpenAI: one prompt_cache_key per system prompt, none without one.
    let server = serve(Arc::new(|_, _| crate::fake::ok_openai("fine")));
    let dir = tempfile::tempdir().unwrap();
    let cfg = cached_config(dir.path(), server.port, "openai", true);
    edit(
        &cfg,
        &[(
            "allowed_tags = []\n",
            "allowed_tags = []\nprompt_cache_key = true\n",
        )],
        "",
    );
    let job = "{\"id\":\"a\",\"system\":\"You label tickets.\",\"prompt\":\"one\",\"task\":\"chat\"}\n\
               {\"id\":\"b\",\"system\":\"You label tickets.\",\"prompt\":\"two\",\"task\":\"chat\"}\n\
               {\"id\":\"c\",\"system\":\"You translate.\",\"prompt\":\"three\",\"task\":\"chat\"}\n\
               {\"id\":\"d\",\"prompt\":\"four\",\"task\":\"chat\"}\n";
    let o = run(&cfg, job, &["--concurrency", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let keys: Vec<Option<String>> = server
        .seen()
        .iter()
        .map(|s| s.body["prompt_cache_key"].as_str().map(String::from))
        .collect();
    assert_eq!(keys.len(), 4);
    assert!(keys[0].as_deref().unwrap().starts_with("switchyard-"));
    assert_eq!(keys[0], keys[1]);
    assert_ne!(keys[0], keys[2]);
    assert_eq!(keys[3], None);

    // Anthropic: the system prompt is marked for caching from its second use, when it
    // is long enough; a short shared one never is.
    let server = serve(Arc::new(|_, _| ok_anthropic()));
    let cfg = cached_config(dir.path(), server.port, "anthropic", true);
    edit(
        &cfg,
        &[(
            "cache_write_per_mtok = 1.25\n",
            "cache_write_per_mtok = 1.25\ncache_min_tokens = 8\n",
        )],
        "",
    );
    let long = "You write short, factual summaries of support tickets for engineers.";
    let job: String = (0..3)
        .map(|i| format!("{{\"id\":\"l{i}\",\"system\":\"{long}\",\"prompt\":\"ticket {i}\",\"task\":\"chat\"}}\n"))
        .chain((0..2).map(|i| format!("{{\"id\":\"s{i}\",\"system\":\"Be brief.\",\"prompt\":\"q {i}\",\"task\":\"chat\"}}\n")))
        .collect();
    let o = run(&cfg, &job, &["--concurrency", "1"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let marked: Vec<bool> = server
        .seen()
        .iter()
        .map(|s| s.body["system"][0]["cache_control"]["type"] == "ephemeral")
        .collect();
    assert_eq!(marked, [false, true, true, false, false]);
    assert_eq!(server.seen()[1].body["system"][0]["text"], long);
}

#[test]
fn plan_prices_the_system_prompts_records_share_at_cache_prices() {
    // A 1,100-token system prompt ("hello" × 1,100), shared by 30 records pinned to
    // gpt-4o-mini and 5 pinned to Claude Sonnet (1,265 tokens with its factor 1.15).
    let dir = tempfile::tempdir().unwrap();
    let system = vec!["hello"; 1100].join(" ");
    let job: String = (0..35)
        .map(|i| {
            let model = if i < 30 { "gpt-4o-mini" } else { "claude-sonnet-4.6" };
            format!("{{\"id\":\"r{i}\",\"system\":\"{system}\",\"prompt\":\"question {i}\",\"model\":\"{model}\",\"max_tokens\":10}}\n")
        })
        .collect();
    let path = dir.path().join("shared.jsonl");
    std::fs::write(&path, job).unwrap();
    let o = crate::common::output(crate::common::bin().args([
        "plan",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let cache = &v["cache"];
    // gpt-4o-mini: 29 repeats × 1,100 × ($0.15 − $0.075)/M = $0.0023925.
    // Sonnet: the 2nd record writes, 1,265 × ($3.75 − $3)/M = $0.00094875 more; the
    // 3rd to 5th read, 3 × 1,265 × ($3 − $0.30)/M = $0.0102465 less.
    assert_eq!(cache["records"], 32);
    assert_eq!(cache["tokens"], 29 * 1100 + 3 * 1265);
    assert_eq!(
        pico(&format!("{:.12}", cache["saving_usd"].as_f64().unwrap())),
        12_639_000_000
    );
    assert_eq!(
        pico(&format!(
            "{:.12}",
            cache["write_premium_usd"].as_f64().unwrap()
        )),
        948_750_000
    );
    // A rehearsal's simulated cache serves the same tokens.
    let o = crate::common::output(crate::common::bin().args([
        "run",
        path.to_str().unwrap(),
        "--simulate",
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let cached: u64 = crate::fake::rows(&o)
        .iter()
        .map(|r| r["cached_input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(cached, 29 * 1100 + 3 * 1265);
    let total = pico(v["total_cost_exact"].as_str().unwrap());
    assert_eq!(
        pico(cache["total_with_cache_exact"].as_str().unwrap()),
        total + 948_750_000 - 12_639_000_000
    );
}
