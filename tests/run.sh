#!/usr/bin/env bash
# The test command (README, .ci/run): installs the system tools the tests drive, builds
# the release binaries once for every end-to-end test, then runs the whole workspace's
# tests. Works on a fresh Debian machine with the Rust toolchain (run as root so the
# tests can mount tmpfs and make network namespaces; they say SKIP loudly otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool:package pairs the tests need beyond Rust.
required="mount:mount umount:mount mountpoint:util-linux kill:procps"
missing=()
for pair in $required; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "tests/run.sh: WARNING: missing ${missing[*]} and not root; dependent tests will SKIP" >&2
  fi
fi

cargo fmt --all -- --check
cargo build --release -p nightowl-agent -p nightowl-collector
NIGHTOWL_BIN_DIR="$PWD/target/release" cargo test --workspace
