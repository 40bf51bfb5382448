//! `run --via batch|auto`: records whose model's provider has a batch API wait here
//! for a batch instead of making a call. A record task [`Batcher::join`]s with its
//! request line and waits for its [`Delivery`]; the collector groups lines by model
//! and submits a group when it is full (requests, bytes, tokens: the provider's
//! limits) or no line joined it for `[run] batch_linger_ms`. Each submission is
//! journaled step by step before the step is taken further (positions, then the
//! uploaded file, then the batch id, each synced), polled with backoff, and read —
//! output and error files both — only once the provider says it ended. A resume
//! re-attaches to the journaled submissions that still hold records without a row:
//! those records wait for that batch's results, and are never submitted again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::task::{Context, ToOwner};
use crate::config::{Config, ModelId};
use crate::journal::{BatchLine, Submission};
use crate::money::group_thousands;
use crate::provider::batch::{ApiError, LineResult, Status};
use crate::provider::http::HttpProvider;
use crate::provider::Failure;

/// What a record waiting on a batch gets back.
pub(super) struct Delivery {
    pub result: LineResult,
    /// The submission it came from.
    pub seq: u64,
    /// An earlier run already journaled (billed) this line's answer.
    pub billed: bool,
    /// The batch an earlier run planned for it was never created: the line is to
    /// be submitted in a new one.
    pub resubmit: bool,
}

/// A line joining the next batch of its model.
struct Join {
    model: ModelId,
    pos: u64,
    line: Vec<u8>,
    tokens: u64,
}

/// Results by record position: delivered to the waiting record, or kept until a
/// record of a re-attached batch starts waiting for it.
#[derive(Default)]
struct Mailbox {
    waiting: HashMap<u64, oneshot::Sender<Delivery>>,
    early: HashMap<u64, Delivery>,
}

pub(super) struct Batcher {
    joins: mpsc::UnboundedSender<Join>,
    mail: Arc<Mutex<Mailbox>>,
    /// Positions held by batches an earlier run submitted.
    attached: HashSet<u64>,
    leave: watch::Sender<bool>,
}

/// The custom_id of the record at `pos` (Anthropic allows `[a-zA-Z0-9_-]{1,64}`).
fn custom_id(pos: u64) -> String {
    format!("r{pos}")
}

fn position(custom_id: &str) -> Option<u64> {
    custom_id.strip_prefix('r')?.parse().ok()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Batcher {
    /// The batcher of a run, re-attached to the `restored` submissions of earlier
    /// runs; its collector and the re-attached submissions run as tasks on the
    /// current runtime.
    pub fn start(
        ctx: &Arc<Context>,
        restored: Vec<Submission>,
        next_seq: u64,
        billed: HashSet<(u64, u64)>,
    ) -> Batcher {
        let (joins, rx) = mpsc::unbounded_channel();
        let (leave, _) = watch::channel(false);
        let mail = Arc::new(Mutex::new(Mailbox::default()));
        let attached = restored
            .iter()
            .flat_map(|s| s.positions.iter().copied())
            .collect();
        let shared = Arc::new(Submitter {
            ctx: Arc::downgrade(ctx),
            cfg: ctx.cfg.clone(),
            mail: mail.clone(),
            seq: AtomicU64::new(next_seq),
            billed,
            enqueued: Mutex::default(),
        });
        for sub in restored {
            let s = shared.clone();
            tokio::spawn(async move { s.reattach(sub).await });
        }
        tokio::spawn(collect(shared, rx, leave.subscribe()));
        Batcher {
            joins,
            mail,
            attached,
            leave,
        }
    }

    /// The record at `pos` waits for its line's result: from the batch an earlier run
    /// submitted it in, or from the next batch of `model` (`line` built only then).
    /// `again`: the line is sent anew (its earlier batch did not answer it).
    pub fn join(
        &self,
        model: ModelId,
        pos: u64,
        tokens: u64,
        again: bool,
        line: impl FnOnce(&str) -> Vec<u8>,
    ) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        let fresh = {
            let mut mail = self.mail.lock().unwrap_or_else(|e| e.into_inner());
            match mail.early.remove(&pos).filter(|_| !again) {
                Some(d) => {
                    let _ = tx.send(d);
                    return rx;
                }
                None => {
                    mail.waiting.insert(pos, tx);
                }
            }
            again || !self.attached.contains(&pos)
        };
        if fresh {
            let line = line(&custom_id(pos));
            let _ = self.joins.send(Join {
                model,
                pos,
                line,
                tokens,
            });
        }
        rx
    }

    /// Ctrl-C: records waiting on batches stop waiting (their batches keep running
    /// and `--resume` picks them up); lines not yet submitted are dropped.
    pub fn leave(&self) {
        let _ = self.leave.send(true);
    }

    /// Resolves once [`Batcher::leave`] was called.
    pub async fn left(&self) {
        let mut rx = self.leave.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

/// What the collector and every submission share.
struct Submitter {
    /// Weak: the context owns the batcher that owns this.
    ctx: std::sync::Weak<Context>,
    cfg: Arc<Config>,
    mail: Arc<Mutex<Mailbox>>,
    seq: AtomicU64,
    billed: HashSet<(u64, u64)>,
    /// Per model, the prompt tokens its batches may have enqueued at once
    /// (`batch_max_tokens`).
    enqueued: Mutex<HashMap<ModelId, Arc<Semaphore>>>,
}

/// A model's lines waiting to be submitted.
struct Group {
    lines: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    tokens: u64,
    last: Instant,
}

/// Gathers joining lines into per-model groups and submits each when full or idle.
async fn collect(
    s: Arc<Submitter>,
    mut rx: mpsc::UnboundedReceiver<Join>,
    mut leave: watch::Receiver<bool>,
) {
    let mut groups: HashMap<ModelId, Group> = HashMap::new();
    let linger = Duration::from_millis(s.cfg.run.batch_linger_ms);
    let mut tick = tokio::time::interval((linger / 4).max(Duration::from_millis(5)));
    loop {
        tokio::select! {
            _ = leave.wait_for(|l| *l) => return,
            j = rx.recv() => {
                let Some(j) = j else { break };
                let p = s.cfg.provider_of(j.model);
                let (max_requests, max_bytes) = p.batch_limits();
                let max_tokens = p.batch_max_tokens.unwrap_or(u64::MAX);
                let g = groups.entry(j.model).or_insert_with(|| Group { lines: vec![], bytes: 0, tokens: 0, last: Instant::now() });
                let full = !g.lines.is_empty()
                    && (g.lines.len() + 1 > max_requests
                        || g.bytes + j.line.len() + 1 > max_bytes
                        || g.tokens.saturating_add(j.tokens) > max_tokens);
                if full {
                    let g = groups.remove(&j.model).expect("the group exists");
                    s.clone().submit_group(j.model, g.lines, g.tokens);
                }
                let g = groups.entry(j.model).or_insert_with(|| Group { lines: vec![], bytes: 0, tokens: 0, last: Instant::now() });
                g.bytes += j.line.len() + 1;
                g.tokens = g.tokens.saturating_add(j.tokens);
                g.lines.push((j.pos, j.line));
                g.last = Instant::now();
            }
            _ = tick.tick() => {
                let idle: Vec<ModelId> = groups.iter().filter(|(_, g)| g.last.elapsed() >= linger).map(|(m, _)| *m).collect();
                for m in idle {
                    let g = groups.remove(&m).expect("listed");
                    s.clone().submit_group(m, g.lines, g.tokens);
                }
            }
        }
    }
    for (m, g) in groups {
        s.clone().submit_group(m, g.lines, g.tokens);
    }
}

impl Submitter {
    fn submit_group(self: Arc<Self>, model: ModelId, lines: Vec<(u64, Vec<u8>)>, tokens: u64) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move { self.submit(seq, model, lines, tokens).await });
    }

    /// Journals a step of a submission and waits until it is on disk. `false`: the
    /// run is over (its dispatcher is gone), so nothing may go further.
    async fn journal(&self, line: BatchLine) -> bool {
        let Some(ctx) = self.ctx.upgrade() else {
            return false;
        };
        let (tx, rx) = oneshot::channel();
        if ctx.tx.send(ToOwner::Batch(line, tx)).is_err() {
            return false;
        }
        drop(ctx);
        matches!(rx.await, Ok(true))
    }

    fn note(&self, text: String) {
        if let Some(ctx) = self.ctx.upgrade() {
            let _ = ctx.tx.send(ToOwner::Note(text));
        }
    }

    fn provider(&self, model: ModelId) -> Option<Arc<Context>> {
        let ctx = self.ctx.upgrade()?;
        ctx.shared.backend.batch_provider(&self.cfg, model)?;
        Some(ctx)
    }

    fn deliver(&self, seq: u64, pos: u64, result: LineResult) {
        let d = Delivery {
            result,
            seq,
            billed: self.billed.contains(&(seq, pos)),
            resubmit: false,
        };
        self.post(pos, d);
    }

    /// Hands `d` to the record at `pos`, now or when it starts waiting.
    fn post(&self, pos: u64, d: Delivery) {
        let mut mail = self.mail.lock().unwrap_or_else(|e| e.into_inner());
        match mail.waiting.remove(&pos) {
            Some(tx) => {
                if let Err(d) = tx.send(d) {
                    // The record stopped waiting (Ctrl-C): keep it for nobody.
                    drop(d);
                }
            }
            None => {
                mail.early.insert(pos, d);
            }
        }
    }

    fn deliver_all(&self, seq: u64, positions: &[u64], result: LineResult) {
        for &pos in positions {
            self.deliver(seq, pos, result.clone());
        }
    }

    /// A fresh submission: journaled, uploaded, created, then polled to its end.
    async fn submit(
        self: Arc<Self>,
        seq: u64,
        model: ModelId,
        lines: Vec<(u64, Vec<u8>)>,
        tokens: u64,
    ) {
        // The provider's enqueued-token limit: wait until the model's batches in
        // progress leave room for this one, and hold it until it ends.
        let mut room = match self.enqueued_limit(model) {
            Some((sem, max)) => {
                // A single request over the limit still goes (alone).
                let want = tokens.min(max).min(u64::from(u32::MAX)) as u32;
                sem.acquire_many_owned(want).await.ok()
            }
            None => None,
        };
        let Some(ctx) = self.provider(model) else {
            return;
        };
        let p = ctx
            .shared
            .backend
            .batch_provider(&self.cfg, model)
            .expect("checked");
        let m = &self.cfg.models[model];
        let positions: Vec<u64> = lines.iter().map(|(pos, _)| *pos).collect();
        let planned = BatchLine {
            seq,
            model: Some(m.name.clone()),
            provider: Some(m.provider.clone()),
            positions: Some(positions.clone()),
            at: Some(now_secs()),
            ..BatchLine::default()
        };
        if !self.journal(planned).await {
            return;
        }
        let refs: Vec<&[u8]> = lines.iter().map(|(_, l)| l.as_slice()).collect();
        let file = match self.retrying(|| p.upload(&refs)).await {
            Ok(file) => file,
            Err(e) => {
                drop(refs);
                room.take();
                return self.not_submitted(seq, model, lines, tokens, e).await;
            }
        };
        if let Some(f) = &file {
            if !self
                .journal(BatchLine {
                    seq,
                    file: Some(f.clone()),
                    ..BatchLine::default()
                })
                .await
            {
                return;
            }
        }
        let tag = format!("{seq}");
        let status = match self
            .retrying(|| p.create(file.as_deref(), &refs, &tag))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                drop(refs);
                room.take();
                return self.not_submitted(seq, model, lines, tokens, e).await;
            }
        };
        drop(refs);
        drop(lines);
        if !self
            .journal(BatchLine {
                seq,
                id: Some(status.id.clone()),
                ..BatchLine::default()
            })
            .await
        {
            return;
        }
        self.note(format!(
            "batch {seq}: submitted {} requests to {} as {} ({})",
            group_thousands(positions.len() as u64),
            m.name,
            status.id,
            status.state
        ));
        drop(ctx);
        self.poll(seq, model, status.id, positions).await;
    }

    /// A submission the provider refused or could not take: a 413 splits it in two
    /// (each journaled anew); any other failure goes to its records, which the
    /// policy sends on (realtime, or a new batch).
    async fn not_submitted(
        self: &Arc<Self>,
        seq: u64,
        model: ModelId,
        mut lines: Vec<(u64, Vec<u8>)>,
        tokens: u64,
        (f, msg): ApiError,
    ) {
        if !self
            .journal(BatchLine {
                seq,
                dropped: true,
                ..BatchLine::default()
            })
            .await
        {
            return;
        }
        let too_large = matches!(f, Failure::Http { status: 413, .. });
        if too_large && lines.len() > 1 {
            self.note(format!(
                "batch {seq}: {msg}; splitting its {} requests in two",
                lines.len()
            ));
            let second = lines.split_off(lines.len() / 2);
            // Tokens split by share of lines (only the enqueued-token wait uses them).
            let first = tokens / 2;
            self.clone().submit_group(model, lines, first);
            self.clone().submit_group(model, second, tokens - first);
            return;
        }
        self.note(format!("batch {seq}: not submitted: {msg}"));
        let positions: Vec<u64> = lines.iter().map(|(p, _)| *p).collect();
        self.deliver_all(seq, &positions, LineResult::Failed(f, msg));
    }

    /// A batch API call, retried with backoff while it fails transiently (up to
    /// `[run] max_retries` + 3 attempts).
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let mut delay = Duration::from_millis(self.cfg.run.retry_base_ms.max(1));
        let tries = self.cfg.run.max_retries + 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call().await {
                Ok(v) => return Ok(v),
                Err((f, msg)) => {
                    let transient = match &f {
                        Failure::Http { status, .. } => {
                            matches!(status, 408 | 409 | 429 | 500..=599)
                        }
                        Failure::Timeout
                        | Failure::Reset
                        | Failure::Connect
                        | Failure::Malformed => true,
                        Failure::Unusable => false,
                    };
                    if !transient || attempt >= tries {
                        return Err((f, msg));
                    }
                    tracing::debug!(error = %msg, attempt, "batch API call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(
                        self.cfg.run.retry_max_delay_ms.max(1),
                    ));
                }
            }
        }
    }

    /// A submission an earlier run journaled: polled if it has a batch id; if only
    /// its file, the batch made from that file is found (or created); with neither,
    /// an Anthropic batch created since it was planned with as many requests is
    /// found (or it was never submitted, and its records run again).
    async fn reattach(self: Arc<Self>, sub: Submission) {
        let Some(model) = self.cfg.model_id(&sub.model) else {
            return self.deliver_all(
                sub.seq,
                &sub.positions,
                LineResult::NotRun(format!(
                    "batch {} was for model {}, no longer in the catalog",
                    sub.seq, sub.model
                )),
            );
        };
        let Some(ctx) = self.provider(model) else {
            return self.deliver_all(
                sub.seq,
                &sub.positions,
                LineResult::NotRun(format!(
                    "batch {}: provider {} has no batch API now",
                    sub.seq, sub.provider
                )),
            );
        };
        let p = ctx
            .shared
            .backend
            .batch_provider(&self.cfg, model)
            .expect("checked");
        let id = match (&sub.id, &sub.file) {
            (Some(id), _) => id.clone(),
            (None, file) => {
                let found = match self.retrying(|| p.recent()).await {
                    Ok(recent) => find(&recent, &sub),
                    Err((f, msg)) => {
                        return self.deliver_all(
                            sub.seq,
                            &sub.positions,
                            LineResult::Failed(f, msg),
                        )
                    }
                };
                match (found, file) {
                    (Found::One(id), _) => id,
                    (Found::None, Some(file)) => {
                        let tag = sub.seq.to_string();
                        match self.retrying(|| p.create(Some(file), &[], &tag)).await {
                            Ok(s) => s.id,
                            Err((f, msg)) => {
                                return self.deliver_all(
                                    sub.seq,
                                    &sub.positions,
                                    LineResult::Failed(f, msg),
                                )
                            }
                        }
                    }
                    (Found::None, None) => {
                        // Never created: its records go in new batches.
                        if self
                            .journal(BatchLine {
                                seq: sub.seq,
                                dropped: true,
                                ..BatchLine::default()
                            })
                            .await
                        {
                            for &pos in &sub.positions {
                                let why = format!("batch {} was never submitted", sub.seq);
                                self.post(
                                    pos,
                                    Delivery {
                                        result: LineResult::NotRun(why),
                                        seq: sub.seq,
                                        billed: false,
                                        resubmit: true,
                                    },
                                );
                            }
                        }
                        return;
                    }
                    (Found::Several(ids), _) => {
                        let msg = format!(
                            "batch {}: cannot tell which of the provider's batches {} holds these records (the run was killed while creating it); not submitting them again",
                            sub.seq,
                            ids.join(", ")
                        );
                        self.note(msg.clone());
                        return self.deliver_all(
                            sub.seq,
                            &sub.positions,
                            LineResult::Failed(
                                Failure::Http {
                                    status: 409,
                                    retry_after: None,
                                    context_length_exceeded: false,
                                },
                                msg,
                            ),
                        );
                    }
                }
            }
        };
        if sub.id.is_none()
            && !self
                .journal(BatchLine {
                    seq: sub.seq,
                    id: Some(id.clone()),
                    ..BatchLine::default()
                })
                .await
        {
            return;
        }
        self.note(format!(
            "batch {}: re-attached to {} ({} requests, {})",
            sub.seq,
            id,
            group_thousands(sub.positions.len() as u64),
            sub.model
        ));
        drop(ctx);
        self.poll(sub.seq, model, id, sub.positions).await;
    }

    /// Polls the batch with backoff until it ended, then reads its output and error
    /// files and delivers every line; a record the results do not mention did not
    /// run and goes back through the normal path.
    async fn poll(&self, seq: u64, model: ModelId, id: String, positions: Vec<u64>) {
        let run = &self.cfg.run;
        let mut delay = Duration::from_millis(run.batch_poll_ms.max(1));
        let max = Duration::from_millis(run.batch_poll_max_ms.max(run.batch_poll_ms).max(1));
        let mut last: Option<(String, u64, u64)> = None;
        let status: Status = loop {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(max);
            let Some(ctx) = self.provider(model) else {
                return;
            };
            let p = ctx
                .shared
                .backend
                .batch_provider(&self.cfg, model)
                .expect("checked");
            let s = match self.retrying(|| p.status(&id)).await {
                Ok(s) => s,
                Err((f, msg)) => {
                    // A lasting refusal: the records go on without this batch.
                    self.note(format!("batch {seq} ({id}): cannot read its status: {msg}"));
                    return self.deliver_all(seq, &positions, LineResult::Failed(f, msg));
                }
            };
            let now = (s.state.clone(), s.succeeded, s.failed);
            if last.as_ref() != Some(&now) {
                self.note(format!(
                    "batch {seq} ({id}, {}): {} — {} of {} answered, {} failed",
                    self.cfg.models[model].name,
                    s.state,
                    group_thousands(s.succeeded),
                    group_thousands(s.total.max(positions.len() as u64)),
                    group_thousands(s.failed)
                ));
                last = Some(now);
            }
            if s.ended {
                break s;
            }
        };
        let Some(ctx) = self.provider(model) else {
            return;
        };
        let p: &HttpProvider = ctx
            .shared
            .backend
            .batch_provider(&self.cfg, model)
            .expect("checked");
        let results = match self.retrying(|| p.results(&status)).await {
            Ok(r) => r,
            Err((f, msg)) => {
                self.note(format!(
                    "batch {seq} ({id}): cannot read its results: {msg}"
                ));
                return self.deliver_all(seq, &positions, LineResult::Failed(f, msg));
            }
        };
        let mut left: HashSet<u64> = positions.iter().copied().collect();
        for (cid, result) in results {
            match position(&cid) {
                Some(pos) if left.remove(&pos) => self.deliver(seq, pos, result),
                // Not one of ours (or twice): ignored.
                _ => {
                    tracing::warn!(batch = %id, custom_id = %cid, "a batch result for no record of this batch")
                }
            }
        }
        let why = match &status.errors {
            Some(e) if !e.is_empty() => format!("batch {id} {}: {e}", status.state),
            _ => format!(
                "batch {id} ended {} without a result for this record",
                status.state
            ),
        };
        let mut left: Vec<u64> = left.into_iter().collect();
        left.sort_unstable();
        if !left.is_empty() {
            self.note(format!(
                "batch {seq} ({id}): {} records got no result ({}); they run again",
                left.len(),
                status.state
            ));
        }
        self.deliver_all(seq, &left, LineResult::NotRun(why));
    }

    /// The model's enqueued-token allowance and its size, when the provider sets
    /// `batch_max_tokens`.
    fn enqueued_limit(&self, model: ModelId) -> Option<(Arc<Semaphore>, u64)> {
        let max = self
            .cfg
            .provider_of(model)
            .batch_max_tokens?
            .min(u64::from(u32::MAX));
        let mut map = self.enqueued.lock().unwrap_or_else(|e| e.into_inner());
        let sem = map
            .entry(model)
            .or_insert_with(|| Arc::new(Semaphore::new(max as usize)));
        Some((sem.clone(), max))
    }
}

enum Found {
    None,
    One(String),
    Several(Vec<String>),
}

/// The provider's batch that a journaled submission without a batch id became: the
/// one made from its file (OpenAI), else one created since it was planned holding
/// as many requests (Anthropic lists no custom ids until a batch ends).
fn find(recent: &[Status], sub: &Submission) -> Found {
    let matching: Vec<String> = match &sub.file {
        Some(file) => recent
            .iter()
            .filter(|s| s.input_file.as_deref() == Some(file))
            .map(|s| s.id.clone())
            .collect(),
        None => recent
            .iter()
            .filter(|s| s.input_file.is_none())
            .filter(|s| s.created_at.is_some_and(|t| t + 120 >= sub.at))
            .filter(|s| s.total == sub.positions.len() as u64)
            .map(|s| s.id.clone())
            .collect(),
    };
    match matching.len() {
        0 => Found::None,
        1 => Found::One(matching.into_iter().next().expect("one")),
        _ => Found::Several(matching),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_name_positions() {
        assert_eq!(custom_id(42), "r42");
        assert_eq!(position("r42"), Some(42));
        assert_eq!(position("x42"), None);
    }
}
