#!/usr/bin/env bash
# The test suite, from a fresh machine: the shared-ledger tests start their own
# redis-server (Debian's package redis-server), installed here when it is missing;
# then every test target.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server > /dev/null; then
  echo "installing redis-server (Debian package) for the shared-ledger tests" >&2
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server > /dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server > /dev/null
  fi
fi
exec cargo test --locked --all-targets "$@"
