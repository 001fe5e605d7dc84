//! Probes: one module per health family.
//!
//! Each probe owns its config section (a serde struct with `deny_unknown_fields`) and
//! exposes one sampling function. A probe that cannot sample yields a [`CheckResult`] with
//! status UNKNOWN and the reason in `message` (and a `warn` log line) — never a panic, never
//! a loop that stops sampling. Thresholds are the collector's business: a successful
//! sample is OK.

use std::collections::HashMap;

use nightowl_proto::{CheckResult, ProbeStatus};

pub mod disk;
pub mod host;

/// The agent's probe set, built from config; holds probe state between samples (e.g.
/// the sysinfo `System` that cpu % is computed from).
pub struct Probes {
    disk: disk::DiskConfig,
    host: host::HostProbe,
}

impl Probes {
    /// Builds the probe set. `disk` should have passed [`disk::DiskConfig::validate`].
    pub fn new(disk: &disk::DiskConfig) -> Self {
        Self { disk: disk.clone(), host: host::HostProbe::new() }
    }

    /// Samples every probe once; results of all families, disk first then host.
    pub async fn sample(&mut self) -> Vec<CheckResult> {
        let mut results = disk::sample(&self.disk).await;
        results.push(self.host.sample());
        results
    }
}

/// A successful sample.
pub(crate) fn ok_result(
    check_id: String,
    kind: &str,
    metrics: HashMap<String, f64>,
    message: String,
) -> CheckResult {
    CheckResult { check_id, kind: kind.to_owned(), status: ProbeStatus::Ok as i32, metrics, message }
}

/// A probe that could not sample: UNKNOWN with the reason, and a log line.
pub(crate) fn unknown_result(check_id: String, kind: &str, reason: String) -> CheckResult {
    tracing::warn!(check = %check_id, kind, reason = %reason, "probe could not sample");
    CheckResult {
        check_id,
        kind: kind.to_owned(),
        status: ProbeStatus::Unknown as i32,
        metrics: HashMap::new(),
        message: reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_sample_disk_first_then_host() {
        let mut probes = Probes::new(&disk::DiskConfig::default());
        let results = probes.sample().await;
        assert!(results.len() >= 2, "{results:?}");
        let last = results.last().unwrap();
        assert_eq!(last.check_id, "host");
        assert!(results[..results.len() - 1].iter().all(|r| r.kind == "disk"));
    }
}
