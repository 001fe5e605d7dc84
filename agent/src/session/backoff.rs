//! Reconnect backoff: 1 s, ×1.6 per failure, capped at 60 s, each delay jittered by ±20 %
//! so that thousands of agents cut off together (collector restart) do not come back in
//! lockstep.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60), 1.6)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, factor: f64) -> Self {
        Self { initial, max, factor, next: initial }
    }

    /// The base (unjittered) delay the next failure will wait.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay to wait after a failure; grows the next one.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.mul_f64(self.factor).min(self.max);
        base.mul_f64(fastrand::f64() * 0.4 + 0.8).min(self.max)
    }

    /// After a session was established: start from the initial delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_factor_up_to_the_cap_with_bounded_jitter() {
        let mut backoff = Backoff::default();
        let mut expected = 1.0f64;
        for _ in 0..20 {
            let base = backoff.peek().as_secs_f64();
            assert!((base - expected.min(60.0)).abs() < 1e-6, "base {base} expected {expected}");
            let delay = backoff.next_delay().as_secs_f64();
            assert!(
                delay >= base * 0.8 - 1e-9 && delay <= (base * 1.2).min(60.0) + 1e-9,
                "{delay} vs {base}"
            );
            expected *= 1.6;
        }
        assert_eq!(backoff.peek(), Duration::from_secs(60));
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_secs(1));
    }
}
