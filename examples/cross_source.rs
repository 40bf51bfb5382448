//! Accuracy across sources: for each source of a labelled file, a model is trained on
//! every other source and measured on that one (it never saw a record of it). Shows
//! how the local classifier does on prompts unlike the ones it learned from.
//!
//!     cargo run --release --example cross_source -- models/data/train.jsonl

use std::collections::BTreeMap;

use switchyard::classify::train::{evaluate, fit, Example, Options};
use switchyard::record::{Job, Task};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: cross_source LABELLED.jsonl");
    let text = std::fs::read_to_string(&path).expect("the labelled file");
    let mut by_source: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let (Some(prompt), Some(task), Some(source)) = (
            v["prompt"].as_str(),
            v["task"].as_str(),
            v["source"].as_str(),
        ) else {
            continue;
        };
        let task: Task = task.parse().expect("a task");
        if let Some(e) = Example::new(&Job::from_prompt("x", prompt), task) {
            by_source.entry(source.to_string()).or_default().push(e);
        }
    }
    println!(
        "{:<28} {:>7} {:>8} {:>8} {:>8} {:>10}",
        "held-out source", "records", "right", "macro", "unsure", "with LLM"
    );
    for (held, test) in &by_source {
        let train: Vec<Example> = by_source
            .iter()
            .filter(|(s, _)| *s != held)
            .flat_map(|(_, es)| {
                es.iter().map(|e| Example {
                    features: e.features.clone(),
                    class: e.class,
                })
            })
            .collect();
        // Calibrate on every 10th training record, train on the rest.
        let (mut cal, mut fit_on) = (Vec::new(), Vec::new());
        for (i, e) in train.into_iter().enumerate() {
            match i % 10 {
                0 => cal.push(e),
                _ => fit_on.push(e),
            }
        }
        let m = fit(&fit_on, &cal, &Options::default(), serde_json::Value::Null);
        let ev = evaluate(&m, test);
        let n = f64::from(ev.confusion.total().max(1));
        println!(
            "{held:<28} {:>7} {:>7.1}% {:>7.1}% {:>7.1}% {:>9.1}%",
            test.len(),
            100.0 * ev.confusion.accuracy(),
            100.0 * ev.confusion.macro_accuracy(),
            100.0 * f64::from(ev.unsure) / n,
            100.0 * f64::from(ev.right_with_llm) / n
        );
    }
}
