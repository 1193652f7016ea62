#!/usr/bin/env bash
# Throughput, latency and memory, side by side in one run on this machine:
#  1. pecd end to end (benches/e2e.rs): two release daemons on loopback, N
#     messages of 10 KB to 1 recipient from S concurrent STARTTLS + AUTH
#     sessions, until every ricevuta di consegna is back at the sender; the
#     raw RSA-2048 sign rate of the provider key measured in the same run
#     gives the signing bound (sign rate ÷ 4 signatures per message);
#  2. the same with 10 recipients per message (N/5 messages; bound ÷ 13);
#  3. submission latency paced at half the rate measured in 1 (N/2 messages);
#  4. the Postfix anchor (bench/postfix.sh): Debian's Postfix on 127.0.0.1
#     relaying to smtp-sink, fed by smtp-source with the same count, size and
#     sessions, fsync on;
#  5. memory (benches/rss.rs): peak RSS for one 30 MB message A→B, and with
#     500 idle STARTTLS sessions.
# Usage: bench/run.sh [--messages N] [--sessions S]   (defaults 5000, 20)
# Last line: pecd_msgs_per_s=… signing_bound_msgs_per_s=… postfix_msgs_per_s=…
#            ratio_signing=… ratio_postfix=… p99_ms=…  (p99 at half rate)
set -euo pipefail
cd "$(dirname "$0")/.."
n=5000 s=20
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) n="$2"; shift 2 ;;
    --sessions) s="$2"; shift 2 ;;
    *) echo "usage: bench/run.sh [--messages N] [--sessions S]" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Each e2e run leaves its data dirs here; they go only at exit. On ext4
# without a journal (this VM's root), every file creation skips, one by one,
# the inodes freed in the last 1-6 minutes, so deleting one run's ~30,000
# files made the next runs pay for it: measured side by side, half-rate
# runs 2 and 3 after a deletion gave p99 95-129 ms and 4.5-4.7 ms of CPU per
# message at A, against 20-51 ms and 4.0-4.1 ms with the data kept.
mkdir "$out/data"
field() { grep -o "$2=[0-9.]*" "$1" | tail -1 | cut -d= -f2; }
e2e() { # name, env assignments...
  local name=$1; shift
  # The previous run's dirty pages are written back now, not in the middle
  # of this run's latency figures.
  sync; sleep 2
  if ! env "$@" PECD_BENCH_KEEP_IN="$out/data" cargo bench --locked --bench e2e >"$out/$name" 2>&1; then
    tail -30 "$out/$name" >&2; echo "error: e2e run '$name' failed" >&2; exit 1
  fi
  grep -E '^(messages|cpu_ms_per_msg_a|e2e_msgs_per_s)=' "$out/$name" | sed "s/^/[$name] /"
}
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
e2e one-recipient PECD_BENCH_N="$n" PECD_BENCH_C="$s" PECD_BENCH_R=1
max=$(field "$out/one-recipient" e2e_msgs_per_s)
bound=$(field "$out/one-recipient" signing_bound_msgs_per_s)
e2e ten-recipients PECD_BENCH_N=$((n / 5)) PECD_BENCH_C="$s" PECD_BENCH_R=10
half=$(awk -v m="$max" 'BEGIN { printf "%.1f", m / 2 }')
e2e half-rate PECD_BENCH_N=$((n / 2)) PECD_BENCH_C="$s" PECD_BENCH_R=1 PECD_BENCH_RATE="$half"
p99=$(field "$out/half-rate" p99_ms)
if ! bench/postfix.sh --messages "$n" --sessions "$s" --size 10240 >"$out/postfix" 2>&1; then
  tail -30 "$out/postfix" >&2; echo "error: the Postfix anchor failed" >&2; exit 1
fi
grep '^postfix_msgs_per_s=' "$out/postfix" | sed 's/^/[postfix] /'
pf=$(field "$out/postfix" postfix_msgs_per_s)
if cargo bench --locked --bench rss >"$out/rss" 2>&1; then
  grep '^msg_mb=' "$out/rss" | sed 's/^/[memory] /'
else
  tail -20 "$out/rss" >&2; echo "error: the memory bench failed" >&2; exit 1
fi
awk -v e="$max" -v b="$bound" -v p="$pf" -v l="$p99" 'BEGIN {
  printf "pecd_msgs_per_s=%.1f signing_bound_msgs_per_s=%.1f postfix_msgs_per_s=%.1f ratio_signing=%.2f ratio_postfix=%.2f p99_ms=%.1f\n", e, b, p, e / b, e / p, l }'
