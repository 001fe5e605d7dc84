//! The load generator works end to end: a real collector (flap detection raised, as the
//! benchmark runs it), 20 simulated agents × 10 results for a few seconds → every report
//! acked, the crossing checks' alerts arrive on the feed, the ledger accounts for all of
//! it. No tight time bounds: figures only have to be sane.

use std::time::Duration;

use nightowl_tests::loadgen::{self, Config, FeedMode, ledger};
use nightowl_tests::{Collector, Pki};

#[test]
fn loadgen_sessions_are_acked_and_alerts_fire() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let rules = dir.path().join("rules.toml");
    let defaults = include_str!("../../../collector/src/evaluate/default_rules.toml");
    std::fs::write(&rules, format!("{defaults}\n[flapping]\nwindow = \"1m\"\nchanges = 1000000\n")).unwrap();
    let mut collector =
        Collector::with_config(dir.path(), &pki, &format!("rules = {:?}", rules.display().to_string()), "");
    collector.start();

    let config = Config {
        collector: collector.url(),
        server_name: None,
        pki: pki.dir.clone(),
        tenant: "load".into(),
        agent_prefix: "t-".into(),
        sessions: 20,
        results: 10,
        interval: Duration::from_millis(500),
        duration: Duration::from_secs(4),
        drain: Duration::from_secs(20),
        crossing: 0.1,
        ramp: 100,
        heartbeat: Duration::from_secs(2),
        feed: FeedMode::Issue,
        progress: false,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (summary, rows) = runtime.block_on(loadgen::run(config)).expect("load run");
    println!("{summary}");

    assert_eq!(summary.sessions_up, 20, "{summary:?}");
    assert!(summary.reports_acked > 0);
    assert_eq!(summary.reports_acked, summary.reports_generated, "every report acked: {summary:?}");
    assert_eq!(summary.results_acked, summary.reports_acked * 10);
    assert!(summary.results_per_s > 0.0);
    assert_eq!(summary.ack_latency.count, summary.reports_acked);
    assert!(summary.ack_latency.p50_ms <= summary.ack_latency.p99_ms);
    assert!(summary.ack_latency.p99_ms <= summary.ack_latency.max_ms);
    // 10 % of 10 results: one crossing check per session, one transition per report.
    assert_eq!(summary.alerts_expected, summary.reports_generated);
    assert!(summary.alerts_seen > 0, "alerts arrive on the feed: {summary:?}");
    assert_eq!(summary.alerts_unmatched, 0, "{summary:?}");
    assert!(summary.sample_to_alert.max_ms < 60_000.0, "{summary:?}");
    assert_eq!(summary.error_total(), 0, "{summary:?}");
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|row| row.acked == row.generated && row.crossing == 1));

    // The drills' accounting agrees with the collector's durable state.
    let verdict = ledger::verify(&rows, &collector.agents(), &collector.events());
    assert!(verdict.pass(), "{verdict:?}");
    assert_eq!(verdict.transitions_expected, summary.reports_acked);
    assert_eq!(verdict.transitions_found, summary.reports_acked);
}
