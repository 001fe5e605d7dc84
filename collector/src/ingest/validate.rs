//! Bounds on what an agent's report may carry, checked before evaluation. Pure
//! functions: public so the benchmarks (`collector/benches/hot_paths.rs`) measure the
//! same code the session runs.

use nightowl_proto::CheckResult;

/// Bounds on what one result may carry (larger ones are dropped and counted).
pub const MAX_ID_BYTES: usize = 256;
const MAX_KIND_BYTES: usize = 32;
const MAX_METRICS: usize = 256;
const MAX_MESSAGE_BYTES: usize = 4096;
/// Sample times further in the future than this are not believed.
const MAX_CLOCK_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_secs(300);
/// Nor older than this (a spool replay after a week-long outage is still plausible).
const MAX_SAMPLE_AGE: jiff::SignedDuration = jiff::SignedDuration::from_secs(30 * 24 * 3600);

/// True when the result's ids, metrics and message are within bounds.
pub fn result_is_valid(result: &CheckResult) -> bool {
    let bounded = |text: &str, max: usize| !text.is_empty() && text.len() <= max && !text.contains('\0');
    bounded(&result.check_id, MAX_ID_BYTES)
        && bounded(&result.kind, MAX_KIND_BYTES)
        && result.metrics.len() <= MAX_METRICS
        && result.metrics.keys().all(|name| bounded(name, MAX_ID_BYTES))
        && result.message.len() <= MAX_MESSAGE_BYTES
}

/// The agent's sample time if plausible, else the receive time.
pub fn sample_time(sampled_at_ms: i64, now: jiff::Timestamp) -> jiff::Timestamp {
    match jiff::Timestamp::from_millisecond(sampled_at_ms) {
        Ok(at) if at <= now + MAX_CLOCK_AHEAD && at >= now - MAX_SAMPLE_AGE => at.min(now),
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_sample_times_fall_back_to_now() {
        let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        let ms = now.as_millisecond();
        assert_eq!(sample_time(ms - 1000, now).as_millisecond(), ms - 1000);
        assert_eq!(sample_time(ms + 60_000, now), now, "slightly ahead is clamped to now");
        assert_eq!(sample_time(ms + 3_600_000, now), now, "an hour ahead is not believed");
        assert_eq!(sample_time(i64::MAX, now), now);
        assert_eq!(sample_time(0, now), now);
    }

    #[test]
    fn results_out_of_bounds_are_invalid() {
        let good = CheckResult { check_id: "disk:/".into(), kind: "disk".into(), ..Default::default() };
        assert!(result_is_valid(&good));
        assert!(!result_is_valid(&CheckResult { check_id: String::new(), ..good.clone() }));
        assert!(!result_is_valid(&CheckResult { check_id: "x".repeat(300), ..good.clone() }));
        assert!(!result_is_valid(&CheckResult { kind: "d\0".into(), ..good.clone() }));
        let mut many = good.clone();
        many.metrics = (0..300).map(|i| (format!("m{i}"), 1.0)).collect();
        assert!(!result_is_valid(&many));
    }
}
