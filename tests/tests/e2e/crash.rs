//! Acceptance (issue 2, points 3 and 4): kill -9 loses nothing.
//!
//! - The collector is killed repeatedly while the agent samples (some kills land while
//!   the agent replays its backlog, i.e. mid-commit): afterwards every seq the agent
//!   produced reached the collector (no gap), and every disk transition was emitted
//!   exactly once.
//! - The agent is killed with unacked reports in its spool: after a restart they are
//!   delivered.

use std::time::Duration;

use nightowl_tests::{Agent, Collector, Pki, Tmpfs, transitions, wait_for};

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Highest seq the agent has produced (its spool's next seq minus one).
fn produced(agent: &Agent) -> u64 {
    agent.spool()["next_seq"].as_u64().unwrap() - 1
}

fn collector_seq(collector: &Collector) -> u64 {
    collector.agent("acme", "srv-01").and_then(|row| row["last_seq"].as_u64()).unwrap_or(0)
}

#[test]
fn collector_kill9_loses_no_report_and_no_transition() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), 16) else { return };
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    let mut agent =
        Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "150ms", &[&disk.path]);
    agent.start();
    wait_for("first reports", Duration::from_secs(60), || (collector_seq(&collector) >= 2).then_some(()));

    // Transition 1 (firing) happens while the collector is up.
    disk.fill("ballast", 16);
    let check = format!("disk:{}", disk.path.display());
    let fingerprint = wait_for("firing", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["check"] == check.as_str())
            .map(|event| event["fingerprint"].as_str().unwrap().to_owned())
    });

    // Collector down; transitions 2 (resolved) and 3 (firing) happen only in the
    // agent's spool.
    collector.kill9();
    disk.remove("ballast");
    sleep(1200);
    disk.fill("ballast", 16);
    sleep(1200);
    assert!(
        agent.spool()["pending"].as_u64().unwrap() >= 5,
        "reports pile up in the spool while the collector is down"
    );

    // Kill it again while it is replaying the backlog (commits in flight), a few times.
    for pause in [150, 400, 50, 250] {
        collector.start();
        sleep(pause);
        collector.kill9();
        sleep(300);
    }
    collector.start();
    let target = produced(&agent);
    wait_for("the collector to catch up", Duration::from_secs(120), || {
        (collector_seq(&collector) >= target).then_some(())
    });

    // Transition 4 (resolved) while up, then a kill right after it.
    disk.remove("ballast");
    wait_for("final resolved", Duration::from_secs(60), || {
        (transitions(&collector.events(), &fingerprint).len() >= 4).then_some(())
    });
    collector.kill9();
    sleep(500);
    collector.start();
    let target = produced(&agent);
    wait_for("the collector to catch up again", Duration::from_secs(120), || {
        (collector_seq(&collector) >= target).then_some(())
    });

    let row = collector.agent("acme", "srv-01").unwrap();
    assert_eq!(row["seq_gaps"], 0, "every report seq reached the collector: {row}");
    assert_eq!(agent.spool()["dropped_total"], 0);
    let events = collector.events();
    let statuses: Vec<String> =
        transitions(&events, &fingerprint).into_iter().map(|(status, _)| status).collect();
    assert_eq!(
        statuses,
        ["firing", "resolved", "firing", "resolved"],
        "each transition exactly once, in order"
    );
    let mut ids: Vec<&str> = events.iter().map(|event| event["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    agent.terminate();
    collector.terminate();
}

#[test]
fn agent_kill9_with_unacked_spool_delivers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    // Watch "/" only: this test is about the spool, not about a mount.
    let mut agent = Agent::new(
        &dir.path().join("agent"),
        &collector,
        &pki,
        &cert,
        &key,
        "150ms",
        &[std::path::Path::new("/")],
    );
    agent.start();
    wait_for("first reports", Duration::from_secs(60), || (collector_seq(&collector) >= 1).then_some(()));

    // The collector goes away; the agent keeps sampling into its spool.
    collector.kill9();
    wait_for("unacked reports in the spool", Duration::from_secs(60), || {
        (agent.spool()["pending"].as_u64().unwrap() >= 5).then_some(())
    });
    agent.kill9();
    let spool = agent.spool();
    let newest = spool["newest_seq"].as_u64().unwrap();
    let pending = spool["pending"].as_u64().unwrap();
    assert!(pending >= 5, "{spool}");
    assert!(collector_seq(&collector) < newest, "the collector does not have them yet");

    // Both come back: the spooled reports are delivered, none skipped.
    collector.start();
    agent.start();
    wait_for("the spooled reports to be delivered", Duration::from_secs(120), || {
        (collector_seq(&collector) >= newest).then_some(())
    });
    let row = collector.agent("acme", "srv-01").unwrap();
    assert_eq!(row["seq_gaps"], 0, "{row}");
    wait_for("the spool to drain", Duration::from_secs(60), || {
        (agent.spool()["oldest_seq"].as_u64().is_none_or(|oldest| oldest > newest)).then_some(())
    });
    agent.terminate();
    collector.terminate();
}
