//! What the simulated agents send: deterministic in (session, seq), so that a drill can
//! tell from the ledger alone which alert transitions the collector must have emitted.
//!
//! Session `i` has `R` checks `disk:/c<j>` (kind `disk`, metric `used_pct`). The first
//! [`crossing_checks`] of them are *crossing*: their value is 97 in odd reports and 50
//! in even ones, so the default rule `disk_used_pct` (crit 95, clear 85, no `for`) fires
//! at every odd seq and resolves at every even seq. Every other check stays at 50 and
//! never causes an event. Report `seq` thus causes exactly one transition per crossing
//! check: `firing` when `seq` is odd, `resolved` when it is even.
//!
//! (Checks that change level at every report trip flap detection under the default
//! `[flapping]` settings, 6 changes in 10 min; the benchmark and drill scripts run the
//! collector with flap detection raised out of the way.)

use nightowl_proto::{CheckResult, ProbeStatus, Report};

/// The rule that the crossing checks fire and resolve.
pub const RULE: &str = "disk_used_pct";
/// Value of a crossing check in an odd report (above crit 95).
pub const HIGH: f64 = 97.0;
/// Value of every check otherwise (below clear 85).
pub const LOW: f64 = 50.0;

/// The agent id of session `index`.
pub fn agent_id(prefix: &str, index: u32) -> String {
    format!("{prefix}{index:05}")
}

/// The check id of check `index`.
pub fn check_id(index: u32) -> String {
    format!("disk:/c{index}")
}

/// The index of a check id made by [`check_id`].
pub fn check_index(check: &str) -> Option<u32> {
    check.strip_prefix("disk:/c")?.parse().ok()
}

/// How many of session `session`'s `results` checks cross thresholds, for a fraction
/// `crossing` of all results: the fractional parts are spread over sessions so that N
/// sessions together have `floor(crossing × results × N)` crossing checks.
pub fn crossing_checks(session: u32, results: u32, crossing: f64) -> u32 {
    let per_session = crossing.clamp(0.0, 1.0) * f64::from(results);
    let before = (per_session * f64::from(session)).floor();
    let upto = (per_session * f64::from(session + 1)).floor();
    ((upto - before) as u32).min(results)
}

/// Whether report `seq` takes crossing checks above the threshold (`firing`).
pub fn fires(seq: u64) -> bool {
    seq % 2 == 1
}

/// The report `seq` of a session with `results` checks of which `crossing` cross.
pub fn report(seq: u64, sampled_at_ms: i64, results: u32, crossing: u32, interval_ms: u32) -> Report {
    let high = fires(seq);
    Report {
        seq,
        sampled_at_ms,
        results: (0..results)
            .map(|index| {
                let value = if index < crossing && high { HIGH } else { LOW };
                CheckResult {
                    check_id: check_id(index),
                    kind: "disk".to_owned(),
                    status: ProbeStatus::Ok as i32,
                    metrics: [("used_pct".to_owned(), value)].into_iter().collect(),
                    message: String::new(),
                    interval_ms,
                }
            })
            .collect(),
        retired_checks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_checks_add_up_to_the_fraction() {
        for (sessions, results, crossing) in
            [(100u32, 10u32, 0.01), (1000, 100, 0.01), (7, 3, 0.5), (10, 10, 1.0)]
        {
            let total: u32 = (0..sessions).map(|session| crossing_checks(session, results, crossing)).sum();
            let expected = (crossing * f64::from(results) * f64::from(sessions)).floor() as u32;
            assert_eq!(total, expected, "{sessions} x {results} at {crossing}");
            assert!((0..sessions).all(|session| crossing_checks(session, results, crossing) <= results));
        }
        assert_eq!(crossing_checks(3, 10, 0.0), 0);
    }

    #[test]
    fn crossing_checks_alternate_and_others_stay_low() {
        let odd = report(1, 1000, 4, 2, 1000);
        let even = report(2, 2000, 4, 2, 1000);
        let values = |report: &Report| -> Vec<f64> {
            report.results.iter().map(|result| result.metrics["used_pct"]).collect()
        };
        assert_eq!(values(&odd), [HIGH, HIGH, LOW, LOW]);
        assert_eq!(values(&even), [LOW, LOW, LOW, LOW]);
        assert!(fires(1) && !fires(2));
        assert_eq!(check_index(&check_id(17)), Some(17));
        assert_eq!(check_index("disk:/var"), None);
        assert_eq!(agent_id("lg-", 7), "lg-00007");
    }
}
