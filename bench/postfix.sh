#!/usr/bin/env bash
# Postfix anchor: throughput of a plain Postfix relay on this machine, to set
# pecd's numbers against. A private Postfix instance (own config, queue and
# data directories in a temp dir; the system's /etc/postfix instance is
# neither changed nor started) listens on 127.0.0.1:PORT and relays all mail
# to smtp-sink on 127.0.0.1:SINKPORT. smtp-source pushes N messages (SIZE
# bytes of body, plus ~130 bytes of headers; R recipients each) over S
# parallel SMTP sessions, one message per connection (--reuse: keep them).
# Measured: from the first connection until smtp-sink has received all N
# messages (so queueing and relaying count, not only acceptance); the last
# line gives msgs/s = N / elapsed.
# Durability: Postfix's defaults are kept: cleanup fsync()s every queue file
# before smtpd answers 250, as pecd does. The queue lives on disk under
# ${PECD_BENCH_TMPDIR:-/var/tmp} (not /tmp, which may be tmpfs).
# How: `postfix -c DIR` (MAIL_CONFIG) runs as root, which needs no
# alternate_config_directories entry in /etc/postfix/main.cf; no chroot, no
# local delivery, all traffic stays on 127.0.0.0/8. Missing packages are
# installed from Debian (postfix: postfix, smtp-source, smtp-sink), with the
# debconf answer "No configuration" and service start-up blocked.
# Usage: bench/postfix.sh [--messages N] [--sessions S] [--size BYTES]
#                         [--recipients R] [--reuse]
# Env defaults: PECD_BENCH_N, PECD_BENCH_C, PECD_BENCH_R. Last line:
# postfix_msgs_per_s=… messages=… sessions=… size=… recipients=… elapsed_s=…
set -euo pipefail
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
n=${PECD_BENCH_N:-5000} s=${PECD_BENCH_C:-20} r=${PECD_BENCH_R:-1} size=10240 reuse=
usage() { echo "usage: bench/postfix.sh [--messages N] [--sessions S] [--size BYTES] [--recipients R] [--reuse]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --messages) n="${2:-}"; shift 2 || usage ;;
    --sessions) s="${2:-}"; shift 2 || usage ;;
    --size) size="${2:-}"; shift 2 || usage ;;
    --recipients) r="${2:-}"; shift 2 || usage ;;
    --reuse) reuse=-d; shift ;;
    *) usage ;;
  esac
done
for v in "$n" "$s" "$size" "$r"; do [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "error: not a positive integer: '$v'" >&2; usage; }; done
[ "$r" -le 1000 ] || { echo "error: --recipients above 1000 (smtpd_recipient_limit)" >&2; exit 2; }
die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (postfix -c and smtp-sink need it)"

# --- install what is missing --------------------------------------------------
if ! command -v postfix >/dev/null || ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
  echo "installing Debian package postfix..."
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  made_policy=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1; }
  inst() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >/dev/null; }
  inst || { apt-get update -q >/dev/null && inst; } || { [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d; die "apt-get install postfix failed"; }
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
for b in postfix smtp-source smtp-sink; do command -v "$b" >/dev/null || die "$b not found after install"; done
id postfix >/dev/null 2>&1 || die "no 'postfix' user (the package's postinst creates it)"

# --- private instance -------------------------------------------------------------
d=$(mktemp -d "${PECD_BENCH_TMPDIR:-/var/tmp}/pecd-postfix-bench.XXXXXX")
cfg=$d/etc q=$d/queue log=$d/maillog sink_out=$d/sink.out started= sink_pid=
cleanup() {
  set +e
  if [ -n "$started" ]; then
    mpid=$(tr -d ' \n' <"$q/pid/master.pid" 2>/dev/null)
    postfix -c "$cfg" stop >/dev/null 2>&1
    for _ in $(seq 50); do [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null || break; sleep 0.2; done
    [ -n "$mpid" ] && kill -0 "$mpid" 2>/dev/null && kill -9 "$mpid"
  fi
  [ -n "$sink_pid" ] && { kill "$sink_pid" 2>/dev/null; wait "$sink_pid" 2>/dev/null; }
  rm -rf "$d"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 755 "$d"; mkdir -p "$cfg" "$q" "$d/data"; chown postfix "$d/data"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { local p; while :; do p=$((20000 + RANDOM % 40000)); port_free "$p" && [ "$p" != "${1:-}" ] && { echo "$p"; return; }; done; }
port=$(pick_port) sink_port=$(pick_port "$port")
procs=$((s + 60)); [ "$procs" -ge 100 ] || procs=100
rlimit=$((r > 50 ? r : 50))
cat >"$cfg/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $q
data_directory = $d/data
maillog_file = $log
maillog_file_prefixes = $d
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = relay.bench.test
mydestination =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$sink_port
smtpd_relay_restrictions = permit_mynetworks, reject
smtputf8_enable = no
default_process_limit = $procs
default_destination_concurrency_limit = 20
smtp_destination_concurrency_limit = 20
default_destination_recipient_limit = $rlimit
EOF
{ echo "127.0.0.1:$port inet n - n - - smtpd"
  for l in "pickup unix n - n 60 1 pickup" "cleanup unix n - n - 0 cleanup" "qmgr unix n - n 300 1 qmgr" \
    "rewrite unix - - n - - trivial-rewrite" "bounce unix - - n - 0 bounce" "defer unix - - n - 0 bounce" \
    "trace unix - - n - 0 bounce" "verify unix - - n - 1 verify" "flush unix n - n 1000? 0 flush" \
    "proxymap unix - - n - - proxymap" "proxywrite unix - - n - 1 proxymap" "smtp unix - - n - - smtp" \
    "relay unix - - n - - smtp" "showq unix n - n - - showq" "error unix - - n - - error" \
    "retry unix - - n - - error" "discard unix - - n - - discard" "anvil unix - - n - 1 anvil" \
    "scache unix - - n - 1 scache" "postlog unix-dgram n - n - 1 postlogd"; do echo "$l"; done
} >"$cfg/master.cf"
showlog() { echo "--- tail of $log:" >&2; tail -n 30 "$log" >&2 2>/dev/null || echo "(no log)" >&2; }
postfix -c "$cfg" check >"$d/check.out" 2>&1 || { cat "$d/check.out" >&2; showlog; die "postfix check failed"; }
started=1
postfix -c "$cfg" start >"$d/start.out" 2>&1 || { cat "$d/start.out" >&2; showlog; die "postfix failed to start"; }
smtp-sink -c -u nobody "127.0.0.1:$sink_port" 256 >"$sink_out" 2>"$d/sink.err" &
sink_pid=$!
for _ in $(seq 100); do ! port_free "$port" && ! port_free "$sink_port" && break; sleep 0.1; done
port_free "$port" && { showlog; die "postfix is not listening on 127.0.0.1:$port"; }
port_free "$sink_port" && { cat "$d/sink.err" >&2; die "smtp-sink is not listening on 127.0.0.1:$sink_port"; }
received() { local c; c=$(tail -c 64 "$sink_out" | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1) || true; echo "${c#mesg=}"; }
base=$(received); base=${base:-0}   # the readiness probes above count as sessions, not messages

echo "postfix $(postconf -c "$cfg" -h mail_version) relay 127.0.0.1:$port -> smtp-sink 127.0.0.1:$sink_port"
echo "queue: $q ($(stat -f -c %T "$q"), fsync on); load average: $(cut -d' ' -f1-3 /proc/loadavg); cores: $(nproc)"
echo "sending $n messages x $r recipient(s), body $size bytes, $s sessions${reuse:+, connections reused}"
t0=$(date +%s.%N)
smtp-source $reuse -s "$s" -m "$n" -l "$size" -r "$r" -f sender@bench.test -t rcpt@bench.test \
  "127.0.0.1:$port" >"$d/source.out" 2>&1 || { cat "$d/source.out" >&2; showlog; die "smtp-source failed"; }
t1=$(date +%s.%N)
echo "smtp-source done (all accepted) after $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
deadline=$(( $(date +%s) + 600 ))
while :; do
  got=$(received); got=$((${got:-0} - base))
  [ "$got" -ge "$n" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || { showlog; die "timeout (600 s): smtp-sink received $got of $n"; }
  sleep 0.05
done
t2=$(date +%s.%N)
left=$(find "$q/incoming" "$q/active" "$q/deferred" "$q/hold" "$q/maildrop" -type f | wc -l)
sent=$(grep -c 'status=sent' "$log" || true)
echo "smtp-sink received $got messages; postfix log: $sent recipient deliveries status=sent; queue files left: $left"
awk -v a="$t0" -v b="$t2" -v n="$n" -v s="$s" -v z="$size" -v r="$r" 'BEGIN{e=b-a;
  printf "postfix_msgs_per_s=%.1f messages=%d sessions=%d size=%d recipients=%d elapsed_s=%.1f\n", n/e, n, s, z, r, e}'
