#!/usr/bin/env bash
# End-to-end `run` against a loopback OpenAI/Anthropic-compatible server
# (examples/fake_server.rs, zero latency): what switchyard itself costs per request.
#
#   bash benches/run_e2e.sh              # 10k records at --concurrency 256, 3 times
#   bash benches/run_e2e.sh 100000       # any size
#   RPM_SECONDS=70 bash benches/run_e2e.sh   # also rate-limit precision over 70 s
#
# Every provider of the default config is pointed at the server, so the records are
# classified, routed, budgeted, journaled and written exactly as in production; only
# the network is loopback. Reports wall time, requests/s, CPU seconds per 1,000
# requests (user+sys of the switchyard process alone, from GNU time) and peak RSS.
# Rate-limit precision: a job pinned to one model with `rpm` set; the server's own
# timestamps give the achieved rate and the most requests in any 1 s and 60 s window.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
repeat=${REPEAT:-3}
rpm=${RPM:-600}
rpm_seconds=${RPM_SECONDS:-0}
cargo build --release --quiet --bin switchyard --example gen_jobs --example fake_server
mkdir -p bench-data
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

start_server() { # [$1 = log file]; sets port and server_pid
  ./target/release/examples/fake_server ${1:+--log "$1"} > bench-data/.server.out &
  server_pid=$!
  for _ in $(seq 100); do grep -q listening bench-data/.server.out 2>/dev/null && break; sleep 0.05; done
  port=$(sed -n 's/^listening 127.0.0.1://p' bench-data/.server.out)
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
loopback_config() { # $1 = port, $2 = extra TOML
  for p in $(sed -n 's/^\[providers\.\(.*\)\]$/\1/p' src/config/default.toml); do
    printf '[providers.%s]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key_env = "FAKE_KEY"\n' "$p" "$1"
  done
  printf '%s\n' "$2"
}

f="bench-data/jobs-$n.jsonl"
[ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f"
printf '%10s %9s %8s %10s %16s %14s %13s\n' records requests seconds 'req/s' 'CPU s/1k req' 'CPU us/req' 'peak RSS MiB'
for _ in $(seq "$repeat"); do
  start_server   # no log: the server's own writes would compete for the 2 cores
  loopback_config "$port" "" > bench-data/loopback.toml
  rm -rf bench-data/run-out
  FAKE_KEY=bench /usr/bin/time -o bench-data/.run.time -f '%e %U %S %M' ./target/release/switchyard run "$f" \
    --config bench-data/loopback.toml --concurrency 256 --out bench-data/run-out > /dev/null 2> bench-data/.run.err
  stop_server
  requests=$(sed -n 's/^requests //p' bench-data/.server.out)
  read -r wall user sys kib < <(tail -1 bench-data/.run.time)
  awk -v n="$n" -v r="$requests" -v w="$wall" -v u="$user" -v s="$sys" -v k="$kib" \
    'BEGIN { printf "%10d %9d %8.2f %10.0f %16.3f %14.1f %13.1f\n", n, r, w, r / w, (u + s) / r * 1000, (u + s) / r * 1e6, k / 1024 }'
done

if [ "$rpm_seconds" -gt 0 ]; then
  m=$(( rpm * rpm_seconds / 60 ))
  rf="bench-data/rpm-$m.jsonl"
  for i in $(seq "$m"); do printf '{"id":"q%d","prompt":"question %d","model":"gpt-4o-mini"}\n' "$i" "$i"; done > "$rf"
  start_server bench-data/rpm.log
  loopback_config "$port" "$(printf '[models."gpt-4o-mini"]\nrpm = %d\n' "$rpm")" > bench-data/rpm.toml
  rm -rf bench-data/rpm-out
  FAKE_KEY=bench ./target/release/switchyard run "$rf" --config bench-data/rpm.toml \
    --concurrency 256 --out bench-data/rpm-out > /dev/null 2>&1
  stop_server
  python3 - "$rpm" bench-data/rpm.log <<'PY'
import sys, bisect
rpm, path = int(sys.argv[1]), sys.argv[2]
t = sorted(int(l.split(' ', 1)[0]) / 1e9 for l in open(path))
def most_in(window):
    return max(bisect.bisect_left(t, x + window) - i for i, x in enumerate(t))
span = t[-1] - t[0]
print(f"rpm {rpm}: {len(t)} requests over {span:.1f} s = {(len(t) - 1) / span * 60:.1f}/min achieved; "
      f"most in any 1 s: {most_in(1.0)} (limit ~{rpm / 60:.0f}), in any 60 s: {most_in(60.0)} (limit {rpm})")
PY
fi
