//! Fitting the local classifier to labelled records: multinomial logistic regression
//! over [`model::features`], by AdaGrad with classes weighted to count alike, then a
//! temperature fitted on held-out records so that probabilities are calibrated, and
//! the confidence below which a decision counts as unsure. Deterministic: the same
//! records in the same order give the same model, byte for byte.

use super::model::{self, feature_value, softmax, Header, TaskModel, BUCKETS, CLASSES, K};
use crate::record::Task;

/// How training runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub epochs: u32,
    pub learning_rate: f32,
    /// L2 shrinkage applied to the weights a record touches, divided by the number of
    /// training records: a small workload needs it strong, or its rare words and word
    /// pairs are memorised instead of the words that decide its tasks; thousands of
    /// records need little.
    pub l2: f32,
    /// The share of records an unsure decision should cover at most (the threshold is
    /// set where this share of held-out records falls below it).
    pub unsure_share: f32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            epochs: 12,
            learning_rate: 0.5,
            l2: 1.0,
            unsure_share: 0.15,
        }
    }
}

/// One labelled record, as features.
pub struct Example {
    pub features: Vec<u32>,
    pub class: usize,
}

impl Example {
    pub fn new(job: &crate::record::Job, task: Task) -> Option<Example> {
        let class = CLASSES.iter().position(|t| *t == task)?;
        let mut features = Vec::new();
        model::features(job, &mut features);
        Some(Example { features, class })
    }
}

/// Trains on `train`; calibrates on `calibrate` (records the fit never saw).
pub fn fit(
    train: &[Example],
    calibrate: &[Example],
    o: &Options,
    trained: serde_json::Value,
) -> TaskModel {
    let mut w = vec![0f32; BUCKETS * K];
    let mut g2 = vec![1e-6f32; BUCKETS * K];
    let mut bias = [0f32; K];
    let mut bias_g2 = [1e-6f32; K];
    // Each class weighs as much as any other, however many records it has.
    let mut counts = [0usize; K];
    for e in train {
        counts[e.class] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let class_weight: [f32; K] = std::array::from_fn(|k| {
        if counts[k] == 0 {
            0.0
        } else {
            train.len() as f32 / (present as f32 * counts[k] as f32)
        }
    });
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let l2 = o.l2 / train.len().max(1) as f32;
    for _ in 0..o.epochs {
        // Fisher-Yates with a fixed-seed xorshift: the same order every time.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        for &i in &order {
            let e = &train[i];
            let x = feature_value(e.features.len());
            let logits: [f32; K] = std::array::from_fn(|k| {
                bias[k]
                    + e.features
                        .iter()
                        .map(|&f| w[f as usize * K + k])
                        .sum::<f32>()
                        * x
            });
            let p = softmax(&logits, 1.0);
            let cw = class_weight[e.class];
            for k in 0..K {
                let g = (p[k] - f32::from(u8::from(k == e.class))) * cw;
                bias_g2[k] += g * g;
                bias[k] -= o.learning_rate * g / bias_g2[k].sqrt();
                for &f in &e.features {
                    let at = f as usize * K + k;
                    let gw = g * x + l2 * w[at];
                    g2[at] += gw * gw;
                    w[at] -= o.learning_rate * gw / g2[at].sqrt();
                }
            }
        }
    }
    let header = Header {
        classes: CLASSES.to_vec(),
        bits: model::BITS,
        scale: 0.0,
        bias: bias.to_vec(),
        temperature: 1.0,
        unsure_below: 0.0,
        trained,
    };
    let mut m = TaskModel::quantize(&w, header);
    let logits: Vec<([f32; K], usize)> = calibrate
        .iter()
        .map(|e| (m.logits(&e.features), e.class))
        .collect();
    let temperature = fit_temperature(&logits);
    let mut confidences: Vec<f32> = logits
        .iter()
        .map(|(l, _)| softmax(l, temperature).iter().fold(0f32, |a, &b| a.max(b)))
        .collect();
    confidences.sort_by(f32::total_cmp);
    let unsure_below = match confidences.len() {
        0 => 0.5,
        n => confidences[((n as f32 * o.unsure_share) as usize).min(n - 1)],
    };
    m.header.temperature = temperature;
    m.header.unsure_below = unsure_below;
    // Quantize again so the file's id covers the calibration too.
    let bytes = m.to_bytes();
    TaskModel::from_bytes(&bytes).expect("a model reads what it wrote")
}

/// The temperature with the least negative log-likelihood on held-out records (a grid
/// of 0.25 to 8, then refined).
fn fit_temperature(held_out: &[([f32; K], usize)]) -> f32 {
    if held_out.is_empty() {
        return 1.0;
    }
    let nll = |t: f32| -> f64 {
        held_out
            .iter()
            .map(|(l, y)| -(f64::from(softmax(l, t)[*y].max(1e-12))).ln())
            .sum()
    };
    let mut best = (1.0f32, nll(1.0));
    let mut t = 0.25f32;
    while t <= 8.0 {
        let v = nll(t);
        if v < best.1 {
            best = (t, v);
        }
        t *= 1.1;
    }
    best.0
}

/// Right and wrong decisions on labelled records, by true class × predicted class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Confusion {
    pub counts: [[u32; K]; K],
}

impl Confusion {
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let right: u32 = (0..K).map(|k| self.counts[k][k]).sum();
        f64::from(right) / f64::from(self.total().max(1))
    }

    /// The mean of per-class recall over the classes present.
    pub fn macro_accuracy(&self) -> f64 {
        let recalls: Vec<f64> = (0..K)
            .filter_map(|k| {
                let n: u32 = self.counts[k].iter().sum();
                (n > 0).then(|| f64::from(self.counts[k][k]) / f64::from(n))
            })
            .collect();
        recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
    }

    /// The table: a row per true class, a column per predicted one, and each row's
    /// recall.
    pub fn render(&self) -> String {
        let short = |t: Task| t.as_str().chars().take(6).collect::<String>();
        let mut s = format!("{:>15}", "true \\ predicted");
        for t in CLASSES {
            s.push_str(&format!(" {:>6}", short(t)));
        }
        s.push_str("  right\n");
        for (k, t) in CLASSES.iter().enumerate() {
            let n: u32 = self.counts[k].iter().sum();
            if n == 0 {
                continue;
            }
            s.push_str(&format!("{:>15}", t.as_str()));
            for v in self.counts[k] {
                s.push_str(&format!(" {v:>6}"));
            }
            s.push_str(&format!(
                "  {:>4.0}%\n",
                100.0 * f64::from(self.counts[k][k]) / f64::from(n)
            ));
        }
        s
    }
}

/// What a model does on labelled records: the confusion of its own decisions, and how
/// an always-right LLM classifier asked about the unsure ones would do.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub confusion: Confusion,
    /// Records below the model's unsure threshold.
    pub unsure: u32,
    /// Right answers when every unsure record gets its true label.
    pub right_with_llm: u32,
}

pub fn evaluate(model: &TaskModel, examples: &[Example]) -> Evaluation {
    let mut ev = Evaluation::default();
    for e in examples {
        let p = model.probabilities(&e.features);
        let (k, conf) = p
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |b, (k, v)| if v > b.1 { (k, v) } else { b });
        ev.confusion.add(e.class, k);
        let unsure = conf < model.header.unsure_below;
        ev.unsure += u32::from(unsure);
        ev.right_with_llm += u32::from(unsure || k == e.class);
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Job;

    fn ex(text: &str, task: Task) -> Example {
        Example::new(&Job::from_prompt("x", text), task).unwrap()
    }

    #[test]
    fn learns_separable_tasks_deterministically_and_calibrates() {
        let train: Vec<Example> = (0..40)
            .flat_map(|i| {
                [
                    ex(
                        &format!("Translate sentence {i} into German please"),
                        Task::Translation,
                    ),
                    ex(
                        &format!("Write a short poem about the harbour {i}"),
                        Task::Creative,
                    ),
                    ex(
                        &format!("Fix the bug in this Python function number {i}"),
                        Task::Code,
                    ),
                ]
            })
            .collect();
        let held = vec![
            ex("Translate this note into German", Task::Translation),
            ex("Write a poem about the sea", Task::Creative),
            ex("Fix this Python function", Task::Code),
        ];
        let a = fit(&train, &held, &Options::default(), serde_json::Value::Null);
        let b = fit(&train, &held, &Options::default(), serde_json::Value::Null);
        assert_eq!(a.to_bytes(), b.to_bytes(), "deterministic");
        let ev = evaluate(&a, &held);
        assert_eq!(ev.confusion.accuracy(), 1.0, "{}", ev.confusion.render());
        assert!(a.header.temperature > 0.0);
        let p = a.predict(
            &Job::from_prompt("y", "Translate the menu into German"),
            &mut Vec::new(),
        );
        assert_eq!(p.task, Task::Translation);
        assert!(p.confidence > 0.5, "{p:?}");
    }

    #[test]
    fn the_confusion_counts_right_and_macro() {
        let mut c = Confusion::default();
        c.add(0, 0);
        c.add(0, 0);
        c.add(0, 1);
        c.add(1, 1);
        assert!((c.accuracy() - 0.75).abs() < 1e-9);
        assert!((c.macro_accuracy() - (2.0 / 3.0 + 1.0) / 2.0).abs() < 1e-9);
        assert!(c.render().contains("chat"), "{}", c.render());
    }
}
