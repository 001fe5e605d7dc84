#!/usr/bin/env bash
# Drill 5, fuzzing: the targets in tests/fuzz (report decode -> validate -> evaluate,
# collector config, rules, agent config), each for FUZZ_SECONDS (default 60).
#
# Mode `cargo-fuzz`: libFuzzer on the nightly toolchain (cargo-fuzz is installed from
# crates.io if missing). Mode `fallback` (no nightly / cargo-fuzz here): the stable
# `fuzz-loop` harness runs the seeds + corpus and a seeded random/mutation loop (at most
# 200,000 inputs) through the same target functions. The result line says which ran.
# FUZZ_TARGETS="report rules" runs only those.
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-60}"
fuzz_dir="$root/tests/fuzz"
target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
targets="${FUZZ_TARGETS:-report collector_config rules agent_config}"

mode=fallback
if rustup toolchain list 2>/dev/null | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2; then
  if cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked >&2; then
    mode=cargo-fuzz
  fi
fi
[ -n "${FUZZ_MODE:-}" ] && mode="$FUZZ_MODE"
echo "fuzz: mode $mode, ${seconds}s per target" >&2

# Seeds (committed, tests/fuzz/seeds/<target>) start the corpus; libFuzzer adds what it
# finds to tests/fuzz/corpus/<target> (not committed).
if [ "$mode" = fallback ]; then
  cargo build --release --manifest-path "$fuzz_dir/Cargo.toml" --target-dir "$target_dir" --features fallback --bin fuzz-loop >&2 || {
    echo "drill fuzz: fail mode=$mode cannot build tests/fuzz"; exit 1; }
  loop="$target_dir/release/fuzz-loop"
else
  cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" -s none --features libfuzzer >&2 || {
    echo "drill fuzz: fail mode=$mode cannot build the fuzz targets"; exit 1; }
fi

figures=()
failed=0
for target in $targets; do
  mkdir -p "$fuzz_dir/corpus/$target"
  # libFuzzer exits at once on a corpus directory that does not exist: every target
  # must have committed seeds (a missing directory is a setup error, said as such).
  if [ ! -d "$fuzz_dir/seeds/$target" ]; then
    failed=1
    figures+=("$target=NO-SEEDS(tests/fuzz/seeds/$target)")
    continue
  fi
  if [ "$mode" = cargo-fuzz ]; then
    out="$(cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" --target-dir "$target_dir" -s none --features libfuzzer \
      "$target" "$fuzz_dir/corpus/$target" "$fuzz_dir/seeds/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1)"
    status=$?
    echo "$out" | tail -n 25 >&2
    runs="$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p' | tail -n 1)"
    if [ "$status" != 0 ]; then
      failed=1
      crash="$(echo "$out" | sed -n 's/.*Test unit written to \(.*\)$/\1/p' | tail -n 1)"
      figures+=("$target=CRASH(${crash:-exit $status})")
    else
      figures+=("$target=ok(${runs:-?}runs)")
    fi
  else
    out="$("$loop" "$target" --seconds "$seconds" --iterations 200000 --corpus "$fuzz_dir/seeds/$target" \
      --artifacts "$fuzz_dir/artifacts/$target" 2>&1)"
    status=$?
    echo "$out" | tail -n 20 >&2
    line="$(echo "$out" | grep '^fuzz-loop ' | tail -n 1)"
    runs="$(echo "$line" | sed -n 's/.*iterations=\([0-9]*\).*/\1/p')"
    if [ "$status" != 0 ]; then
      failed=1
      figures+=("$target=CRASH(${line#*input=})")
    else
      figures+=("$target=ok(${runs:-?}runs)")
    fi
  fi
done
if [ "$failed" = 0 ]; then verdict=pass; else verdict=fail; fi
echo "drill fuzz: $verdict mode=$mode seconds=$seconds ${figures[*]}"
exit "$failed"
