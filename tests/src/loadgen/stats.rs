//! Latency figures and the run summary (text or one JSON object).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// p50 / p99 / max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// From latencies in microseconds (sorted here; nearest-rank percentiles).
    pub fn from_micros(mut samples: Vec<u64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let rank = |quantile: f64| {
            let index = ((quantile * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[index] as f64 / 1000.0
        };
        Self {
            count: samples.len() as u64,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: samples[samples.len() - 1] as f64 / 1000.0,
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
            self.p50_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub sessions: u32,
    pub results_per_report: u32,
    pub interval_ms: u64,
    pub duration_s: f64,
    /// Time to issue every session's certificate (in memory, one loaded CA).
    pub cert_issue_ms: u64,
    /// Sessions that completed Hello → Ack at least once.
    pub sessions_up: u32,
    /// Most sessions up at the same time.
    pub sessions_up_peak: u32,
    /// From the first session start until all were up (None: never all up).
    pub all_up_after_ms: Option<u64>,
    pub reports_generated: u64,
    pub reports_acked: u64,
    pub results_acked: u64,
    /// Over the steady window (all sessions up until the end of generation), else the
    /// whole run.
    pub reports_per_s: f64,
    pub results_per_s: f64,
    /// Report sent → Ack covering it received.
    pub ack_latency: Percentiles,
    /// Report's `sampled_at_ms` → its alert event received on the feed (so durable).
    pub sample_to_alert: Percentiles,
    /// Transitions the crossing checks should have caused (reports acked × crossing).
    pub alerts_expected: u64,
    /// Feed events of our checks matched to a sample.
    pub alerts_seen: u64,
    /// Feed events of our checks we could not match (duplicates, flapping, strays).
    pub alerts_unmatched: u64,
    /// Failures by kind: `refused` (TCP), `connect` (TLS handshake or HTTP/2 setup),
    /// `timeout`, `stream` (session ended with an error), `feed`.
    pub errors: BTreeMap<String, u64>,
    /// Sessions re-established after a loss.
    pub reconnects: u64,
    /// Each time sessions were lost after all had been up: time until all were back.
    pub recoveries_ms: Vec<u64>,
    /// The load generator's own cost (it shares the machine with the collector).
    pub loadgen_cpu_s: f64,
    pub loadgen_peak_rss_mib: f64,
}

impl Summary {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "sessions        {} up of {} (peak {} at once; all up after {})",
            self.sessions_up,
            self.sessions,
            self.sessions_up_peak,
            self.all_up_after_ms.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms")),
        )?;
        writeln!(
            out,
            "workload        {} results/report every {} ms for {:.0} s; certificates issued in {} ms",
            self.results_per_report, self.interval_ms, self.duration_s, self.cert_issue_ms
        )?;
        writeln!(
            out,
            "throughput      {:.0} reports/s, {:.0} results/s ({} reports, {} results acked; {} generated)",
            self.reports_per_s,
            self.results_per_s,
            self.reports_acked,
            self.results_acked,
            self.reports_generated
        )?;
        writeln!(out, "ack latency     {}", self.ack_latency)?;
        writeln!(out, "sample->alert   {}", self.sample_to_alert)?;
        writeln!(
            out,
            "alerts          {} seen of {} expected, {} unmatched",
            self.alerts_seen, self.alerts_expected, self.alerts_unmatched
        )?;
        let errors: Vec<String> = self.errors.iter().map(|(kind, count)| format!("{kind}={count}")).collect();
        writeln!(
            out,
            "errors          {} [{}]; reconnects {}; recoveries {:?} ms",
            self.error_total(),
            errors.join(" "),
            self.reconnects,
            self.recoveries_ms
        )?;
        write!(
            out,
            "loadgen itself  {:.1} s CPU, peak RSS {:.0} MiB",
            self.loadgen_cpu_s, self.loadgen_peak_rss_mib
        )
    }
}

/// CPU time (user + system, seconds) and peak RSS (MiB) of this process, from /proc.
pub fn own_usage() -> (f64, f64) {
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            // USER_HZ is 100 on every Linux we run on.
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        })
        .unwrap_or(0.0);
    (cpu, rss)
}

#[cfg(test)]
mod tests;
