//! Acceptance (issue 6, drills 1–3 in brief): the drill scripts themselves, small enough
//! for the test command. The full-size runs are `deploy/drills/run.sh`.
//!
//! - collector crash: kill -9 under load, then every acked report durable and every
//!   alert transition exactly once (`nightowl-loadgen verify` from the loadgen's ledger);
//! - reconnect storm: every session back after a restart, no report lost;
//! - partition: one agent cut off in a network namespace, its spool capped while cut,
//!   everything delivered after the link returns (needs root: skips loudly without).
//!
//! The scripts print one `drill <name>: pass|fail|skip <figures>` line; these tests
//! require `pass`. No tight time bounds: the scripts wait generously.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nightowl_tests::drill::Verdict;
use nightowl_tests::drill::partition::{self, PartitionOptions};
use nightowl_tests::{bin_dir, workspace_root};

/// One drill at a time: each puts a collector under load on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A directory holding the two binaries the scripts use (`deploy/lib.sh` reads
/// `NIGHTOWL_BIN_DIR` and builds nothing): the shared release collector and this
/// package's load generator.
fn script_bins(dir: &Path) -> PathBuf {
    let bins = dir.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    std::os::unix::fs::symlink(bin_dir().join("nightowl-collector"), bins.join("nightowl-collector"))
        .unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_nightowl-loadgen"), bins.join("nightowl-loadgen"))
        .unwrap();
    bins
}

/// Runs `deploy/drills/<script>` with `args`; returns its final drill line.
fn drill(script: &str, args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let bins = script_bins(dir.path());
    let output = Command::new("bash")
        .arg(workspace_root().join("deploy/drills").join(script))
        .args(args)
        .current_dir(workspace_root())
        .env("NIGHTOWL_BIN_DIR", &bins)
        .output()
        .expect("run the drill script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().rfind(|line| line.starts_with("drill ")).unwrap_or_default().to_owned();
    eprintln!("{line}");
    assert!(
        line.contains(": pass ") && output.status.success(),
        "{script} did not pass (exit {:?}): {line}\n--- stdout\n{stdout}\n--- stderr (tail)\n{}",
        output.status.code(),
        stderr.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    line
}

fn figure(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn collector_killed_under_load_loses_no_acked_report_and_no_transition() {
    let line = drill("collector-crash.sh", &["--sessions", "40", "--duration", "24", "--every", "4"]);
    assert!(figure(&line, "kills") >= 2, "the collector was killed during the load: {line}");
    assert!(figure(&line, "acked_reports") > 0, "{line}");
    assert_eq!(figure(&line, "acked_lost"), 0, "{line}");
    assert_eq!(figure(&line, "missing"), 0, "{line}");
    assert_eq!(figure(&line, "duplicates"), 0, "{line}");
}

#[test]
fn every_session_comes_back_after_a_collector_restart() {
    drill("reconnect-storm.sh", &["--sessions", "300", "--max-recovery", "60"]);
}

#[test]
fn a_partitioned_agent_spools_within_its_cap_and_delivers_after() {
    let dir = tempfile::tempdir().unwrap();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let options = PartitionOptions { cut: Duration::from_secs(6), max_reports: 10, interval: "200ms".into() };
    let outcome = partition::run(&options, dir.path());
    eprintln!("{outcome}");
    if outcome.verdict == Verdict::Skip {
        eprintln!("################################################################");
        eprintln!("# SKIPPED: the partition drill needs root (network namespaces) #");
        eprintln!("################################################################");
        return;
    }
    assert_eq!(outcome.verdict, Verdict::Pass, "{outcome}");
}
