//! Fill rate and time to full: [`DiskProbe`](super::DiskProbe) keeps, per mount, the
//! recent (time, `used_bytes`) points of the last `window` (default 10 minutes, at most
//! [`MAX_POINTS`] points; when more arrive, every other point of the older half is
//! dropped, so the history still spans the window but favours recent samples) and adds
//! - `fill_rate_bps`: the least-squares slope of `used_bytes` over the window, in bytes
//!   per second, on the monotonic clock (negative when the disk empties), once the
//!   history holds at least 3 points spanning at least 2 s;
//! - `time_to_full_s`: `free_bytes / fill_rate_bps`, only when the rate is positive.
//!
//! A mount that is not reported OK (unmounted, hung) loses its history. When
//! `used_bytes` drops by more than 1 % of the filesystem's size between two samples
//! (a big file deleted, logs rotated), the history restarts from the new point: the
//! old fill no longer predicts anything, and a fresh fill is forecast after three
//! samples instead of being averaged against the drop for a whole window.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus};
use tokio::time::Instant;

use super::DiskProbe;

/// Most points kept per mount.
pub const MAX_POINTS: usize = 120;

/// A fill rate needs at least this many points …
const MIN_POINTS: usize = 3;
/// … spanning at least this long.
const MIN_SPAN: Duration = Duration::from_secs(2);

/// A drop of `used_bytes` by more than this fraction of the size restarts the history.
const RESET_DROP_FRACTION: f64 = 0.01;

impl DiskProbe {
    /// Records the OK results' usage taken at `at` and adds `fill_rate_bps` and
    /// `time_to_full_s` where the history allows; forgets mounts not reported OK.
    pub(super) fn add_forecasts(&mut self, results: &mut [CheckResult], at: Instant) {
        let window = self.config.window();
        let mut reported: HashSet<&str> = HashSet::with_capacity(results.len());
        for result in results.iter_mut().filter(|result| result.status == ProbeStatus::Ok as i32) {
            let metric = |name: &str| result.metrics.get(name).copied();
            let (Some(used), Some(free), Some(total)) =
                (metric("used_bytes"), metric("free_bytes"), metric("total_bytes"))
            else {
                continue;
            };
            let history = self.histories.entry(result.check_id.clone()).or_default();
            history.record(at, used, total, window);
            if let Some(rate) = history.rate() {
                result.metrics.insert("fill_rate_bps".to_owned(), rate);
                if rate > 0.0 {
                    result.metrics.insert("time_to_full_s".to_owned(), free / rate);
                }
            }
            reported.insert(&result.check_id);
        }
        self.histories.retain(|check_id, _| reported.contains(check_id.as_str()));
    }
}

/// Recent `(time, used bytes)` points of one mount, oldest first.
#[derive(Debug, Default)]
pub(super) struct FillHistory {
    pub(super) points: VecDeque<(Instant, f64)>,
}

impl FillHistory {
    /// Adds a point; drops what is older than `window`, and thins the older half when
    /// over [`MAX_POINTS`]. Restarts on a large drop of `used` (see the module doc).
    pub(super) fn record(&mut self, at: Instant, used: f64, total: f64, window: Duration) {
        if let Some(&(last_at, last_used)) = self.points.back()
            && (last_used - used > total * RESET_DROP_FRACTION || at < last_at)
        {
            self.points.clear();
        }
        self.points.push_back((at, used));
        while self.points.front().is_some_and(|&(first_at, _)| at.duration_since(first_at) > window) {
            self.points.pop_front();
        }
        if self.points.len() > MAX_POINTS {
            let older_half = self.points.len() / 2;
            let mut index = 0;
            // Keeps the oldest point (the window's reach) and every other one after it.
            self.points.retain(|_| {
                let keep = index >= older_half || index % 2 == 0;
                index += 1;
                keep
            });
        }
    }

    /// Bytes per second: the least-squares slope of used bytes over time, once there are
    /// at least [`MIN_POINTS`] points spanning [`MIN_SPAN`].
    pub(super) fn rate(&self) -> Option<f64> {
        let &(first_at, first_used) = self.points.front()?;
        let &(last_at, _) = self.points.back()?;
        if self.points.len() < MIN_POINTS || last_at.duration_since(first_at) < MIN_SPAN {
            return None;
        }
        // Relative to the first point, so the sums stay small and precise.
        let xy: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|&(at, used)| (at.duration_since(first_at).as_secs_f64(), used - first_used))
            .collect();
        let count = xy.len() as f64;
        let mean_x = xy.iter().map(|&(x, _)| x).sum::<f64>() / count;
        let mean_y = xy.iter().map(|&(_, y)| y).sum::<f64>() / count;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for &(x, y) in &xy {
            covariance += (x - mean_x) * (y - mean_y);
            variance += (x - mean_x) * (x - mean_x);
        }
        let slope = covariance / variance;
        (variance > 0.0 && slope.is_finite()).then_some(slope)
    }
}
