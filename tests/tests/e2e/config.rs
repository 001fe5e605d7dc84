//! Acceptance (issue 2, point 5): bad configs exit 64 with a message naming the file and
//! the key, for both binaries.

use std::process::Command;

use nightowl_tests::{agent_bin, collector_bin, run};

fn expect_config_error(binary: &std::path::Path, subcommand: &str, config: &std::path::Path, key: &str) {
    let output = run(Command::new(binary).arg(subcommand).arg("--config").arg(config));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{binary:?} {subcommand} with {config:?}: {stderr}");
    assert!(stderr.contains(&config.display().to_string()), "message names the file: {stderr}");
    assert!(stderr.contains(key), "message names the key {key:?}: {stderr}");
}

#[test]
fn collector_rejects_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "listen = \"127.0.0.1:0\"\n[tls]\nca = \"ca.pem\"\ncertfile = \"c.pem\"\n")
        .unwrap();
    expect_config_error(&collector_bin(), "run", &unknown, "tls.certfile");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\n[limits]\nhandshake_timeout = \"a while\"\n").unwrap();
    expect_config_error(&collector_bin(), "run", &bad, "limits.handshake_timeout");
    let bad_listen = dir.path().join("bad-listen.toml");
    std::fs::write(&bad_listen, "listen = \"everywhere\"\n").unwrap();
    expect_config_error(&collector_bin(), "run", &bad_listen, "listen");
}

#[test]
fn agent_rejects_unknown_keys_and_bad_values() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "[agent]\ninterval = \"10s\"\nintervall = \"5s\"\n").unwrap();
    expect_config_error(&agent_bin(), "run", &unknown, "agent.intervall");
    expect_config_error(&agent_bin(), "check", &unknown, "agent.intervall");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\ninterval = \"fast\"\n").unwrap();
    expect_config_error(&agent_bin(), "run", &bad, "agent.interval");
    let bad_url = dir.path().join("bad-url.toml");
    std::fs::write(
        &bad_url,
        "[collector]\nurl = \"http://127.0.0.1:7443\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    )
    .unwrap();
    expect_config_error(&agent_bin(), "run", &bad_url, "collector.url");
    let no_collector = dir.path().join("no-collector.toml");
    std::fs::write(&no_collector, "[agent]\ninterval = \"10s\"\n").unwrap();
    expect_config_error(&agent_bin(), "run", &no_collector, "collector");
}
