//! Acceptance (issue 13, defect 3): the agent's shutdown is bounded. A blocking call
//! cannot be cancelled, and the tokio runtime used to wait for every one at exit: an
//! agent whose backup log sits on a network mount that stopped answering ignored SIGTERM
//! for as long as the mount hung (forever, here). Now it waits its grace (5 s), says
//! what did not stop, and exits.

use std::time::Duration;

use nightowl_tests::{Agent, Collector, HungMount, Pki, blocked_in_fuse, wait_for};

#[test]
fn sigterm_stops_an_agent_blocked_on_a_hung_mount_and_names_what_did_not_stop() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("agent").join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("backup.log");
    std::fs::write(&log, "backup ok\n").unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    let mut agent = Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "1s", &[]);
    let backup = format!(
        "[[backup]]\nname = \"nightly\"\nlog = {:?}\nsuccess = \"backup ok\"\nmax_age = \"1h\"\ninterval = \"1s\"\n",
        log.display().to_string()
    );
    agent.rewrite_config(&[std::path::Path::new("/")], &backup);
    agent.start();
    wait_for("the backup check to report", Duration::from_secs(60), || {
        collector.agent("acme", "srv-01").filter(|row| row["last_seq"].as_u64() >= Some(3))
    });

    // The log's directory becomes a mount whose server is gone: the next sample's read
    // blocks in the kernel, on a thread of tokio's blocking pool.
    let Some(_hung) = HungMount::mount(&logs) else { return };
    let pid = agent.pid().expect("running");
    wait_for("the agent to block reading the hung mount", Duration::from_secs(30), || {
        blocked_in_fuse(pid).then_some(())
    });

    // `terminate` waits 30 s for the exit (and fails the test if there is none).
    let code = agent.terminate();
    let text = agent.log_text();
    assert!(text.contains("shutdown grace expired"), "no line about what did not stop:\n{text}");
    let line = text.lines().find(|line| line.contains("shutdown grace expired")).unwrap();
    assert!(line.contains(&format!("reading {}", log.display())), "the stuck read is named: {line}");
    // Leaving work behind is not a clean stop: the exit says so.
    assert_eq!(code, Some(1), "{text}");
}
