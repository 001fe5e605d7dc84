#!/usr/bin/env bash
# Agent footprint with a realistic check set (issue 6, part 3). A benchmark: it prints
# figures and asserts nothing.
#
# Starts a local collector (so the spool drains, as in production) and loopback peers,
# then runs the release agent at interval 10 s and then 1 s, DURATION seconds each after a
# warm-up, sampling /proc every 5 s:
#   RSS  = VmRSS (/proc/PID/status)            PSS = Pss (/proc/PID/smaps_rollup)
#   threads = Threads                          CPU = utime + stime (/proc/PID/stat) / CLK_TCK
#   CPU ms per cycle = CPU ms over the window / (window / interval)
#   reports per cycle = reports spooled over the window (the spool's next_seq) / cycles:
#   each is an SQLite transaction, a gRPC message and an ack, so it weighs on the CPU
# CPU time, not wall time: robust on a shared, noisy machine.
#
# Check set: every real mount (disk defaults); 5 services (4 processes by name, started
# here as `sleep` under distinct names, and 1 TCP port); 2 backups (a files glob and a
# watched log that gets a line every 30 s); 4 latency targets against loopback (icmp
# 127.0.0.1, tcp and http to a python3 http.server, dns to a tiny python3 responder);
# host.
#
# Usage: deploy/bench/agent-footprint.sh [--quick] [--duration SECS] [--intervals "10s 1s"]
#                                        [--profile agent|release]
#   --quick: 60 s per interval (default 600 s). --profile: the Cargo profile the agent is
#   built with (default `agent`, the size-optimised one endpoints get; `release` to
#   compare). Environment passes through to the agent (e.g. MALLOC_ARENA_MAX=2).
#   NIGHTOWL_BIN_DIR: use these binaries, build nothing (NIGHTOWL_AGENT_BIN overrides the
#   agent's path alone).
#   NIGHTOWL_AGENT_LOG: the agent's RUST_LOG (default warn; its log is in the work dir).
set -euo pipefail

duration=600
intervals="10s 1s"
warmup=10
profile=agent
usage='usage: deploy/bench/agent-footprint.sh [--quick] [--duration SECS] [--intervals "10s 1s"] [--profile agent|release]'
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) duration=60; shift ;;
        --duration) duration="$2"; shift 2 ;;
        --intervals) intervals="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        *) echo "$usage" >&2; exit 64 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n "${NIGHTOWL_BIN_DIR:-}" ]]; then
    bin="$NIGHTOWL_BIN_DIR"
else
    # The same build the e2e harness makes (both crates at once, so no feature flip-flop
    # rebuilds between the two).
    (cd "$root" && cargo build --release -p nightowl-agent -p nightowl-collector >&2)
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
    if [[ "$profile" != release ]]; then
        (cd "$root" && cargo build --profile "$profile" -p nightowl-agent >&2)
        NIGHTOWL_AGENT_BIN="${NIGHTOWL_AGENT_BIN:-${CARGO_TARGET_DIR:-$root/target}/$profile/nightowl-agent}"
    fi
fi
agent_bin="${NIGHTOWL_AGENT_BIN:-$bin/nightowl-agent}"
collector_bin="$bin/nightowl-collector"

work=$(mktemp -d /tmp/nightowl-footprint.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- PKI and collector -------------------------------------------------------------
"$collector_bin" ca init --dir "$work/pki" >/dev/null
"$collector_bin" ca issue --dir "$work/pki" --tenant bench --agent footprint \
    --cert-out "$work/pki/agent.pem" --key-out "$work/pki/agent.key" >/dev/null
collector_port=$(free_port)
cat >"$work/collector.toml" <<EOF
listen = "127.0.0.1:$collector_port"
data_dir = "$work/collector-data"
[tls]
ca = "$work/pki/ca.pem"
cert = "$work/pki/collector.pem"
key = "$work/pki/collector.key"
EOF
RUST_LOG=warn "$collector_bin" run --config "$work/collector.toml" 2>"$work/collector.log" &
pids+=($!)

# --- loopback peers and watched services ----------------------------------------------
http_port=$(free_port)
python3 -m http.server "$http_port" --bind 127.0.0.1 --directory "$work" >/dev/null 2>&1 &
pids+=($!)
dns_port=$(free_port)
# A minimal DNS responder: answers every A query with 127.0.0.1 (TTL 60).
python3 - "$dns_port" >/dev/null 2>&1 <<'EOF' &
import socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    query, peer = sock.recvfrom(512)
    if len(query) < 12:
        continue
    end = 12
    while end < len(query) and query[end] != 0:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    sock.sendto(header + question + answer, peer)
EOF
pids+=($!)
mkdir -p "$work/bin" "$work/backups"
for name in nol-fp-db nol-fp-web nol-fp-queue nol-fp-cache; do
    ln -s "$(command -v sleep)" "$work/bin/$name"
    "$work/bin/$name" 100000 &
    pids+=($!)
done
head -c 1048576 /dev/urandom >"$work/backups/db-$(date +%F).tar.zst"
echo "$(date -Is) backup finished" >"$work/backup.log"
( while sleep 30; do echo "$(date -Is) backup finished" >>"$work/backup.log"; done ) &
pids+=($!)

for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$collector_port") 2>/dev/null && break
    sleep 0.1
done

write_agent_config() {
    cat >"$work/agent.toml" <<EOF
[collector]
url = "https://127.0.0.1:$collector_port"
ca = "$work/pki/ca.pem"
cert = "$work/pki/agent.pem"
key = "$work/pki/agent.key"
[agent]
state_dir = "$work/agent-state"
interval = "$1"
heartbeat = "10s"
labels = { role = "server" }

[disk]

[host]

[[service]]
name = "db"
process = "nol-fp-db"
[[service]]
name = "web"
process = "nol-fp-web"
[[service]]
name = "queue"
process = "nol-fp-queue"
[[service]]
name = "cache"
process = "nol-fp-cache"
[[service]]
name = "http"
port = $http_port

[[backup]]
name = "db-nightly"
path = "$work/backups/db-*.tar.zst"
max_age = "26h"
[[backup]]
name = "log"
log = "$work/backup.log"
success = "backup finished"
failure = "ERROR|FATAL"

[[latency]]
name = "loopback-icmp"
method = "icmp"
target = "127.0.0.1"
[[latency]]
name = "loopback-tcp"
method = "tcp"
target = "127.0.0.1:$http_port"
[[latency]]
name = "loopback-http"
method = "http"
target = "http://127.0.0.1:$http_port/"
[[latency]]
name = "loopback-dns"
method = "dns"
target = "intranet.example.com"
server = "127.0.0.1:$dns_port"
EOF
}

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
kib() { awk -v key="$2:" '$1 == key { print $2 }' "$1"; }
next_seq() {
    "$agent_bin" spool --config "$work/agent.toml" 2>/dev/null \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["next_seq"])'
}

results=()
for interval in $intervals; do
    seconds=${interval%s}
    write_agent_config "$interval"
    RUST_LOG="${NIGHTOWL_AGENT_LOG:-warn}" "$agent_bin" run --config "$work/agent.toml" 2>"$work/agent-$interval.log" &
    agent=$!
    pids+=("$agent")
    sleep "$warmup"
    start_seq=$(next_seq)
    start_ticks=$(cpu_ticks "$agent")
    start_time=$(date +%s.%N)
    rss_sum=0; rss_max=0; pss_max=0; threads_max=0; samples=0
    end=$(( $(date +%s) + duration ))
    while (( $(date +%s) < end )); do
        rss=$(kib "/proc/$agent/status" VmRSS)
        pss=$(kib "/proc/$agent/smaps_rollup" Pss)
        threads=$(kib "/proc/$agent/status" Threads)
        rss_sum=$((rss_sum + rss)); samples=$((samples + 1))
        (( rss > rss_max )) && rss_max=$rss
        (( pss > pss_max )) && pss_max=$pss
        (( threads > threads_max )) && threads_max=$threads
        sleep 5
    done
    cpu=$(( $(cpu_ticks "$agent") - start_ticks ))
    reports=$(( $(next_seq) - start_seq ))
    window=$(echo "$(date +%s.%N) - $start_time" | bc)
    cycles=$(echo "$window / $seconds" | bc -l)
    results+=("$(awk -v i="$interval" -v rs="$rss_sum" -v n="$samples" -v rm="$rss_max" -v pm="$pss_max" \
        -v t="$threads_max" -v c="$cpu" -v hz="$ticks" -v cy="$cycles" -v w="$window" -v r="$reports" 'BEGIN {
        printf "| %-8s | %5.1f / %5.1f | %5.1f | %3d | %6.2f | %6.0f | %5.1f | %4.0f s |",
            i, rs / n / 1024, rm / 1024, pm / 1024, t, c * 1000 / hz / cy, c * 1000 / hz, r / cy, w }')")
    echo "--- interval $interval: largest mappings by RSS (KiB) ---" >&2
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anon]" : $6) } $1 == "Rss:" { rss[name] += $2 }
         END { for (n in rss) print rss[n], n }' "/proc/$agent/smaps" | sort -rn | head -6 >&2
    kill "$agent"; wait "$agent" 2>/dev/null || true
    pending=$("$agent_bin" spool --config "$work/agent.toml" 2>/dev/null | tr -d '\n' | head -c 200 || true)
    echo "spool after interval $interval: $pending" >&2
done

echo
echo "nightowl-agent footprint: $(nproc) cores, ${duration} s per interval after ${warmup} s warm-up, MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset}"
echo "binary: $(stat -c %s "$agent_bin" | awk '{ printf "%.1f MiB (%d bytes)", $1 / 1048576, $1 }') $agent_bin"
echo
echo "| interval | RSS MiB mean / max | PSS MiB max | threads max | CPU ms / cycle | CPU ms total | reports / cycle | window |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
