//! Chooses the local classifier's training options by cross-validation on the training
//! records alone (never on a test set): k folds by id, each option set fitted on k-1
//! and scored on the fold left out. Prints mean accuracy and macro accuracy per set.
//!
//!     cargo run --release --example tune_classifier -- models/data/train.jsonl

use switchyard::classify::train::{evaluate, fit, Example, Options};
use switchyard::record::{Job, Task};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: tune_classifier TRAIN.jsonl");
    let text = std::fs::read_to_string(&path).expect("the training file");
    let mut folds: Vec<Vec<Example>> = (0..5).map(|_| Vec::new()).collect();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let (Some(prompt), Some(task), Some(id)) =
            (v["prompt"].as_str(), v["task"].as_str(), v["id"].as_str())
        else {
            continue;
        };
        let task: Task = task.parse().expect("a task");
        let Some(e) = Example::new(&Job::from_prompt(id, prompt), task) else {
            continue;
        };
        folds[(xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % 5) as usize].push(e);
    }
    for epochs in [6, 12, 20] {
        for learning_rate in [0.2, 0.5, 1.0] {
            for l2 in [0.25, 1.0, 4.0] {
                let o = Options {
                    epochs,
                    learning_rate,
                    l2,
                    ..Options::default()
                };
                let (mut acc, mut mac) = (0.0, 0.0);
                for k in 0..5 {
                    let train: Vec<&Example> =
                        (0..5).filter(|&j| j != k).flat_map(|j| &folds[j]).collect();
                    let train: Vec<Example> = train
                        .into_iter()
                        .map(|e| Example {
                            features: e.features.clone(),
                            class: e.class,
                        })
                        .collect();
                    let m = fit(&train, &folds[(k + 1) % 5], &o, serde_json::Value::Null);
                    let ev = evaluate(&m, &folds[k]);
                    acc += ev.confusion.accuracy() / 5.0;
                    mac += ev.confusion.macro_accuracy() / 5.0;
                }
                println!("epochs {epochs:>2} lr {learning_rate:<4} l2 {l2:<6}: {:.1}% right, {:.1}% macro", acc * 100.0, mac * 100.0);
            }
        }
    }
}
