#!/usr/bin/env bash
# CPU per request of `run` with the shared ledger against without it, in one run:
# the same binary, job file and loopback fake server, runs interleaved (without,
# with, without, ...) so the shared machine's drifting load falls on both alike.
# Both sides have a --budget and an rpm/tpm on every provider (high enough never to
# wait), so without the ledger the local gate and limiter run, and with it every
# request takes its slot on the server (one script call) and every settled cost is
# reported (coalesced). The ledger is a redis-server this script starts on a unix
# socket in a temporary directory (AOF, fsync every second) and stops at the end.
#
#   bash benches/ledger.sh [records] [rounds]
#
# Prints every run and the medians: CPU us per request (user+sys of the switchyard
# process, GNU time), requests/s (wall), and the ratio with/without.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-50000} rounds=${2:-3}
cargo build --release --quiet --example gen_jobs --example fake_server
cargo build --release --quiet
bin=target/release/switchyard
mkdir -p bench-data
f="bench-data/jobs-$n.jsonl"
[ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f"

tmp=$(mktemp -d)
./target/release/examples/fake_server > "$tmp/server.out" &
server_pid=$!
redis-server --port 0 --unixsocket "$tmp/redis.sock" --dir "$tmp" --appendonly yes \
  --appendfsync everysec --save "" > "$tmp/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $server_pid $redis_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do grep -q listening "$tmp/server.out" 2>/dev/null && [ -S "$tmp/redis.sock" ] && break; sleep 0.05; done
port=$(sed -n 's/^listening 127.0.0.1://p' "$tmp/server.out")
for p in $(sed -n 's/^\[providers\.\(.*\)\]$/\1/p' src/config/default.toml); do
  printf '[providers.%s]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "FAKE_KEY"\nrpm = 100000000\ntpm = 100000000000\n' "$p" "$port"
done > "$tmp/bench.toml"

one() { # $1 = side (without|with), $2 = round; prints CPU us per request, wall s, requests/s
  out="$tmp/out"
  rm -rf "$out"
  extra=()
  [ "$1" = with ] && extra=(--ledger "redis+unix://$tmp/redis.sock" --budget-name "bench-$2")
  FAKE_KEY=bench /usr/bin/time -o "$tmp/time" -f '%e %U %S' "$bin" run "$f" \
    --config "$tmp/bench.toml" --concurrency 256 --budget 100000 --out "$out" "${extra[@]}" > /dev/null 2> "$tmp/err"
  read -r wall user sys < <(tail -1 "$tmp/time")
  calls=$(grep -c '^{"call"' "$out/journal.jsonl")
  awk -v r="$calls" -v w="$wall" -v u="$user" -v s="$sys" \
    'BEGIN { printf "%.1f %.2f %.0f\n", (u + s) / r * 1e6, w, r / w }'
}
printf '%-8s %12s %8s %10s\n' side 'CPU us/req' 'wall s' 'req/s'
: > "$tmp/a"; : > "$tmp/b"; : > "$tmp/ar"; : > "$tmp/br"
for i in $(seq "$rounds"); do
  read -r us w rps < <(one without "$i"); echo "$us" >> "$tmp/a"; echo "$rps" >> "$tmp/ar"; printf '%-8s %12s %8s %10s\n' without "$us" "$w" "$rps"
  read -r us w rps < <(one with "$i"); echo "$us" >> "$tmp/b"; echo "$rps" >> "$tmp/br"; printf '%-8s %12s %8s %10s\n' with "$us" "$w" "$rps"
done
med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
a=$(med "$tmp/a") b=$(med "$tmp/b") ar=$(med "$tmp/ar") br=$(med "$tmp/br")
awk -v a="$a" -v b="$b" -v ar="$ar" -v br="$br" 'BEGIN {
  printf "median CPU us/req: without %.1f, with %.1f, with/without %.3f\n", a, b, b / a
  printf "median req/s: without %.0f, with %.0f, with/without %.3f\n", ar, br, br / ar }'
