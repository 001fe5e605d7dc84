//! Policy file parsing, matching, refusal and the effective policy per agent.

use std::collections::BTreeMap;

use super::*;

const FILE: &str = "/etc/nightowl/policies.toml";

fn parse(text: &str) -> Result<PolicySet, PolicyError> {
    PolicySet::parse(text, FILE)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
}

const EXAMPLE: &str = r#"
[[policy]]
name = "acme-servers"
tenant = "acme"
labels = { role = "server" }
[[policy.service]]
name = "nginx"
process = "nginx"
[[policy.latency]]
name = "gateway"
method = "tcp"
target = "10.0.0.1:443"

[[policy]]
name = "everyone"
[[policy.backup]]
name = "db"
path = "/backups/db-*.tar.zst"
max_age = "26h"
[[policy.service]]
name = "nginx"
port = 80
"#;

#[test]
fn policies_match_by_tenant_and_labels() {
    let set = parse(EXAMPLE).unwrap();
    assert_eq!(set.policies().len(), 2);
    let server = labels(&[("role", "server"), ("site", "hq")]);
    assert!(set.policies()[0].matches("acme", &server));
    assert!(!set.policies()[0].matches("globex", &server), "another tenant");
    assert!(!set.policies()[0].matches("acme", &labels(&[("role", "workstation")])), "other labels");
    assert!(!set.policies()[0].matches("acme", &BTreeMap::new()), "no labels");
    assert!(set.policies()[1].matches("globex", &BTreeMap::new()), "no tenant, no labels: everyone");
}

#[test]
fn the_effective_policy_concatenates_and_the_first_definition_wins() {
    let set = parse(EXAMPLE).unwrap();
    let effective = set.effective("acme", &labels(&[("role", "server")]));
    assert_eq!(effective.policies, ["acme-servers", "everyone"]);
    assert_eq!(effective.checks, 3, "service:nginx of `everyone` is dropped");
    let document: Table = toml::from_str(&effective.checks_toml).unwrap();
    assert_eq!(document.keys().collect::<Vec<_>>(), ["backup", "latency", "service"]);
    let services = document["service"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0]["process"].as_str(), Some("nginx"), "the first policy's nginx");
    assert_eq!(document["latency"][0]["target"].as_str(), Some("10.0.0.1:443"));
    assert_eq!(document["backup"][0]["max_age"].as_str(), Some("26h"));
    assert_eq!(effective.version, version_of(&effective.checks_toml));
    assert_ne!(effective.version, 0);

    // Stable: the same inputs give the same text and version, whatever the label order.
    let again = set.effective("acme", &labels(&[("site", "hq"), ("role", "server")]));
    assert_eq!(again.checks_toml, effective.checks_toml);
    assert_eq!(again.version, effective.version);

    // Another tenant gets only `everyone`, with its own nginx.
    let other = set.effective("globex", &BTreeMap::new());
    assert_eq!(other.policies, ["everyone"]);
    assert_ne!(other.version, effective.version);
    let document: Table = toml::from_str(&other.checks_toml).unwrap();
    assert_eq!(document["service"][0]["port"].as_integer(), Some(80));
}

#[test]
fn no_matching_policy_is_version_zero() {
    let set =
        parse("[[policy]]\nname = \"a\"\ntenant = \"acme\"\n[[policy.service]]\nname = \"x\"\nport = 1\n")
            .unwrap();
    let none = set.effective("globex", &BTreeMap::new());
    assert_eq!(none, Effective::default());
    assert_eq!(PolicySet::default().effective("acme", &BTreeMap::new()), Effective::default());
    assert_eq!(parse("").unwrap(), PolicySet::default());
    let message = set.effective("acme", &BTreeMap::new()).message();
    assert_eq!(message.policies, ["a"]);
    assert!(message.checks_toml.contains("[[service]]"), "{}", message.checks_toml);
}

#[test]
fn commands_are_refused_naming_file_policy_and_key() {
    let error =
        parse("[[policy]]\nname = \"ops\"\n[[policy.command]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n")
            .unwrap_err();
    assert_eq!(error.key, "policy \"ops\".command");
    assert!(error.message.contains("[[policy.command]] is not allowed"), "{error}");
    assert!(error.to_string().starts_with(&format!("{FILE}: policy \"ops\".command: ")), "{error}");

    let error =
        parse("[[policy]]\nname = \"ops\"\n[[policy.backup]]\nname = \"b\"\npath = \"/b/*\"\ncommand = [\"/bin/true\"]\n")
            .unwrap_err();
    assert_eq!(error.key, "policy \"ops\".backup[0].command", "{error}");
    for key in ["restic_repo = \"/srv/restic\"", "borg_repo = \"/srv/borg\"", "restic_binary = \"/tmp/x\""] {
        let error = parse(&format!("[[policy]]\nname = \"ops\"\n[[policy.backup]]\nname = \"b\"\n{key}\n"))
            .unwrap_err();
        let field = key.split(' ').next().unwrap();
        assert_eq!(error.key, format!("policy \"ops\".backup[0].{field}"), "{error}");
        assert!(error.message.contains("run programs"), "{error}");
    }
    let error =
        parse("[[policy]]\nname = \"ops\"\n[[policy.service]]\nname = \"s\"\ncommand = \"x\"\n").unwrap_err();
    assert_eq!(error.key, "policy \"ops\".service[0].command", "{error}");
}

#[test]
fn envelope_mistakes_name_the_policy_and_key() {
    let cases = [
        ("[[policy]]\nname = \"p\"\ntennant = \"acme\"\n", "policy \"p\".tennant", "unknown key"),
        ("[[policy]]\nname = \"p\"\ntenant = \"Acme Corp\"\n", "policy \"p\".tenant", "tenant"),
        ("[[policy]]\nname = \"p\"\nlabels = { role = 1 }\n", "policy \"p\".labels.role", "string"),
        ("[[policy]]\ntenant = \"acme\"\n", "policy[0]", "name is missing"),
        ("[[policy]]\nname = \"has space\"\n", "policy[0].name", "use 1-64"),
        ("[[policy]]\nname = \"p\"\n[[policy]]\nname = \"p\"\n", "policy \"p\"", "used twice"),
        (
            "[[policy]]\nname = \"p\"\n[policy.service]\nname = \"s\"\n",
            "policy \"p\".service",
            "[[policy.service]]",
        ),
        (
            "[[policy]]\nname = \"p\"\n[[policy.service]]\nport = 1\n",
            "policy \"p\".service[0]",
            "name is missing",
        ),
        (
            "[[policy]]\nname = \"p\"\n[[policy.latency]]\nname = \"a:b\"\n",
            "policy \"p\".latency[0].name",
            "use 1-64",
        ),
        (
            "[[policy]]\nname = \"p\"\n[[policy.service]]\nname = \"s\"\nport = 1\n[[policy.service]]\nname = \"s\"\nport = 2\n",
            "policy \"p\".service[1]",
            "used twice",
        ),
        ("[[policy]]\nname = \"p\"\n[[policy.disk]]\nname = \"s\"\n", "policy \"p\".disk", "unknown key"),
        ("rules = \"x\"\n", "rules", "[[policy]] entries only"),
        ("[[policy]]\nname = \"p\"\nlabels = \"x\n", "line 3", ""),
    ];
    for (text, key, message) in cases {
        let error = parse(text).unwrap_err();
        assert_eq!(error.key, key, "{text}: {error}");
        assert!(error.message.contains(message), "{text}: {error}");
        assert_eq!(error.file, FILE);
    }
}

#[test]
fn an_oversized_file_is_refused() {
    let error = parse(&"#".repeat(MAX_FILE_BYTES + 1)).unwrap_err();
    assert_eq!(error.key, "(file)");
}
