//! The README's configuration examples are real: both parse and validate with the
//! binaries' own loaders (nothing is run, so no example address is ever contacted).

use std::path::Path;

fn toml_block_after(readme: &str, marker: &str) -> String {
    let start = readme.find(marker).unwrap_or_else(|| panic!("README has no {marker:?}"));
    let block = &readme[start..];
    let open = block.find("```toml\n").expect("a toml block follows") + "```toml\n".len();
    let close = block[open..].find("```").expect("the block ends");
    block[open..open + close].to_owned()
}

fn readme() -> String {
    std::fs::read_to_string(nightowl_tests::workspace_root().join("README.md")).unwrap()
}

#[test]
fn collector_example_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    // The example's rules file: the embedded defaults, written where it points.
    let text = toml_block_after(&readme(), "Collector (`nightowl-collector run")
        .replace("/etc/nightowl/rules.toml", &dir.path().join("rules.toml").display().to_string())
        .replace("/etc/nightowl/policies.toml", &dir.path().join("policies.toml").display().to_string());
    std::fs::write(dir.path().join("rules.toml"), "").unwrap();
    std::fs::write(dir.path().join("policies.toml"), "").unwrap();
    let config = nightowl_collector::config::Config::parse(&text, "README.md", Path::new("/"))
        .unwrap_or_else(|error| panic!("README collector example: {error}"));
    assert_eq!(config.offline.after.as_secs(), 25);
}

#[test]
fn agent_example_is_valid() {
    let text = toml_block_after(&readme(), "Agent (`nightowl-agent run");
    let config = nightowl_agent::config::Config::parse(&text, "README.md", Path::new("/"))
        .unwrap_or_else(|error| panic!("README agent example: {error}"));
    let keys: Vec<&str> = config.units.iter().map(|unit| unit.key.as_str()).collect();
    for expected in
        ["disk", "host", "service:postgres", "backup:db-nightly", "latency:gateway", "command:root-disk"]
    {
        assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
    }
}

#[test]
fn override_example_is_valid() {
    let readme = readme();
    let start = readme.find("Overrides tune a rule").unwrap();
    let text = toml_block_after(&readme[start..], "```toml");
    let defaults = include_str!("../../collector/src/evaluate/default_rules.toml");
    nightowl_collector::evaluate::RuleSet::parse(&format!("{defaults}\n{text}"), "README.md")
        .unwrap_or_else(|error| panic!("README override example: {error}"));
}

#[test]
fn maintenance_and_coverage_example_is_valid() {
    let readme = readme();
    let start = readme.find("Maintenance windows and business hours").unwrap();
    let text = toml_block_after(&readme[start..], "```toml");
    let config = nightowl_collector::config::Config::parse(&text, "README.md", Path::new("/"))
        .unwrap_or_else(|error| panic!("README maintenance example: {error}"));
    assert_eq!(config.maintenance.windows.len(), 1);
    assert!(config.coverage.default.is_some());
}

#[test]
fn central_policy_example_is_valid_on_both_sides() {
    let readme = readme();
    let start = readme.find("## Central policy").unwrap();
    let text = toml_block_after(&readme[start..], "```toml");
    let policies = nightowl_collector::policy::PolicySet::parse(&text, "README.md")
        .unwrap_or_else(|error| panic!("README policy example: {error}"));
    let labels = [("role".to_owned(), "server".to_owned())].into_iter().collect();
    let effective = policies.effective("acme", &labels);
    assert_eq!(effective.policies, ["acme-servers"]);
    // What the collector sends, the agent accepts.
    let accepted =
        nightowl_agent::policy::Policy::accept(&effective.message(), std::time::Duration::from_secs(10))
            .unwrap_or_else(|refused| panic!("the agent refuses the README policy: {refused}"));
    let keys: Vec<String> = accepted
        .units(std::time::Duration::from_secs(10))
        .unwrap()
        .into_iter()
        .map(|unit| unit.key)
        .collect();
    assert_eq!(keys, ["service:nginx", "backup:db", "latency:gateway"]);
}
