//! One input record (a JSONL line or a Parquet row rendered as JSON) -> [`Job`], or
//! the reason it is unusable, naming the field. Accepts switchyard's own record shape
//! and OpenAI Batch API lines (`custom_id` + `body`).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::config::BatchModel;
use crate::money::Usd;
use crate::record::{Image, ImageDetail, Job, Message, Task, Tier};

#[derive(Deserialize)]
struct RawRecord {
    #[serde(default, deserialize_with = "lenient_id")]
    id: Option<String>,
    prompt: Option<String>,
    messages: Option<RawMessages>,
    system: Option<String>,
    task: Option<String>,
    tier: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "lenient_u32")]
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    response_format: Option<Value>,
    labels: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    max_cost_usd: Option<f64>,
    metadata: Option<Value>,
    // OpenAI Batch API envelope
    #[serde(default, deserialize_with = "lenient_id")]
    custom_id: Option<String>,
    url: Option<String>,
    body: Option<RawBody>,
}

#[derive(Deserialize)]
struct RawBody {
    model: Option<String>,
    messages: Option<RawMessages>,
    #[serde(default, deserialize_with = "lenient_u32")]
    max_tokens: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    response_format: Option<Value>,
}

/// `messages` as an array, or as a JSON string holding the array (Parquet string column).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawMessages {
    List(Vec<RawMessage>),
    Json(String),
}

#[derive(Deserialize)]
struct RawMessage {
    role: String,
    #[serde(default)]
    content: Option<RawContent>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Parts(Vec<RawPart>),
}

#[derive(Deserialize)]
struct RawPart {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    /// A URL string or `{url, detail}`.
    image_url: Option<Value>,
}

fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(de::Error::custom(format!(
            "expected a string or number, got {other}"
        ))),
    }
}

/// Integers, and floats with no fraction (Parquet columns written from pandas).
fn lenient_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u32::try_from(u)
                    .map(Some)
                    .map_err(|_| de::Error::custom(format!("{u} is too large")))
            } else if let Some(f) = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
            {
                Ok(Some(f as u32))
            } else {
                Err(de::Error::custom(format!(
                    "expected a non-negative integer, got {n}"
                )))
            }
        }
        Some(other) => Err(de::Error::custom(format!(
            "expected a non-negative integer, got {other}"
        ))),
    }
}

/// A parsed record's id before defaulting, with the job or the reason it is unusable.
pub struct Parsed {
    /// The id the record gave (`id` or `custom_id`), if any.
    pub id: Option<String>,
    pub job: Result<Job, String>,
}

/// Parses one record. `number` is its 1-based line/row, the default id.
pub fn parse_record(bytes: &[u8], number: u64, batch_model: BatchModel) -> Parsed {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Parsed {
                id: None,
                job: Err(format!("not valid UTF-8 (at byte {})", e.valid_up_to())),
            }
        }
    };
    let raw: RawRecord = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(_) => {
            return Parsed {
                id: salvage_id(text),
                job: Err(describe_json_error(text)),
            }
        }
    };
    let id = raw.id.clone().or_else(|| raw.custom_id.clone());
    let job = build(raw, batch_model).map(|job| Job {
        id: id.clone().unwrap_or_else(|| number.to_string()),
        ..job
    });
    Parsed { id, job }
}

/// The id of a record that is valid JSON but not a valid record, so its error row
/// keeps the id the user gave.
fn salvage_id(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("id").or_else(|| v.get("custom_id"))? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Re-parses a failing record with path tracking to name the field that is wrong.
fn describe_json_error(text: &str) -> String {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, RawRecord>(&mut de) {
        Ok(_) => "not valid JSON".into(),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                format!("not valid JSON: {inner}")
            } else if path == "." || path.is_empty() {
                format!("expected a JSON object with `prompt` or `messages`: {inner}")
            } else {
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg);
                format!("field `{path}`: {msg}")
            }
        }
    }
}

fn build(raw: RawRecord, batch_model: BatchModel) -> Result<Job, String> {
    let batch = raw.body.is_some();
    if let (true, Some(url)) = (batch, raw.url.as_deref()) {
        if url != "/v1/chat/completions" && url != "/chat/completions" {
            return Err(format!(
                "field `url`: batch endpoint '{url}' is not supported (only /v1/chat/completions)"
            ));
        }
    }
    let (messages, model, max_tokens, temperature, response_format) = match raw.body {
        Some(body) => {
            let model = match batch_model {
                BatchModel::Pin => body.model,
                BatchModel::Route => None,
            };
            (
                body.messages,
                raw.model.or(model),
                body.max_tokens.or(body.max_completion_tokens),
                body.temperature,
                body.response_format,
            )
        }
        None => (
            raw.messages,
            raw.model,
            raw.max_tokens,
            raw.temperature,
            raw.response_format,
        ),
    };
    let field = if batch { "body.messages" } else { "messages" };

    let mut out = Vec::new();
    if let Some(system) = raw.system {
        out.push(Message {
            role: "system".into(),
            text: system,
            images: vec![],
            name: None,
        });
    }
    match (raw.prompt, messages) {
        (Some(p), None) => out.push(Message {
            role: "user".into(),
            text: p,
            images: vec![],
            name: None,
        }),
        (None, Some(m)) => convert_messages(m, field, &mut out)?,
        (Some(_), Some(_)) => return Err("has both `prompt` and `messages`; give one".into()),
        (None, None) => return Err("no `prompt` or `messages`".into()),
    }
    if !out
        .iter()
        .any(|m| m.role == "user" && (!m.text.trim().is_empty() || !m.images.is_empty()))
    {
        return Err(format!(
            "field `{}`: no user message with content",
            if batch { field } else { "prompt" }
        ));
    }

    let task = raw
        .task
        .map(|t| t.parse::<Task>())
        .transpose()
        .map_err(|e| format!("field `task`: {e}"))?;
    let tier = raw
        .tier
        .map(|t| t.parse::<Tier>())
        .transpose()
        .map_err(|e| format!("field `tier`: {e}"))?;
    let max_cost = match raw.max_cost_usd {
        None => None,
        Some(v) => Some(Usd::from_f64(v).ok_or_else(|| {
            format!("field `max_cost_usd`: must be a non-negative number, got {v}")
        })?),
    };
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(format!(
                "field `temperature`: must be between 0 and 2, got {t}"
            ));
        }
    }
    if max_tokens == Some(0) {
        return Err("field `max_tokens`: must be at least 1".into());
    }
    Ok(Job {
        id: String::new(),
        messages: out,
        task,
        tier,
        model: model.filter(|m| !m.is_empty()),
        max_tokens,
        temperature,
        response_format,
        labels: raw.labels,
        tags: raw.tags.unwrap_or_default(),
        max_cost,
        metadata: raw.metadata,
    })
}

fn convert_messages(m: RawMessages, field: &str, out: &mut Vec<Message>) -> Result<(), String> {
    let list = match m {
        RawMessages::List(l) => l,
        RawMessages::Json(s) => serde_json::from_str::<Vec<RawMessage>>(&s)
            .map_err(|e| format!("field `{field}`: string is not a JSON array of messages: {e}"))?,
    };
    if list.is_empty() {
        return Err(format!("field `{field}`: empty"));
    }
    for (i, rm) in list.into_iter().enumerate() {
        let mut msg = Message {
            role: rm.role,
            text: String::new(),
            images: vec![],
            name: rm.name,
        };
        match rm.content {
            None => {}
            Some(RawContent::Text(t)) => msg.text = t,
            Some(RawContent::Parts(parts)) => {
                for p in parts {
                    match (p.kind.as_deref(), p.text, p.image_url) {
                        (_, Some(t), _) => {
                            if !msg.text.is_empty() {
                                msg.text.push('\n');
                            }
                            msg.text.push_str(&t);
                        }
                        (_, None, Some(img)) => {
                            let url = match &img {
                                Value::String(u) => u.clone(),
                                other => other
                                    .get("url")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                            };
                            if url.is_empty() {
                                return Err(format!(
                                    "field `{field}[{i}].content`: image part has no url"
                                ));
                            }
                            let detail = match img.get("detail").and_then(Value::as_str) {
                                Some("low") => ImageDetail::Low,
                                _ => ImageDetail::High,
                            };
                            msg.images.push(Image { url, detail });
                        }
                        (Some(kind), None, None) => {
                            return Err(format!(
                                "field `{field}[{i}].content`: unsupported part type '{kind}'"
                            ))
                        }
                        (None, None, None) => {
                            return Err(format!("field `{field}[{i}].content`: part has no `type`"))
                        }
                    }
                }
            }
        }
        out.push(msg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Job, String> {
        parse_record(s.as_bytes(), 7, BatchModel::Pin).job
    }

    #[test]
    fn prompt_and_system() {
        let j = parse(r#"{"prompt":"hi","system":"be brief","max_tokens":20.0,"tags":["pii"]}"#)
            .unwrap();
        assert_eq!(j.messages.len(), 2);
        assert_eq!(j.messages[0].role, "system");
        assert_eq!(j.max_tokens, Some(20));
        assert_eq!(j.tags, vec!["pii"]);
        assert_eq!(j.id, "7", "no id: the line number");
    }

    #[test]
    fn batch_api_line() {
        let p = parse_record(
            br#"{"custom_id":"req-1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}"#,
            1,
            BatchModel::Pin,
        );
        assert_eq!(p.id.as_deref(), Some("req-1"));
        let j = p.job.unwrap();
        assert_eq!(j.id, "req-1");
        assert_eq!(j.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(j.max_tokens, Some(5));
    }

    #[test]
    fn parts_and_images() {
        let j = parse(r#"{"messages":[{"role":"user","content":[{"type":"text","text":"what is this?"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]}]}"#).unwrap();
        assert_eq!(j.messages[0].text, "what is this?");
        assert_eq!(
            j.messages[0].images,
            vec![Image {
                url: "https://x/y.png".into(),
                detail: ImageDetail::Low
            }]
        );
    }

    #[test]
    fn messages_as_json_string() {
        let j = parse(r#"{"messages":"[{\"role\":\"user\",\"content\":\"hi\"}]"}"#).unwrap();
        assert_eq!(j.messages[0].text, "hi");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            parse(r#"{"prompt":"x","max_tokens":"many"}"#).unwrap_err(),
            "field `max_tokens`: expected a non-negative integer, got \"many\""
        );
        assert_eq!(
            parse(r#"{"prompt":"x","tier":"fast"}"#).unwrap_err(),
            "field `tier`: unknown tier 'fast' (expected one of: budget, balanced, quality)"
        );
        assert_eq!(
            parse(r#"{"id":"a"}"#).unwrap_err(),
            "no `prompt` or `messages`"
        );
        assert!(parse("{not json")
            .unwrap_err()
            .starts_with("not valid JSON"));
        assert!(parse_record(b"{\"prompt\":\"\xff\"}", 1, BatchModel::Pin)
            .job
            .unwrap_err()
            .starts_with("not valid UTF-8"));
        assert_eq!(
            parse(r#"{"prompt":"   "}"#).unwrap_err(),
            "field `prompt`: no user message with content"
        );
    }
}
