use super::*;

#[test]
fn percentiles_use_nearest_rank() {
    let samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
    let figures = Percentiles::from_micros(samples);
    assert_eq!(figures.count, 100);
    assert_eq!(figures.p50_ms, 50.0);
    assert_eq!(figures.p99_ms, 99.0);
    assert_eq!(figures.max_ms, 100.0);
    assert_eq!(Percentiles::from_micros(Vec::new()), Percentiles::default());
    assert_eq!(Percentiles::from_micros(vec![1500]).p99_ms, 1.5);
}

#[test]
fn own_usage_reads_proc() {
    let (_cpu, rss) = own_usage();
    assert!(rss > 0.0);
}
