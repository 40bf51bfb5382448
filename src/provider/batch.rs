//! The providers' batch APIs: OpenAI Batch (a JSONL file uploaded to `/files`, a
//! batch created from it at `/batches`, output and error files read back) and
//! Anthropic Message Batches (requests posted to `/messages/batches`, results read
//! from its `results_url`). Lines are built with the same request bodies as realtime
//! calls; results are normalised to [`LineResult`]s by `custom_id`. `run::batcher`
//! decides what goes in a batch and when; this module only speaks the protocols.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::http::{transport, HttpProvider, Target};
use super::wire::{self, Answer};
use super::Failure;
use crate::config::{Model, ProviderKind};
use crate::record::Job;

/// The endpoint an OpenAI batch line calls.
const OPENAI_ENDPOINT: &str = "/v1/chat/completions";

/// A batch as the provider reports it, in one vocabulary for both APIs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    /// The provider's own word (`validating`, `in_progress`, `finalizing`,
    /// `completed`, `expired`, `cancelled`, `failed`; Anthropic `in_progress`,
    /// `canceling`, `ended`).
    pub state: String,
    /// No more work will happen: its output and error files (or results) can be
    /// read. `finalizing` is not ended.
    pub ended: bool,
    pub total: u64,
    /// Lines answered so far, and lines that failed (errored, expired, cancelled).
    pub succeeded: u64,
    pub failed: u64,
    /// OpenAI: the input file the batch was made from, its output and error files.
    pub input_file: Option<String>,
    pub output_file: Option<String>,
    pub error_file: Option<String>,
    /// Anthropic: where the results are, once ended.
    pub results_url: Option<String>,
    /// Unix seconds.
    pub created_at: Option<u64>,
    /// OpenAI: why the whole batch failed (validation), when it did.
    pub errors: Option<String>,
}

/// What became of one line of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum LineResult {
    Answered(Answer),
    /// The request failed as a realtime call would have (the policy decides).
    Failed(Failure, String),
    /// The batch ended (expired, cancelled, or failed as a whole) before the line
    /// was answered: it was not billed and may run again.
    NotRun(String),
}

/// An error from a batch API call: the policy's failure and a message that names
/// the provider (never the key).
pub type ApiError = (Failure, String);

impl HttpProvider {
    fn api(&self) -> Result<&Target, ApiError> {
        self.target
            .as_ref()
            .map_err(|why| (Failure::Unusable, why.clone()))
    }

    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let t = self.api()?;
        let mut req = self
            .client
            .request(method, url)
            .timeout(std::time::Duration::from_secs(300));
        if let Some((header, value)) = &t.auth {
            req = req.header(*header, value.clone());
        }
        if self.kind == ProviderKind::Anthropic {
            req = req.header("anthropic-version", wire::ANTHROPIC_VERSION);
        }
        Ok(req)
    }

    /// Sends a request; the body of a success, or the failure.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, ApiError> {
        let t = self.api()?;
        let resp = req.send().await.map_err(|e| transport(&self.name, &e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.map_err(|e| transport(&self.name, &e))?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        Err(self.failure(t, status, &headers, &bytes))
    }

    fn url(&self, path: &str) -> Result<String, ApiError> {
        Ok(format!("{}{path}", self.api()?.base))
    }

    fn json(&self, bytes: &[u8]) -> Result<Value, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| {
            (
                Failure::Malformed,
                format!("provider {}: malformed batch API response: {e}", self.name),
            )
        })
    }

    /// One line of a batch for `job` on `model`, named `custom_id`: an OpenAI Batch
    /// input line, or an Anthropic batch request (`{"custom_id", "params"}`).
    pub fn batch_line(
        &self,
        job: &Job,
        model: &Model,
        max_tokens: u64,
        custom_id: &str,
    ) -> Vec<u8> {
        let max = u32::try_from(max_tokens).unwrap_or(u32::MAX);
        let (cache_key, cache_system) = self.cache_request(job, model);
        let line = match self.kind {
            ProviderKind::Openai => json!({
                "custom_id": custom_id,
                "method": "POST",
                "url": OPENAI_ENDPOINT,
                "body": wire::openai_request(job, &model.api_model, job.max_tokens.or(Some(max)), cache_key),
            }),
            ProviderKind::Anthropic => json!({
                "custom_id": custom_id,
                "params": wire::anthropic_request(job, &model.api_model, job.max_tokens.unwrap_or(max), cache_system),
            }),
        };
        serde_json::to_vec(&line).expect("a batch line always serializes")
    }

    /// The bytes `lines` make on the wire: a JSONL file (OpenAI) or the
    /// `{"requests": [...]}` body (Anthropic).
    pub fn batch_bytes(&self, lines: &[&[u8]]) -> usize {
        let sum: usize = lines.iter().map(|l| l.len() + 1).sum();
        sum + match self.kind {
            ProviderKind::Openai => 0,
            ProviderKind::Anthropic => 16,
        }
    }

    /// OpenAI: uploads the lines as a batch input file; returns its id. Anthropic
    /// has no upload step (`None`).
    pub async fn upload(&self, lines: &[&[u8]]) -> Result<Option<String>, ApiError> {
        if self.kind == ProviderKind::Anthropic {
            return Ok(None);
        }
        let boundary = format!(
            "switchyard-{:016x}",
            xxhash_rust::xxh3::xxh3_64(lines.first().copied().unwrap_or(b""))
        );
        let mut body = Vec::with_capacity(self.batch_bytes(lines) + 512);
        body.extend_from_slice(
            format!("--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"batch.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n").as_bytes(),
        );
        for l in lines {
            body.extend_from_slice(l);
            body.push(b'\n');
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let req = self
            .request(reqwest::Method::POST, &self.url("/files")?)?
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let v = self.json(&self.send(req).await?)?;
        match v["id"].as_str() {
            Some(id) => Ok(Some(id.to_string())),
            None => Err((
                Failure::Malformed,
                format!("provider {}: the file upload answered no id", self.name),
            )),
        }
    }

    /// Creates the batch: from the uploaded `file` (OpenAI, tagged `tag` in its
    /// metadata) or from the lines themselves (Anthropic).
    pub async fn create(
        &self,
        file: Option<&str>,
        lines: &[&[u8]],
        tag: &str,
    ) -> Result<Status, ApiError> {
        let req = match (self.kind, file) {
            (ProviderKind::Openai, Some(file)) => {
                let body = json!({
                    "input_file_id": file,
                    "endpoint": OPENAI_ENDPOINT,
                    "completion_window": "24h",
                    "metadata": {"switchyard": tag},
                });
                self.request(reqwest::Method::POST, &self.url("/batches")?)?
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
            (ProviderKind::Openai, None) => unreachable!("an OpenAI batch is made from a file"),
            (ProviderKind::Anthropic, _) => {
                let mut body = Vec::with_capacity(self.batch_bytes(lines));
                body.extend_from_slice(b"{\"requests\":[");
                for (i, l) in lines.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(l);
                }
                body.extend_from_slice(b"]}");
                self.request(reqwest::Method::POST, &self.url("/messages/batches")?)?
                    .header("content-type", "application/json")
                    .body(body)
            }
        };
        let v = self.json(&self.send(req).await?)?;
        self.status_of(&v)
    }

    /// The batch's current status.
    pub async fn status(&self, id: &str) -> Result<Status, ApiError> {
        self.on_batch(reqwest::Method::GET, id, "").await
    }

    /// Asks the provider to cancel the batch (lines already answered stay answered).
    pub async fn cancel(&self, id: &str) -> Result<Status, ApiError> {
        self.on_batch(reqwest::Method::POST, id, "/cancel").await
    }

    /// A call on batch `id` (`{batches}/{id}{suffix}`) that answers its status.
    async fn on_batch(
        &self,
        method: reqwest::Method,
        id: &str,
        suffix: &str,
    ) -> Result<Status, ApiError> {
        let path = match self.kind {
            ProviderKind::Openai => format!("/batches/{id}{suffix}"),
            ProviderKind::Anthropic => format!("/messages/batches/{id}{suffix}"),
        };
        let req = self.request(method, &self.url(&path)?)?;
        let v = self.json(&self.send(req).await?)?;
        self.status_of(&v)
    }

    /// The most recent batches (up to 1,000), newest first: how a resume finds a
    /// batch whose creation it did not see answered.
    pub async fn recent(&self) -> Result<Vec<Status>, ApiError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let mut path = match self.kind {
                ProviderKind::Openai => "/batches?limit=100".to_string(),
                ProviderKind::Anthropic => "/messages/batches?limit=100".to_string(),
            };
            if let Some(a) = &after {
                let key = match self.kind {
                    ProviderKind::Openai => "after",
                    ProviderKind::Anthropic => "after_id",
                };
                path.push_str(&format!("&{key}={a}"));
            }
            let req = self.request(reqwest::Method::GET, &self.url(&path)?)?;
            let v = self.json(&self.send(req).await?)?;
            let page = v["data"].as_array().cloned().unwrap_or_default();
            for b in &page {
                out.push(self.status_of(b)?);
            }
            after = match (v["has_more"].as_bool(), v["last_id"].as_str(), out.last()) {
                (Some(true), Some(last), _) => Some(last.to_string()),
                (Some(true), None, Some(s)) => Some(s.id.clone()),
                _ => None,
            };
            if after.is_none() || page.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    /// Every line result of an ended batch, by `custom_id`: the output file and the
    /// error file (OpenAI), or the results (Anthropic).
    pub async fn results(&self, s: &Status) -> Result<Vec<(String, LineResult)>, ApiError> {
        let mut out = Vec::new();
        match self.kind {
            ProviderKind::Openai => {
                for file in [&s.output_file, &s.error_file].into_iter().flatten() {
                    let req = self.request(
                        reqwest::Method::GET,
                        &self.url(&format!("/files/{file}/content"))?,
                    )?;
                    let bytes = self.send(req).await?;
                    for line in bytes
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    {
                        out.push(self.openai_line(line)?);
                    }
                }
            }
            ProviderKind::Anthropic => {
                let Some(url) = &s.results_url else {
                    return Ok(out);
                };
                // The key goes only where the provider's own API is.
                let base = self.api()?.base.clone();
                let origin = |u: &str| reqwest::Url::parse(u).ok().map(|u| u.origin());
                if origin(url).is_none() || origin(url) != origin(&base) {
                    return Err((
                        Failure::Malformed,
                        format!("provider {}: batch {} has results at another host; not sending the key there", self.name, s.id),
                    ));
                }
                let req = self.request(reqwest::Method::GET, url)?;
                let bytes = self.send(req).await?;
                for line in bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                {
                    out.push(self.anthropic_line(line)?);
                }
            }
        }
        Ok(out)
    }

    fn malformed(&self, what: &str) -> ApiError {
        (
            Failure::Malformed,
            format!("provider {}: {what}", self.name),
        )
    }

    /// `{"custom_id", "response": {"status_code", "body"}, "error"}`.
    fn openai_line(&self, line: &[u8]) -> Result<(String, LineResult), ApiError> {
        let t = self.api()?;
        let v = self.json(line)?;
        let id = v["custom_id"]
            .as_str()
            .ok_or_else(|| self.malformed("a batch result line has no custom_id"))?
            .to_string();
        let err = &v["error"];
        if !err.is_null() {
            let code = err["code"].as_str().unwrap_or("error");
            let msg = format!(
                "batch line {code}: {}",
                err["message"].as_str().unwrap_or("")
            );
            let result = match code {
                "batch_expired" | "batch_cancelled" => LineResult::NotRun(msg),
                _ => LineResult::Failed(
                    Failure::Malformed,
                    format!("provider {}: {}", self.name, t.scrub(msg)),
                ),
            };
            return Ok((id, result));
        }
        let status = v["response"]["status_code"].as_u64().unwrap_or(0) as u16;
        let body = serde_json::to_vec(&v["response"]["body"]).unwrap_or_default();
        let result = match status {
            200..=299 => match wire::openai_answer(&body) {
                Ok(mut a) => {
                    a.text = t.scrub(a.text);
                    LineResult::Answered(a)
                }
                Err(m) => LineResult::Failed(
                    Failure::Malformed,
                    format!("provider {}: {}", self.name, t.scrub(m)),
                ),
            },
            _ => {
                let (f, msg) = wire::http_failure(status, &body, |_| None, SystemTime::now());
                LineResult::Failed(f, format!("provider {}: {}", self.name, t.scrub(msg)))
            }
        };
        Ok((id, result))
    }

    /// `{"custom_id", "result": {"type": "succeeded"|"errored"|"canceled"|"expired", ...}}`.
    fn anthropic_line(&self, line: &[u8]) -> Result<(String, LineResult), ApiError> {
        let t = self.api()?;
        let v = self.json(line)?;
        let id = v["custom_id"]
            .as_str()
            .ok_or_else(|| self.malformed("a batch result line has no custom_id"))?
            .to_string();
        let r = &v["result"];
        let result = match r["type"].as_str().unwrap_or("") {
            "succeeded" => {
                let body = serde_json::to_vec(&r["message"]).unwrap_or_default();
                match wire::anthropic_answer(&body) {
                    Ok(mut a) => {
                        a.text = t.scrub(a.text);
                        LineResult::Answered(a)
                    }
                    Err(m) => LineResult::Failed(
                        Failure::Malformed,
                        format!("provider {}: {}", self.name, t.scrub(m)),
                    ),
                }
            }
            "errored" => {
                let e = &r["error"]["error"];
                let kind = e["type"].as_str().unwrap_or("api_error");
                // Anthropic's error types, as the statuses a realtime call returns.
                let status = match kind {
                    "invalid_request_error" => 400,
                    "authentication_error" => 401,
                    "permission_error" => 403,
                    "not_found_error" => 404,
                    "request_too_large" => 413,
                    "rate_limit_error" => 429,
                    "overloaded_error" => 529,
                    _ => 500,
                };
                let body = serde_json::to_vec(&r["error"]).unwrap_or_default();
                let (f, msg) = wire::http_failure(status, &body, |_| None, SystemTime::now());
                LineResult::Failed(
                    f,
                    format!("provider {}: batch line {}", self.name, t.scrub(msg)),
                )
            }
            other => LineResult::NotRun(format!(
                "batch line {}",
                if other.is_empty() {
                    "without a result"
                } else {
                    other
                }
            )),
        };
        Ok((id, result))
    }

    fn status_of(&self, v: &Value) -> Result<Status, ApiError> {
        let id = v["id"]
            .as_str()
            .ok_or_else(|| self.malformed("a batch object has no id"))?
            .to_string();
        let s = |k: &str| v[k].as_str().map(String::from);
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(match self.kind {
            ProviderKind::Openai => {
                let state = s("status").unwrap_or_default();
                let c = &v["request_counts"];
                let errors = v["errors"]["data"].as_array().map(|e| {
                    e.iter()
                        .map(|e| {
                            format!(
                                "{}: {}",
                                e["code"].as_str().unwrap_or("error"),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                Status {
                    ended: matches!(
                        state.as_str(),
                        "completed" | "expired" | "cancelled" | "failed"
                    ),
                    state,
                    total: n(&c["total"]),
                    succeeded: n(&c["completed"]),
                    failed: n(&c["failed"]),
                    input_file: s("input_file_id"),
                    output_file: s("output_file_id"),
                    error_file: s("error_file_id"),
                    results_url: None,
                    created_at: v["created_at"].as_u64(),
                    errors,
                    id,
                }
            }
            ProviderKind::Anthropic => {
                let state = s("processing_status").unwrap_or_default();
                let c = &v["request_counts"];
                let (ok, bad) = (
                    n(&c["succeeded"]),
                    n(&c["errored"]) + n(&c["canceled"]) + n(&c["expired"]),
                );
                Status {
                    ended: state == "ended",
                    state,
                    total: ok + bad + n(&c["processing"]),
                    succeeded: ok,
                    failed: bad,
                    input_file: None,
                    output_file: None,
                    error_file: None,
                    results_url: s("results_url"),
                    created_at: v["created_at"].as_str().and_then(rfc3339_secs),
                    errors: None,
                    id,
                }
            }
        })
    }
}

/// Unix seconds of an RFC 3339 time (`2024-09-24T18:37:24.100435Z`).
fn rfc3339_secs(t: &str) -> Option<u64> {
    let t = t.trim_end_matches('Z');
    let t = t.split(['.', '+']).next()?;
    let st = httpdate::parse_http_date(&to_http_date(t)?).ok()?;
    st.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// `2024-09-24T18:37:24` as an HTTP date, so one parser reads both.
fn to_http_date(t: &str) -> Option<String> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day) = (d.next()?, d.next()?.parse::<usize>().ok()?, d.next()?);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let y: i64 = y.parse().ok()?;
    let dd: u32 = day.parse().ok()?;
    // The weekday does not change the time; httpdate checks it, so compute it.
    let days = days_from_civil(y, m as u32, dd);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let wd = WD[days.rem_euclid(7) as usize];
    Some(format!(
        "{wd}, {dd:02} {} {y} {time} GMT",
        MONTHS.get(m.checked_sub(1)?)?
    ))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(rfc3339_secs("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(
            rfc3339_secs("2024-09-24T18:37:24.100435Z"),
            Some(1_727_203_044)
        );
        assert_eq!(rfc3339_secs("nonsense"), None);
    }
}
