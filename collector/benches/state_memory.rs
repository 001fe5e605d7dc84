//! Memory of the collector's per-agent evaluation state, per check: a program that
//! prints figures (docs/performance.md), not a timed test.
//!
//! It builds what every session holds for its agent after a few reports — an
//! [`AgentEvaluator`] fed the loadgen's workload (`disk:/c<N>` checks with `used_pct`,
//! 10 s interval, the embedded default rules; settled OK, so no rule state is kept:
//! what remains per check is its record, staleness watch and rule list) and its updates applied
//! as a session does after each commit — for `--agents` agents × `--checks` checks, and
//! reports the growth of the process's resident set (`VmRSS`, with mimalloc as in the
//! collector binary) per agent and per check. Run it twice (e.g. 10 and 100 checks) to
//! separate what is per agent from what is per check.
//!
//! Run: `cargo bench -p nightowl-collector --bench state_memory -- [--agents 10000]
//! [--checks 100] [--kinds disk|mixed]`. `mixed` uses the hot-path bench's shape of
//! checks (disks, services, backups, latency targets, host) instead.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use nightowl_collector::evaluate::{AgentEvaluator, RuleSet};
use nightowl_collector::identity::AgentIdentity;
use nightowl_proto::{CheckResult, ProbeStatus};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn disk(index: usize, value: f64) -> CheckResult {
    CheckResult {
        check_id: format!("disk:/c{index}"),
        kind: "disk".into(),
        status: ProbeStatus::Ok.into(),
        metrics: [("used_pct".to_owned(), value)].into_iter().collect(),
        message: String::new(),
        interval_ms: 10_000,
    }
}

/// The hot-path bench's shape: disks, services, backups, latency targets, the host.
fn mixed(index: usize) -> CheckResult {
    let (check_id, kind, metrics): (String, &str, &[(&str, f64)]) = match index % 10 {
        0..=3 => {
            (format!("disk:/srv/volume{index:03}"), "disk", &[("used_pct", 45.0), ("time_to_full_s", 4.9e7)])
        }
        4..=6 => (format!("service:process:worker-{index:03}"), "service", &[("up", 1.0)]),
        7 => (
            format!("backup:files:/var/backups/db{index:03}"),
            "backup",
            &[("last_result", 1.0), ("stale", 0.0)],
        ),
        8 => {
            (format!("latency:tcp:10.0.{index}.1:443"), "latency", &[("rtt_avg_ms", 0.9), ("loss_pct", 0.0)])
        }
        _ => (format!("host:{index}"), "host", &[("mem_used_pct", 41.0)]),
    };
    CheckResult {
        check_id,
        kind: kind.into(),
        status: ProbeStatus::Ok.into(),
        metrics: metrics.iter().map(|(name, value)| ((*name).to_owned(), *value)).collect(),
        message: String::new(),
        interval_ms: 10_000,
    }
}

fn main() {
    let mut agents = 10_000usize;
    let mut checks = 100usize;
    let mut kinds = "disk".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agents" => agents = args.next().and_then(|value| value.parse().ok()).expect("--agents N"),
            "--checks" => checks = args.next().and_then(|value| value.parse().ok()).expect("--checks N"),
            "--kinds" => kinds = args.next().expect("--kinds disk|mixed"),
            // `cargo bench` passes `--bench`; anything else is a mistake.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let rules = RuleSet::defaults();
    let labels = BTreeMap::from([("role".to_owned(), "server".to_owned())]);
    let report: Vec<CheckResult> =
        (0..checks).map(|index| if kinds == "mixed" { mixed(index) } else { disk(index, 42.0) }).collect();
    let next: Vec<CheckResult> = (0..checks)
        .map(|index| if kinds == "mixed" { mixed(index) } else { disk(index, 43.0 + (index % 7) as f64) })
        .collect();
    let now = jiff::Timestamp::now();

    let before = rss_kib();
    let started = Instant::now();
    let mut evaluators = Vec::with_capacity(agents);
    let mut states = 0usize;
    for agent in 0..agents {
        let identity = AgentIdentity { tenant: "acme".into(), agent: format!("n10000-{agent:05}") };
        let mut evaluator = AgentEvaluator::new(identity, labels.clone(), rules.clone(), HashMap::new());
        // As a session: evaluate, commit (here: nothing), apply; twice, so the second
        // report takes the settled fast path as the steady state does.
        for input in [&report, &next] {
            let evaluation = evaluator.evaluate(input, now, now);
            states += evaluation.updates.len();
            evaluator.apply(evaluation.updates);
        }
        evaluators.push(evaluator);
    }
    let elapsed = started.elapsed();
    let grown = rss_kib().saturating_sub(before) as f64 * 1024.0;
    let total_checks = (agents * checks) as f64;
    println!(
        "state_memory: {agents} agents x {checks} checks ({kinds}), {} states written: RSS +{:.1} MiB = {:.0} bytes per agent = {:.0} bytes per check (incl. the agent's share), built in {:.2} s",
        states,
        grown / 1048576.0,
        grown / agents as f64,
        grown / total_checks,
        elapsed.as_secs_f64()
    );
    std::hint::black_box(&evaluators);
}
