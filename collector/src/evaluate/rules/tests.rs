use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

#[test]
fn embedded_defaults_cover_the_overnight_scenarios() {
    let rules = RuleSet::defaults();
    for (kind, check) in [
        ("disk", "disk:/"),
        ("service", "service:nginx"),
        ("backup", "backup:db"),
        ("latency", "latency:gw"),
        ("host", "host"),
        ("command", "command:x"),
    ] {
        assert!(!rules.effective("acme", &BTreeMap::new(), kind, check).is_empty(), "{kind}");
    }
    let names: Vec<&str> = rules.rules().iter().map(|rule| rule.name.as_str()).collect();
    for expected in [
        "disk_used_pct",
        "disk_time_to_full",
        "service_down",
        "backup_failed",
        "backup_stale",
        "latency_loss",
        "latency_rtt",
        "host_memory",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
}

#[test]
fn invalid_rules_are_rejected_naming_the_rule() {
    let cases = [
        (
            "[[rule]]\nname = \"bad_order\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 96\ncrit = 95",
            "rule bad_order",
            "warn (96) must not be above crit (95)",
        ),
        (
            "[[rule]]\nname = \"typo\"\nkind = \"disk\"\nmetric = \"used_pct\"\ncrit = 95\nwran = 90",
            "rule typo",
            "unknown field `wran`",
        ),
        (
            "[[rule]]\nname = \"below_bad\"\nkind = \"disk\"\nmetric = \"free\"\ndirection = \"below\"\nwarn = 5\ncrit = 10",
            "rule below_bad",
            "must not be below crit",
        ),
        (
            "[[rule]]\nname = \"clear_bad\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 90\nclear = 95",
            "rule clear_bad",
            "clear (95)",
        ),
        (
            "[[rule]]\nname = \"no_thresholds\"\nkind = \"disk\"\nmetric = \"used_pct\"",
            "rule no_thresholds",
            "set warn, crit",
        ),
        (
            "[[rule]]\nname = \"tpl\"\nkind = \"disk\"\nmetric = \"m\"\ncrit = 1\nsummary = \"{nope}\"",
            "rule tpl",
            "unknown placeholder",
        ),
        (
            "[[rule]]\nname = \"dir\"\nkind = \"disk\"\nmetric = \"m\"\ncrit = 1\ndirection = \"up\"",
            "rule dir",
            "direction",
        ),
        (
            "[[rule]]\nname = \"d\"\nkind = \"disk\"\nmetric = \"m\"\ncrit = 1\n[[rule]]\nname = \"d\"\nkind = \"x\"\nmetric = \"m\"\ncrit = 1",
            "rule d",
            "exists already",
        ),
        (
            "[[rule]]\nname = \"r\"\nkind = \"disk\"\nmetric = \"m\"\nwarn = 90\ncrit = 95\n[[override]]\nrule = \"r\"\nwarn = 99",
            "override[0] (rule r)",
            "warn (99) must not be above crit (95)",
        ),
        ("[[override]]\nrule = \"ghost\"\nwarn = 1", "override[0] (rule ghost)", "no rule named"),
        ("[rules]\nx = 1", "rules", "unknown table"),
    ];
    for (text, place, message) in cases {
        let error = RuleSet::parse(text, "rules.toml").unwrap_err();
        assert_eq!(error.place, place, "{text}: {error}");
        assert!(error.message.contains(message), "{text}: {error}");
        assert!(error.to_string().starts_with("rules.toml: "), "{error}");
    }
}

#[test]
fn overrides_by_tenant_label_and_check_without_copying_rules() {
    let rules = RuleSet::parse(
            "[[rule]]\nname = \"disk_used_pct\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 90\ncrit = 95\nclear = 85\n\
             [[override]]\nrule = \"disk_used_pct\"\nlabels = { role = \"workstation\" }\nwarn = 95\ncrit = 98\nseverity = { crit = \"P4\" }\n\
             [[override]]\nrule = \"disk_used_pct\"\ntenant = \"globex\"\ncheck = \"disk:/scratch*\"\ndisabled = true\n",
            "rules.toml",
        )
        .unwrap();
    let server = rules.effective("acme", &labels(&[("role", "server")]), "disk", "disk:/");
    assert_eq!((server[0].warn, server[0].crit, server[0].clear), (Some(90.0), Some(95.0), 85.0));
    let workstation = rules.effective("acme", &labels(&[("role", "workstation")]), "disk", "disk:/");
    assert_eq!((workstation[0].warn, workstation[0].crit), (Some(95.0), Some(98.0)));
    assert_eq!(workstation[0].clear, 90.0, "clear keeps the base's 5-point gap");
    assert_eq!(workstation[0].crit_severity, Severity::P4);
    assert!(rules.effective("globex", &BTreeMap::new(), "disk", "disk:/scratch2").is_empty());
    assert_eq!(rules.effective("globex", &BTreeMap::new(), "disk", "disk:/").len(), 1);
    assert!(rules.effective("acme", &BTreeMap::new(), "service", "service:x").is_empty());
}

#[test]
fn globs_and_templates() {
    assert!(Glob::new("disk:/var*").matches("disk:/var/log"));
    assert!(Glob::new("latency:branch-?").matches("latency:branch-7"));
    assert!(!Glob::new("latency:branch-?").matches("latency:branch-17"));
    assert!(Glob::new("*").matches(""));
    let template = Template::parse("Disk {subject} {value}% ({level})").unwrap();
    assert_eq!(
        template.render(&[
            ("subject", "/var".into()),
            ("value", "96.2".into()),
            ("level", "critical".into())
        ]),
        "Disk /var 96.2% (critical)"
    );
}
