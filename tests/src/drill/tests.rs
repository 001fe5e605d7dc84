use super::*;

#[test]
fn quantiles_use_nearest_rank() {
    let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
    assert_eq!(quantile(&samples, 0.99), Some(Duration::from_millis(99)));
    assert_eq!(quantile(&samples, 0.5), Some(Duration::from_millis(50)));
    assert_eq!(quantile(&[], 0.99), None);
}

#[test]
fn counters_are_read_from_the_last_line() {
    let log =
        "x ingest counters reports_rejected=1\ny INFO ingest counters reports_rejected=3 results_invalid=7\n";
    let counters = ingest_counters(log);
    assert_eq!(counters.get("reports_rejected"), Some(&3));
    assert_eq!(counters.get("results_invalid"), Some(&7));
}
