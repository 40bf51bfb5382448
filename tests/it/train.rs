//! `switchyard train` as a team uses it to distil the LLM classifier: `run` a sample
//! with the LLM classifier on every record, `train` on that run's results, then route
//! the rest locally with `--classifier` (or the variable, or the config key).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::common::{bin, output, Output};
use crate::fake::{command, config, ok_openai, parquet_rows, serve};

/// The task words a model can learn.
const TASKS: [&str; 8] = [
    "code",
    "summarization",
    "translation",
    "classification",
    "extraction",
    "creative",
    "reasoning",
    "chat",
];

/// A team's own dialect: each task is asked for with its in-house command words, which
/// mean nothing to a classifier trained on other people's prompts.
const CUES: [[&str; 3]; 8] = [
    ["kestrel", "bramble", "quill"],
    ["marigold", "tundra", "ferrule"],
    ["oxbow", "lantern", "pewter"],
    ["saffron", "gimbal", "heron"],
    ["cobalt", "thistle", "wicket"],
    ["juniper", "anvil", "plover"],
    ["sorrel", "caliper", "osprey"],
    ["tamarind", "spindle", "wren"],
];

const FILLER: [&str; 24] = [
    "the",
    "north",
    "account",
    "batch",
    "for",
    "ledger",
    "harbor",
    "copper",
    "velvet",
    "signal",
    "orchard",
    "please",
    "today",
    "with",
    "team",
    "record",
    "window",
    "basket",
    "river",
    "an",
    "quarterly",
    "customer",
    "note",
    "and",
];

/// `n` records, the same every time: record `i` has task `TASKS[i % 8]`, one of its
/// cue words and 6–11 filler words, and its id in the text (so the fake LLM
/// classifier can look its label up).
fn workload(n: usize, first: usize) -> Vec<(String, String, &'static str)> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ first as u64;
    let mut next = move |m: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % m as u64) as usize
    };
    (first..first + n)
        .map(|i| {
            let t = i % TASKS.len();
            let mut words: Vec<&str> = (0..6 + next(6)).map(|_| FILLER[next(24)]).collect();
            let at = next(words.len() + 1);
            words.insert(at, CUES[t][next(3)]);
            let id = format!("rec-{i}");
            (id.clone(), format!("{id}: {}", words.join(" ")), TASKS[t])
        })
        .collect()
}

fn jsonl(records: &[(String, String, &str)]) -> String {
    records
        .iter()
        .map(|(id, prompt, _)| format!("{}\n", serde_json::json!({"id": id, "prompt": prompt})))
        .collect()
}

fn classify(input: &Path, extra: &[&str], env: Option<&str>) -> Output {
    let mut c = bin();
    c.args(["classify", input.to_str().unwrap()]).args(extra);
    if let Some(model) = env {
        c.env("SWITCHYARD_CLASSIFIER", model);
    }
    output(&mut c)
}

/// The share of `records` that `o` (classify's output) got right.
fn right(o: &Output, records: &[(String, String, &str)]) -> f64 {
    assert_eq!(o.code, 0, "{}", o.stderr);
    let want: HashMap<&str, &str> = records.iter().map(|(id, _, t)| (id.as_str(), *t)).collect();
    let lines: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len());
    let ok = lines
        .iter()
        .filter(|l| Some(want[l["id"].as_str().unwrap()]) == l["task"].as_str())
        .count();
    ok as f64 / records.len() as f64
}

#[test]
fn a_run_with_the_llm_classifier_distils_into_a_local_model_that_routes_the_rest() {
    let sample = workload(320, 0);
    let rest = workload(320, 10_000);
    let labels: Arc<HashMap<String, &'static str>> = Arc::new(
        sample
            .iter()
            .map(|(id, _, t)| (format!("{id}:"), *t))
            .collect(),
    );
    let server = {
        let labels = labels.clone();
        serve(Arc::new(move |_, req| {
            let p = req.prompt();
            match p.starts_with("Classify the request below.") {
                true => {
                    let word = labels
                        .iter()
                        .find(|(id, _)| p.contains(id.as_str()))
                        .map_or("chat", |(_, t)| t);
                    ok_openai(word)
                }
                false => ok_openai("fine"),
            }
        }))
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), server.port, "openai");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[classifier.llm]\nenabled = true\nmodel = \"cheap\"\nscope = \"all\"\n");
    std::fs::write(&cfg, &text).unwrap();

    // 1. The sample, with the LLM classifier asked about every record.
    let sample_in = dir.path().join("sample.jsonl");
    std::fs::write(&sample_in, jsonl(&sample)).unwrap();
    let out = dir.path().join("sample-run");
    let o = output(command(&cfg, &sample_in).args([
        "--out",
        out.to_str().unwrap(),
        "--concurrency",
        "16",
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let results = out.join("results.parquet");
    let rows = parquet_rows(&results);
    assert_eq!(rows.len(), sample.len());
    assert!(
        rows.iter().all(|r| r["classified_by"] == "llm"),
        "{:?}",
        rows[0]
    );

    // 2. Train on what it decided.
    let model = dir.path().join("team.model");
    let o = output(bin().args([
        "train",
        sample_in.to_str().unwrap(),
        "--labels",
        results.to_str().unwrap(),
        "--only-llm",
        "--out",
        model.to_str().unwrap(),
    ]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(&format!(
            "train: {}: 320 labelled records (",
            sample_in.display()
        )),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("  held out: "), "{}", o.stdout);
    assert!(model.exists());

    // 3. The rest of the workload (records it never saw), classified locally.
    let rest_in = dir.path().join("rest.jsonl");
    std::fs::write(&rest_in, jsonl(&rest)).unwrap();
    let built_in = right(&classify(&rest_in, &[], None), &rest);
    let by_flag = classify(&rest_in, &["--classifier", model.to_str().unwrap()], None);
    let trained = right(&by_flag, &rest);
    assert!(
        trained >= 0.9,
        "the trained model got {trained:.3} of the rest right (built-in {built_in:.3})"
    );
    assert!(
        trained > built_in + 0.3,
        "trained {trained:.3}, built-in {built_in:.3}: the workload's dialect was not learnt"
    );
    // The variable and the config key load the same model.
    let by_env = classify(&rest_in, &[], Some(model.to_str().unwrap()));
    assert_eq!(by_env.stdout, by_flag.stdout);
    let with_key = dir.path().join("with-model.toml");
    std::fs::write(
        &with_key,
        format!("[classifier]\nmodel = {:?}\n", model.to_str().unwrap()),
    )
    .unwrap();
    let by_config = classify(&rest_in, &["--config", with_key.to_str().unwrap()], None);
    assert_eq!(by_config.stdout, by_flag.stdout);
}

#[test]
fn train_refuses_too_few_labels_and_a_bad_model_file_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let few = dir.path().join("few.jsonl");
    let records: String = workload(30, 0)
        .iter()
        .map(|(id, p, t)| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "prompt": p, "task": t})
            )
        })
        .collect();
    std::fs::write(&few, records).unwrap();
    let model = dir.path().join("m.model");
    let o = output(bin().args([
        "train",
        few.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "{}: 30 labelled records; at least 40 are needed",
            few.display()
        )),
        "{}",
        o.stderr
    );
    assert!(!model.exists());

    let junk = dir.path().join("junk.model");
    std::fs::write(&junk, b"not a model").unwrap();
    let o = classify(&few, &["--classifier", junk.to_str().unwrap()], None);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains(&junk.display().to_string()),
        "{}",
        o.stderr
    );
}
