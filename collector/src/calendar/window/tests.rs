use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

fn raw(toml_text: &str) -> RawMaintenance {
    toml::from_str(toml_text).unwrap()
}

fn window(toml_text: &str) -> MaintenanceWindow {
    raw(toml_text).validate("maintenance[0]").unwrap()
}

#[test]
fn glob_matching() {
    let cases = [
        ("disk:*", "disk:/var", true),
        ("disk:*", "disk:", true),
        ("disk:*", "service:disk", false),
        ("*", "", true),
        ("*", "anything", true),
        ("", "", true),
        ("", "x", false),
        ("disk:?", "disk:C", true),
        ("disk:?", "disk:CD", false),
        ("*:/var", "disk:/var", true),
        ("*:/var", "disk:/var/log", false),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("a*b", "abab", true),
        ("**x", "yyx", true),
        ("ping:*.example.com", "ping:db.example.com", true),
        ("ping:*.example.com", "ping:example.com", false),
        ("Disk:*", "disk:/", false),
        ("svc:w?n*", "svc:wüntime", true),
    ];
    for (pattern, text, expected) in cases {
        assert_eq!(Glob::new(pattern).matches(text), expected, "{pattern:?} vs {text:?}");
    }
}

#[test]
fn scope_matching() {
    let server = labels(&[("role", "server"), ("site", "hq")]);
    let workstation = labels(&[("role", "workstation"), ("site", "hq")]);
    let scope =
        |tenant: Option<&str>, agent: Option<&str>, wanted: &[(&str, &str)], check: Option<&str>| Scope {
            tenant: tenant.map(str::to_owned),
            agent: agent.map(str::to_owned),
            labels: labels(wanted),
            check: check.map(Glob::new),
        };
    let everything = scope(None, None, &[], None);
    let acme = scope(Some("acme"), None, &[], None);
    let acme_servers = scope(Some("acme"), None, &[("role", "server")], None);
    let acme_hq_servers = scope(Some("acme"), None, &[("role", "server"), ("site", "hq")], None);
    let acme_disks = scope(Some("acme"), None, &[], Some("disk:*"));
    let one_agent = scope(Some("acme"), Some("srv-01"), &[], None);
    let servers_anywhere = scope(None, None, &[("role", "server")], None);
    // (scope, tenant, agent, check, labels, expected)
    let cases = [
        (&everything, "globex", "pc-7", "cpu", &workstation, true),
        (&acme, "acme", "pc-7", "cpu", &workstation, true),
        (&acme, "globex", "pc-7", "cpu", &workstation, false),
        (&acme_servers, "acme", "srv-01", "cpu", &server, true),
        (&acme_servers, "acme", "pc-7", "cpu", &workstation, false),
        (&acme_servers, "acme", "bare", "cpu", &BTreeMap::new(), false),
        (&acme_hq_servers, "acme", "srv-01", "cpu", &server, true),
        (&acme_hq_servers, "acme", "srv-02", "cpu", &labels(&[("role", "server")]), false),
        (&acme_disks, "acme", "srv-01", "disk:/var", &server, true),
        (&acme_disks, "acme", "srv-01", "service:nginx", &server, false),
        (&one_agent, "acme", "srv-01", "cpu", &server, true),
        (&one_agent, "acme", "srv-02", "cpu", &server, false),
        (&one_agent, "globex", "srv-01", "cpu", &server, false),
        (&servers_anywhere, "globex", "srv-9", "cpu", &server, true),
    ];
    for (index, (scope, tenant, agent, check, agent_labels, expected)) in cases.into_iter().enumerate() {
        assert_eq!(scope.matches(tenant, agent, check, agent_labels), expected, "case {index}");
    }
}

#[test]
fn config_example_validates() {
    let patch_night = window(
        r#"
            name = "acme patch night"
            tenant = "acme"
            labels = { role = "server" }
            days = ["sat"]
            from = "22:00"
            to = "02:00"
            timezone = "Europe/Berlin"
            "#,
    );
    assert_eq!(patch_night.name, "acme patch night");
    assert_eq!(patch_night.scope.tenant.as_deref(), Some("acme"));
    assert_eq!(patch_night.scope.labels, labels(&[("role", "server")]));
    assert!(matches!(patch_night.schedule, Schedule::Weekly { .. }));

    let whole_weekend = window(
        r#"name = "w"
            days = ["sat-sun"]
            timezone = "UTC""#,
    );
    assert!(whole_weekend.active(ts("2026-11-29T23:59:59Z")));
    assert!(!whole_weekend.active(ts("2026-11-30T00:00:00Z")));
}

#[test]
fn one_off_window_in_another_zone() {
    // Civil times in New York (EST, UTC-5): 22:00 - 02:00 local is 03:00Z - 07:00Z.
    let night = window(
        r#"
            name = "nyc migration"
            start = "2026-11-28T22:00"
            end = "2026-11-29T02:00"
            timezone = "America/New_York"
            "#,
    );
    assert_eq!(
        night.schedule,
        Schedule::OneOff { start: ts("2026-11-29T03:00:00Z"), end: ts("2026-11-29T07:00:00Z") }
    );
    let cases = [
        ("2026-11-28T22:30:00Z", false),
        ("2026-11-29T02:59:59Z", false),
        ("2026-11-29T03:00:00Z", true),
        ("2026-11-29T06:59:59Z", true),
        ("2026-11-29T07:00:00Z", false),
    ];
    for (at, active) in cases {
        assert_eq!(night.active(ts(at)), active, "{at}");
    }
    // RFC 3339 instants need no time zone.
    let instant = window(
        r#"
            name = "instant"
            start = "2026-11-28T22:00:00+01:00"
            end = "2026-11-29T01:00:00Z"
            "#,
    );
    assert_eq!(
        instant.schedule,
        Schedule::OneOff { start: ts("2026-11-28T21:00:00Z"), end: ts("2026-11-29T01:00:00Z") }
    );
}

#[test]
fn silences() {
    let silence = MaintenanceWindow::silence(
        "ack srv-01 disk",
        Scope { agent: Some("srv-01".into()), check: Some(Glob::new("disk:*")), ..Scope::default() },
        ts("2026-11-28T21:00:00Z"),
        ts("2026-11-28T23:00:00Z"),
    )
    .unwrap();
    assert!(silence.matches("acme", "srv-01", "disk:/var", &BTreeMap::new()));
    assert!(!silence.matches("acme", "srv-02", "disk:/var", &BTreeMap::new()));
    assert!(silence.active(ts("2026-11-28T22:00:00Z")));
    assert!(!silence.active(ts("2026-11-28T23:00:00Z")));
    assert!(
        MaintenanceWindow::silence(
            "x",
            Scope::default(),
            ts("2026-11-28T23:00:00Z"),
            ts("2026-11-28T21:00:00Z")
        )
        .is_err()
    );

    let weekly = raw(r#"name = "s"
            days = ["sat"]
            timezone = "UTC""#);
    let error = weekly.validate_silence("silence[3]").unwrap_err().to_string();
    assert!(error.starts_with("silence[3]: a silence needs start and end"), "{error}");
}

#[test]
fn covering_picks_the_first_active_matching_window() {
    let maintenance = Maintenance {
        windows: vec![
            window(
                r#"name = "acme servers saturday night"
                    tenant = "acme"
                    labels = { role = "server" }
                    days = ["sat"]
                    from = "22:00"
                    to = "02:00"
                    timezone = "Europe/Berlin""#,
            ),
            window(
                r#"name = "acme disks silenced"
                    tenant = "acme"
                    check = "disk:*"
                    start = "2026-11-28T20:00:00Z"
                    end = "2026-11-29T00:00:00Z""#,
            ),
        ],
    };
    let server = labels(&[("role", "server")]);
    let workstation = labels(&[("role", "workstation")]);
    // (tenant, agent, check, labels, at, expected window name)
    let cases = [
        ("acme", "srv-01", "cpu", &server, "2026-11-28T21:30:00Z", Some("acme servers saturday night")),
        ("acme", "srv-01", "disk:/", &server, "2026-11-28T21:30:00Z", Some("acme servers saturday night")),
        ("acme", "srv-01", "disk:/", &server, "2026-11-28T20:30:00Z", Some("acme disks silenced")),
        ("acme", "pc-7", "disk:/", &workstation, "2026-11-28T21:30:00Z", Some("acme disks silenced")),
        ("acme", "pc-7", "cpu", &workstation, "2026-11-28T21:30:00Z", None),
        ("acme", "srv-01", "cpu", &server, "2026-11-29T01:00:00Z", None),
        ("globex", "srv-01", "disk:/", &server, "2026-11-28T21:30:00Z", None),
    ];
    for (tenant, agent, check, agent_labels, at, expected) in cases {
        let found = maintenance.covering(tenant, agent, check, agent_labels, ts(at));
        assert_eq!(found.map(|window| window.name.as_str()), expected, "{tenant}/{agent}/{check} at {at}");
    }
}

#[test]
fn next_change_is_the_earliest_start_or_end() {
    let maintenance = Maintenance::from_raw(
        vec![
            raw(r#"name = "saturday night"
                    days = ["sat"]
                    from = "22:00"
                    to = "02:00"
                    timezone = "Europe/Berlin""#),
            raw(r#"name = "silence"
                    start = "2026-11-28T20:00:00Z"
                    end = "2026-11-28T23:00:00Z""#),
        ],
        "maintenance",
    )
    .unwrap();
    // The weekly window is Sat 21:00Z - Sun 01:00Z in November.
    let cases = [
        ("2026-11-28T12:00:00Z", Some("2026-11-28T20:00:00Z")), // silence starts
        ("2026-11-28T20:00:00Z", Some("2026-11-28T21:00:00Z")), // weekly starts
        ("2026-11-28T21:00:00Z", Some("2026-11-28T23:00:00Z")), // silence ends
        ("2026-11-28T23:00:00Z", Some("2026-11-29T01:00:00Z")), // weekly ends
        ("2026-11-29T01:00:00Z", Some("2026-12-05T21:00:00Z")), // next saturday
    ];
    for (at, expected) in cases {
        assert_eq!(maintenance.next_change(ts(at)), expected.map(ts), "{at}");
    }
    let only_silence = Maintenance { windows: maintenance.windows[1..].to_vec() };
    assert_eq!(only_silence.next_change(ts("2026-11-28T23:00:00Z")), None);
    assert_eq!(Maintenance::default().next_change(ts("2026-11-28T23:00:00Z")), None);
}

#[test]
fn validation_errors_name_the_key() {
    let cases = [
        (
            r#"name = "x"
                days = ["sat"]
                from = "22:00"
                to = "02:00"
                timezone = "Europe/Berln""#,
            "maintenance[2].timezone: unknown time zone \"Europe/Berln\"",
        ),
        (
            r#"name = "x"
                timezone = "UTC""#,
            "maintenance[2]: set either start/end or days/from/to",
        ),
        (
            r#"name = "x"
                start = "2026-11-28T22:00"
                end = "2026-11-29T02:00"
                days = ["sat"]
                timezone = "UTC""#,
            "maintenance[2]: set either start/end (one-off) or days/from/to (weekly), not both",
        ),
        (
            r#"days = ["sat"]
                timezone = "UTC""#,
            "maintenance[2].name: missing",
        ),
        (
            r#"name = " "
                days = ["sat"]
                timezone = "UTC""#,
            "maintenance[2].name: empty",
        ),
        (
            r#"name = "x"
                start = "2026-11-28T22:00"
                timezone = "UTC""#,
            "maintenance[2].end: missing",
        ),
        (
            r#"name = "x"
                start = "2026-11-28T22:00"
                end = "2026-11-29T02:00""#,
            "maintenance[2].timezone: missing; start \"2026-11-28T22:00\"",
        ),
        (
            r#"name = "x"
                start = "tonight"
                end = "2026-11-29T02:00"
                timezone = "UTC""#,
            "maintenance[2].start: \"tonight\" is not a date and time",
        ),
        (
            r#"name = "x"
                start = "2026-11-29T02:00"
                end = "2026-11-28T22:00"
                timezone = "UTC""#,
            "maintenance[2].end: 2026-11-28T22:00:00Z is not after start",
        ),
        (
            r#"name = "x"
                days = ["sat"]
                from = "22:00""#,
            "maintenance[2].timezone: missing",
        ),
        (
            r#"name = "x"
                days = ["saturday", "sonntag"]
                from = "22:00"
                to = "02:00"
                timezone = "UTC""#,
            "maintenance[2].days: \"sonntag\" is not a day",
        ),
        (
            r#"name = "x"
                days = []
                timezone = "UTC""#,
            "maintenance[2].days: no days given",
        ),
        (
            r#"name = "x"
                from = "22"
                to = "02:00"
                timezone = "UTC""#,
            "maintenance[2].from: \"22\" is not HH:MM",
        ),
        (
            r#"name = "x"
                from = "22:00"
                timezone = "UTC""#,
            "maintenance[2].to: missing",
        ),
        (
            r#"name = "x"
                from = "22:00"
                to = "22:00"
                timezone = "UTC""#,
            "maintenance[2].to: 22:00-22:00 is empty",
        ),
        (
            r#"name = "x"
                tenant = ""
                days = ["sat"]
                timezone = "UTC""#,
            "maintenance[2].tenant: empty",
        ),
        (
            r#"name = "x"
                check = ""
                days = ["sat"]
                timezone = "UTC""#,
            "maintenance[2].check: empty",
        ),
    ];
    for (toml_text, expected) in cases {
        let error = raw(toml_text).validate("maintenance[2]").unwrap_err().to_string();
        assert!(error.starts_with(expected), "got {error:?}, want {expected:?}");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let error = toml::from_str::<RawMaintenance>("name = \"x\"\ntimzone = \"UTC\"").unwrap_err();
    assert!(error.to_string().contains("unknown field `timzone`"), "{error}");
}

#[test]
fn from_raw_names_the_index() {
    let entries = vec![
        raw(r#"name = "ok"
                days = ["sat"]
                timezone = "UTC""#),
        raw(r#"name = "bad"
                days = ["sat"]
                timezone = "Mars/Olympus""#),
    ];
    let error = Maintenance::from_raw(entries, "maintenance").unwrap_err().to_string();
    assert!(error.starts_with("maintenance[1].timezone: unknown time zone \"Mars/Olympus\""), "{error}");
}
