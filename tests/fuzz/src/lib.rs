//! # nightowl fuzz targets
//!
//! One function per target, shared by the libFuzzer entry points (`fuzz_targets/`, run
//! by `cargo fuzz`) and the stable fallback (`src/bin/fuzz-loop.rs`). A target must never
//! panic, whatever the bytes: a panic is a crash (a bug to fix in the product, with a
//! regression test beside the code it hits).
//!
//! - `report`: bytes → prost decode `Report` → the session's validation
//!   (`ingest::validate_report`, `ingest::sample_time`) → evaluation with the embedded
//!   default rules (evaluate, retire, the staleness tick), as a session does it.
//! - `collector_config`: bytes as UTF-8 → the collector's `Config::parse`.
//! - `rules`: bytes as UTF-8 → `RuleSet::parse`, then the parsed rules evaluate a report.
//! - `agent_config`: bytes as UTF-8 → the agent's `Config::parse`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use nightowl_collector::config::Limits;
use nightowl_collector::evaluate::{AgentEvaluator, RuleSet};
use nightowl_collector::ingest::{sample_time, validate_report};
use nightowl_collector::identity::AgentIdentity;
use nightowl_proto::Report;
use prost::Message;

/// A fixed "now" (2026-11-28T00:00:00Z): runs are reproducible.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_795_824_000).expect("valid")
}

/// Config files name paths relative to their directory; this one has none.
const BASE: &str = "/nonexistent/nightowl-fuzz";

fn evaluate_with(rules: Arc<RuleSet>, report: Report) {
    let identity = AgentIdentity { tenant: "fuzz".into(), agent: "agent".into() };
    let labels: BTreeMap<String, String> = [("role".to_owned(), "server".to_owned())].into_iter().collect();
    let mut evaluator = AgentEvaluator::new(identity, labels, rules, HashMap::new());
    let now = now();
    let at = sample_time(report.sampled_at_ms, now);
    let validated = validate_report(report, Limits::default().max_results_per_report);
    // Twice: the second pass runs the state machines from the states the first set.
    for _ in 0..2 {
        let evaluation = evaluator.evaluate(&validated.results, at, now);
        evaluator.apply(evaluation.updates);
    }
    if !validated.retired.is_empty() {
        let retirement = evaluator.retire(&validated.retired, at, now);
        evaluator.apply(retirement.updates);
    }
    let stale = evaluator.tick(now + jiff::SignedDuration::from_hours(2));
    evaluator.apply(stale.updates);
}

pub fn report(data: &[u8]) {
    if let Ok(report) = Report::decode(data) {
        evaluate_with(RuleSet::defaults(), report);
    }
}

pub fn collector_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nightowl_collector::config::Config::parse(text, "fuzz.toml", Path::new(BASE));
    }
}

pub fn rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = RuleSet::parse(text, "fuzz-rules.toml") {
        evaluate_with(Arc::new(rules), seed_report());
    }
}

pub fn agent_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nightowl_agent::config::Config::parse(text, "fuzz.toml", Path::new(BASE));
    }
}

/// A report touching every family the default rules know.
pub fn seed_report() -> Report {
    use nightowl_proto::{CheckResult, ProbeStatus};
    let result = |check: &str, kind: &str, status: ProbeStatus, metrics: &[(&str, f64)]| CheckResult {
        check_id: check.into(),
        kind: kind.into(),
        status: status as i32,
        metrics: metrics.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect(),
        message: "fuzz".into(),
        interval_ms: 1000,
    };
    Report {
        seq: 1,
        sampled_at_ms: now().as_millisecond() - 1000,
        results: vec![
            result(
                "disk:/",
                "disk",
                ProbeStatus::Ok,
                &[("used_pct", 97.0), ("free_bytes", 1e6), ("hours_to_full", 2.0)],
            ),
            result("host", "host", ProbeStatus::Ok, &[("cpu_pct", 99.0), ("mem_pct", 50.0)]),
            result("service:nginx", "service", ProbeStatus::Critical, &[("up", 0.0)]),
            result("backup:nightly", "backup", ProbeStatus::Warning, &[("age_hours", 50.0)]),
            result("latency:gw", "latency", ProbeStatus::Ok, &[("loss_pct", 60.0), ("rtt_avg_ms", 900.0)]),
            result("command:check", "command", ProbeStatus::Unknown, &[]),
        ],
        retired_checks: vec!["disk:/old".into()],
    }
}

/// Seed inputs per target (the corpus starts from these).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "report" => {
            let mut odd = seed_report();
            odd.sampled_at_ms = i64::MIN;
            odd.results[0].metrics.insert("used_pct".into(), f64::NAN);
            vec![seed_report().encode_to_vec(), odd.encode_to_vec(), Vec::new()]
        }
        "rules" => vec![include_bytes!("../../../collector/src/evaluate/default_rules.toml").to_vec()],
        "collector_config" => vec![
            b"listen = \"127.0.0.1:7443\"\ndata_dir = \"data\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n\
              [limits]\nmax_message_bytes = 1048576\nhandshake_timeout = \"10s\"\n[offline]\nafter = \"30s\"\n\
              [[maintenance]]\nname = \"m\"\ntenant = \"acme\"\ndays = [\"sat\"]\nfrom = \"22:00\"\nto = \"02:00\"\ntimezone = \"Europe/Berlin\"\n\
              [coverage.default]\ntimezone = \"Europe/London\"\nhours = { mon-fri = \"08:00-18:00\" }\n"
                .to_vec(),
        ],
        "agent_config" => vec![
            b"[collector]\nurl = \"https://127.0.0.1:7443\"\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n\
              [agent]\nstate_dir = \"state\"\ninterval = \"10s\"\nheartbeat = \"5s\"\nlabels = { role = \"server\" }\n\
              [spool]\nmax_reports = 100\n[disk]\ninclude = [\"/\"]\n\
              [[service]]\nname = \"nginx\"\nprocess = \"nginx\"\n\
              [[latency]]\nname = \"gw\"\ntcp = \"127.0.0.1:22\"\n"
                .to_vec(),
        ],
        _ => Vec::new(),
    }
}

pub const TARGETS: [&str; 4] = ["report", "collector_config", "rules", "agent_config"];

/// The target function named `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "report" => Some(report),
        "collector_config" => Some(collector_config),
        "rules" => Some(rules),
        "agent_config" => Some(agent_config),
        _ => None,
    }
}
