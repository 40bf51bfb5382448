//! Measures the local classifier on labelled prompts: `shared/eval/` (MT-bench and
//! Vicuna bench, categories mapped to tasks as in its README) or any JSONL whose lines
//! carry `prompt` (or `turns`) and `task` (or `category`).
//!
//!     cargo run --release --example eval_classifier -- ../shared/eval/*.jsonl
//!     cargo run --release --example eval_classifier -- --model my.model data.jsonl
//!
//! Prints, per file and for all together: accuracy, macro accuracy over the tasks
//! present, the confusion table, the share of decisions below the unsure threshold,
//! and the accuracy an always-right LLM classifier asked about those would reach.
//! `--misses` also lists every wrong decision.

use std::sync::Arc;

use switchyard::classify::model::{TaskModel, CLASSES};
use switchyard::classify::train::Confusion;
use switchyard::classify::{classify, llm};
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

#[derive(Default)]
struct Score {
    confusion: Confusion,
    unsure: u32,
    right_with_llm: u32,
}

impl Score {
    fn print(&self, name: &str) {
        let n = self.confusion.total().max(1);
        println!(
            "{name}: {} prompts, {:.1}% right, {:.1}% macro; {:.1}% unsure, {:.1}% right with an always-right LLM on those",
            self.confusion.total(),
            100.0 * self.confusion.accuracy(),
            100.0 * self.confusion.macro_accuracy(),
            100.0 * f64::from(self.unsure) / f64::from(n),
            100.0 * f64::from(self.right_with_llm) / f64::from(n),
        );
    }
}

fn main() {
    let mut cfg = Config::embedded();
    cfg.classifier.llm.enabled = true;
    let mut files = Vec::new();
    let mut misses_wanted = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => {
                let path = args.next().expect("--model FILE");
                let m = TaskModel::load(std::path::Path::new(&path)).expect("a model file");
                cfg.classifier.model = Some(Arc::new(m));
            }
            "--misses" => misses_wanted = true,
            _ => files.push(a),
        }
    }
    let index = |t: Task| CLASSES.iter().position(|c| *c == t);
    let mut all = Score::default();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut score = Score::default();
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
            let Some((want, w)) = want.and_then(|t| Some((t, index(t)?))) else {
                continue;
            };
            let job = Job::from_prompt("eval", prompt);
            let tokens = count_messages(Tokenizer::O200k, &job.messages);
            let d = classify(&job, tokens, &cfg.classifier);
            let got = index(d.task).unwrap_or(0);
            let unsure = llm::wants(&d, &cfg.classifier);
            for s in [&mut score, &mut all] {
                s.confusion.add(w, got);
                s.unsure += u32::from(unsure);
                s.right_with_llm += u32::from(unsure || got == w);
            }
            if got != w {
                let short: String = prompt.chars().take(90).collect();
                misses.push(format!(
                    "  want {want:<14} got {:<14} {:.2}  {}",
                    d.task.as_str(),
                    d.confidence,
                    short.replace('\n', " ")
                ));
            }
        }
        score.print(&path);
        print!("{}", score.confusion.render());
        if misses_wanted {
            for m in misses {
                println!("{m}");
            }
        }
    }
    all.print("all");
}
