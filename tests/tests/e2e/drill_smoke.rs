//! Acceptance (issue 6, drill 4 in brief): bad reports are rejected and counted, never
//! crash the collector. Runs the quick abuse pieces (oversize, malformed protobuf, odd
//! values) against a real collector with a few well-behaved sessions; the full drill is
//! `deploy/drills/abuse.sh`.

use std::time::Duration;

use nightowl_tests::drill::Verdict;
use nightowl_tests::drill::abuse::{self, AbuseOptions, Piece};

#[test]
fn bad_reports_are_rejected_and_counted_never_crash_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let options = AbuseOptions {
        sessions: 3,
        baseline: Duration::from_secs(1),
        pieces: vec![Piece::Oversize, Piece::Malformed, Piece::Values],
        repeat_for: Duration::ZERO,
        ..Default::default()
    };
    let report = abuse::run(&options, dir.path());
    eprintln!("{}", report.outcome);
    assert_eq!(report.outcome.verdict, Verdict::Pass, "{}", report.outcome);
    let figure = |prefix: &str| {
        report.outcome.figures.iter().find(|figure| figure.starts_with(prefix)).cloned().unwrap_or_default()
    };
    assert_eq!(figure("oversize_ended="), "oversize_ended=3/3", "every oversized report ends its session");
    assert_eq!(figure("malformed_ended="), "malformed_ended=4/4", "every malformed frame ends its session");
    assert_eq!(figure("values_acked="), "values_acked=18/18", "odd values are acked, never refused forever");
    let counter = |key: &str| report.counters.get(key).copied().unwrap_or(0);
    assert!(counter("messages_undecodable") >= 7, "oversize + malformed counted: {:?}", report.counters);
    assert!(counter("reports_rejected") >= 1, "the report with too many results: {:?}", report.counters);
    // NaN, +inf, -inf values; empty, long and NUL ids; a long kind; too many metrics;
    // two out-of-bounds retired ids.
    assert!(counter("results_invalid") >= 10, "invalid results counted: {:?}", report.counters);
}
