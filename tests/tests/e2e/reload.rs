//! Acceptance (issue 3, point 6): editing the agent's config applies the new checks
//! without reconnecting; an invalid edit is refused and the old checks keep running.

use std::time::Duration;

use nightowl_tests::{Agent, Collector, Pki, Tmpfs, wait_for};

#[test]
fn config_edits_apply_live_and_invalid_edits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(first) = Tmpfs::mount(&dir.path().join("first"), 16) else { return };
    let Some(second) = Tmpfs::mount(&dir.path().join("second"), 16) else { return };
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    let mut agent =
        Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "300ms", &[&first.path]);
    agent.start();
    let connected_at = wait_for("the agent's first reports", Duration::from_secs(60), || {
        collector
            .agent("acme", "srv-01")
            .filter(|row| row["last_seq"].as_u64() >= Some(2))
            .map(|row| row["connected_at"].clone())
    });

    // The second disk is full but not watched yet: nothing fires.
    second.fill("ballast", 16);
    std::thread::sleep(Duration::from_millis(1500));
    let second_check = format!("disk:{}", second.path.display());
    assert!(
        !collector.events().iter().any(|event| event["check"] == second_check.as_str()),
        "an unwatched disk must not alert"
    );

    // Edit: watch both. The new check reports and fires.
    agent.rewrite_config(&[&first.path, &second.path], "");
    wait_for("the newly configured disk to fire", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["check"] == second_check.as_str() && event["status"] == "firing")
    });

    // An invalid edit (unknown key): refused, the agent keeps running its checks.
    agent.rewrite_config(&[&first.path], "[disk_typo]\nsize = 1\n");
    wait_for("the agent to log the refused reload", Duration::from_secs(30), || {
        agent.log_text().contains("config reload refused").then_some(())
    });
    assert!(agent.is_running(), "an invalid edit must not stop the agent");
    let first_check = format!("disk:{}", first.path.display());
    first.fill("ballast", 16);
    wait_for("the old check to still fire", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["check"] == first_check.as_str() && event["status"] == "firing")
    });
    // The refused edit wanted to drop the second disk; it must still be watched.
    second.remove("ballast");
    wait_for("the second disk (kept by the refused edit) to resolve", Duration::from_secs(60), || {
        collector
            .events()
            .into_iter()
            .find(|event| event["check"] == second_check.as_str() && event["status"] == "resolved")
    });

    // All of it over the one session the agent opened at start.
    let row = collector.agent("acme", "srv-01").unwrap();
    assert_eq!(row["connected_at"], connected_at, "the session was not re-established: {row}");
    assert_eq!(row["sessions"], 1, "{row}");
    assert_eq!(agent.log_text().matches("session established").count(), 1);
    agent.terminate();
    collector.terminate();
}
