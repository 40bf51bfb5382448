#!/usr/bin/env bash
# End-to-end `plan` throughput and peak memory on generated job files.
#
#   bash benches/plan_e2e.sh            # 100k and 1M records
#   bash benches/plan_e2e.sh 200000     # any sizes
#
# Measures what a user waits for: wall time of the whole command (read, parse,
# tokenize, classify, route, price, print) and its peak RSS (GNU time's %M), so we
# can see that memory stays flat as the input grows. Files go to bench-data/ (ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
cargo build --release --quiet --bin switchyard --example gen_jobs
mkdir -p bench-data
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%10s %10s %12s %10s %12s\n' records MB seconds 'rec/s' 'peak RSS MiB'
for n in "${sizes[@]}"; do
  f="bench-data/jobs-$n.jsonl"
  [ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f"
  mb=$(( $(stat -c %s "$f") / 1048576 ))
  cat "$f" > /dev/null   # warm the page cache so we time the tool, not the disk
  out=$( { /usr/bin/time -f '%e %M' ./target/release/switchyard plan "$f" --format json > /dev/null; } 2>&1 | tail -1)
  secs=${out% *}; kib=${out#* }
  awk -v n="$n" -v mb="$mb" -v s="$secs" -v k="$kib" 'BEGIN { printf "%10d %10d %12.2f %10.0f %12.1f\n", n, mb, s, n / s, k / 1024 }'
done
