#!/usr/bin/env bash
# Drill 4, abuse: oversize messages, malformed protobuf, NaN/inf and odd timestamps,
# unknown check ids, 2,000 half-open TLS connections, HTTP/2 rapid resets against a real
# collector on loopback, while 20 well-behaved sessions measure report -> ack p99.
# Pass: collector alive, RSS < 512 MiB, no well-behaved session stalls > 10 s.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
. deploy/lib.sh
nightowl_drill_build
# 2,000 held connections need descriptors on both ends (the collector inherits this).
ulimit -n 8192 2>/dev/null || echo "abuse: cannot raise ulimit -n (now $(ulimit -n)); fewer half-open connections" >&2
exec "$NIGHTOWL_BIN_DIR/nightowl-drill" abuse "$@"
