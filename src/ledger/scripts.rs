//! The ledger's Lua scripts: each runs atomically on the server, reads the server's
//! clock, and does its integer money arithmetic with HINCRBY (exact 64-bit).

use std::sync::OnceLock;

use redis::Script;

/// Removes expired leases (their money goes back; `expired` counts it). Shared by
/// the scripts that touch the budget. KEYS[1] budget, [2] leases, [3] expiry,
/// [4] holders; `now` in ms.
const REAP: &str = r#"
local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
  for _, h in ipairs(dead) do
    local amt = tonumber(redis.call('HGET', KEYS[2], h) or '0')
    if amt > 0 then
      redis.call('HINCRBY', KEYS[1], 'reserved', -amt)
      redis.call('HINCRBY', KEYS[1], 'expired', amt)
    end
    redis.call('HDEL', KEYS[2], h)
    redis.call('ZREM', KEYS[3], h)
    if KEYS[4] then redis.call('HDEL', KEYS[4], h) end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
reap(now)
"#;

fn with_reap(body: &str) -> Script {
    Script::new(&format!("{REAP}\n{body}"))
}

/// ARGV: holder, want µ$, lease ms, limit µ$ ('' = none), min µ$.
/// Returns {granted, available}; granted -1: the limit differs from ours.
pub fn claim() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_reap(
            r#"
local limit = redis.call('HGET', KEYS[1], 'limit')
if ARGV[4] ~= '' then
  if not limit then
    redis.call('HSET', KEYS[1], 'limit', ARGV[4])
    limit = ARGV[4]
  elseif limit ~= ARGV[4] then
    return {-1, 0}
  end
end
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local want = tonumber(ARGV[2])
local min = tonumber(ARGV[5])
local avail = -1
local grant = want
if limit then
  avail = tonumber(limit) - spent - reserved
  if avail < grant then grant = avail end
  if grant < min then grant = 0 end
end
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], 'reserved', grant)
  redis.call('HINCRBY', KEYS[2], ARGV[1], grant)
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], 0)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], now)
return {grant, avail}
"#,
        )
    })
}

/// KEYS: budget, leases, expiry, told. ARGV: holder, its total spend so far µ$,
/// lease ms. Idempotent: the server keeps each holder's last total and counts only
/// what it adds, so a retry (a reply lost to a dying server) is never counted twice.
/// Spent grows by that; the lease and reserved shrink by as much of it as the lease
/// holds. Returns 1, or 0 when the lease had expired (the cost still counts).
pub fn settle() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_reap(
            r#"
local before = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
local cost = tonumber(ARGV[2]) - before
if cost > 0 then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'spent', cost)
else
  cost = 0
end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return 0 end
local dec = math.min(cost, tonumber(held))
if dec > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -dec)
  redis.call('HINCRBY', KEYS[1], 'reserved', -dec)
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
return 1
"#,
        )
    })
}

/// ARGV: holder, amount µ$, lease ms, last (1: end the lease).
pub fn give_back() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        with_reap(
            r#"
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return 0 end
local amount = tonumber(ARGV[2])
if ARGV[4] == '1' then amount = tonumber(held) end
local dec = math.min(amount, tonumber(held))
if dec > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -dec)
  redis.call('HINCRBY', KEYS[1], 'reserved', -dec)
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
else
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
end
return dec
"#,
        )
    })
}

/// KEYS: leases, expiry. ARGV: holder, lease ms. 1 if the lease is alive (renewed).
pub fn renew() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if (not at) or tonumber(at) <= now then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#,
        )
    })
}

/// GCRA over several scopes at once. KEYS: np pause keys, then n rate keys. ARGV: n,
/// np, then per scope: interval µs (per unit), units, burst µs. The request starts
/// at the latest of now, every pause's end, and every scope's theoretical arrival
/// time less its burst; each scope's time then advances past it by units × interval.
/// Returns µs to wait, by the server's clock.
pub fn rate() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local np = tonumber(ARGV[2])
local start = now
for i = 1, np do
  local p = tonumber(redis.call('GET', KEYS[i]) or '0')
  if p > start then start = p end
end
local tats = {}
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[np + i]) or '0')
  tats[i] = tat
  local burst = tonumber(ARGV[2 + (i - 1) * 3 + 3])
  if tat - burst > start then start = tat - burst end
end
for i = 1, n do
  local interval = tonumber(ARGV[2 + (i - 1) * 3 + 1])
  local units = tonumber(ARGV[2 + (i - 1) * 3 + 2])
  local tat = math.max(tats[i], start) + units * interval
  local keep = math.ceil((tat - now) / 1000) + 60000
  redis.call('SET', KEYS[np + i], string.format('%.0f', tat), 'PX', keep)
end
return math.floor(start - now)
"#,
        )
    })
}

/// KEYS: pause keys. ARGV: µs. Each scope is paused until now + µs (never shortened).
pub fn pause() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untill = now + tonumber(ARGV[1])
for i = 1, #KEYS do
  local p = tonumber(redis.call('GET', KEYS[i]) or '0')
  if untill > p then
    redis.call('SET', KEYS[i], string.format('%.0f', untill), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
  end
end
return 1
"#,
        )
    })
}
