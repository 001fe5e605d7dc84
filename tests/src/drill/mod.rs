//! # Drills (issue 6): bounded runs against the real binaries that print figures
//!
//! Run by `deploy/drills/*.sh` through the `nightowl-drill` binary; the smoke test
//! (`tests/tests/drill_smoke.rs`) runs the quick abuse pieces against a real collector.
//!
//! - `abuse`: a real collector, well-behaved raw sessions measuring report → ack latency,
//!   and one abuse piece at a time (oversize, malformed protobuf, odd values, half-open
//!   TLS, HTTP/2 rapid reset); the collector must stay up with bounded memory.
//! - `partition`: an agent in a network namespace loses its link for a while; its spool
//!   stays within its cap and everything still spooled is delivered afterwards.
//!
//! Every drill ends with ONE line `drill <name>: pass|fail|skip <figures>` (see
//! [`Outcome`]); `deploy/drills/run.sh` collects those lines.

pub mod abuse;
pub mod client;
pub mod partition;

use std::fmt;
use std::time::Duration;

/// A drill's verdict and its figures, printed as its final line.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub drill: &'static str,
    pub verdict: Verdict,
    /// `key=value` figures, space separated; failures first, with the reason.
    pub figures: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Could not run here (e.g. not root for network namespaces): never a pass.
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        };
        write!(formatter, "drill {}: {verdict} {}", self.drill, self.figures.join(" "))
    }
}

/// Resident set size of process `pid` in bytes (`VmRSS` in /proc), None once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `q` quantile (0..=1, nearest rank) of `samples`; None when empty.
pub fn quantile(samples: &[Duration], q: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds with one decimal, for figures (`-` when there is no sample).
pub fn ms(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), |duration| format!("{:.1}", duration.as_secs_f64() * 1000.0))
}

/// The open-files soft limit of this process (`ulimit -n`), from /proc.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The last `ingest counters` line of a collector log (logged at shutdown) as
/// `name=value` pairs; empty when there is none.
pub fn ingest_counters(log: &str) -> std::collections::BTreeMap<String, u64> {
    let Some(line) = log.lines().rev().find(|line| line.contains("ingest counters")) else {
        return Default::default();
    };
    line.split_whitespace()
        .filter_map(|word| {
            let (key, value) = word.split_once('=')?;
            Some((key.to_owned(), value.trim_matches('"').parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests;
