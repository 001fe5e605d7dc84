#!/usr/bin/env bash
# Runs every drill (deploy/drills/*.sh except this one) in name order, each under a
# timeout, and prints each drill's final line `drill <name>: pass|fail|skip <figures>`
# again at the end. Exit status: non-zero if any drill failed (skips do not fail the
# run, but are never counted as passes).
#
#   sudo ./deploy/drills/run.sh            # all drills
#   DRILL_TIMEOUT=900 ./deploy/drills/run.sh
#
# Network-namespace drills (partition, ...) need root; without it they report `skip`.
# Loopback and namespaces made by the drills themselves only: nothing leaves the machine.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
timeout_s="${DRILL_TIMEOUT:-600}"

if [ "$(id -u)" != 0 ]; then
  echo "################################################################" >&2
  echo "# deploy/drills/run.sh: NOT ROOT. Drills that need network      #" >&2
  echo "# namespaces (partition) will report SKIP, not pass.            #" >&2
  echo "# Run as: sudo ./deploy/drills/run.sh                           #" >&2
  echo "################################################################" >&2
fi

echo "drills: building release binaries once" >&2
. deploy/lib.sh
nightowl_drill_build || { echo "drill build: fail cargo build failed"; exit 1; }

results=()
failed=0
for drill in "$here"/*.sh; do
  name="$(basename "$drill" .sh)"
  [ "$name" = run ] && continue
  echo "=== drill $name (timeout ${timeout_s}s) ===" >&2
  log="$(mktemp)"
  timeout --kill-after=30 "$timeout_s" bash "$drill" 2>&1 | tee "$log" >&2
  status=${PIPESTATUS[0]}
  line="$(grep -E "^drill [^:]+: (pass|fail|skip)" "$log" | tail -n 1)"
  rm -f "$log"
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    line="drill $name: fail timed out after ${timeout_s}s ${line:+(last: $line)}"
  elif [ -z "$line" ]; then
    line="drill $name: fail no result line (exit $status)"
  elif [ "$status" != 0 ] && [ "${line#*: skip}" = "$line" ] && [ "${line#*: fail}" = "$line" ]; then
    line="drill $name: fail exit $status after: $line"
  fi
  case "$line" in *": fail"*) failed=1 ;; esac
  results+=("$line")
done

echo
echo "=== drill results ==="
for line in "${results[@]}"; do echo "$line"; done
exit "$failed"
