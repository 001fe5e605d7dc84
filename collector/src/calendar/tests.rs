use super::*;

/// A table row: input, and the expected value or a fragment of the expected error.
type Case<Input, Output> = (Input, Result<Output, &'static str>);

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn weekly(days: &[&str], hours: &str, timezone: &str) -> Schedule {
    Schedule::Weekly {
        days: Weekdays::parse_list(days).unwrap(),
        hours: Hours::parse(hours).unwrap(),
        timezone: parse_time_zone(timezone).unwrap(),
    }
}

#[test]
fn time_of_day_parsing() {
    let cases: &[Case<&str, &str>] = &[
        ("08:00", Ok("08:00")),
        ("8:30", Ok("08:30")),
        ("23:59", Ok("23:59")),
        ("24:00", Ok("24:00")),
        ("00:00", Ok("00:00")),
        ("24:01", Err("is not a time of day")),
        ("25:00", Err("is not a time of day")),
        ("12:60", Err("is not a time of day")),
        ("8", Err("is not HH:MM")),
        ("8-18", Err("is not HH:MM")),
        ("08:0", Err("is not HH:MM")),
        ("+8:00", Err("is not HH:MM")),
        ("", Err("is not HH:MM")),
    ];
    for (text, expected) in cases {
        let parsed = TimeOfDay::parse(text).map(|time| time.to_string());
        match (parsed, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn hours_parsing() {
    let cases: &[Case<&str, (&str, bool)>] = &[
        ("08:00-18:00", Ok(("08:00-18:00", false))),
        ("22:00-02:00", Ok(("22:00-02:00", true))),
        ("00:00-24:00", Ok(("00:00-24:00", false))),
        ("18:00-00:00", Ok(("18:00-00:00", true))),
        ("08:00 - 18:00", Ok(("08:00-18:00", false))),
        ("8-18", Err("\"8-18\" is not HH:MM-HH:MM")),
        ("08:00", Err("is not HH:MM-HH:MM")),
        ("08:00-08:00", Err("is empty")),
        ("24:00-08:00", Err("24:00 can only end a range")),
    ];
    for (text, expected) in cases {
        let parsed = Hours::parse(text).map(|hours| (hours.to_string(), hours.crosses_midnight()));
        match (parsed, expected) {
            (Ok((got, crosses)), Ok((want, want_crosses))) => {
                assert_eq!((got.as_str(), crosses), (*want, *want_crosses), "{text}")
            }
            (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn weekday_specs() {
    use Weekday::*;
    let cases: &[Case<&[&str], &[Weekday]>] = &[
        (&["sat", "sun"], Ok(&[Saturday, Sunday])),
        (&["mon-fri"], Ok(&[Monday, Tuesday, Wednesday, Thursday, Friday])),
        (&["Friday-Mon"], Ok(&[Monday, Friday, Saturday, Sunday])),
        (&["wed", "wed-wed"], Ok(&[Wednesday])),
        (&["mon-sun"], Ok(&[Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday])),
        (&[], Err("no days given")),
        (&["sa"], Err("\"sa\" is not a day")),
        (&["mon-"], Err("\"mon-\" is not a day")),
    ];
    let all = [Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday];
    for (specs, expected) in cases {
        match (Weekdays::parse_list(specs), expected) {
            (Ok(days), Ok(want)) => {
                let got: Vec<Weekday> = all.into_iter().filter(|day| days.contains(*day)).collect();
                assert_eq!(got, *want, "{specs:?}");
            }
            (Err(got), Err(want)) => assert!(got.contains(want), "{specs:?}: {got}"),
            (got, want) => panic!("{specs:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn unknown_time_zone_is_named() {
    let error = parse_time_zone("Europe/Berln").unwrap_err();
    assert!(error.starts_with("unknown time zone \"Europe/Berln\""), "{error}");
    assert!(parse_time_zone("America/New_York").is_ok());
    assert!(parse_time_zone("UTC").is_ok());
}

#[test]
fn one_off_schedule() {
    let schedule = Schedule::one_off(ts("2026-11-28T21:00:00Z"), ts("2026-11-29T01:00:00Z")).unwrap();
    // (at, contains, current_end, next_start)
    let cases = [
        ("2026-11-28T20:59:59Z", false, None, Some("2026-11-28T21:00:00Z")),
        ("2026-11-28T21:00:00Z", true, Some("2026-11-29T01:00:00Z"), None),
        ("2026-11-29T00:59:59Z", true, Some("2026-11-29T01:00:00Z"), None),
        ("2026-11-29T01:00:00Z", false, None, None),
    ];
    for (at, contains, end, start) in cases {
        let at = ts(at);
        assert_eq!(schedule.contains(at), contains, "{at}");
        assert_eq!(schedule.current_end(at), end.map(ts), "{at}");
        assert_eq!(schedule.next_start(at), start.map(ts), "{at}");
    }
    assert!(Schedule::one_off(ts("2026-11-29T01:00:00Z"), ts("2026-11-29T01:00:00Z")).is_err());
}

#[test]
fn weekly_window_crossing_midnight_belongs_to_its_start_day() {
    // Saturdays 22:00-02:00 Berlin (CET, UTC+1 in November): Sat 21:00Z - Sun 01:00Z.
    let schedule = weekly(&["sat"], "22:00-02:00", "Europe/Berlin");
    // (at, contains, current_end, next_start)
    let cases = [
        // Friday night is not a Saturday night.
        ("2026-11-27T22:00:00Z", false, None, Some("2026-11-28T21:00:00Z")),
        ("2026-11-28T20:59:59Z", false, None, Some("2026-11-28T21:00:00Z")),
        ("2026-11-28T21:00:00Z", true, Some("2026-11-29T01:00:00Z"), Some("2026-12-05T21:00:00Z")),
        ("2026-11-28T21:30:00Z", true, Some("2026-11-29T01:00:00Z"), Some("2026-12-05T21:00:00Z")),
        // After local midnight: still Saturday's occurrence.
        ("2026-11-29T00:30:00Z", true, Some("2026-11-29T01:00:00Z"), Some("2026-12-05T21:00:00Z")),
        ("2026-11-29T01:00:00Z", false, None, Some("2026-12-05T21:00:00Z")),
        // Sunday 22:00 local is not covered.
        ("2026-11-29T21:30:00Z", false, None, Some("2026-12-05T21:00:00Z")),
    ];
    for (at, contains, end, start) in cases {
        let at = ts(at);
        assert_eq!(schedule.contains(at), contains, "contains {at}");
        assert_eq!(schedule.current_end(at), end.map(ts), "current_end {at}");
        assert_eq!(schedule.next_start(at), start.map(ts), "next_start {at}");
    }
}

#[test]
fn weekly_window_follows_dst_in_europe_berlin() {
    // (hours, night's Saturday 22:00 local as UTC, expected end UTC, real hours)
    let cases = [
        // An ordinary night (CET).
        ("22:00-02:00", "2026-11-28T21:00:00Z", "2026-11-29T01:00:00Z", 4),
        ("22:00-04:00", "2026-11-28T21:00:00Z", "2026-11-29T03:00:00Z", 6),
        // Spring forward, Sunday 2026-03-29 02:00 CET -> 03:00 CEST (01:00Z): 02:00 never
        // shows, so a window "to 02:00" ends at the jump; 04:00 CEST is 02:00Z.
        ("22:00-02:00", "2026-03-28T21:00:00Z", "2026-03-29T01:00:00Z", 4),
        ("22:00-03:00", "2026-03-28T21:00:00Z", "2026-03-29T01:00:00Z", 4),
        ("22:00-04:00", "2026-03-28T21:00:00Z", "2026-03-29T02:00:00Z", 5),
        // Fall back, Sunday 2026-10-25 03:00 CEST -> 02:00 CET (01:00Z): 02:00 happens
        // twice; the window closes at the second one.
        ("22:00-02:00", "2026-10-24T20:00:00Z", "2026-10-25T01:00:00Z", 5),
        ("22:00-04:00", "2026-10-24T20:00:00Z", "2026-10-25T03:00:00Z", 7),
    ];
    for (hours, start, end, real_hours) in cases {
        let schedule = weekly(&["sat"], hours, "Europe/Berlin");
        let (start, end) = (ts(start), ts(end));
        let before = start.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap();
        let last = end.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap();
        assert_eq!(schedule.next_start(before), Some(start), "{hours} from {before}");
        assert!(!schedule.contains(before), "{hours} at {before}");
        assert!(schedule.contains(start), "{hours} at {start}");
        assert!(schedule.contains(last), "{hours} at {last}");
        assert!(!schedule.contains(end), "{hours} at {end}");
        assert_eq!(schedule.current_end(start), Some(end), "{hours} from {start}");
        assert_eq!(end.duration_since(start).as_hours(), real_hours, "{hours} on {start}");
    }
}

#[test]
fn edges_inside_dst_gap_and_fold() {
    // A window starting at 02:30 on the spring-forward night starts at the jump;
    // one starting at 02:30 on the fall-back night starts at the first 02:30.
    let cases = [
        ("sun", "02:30-05:00", "2026-03-28T23:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T03:00:00Z"),
        ("sun", "02:30-05:00", "2026-10-24T23:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T04:00:00Z"),
        // A fold at the end: the second 02:30.
        ("sat", "23:00-02:30", "2026-10-24T20:00:00Z", "2026-10-24T21:00:00Z", "2026-10-25T01:30:00Z"),
    ];
    for (day, hours, from, start, end) in cases {
        let schedule = weekly(&[day], hours, "Europe/Berlin");
        assert_eq!(schedule.next_start(ts(from)), Some(ts(start)), "{day} {hours}");
        assert_eq!(schedule.current_end(ts(start)), Some(ts(end)), "{day} {hours}");
    }
}

#[test]
fn whole_days_touching_are_one_occurrence() {
    // Saturday and Sunday 00:00-24:00 in UTC: one stretch Sat 00:00 - Mon 00:00.
    let schedule = weekly(&["sat-sun"], "00:00-24:00", "UTC");
    let cases = [
        ("2026-11-27T23:00:00Z", false, None, Some("2026-11-28T00:00:00Z")),
        ("2026-11-28T10:00:00Z", true, Some("2026-11-30T00:00:00Z"), Some("2026-12-05T00:00:00Z")),
        ("2026-11-29T10:00:00Z", true, Some("2026-11-30T00:00:00Z"), Some("2026-12-05T00:00:00Z")),
        ("2026-11-30T00:00:00Z", false, None, Some("2026-12-05T00:00:00Z")),
    ];
    for (at, contains, end, start) in cases {
        let at = ts(at);
        assert_eq!(schedule.contains(at), contains, "contains {at}");
        assert_eq!(schedule.current_end(at), end.map(ts), "current_end {at}");
        assert_eq!(schedule.next_start(at), start.map(ts), "next_start {at}");
    }
    // Always on: no next start, and an end that is only a lower bound.
    let always = weekly(&["mon-sun"], "00:00-24:00", "UTC");
    let at = ts("2026-11-28T10:00:00Z");
    assert!(always.contains(at));
    assert_eq!(always.next_start(at), None);
    let end = always.current_end(at).unwrap();
    assert!(end > at && always.contains(end.checked_sub(jiff::SignedDuration::from_secs(1)).unwrap()));
}
