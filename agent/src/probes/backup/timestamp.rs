//! The timestamps backup tools print, as unix seconds — no calendar library needed.
//!
//! restic prints RFC 3339 with nanoseconds and the local offset
//! (`2024-05-01T12:34:56.123456789+02:00`, or `Z`); borg 1.x prints ISO 8601 in local
//! time *without* an offset (`2024-05-01T12:34:56.000000`), which is why the borg source
//! runs borg with `TZ=UTC0` and a missing offset here means UTC.

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` into unix seconds; no
/// offset means UTC. None when the text is not such a timestamp.
pub(super) fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let bytes = text.as_bytes();
    if bytes.len() < 19
        || !bytes[..19].is_ascii()
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
    {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = digits(&text[0..4])?;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    let hour = digits(&text[11..13])?;
    let minute = digits(&text[14..16])?;
    let second = digits(&text[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // 60: a leap second, as RFC 3339 allows; counted as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let length = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if length == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..length]).parse::<f64>().ok()?;
        rest = &after_dot[length..];
    }
    let offset_seconds = match rest {
        "" | "Z" | "z" => 0,
        _ if !rest.is_ascii() => return None,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (hours, minutes) = match rest.len() {
                6 if rest.as_bytes()[3] == b':' => (digits(&rest[1..3])?, digits(&rest[4..6])?),
                5 => (digits(&rest[1..3])?, digits(&rest[3..5])?),
                3 => (digits(&rest[1..3])?, 0),
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds as f64 + fraction)
}

/// A run of ASCII digits as a number (no sign, no spaces).
fn digits(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        // Expected values from `date -u -d … +%s`.
        let cases: &[(&str, Option<f64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0.0)),
            ("2000-03-01T00:00:00Z", Some(951_868_800.0)),
            ("2024-02-29T12:00:00+02:00", Some(1_709_200_800.0)),
            ("2024-02-29T12:00:00+0200", Some(1_709_200_800.0)),
            ("2024-02-29T12:00:00-05", Some(1_709_226_000.0)),
            ("2026-11-24T13:50:22.066287992Z", Some(1_795_528_222.066_288)),
            ("2026-11-24T13:50:34.000000", Some(1_795_528_234.0)),
            ("2026-11-24 13:50:34", Some(1_795_528_234.0)),
            ("1969-12-31T23:59:59Z", Some(-1.0)),
            ("2023-02-29T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-01-01T24:00:00Z", None),
            ("2024-01-01T00:00:00.Z", None),
            ("2024-01-01T00:00:00+2:00", None),
            ("2024-01-01", None),
            ("not a time at all!!", None),
            ("2024-01-01T00:00:00Zjunk", None),
        ];
        for (text, expected) in cases {
            let parsed = parse(text);
            match (parsed, expected) {
                (Some(parsed), Some(expected)) => {
                    assert!((parsed - expected).abs() < 1e-3, "{text}: {parsed} != {expected}")
                }
                (None, None) => {}
                _ => panic!("{text}: {parsed:?} != {expected:?}"),
            }
        }
    }

    /// The inverse of `days_from_civil`, as the model.
    fn civil_from_days(days: i64) -> (i64, i64, i64) {
        let days = days + 719_468;
        let era = days.div_euclid(146_097);
        let day_of_era = days - era * 146_097;
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
        (year_of_era + era * 400 + i64::from(month <= 2), month, day)
    }

    proptest! {
        #[test]
        fn formatted_unix_times_parse_back(seconds in 0i64..253_402_300_799, offset_minutes in -1439i64..1440) {
            let local = seconds + offset_minutes * 60;
            let (year, month, day) = civil_from_days(local.div_euclid(86_400));
            prop_assume!((0..=9999).contains(&year));
            let in_day = local.rem_euclid(86_400);
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.5{sign}{:02}:{:02}",
                in_day / 3600, in_day / 60 % 60, in_day % 60,
                offset_minutes.abs() / 60, offset_minutes.abs() % 60,
            );
            prop_assert_eq!(parse(&text), Some(seconds as f64 + 0.5), "{}", text);
        }

        #[test]
        fn random_text_never_panics(text in ".{0,40}") {
            let _ = parse(&text);
        }
    }
}
