#!/usr/bin/env bash
# Collector throughput benchmark (issue 6): one collector with the embedded queue, and
# nightowl-loadgen with N sessions for each N; prints the collector's CPU time and peak
# RSS (from /proc/<pid>/stat and /proc/<pid>/status) beside the loadgen's figures.
# A program that prints figures, not a timed test.
#
#   deploy/bench/collector-throughput.sh [--quick] [--sessions "100 1000 10000"]
#       [--results R] [--interval 1s] [--duration 30s] [--crossing 0.01]
#
# --quick: N = 100 and 1000, 10 s each. Needs nothing but the workspace; all on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."

sessions="100 1000 10000"; results=100; interval=1s; duration=30s; crossing=0.01
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) sessions="100 1000"; duration=10s; shift ;;
    --sessions) sessions="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    --interval) interval="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --crossing) crossing="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done

. deploy/lib.sh
nightowl_build
work=$(mktemp -d /tmp/nightowl-bench.XXXXXX)
collector_pid=""
cleanup() { [ -n "$collector_pid" ] && kill "$collector_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

nightowl_collector_config "$work" --steady-rules \
  "$(printf '[limits]\nmax_connections = 20000\nmax_concurrent_handshakes = 512')"
hz=$(getconf CLK_TCK)

echo "nightowl collector throughput: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), results=$results interval=$interval duration=$duration crossing=$crossing"
printf '%-7s %9s %11s %9s %9s %9s %9s %9s %8s %8s %7s %8s %7s\n' \
  SESSIONS UP RESULTS/S ACK_P50 ACK_P99 ALERT_P50 ALERT_P99 ERRORS COLL_CPU COLL_RSS US/RES LG_CPU LG_RSS
for n in $sessions; do
  # A fresh collector per N: figures are not skewed by the previous run's state.
  rm -rf "$work/data"
  nightowl_start_collector "$work" "$work/collector-$n.log"
  cpu0=$(cpu_ticks "$collector_pid")
  ramp=$(( n < 1000 ? n : 1000 ))
  "$bin/nightowl-loadgen" --collector "https://127.0.0.1:$port" --pki "$work/pki" --sessions "$n" \
    --results "$results" --interval "$interval" --duration "$duration" --crossing "$crossing" \
    --ramp "$ramp" --drain 20s --agent-prefix "n$n-" --json >"$work/summary-$n.json"
  cpu1=$(cpu_ticks "$collector_pid")
  rss=$(hwm_mib "$collector_pid")
  kill "$collector_pid"; wait "$collector_pid" 2>/dev/null || true; collector_pid=""
  python3 - "$work/summary-$n.json" "$(( cpu1 - cpu0 ))" "$hz" "$rss" "$work/notes.txt" <<'PY'
import json, sys
notes = []
s = json.load(open(sys.argv[1])); ticks, hz, rss = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
wall = s["duration_s"]
# Collector CPU per result: all its CPU time during the run over every result acked in
# it; does not depend on how busy the machine is (unlike RESULTS/S at saturation).
per_result = 1e6 * ticks / hz / max(s["results_acked"], 1)
print("%-7d %9s %11.0f %9.1f %9.1f %9.1f %9.1f %9d %7.0f%% %6sMiB %7.2f %7.0f%% %5.0fMiB" % (
    s["sessions"], "%d/%d" % (s["sessions_up_peak"], s["sessions"]), s["results_per_s"],
    s["ack_latency"]["p50_ms"], s["ack_latency"]["p99_ms"],
    s["sample_to_alert"]["p50_ms"], s["sample_to_alert"]["p99_ms"], sum(s["errors"].values()),
    100.0 * ticks / hz / wall, rss, per_result, 100.0 * s["loadgen_cpu_s"] / wall, s["loadgen_peak_rss_mib"]))
notes.append("  N=%d: errors %s, all up after %s ms, certificates issued in %d ms, %d/%d alerts seen" % (
    s["sessions"], json.dumps(s["errors"]), s["all_up_after_ms"], s["cert_issue_ms"], s["alerts_seen"], s["alerts_expected"]))
open(sys.argv[5], "a").write("\n".join(notes) + "\n")
PY
done
cat "$work/notes.txt"
echo "(COLL_CPU / LG_CPU: CPU time over the run's duration, 100% = one core; RSS = peak (VmHWM); latencies in ms;"
echo " US/RES: the collector's CPU microseconds per result acked, ramp and drain included)"
