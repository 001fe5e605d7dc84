//! Acceptance (issue 4, point 3): an agent that stops is reported offline within 45 s,
//! and the summary tells "host reachable, agent down" (agent killed) from "host
//! unreachable" (the test takes the agent host's network link down). The agent runs on
//! a test host in a network namespace of its own, the collector in the test's.

use std::time::{Duration, Instant};

use nightowl_tests::{Agent, Collector, NetnsHost, Pki, wait_for};
use serde_json::Value;

fn offline_events(collector: &Collector) -> Vec<Value> {
    collector.events().into_iter().filter(|event| event["rule"] == "agent_offline").collect()
}

#[test]
fn offline_alerts_tell_agent_down_from_host_unreachable() {
    let Some(host) = NetnsHost::create("off") else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init_with_names(&dir.path().join("pki"), &[&host.local.to_string(), "localhost"]);
    let (cert, key) = pki.issue("acme", "branch-srv");
    let mut collector = Collector::listening_on(dir.path(), &pki, host.local);
    collector.start();
    let root = std::path::Path::new("/");
    let mut agent = Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "1s", &[root]);
    agent.set_labels(&[("role", "server")], &[root]);
    agent.start_in(&host.name);
    let agent_row = || collector.agents().into_iter().find(|row| row["agent"] == "branch-srv");
    wait_for("the agent in its namespace to report", Duration::from_secs(60), || {
        agent_row().filter(|row| row["last_seq"].as_u64() >= Some(1))
    });

    // 1. The agent dies; its host is still up.
    agent.kill9();
    let killed = Instant::now();
    let offline = wait_for("the offline alert", Duration::from_secs(90), || {
        offline_events(&collector).into_iter().find(|event| event["status"] == "firing")
    });
    let elapsed = killed.elapsed();
    eprintln!("offline alert {elapsed:?} after kill -9");
    assert!(elapsed <= Duration::from_secs(45), "offline alert took {elapsed:?}");
    let summary = offline["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("host {} is reachable", host.peer)), "{summary}");
    assert!(summary.contains("agent itself is down"), "{summary}");
    assert_eq!(offline["severity"], "P1", "role = server is P1: {offline}");
    assert_eq!((offline["check"].as_str(), offline["kind"].as_str()), (Some("agent"), Some("agent")));
    assert_eq!(offline["tenant"], "acme");

    // 2. It comes back: resolved, same fingerprint.
    agent.start_in(&host.name);
    let back = wait_for("the back-online event", Duration::from_secs(60), || {
        offline_events(&collector).into_iter().find(|event| event["status"] == "resolved")
    });
    assert_eq!(back["fingerprint"], offline["fingerprint"]);

    // 3. The host's link goes down: the agent is silent and the host does not answer.
    host.link_down();
    let cut = Instant::now();
    let unreachable = wait_for("the second offline alert", Duration::from_secs(90), || {
        offline_events(&collector).into_iter().filter(|event| event["status"] == "firing").nth(1)
    });
    eprintln!("offline alert {:?} after the link went down", cut.elapsed());
    let summary = unreachable["summary"].as_str().unwrap();
    assert!(summary.contains(&format!("host {} is unreachable", host.peer)), "{summary}");
    assert_eq!(
        offline_events(&collector).iter().map(|event| event["status"].as_str().unwrap()).collect::<Vec<_>>(),
        ["firing", "resolved", "firing"],
        "each transition once"
    );
    host.link_up();
    agent.terminate();
    collector.terminate();
}
