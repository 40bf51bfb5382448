//! `switchyard train`: fit the local classifier to a workload's own labelled records —
//! their `task` field, or the tasks a run decided (`--labels RESULTS.parquet`, joined
//! by id; `--only-llm` keeps the LLM classifier's decisions). A share of the records
//! is held out: the model is measured on it (accuracy, per-task confusion, how many
//! decisions are unsure) and calibrated on another slice it never trained on.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context, Result};

use crate::classify::model::{TaskModel, CLASSES};
use crate::classify::train::{evaluate, fit, Example, Options};
use crate::classify::ClassifiedBy;
use crate::cli::TrainArgs;
use crate::exit::Exit;
use crate::input::parse::parse_record;
use crate::input::Input;
use crate::money::group_thousands;
use crate::record::Task;

/// Fewer labelled records than this cannot make a model worth shipping.
const MIN_RECORDS: usize = 40;
/// The slice (after the held-out share) the temperature is fitted on.
const CALIBRATION_SHARE: f64 = 0.1;

pub fn train(args: TrainArgs) -> Result<Exit> {
    let cfg = super::load_config(&args.config.overrides())?;
    let input = Input::from_arg(&args.input);
    let labels = match &args.labels {
        Some(path) => Some(labels_from_results(path, args.only_llm)?),
        None => None,
    };
    let (mut train, mut calibrate, mut held_out) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_task: BTreeMap<Task, u64> = BTreeMap::new();
    let (mut invalid, mut unlabelled, mut not_learnt) = (0u64, 0u64, 0u64);
    let mut source = input.open(cfg.max_line_bytes)?;
    while let Some(batch) = source.next_batch()? {
        for (position, bytes, problem) in batch.iter() {
            let parsed = parse_record(bytes, position.number(), cfg.batch_model);
            let job = match (parsed.job, problem) {
                (Ok(job), None) => job,
                _ => {
                    invalid += 1;
                    continue;
                }
            };
            let task = match &labels {
                Some(by_id) => by_id.get(&job.id).copied(),
                None => job.task,
            };
            let Some(task) = task else {
                unlabelled += 1;
                continue;
            };
            let Some(example) = Example::new(&job, task) else {
                not_learnt += 1;
                continue;
            };
            *per_task.entry(task).or_default() += 1;
            // The split follows the id, so the same records are held out every time.
            let slot = (xxhash_rust::xxh3::xxh3_64(job.id.as_bytes()) % 10_000) as f64 / 10_000.0;
            if slot < args.holdout {
                held_out.push(example);
            } else if slot < args.holdout + CALIBRATION_SHARE {
                calibrate.push(example);
            } else {
                train.push(example);
            }
        }
    }
    let labelled = train.len() + calibrate.len() + held_out.len();
    if labelled < MIN_RECORDS {
        bail!(
            "{}: {labelled} labelled records; at least {MIN_RECORDS} are needed ({} without a task{}, {invalid} invalid)",
            input.label(),
            unlabelled,
            if labels.is_some() { " in --labels" } else { "" }
        );
    }
    let trained = serde_json::json!({
        "input": input.label(),
        "records": labelled,
        "per_task": per_task.iter().map(|(t, n)| (t.as_str(), n)).collect::<BTreeMap<_, _>>(),
        "trained_on": train.len(),
        "calibrated_on": calibrate.len(),
        "held_out": held_out.len(),
    });
    let options = Options {
        unsure_share: args.unsure_share as f32,
        ..Options::default()
    };
    let model = fit(&train, &calibrate, &options, trained);
    let ev = evaluate(&model, &held_out);
    let model = with_held_out(model, &ev);
    std::fs::write(&args.out, model.to_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;

    println!(
        "train: {}: {} labelled records ({})",
        input.label(),
        group_thousands(labelled as u64),
        per_task
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if invalid + unlabelled + not_learnt > 0 {
        println!(
            "  skipped: {invalid} invalid, {unlabelled} without a task, {not_learnt} with a task the text does not decide (vision, agent, rag)"
        );
    }
    println!(
        "  trained on {}, calibrated on {}, held out {}",
        train.len(),
        calibrate.len(),
        held_out.len()
    );
    let n = ev.confusion.total().max(1);
    println!(
        "  held out: {:.1}% right ({:.1}% macro over the tasks present); {:.1}% unsure (confidence below {:.2}); with an LLM classifier that is right on those: {:.1}%",
        100.0 * ev.confusion.accuracy(),
        100.0 * ev.confusion.macro_accuracy(),
        100.0 * f64::from(ev.unsure) / f64::from(n),
        model.header.unsure_below,
        100.0 * f64::from(ev.right_with_llm) / f64::from(n),
    );
    println!("{}", ev.confusion.render());
    println!(
        "wrote {} ({:.1} MB); use it with --classifier {} or [classifier] model",
        args.out.display(),
        model.to_bytes().len() as f64 / 1e6,
        args.out.display()
    );
    Ok(Exit::Ok)
}

/// The model with its held-out measurements in its metadata.
fn with_held_out(mut model: TaskModel, ev: &crate::classify::train::Evaluation) -> TaskModel {
    let n = f64::from(ev.confusion.total().max(1));
    model.header.trained["held_out_accuracy"] = serde_json::json!(ev.confusion.accuracy());
    model.header.trained["held_out_macro"] = serde_json::json!(ev.confusion.macro_accuracy());
    model.header.trained["held_out_unsure_share"] = serde_json::json!(f64::from(ev.unsure) / n);
    TaskModel::from_bytes(&model.to_bytes()).expect("a model reads what it wrote")
}

/// Task by record id from a run's results: its `task` column (only the LLM
/// classifier's decisions with `only_llm`), for the tasks a model can learn.
fn labels_from_results(path: &std::path::Path, only_llm: bool) -> Result<HashMap<String, Task>> {
    let rows = crate::output::parquet::read_labels(path)?;
    let llm = ClassifiedBy::Llm.as_str();
    Ok(rows
        .into_iter()
        .filter(|l| !only_llm || l.classified_by.as_deref() == Some(llm))
        .filter_map(|l| {
            let task: Task = l.task?.parse().ok()?;
            CLASSES.contains(&task).then_some((l.id, task))
        })
        .collect())
}
