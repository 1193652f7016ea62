#!/usr/bin/env bash
# Crash harness: two pecd providers under a continuous submission load; a
# random daemon is killed with SIGKILL at a random moment and restarted,
# --cycles N times (default 50). Then, from the client's own records: every
# message that got a 250 was delivered exactly once, every receipt due
# exists exactly once, no Maildir file is truncated, and `pecd log verify`
# passes on both stores (tests/crash.rs does the checking).
# Last line: cycles=N attempted=… acked=… lost=… duplicated=…
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=50
while [ $# -gt 0 ]; do
  case "$1" in
    --cycles) cycles="$2"; shift 2 ;;
    *) echo "usage: bench/crash.sh [--cycles N]" >&2; exit 2 ;;
  esac
done
log=$(mktemp)
trap 'rm -f "$log"' EXIT
PECD_CRASH_CYCLES="$cycles" cargo test --locked --release --test crash -- --nocapture >"$log" 2>&1 || {
  tail -40 "$log" >&2
  grep '^cycles=' "$log" || true
  exit 1
}
grep '^cycles=' "$log" | tail -1
