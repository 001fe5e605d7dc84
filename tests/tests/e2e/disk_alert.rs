//! Acceptance (issue 2, point 1): a filling tmpfs on an endpoint becomes a durable
//! "firing" alert, and freeing it a "resolved" one with the same fingerprint — real
//! binaries, real certificates, real mount.

use std::time::Duration;

use nightowl_tests::{Agent, Collector, Pki, Tmpfs, transitions, wait_for};

#[test]
fn filling_tmpfs_fires_and_freeing_it_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), 16) else { return };
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    let mut agent =
        Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "300ms", &[&disk.path]);
    agent.start();

    let check = format!("disk:{}", disk.path.display());
    // Healthy first: the agent reports and nothing fires.
    wait_for("the agent's first reports", Duration::from_secs(60), || {
        collector.agent("acme", "srv-01").filter(|row| row["last_seq"].as_u64() >= Some(2))
    });
    assert!(collector.events().is_empty(), "an empty disk must not alert");

    // 15.5 of 16 MiB: past the 95 % critical threshold.
    disk.fill("ballast", 15);
    disk.fill("ballast2", 1);
    let firing = wait_for("a firing disk event", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["check"] == check.as_str() && event["status"] == "firing")
    });
    assert_eq!(firing["tenant"], "acme");
    assert_eq!(firing["agent"], "srv-01");
    assert_eq!(firing["kind"], "disk");
    assert_eq!(firing["rule"], "disk_used_pct");
    assert_eq!(firing["severity"], "P2", "critical disk is P2: {firing}");
    assert!(firing["value"].as_f64().unwrap() >= 95.0, "{firing}");
    assert_eq!(firing["threshold"], 95.0);
    let summary = firing["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("Disk {} ", disk.path.display())) && summary.contains("critical at 95%"),
        "{summary}"
    );
    assert!(firing["resolved_at"].is_null());
    let fingerprint = firing["fingerprint"].as_str().unwrap().to_owned();

    disk.remove("ballast");
    disk.remove("ballast2");
    let resolved = wait_for("the resolved event", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["fingerprint"] == fingerprint.as_str() && event["status"] == "resolved")
    });
    assert_eq!(resolved["started_at"], firing["started_at"]);
    assert!(resolved["resolved_at"].is_string());
    assert_ne!(resolved["id"], firing["id"]);
    assert_eq!(
        transitions(&collector.events(), &fingerprint),
        [("firing".to_owned(), "P2".to_owned()), ("resolved".to_owned(), "P2".to_owned())]
    );

    assert_eq!(agent.terminate(), Some(0), "agent exits cleanly on SIGTERM");
    assert_eq!(collector.terminate(), Some(0), "collector exits cleanly on SIGTERM");
}
