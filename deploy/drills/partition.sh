#!/usr/bin/env bash
# Drill 3, partition: an agent in a network namespace (200 ms interval, spool capped at
# 50 reports) loses its link for 20 s: the spool grows within its cap (drops counted),
# and everything still spooled is delivered after the link returns. Needs root (skip
# otherwise).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. deploy/lib.sh
nightowl_drill_build
if [ "$(id -u)" != 0 ]; then
  echo "drill partition: skip not root (network namespaces need root; run sudo ./deploy/drills/run.sh)"
  exit 0
fi
set +e
"$NIGHTOWL_BIN_DIR/nightowl-drill" partition "$@"
status=$?
# 2 = skip (printed by the drill): not a failure of this script.
[ "$status" = 2 ] && exit 0
exit "$status"
