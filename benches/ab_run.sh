#!/usr/bin/env bash
# A/B of `run`'s CPU per request: two switchyard binaries, runs interleaved (A, B, A,
# B, ...) against the same loopback server and job file, so the shared machine's
# drifting load falls on both alike. Prints every run and the median of each side.
#
#   cp target/release/switchyard /tmp/sy-before   # build the "before" first
#   bash benches/ab_run.sh /tmp/sy-before target/release/switchyard [records] [rounds]
#
# Same measure as run_e2e.sh: user+sys CPU of the switchyard process alone (GNU time)
# over the requests the server answered, at --concurrency 256, journaled to --out.
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 n=${3:-100000} rounds=${4:-4}
cargo build --release --quiet --example gen_jobs --example fake_server
mkdir -p bench-data
f="bench-data/jobs-$n.jsonl"
[ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f"

./target/release/examples/fake_server > bench-data/.ab-server.out &
server_pid=$!
trap 'kill $server_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening bench-data/.ab-server.out 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^listening 127.0.0.1://p' bench-data/.ab-server.out)
for p in $(sed -n 's/^\[providers\.\(.*\)\]$/\1/p' src/config/default.toml); do
  printf '[providers.%s]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "FAKE_KEY"\n' "$p" "$port"
done > bench-data/ab.toml

one() { # $1 = binary; prints CPU us per request and peak RSS MiB
  rm -rf bench-data/ab-out
  FAKE_KEY=bench /usr/bin/time -o bench-data/.ab.time -f '%e %U %S %M' "$1" run "$f" \
    --config bench-data/ab.toml --concurrency 256 --out bench-data/ab-out > /dev/null 2> bench-data/.ab.err
  read -r wall user sys kib < <(tail -1 bench-data/.ab.time)
  calls=$(grep -c '^{"call"' bench-data/ab-out/journal.jsonl) # the server answers every request
  awk -v r="$calls" -v w="$wall" -v u="$user" -v s="$sys" -v k="$kib" \
    'BEGIN { printf "%.1f %.2f %.0f\n", (u + s) / r * 1e6, w, k / 1024 }'
}
printf '%-6s %12s %8s %9s\n' side 'CPU us/call' 'wall s' 'RSS MiB'
: > bench-data/.ab.a; : > bench-data/.ab.b
for _ in $(seq "$rounds"); do
  read -r us w m < <(one "$a"); echo "$us" >> bench-data/.ab.a; printf '%-6s %12s %8s %9s\n' A "$us" "$w" "$m"
  read -r us w m < <(one "$b"); echo "$us" >> bench-data/.ab.b; printf '%-6s %12s %8s %9s\n' B "$us" "$w" "$m"
done
med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(med bench-data/.ab.a) mb=$(med bench-data/.ab.b)
awk -v a="$ma" -v b="$mb" 'BEGIN { printf "median CPU us/call: A %.1f, B %.1f, B/A %.3f\n", a, b, b / a }'
