#!/usr/bin/env bash
# The kill -9 experiment: a 2,000-record run against the loopback fake server
# (examples/fake_server.rs, 20 ms per answer, logging every request), killed with
# SIGKILL once about half the records are journaled, then `--resume`d.
# Reports records completed before the kill, requests re-sent after the resume
# (prompts the server saw twice), and the ids check on results.parquet.
#
#   bash benches/kill_resume.sh [records] [kill_after_rows]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
kill_after=${2:-$(( n / 2 ))}
conc=${CONCURRENCY:-32}
cargo build --release --quiet --bin switchyard --example fake_server --example check_results
mkdir -p bench-data
d=bench-data/kill
rm -rf "$d" && mkdir -p "$d"
for i in $(seq "$n"); do printf '{"id":"k%05d","prompt":"question %d","task":"chat"}\n' "$i" "$i"; done > "$d/job.jsonl"
./target/release/examples/fake_server --latency-ms 20 --log "$d/server.log" > "$d/server.out" &
server=$!
for _ in $(seq 100); do grep -q listening "$d/server.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^listening 127.0.0.1://p' "$d/server.out")
for p in $(sed -n 's/^\[providers\.\(.*\)\]$/\1/p' src/config/default.toml); do
  printf '[providers.%s]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "FAKE_KEY"\n' "$p" "$port"
done > "$d/loopback.toml"
args=(run "$d/job.jsonl" --config "$d/loopback.toml" --concurrency "$conc" --out "$d/out")
rows() { cat "$d/out/journal.jsonl" 2>/dev/null | grep -c '"pos"' || true; }

FAKE_KEY=x ./target/release/switchyard "${args[@]}" > /dev/null 2> "$d/first.err" &
pid=$!
while [ "$(rows)" -lt "$kill_after" ]; do sleep 0.005; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
done_at_kill=$(rows)
sent_at_kill=$(wc -l < "$d/server.log")
FAKE_KEY=x ./target/release/switchyard "${args[@]}" --resume > /dev/null 2> "$d/resume.err"
kill "$server"; wait "$server" 2>/dev/null || true
total=$(wc -l < "$d/server.log")
resent=$(cut -d' ' -f3- "$d/server.log" | sort | uniq -d | wc -l)
echo "records: $n, concurrency $conc, killed with SIGKILL after $done_at_kill results were journaled"
echo "requests before the kill: $sent_at_kill; after --resume: $(( total - sent_at_kill )); total: $total"
echo "prompts requested twice (in flight at the kill): $resent (bound: --concurrency = $conc)"
echo "results.parquet: $(./target/release/examples/check_results "$d/out/results.parquet")"
grep -E "^resuming|records, .* not ok" "$d/resume.err"
