# Shared by the benchmark and drill scripts (deploy/bench/*.sh, deploy/drills/*.sh):
# sourced, never run. Callers `cd` to the repository root first and set `set -euo pipefail`.

# Builds the release collector and load generator once; sets $bin to their directory.
# (`--bin` selects targets across every `-p`: both binaries must be named.)
# NIGHTOWL_BIN_DIR: use the binaries there, build nothing (to compare builds).
nightowl_build() {
  if [ -n "${NIGHTOWL_BIN_DIR:-}" ]; then bin=$NIGHTOWL_BIN_DIR; return 0; fi
  cargo build --release -q -p nightowl-collector -p nightowl-tests --bin nightowl-collector --bin nightowl-loadgen
  bin=${CARGO_TARGET_DIR:-target}/release
}

# nightowl_collector_config WORK [--steady-rules] [TOML]: a CA in WORK/pki and a collector
# config WORK/collector.toml on a random loopback port (sets $port), data in WORK/data.
# --steady-rules: the default rules with flap detection raised out of the way (the
# loadgen's crossing checks change level at every report; the default 6 changes in
# 10 min would silence them after three cycles). TOML: appended as is (e.g. [limits]).
nightowl_collector_config() {
  local work="$1"; shift
  local rules=""
  if [ "${1:-}" = "--steady-rules" ]; then
    shift
    cp collector/src/evaluate/default_rules.toml "$work/rules.toml"
    printf '\n[flapping]\nwindow = "1m"\nchanges = 1000000000\n' >>"$work/rules.toml"
    rules="rules = \"$work/rules.toml\""
  fi
  "$bin/nightowl-collector" ca init --dir "$work/pki" >/dev/null 2>&1
  port=$(( 20000 + RANDOM % 20000 ))
  cat >"$work/collector.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
$rules
[tls]
ca = "$work/pki/ca.pem"
cert = "$work/pki/collector.pem"
key = "$work/pki/collector.key"
${1:-}
TOML
}

# nightowl_start_collector WORK LOG: runs the collector in the background (sets
# $collector_pid) and waits until it listens on $port; on failure prints the log's end.
nightowl_start_collector() {
  RUST_LOG=warn "$bin/nightowl-collector" run --config "$1/collector.toml" 2>>"$2" &
  collector_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "collector did not listen; log:" >&2; tail -20 "$2" >&2; return 1
}

# CPU time (user + system, clock ticks) and peak RSS (VmHWM, MiB) of a process.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
hwm_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# The drill binaries (agent, collector, nightowl-drill), built once: by deploy/drills/run.sh
# for every drill, or by a drill run alone. Exports NIGHTOWL_BIN_DIR and
# NIGHTOWL_DRILL_BUILT so the drills run.sh starts build nothing.
nightowl_drill_build() {
  if [ -n "${NIGHTOWL_DRILL_BUILT:-}" ]; then return 0; fi
  cargo build --release -p nightowl-agent -p nightowl-collector -p nightowl-tests \
    --bin nightowl-agent --bin nightowl-collector --bin nightowl-drill >&2 || return 1
  export NIGHTOWL_BIN_DIR="${CARGO_TARGET_DIR:-$(pwd)/target}/release"
  export NIGHTOWL_DRILL_BUILT=1
}
