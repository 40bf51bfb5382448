//! Measures the local classifier on labelled prompts: `shared/eval/` (MT-bench and
//! Vicuna bench, categories mapped to tasks as in its README) or any JSONL whose lines
//! carry `prompt` (or `turns`) and `task` (or `category`).
//!
//!     cargo run --release --example eval_classifier -- ../shared/eval/*.jsonl fixtures/classifier_labelled.jsonl
//!
//! Prints accuracy per file and every miss, so a rule change can be judged on data.

use switchyard::classify::classify;
use switchyard::config::{Config, Tokenizer};
use switchyard::record::{Job, Task};
use switchyard::tokens::count_messages;

/// Eval-set category -> task (shared/eval/README.md); `None`: debatable, not scored.
fn mapped(category: &str) -> Option<Task> {
    Some(match category {
        "writing" | "roleplay" => Task::Creative,
        "reasoning" | "math" | "fermi" => Task::Reasoning,
        "coding" => Task::Code,
        "extraction" => Task::Extraction,
        "generic" | "knowledge" => Task::Chat,
        _ => return None,
    })
}

fn main() {
    let cfg = Config::embedded();
    let mut grand = (0usize, 0usize);
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (mut ok, mut scored) = (0usize, 0usize);
        let mut misses = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            let prompt = v["prompt"]
                .as_str()
                .or_else(|| v["turns"][0].as_str())
                .unwrap_or_default();
            let want = match (v["task"].as_str(), v["category"].as_str()) {
                (Some(t), _) => t.parse::<Task>().ok(),
                (None, Some(c)) => mapped(c),
                _ => None,
            };
            let Some(want) = want else { continue };
            let job = Job::from_prompt("eval", prompt);
            let tokens = count_messages(Tokenizer::O200k, &job.messages);
            let d = classify(&job, tokens, &cfg.classifier);
            scored += 1;
            if d.task == want {
                ok += 1;
            } else {
                let short: String = prompt.chars().take(90).collect();
                misses.push(format!(
                    "  want {want:<14} got {:<14} {:<28} {short}",
                    d.task.as_str(),
                    d.reason.to_string()
                ));
            }
        }
        println!(
            "{path}: {ok}/{scored} = {:.1}%",
            100.0 * ok as f64 / scored.max(1) as f64
        );
        for m in misses {
            println!("{m}");
        }
        grand.0 += ok;
        grand.1 += scored;
    }
    println!(
        "all: {}/{} = {:.1}%",
        grand.0,
        grand.1,
        100.0 * grand.0 as f64 / grand.1.max(1) as f64
    );
}
