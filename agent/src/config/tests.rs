use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "/etc/nightowl/agent.toml", Path::new("/etc/nightowl"))
}

#[test]
fn full_config() {
    let config = parse(
        "[collector]\nurl = \"https://noc.example.net:7443\"\nca = \"ca.pem\"\ncert = \"/pki/a.pem\"\nkey = \"a.key\"\n\
         [agent]\nstate_dir = \"state\"\ninterval = \"2s\"\n[spool]\nmax_reports = 10\n[disk]\ninclude = [\"/\"]\n",
    )
    .unwrap();
    let collector = config.collector.unwrap();
    assert_eq!(collector.server_name, "noc.example.net");
    assert_eq!(collector.ca, Path::new("/etc/nightowl/ca.pem"));
    assert_eq!(collector.cert, Path::new("/pki/a.pem"));
    assert_eq!(config.state_dir, Path::new("/etc/nightowl/state"));
    assert_eq!(config.interval, Duration::from_secs(2));
    assert_eq!(config.spool.max_reports, 10);
    let ProbeSpec::Disk(disk) = &config.units[0].spec else { panic!("disk first") };
    assert_eq!(disk.include, vec![PathBuf::from("/")]);
    assert_eq!(config.units[1].key, "host");
}

#[test]
fn server_name_from_ip_and_ipv6_urls() {
    let base = "ca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";
    let config = parse(&format!("[collector]\nurl = \"https://127.0.0.1:7443\"\n{base}")).unwrap();
    assert_eq!(config.collector.unwrap().server_name, "127.0.0.1");
    let config = parse(&format!("[collector]\nurl = \"https://[::1]:7443/\"\n{base}")).unwrap();
    let collector = config.collector.unwrap();
    assert_eq!(collector.server_name, "::1");
    assert_eq!(collector.url.port_u16(), Some(7443));
}

#[test]
fn errors_name_the_key_and_its_line() {
    let cases = [
        ("[agent]\nintervall = \"5s\"", "agent.intervall", Some(2)),
        ("[agent]\ninterval = \"often\"", "agent.interval", Some(2)),
        ("[agent]\ninterval = \"1ms\"", "agent.interval", Some(2)),
        ("[agent]\ninterval = 5", "agent.interval", Some(2)),
        (
            "[collector]\nurl = \"http://x:1\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"",
            "collector.url",
            Some(2),
        ),
        (
            "[collector]\nurl = \"https://x:1/grpc\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"",
            "collector.url",
            Some(2),
        ),
        ("[collector]\nurl = \"https://\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"", "collector.url", Some(2)),
        ("[collector]\nurl = \"x y\"\nca = \"c\"\ncert = \"c\"\nkey = \"k\"", "collector.url", Some(2)),
        // Missing: the line of the table it is missing from.
        ("[collector]\nurl = \"https://x:1\"\ncert = \"c\"\nkey = \"k\"", "collector.ca", Some(1)),
        ("[spool]\nmax_reports = 0", "spool.max_reports", Some(2)),
        ("[disk]\ninclude = [\"relative\"]", "disk", Some(1)),
        ("bogus = 1", "bogus", Some(1)),
        ("[[service]]\nname = \"a\"\n[[service]]\nname = \"b\"\nbogus = 1", "service[1].bogus", Some(5)),
        (
            "[[command]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n[[command]]\nname = \"x\"\ncommand = [\"/bin/true\"]",
            "command[1]",
            Some(4),
        ),
        ("[[command]]\nname = \"has space\"", "command[0]", Some(1)),
        (
            "[[backup]]\nname = \"b\"\ncommand = [\"/bin/true\"]\ninterval = \"1ms\"",
            "backup[0].interval",
            Some(4),
        ),
        ("[[latency]]\nname = \"gw\"\ninterval = \"often\"", "latency[0].interval", Some(3)),
    ];
    for (text, key, line) in cases {
        let error = parse(text).unwrap_err();
        assert_eq!((error.key.as_str(), error.line), (key, line), "{text}: {error}");
        assert!(error.to_string().starts_with("/etc/nightowl/agent.toml:"), "{error}");
    }
}

// Issue 13, defect 2: the key path comes from the deserialiser. The old locator read the
// text back and lost the table at a header with a comment after it (the README's own
// style), naming the key under the table before.
#[test]
fn a_comment_after_a_table_header_does_not_move_the_key() {
    let error = parse(
        "[agent]\ninterval = \"10s\"\n\n[spool]   # bound on unacked reports (oldest dropped first)\nmax_reportz = 5\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("/etc/nightowl/agent.toml:5: key `spool.max_reportz`: unknown field `max_reportz`"),
        "{error}"
    );
}

#[test]
fn the_second_of_an_array_of_tables_is_named_by_its_index() {
    let error = parse(
        "[[service]]   # the web server\nname = \"web\"\nprocess = \"nginx\"\n\n\
         [[service]]   # the database\nname = \"db\"\nprocess = \"postgres\"\nbogus = 1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("/etc/nightowl/agent.toml:8: key `service[1].bogus`: unknown field"),
        "{error}"
    );
    // Inline tables and dotted keys are tables too.
    let error = parse("agent = { interval = \"10s\", intervall = \"5s\" }\n").unwrap_err().to_string();
    assert!(error.starts_with("/etc/nightowl/agent.toml:1: key `agent.intervall`: "), "{error}");
    let error =
        parse("[agent]\ninterval = \"10s\"\n[host]\nagent.interval = \"1s\"\n").unwrap_err().to_string();
    assert!(error.starts_with("/etc/nightowl/agent.toml:4: key `host.agent`: "), "{error}");
}

#[test]
fn a_bad_value_found_by_validation_has_its_line() {
    let error = parse("[agent]\ninterval = \"10s\"\n\n[spool]\nmax_bytes = 1024\n").unwrap_err().to_string();
    assert_eq!(error, "/etc/nightowl/agent.toml:5: key `spool.max_bytes`: 1024 is too small: at least 65536");
    let error = parse("[[service]]\nname = \"a\"\nprocess = \"a\"\n[[service]]\nname = \"b\"\nprocess = \"b\"\ninterval = \"1ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("/etc/nightowl/agent.toml:7: key `service[1].interval`: "), "{error}");
    let error = parse("[[service]\n").unwrap_err().to_string();
    assert!(error.starts_with("/etc/nightowl/agent.toml:1: "), "a syntax error has its line: {error}");
}
