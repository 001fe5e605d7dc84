#!/usr/bin/env bash
# Drill 1 (issue 6): kill -9 the collector every few seconds for a few minutes under
# 1,000 sessions. Afterwards every report the collector acked must be durable
# (`agents list --json` last_seq >= acked) and every crossing check's alert transitions
# must be exactly firing, resolved, firing, ... — none lost, none emitted twice
# (`nightowl-loadgen verify`, from the loadgen's ledger).
#
#   deploy/drills/collector-crash.sh [--sessions 1000] [--duration 120] [--every 5]
#
# Prints ONE final line `drill collector-crash: pass|fail <figures>`; exits 1 on fail.
set -euo pipefail
cd "$(dirname "$0")/../.."

sessions=1000; duration=120; every=5
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) sessions="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --every) every="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 64 ;;
  esac
done

. deploy/lib.sh
nightowl_build
work=$(mktemp -d /tmp/nightowl-drill-crash.XXXXXX)
collector_pid=""; loadgen_pid=""
cleanup() {
  [ -n "$collector_pid" ] && kill -9 "$collector_pid" 2>/dev/null
  [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null
  wait 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

nightowl_collector_config "$work" --steady-rules
start_collector() { nightowl_start_collector "$work" "$work/collector.log"; }

start_collector
"$bin/nightowl-loadgen" --collector "https://127.0.0.1:$port" --pki "$work/pki" --sessions "$sessions" \
  --results 10 --crossing 0.1 --interval 1s --duration "${duration}s" --drain 90s --ramp 500 \
  --ledger "$work/ledger.jsonl" --json >"$work/summary.json" 2>"$work/loadgen.log" &
loadgen_pid=$!

# Bounded: kills stop at the end of the load's duration, whatever happens.
kills=0
deadline=$(( SECONDS + duration - every ))
while [ "$SECONDS" -lt "$deadline" ] && kill -0 "$loadgen_pid" 2>/dev/null; do
  sleep "$(awk -v base="$every" 'BEGIN { srand(); printf "%.1f", base * (0.6 + 0.8 * rand()) }')"
  kill -9 "$collector_pid"; wait "$collector_pid" 2>/dev/null || true
  kills=$(( kills + 1 ))
  start_collector
done
wait "$loadgen_pid"; loadgen_pid=""
# A clean stop, then read the durable state with the real CLI.
kill -TERM "$collector_pid"; wait "$collector_pid" 2>/dev/null || true; collector_pid=""
"$bin/nightowl-collector" agents list --json --config "$work/collector.toml" >"$work/agents.jsonl"
"$bin/nightowl-collector" alerts tail --config "$work/collector.toml" >"$work/events.jsonl"

set +e
verdict=$("$bin/nightowl-loadgen" verify --ledger "$work/ledger.jsonl" --agents "$work/agents.jsonl" --events "$work/events.jsonl")
status=$?
set -e
figures=$(python3 - "$work/summary.json" "$verdict" "$kills" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); v = json.loads(sys.argv[2])
print("kills=%s sessions=%d acked_reports=%d transitions=%d/%d acked_lost=%d missing=%d bad_sequences=%d duplicates=%d unexpected=%d reconnects=%d errors=%d ack_p99=%.0fms%s" % (
    sys.argv[3], s["sessions"], v["reports_acked"], v["transitions_found"], v["transitions_expected"],
    v["acked_lost"], v["agents_missing"], v["bad_sequences"], v["duplicate_ids"], v["unexpected_events"],
    s["reconnects"], sum(s["errors"].values()), s["ack_latency"]["p99_ms"],
    (" examples=" + json.dumps(v["examples"][:3])) if v["examples"] else ""))
PY
)
# Nothing was generated, or nothing acked, proves nothing.
acked=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["reports_acked"])' "$verdict")
if [ "$status" = 0 ] && [ "$kills" -gt 0 ] && [ "$acked" -gt 0 ]; then
  echo "drill collector-crash: pass $figures"
else
  echo "drill collector-crash: fail $figures"
  exit 1
fi
