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
mod tests;
