use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "/etc/nightowl/collector.toml", Path::new("/etc/nightowl"))
}

#[test]
fn embedded_defaults() {
    let config = Config::embedded();
    assert_eq!(config.listen, "127.0.0.1:7443".parse().unwrap());
    assert_eq!(config.data_dir, Path::new("./nightowl-data"));
    assert_eq!(config.tls.ca, Path::new("./nightowl-data/pki/ca.pem"));
    assert_eq!(config.limits, Limits::default());
    assert!(config.rules_path.is_none());
    assert!(config.rules.rules().iter().any(|rule| rule.name == "disk_used_pct"));
}

#[test]
fn a_bad_rules_file_is_a_config_error_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[[rule]]\nname = \"full\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 99\ncrit = 95\n",
    )
    .unwrap();
    let error = Config::parse("rules = \"rules.toml\"", "collector.toml", dir.path()).unwrap_err();
    assert_eq!(error.key, "rules");
    assert!(error.message.contains("rule full") && error.message.contains("warn (99)"), "{error}");
}

#[test]
fn a_policy_with_a_command_is_a_config_error_naming_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.toml"),
        "[[policy]]\nname = \"acme-servers\"\n[[policy.command]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let error = Config::parse("policies = \"policies.toml\"", "collector.toml", dir.path()).unwrap_err();
    assert_eq!(error.key, "policies");
    assert!(error.message.contains("policies.toml: policy \"acme-servers\".command"), "{error}");
    assert!(Config::embedded().policies.policies().is_empty());
    std::fs::write(dir.path().join("policies.toml"), "[[policy]]\nname = \"ok\"\n").unwrap();
    let config = Config::parse("policies = \"policies.toml\"", "collector.toml", dir.path()).unwrap();
    assert_eq!(config.policies_path.as_deref(), Some(dir.path().join("policies.toml").as_path()));
    assert_eq!(config.policies.policies()[0].name, "ok");
}

#[test]
fn full_config_and_relative_paths() {
    let config = parse(
        "listen = \"0.0.0.0:9000\"\ndata_dir = \"data\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.key\"\n[limits]\nhandshake_timeout = \"3s\"\nmax_connections = 10\n",
    )
    .unwrap();
    assert_eq!(config.listen.port(), 9000);
    assert_eq!(config.data_dir, Path::new("/etc/nightowl/data"));
    assert_eq!(config.tls.ca, Path::new("/etc/nightowl/pki/ca.pem"));
    assert_eq!(config.tls.cert, Path::new("/abs/c.pem"));
    assert_eq!(config.limits.handshake_timeout, Duration::from_secs(3));
    assert_eq!(config.limits.max_connections.get(), 10);
}

#[test]
fn unknown_keys_are_named_with_their_table() {
    let error = parse("listen = \"127.0.0.1:1\"\n[tls]\nca = \"x\"\ncertificate = \"y\"\n").unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("/etc/nightowl/collector.toml:4: key `tls.certificate`"), "{text}");
    assert!(text.contains("unknown field `certificate`"), "{text}");
    let error = parse("lisen = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(error.to_string().contains("key `lisen`"), "{error}");
}

#[test]
fn maintenance_and_coverage_are_validated() {
    let config = parse(
        "[[maintenance]]\nname = \"patch\"\ntenant = \"acme\"\nstart = \"2026-01-01T00:00:00Z\"\nend = \"2026-01-01T02:00:00Z\"\n\
         [coverage.default]\ntimezone = \"UTC\"\nhours = { mon-fri = \"08:00-18:00\" }\n",
    )
    .unwrap();
    assert_eq!(config.maintenance.windows.len(), 1);
    assert_eq!(config.maintenance.windows[0].name, "patch");
    assert!(config.coverage.default.is_some());
    assert!(parse("").unwrap().maintenance.windows.is_empty());

    let error = parse("[[maintenance]]\nname = \"x\"\nfrom = \"22:00\"\nto = \"02:00\"\n").unwrap_err();
    assert_eq!(error.key, "maintenance[0].timezone", "{error}");
    let error =
        parse("[coverage.tenant.acme]\ntimezone = \"Mars/Olympus\"\nhours = { mon = \"08:00-18:00\" }\n")
            .unwrap_err();
    assert_eq!(error.key, "coverage.tenant.acme.timezone", "{error}");
    let error = parse("[[maintenance]]\nname = \"x\"\nbogus = 1\n").unwrap_err();
    assert!(error.to_string().contains("bogus"), "{error}");
}

#[test]
fn sink_errors_name_the_sink_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook.secret"), "s3cret\n").unwrap();
    let parse = |text: &str| Config::parse(text, "collector.toml", dir.path());
    let good = "[[sink]]\nname = \"psa\"\n[sink.webhook]\nurl = \"https://psa.example.net/hook\"\n\
                secret_file = \"webhook.secret\"\n";
    let config = parse(good).unwrap();
    assert_eq!(config.sinks.len(), 1);
    assert_eq!(config.sinks[0].settings.name, "psa");

    let missing_url = "[[sink]]\nname = \"psa\"\n[sink.webhook]\nsecret_file = \"webhook.secret\"\n";
    let error = parse(missing_url).unwrap_err();
    assert_eq!(error.key, "sink[0].webhook.url", "{error}");
    // The second sink's unknown key names that sink.
    let unknown = format!(
        "{good}[[sink]]\nname = \"other\"\n[sink.webhook]\nurl = \"https://x.example.net/\"\nsecret = \"inline\"\n"
    );
    let error = parse(&unknown).unwrap_err();
    assert_eq!((error.key.as_str(), error.line), ("sink[1].webhook.secret", Some(10)), "{error}");
    assert!(error.message.contains("unknown field `secret`"), "{error}");
    let error = parse(&format!("{good}[[sink]]\nname = \"psa\"\n[sink.webhook]\nurl = \"https://x.example.net/\"\nsecret_file = \"webhook.secret\"\n")).unwrap_err();
    assert_eq!(error.key, "sink[1].name", "{error}");
}

/// The first TOML block of docs/sinks.md, as users copy it.
fn readme_sinks_example() -> String {
    let docs = include_str!("../../../docs/sinks.md");
    let block = docs.split("```toml collector\n").nth(1).expect("a toml block in docs/sinks.md");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn the_readme_sinks_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook.secret"), "0123456789abcdef\n").unwrap();
    std::fs::write(dir.path().join("pagerduty.key"), "R0UT1NGKEY0123456789abcdef012345\n").unwrap();
    let example = readme_sinks_example();
    let config = Config::parse(&example, "collector.toml", dir.path()).unwrap();
    let names: Vec<&str> = config.sinks.iter().map(|sink| sink.settings.name.as_str()).collect();
    assert_eq!(names, ["psa", "pager", "alertmanager"]);
    let psa = &config.sinks[0].settings;
    assert_eq!(psa.filter.tenants.len(), 2);
    assert_eq!(psa.filter.severities.len(), 3);
    assert_eq!(psa.give_up_after, Duration::from_secs(24 * 3600));
    assert_eq!(config.sinks[1].settings.filter.severities.len(), 1);
    // Its secrets are read at startup: without them the example names the key.
    let error = Config::parse(&example, "collector.toml", Path::new("/nonexistent")).unwrap_err();
    assert_eq!(error.key, "sink[0].webhook.secret_file", "{error}");
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        ("listen = \"localhost\"", "listen"),
        ("[limits]\nhandshake_timeout = \"soon\"", "limits.handshake_timeout"),
        ("[limits]\nidle_timeout = \"0s\"", "limits.idle_timeout"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        ("[limits]\nmax_message_bytes = 10", "limits.max_message_bytes"),
    ];
    for (text, key) in cases {
        let error = parse(text).unwrap_err();
        assert_eq!(error.key, key, "{text}: {error}");
    }
    // A type error is located by the parser.
    let error = parse("[limits]\nmax_connections = \"many\"").unwrap_err();
    assert!(error.key.contains("limits.max_connections"), "{error}");
}

// Issue 13, defect 2: the key path comes from the deserialiser, not from reading the text
// back. (The collector's old locator did skip a comment after a header; the agent's did
// not. Inline tables and the line of a bad value were wrong or missing in both.)
#[test]
fn a_comment_after_a_table_header_does_not_move_the_key() {
    let error =
        parse("listen = \"127.0.0.1:1\"\n\n[limits]   # all optional [see docs]\nmax_conections = 5\n")
            .unwrap_err()
            .to_string();
    assert!(
        error.starts_with(
            "/etc/nightowl/collector.toml:4: key `limits.max_conections`: unknown field `max_conections`"
        ),
        "{error}"
    );
    let error = parse("tls = { ca = \"ca.pem\", certfile = \"c.pem\" }\n").unwrap_err().to_string();
    assert!(
        error.starts_with("/etc/nightowl/collector.toml:1: key `tls.certfile`: unknown field"),
        "{error}"
    );
}

#[test]
fn the_second_of_an_array_of_tables_is_named_by_its_index() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook.secret"), "s3cret\n").unwrap();
    let text = "[[sink]]   # the PSA\nname = \"psa\"\n[sink.webhook]\nurl = \"https://psa.example.net/hook\"\n\
                secret_file = \"webhook.secret\"\n\n\
                [[sink]]   # the chat\nname = \"chat\"\nwebhook = { url = \"https://chat.example.net/\", bogus = 1 }\n";
    let error = Config::parse(text, "collector.toml", dir.path()).unwrap_err().to_string();
    assert!(
        error.starts_with("collector.toml:9: key `sink[1].webhook.bogus`: unknown field `bogus`"),
        "{error}"
    );
    let text = "[[maintenance]]\nname = \"a\"\ntenant = \"acme\"\nstart = \"2026-01-01T00:00:00Z\"\n\
                end = \"2026-01-01T02:00:00Z\"\n[[maintenance]]\nname = \"b\"\nbogus = 1\n";
    let error = parse(text).unwrap_err().to_string();
    assert!(error.starts_with("/etc/nightowl/collector.toml:8: key `maintenance[1].bogus`: "), "{error}");
}

#[test]
fn a_bad_sink_value_names_the_sink_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("webhook.secret"), "s3cret\n").unwrap();
    let text = "[[sink]]\nname = \"psa\"\n[sink.webhook]   # the PSA's hook\nsecret_file = \"webhook.secret\"\n\
                url = \"ftp://psa.example.net/hook\"\n";
    let error = Config::parse(text, "collector.toml", dir.path()).unwrap_err().to_string();
    assert!(error.starts_with("collector.toml:5: key `sink[0].webhook.url`: "), "{error}");
    // A type error is located by the parser, in the same terms.
    let text = "[[sink]]\nname = \"psa\"\n[sink.webhook]\nurl = 5\n";
    let error = Config::parse(text, "collector.toml", dir.path()).unwrap_err().to_string();
    assert!(error.starts_with("collector.toml:4: key `sink[0].webhook.url`: "), "{error}");
}

#[test]
fn a_bad_value_found_by_validation_has_its_line() {
    let error =
        parse("listen = \"127.0.0.1:1\"\n[limits]\nmax_message_bytes = 10\n").unwrap_err().to_string();
    assert_eq!(
        error,
        "/etc/nightowl/collector.toml:3: key `limits.max_message_bytes`: 10 is out of range 4096..=67108864"
    );
    let error = parse("[tls\n").unwrap_err().to_string();
    assert!(error.starts_with("/etc/nightowl/collector.toml:1: "), "a syntax error has its line: {error}");
}
