#!/usr/bin/env bash
# nightowl quickstart: builds the binaries, creates a development PKI under
# ./nightowl-dev/, starts a collector on 127.0.0.1 and an agent for this machine, and
# prints alert events as JSON lines as they fire. Ctrl-C stops everything cleanly.
#
#   ./deploy/quickstart.sh           # watch this machine's disks and host
#   ./deploy/quickstart.sh --demo    # also mount a 16 MiB tmpfs, fill it past 95 %, free it
#                                    # (root only): a firing and a resolved event appear
#
# Environment: NIGHTOWL_PORT (default 7443; 0: any free port), NIGHTOWL_DEV_DIR (default
# ./nightowl-dev),
# NIGHTOWL_BIN_DIR (use prebuilt binaries instead of `cargo build --release`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dev=${NIGHTOWL_DEV_DIR:-$root/nightowl-dev}
port=${NIGHTOWL_PORT:-7443}
demo=false
for arg in "$@"; do
  case "$arg" in
    --demo) demo=true ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown argument $arg (try --help)" >&2; exit 64 ;;
  esac
done

say() { echo "quickstart: $*" >&2; }

if [ -n "${NIGHTOWL_BIN_DIR:-}" ]; then
  bin=$NIGHTOWL_BIN_DIR
else
  say "building release binaries (first time: a few minutes)"
  (cd "$root" && cargo build --release -p nightowl-collector -p nightowl-agent)
  bin=$root/target/release
fi
collector=$bin/nightowl-collector
agent=$bin/nightowl-agent

mkdir -p "$dev"
dev=$(cd "$dev" && pwd)
if [ ! -f "$dev/pki/ca.pem" ]; then
  "$collector" ca init --dir "$dev/pki"
fi
# Agent id: this host's name, lowercased, reduced to the allowed characters.
agent_id=$(hostname 2>/dev/null | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9._-]/-/g; s/^[^a-z0-9]*//' | cut -c1-63)
agent_id=${agent_id:-localhost}
if [ ! -f "$dev/pki/agent.pem" ]; then
  "$collector" ca issue --dir "$dev/pki" --tenant dev --agent "$agent_id" \
    --cert-out "$dev/pki/agent.pem" --key-out "$dev/pki/agent.key"
fi

demo_disk=$dev/demo-disk
include=""
if $demo; then
  if [ "$(id -u)" != 0 ]; then
    say "--demo needs root to mount a tmpfs"; exit 1
  fi
  mkdir -p "$demo_disk"
  mountpoint -q "$demo_disk" || mount -t tmpfs -o size=16m nightowl-demo "$demo_disk"
  include="include = [\"/\", \"$demo_disk\"]"
fi

cat > "$dev/collector.toml" <<TOML
# Written by deploy/quickstart.sh
listen = "127.0.0.1:$port"
data_dir = "$dev/data"
[tls]
ca = "$dev/pki/ca.pem"
cert = "$dev/pki/collector.pem"
key = "$dev/pki/collector.key"
TOML

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if $demo && mountpoint -q "$demo_disk"; then umount -l "$demo_disk" || true; fi
  say "stopped (logs: $dev/collector.log, $dev/agent.log)"
}
trap cleanup INT TERM EXIT

# The collector writes the address it bound (the port, when $port is 0) to listen.addr.
rm -f "$dev/data/listen.addr"
"$collector" run --config "$dev/collector.toml" 2>>"$dev/collector.log" &
pids+=($!)
addr=""
for _ in $(seq 1 300); do
  [ -s "$dev/data/listen.addr" ] && addr=$(cat "$dev/data/listen.addr") && break
  kill -0 "${pids[0]}" 2>/dev/null || { say "collector failed to start:"; tail -n 20 "$dev/collector.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { say "collector did not start listening:"; tail -n 20 "$dev/collector.log" >&2; exit 1; }
cat > "$dev/agent.toml" <<TOML
# Written by deploy/quickstart.sh
[collector]
url = "https://$addr"
ca = "$dev/pki/ca.pem"
cert = "$dev/pki/agent.pem"
key = "$dev/pki/agent.key"
[agent]
state_dir = "$dev/agent-state"
interval = "2s"
[disk]
$include
TOML
"$agent" run --config "$dev/agent.toml" 2>>"$dev/agent.log" &
pids+=($!)
say "collector on $addr, agent dev/$agent_id; alert events follow as JSON lines (Ctrl-C stops)"
"$agent" check --config "$dev/agent.toml" >&2 || true

if $demo; then
  (
    sleep 6
    say "demo: filling $demo_disk past 95 %"
    head -c 16M /dev/zero > "$demo_disk/ballast" 2>/dev/null || true
    sleep 12
    say "demo: freeing $demo_disk"
    rm -f "$demo_disk/ballast"
  ) &
  pids+=($!)
fi

"$collector" alerts tail --follow --config "$dev/collector.toml"
