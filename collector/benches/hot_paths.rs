//! Micro-benchmarks of the collector's per-report hot path, in the order a report
//! meets them (`ingest/session.rs`):
//!
//! 1. `decode_validate`: prost decode of one `AgentMessage::Report` with 100 results
//!    (a busy agent: mounts, services, backups, latency targets, host) plus the
//!    session's validation (`ingest::validate_report`) and sample-time check;
//! 2. `evaluate`: `AgentEvaluator::evaluate` of those 100 results against the embedded
//!    default rules, steady state (every check OK: the common case) and a report in
//!    which every check is past its thresholds (events, or pending for rules with `for`);
//! 3. `queue_commit`: `Store::commit` of reports carrying one alert event each, with
//!    1, 64 and 512 reports in flight at once, so the writer thread group-commits
//!    (up to 512 per fsync'd transaction) in a directory on disk.
//!
//! Run: `cargo bench -p nightowl-collector --bench hot_paths` (add `-- queue` to run one
//! group). Throughput is per element: results for 1 and 2, reports (= events) for 3.
//! The queue directory is `$NIGHTOWL_BENCH_DIR` or Cargo's target tmp dir; never tmpfs,
//! where fsync costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nightowl_collector::alert::{self, AlertEvent, Severity, Status};
use nightowl_collector::config::Limits;
use nightowl_collector::evaluate::{AgentEvaluator, RuleSet};
use nightowl_collector::identity::AgentIdentity;
use nightowl_collector::ingest::{sample_time, validate_report};
use nightowl_collector::queue::{CommitReport, HelloRecord, Store};
use nightowl_proto::{AgentMessage, CheckResult, ProbeStatus, Report, agent_message};
use prost::Message;

const RESULTS_PER_REPORT: usize = 100;

fn result(check_id: String, kind: &str, metrics: &[(&str, f64)], message: &str) -> CheckResult {
    CheckResult {
        check_id,
        kind: kind.into(),
        status: ProbeStatus::Ok.into(),
        metrics: metrics.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect(),
        message: message.into(),
        interval_ms: 10_000,
    }
}

/// 100 results shaped like the agent's: 40 mounts, 30 services, 10 backups, 19 latency
/// targets and the host. `scale` moves the values (1.0: all fine; 2.0: past thresholds).
fn results(scale: f64) -> Vec<CheckResult> {
    let mut out = Vec::with_capacity(RESULTS_PER_REPORT);
    for index in 0..40 {
        out.push(result(
            format!("disk:/srv/volume{index:02}"),
            "disk",
            &[
                ("used_pct", (45.0 * scale).min(99.0)),
                ("used_bytes", 48_318_382_080.0),
                ("free_bytes", 59_055_800_320.0),
                ("total_bytes", 107_374_182_400.0),
                ("inodes_used_pct", 3.2),
                ("fill_rate_bps", 1200.0),
                ("time_to_full_s", 49_212_000.0 / scale),
            ],
            "",
        ));
    }
    for index in 0..30 {
        out.push(result(
            format!("service:process:worker-{index:02}"),
            "service",
            &[("up", if scale > 1.0 { 0.0 } else { 1.0 }), ("restarts", 0.0), ("since_s", 86_400.0)],
            "running, pid 4242 since 2026-11-30T02:12:00Z",
        ));
    }
    for index in 0..10 {
        out.push(result(
            format!("backup:files:/var/backups/db{index}"),
            "backup",
            &[
                ("last_result", if scale > 1.0 { 0.0 } else { 1.0 }),
                ("stale", 0.0),
                ("age_s", 3600.0),
                ("size_bytes", 2_147_483_648.0),
                ("count", 7.0),
            ],
            "newest db.tar.zst 1h ago",
        ));
    }
    for index in 0..19 {
        out.push(result(
            format!("latency:tcp:10.0.{index}.1:443"),
            "latency",
            &[
                ("rtt_min_ms", 0.4),
                ("rtt_avg_ms", if scale > 1.0 { 900.0 } else { 0.9 }),
                ("rtt_max_ms", 2.1),
                ("rtt_p95_ms", 1.8),
                ("loss_pct", if scale > 1.0 { 80.0 } else { 0.0 }),
                ("jitter_ms", 0.2),
            ],
            "",
        ));
    }
    out.push(result(
        "host".into(),
        "host",
        &[
            ("cpu_pct", 12.5),
            ("mem_used_pct", (41.0 * scale).min(99.0)),
            ("swap_used_pct", 0.0),
            ("load1", 0.42),
            ("load5", 0.38),
            ("load15", 0.30),
            ("uptime_s", 1_209_600.0),
        ],
        "",
    ));
    assert_eq!(out.len(), RESULTS_PER_REPORT);
    out
}

fn identity(agent: usize) -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: format!("srv-{agent:04}") }
}

fn decode_validate(criterion: &mut Criterion) {
    let now = jiff::Timestamp::now();
    let report = Report {
        seq: 42,
        sampled_at_ms: now.as_millisecond(),
        results: results(1.0),
        retired_checks: vec![],
    };
    let bytes = AgentMessage::report(report).encode_to_vec();
    println!(
        "decode_validate: one report of {RESULTS_PER_REPORT} results = {} bytes on the wire",
        bytes.len()
    );
    let mut group = criterion.benchmark_group("decode_validate");
    group.throughput(Throughput::Elements(RESULTS_PER_REPORT as u64));
    group.bench_function("report_100_results", |bencher| {
        bencher.iter(|| {
            let message = AgentMessage::decode(black_box(bytes.as_slice())).unwrap();
            let Some(agent_message::Msg::Report(report)) = message.msg else { unreachable!() };
            let at = sample_time(report.sampled_at_ms, now);
            black_box((at, validate_report(report, Limits::default().max_results_per_report)))
        })
    });
    group.finish();
}

fn evaluate(criterion: &mut Criterion) {
    let rules = RuleSet::defaults();
    let labels = BTreeMap::from([("role".to_owned(), "server".to_owned())]);
    let now = jiff::Timestamp::now();
    let mut group = criterion.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(RESULTS_PER_REPORT as u64));
    for (name, scale) in [("steady_ok", 1.0), ("all_past_threshold", 2.0)] {
        let fine = results(1.0);
        let input = results(scale);
        let mut evaluator = AgentEvaluator::new(identity(0), labels.clone(), rules.clone(), HashMap::new());
        // Warm: states exist and the effective rules per check are resolved, as in a
        // session that has been running for a while.
        let warm = evaluator.evaluate(&fine, now, now);
        evaluator.apply(warm.updates);
        let events = evaluator.evaluate(&input, now, now).events.len();
        println!("evaluate/{name}: {events} events per report of {RESULTS_PER_REPORT} results");
        group.bench_function(name, |bencher| {
            // `evaluate` does not mutate the states (the caller applies after the
            // commit), so every iteration sees the same transition.
            bencher.iter(|| black_box(evaluator.evaluate(black_box(&input), now, now)))
        });
    }
    group.finish();
}

fn event(identity: &AgentIdentity, now: jiff::Timestamp) -> AlertEvent {
    let check = "service:process:worker-01";
    AlertEvent {
        id: alert::new_event_id(),
        fingerprint: alert::fingerprint(&identity.tenant, &identity.agent, check, "service_down"),
        status: Status::Firing,
        severity: Severity::P2,
        tenant: identity.tenant.clone(),
        agent: identity.agent.clone(),
        check: check.into(),
        kind: "service".into(),
        rule: "service_down".into(),
        summary: "Service process:worker-01 is down: no process named worker-01".into(),
        value: 0.0,
        threshold: 0.5,
        started_at: now,
        resolved_at: None,
        emitted_at: now,
        labels: BTreeMap::from([("role".to_owned(), "server".to_owned())]),
        runbook: None,
        remediation: None,
        flapping: false,
    }
}

fn queue_commit(criterion: &mut Criterion) {
    let base = std::env::var_os("NIGHTOWL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = criterion.benchmark_group("queue_commit");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    for in_flight in [1usize, 64, 512] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let (store, writer) = Store::open(dir.path()).unwrap();
        let agents: Vec<AgentIdentity> = (0..in_flight).map(identity).collect();
        runtime.block_on(async {
            for agent in &agents {
                store
                    .hello(HelloRecord {
                        identity: agent.clone(),
                        labels: BTreeMap::new(),
                        address: None,
                        stream_id: "bench".into(),
                        hostname: agent.agent.clone(),
                        os: "Linux".into(),
                        agent_version: "bench".into(),
                        boot_id: "b".into(),
                        at: jiff::Timestamp::now(),
                    })
                    .await
                    .unwrap();
            }
        });
        let mut seq = 0u64;
        group.throughput(Throughput::Elements(in_flight as u64));
        group.bench_function(BenchmarkId::new("reports_in_flight", in_flight), |bencher| {
            bencher.iter_custom(|rounds| {
                let started = Instant::now();
                runtime.block_on(async {
                    for _ in 0..rounds {
                        seq += 1;
                        let mut commits = tokio::task::JoinSet::new();
                        for agent in &agents {
                            let store = store.clone();
                            let now = jiff::Timestamp::now();
                            let report = CommitReport {
                                identity: agent.clone(),
                                stream_id: Some("bench".into()),
                                seq: Some(seq),
                                events: vec![event(agent, now)],
                                updates: Vec::new(),
                                at: now,
                            };
                            commits.spawn(async move { store.commit(report).await });
                        }
                        while let Some(done) = commits.join_next().await {
                            done.unwrap().unwrap();
                        }
                    }
                });
                started.elapsed()
            })
        });
        drop(store);
        writer.join().unwrap();
    }
    group.finish();
}

criterion_group!(benches, decode_validate, evaluate, queue_commit);
criterion_main!(benches);
