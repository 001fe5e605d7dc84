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
