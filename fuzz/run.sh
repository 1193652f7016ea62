#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 600), one after the other
# on one core, from seeded corpora; print each target's executions and
# whether it found a crash. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo +nightly install cargo-fuzz
# A crash leaves its input in fuzz/artifacts/<target>/; turn it into a
# regression test (tests/bad_input.rs or the module's unit tests).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
targets=(smtp_session classify daticert ldif_index config submission)
./seed.sh >/dev/null
cargo +nightly fuzz build >/dev/null 2>&1
status=0
for t in "${targets[@]}"; do
  log=$(mktemp)
  if cargo +nightly fuzz run "$t" corpus/"$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    verdict=ok
  else
    verdict="CRASH (see fuzz/artifacts/$t/)"
    status=1
    tail -30 "$log" >&2
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  echo "target=$t seconds=$secs execs=$runs coverage=$cov corpus=$(ls corpus/"$t" | wc -l) result=$verdict"
  rm -f "$log"
done
exit $status
