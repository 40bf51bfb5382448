//! The shared ledger (`run --ledger URL --budget-name NAME`): one budget and one set
//! of rate limits for every process that names the same Redis (or Valkey) and name.
//!
//! - **Budget.** The server holds the limit, what was spent and what is reserved, in
//!   integer micro-dollars (Lua numbers are doubles: exact below 2^53 µ$). A process
//!   claims money in blocks into its *lease* (`claim`): the server grants a claim only
//!   while spent + reserved stays within the limit. It reserves requests' worst cases
//!   locally against what it claimed, and reports every settled cost (`settle`,
//!   coalesced into one call for all that settle together): spent grows, the lease and
//!   reserved shrink by the same. What it does not need it gives back. Micro-dollar
//!   rounding is always against the process (claims and settlements round up, returns
//!   down), so the server never counts less than was spent.
//! - **Leases expire.** Every claim, settle and heartbeat renews the process's lease
//!   for `[ledger] lease_s`; a lease not renewed in time (a process killed with -9) is
//!   removed by the next script that runs and its money returns to the budget. Its
//!   settled spend stays.
//! - **Rate limits.** `rpm` and `tpm` of every model and provider as GCRA on the
//!   server's clock (`TIME`): each request takes its slot in every scope it counts
//!   against in one script, and waits until then. A 429's `Retry-After` pauses the
//!   scope for every process.
//!
//! Keys live under `switchyard:{NAME}:` (one hash slot on a cluster).

mod scripts;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use crate::money::Usd;

/// One pico-dollar in a micro-dollar.
const PICO_PER_MICRO: u128 = 1_000_000;

/// `ceil(usd)` in micro-dollars.
pub fn micro_up(usd: Usd) -> u64 {
    u64::try_from(usd.pico().div_ceil(PICO_PER_MICRO)).unwrap_or(u64::MAX)
}

/// `floor(usd)` in micro-dollars.
pub fn micro_down(usd: Usd) -> u64 {
    u64::try_from(usd.pico() / PICO_PER_MICRO).unwrap_or(u64::MAX)
}

pub fn from_micro(micro: i64) -> Usd {
    Usd::from_pico(u128::try_from(micro.max(0)).unwrap_or(0) * PICO_PER_MICRO)
}

/// The Redis keys of one budget name.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(name: &str) -> Keys {
        Keys {
            prefix: format!("switchyard:{{{name}}}:"),
        }
    }
    fn budget(&self) -> String {
        format!("{}budget", self.prefix)
    }
    fn leases(&self) -> String {
        format!("{}leases", self.prefix)
    }
    fn expiry(&self) -> String {
        format!("{}expiry", self.prefix)
    }
    /// Each holder's total spend as last reported (what makes a settlement
    /// idempotent).
    fn told(&self) -> String {
        format!("{}told", self.prefix)
    }
    fn holders(&self) -> String {
        format!("{}holders", self.prefix)
    }
    /// A rate scope's theoretical arrival time, and its pause.
    fn rate(&self, scope: &str) -> String {
        format!("{}rate:{scope}", self.prefix)
    }
    fn pause(&self, scope: &str) -> String {
        format!("{}pause:{scope}", self.prefix)
    }
    fn rate_pattern(&self) -> String {
        format!("{}rate:*", self.prefix)
    }
}

/// One rate scope a request counts against: `model:NAME:rpm`, `provider:NAME:tpm`…
/// Its interval carries a 0.1% margin (a minute of slots spans 60.06 s), so arrival
/// jitter of up to 60 ms cannot put rpm + 1 requests in one 60 s window.
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: String,
    /// Microseconds one unit (a request, a token) takes at the sustained rate.
    pub interval_us: f64,
    /// A unit is a token (tpm: a request takes its tokens), else a request.
    pub per_token: bool,
    /// How far ahead of the sustained rate a request may go (µs): 0 for rpm, one
    /// second for tpm.
    pub burst_us: f64,
}

/// A model's rate script arguments, prepared once: the pause keys, then the rate
/// keys; per rate scope its interval, whether a unit is a token, its burst.
#[derive(Debug)]
pub struct SlotPlan {
    keys: Vec<String>,
    pauses: usize,
    scopes: Vec<(String, bool, String)>,
}

/// Why the ledger cannot be used right now.
#[derive(Debug, Clone)]
pub struct Lost(pub String);

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process's connection to the shared ledger.
pub struct SharedLedger {
    conn: ConnectionManager,
    keys: Keys,
    pub name: String,
    holder: String,
    lease_ms: u64,
    /// The budget's limit in micro-dollars (`--budget`), when this run has one.
    limit: Option<u64>,
    /// Settled costs in pico-dollars, to the loop that reports them.
    settles: mpsc::UnboundedSender<(u128, oneshot::Sender<Result<(), Lost>>)>,
    /// The lease expired while this process lived (it stalled past `lease_s`): its
    /// claimed money went back to the budget.
    lease_lost: AtomicBool,
    /// Each model's [`SlotPlan`], by model id, built on first use.
    plans: std::sync::RwLock<Vec<Option<Arc<SlotPlan>>>>,
}

fn lost(e: redis::RedisError) -> Lost {
    Lost(format!("the ledger is unreachable: {e}"))
}

/// Who holds a lease: host, process id and start, so `ledger status` can say.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nanos:08x}", std::process::id())
}

/// Opens a connection manager to `url` (`redis://…`, `rediss://…`, `redis+unix://…`,
/// `unix://…`), checked with a PING within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<ConnectionManager> {
    let client = redis::Client::open(url)
        .with_context(|| format!("--ledger {}: not a Redis URL", redact(url)))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let mut conn = tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "--ledger {}: no answer within {}s",
                redact(url),
                timeout.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("--ledger {}: cannot connect: {e}", redact(url)))?;
    let _: String = tokio::time::timeout(timeout, redis::cmd("PING").query_async(&mut conn))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "--ledger {}: no answer to PING within {}s",
                redact(url),
                timeout.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("--ledger {}: PING failed: {e}", redact(url)))?;
    Ok(conn)
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl SharedLedger {
    /// Joins budget `name` on the server at `url` with this run's `--budget`
    /// (`limit`): the first process sets the limit, later ones must name the same.
    pub async fn join(
        url: &str,
        name: &str,
        limit: Option<Usd>,
        lease: Duration,
    ) -> Result<Arc<SharedLedger>> {
        let conn = connect(url, Duration::from_secs(5)).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let ledger = Arc::new(SharedLedger {
            conn,
            keys: Keys::new(name),
            name: name.into(),
            holder: holder_id(),
            lease_ms: lease.as_millis().max(1) as u64,
            limit: limit.map(micro_down),
            settles: tx,
            lease_lost: AtomicBool::new(false),
            plans: std::sync::RwLock::default(),
        });
        // Registers the lease (empty) and checks the limit.
        let (granted, _) = ledger
            .claim_micro(0, 0)
            .await
            .map_err(|Lost(e)| anyhow::anyhow!(e))?;
        if granted == -1 {
            let theirs = ledger
                .status()
                .await
                .ok()
                .and_then(|s| s.limit)
                .map_or("none".into(), |l| l.to_string());
            bail!(
                "ledger budget `{name}` has the limit {theirs}; this run says {}: every process on one budget name must pass the same --budget",
                limit.map_or("none".into(), |l| l.to_string())
            );
        }
        tokio::spawn(settle_loop(Arc::downgrade(&ledger), rx));
        tokio::spawn(heartbeat(Arc::downgrade(&ledger)));
        Ok(ledger)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Claims `want` micro-dollars into the lease, or at least `min` of them; 0 when
    /// even `min` does not fit. Returns (granted, available before); granted is -1
    /// when the server's limit is not this run's.
    async fn claim_micro(&self, want: u64, min: u64) -> Result<(i64, i64), Lost> {
        let k = &self.keys;
        let limit = self.limit.map_or(String::new(), |l| l.to_string());
        let r: (i64, i64) = scripts::claim()
            .key(k.budget())
            .key(k.leases())
            .key(k.expiry())
            .key(k.holders())
            .arg(&self.holder)
            .arg(want)
            .arg(self.lease_ms)
            .arg(limit)
            .arg(min)
            .invoke_async(&mut self.conn())
            .await
            .map_err(lost)?;
        Ok(r)
    }

    /// Claims at least `needed` (ideally `block`) into this process's lease: what was
    /// granted, zero when `needed` does not fit what the budget has left.
    pub async fn claim(&self, needed: Usd, block: Usd) -> Result<Usd, Lost> {
        let min = micro_up(needed).max(1);
        let want = micro_up(block).max(min);
        let (granted, _) = self.claim_micro(want, min).await?;
        Ok(from_micro(granted))
    }

    /// Reports a settled cost, once: `Ok` once the server counts it; an error when
    /// the server did not answer this time (the cost stays with the reporter, which
    /// sends it again; do not resend). The server counts this process's spend as its
    /// exact total rounded up to the micro-dollar: at most 1 µ$ over.
    pub async fn settle(&self, cost: Usd) -> Result<(), Lost> {
        let (tx, rx) = oneshot::channel();
        if self.settles.send((cost.pico(), tx)).is_err() {
            return Err(Lost("the ledger connection is closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Lost("the ledger connection is closed".into())))
    }

    /// Waits (at most `within`) until every reported cost is on the server.
    pub async fn flush(&self, within: Duration) -> Result<(), Lost> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.settle(Usd::ZERO).await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Gives `amount` (rounded down) back from the lease; `last` ends the lease.
    pub async fn give_back(&self, amount: Usd, last: bool) -> Result<(), Lost> {
        let k = &self.keys;
        let _: i64 = scripts::give_back()
            .key(k.budget())
            .key(k.leases())
            .key(k.expiry())
            .key(k.holders())
            .arg(&self.holder)
            .arg(micro_down(amount))
            .arg(self.lease_ms)
            .arg(i32::from(last))
            .invoke_async(&mut self.conn())
            .await
            .map_err(lost)?;
        Ok(())
    }

    /// Takes this request's slot in every rate scope, after any pause on `paused`
    /// (its model and provider): how long from now until it may be sent, by the
    /// server's clock.
    /// A model's pause and rate scopes as the script takes them, built once per
    /// model (`make` says which they are) and reused by every request.
    pub fn plan(
        &self,
        model: usize,
        make: impl FnOnce() -> (Vec<String>, Vec<Scope>),
    ) -> Arc<SlotPlan> {
        if let Some(Some(p)) = self
            .plans
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return p.clone();
        }
        let (paused, scopes) = make();
        let mut keys: Vec<String> = paused.iter().map(|p| self.keys.pause(p)).collect();
        keys.extend(scopes.iter().map(|s| self.keys.rate(&s.name)));
        let plan = Arc::new(SlotPlan {
            keys,
            pauses: paused.len(),
            scopes: scopes
                .iter()
                .map(|s| {
                    (
                        format!("{:.6}", s.interval_us),
                        s.per_token,
                        format!("{:.0}", s.burst_us),
                    )
                })
                .collect(),
        });
        let mut plans = self.plans.write().unwrap_or_else(|e| e.into_inner());
        if plans.len() <= model {
            plans.resize(model + 1, None);
        }
        plans[model] = Some(plan.clone());
        plan
    }

    /// Takes a request's slot (of `tokens`) in every rate scope of its `plan`, after
    /// any pause on its model and provider: how long from now until it may be sent,
    /// by the server's clock.
    pub async fn slot(&self, plan: &SlotPlan, tokens: u64) -> Result<Duration, Lost> {
        let mut inv = scripts::rate().prepare_invoke();
        for k in &plan.keys {
            inv.key(k.as_str());
        }
        inv.arg(plan.scopes.len()).arg(plan.pauses);
        for (interval, per_token, burst) in &plan.scopes {
            let units = if *per_token { tokens.max(1) } else { 1 };
            inv.arg(interval.as_str()).arg(units).arg(burst.as_str());
        }
        let wait_us: i64 = inv.invoke_async(&mut self.conn()).await.map_err(lost)?;
        Ok(Duration::from_micros(wait_us.max(0) as u64))
    }

    /// Pauses the scopes (`model:NAME`, `provider:NAME`) for every process for `wait`
    /// (a 429's Retry-After).
    pub async fn pause(&self, scopes: &[String], wait: Duration) -> Result<(), Lost> {
        let mut inv = scripts::pause().prepare_invoke();
        for s in scopes {
            inv.key(self.keys.pause(s));
        }
        inv.arg(wait.as_micros() as u64);
        let _: i64 = inv.invoke_async(&mut self.conn()).await.map_err(lost)?;
        Ok(())
    }

    /// Renews the lease; `false` when it had expired (its money went back).
    async fn renew(&self) -> Result<bool, Lost> {
        let k = &self.keys;
        let alive: i64 = scripts::renew()
            .key(k.leases())
            .key(k.expiry())
            .arg(&self.holder)
            .arg(self.lease_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(lost)?;
        Ok(alive == 1)
    }

    /// The lease expired while this process was alive: what it had claimed is no
    /// longer reserved for it (the run stops claiming on it; see `run::gate`).
    pub fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Relaxed)
    }

    /// After a lost lease: claims anew what this process's reservations need
    /// (`must`) and what it held beyond them (`want` in all); what was granted.
    pub async fn reclaim(&self, must: Usd, want: Usd) -> Result<Usd, Lost> {
        let (granted, _) = self.claim_micro(micro_up(want), micro_up(must)).await?;
        self.lease_lost.store(false, Ordering::Relaxed);
        Ok(from_micro(granted.max(0)))
    }

    pub async fn status(&self) -> Result<Status, Lost> {
        status(&mut self.conn(), &self.keys).await
    }
}

/// Sends settled costs: all that are waiting in one script call, as this process's
/// running total (rounded up to the µ$), which the server applies idempotently.
/// When the server does not answer, the costs stay counted here and the total is
/// sent again (with backoff) until it is taken; callers are told it failed and
/// never resend.
async fn settle_loop(
    ledger: std::sync::Weak<SharedLedger>,
    mut rx: mpsc::UnboundedReceiver<(u128, oneshot::Sender<Result<(), Lost>>)>,
) {
    let mut settled = 0u128;
    let mut told = 0u64;
    let mut waiting: Vec<oneshot::Sender<Result<(), Lost>>> = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let dirty = micro_up(Usd::from_pico(settled)) > told;
        let msg = if dirty && waiting.is_empty() {
            // Unsent spend and nobody asking: retry after the backoff, or sooner
            // when a new cost arrives.
            tokio::select! {
                m = rx.recv() => m.map(Some),
                _ = tokio::time::sleep(backoff) => Some(None),
            }
        } else if waiting.is_empty() {
            rx.recv().await.map(Some)
        } else {
            Some(None)
        };
        let Some(msg) = msg else { return };
        if let Some((pico, ack)) = msg {
            settled += pico;
            waiting.push(ack);
        }
        while let Ok((pico, ack)) = rx.try_recv() {
            settled += pico;
            waiting.push(ack);
        }
        let Some(l) = ledger.upgrade() else { return };
        let due = micro_up(Usd::from_pico(settled));
        let k = &l.keys;
        let r: Result<i64, _> = scripts::settle()
            .key(k.budget())
            .key(k.leases())
            .key(k.expiry())
            .key(k.told())
            .arg(&l.holder)
            .arg(due)
            .arg(l.lease_ms)
            .invoke_async(&mut l.conn())
            .await;
        let r = match r {
            Ok(alive) => {
                told = due;
                backoff = Duration::from_millis(50);
                if alive == 0 {
                    l.lease_lost.store(true, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                backoff = (backoff * 2).min(Duration::from_secs(1));
                Err(lost(e))
            }
        };
        for ack in waiting.drain(..) {
            let _ = ack.send(r.clone());
        }
    }
}

/// Renews the lease a few times per `lease_s` while the process runs.
async fn heartbeat(ledger: std::sync::Weak<SharedLedger>) {
    loop {
        let every = match ledger.upgrade() {
            Some(l) => Duration::from_millis((l.lease_ms / 4).max(10)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(l) = ledger.upgrade() else { return };
        match l.renew().await {
            Ok(true) => {}
            Ok(false) => {
                if !l.lease_lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(ledger = %l.name, "the ledger lease expired while this process ran; claiming anew");
                }
            }
            Err(e) => tracing::debug!(error = %e, "ledger heartbeat failed"),
        }
    }
}

/// What `switchyard ledger status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub limit: Option<Usd>,
    pub spent: Usd,
    pub reserved: Usd,
    /// Money returned from leases that expired.
    pub expired: Usd,
    /// (holder, amount, ms until it expires)
    pub leases: Vec<(String, Usd, i64)>,
    /// (scope, ms until its next free slot; ≤ 0: free now)
    pub limits: Vec<(String, i64)>,
}

/// The budget hash, the leases, their expiry and the server's time, in one reply.
type Snapshot = (
    Vec<(String, String)>,
    Vec<(String, i64)>,
    Vec<(String, f64)>,
    (i64, i64),
);

pub async fn status(conn: &mut ConnectionManager, keys: &Keys) -> Result<Status, Lost> {
    let (budget, leases, expiry, now): Snapshot = redis::pipe()
        .cmd("HGETALL")
        .arg(keys.budget())
        .cmd("HGETALL")
        .arg(keys.leases())
        .cmd("ZRANGE")
        .arg(keys.expiry())
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .cmd("TIME")
        .query_async(conn)
        .await
        .map_err(lost)?;
    let now_ms = now.0 * 1000 + now.1 / 1000;
    let get = |k: &str| {
        budget
            .iter()
            .find(|(f, _)| f == k)
            .and_then(|(_, v)| v.parse::<i64>().ok())
    };
    let mut scopes: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(keys.rate_pattern())
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(lost)?;
        scopes.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    scopes.sort();
    let mut limits = Vec::new();
    for key in scopes {
        let tat: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(lost)?;
        let tat_us = tat.and_then(|t| t.parse::<f64>().ok()).unwrap_or(0.0);
        let scope = key
            .trim_start_matches(&format!("{}rate:", keys.prefix))
            .to_string();
        limits.push((scope, (tat_us / 1000.0) as i64 - now_ms));
    }
    Ok(Status {
        limit: get("limit").map(from_micro),
        spent: from_micro(get("spent").unwrap_or(0)),
        reserved: from_micro(get("reserved").unwrap_or(0)),
        expired: from_micro(get("expired").unwrap_or(0)),
        leases: leases
            .into_iter()
            .map(|(h, amount)| {
                let left = expiry
                    .iter()
                    .find(|(e, _)| *e == h)
                    .map_or(0, |(_, at)| *at as i64 - now_ms);
                (h, from_micro(amount), left)
            })
            .collect(),
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_rounding_is_against_the_process() {
        let u = Usd::from_pico(1_000_001);
        assert_eq!(micro_up(u), 2);
        assert_eq!(micro_down(u), 1);
        assert_eq!(from_micro(2), Usd::from_pico(2_000_000));
        assert_eq!(from_micro(-5), Usd::ZERO);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("redis://:s3cret@host:6379/0"),
            "redis://[redacted]@host:6379/0"
        );
        assert_eq!(
            redact("redis+unix:///tmp/r.sock"),
            "redis+unix:///tmp/r.sock"
        );
    }
}
