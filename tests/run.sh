#!/usr/bin/env bash
# The test command (README, .ci/run): installs the system tools the tests drive, builds
# the release binaries once for every end-to-end test, then runs the whole workspace's
# tests. Works on a fresh Debian machine with the Rust toolchain (run as root so the
# tests can mount tmpfs and make network namespaces; they say SKIP loudly otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:package pairs the tests need beyond Rust (a tool is a command name or a path).
required="mount:mount umount:mount mountpoint:util-linux kill:procps pgrep:procps ip:iproute2 tc:iproute2
  python3:python3 restic:restic borg:borgbackup
  /usr/lib/nagios/plugins/check_tcp:monitoring-plugins-basic
  x86_64-w64-mingw32-gcc:gcc-mingw-w64-x86-64 openssl:openssl
  prometheus-alertmanager:prometheus-alertmanager
  /usr/sbin/nats-server:nats-server"
missing=()
for pair in $required; do
  tool=${pair%%:*}
  if [ "${tool#/}" != "$tool" ]; then [ -x "$tool" ] && continue; else command -v "$tool" >/dev/null 2>&1 && continue; fi
  missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "tests/run.sh: WARNING: missing ${missing[*]} and not root; dependent tests will SKIP" >&2
  fi
fi

# A fresh clone gains nothing from incremental caches, and they cost disk (see the dev
# profile in Cargo.toml: a full CI disk once killed the linker). Say where we stand.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "tests/run.sh: free disk for target/: $(df -Ph "${CARGO_TARGET_DIR:-.}" 2>/dev/null | awk 'NR==2{print $4}' || echo unknown)"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# The agent must also build for Windows (its service backend for the Service Control
# Manager lives behind cfg(windows)). ring's build script needs mingw even for `check`.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu \
   || rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1; then
  cargo check -p nightowl-agent --target x86_64-pc-windows-gnu
  echo "windows check: nightowl-agent builds for x86_64-pc-windows-gnu"
else
  echo "SKIP: windows check: the x86_64-pc-windows-gnu standard library cannot be installed here"
fi
cargo build --release -p nightowl-agent -p nightowl-collector
export NIGHTOWL_BIN_DIR="$PWD/target/release"

# Everything but the heavy end-to-end tests, then those one at a time: each drill and the
# load generator put a collector under load on 2 cores (tests/tests/e2e/main.rs).
status=0
cargo test --workspace --no-fail-fast -- --skip drills:: --skip loadgen:: || status=$?
cargo test -p nightowl-tests --lib --test e2e --no-fail-fast -- drills:: loadgen:: --test-threads=1 || status=$?
exit "$status"
