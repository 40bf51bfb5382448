//! The HTTP wire formats, as pure functions: request bodies for OpenAI-compatible chat
//! completions and Anthropic Messages, their answers and usage, their error bodies,
//! and the rate-limit headers that say how long to wait. No I/O: the HTTP client
//! (`http`) sends what these build and hands back what it received.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::provider::Failure;
use crate::record::{Job, Message};

/// A provider's answer, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    /// OpenAI's vocabulary: `stop`, `length`, `content_filter`, `tool_calls`.
    pub finish_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of `input_tokens`, those served from the provider's prompt cache (OpenAI
    /// `cached_tokens`, DeepSeek `prompt_cache_hit_tokens`, Anthropic
    /// `cache_read_input_tokens`), billed at the cache read price.
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, those written to the cache (Anthropic
    /// `cache_creation_input_tokens`), billed at the cache write price.
    pub cache_write_tokens: u64,
    /// Output tokens spent on hidden reasoning (included in `output_tokens`).
    pub reasoning_tokens: u64,
}

/// Anthropic requires `max_tokens`; without one on the record we send the model's cap.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

fn openai_content(m: &Message) -> Value {
    if m.images.is_empty() {
        return Value::String(m.text.clone());
    }
    let mut parts = Vec::with_capacity(m.images.len() + 1);
    if !m.text.is_empty() {
        parts.push(json!({"type": "text", "text": m.text}));
    }
    for img in &m.images {
        let detail = match img.detail {
            crate::record::ImageDetail::Low => "low",
            crate::record::ImageDetail::High => "auto",
        };
        parts.push(json!({"type": "image_url", "image_url": {"url": img.url, "detail": detail}}));
    }
    Value::Array(parts)
}

/// The body of `POST {base_url}/chat/completions`, borrowing the record's text.
#[derive(Serialize)]
pub struct OpenaiRequest<'a> {
    model: &'a str,
    messages: Vec<OpenaiMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<String>,
}

#[derive(Serialize)]
struct OpenaiMessage<'a> {
    role: &'a str,
    content: OpenaiContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OpenaiContent<'a> {
    Text(&'a str),
    /// Text and image parts (rare; built as JSON).
    Parts(Value),
}

pub fn openai_request<'a>(
    job: &'a Job,
    api_model: &'a str,
    max_tokens: Option<u32>,
    prompt_cache_key: Option<String>,
) -> OpenaiRequest<'a> {
    OpenaiRequest {
        model: api_model,
        messages: job
            .messages
            .iter()
            .map(|m| OpenaiMessage {
                role: &m.role,
                content: if m.images.is_empty() {
                    OpenaiContent::Text(&m.text)
                } else {
                    OpenaiContent::Parts(openai_content(m))
                },
                name: m.name.as_deref(),
            })
            .collect(),
        max_tokens,
        temperature: job.temperature,
        response_format: job.response_format.as_ref(),
        prompt_cache_key,
    }
}

/// The parts of a chat completion we read; everything else is skipped unparsed.
#[derive(Deserialize)]
struct OpenaiAnswer {
    #[serde(default)]
    choices: Vec<OpenaiChoice>,
    usage: Option<OpenaiUsage>,
}

#[derive(Deserialize)]
struct OpenaiChoice {
    message: Option<OpenaiAnswerMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct OpenaiAnswerMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct OpenaiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<CachedTokens>,
    /// DeepSeek: prompt tokens served from its disk cache (`prompt_tokens` counts
    /// hits and misses).
    prompt_cache_hit_tokens: Option<u64>,
    completion_tokens_details: Option<ReasoningTokens>,
}

#[derive(Deserialize)]
struct CachedTokens {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ReasoningTokens {
    reasoning_tokens: Option<u64>,
}

/// Parses a successful chat completion. `Err` is a body we cannot use.
pub fn openai_answer(body: &[u8]) -> Result<Answer, String> {
    let v: OpenaiAnswer =
        serde_json::from_slice(body).map_err(|e| format!("malformed response body: {e}"))?;
    let choice = v
        .choices
        .into_iter()
        .next()
        .ok_or("response has no choices")?;
    let usage = v.usage.ok_or("response has no usage.prompt_tokens")?;
    Ok(Answer {
        text: choice.message.and_then(|m| m.content).unwrap_or_default(),
        finish_reason: choice.finish_reason,
        input_tokens: usage
            .prompt_tokens
            .ok_or("response has no usage.prompt_tokens")?,
        output_tokens: usage.completion_tokens.unwrap_or(0),
        cached_input_tokens: usage
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .or(usage.prompt_cache_hit_tokens)
            .unwrap_or(0),
        cache_write_tokens: 0,
        reasoning_tokens: usage
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    })
}

fn anthropic_content(m: &Message) -> Value {
    if m.images.is_empty() {
        return Value::String(m.text.clone());
    }
    let mut parts = Vec::with_capacity(m.images.len() + 1);
    for img in &m.images {
        let source = match img
            .url
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
        {
            Some((media_type, data)) => {
                json!({"type": "base64", "media_type": media_type, "data": data})
            }
            None => json!({"type": "url", "url": img.url}),
        };
        parts.push(json!({"type": "image", "source": source}));
    }
    if !m.text.is_empty() {
        parts.push(json!({"type": "text", "text": m.text}));
    }
    Value::Array(parts)
}

/// The body of `POST {base_url}/messages`: system prompts go top-level, `max_tokens`
/// is always sent.
/// With `cache_system`, the system prompt carries `cache_control` (ephemeral): the
/// provider caches the prefix up to it.
pub fn anthropic_request(job: &Job, api_model: &str, max_tokens: u32, cache_system: bool) -> Value {
    let system: Vec<&str> = job.system_text().collect();
    let messages: Vec<Value> = job
        .messages
        .iter()
        .filter(|m| m.role == "user" || m.role == "assistant")
        .map(|m| json!({"role": m.role, "content": anthropic_content(m)}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), Value::String(api_model.into()));
    body.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
        let text = system.join("\n\n");
        let system = match cache_system {
            true => json!([{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]),
            false => Value::String(text),
        };
        body.insert("system".into(), system);
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(t) = job.temperature {
        // Anthropic's range is 0..=1; OpenAI's 0..=2 is scaled onto it.
        body.insert("temperature".into(), (t / 2.0).into());
    }
    Value::Object(body)
}

/// Maps Anthropic's `stop_reason` onto OpenAI's finish reasons.
pub fn anthropic_finish(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

pub fn anthropic_answer(body: &[u8]) -> Result<Answer, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed response body: {e}"))?;
    let content = v["content"].as_array().ok_or("response has no content")?;
    let text: Vec<&str> = content
        .iter()
        .filter(|c| c["type"] == "text")
        .filter_map(|c| c["text"].as_str())
        .collect();
    let usage = &v["usage"];
    let cache_read = usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
    let cache_write = usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    Ok(Answer {
        text: text.join(""),
        finish_reason: v["stop_reason"]
            .as_str()
            .map(|r| anthropic_finish(r).to_string()),
        input_tokens: usage["input_tokens"]
            .as_u64()
            .ok_or("response has no usage.input_tokens")?
            + cache_read
            + cache_write,
        output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
        cached_input_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
    })
}

/// A readable message from an error body (OpenAI `{"error": {...}}`, Anthropic
/// `{"type": "error", "error": {...}}`, or plain text), and whether it says the prompt
/// exceeds the context window.
pub fn error_message(body: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(body);
    let msg = match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let e = &v["error"];
            let message = e["message"]
                .as_str()
                .or_else(|| e.as_str())
                .or_else(|| v["message"].as_str());
            let kind = e["code"].as_str().or_else(|| e["type"].as_str());
            match (kind, message) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (None, Some(m)) => m.to_string(),
                _ => text.chars().take(300).collect(),
            }
        }
        Err(_) => text.chars().take(300).collect(),
    };
    let lower = msg.to_lowercase();
    let context = lower.contains("context_length_exceeded")
        || lower.contains("maximum context length")
        || lower.contains("prompt is too long")
        || lower.contains("context window");
    (msg, context)
}

/// The longest wait a header can ask for; longer ones are cut to this. Far above any
/// `max_retry_after_s`, so a day-long `Retry-After` still reads as "too long".
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A number of seconds from a header, as a bounded wait; `None` for a negative or
/// non-finite number (`inf`, `NaN`), which no upstream means.
fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

/// How long a 429/503 asks us to wait, from `Retry-After` (seconds or HTTP date),
/// then `retry-after-ms`, `x-ratelimit-reset-requests`/`-tokens` (`1s`, `6m0s`,
/// `20ms`), then `anthropic-ratelimit-*-reset` (RFC 3339). `header` looks one up by
/// lower-case name. Whatever a header says, the result is at most [`MAX_WAIT`]; a
/// value that makes no sense is ignored.
pub fn retry_after(header: impl Fn(&str) -> Option<String>, now: SystemTime) -> Option<Duration> {
    let until = |at: SystemTime| at.duration_since(now).unwrap_or_default().min(MAX_WAIT);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        if let Some(wait) = seconds(ms / 1000.0) {
            return Some(wait);
        }
    }
    if let Some(v) = header("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<f64>() {
            if let Some(wait) = seconds(secs) {
                return Some(wait);
            }
        } else if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(until(at));
        }
    }
    let openai = ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| header(h).as_deref().and_then(go_duration))
        .max();
    if openai.is_some() {
        return openai;
    }
    [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-reset",
    ]
    .iter()
    .filter_map(|h| header(h))
    .filter_map(|v| humantime::parse_rfc3339_weak(v.trim()).ok())
    .map(until)
    .max()
}

/// Parses Go-style durations as OpenAI sends them: `1s`, `6m0s`, `1h2m3.5s`, `20ms`.
fn go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    seconds(total)
}

/// Turns an HTTP error into the policy's [`Failure`] and a readable message.
pub fn http_failure(
    status: u16,
    body: &[u8],
    header: impl Fn(&str) -> Option<String>,
    now: SystemTime,
) -> (Failure, String) {
    let (message, context_length_exceeded) = error_message(body);
    let retry_after = if matches!(status, 429 | 503) {
        retry_after(header, now)
    } else {
        None
    };
    (
        Failure::Http {
            status,
            retry_after,
            context_length_exceeded,
        },
        format!("HTTP {status}: {message}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::parse::parse_record;

    fn job(line: &str) -> Job {
        parse_record(line.as_bytes(), 1, crate::config::BatchModel::Pin)
            .job
            .unwrap()
    }

    #[test]
    fn openai_request_shape() {
        let j = job(
            r#"{"system":"be brief","prompt":"hi","temperature":0.5,"response_format":{"type":"json_object"}}"#,
        );
        let body =
            serde_json::to_value(openai_request(&j, "deepseek-chat", Some(64), None)).unwrap();
        assert_eq!(
            body,
            json!({"model": "deepseek-chat",
                   "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                   "max_tokens": 64, "temperature": 0.5, "response_format": {"type": "json_object"}})
        );
    }

    #[test]
    fn openai_usage_with_details() {
        let a = openai_answer(br#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":120,"completion_tokens":30,"prompt_tokens_details":{"cached_tokens":100},
                     "completion_tokens_details":{"reasoning_tokens":12}}}"#)
        .unwrap();
        assert_eq!(
            (a.text.as_str(), a.finish_reason.as_deref()),
            ("ok", Some("stop"))
        );
        assert_eq!(
            (
                a.input_tokens,
                a.output_tokens,
                a.cached_input_tokens,
                a.reasoning_tokens
            ),
            (120, 30, 100, 12)
        );
        assert!(openai_answer(br#"{"choices":[{"message":{"content":"tru"#)
            .unwrap_err()
            .starts_with("malformed"));
        assert_eq!(
            openai_answer(br#"{"choices":[]}"#).unwrap_err(),
            "response has no choices"
        );
    }

    #[test]
    fn anthropic_request_and_answer() {
        let j = job(
            r#"{"system":"be brief","messages":[{"role":"user","content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"temperature":1.0}"#,
        );
        let body = anthropic_request(&j, "claude-sonnet-4-6", 1024, false);
        assert_eq!(
            body,
            json!({"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": "be brief",
                   "messages": [{"role": "user", "content": [
                       {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                       {"type": "text", "text": "what is it?"}]}],
                   "temperature": 0.5})
        );
        let a = anthropic_answer(
            br#"{"content":[{"type":"text","text":"A cat."}],"stop_reason":"max_tokens",
            "usage":{"input_tokens":50,"output_tokens":7,"cache_read_input_tokens":10}}"#,
        )
        .unwrap();
        assert_eq!(
            (a.text.as_str(), a.finish_reason.as_deref()),
            ("A cat.", Some("length"))
        );
        assert_eq!(
            (a.input_tokens, a.output_tokens, a.cached_input_tokens),
            (60, 7, 10)
        );
    }

    #[test]
    fn error_bodies_are_readable() {
        let (m, ctx) = error_message(br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#);
        assert_eq!(
            m,
            "context_length_exceeded: This model's maximum context length is 128000 tokens."
        );
        assert!(ctx);
        let (m, ctx) = error_message(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!((m.as_str(), ctx), ("overloaded_error: Overloaded", false));
        assert_eq!(
            error_message(b"<html>bad gateway</html>").0,
            "<html>bad gateway</html>"
        );
    }

    /// Looks headers up in a list, as the HTTP client will in a response.
    fn lookup<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = |pairs: &[(&str, String)]| retry_after(lookup(pairs), now);
        assert_eq!(
            wait(&[("retry-after", "7".into())]),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            wait(&[("retry-after", date)]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "250".into())]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            wait(&[
                ("x-ratelimit-reset-requests", "1s".into()),
                ("x-ratelimit-reset-tokens", "6m0s".into())
            ]),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            wait(&[("x-ratelimit-reset-tokens", "20ms".into())]),
            Some(Duration::from_millis(20))
        );
        let rfc = humantime::format_rfc3339_seconds(now + Duration::from_secs(12)).to_string();
        assert_eq!(
            wait(&[("anthropic-ratelimit-requests-reset", rfc)]),
            Some(Duration::from_secs(12))
        );
        assert_eq!(wait(&[]), None);
        assert_eq!(wait(&[("x-ratelimit-reset-requests", "soon".into())]), None);
    }

    #[test]
    fn any_header_value_is_a_bounded_wait_or_ignored() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let wait = |name: &str, v: &str| retry_after(lookup(&[(name, v.to_string())]), now);
        for v in ["inf", "-inf", "infinity", "NaN", "-5", "-0.5"] {
            assert_eq!(wait("retry-after", v), None, "retry-after: {v}");
            assert_eq!(wait("retry-after-ms", v), None, "retry-after-ms: {v}");
        }
        for v in ["1e20", "1e308", "18446744073709551616"] {
            assert_eq!(wait("retry-after", v), Some(MAX_WAIT), "retry-after: {v}");
            assert_eq!(
                wait("retry-after-ms", v),
                Some(MAX_WAIT),
                "retry-after-ms: {v}"
            );
        }
        assert_eq!(wait("retry-after", "0"), Some(Duration::ZERO));
        let far = "99999999999999999999999999999999999999h";
        assert_eq!(wait("x-ratelimit-reset-tokens", far), Some(MAX_WAIT));
        let next_century = httpdate::fmt_http_date(now + Duration::from_secs(100 * 365 * 86400));
        assert_eq!(wait("retry-after", &next_century), Some(MAX_WAIT));
        assert_eq!(
            wait("anthropic-ratelimit-tokens-reset", "9999-12-31T23:59:59Z"),
            Some(MAX_WAIT)
        );
        // A useless Retry-After lets the next header speak.
        let both = [
            ("retry-after", "inf".to_string()),
            ("x-ratelimit-reset-requests", "2s".to_string()),
        ];
        assert_eq!(
            retry_after(lookup(&both), now),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn http_failures_feed_the_policy() {
        let (f, msg) = http_failure(
            429,
            br#"{"error":{"message":"Rate limit reached"}}"#,
            |n| (n == "retry-after").then(|| "2".to_string()),
            SystemTime::now(),
        );
        assert_eq!(
            f,
            Failure::Http {
                status: 429,
                retry_after: Some(Duration::from_secs(2)),
                context_length_exceeded: false
            }
        );
        assert_eq!(msg, "HTTP 429: Rate limit reached");
    }
}
