#!/usr/bin/env bash
# Drill 2 (issue 6): reconnect storm. 10,000 sessions (fewer with --sessions) up and
# reporting; the collector is restarted (SIGTERM, start again at once); measured: time
# until all sessions are back, the new collector's peak RSS, handshake/connect failures
# and reconnects. The agents' backoff (1 s ×1.6, ±20 % jitter, cap 60 s; the loadgen
# uses the agent's own) is what keeps the storm bounded.
#
#   deploy/drills/reconnect-storm.sh [--sessions 10000] [--max-recovery 120]
#
# Prints ONE final line `drill reconnect-storm: pass|fail <figures>`; fails when not all
# sessions are back within --max-recovery seconds or reports were lost.
set -euo pipefail
cd "$(dirname "$0")/../.."

sessions=10000; max_recovery=120
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) sessions="$2"; shift 2 ;;
    --max-recovery) max_recovery="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done

. deploy/lib.sh
nightowl_build
work=$(mktemp -d /tmp/nightowl-drill-storm.XXXXXX)
collector_pid=""; loadgen_pid=""
cleanup() {
  [ -n "$collector_pid" ] && kill -9 "$collector_pid" 2>/dev/null
  [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

nightowl_collector_config "$work" "$(printf '[limits]\nmax_connections = 20000')"
start_collector() { nightowl_start_collector "$work" "$work/collector.log"; }
up_line() { grep -c "up=$sessions/$sessions" "$work/loadgen.log" 2>/dev/null || true; }

start_collector
ramp=$(( sessions < 1000 ? sessions : 1000 ))
ramp_s=$(( sessions / ramp ))
duration=$(( ramp_s * 3 + 30 + max_recovery ))
# Few results, a slow interval: this drill is about connections, not throughput.
"$bin/nightowl-loadgen" --collector "https://127.0.0.1:$port" --pki "$work/pki" --sessions "$sessions" \
  --results 10 --crossing 0 --interval 10s --duration "${duration}s" --drain 30s --ramp "$ramp" \
  --no-feed --progress --ledger "$work/ledger.jsonl" --json >"$work/summary.json" 2>"$work/loadgen.log" &
loadgen_pid=$!

# Wait (bounded) until every session is up, then 10 s of steady state.
deadline=$(( SECONDS + ramp_s * 3 + 60 ))
while [ "$(up_line)" = 0 ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
if [ "$(up_line)" = 0 ]; then
  echo "drill reconnect-storm: fail not all $sessions sessions came up before the restart ($(tail -1 "$work/loadgen.log"))"
  exit 1
fi
sleep 10
rss_before=$(hwm_mib "$collector_pid")
kill -TERM "$collector_pid"; wait "$collector_pid" 2>/dev/null || true
start_collector
wait "$loadgen_pid"; loadgen_pid=""
rss_after=$(hwm_mib "$collector_pid")
kill -TERM "$collector_pid"; wait "$collector_pid" 2>/dev/null || true; collector_pid=""
"$bin/nightowl-collector" agents list --json --config "$work/collector.toml" >"$work/agents.jsonl"
"$bin/nightowl-collector" alerts tail --config "$work/collector.toml" >"$work/events.jsonl"
set +e
verdict=$("$bin/nightowl-loadgen" verify --ledger "$work/ledger.jsonl" --agents "$work/agents.jsonl" --events "$work/events.jsonl")
verified=$?
set -e

python3 - "$work/summary.json" "$verdict" "$verified" "$rss_before" "$rss_after" "$max_recovery" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); v = json.loads(sys.argv[2])
verified, rss_before, rss_after, max_recovery = int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
recoveries = s["recoveries_ms"]
back_ms = max(recoveries) if recoveries else None
errors = s["errors"]
handshake = errors.get("connect", 0) + errors.get("timeout", 0)
ok = back_ms is not None and back_ms <= max_recovery * 1000 and verified == 0 and s["sessions_up"] == s["sessions"]
print("drill reconnect-storm: %s sessions=%d all_back_after=%s peak_rss_mib(before/after restart)=%s/%s "
      "handshake_failures=%d refused=%d stream_errors=%d reconnects=%d acked_lost=%d ack_p99=%.0fms" % (
    "pass" if ok else "fail", s["sessions"], "%.1fs" % (back_ms / 1000) if back_ms is not None else "never",
    rss_before, rss_after, handshake, errors.get("refused", 0), errors.get("stream", 0), s["reconnects"],
    v["acked_lost"], s["ack_latency"]["p99_ms"]))
sys.exit(0 if ok else 1)
PY
