//! Escalation checks on an answer: pure functions from (record, task, answer) to the
//! first reason the answer is weak, if any. Each check can be switched off in config
//! (`[checks]`); `run` re-asks a stronger model when one fires.

use crate::config::ChecksConfig;
use crate::record::{Job, Task};

/// Why an answer is escalated. `as_str` is what results record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weakness {
    Empty,
    Truncated,
    Refusal,
    CodeStub,
    Hedging,
    LabelOutsideSet,
    InvalidJson,
}

impl Weakness {
    pub fn as_str(self) -> &'static str {
        match self {
            Weakness::Empty => "empty",
            Weakness::Truncated => "truncated",
            Weakness::Refusal => "refusal",
            Weakness::CodeStub => "code_stub",
            Weakness::Hedging => "hedging",
            Weakness::LabelOutsideSet => "label_outside_set",
            Weakness::InvalidJson => "invalid_json",
        }
    }
}

const REFUSALS: &[&str] = &[
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "as an ai language model, i cannot",
];

const HEDGES: &[&str] = &[
    "not entirely sure",
    "might be wrong",
    "i'm not sure",
    "i am not sure",
    "i may be mistaken",
    "i could be wrong",
];

/// Markers of an unfinished code answer, matched case-sensitively on code lines.
const STUBS: &[&str] = &[
    "TODO",
    "FIXME",
    "unimplemented!",
    "todo!()",
    "NotImplementedError",
    "your code here",
    "placeholder",
];

/// The first weakness of `answer`, or `None` when it passes every enabled check.
pub fn check(
    job: &Job,
    task: Task,
    answer: &str,
    finish_reason: Option<&str>,
    on: &ChecksConfig,
) -> Option<Weakness> {
    let trimmed = answer.trim();
    if on.empty && trimmed.is_empty() {
        return Some(Weakness::Empty);
    }
    if on.truncated && finish_reason == Some("length") {
        return Some(Weakness::Truncated);
    }
    let head = trimmed.chars().take(200).collect::<String>().to_lowercase();
    if on.refusal && REFUSALS.iter().any(|r| head.contains(r)) {
        return Some(Weakness::Refusal);
    }
    // By the answer, whatever task the record was classified as: a stub in any code
    // block (or, for a code task, in an answer with no fences), hedging anywhere.
    if on.code_stub && has_stub(trimmed, task == Task::Code) {
        return Some(Weakness::CodeStub);
    }
    if on.hedging {
        let lower = trimmed.to_lowercase();
        if HEDGES.iter().any(|h| lower.contains(h)) {
            return Some(Weakness::Hedging);
        }
    }
    if on.labels {
        if let Some(labels) = job.labels.as_ref().filter(|l| !l.is_empty()) {
            let got = trimmed.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace());
            if !labels.iter().any(|l| l.trim().eq_ignore_ascii_case(got)) {
                return Some(Weakness::LabelOutsideSet);
            }
        }
    }
    if on.json
        && wants_json(job)
        && serde_json::from_str::<serde_json::Value>(strip_fence(trimmed)).is_err()
    {
        return Some(Weakness::InvalidJson);
    }
    None
}

/// A stub marker, a bare `pass` body, or `...` as a body, in any of the answer's code
/// blocks; an answer with no fences is all code when `unfenced_is_code`.
fn has_stub(answer: &str, unfenced_is_code: bool) -> bool {
    let stub = |code: &str| {
        code.lines().any(|line| {
            let t = line.trim();
            STUBS.iter().any(|s| t.contains(s))
                || t == "pass"
                || t == "..."
                || t == "// ..."
                || t == "# ..."
        })
    };
    let mut blocks = fenced_blocks(answer).peekable();
    match blocks.peek() {
        None => unfenced_is_code && stub(answer),
        Some(_) => blocks.any(stub),
    }
}

/// The text inside each ``` fence (an unclosed last fence runs to the end).
fn fenced_blocks(answer: &str) -> impl Iterator<Item = &str> {
    let mut rest = answer;
    std::iter::from_fn(move || {
        let start = rest.find("```")?;
        let after = &rest[start + 3..];
        let body = &after[after.find('\n').map_or(0, |i| i + 1)..];
        let (block, next) = match body.find("```") {
            Some(end) => (&body[..end], &body[end + 3..]),
            None => (body, ""),
        };
        rest = next;
        Some(block)
    })
}

/// The text inside the first ``` fence, if any.
fn fenced_code(answer: &str) -> Option<&str> {
    fenced_blocks(answer).next()
}

/// JSON answers often come fenced as ```json ... ```; the fence is not an error.
fn strip_fence(answer: &str) -> &str {
    if answer.starts_with("```") {
        fenced_code(answer).unwrap_or(answer).trim()
    } else {
        answer
    }
}

fn wants_json(job: &Job) -> bool {
    job.response_format
        .as_ref()
        .and_then(|r| r.get("type"))
        .and_then(|t| t.as_str())
        .is_some_and(|t| t == "json_object" || t == "json_schema")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job::from_prompt("1", "x")
    }

    /// Every check on, as the embedded default has them.
    fn all_on() -> ChecksConfig {
        crate::config::Config::embedded().checks
    }

    fn weak(j: &Job, task: Task, answer: &str, finish: Option<&str>) -> Option<&'static str> {
        check(j, task, answer, finish, &all_on()).map(Weakness::as_str)
    }

    #[test]
    fn each_check_fires_and_passes() {
        let j = job();
        assert_eq!(weak(&j, Task::Chat, "  \n", None), Some("empty"));
        assert_eq!(
            weak(&j, Task::Chat, "Paris is", Some("length")),
            Some("truncated")
        );
        assert_eq!(
            weak(
                &j,
                Task::Chat,
                "I'm sorry, but I can't help with that.",
                None
            ),
            Some("refusal")
        );
        assert_eq!(weak(&j, Task::Chat, "Paris.", Some("stop")), None);

        let stub = "```python\ndef parse(s):\n    # TODO: handle time zones\n    pass\n```";
        assert_eq!(weak(&j, Task::Code, stub, None), Some("code_stub"));
        assert_eq!(
            weak(
                &j,
                Task::Code,
                "```rust\nfn f() { unimplemented!() }\n```",
                None
            ),
            Some("code_stub")
        );
        assert_eq!(
            weak(
                &j,
                Task::Code,
                "```python\ndef add(a, b):\n    return a + b\n```",
                None
            ),
            None
        );
        assert_eq!(
            weak(&j, Task::Chat, "TODO list: buy milk", None),
            None,
            "prose is not code"
        );
        // By the answer, not the task it was classified as.
        for task in [Task::Chat, Task::Summarization, Task::Creative] {
            assert_eq!(weak(&j, task, stub, None), Some("code_stub"), "{task}");
            assert_eq!(
                weak(
                    &j,
                    task,
                    "Here:\n```js\nok()\n```\nand\n```py\nraise NotImplementedError\n```",
                    None
                ),
                Some("code_stub"),
                "a stub in the second block: {task}"
            );
            assert_eq!(
                weak(&j, task, "It is 42, but I might be wrong.", None),
                Some("hedging"),
                "{task}"
            );
        }

        assert_eq!(
            weak(&j, Task::Reasoning, "It is 42, but I might be wrong.", None),
            Some("hedging")
        );
        assert_eq!(weak(&j, Task::Reasoning, "It is 42.", None), None);

        let mut l = job();
        l.labels = Some(vec!["positive".into(), "negative".into()]);
        assert_eq!(weak(&l, Task::Classification, "Positive.", None), None);
        assert_eq!(
            weak(&l, Task::Classification, "mixed", None),
            Some("label_outside_set")
        );

        let mut js = job();
        js.response_format = Some(serde_json::json!({"type": "json_object"}));
        assert_eq!(weak(&js, Task::Extraction, "{\"a\": 1}", None), None);
        assert_eq!(
            weak(&js, Task::Extraction, "```json\n{\"a\": 1}\n```", None),
            None
        );
        assert_eq!(
            weak(&js, Task::Extraction, "{\"a\": ", None),
            Some("invalid_json")
        );
    }

    #[test]
    fn checks_can_be_switched_off() {
        let off = ChecksConfig {
            empty: false,
            ..all_on()
        };
        assert_eq!(check(&job(), Task::Chat, "", None, &off), None);
    }
}
