#!/usr/bin/env bash
# End-to-end `plan` throughput and peak memory on generated job files.
#
#   bash benches/plan_e2e.sh            # 100k and 1M records
#   bash benches/plan_e2e.sh 200000     # any sizes
#   MULTILINGUAL=1 bash benches/plan_e2e.sh 100000   # a quarter of the records non-ASCII, ~700 B each
#
# Measures what a user waits for: wall time of the whole command (read, parse,
# tokenize, classify, route, price, print) and its peak RSS (GNU time's %M), so we
# can see that memory stays flat as the input grows. Files go to bench-data/ (ignored).
# For comparison, the same file is planned the plain-Python way the seed articles
# write it (benches/seed_plan.py: seed 002's regex classifier, routing table and
# prices; len/4 tokens unless tiktoken's vocabulary is available) and the ratio of
# wall times is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)
cargo build --release --quiet --bin switchyard --example gen_jobs
mkdir -p bench-data
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%10s %8s %10s %10s %13s %11s %8s\n' records MB seconds 'rec/s' 'peak RSS MiB' 'python s' ratio
for n in "${sizes[@]}"; do
  if [ -n "${MULTILINGUAL:-}" ]; then
    f="bench-data/ml-$n.jsonl"
    [ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f" --multilingual
  else
    f="bench-data/jobs-$n.jsonl"
    [ -f "$f" ] || ./target/release/examples/gen_jobs "$n" "$f"
  fi
  mb=$(( $(stat -c %s "$f") / 1048576 ))
  cat "$f" > /dev/null   # warm the page cache so we time the tool, not the disk
  out=$( { /usr/bin/time -f '%e %M' ./target/release/switchyard plan "$f" --format json > /dev/null; } 2>&1 | tail -1)
  secs=${out% *}; kib=${out#* }
  /usr/bin/time -f '%e' -o bench-data/.py-time python3 benches/seed_plan.py "$f" > /dev/null 2>&1
  py=$(tail -1 bench-data/.py-time)
  awk -v n="$n" -v mb="$mb" -v s="$secs" -v k="$kib" -v py="$py" \
    'BEGIN { printf "%10d %8d %10.2f %10.0f %13.1f %11.2f %7.1fx\n", n, mb, s, n / s, k / 1024, py, py / s }'
done
