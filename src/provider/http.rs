//! The HTTP providers: OpenAI-compatible chat completions and Anthropic Messages,
//! every provider over one shared, pooled reqwest client (rustls). Keys come from the
//! environment at start and are only ever written into request headers; anything a
//! provider sends back is scrubbed of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};

use crate::config::{Model, Provider, ProviderKind};
use crate::provider::wire::{self, Answer};
use crate::provider::Failure;
use crate::record::Job;
use crate::route::{cacheable_system, system_hash};

pub struct HttpProvider {
    pub(super) name: String,
    pub(super) kind: ProviderKind,
    /// Where and how requests go, or why this provider cannot take any (its key
    /// variable unset, a URL it may not be sent to): every request then fails with
    /// that reason, and the run's start has said so.
    pub(super) target: Result<Target, String>,
    /// The whole request, connect to last byte.
    timeout: Duration,
    pub(super) client: reqwest::Client,
    prompt_cache_key: bool,
    /// The system prompts sent so far, by API model and hash, with the record that
    /// first sent each: one another record sends again is a shared prefix worth
    /// caching (a cache is the model's).
    systems: Mutex<HashMap<(String, u64), String>>,
}

pub(super) struct Target {
    /// Parsed once: a request clones it instead of parsing a string.
    endpoint: reqwest::Url,
    /// `base_url` without its trailing slash: the batch APIs' paths hang off it.
    pub(super) base: String,
    /// The key's header, built once and marked sensitive. Never printed: this type
    /// has no Debug, and errors name the variable, not the key.
    pub(super) auth: Option<(&'static str, reqwest::header::HeaderValue)>,
    /// The key itself, only to scrub it from what a provider sends back (an error
    /// body or an answer that echoes it) before that text goes anywhere.
    key: Option<String>,
}

/// `http://` is for loopback only, unless the provider says `allow_insecure = true`.
fn check_url(name: &str, p: &Provider) -> Result<()> {
    let url = p.base_url.trim();
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("provider `{name}`: base_url must start with https:// or http://");
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']').next().unwrap_or("").trim_start_matches('[')
    } else {
        host.split(':').next().unwrap_or("")
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && !p.allow_insecure {
        bail!(
            "provider `{name}`: plain http:// is allowed only for loopback hosts; use https:// or set allow_insecure = true"
        );
    }
    Ok(())
}

/// Why provider `name` cannot take a request, if it cannot: its `api_key_env` is
/// unset or empty, or its `base_url` is one it may not be sent to. Reads the
/// environment; never returns the key.
pub fn unusable(name: &str, p: &Provider) -> Option<String> {
    target(name, p).err()
}

/// The endpoint and key of provider `name`, checked.
fn target(name: &str, p: &Provider) -> Result<Target, String> {
    check_url(name, p).map_err(|e| e.to_string())?;
    let base = p.base_url.trim().trim_end_matches('/');
    let endpoint = match p.kind {
        ProviderKind::Openai => format!("{base}/chat/completions"),
        ProviderKind::Anthropic => format!("{base}/messages"),
    };
    let endpoint = reqwest::Url::parse(&endpoint)
        .map_err(|e| format!("provider `{name}`: base_url is not a URL: {e}"))?;
    let Some(var) = &p.api_key_env else {
        // A server that takes no key (a local one).
        return Ok(Target {
            endpoint,
            base: base.into(),
            auth: None,
            key: None,
        });
    };
    let key = std::env::var(var)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| format!("provider {name}: {var} is not set"))?;
    let (header, text) = match p.kind {
        ProviderKind::Openai => ("authorization", format!("Bearer {key}")),
        ProviderKind::Anthropic => ("x-api-key", key.clone()),
    };
    // The error would not show the key; say which variable is wrong.
    let mut value = reqwest::header::HeaderValue::from_str(&text).map_err(|_| {
        format!("provider {name}: {var} holds characters an HTTP header cannot carry")
    })?;
    value.set_sensitive(true);
    Ok(Target {
        endpoint,
        base: base.into(),
        auth: Some((header, value)),
        key: Some(key),
    })
}

impl HttpProvider {
    /// The client every provider shares: one connection pool (keyed by host) and one
    /// load of the system's root certificates.
    pub fn client() -> Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            // An API answer is never a redirect; following one would resend the key.
            .redirect(reqwest::redirect::Policy::none())
            .build()?)
    }

    /// The provider, usable or not ([`unusable`] says which before a run starts).
    pub fn new(name: &str, p: &Provider, client: reqwest::Client) -> HttpProvider {
        HttpProvider {
            name: name.into(),
            kind: p.kind,
            target: target(name, p),
            timeout: Duration::from_secs(p.timeout_s.unwrap_or(120)),
            client,
            prompt_cache_key: p.prompt_cache_key,
            systems: Mutex::default(),
        }
    }

    /// How this request asks for the provider's prompt cache: OpenAI's
    /// `prompt_cache_key` (one per system prompt, when the provider says so), and for
    /// Anthropic whether the system prompt is marked `cache_control` — only when
    /// another record sent it before (so it is shared), it is cacheable on the model
    /// ([`cacheable_system`]: cache prices, at least `cache_min_tokens`), and the
    /// model has a cache write price (so the write is charged as billed).
    pub(super) fn cache_request(&self, job: &Job, model: &Model) -> (Option<String>, bool) {
        match self.kind {
            ProviderKind::Openai => {
                let key = match self.prompt_cache_key {
                    true => system_hash(job).map(|h| format!("switchyard-{h:016x}")),
                    false => None,
                };
                (key, false)
            }
            ProviderKind::Anthropic => {
                let cacheable = model
                    .cache_write_price
                    .and_then(|_| cacheable_system(model, job));
                let Some((hash, _)) = cacheable else {
                    return (None, false);
                };
                let mut systems = self.systems.lock().unwrap_or_else(|e| e.into_inner());
                let first = systems
                    .entry((model.api_model.clone(), hash))
                    .or_insert_with(|| job.id.clone());
                (None, *first != job.id)
            }
        }
    }

    pub async fn complete(
        &self,
        job: &Job,
        model: &Model,
        max_tokens: u64,
    ) -> Result<Answer, (Failure, String)> {
        let t = self
            .target
            .as_ref()
            .map_err(|why| (Failure::Unusable, why.clone()))?;
        let max = u32::try_from(max_tokens).unwrap_or(u32::MAX);
        let (cache_key, cache_system) = self.cache_request(job, model);
        let mut req = self
            .client
            .post(t.endpoint.clone())
            .timeout(self.timeout)
            .header("content-type", "application/json");
        if let Some((header, value)) = &t.auth {
            req = req.header(*header, value.clone());
        }
        let body = match self.kind {
            ProviderKind::Openai => serde_json::to_vec(&wire::openai_request(
                job,
                &model.api_model,
                job.max_tokens.or(Some(max)),
                cache_key,
            )),
            ProviderKind::Anthropic => {
                req = req.header("anthropic-version", wire::ANTHROPIC_VERSION);
                let max = job.max_tokens.unwrap_or(max);
                serde_json::to_vec(&wire::anthropic_request(
                    job,
                    &model.api_model,
                    max,
                    cache_system,
                ))
            }
        }
        .expect("a request body always serializes");
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&self.name, &e))?;
        let status = resp.status().as_u16();
        let headers = (!(200..300).contains(&status)).then(|| resp.headers().clone());
        let bytes = resp.bytes().await.map_err(|e| transport(&self.name, &e))?;
        if let Some(headers) = headers {
            return Err(self.failure(t, status, &headers, &bytes));
        }
        let parsed = match self.kind {
            ProviderKind::Openai => wire::openai_answer(&bytes),
            ProviderKind::Anthropic => wire::anthropic_answer(&bytes),
        };
        match parsed {
            Ok(mut answer) => {
                answer.text = t.scrub(answer.text);
                Ok(answer)
            }
            Err(m) => Err((
                Failure::Malformed,
                format!("provider {}: {}", self.name, t.scrub(m)),
            )),
        }
    }
}

impl HttpProvider {
    /// A non-success answer as the policy's failure, its message naming this
    /// provider and scrubbed of the key.
    pub(super) fn failure(
        &self,
        t: &Target,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> (Failure, String) {
        let lookup = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let (f, msg) = wire::http_failure(status, body, lookup, SystemTime::now());
        (f, format!("provider {}: {}", self.name, t.scrub(msg)))
    }
}

impl Target {
    /// `text` with every copy of the key replaced, so an upstream that echoes it
    /// (in an error body, or an answer) cannot put it in results, logs or errors.
    pub(super) fn scrub(&self, text: String) -> String {
        match &self.key {
            Some(k) if text.contains(k.as_str()) => text.replace(k.as_str(), "[redacted key]"),
            _ => text,
        }
    }
}

/// Maps a reqwest error to the policy's failure. The message names the provider and
/// the kind of error, never the request (whose headers hold the key).
pub(super) fn transport(name: &str, e: &reqwest::Error) -> (Failure, String) {
    let (f, what) = if e.is_timeout() {
        (Failure::Timeout, "timed out")
    } else if e.is_connect() {
        (Failure::Connect, "cannot connect")
    } else if e.is_body() || e.is_decode() {
        (
            Failure::Reset,
            "connection dropped while reading the response",
        )
    } else {
        (Failure::Reset, "request failed")
    };
    (f, format!("provider {name}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(url: &str, insecure: bool) -> Provider {
        Provider {
            kind: ProviderKind::Openai,
            base_url: url.into(),
            api_key_env: None,
            rpm: None,
            tpm: None,
            timeout_s: None,
            allowed_tags: vec![],
            allow_insecure: insecure,
            prompt_cache_key: false,
            batch: false,
            batch_max_requests: None,
            batch_max_bytes: None,
            batch_max_tokens: None,
        }
    }

    #[test]
    fn plain_http_only_for_loopback() {
        for ok in [
            "https://api.openai.com/v1",
            "http://127.0.0.1:8080/v1",
            "http://localhost/v1",
            "http://[::1]:9/v1",
        ] {
            assert!(check_url("p", &provider(ok, false)).is_ok(), "{ok}");
        }
        let err = check_url("p", &provider("http://10.0.0.5/v1", false))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plain http:// is allowed only for loopback hosts"),
            "{err}"
        );
        assert!(check_url("p", &provider("http://10.0.0.5/v1", true)).is_ok());
        assert!(check_url("p", &provider("ftp://x", false)).is_err());
    }
}
