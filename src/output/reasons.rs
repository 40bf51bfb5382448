//! Why records did not make it, grouped: the count of each status and reason, so a
//! summary can say "97 failed: gpt-4o-mini: provider openai: OPENAI_API_KEY is not
//! set" without anyone opening Parquet. Reasons that differ only in their numbers
//! (token counts, positions, amounts) are one group, shown by its first example.

use std::collections::HashMap;

use super::Status;
use crate::money::group_thousands;

/// How many groups a summary shows in full; the rest are counted on one line.
pub const SHOWN: usize = 5;

#[derive(Debug, Default, Clone)]
pub struct Reasons {
    groups: HashMap<(&'static str, String), Group>,
    /// Groups in the order they were first seen (ties in count keep this order).
    order: u64,
}

#[derive(Debug, Clone)]
struct Group {
    count: u64,
    example: String,
    first: u64,
}

/// One group, for a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// A status word (`failed`, `skipped_budget`, `invalid_input`) or `unroutable`.
    pub status: &'static str,
    pub count: u64,
    /// The first reason of the group, as it was.
    pub example: String,
}

/// The grouping key of a reason: a word with a digit in it (a number, an amount, a
/// request id like `req_7f3a9d`) stands for any such word.
pub fn shape(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in reason.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

impl Reasons {
    /// Counts a record that ended with `status` (not `ok`) for `reason`.
    pub fn add(&mut self, status: Status, reason: Option<&str>) {
        if status != Status::Ok {
            self.add_kind(status.as_str(), reason);
        }
    }

    /// Counts a record that did not make it, as `kind` (`plan`'s `unroutable`).
    pub fn add_kind(&mut self, kind: &'static str, reason: Option<&str>) {
        let status = kind;
        let reason = reason.unwrap_or("no reason recorded");
        let order = self.order;
        let g = self
            .groups
            .entry((status, shape(reason)))
            .or_insert_with(|| Group {
                count: 0,
                example: reason.to_string(),
                first: order,
            });
        g.count += 1;
        self.order += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every group, the largest first (then the one seen first).
    pub fn sorted(&self) -> Vec<Reason> {
        let mut v: Vec<(&(&'static str, String), &Group)> = self.groups.iter().collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.1.first.cmp(&b.1.first)));
        v.into_iter()
            .map(|((status, _), g)| Reason {
                status,
                count: g.count,
                example: g.example.clone(),
            })
            .collect()
    }

    /// The summary's lines: the [`SHOWN`] largest groups in full, then one line for
    /// the rest ("and 12 more records for 3 other reasons").
    pub fn lines(&self) -> Vec<String> {
        let all = self.sorted();
        let mut lines: Vec<String> = all
            .iter()
            .take(SHOWN)
            .map(|r| format!("{} {}: {}", group_thousands(r.count), r.status, r.example))
            .collect();
        if all.len() > SHOWN {
            let rest = &all[SHOWN..];
            let n: u64 = rest.iter().map(|r| r.count).sum();
            lines.push(format!(
                "and {} more records for {} other reasons",
                group_thousands(n),
                rest.len()
            ));
        }
        lines
    }

    /// For `--format json`: every group, the largest first.
    pub fn json(&self) -> serde_json::Value {
        self.sorted()
            .into_iter()
            .map(|r| serde_json::json!({"status": r.status, "count": r.count, "reason": r.example}))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_status_and_shape_largest_first() {
        let mut r = Reasons::default();
        r.add(Status::Ok, None);
        r.add(Status::InvalidInput, Some("line 3: not JSON"));
        for _ in 0..3 {
            r.add(Status::Failed, Some("m: provider p: KEY is not set"));
        }
        r.add(Status::InvalidInput, Some("line 17: not JSON"));
        r.add(Status::SkippedBudget, Some("line 17: not JSON"));
        assert_eq!(
            r.lines(),
            [
                "3 failed: m: provider p: KEY is not set",
                "2 invalid_input: line 3: not JSON",
                "1 skipped_budget: line 17: not JSON",
            ]
        );
        for i in 0..6 {
            r.add(Status::Failed, Some(&format!("reason {}", "x".repeat(i))));
        }
        let lines = r.lines();
        assert_eq!(lines.len(), SHOWN + 1);
        assert_eq!(lines[SHOWN], "and 4 more records for 4 other reasons");
        assert_eq!(shape("a 12 b 3.5"), "a # b #.#");
        assert_eq!(
            shape("HTTP 403: blocked (request req_7f3a9d01)"),
            shape("HTTP 403: blocked (request req_0b1c2e99)")
        );
        assert_ne!(
            shape("HTTP 403: blocked"),
            shape("HTTP 401: blocked by waf")
        );
    }
}
