use super::*;

#[test]
fn grows_by_factor_up_to_the_cap_with_bounded_jitter() {
    let mut backoff = Backoff::default();
    let mut expected = 1.0f64;
    for _ in 0..20 {
        let base = backoff.peek().as_secs_f64();
        assert!((base - expected.min(60.0)).abs() < 1e-6, "base {base} expected {expected}");
        let delay = backoff.next_delay().as_secs_f64();
        assert!(delay >= base * 0.8 - 1e-9 && delay <= (base * 1.2).min(60.0) + 1e-9, "{delay} vs {base}");
        expected *= 1.6;
    }
    assert_eq!(backoff.peek(), Duration::from_secs(60));
    backoff.reset();
    assert_eq!(backoff.peek(), Duration::from_secs(1));
}
