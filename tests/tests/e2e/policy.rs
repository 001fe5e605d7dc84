//! Acceptance (issue 4, central policy): the collector pushes checks to agents by tenant
//! and label; the agent runs them beside its local checks (a local check of the same name
//! wins); removing a policy retires its checks cleanly (one `resolved`, no `no_data`); a
//! policy that would run a command stops the collector at start (exit 64).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nightowl_tests::{Agent, Collector, Pki, check_events, collector_bin, replace_file, run, wait_for};

/// The policy file: `acme-servers` targets our agent (tenant acme, role server); the
/// others must not reach it.
fn policies(ghost: &str, with_acme_servers: bool) -> String {
    let acme_servers = format!(
        "[[policy]]\nname = \"acme-servers\"\ntenant = \"acme\"\nlabels = {{ role = \"server\" }}\n\
         [[policy.service]]\nname = \"ghost\"\nprocess = \"{ghost}\"\n\
         # Also defined locally (a process that runs): the local definition must win.\n\
         [[policy.service]]\nname = \"web\"\nprocess = \"{ghost}\"\n\n"
    );
    format!(
        "{}[[policy]]\nname = \"globex-all\"\ntenant = \"globex\"\n[[policy.service]]\nname = \"other-tenant\"\nprocess = \"{ghost}\"\n\n\
         [[policy]]\nname = \"acme-workstations\"\ntenant = \"acme\"\nlabels = {{ role = \"workstation\" }}\n\
         [[policy.service]]\nname = \"other-label\"\nprocess = \"{ghost}\"\n",
        if with_acme_servers { acme_servers.as_str() } else { "" }
    )
}

#[test]
fn policy_checks_run_local_checks_win_and_removed_checks_retire_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    // A process name nothing on this machine runs.
    let ghost = format!("no-ghost-{}", std::process::id());
    let policy_file = dir.path().join("policies.toml");
    replace_file(&policy_file, &policies(&ghost, true));
    let mut collector = Collector::with_config(dir.path(), &pki, "policies = \"policies.toml\"", "");
    collector.start();

    let agent_dir = dir.path().join("agent");
    let mut agent = Agent::new(&agent_dir, &collector, &pki, &cert, &key, "300ms", &[Path::new("/")]);
    agent.set_labels(&[("role", "server")], &[Path::new("/")]);
    // The local `web`: the collector, which certainly runs here (a process probe never
    // counts the agent itself).
    agent
        .rewrite_config(&[Path::new("/")], "[[service]]\nname = \"web\"\nprocess = \"nightowl-collector\"\n");
    agent.start();

    // The policy check runs: its process is missing, so it fires.
    wait_for("the policy check service:ghost to fire", Duration::from_secs(60), || {
        let events = collector.events();
        check_events(&events, "srv-01", "service:ghost")
            .iter()
            .any(|(status, rule, _)| status == "firing" && rule == "service_down")
            .then_some(())
    });
    let log = agent.log_text();
    assert!(log.contains("policy applied"), "{log}");
    assert!(
        log.contains("the local check wins") && log.contains("service:web"),
        "conflict not logged:\n{log}"
    );
    // Give the local `web` as long again as `ghost` needed; it runs and must stay quiet
    // (the policy's `web`, with a missing process, would fire).
    std::thread::sleep(Duration::from_secs(3));
    let events = collector.events();
    assert!(check_events(&events, "srv-01", "service:web").is_empty(), "local web must win: {events:?}");
    for other in ["service:other-tenant", "service:other-label"] {
        assert!(check_events(&events, "srv-01", other).is_empty(), "{other} is not for this agent");
    }
    let saved = std::fs::read_to_string(agent_dir.join("state/policy.toml")).expect("the policy is saved");
    assert!(saved.contains(&ghost) && saved.contains("acme-servers"), "{saved}");

    // Remove the policy: the agent retires `ghost`, the collector resolves it once.
    replace_file(&policy_file, &policies(&ghost, false));
    wait_for("the retired check to resolve", Duration::from_secs(60), || {
        let events = collector.events();
        check_events(&events, "srv-01", "service:ghost")
            .into_iter()
            .find(|(status, _, _)| status == "resolved")
    });
    let retired_at = Instant::now();
    let (_, rule, summary) = check_events(&collector.events(), "srv-01", "service:ghost").pop().unwrap();
    assert_eq!(rule, "service_down");
    assert!(summary.contains("removed from the agent's configuration"), "{summary}");

    // Three staleness intervals (30 s minimum, timer every 5 s) and more: no `no_data`,
    // nothing else about the retired check.
    while retired_at.elapsed() < Duration::from_secs(45) {
        std::thread::sleep(Duration::from_secs(1));
        assert!(agent.is_running(), "{}", agent.log_text());
    }
    let events = collector.events();
    let ghost_events = check_events(&events, "srv-01", "service:ghost");
    let transitions: Vec<(&str, &str)> =
        ghost_events.iter().map(|(status, rule, _)| (status.as_str(), rule.as_str())).collect();
    assert_eq!(transitions, [("firing", "service_down"), ("resolved", "service_down")], "{ghost_events:?}");
    assert!(!events.iter().any(|event| event["rule"] == "no_data"), "no check went silent: {events:?}");
    assert!(check_events(&events, "srv-01", "service:web").is_empty(), "{events:?}");
    assert!(
        check_events(&events, "srv-01", "agent:policy").is_empty(),
        "the policy status is OK: {events:?}"
    );
    let saved = std::fs::read_to_string(agent_dir.join("state/policy.toml")).unwrap();
    assert!(!saved.contains(&ghost), "the emptied policy is saved: {saved}");
    assert!(collector.log_text().contains("checks retired by the agent"));
    // All of it over the agent's one session.
    assert_eq!(agent.log_text().matches("session established").count(), 1);
    agent.terminate();
    collector.terminate();
}

#[test]
fn a_policy_that_would_run_a_command_stops_the_collector_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    replace_file(
        &dir.path().join("policies.toml"),
        "[[policy]]\nname = \"ops-scripts\"\ntenant = \"acme\"\n\
         [[policy.command]]\nname = \"cleanup\"\ncommand = [\"/bin/sh\", \"-c\", \"rm -rf /tmp/x\"]\n",
    );
    let collector = Collector::with_config(dir.path(), &pki, "policies = \"policies.toml\"", "");
    let output = run(Command::new(collector_bin()).arg("run").arg("--config").arg(&collector.config));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("policies.toml: policy \"ops-scripts\".command"), "{stderr}");
    assert!(stderr.contains("[[policy.command]] is not allowed"), "{stderr}");
}
