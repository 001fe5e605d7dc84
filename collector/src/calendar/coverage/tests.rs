use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn coverage(toml_text: &str) -> Coverage {
    toml::from_str::<RawCoverage>(toml_text).unwrap().validate("coverage.default").unwrap()
}

/// London, Mon-Fri 08:00-18:00, Saturday mornings, Christmas and a Monday holiday.
fn london() -> Coverage {
    coverage(
        r#"
            timezone = "Europe/London"
            hours = { mon-fri = "08:00-18:00", sat = "09:00-12:00" }
            holidays = ["2026-12-25", "2026-12-28", "2026-08-31"]
            "#,
    )
}

#[test]
fn business_hours() {
    let london = london();
    // November: London is on GMT (UTC+0). 2026-11-27 is a Friday.
    let cases = [
        ("2026-11-27T07:59:59Z", false),
        ("2026-11-27T08:00:00Z", true),
        ("2026-11-27T17:59:59Z", true),
        ("2026-11-27T18:00:00Z", false),
        ("2026-11-28T10:00:00Z", true),  // Saturday morning
        ("2026-11-28T12:00:00Z", false), // Saturday afternoon
        ("2026-11-29T10:00:00Z", false), // Sunday
        ("2026-12-25T10:00:00Z", false), // Christmas, a Friday
        // August: BST (UTC+1). 08:00 local is 07:00Z.
        ("2026-08-27T07:00:00Z", true),
        ("2026-08-27T06:59:59Z", false),
        ("2026-08-31T09:00:00Z", false), // Monday holiday
    ];
    for (at, expected) in cases {
        assert_eq!(london.is_business_hours(ts(at)), expected, "{at}");
    }
}

#[test]
fn next_business_start_skips_closed_days_and_holidays() {
    let london = london();
    let cases = [
        // Tuesday night -> Wednesday 08:00.
        ("2026-11-24T22:00:00Z", "2026-11-25T08:00:00Z"),
        // Early morning -> the same day.
        ("2026-11-25T03:00:00Z", "2026-11-25T08:00:00Z"),
        // Inside hours -> the next stretch.
        ("2026-11-25T09:00:00Z", "2026-11-26T08:00:00Z"),
        // Friday evening -> Saturday 09:00.
        ("2026-11-27T19:00:00Z", "2026-11-28T09:00:00Z"),
        // Saturday afternoon -> Monday 08:00.
        ("2026-11-28T13:00:00Z", "2026-11-30T08:00:00Z"),
        // Thursday 24 Dec evening: Fri 25 holiday, Sat 26 open in the morning.
        ("2026-12-24T19:00:00Z", "2026-12-26T09:00:00Z"),
        // Saturday 26 Dec afternoon: Sunday closed, Monday 28 holiday -> Tuesday.
        ("2026-12-26T13:00:00Z", "2026-12-29T08:00:00Z"),
        // Across the BST change (Sunday 2026-10-25): Friday evening -> Saturday 09:00
        // BST (08:00Z), then Saturday afternoon -> Monday 08:00 GMT.
        ("2026-10-23T18:00:00Z", "2026-10-24T08:00:00Z"),
        ("2026-10-24T12:00:00Z", "2026-10-26T08:00:00Z"),
    ];
    for (at, expected) in cases {
        assert_eq!(london.next_business_start(ts(at)), ts(expected), "{at}");
    }
}

#[test]
fn friday_evening_before_a_monday_holiday_waits_until_tuesday() {
    // Berlin, Mon-Fri only; Monday 2026-12-28 is a holiday. CET = UTC+1.
    let berlin = coverage(
        r#"
            timezone = "Europe/Berlin"
            hours = { mon-fri = "08:00-18:00" }
            holidays = ["2026-12-28"]
            "#,
    );
    let friday_evening = ts("2026-12-25T19:00:00Z");
    assert_eq!(berlin.next_business_start(friday_evening), ts("2026-12-29T07:00:00Z"));
}

#[test]
fn a_calendar_that_is_all_holidays_falls_back_to_a_day() {
    let mut closed = coverage(
        r#"
            timezone = "UTC"
            hours = { mon = "08:00-18:00" }
            "#,
    );
    closed.days = [None; 7];
    let at = ts("2026-11-28T21:30:00Z");
    assert_eq!(closed.next_business_start(at), ts("2026-11-29T21:30:00Z"));
    assert!(!closed.is_business_hours(at));
}

#[test]
fn hours_crossing_midnight_belong_to_their_start_day() {
    // A night desk: Mon-Fri 22:00-06:00 in UTC.
    let nights = coverage(
        r#"
            timezone = "UTC"
            hours = { mon-fri = "22:00-06:00" }
            holidays = ["2026-11-27"]
            "#,
    );
    let cases = [
        ("2026-11-24T23:00:00Z", true), // Tuesday night
        ("2026-11-25T05:59:59Z", true), // Wednesday early: Tuesday's shift
        ("2026-11-25T06:00:00Z", false),
        ("2026-11-23T03:00:00Z", false), // Monday early: Sunday has no shift
        ("2026-11-27T03:00:00Z", true),  // Friday early: Thursday's shift
        ("2026-11-27T23:00:00Z", false), // Friday night: a holiday's shift
        ("2026-11-28T03:00:00Z", false),
    ];
    for (at, expected) in cases {
        assert_eq!(nights.is_business_hours(ts(at)), expected, "{at}");
    }
}

#[test]
fn hold_until_by_severity_inside_and_outside_hours() {
    let london = london();
    let inside = ts("2026-11-27T10:00:00Z");
    let night = ts("2026-11-26T23:00:00Z");
    let morning = ts("2026-11-27T08:00:00Z");
    let cases = [
        (Severity::P1, inside, None),
        (Severity::P2, inside, None),
        (Severity::P3, inside, None),
        (Severity::P4, inside, None),
        (Severity::P1, night, None),
        (Severity::P2, night, None),
        (Severity::P3, night, Some(morning)),
        (Severity::P4, night, Some(morning)),
        // Exactly at the start of business hours: send.
        (Severity::P4, morning, None),
    ];
    for (severity, at, expected) in cases {
        assert_eq!(london.hold_until(severity, at), expected, "{severity:?} at {at}");
    }
}

#[test]
fn coverage_set_per_tenant_default_and_none() {
    let set: RawCoverageSet = toml::from_str(
        r#"
            [default]
            timezone = "Europe/London"
            hours = { mon-fri = "08:00-18:00" }
            holidays = ["2026-12-25", "2026-12-26"]

            [tenant.acme]
            timezone = "America/New_York"
            hours = { mon-fri = "07:00-19:00" }
            "#,
    )
    .unwrap();
    let set = set.validate("coverage").unwrap();
    // Friday 2026-11-27 19:30Z: London closed (GMT), New York open (14:30 EST).
    let at = ts("2026-11-27T19:30:00Z");
    assert_eq!(set.for_tenant("acme").map(|coverage| coverage.is_business_hours(at)), Some(true));
    assert_eq!(set.for_tenant("globex").map(|coverage| coverage.is_business_hours(at)), Some(false));
    assert_eq!(set.hold_until("acme", Severity::P3, at), None);
    assert_eq!(set.hold_until("globex", Severity::P3, at), Some(ts("2026-11-30T08:00:00Z")));

    let round_the_clock = CoverageSet::default();
    assert!(round_the_clock.for_tenant("acme").is_none());
    assert_eq!(round_the_clock.hold_until("acme", Severity::P4, at), None);
}

#[test]
fn validation_errors_name_the_key() {
    let cases = [
        (
            "timezone = \"America/New_York\"\nhours = { mon-fri = \"8-18\" }",
            "coverage.tenant.acme.hours.mon-fri: \"8-18\" is not HH:MM-HH:MM",
        ),
        (
            "timezone = \"America/New_Yrok\"\nhours = { mon-fri = \"08:00-18:00\" }",
            "coverage.tenant.acme.timezone: unknown time zone \"America/New_Yrok\"",
        ),
        ("hours = { mon-fri = \"08:00-18:00\" }", "coverage.tenant.acme.timezone: missing"),
        ("timezone = \"UTC\"", "coverage.tenant.acme.hours: missing"),
        (
            "timezone = \"UTC\"\nhours = { weekdays = \"08:00-18:00\" }",
            "coverage.tenant.acme.hours.weekdays: \"weekdays\" is not a day",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon-fri = \"08:00-18:00\", fri = \"08:00-12:00\" }",
            "coverage.tenant.acme.hours: fri is set by both \"fri\" and \"mon-fri\"",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon = \"08:00-08:00\" }",
            "coverage.tenant.acme.hours.mon: \"08:00-08:00\": 08:00-08:00 is empty",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon = \"08:00-18:00\" }\nholidays = [\"2026-12-25\", \"2026-13-01\"]",
            "coverage.tenant.acme.holidays[1]: \"2026-13-01\" is not a date",
        ),
        (
            "timezone = \"UTC\"\nhours = { mon = \"08:00-18:00\" }\nholidays = [\"2026-12-25T00:00\"]",
            "coverage.tenant.acme.holidays[0]: \"2026-12-25T00:00\" is not a date",
        ),
    ];
    for (toml_text, expected) in cases {
        let raw: RawCoverage = toml::from_str(toml_text).unwrap();
        let error = raw.validate("coverage.tenant.acme").unwrap_err().to_string();
        assert!(error.starts_with(expected), "got {error:?}, want {expected:?}");
    }
    let unknown = toml::from_str::<RawCoverageSet>("[tenants.acme]\ntimezone = \"UTC\"").unwrap_err();
    assert!(unknown.to_string().contains("unknown field `tenants`"), "{unknown}");
    let unknown = toml::from_str::<RawCoverage>("timezone = \"UTC\"\nholiday = []").unwrap_err();
    assert!(unknown.to_string().contains("unknown field `holiday`"), "{unknown}");
}

#[test]
fn holidays_are_sorted_and_deduplicated() {
    let calendar = coverage(
        r#"
            timezone = "UTC"
            hours = { mon = "08:00-18:00" }
            holidays = ["2026-12-26", "2026-12-25", "2026-12-26"]
            "#,
    );
    let expected: Vec<Date> = vec!["2026-12-25".parse().unwrap(), "2026-12-26".parse().unwrap()];
    assert_eq!(calendar.holidays, expected);
}
