//! Drill 3, partition: an agent on a test host (network namespace) sampling every
//! 200 ms with a small spool cap loses its link for a while. While cut, its spool must
//! grow but stay within the cap (the oldest reports dropped and counted once it is
//! full); after the link returns, everything still spooled must be delivered: the
//! collector's `last_seq` reaches the agent's newest seq at restore time, and the
//! collector's `seq_gaps` is at most the number the agent dropped (a dropped report that
//! was already in flight may still arrive).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Outcome, Verdict};
use crate::{Agent, Collector, NetnsHost, Pki};

#[derive(Debug, Clone)]
pub struct PartitionOptions {
    /// How long the link stays down.
    pub cut: Duration,
    /// The agent's `[spool] max_reports`.
    pub max_reports: u64,
    /// The agent's sampling interval.
    pub interval: String,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        // ~5 reports/s for 20 s is ~100 reports: a cap of 50 makes the spool overflow.
        Self { cut: Duration::from_secs(20), max_reports: 50, interval: "200ms".into() }
    }
}

fn number(value: &serde_json::Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or(0)
}

pub fn run(options: &PartitionOptions, dir: &Path) -> Outcome {
    let outcome = |verdict, figures: Vec<String>| Outcome { drill: "partition", verdict, figures };
    let Some(host) = NetnsHost::create("drl") else {
        return outcome(Verdict::Skip, vec!["cannot create a network namespace (needs root)".into()]);
    };
    let pki = Pki::init_with_names(&dir.join("pki"), &[&host.local.to_string(), "localhost"]);
    let (cert, key) = pki.issue("drill", "partitioned");
    let mut collector = Collector::listening_on(dir, &pki, host.local);
    collector.start();
    let root = Path::new("/");
    let mut agent = Agent::new(&dir.join("agent"), &collector, &pki, &cert, &key, &options.interval, &[root]);
    agent.rewrite_config(&[root], &format!("[spool]\nmax_reports = {}\n", options.max_reports));
    agent.start_in(&host.name);
    let row = |collector: &Collector| collector.agent("drill", "partitioned").unwrap_or_default();
    let started = Instant::now();
    while number(&row(&collector), "last_seq") < 5 {
        if started.elapsed() > Duration::from_secs(60) {
            return outcome(Verdict::Fail, vec!["FAILED(the agent never reported before the cut)".into()]);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let seq_at_cut = number(&row(&collector), "last_seq");
    host.link_down();
    let cut_at = Instant::now();
    let mut max_pending = 0;
    while cut_at.elapsed() < options.cut {
        max_pending = max_pending.max(number(&agent.spool(), "pending"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let at_restore = agent.spool();
    max_pending = max_pending.max(number(&at_restore, "pending"));
    let target = number(&at_restore, "newest_seq");
    host.link_up();
    let restored = Instant::now();
    let mut delivered = None;
    while restored.elapsed() < Duration::from_secs(120) {
        if number(&row(&collector), "last_seq") >= target {
            delivered = Some(restored.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let final_spool = agent.spool();
    let dropped = number(&final_spool, "dropped_total");
    let final_row = row(&collector);
    let gaps = number(&final_row, "seq_gaps");
    let alive = agent.is_running();
    agent.terminate();
    collector.terminate();

    let mut failures = Vec::new();
    if max_pending > options.max_reports {
        failures.push(format!("spool pending {max_pending} over its cap {}", options.max_reports));
    }
    if max_pending == 0 {
        failures.push("the spool did not grow while cut".into());
    }
    if delivered.is_none() {
        failures.push(format!(
            "not delivered within 120 s: collector last_seq {} < {target}",
            number(&final_row, "last_seq")
        ));
    }
    // A report dropped from the spool may still have reached the collector: it was in
    // flight (sent, unacked) when the link went down, and a TCP connection survives a
    // short cut (the kernel retransmits once the link is back). So gaps can be fewer
    // than drops, never more.
    if gaps > dropped {
        failures.push(format!("seq_gaps {gaps} exceeds the {dropped} reports the agent dropped"));
    }
    if !alive {
        failures.push("the agent exited".into());
    }
    let mut figures: Vec<String> = failures.iter().map(|failure| format!("FAILED({failure})")).collect();
    figures.extend([
        format!("cut={}s", options.cut.as_secs()),
        format!("cap={}", options.max_reports),
        format!("max_pending={max_pending}"),
        format!("dropped={dropped}"),
        format!("seq_gaps={gaps}"),
        format!("dropped_but_delivered={}", dropped.saturating_sub(gaps)),
        format!("seq_at_cut={seq_at_cut}"),
        format!("newest_at_restore={target}"),
        format!(
            "drain={}",
            delivered.map_or_else(|| "never".into(), |elapsed| format!("{:.1}s", elapsed.as_secs_f64()))
        ),
    ]);
    outcome(if failures.is_empty() { Verdict::Pass } else { Verdict::Fail }, figures)
}
