//! Host probe: cpu %, memory %, swap %, load averages and uptime, from sysinfo.
//!
//! One result, check id `host`, kind `host`. Metrics: `cpu_pct` (all cpus, since the
//! previous sample), `mem_used_pct` (used / total; "used" excludes reclaimable cache),
//! `swap_used_pct` (0 without swap), `load1`, `load5`, `load15`, `uptime_s`.
//!
//! Cost: the sysinfo `System` is created empty and only cpu times and memory are
//! refreshed (on Linux: `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime`).
//! A metric that cannot be read is left out and named in `message`; the result is
//! UNKNOWN only when nothing could be read.

use std::collections::HashMap;

use nightowl_proto::CheckResult;
use sysinfo::{MemoryRefreshKind, System};

use super::{ok_result, unknown_result};

const CHECK_ID: &str = "host";
const KIND: &str = "host";

/// `[host]`: the host probe always runs; only its interval can be set.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<crate::config::HumanDuration>,
}

/// Samples the host; keeps the sysinfo state that cpu % is computed from.
pub struct HostProbe {
    /// `None` when sysinfo could not be initialised; retried on every sample.
    system: Option<System>,
}

impl Default for HostProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HostProbe {
    /// Creates the probe and takes the first cpu reading, so that the first sample's
    /// `cpu_pct` covers the time since `new()`.
    pub fn new() -> Self {
        Self { system: new_system() }
    }

    /// Samples the host once. Never fails: problems become UNKNOWN or a note in `message`.
    pub fn sample(&mut self) -> CheckResult {
        if self.system.is_none() {
            self.system = new_system();
        }
        let Some(system) = self.system.as_mut() else {
            return unknown_result(
                CHECK_ID.to_owned(),
                KIND,
                "sysinfo is not available on this system".to_owned(),
            );
        };

        let mut metrics = HashMap::with_capacity(8);
        let mut missing: Vec<String> = Vec::new();

        // sysinfo itself skips the update when called again within its minimum interval
        // (200 ms) and keeps the previous value.
        system.refresh_cpu_usage();
        if system.cpus().is_empty() {
            missing.push("cpu usage unavailable".to_owned());
        } else {
            metrics.insert("cpu_pct".to_owned(), pct_clamp(f64::from(system.global_cpu_usage())));
        }

        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        match ratio_pct(system.used_memory(), system.total_memory()) {
            Some(pct) => {
                metrics.insert("mem_used_pct".to_owned(), pct);
            }
            None => missing.push("memory size unavailable".to_owned()),
        }
        let swap = ratio_pct(system.used_swap(), system.total_swap()).unwrap_or(0.0);
        metrics.insert("swap_used_pct".to_owned(), swap);

        match System::load_average() {
            Ok(load) => {
                metrics.insert("load1".to_owned(), load.one);
                metrics.insert("load5".to_owned(), load.five);
                metrics.insert("load15".to_owned(), load.fifteen);
            }
            Err(e) => missing.push(format!("load average unavailable: {e}")),
        }
        match System::uptime() {
            Ok(uptime) => {
                metrics.insert("uptime_s".to_owned(), uptime as f64);
            }
            Err(e) => missing.push(format!("uptime unavailable: {e}")),
        }

        let message = missing.join("; ");
        if metrics.len() <= 1 {
            // Only the swap default: nothing was actually read.
            return unknown_result(CHECK_ID.to_owned(), KIND, message);
        }
        if !message.is_empty() {
            tracing::debug!(reason = %message, "host probe: some metrics unavailable");
        }
        ok_result(CHECK_ID.to_owned(), KIND, metrics, message)
    }
}

fn new_system() -> Option<System> {
    match System::new() {
        Ok(mut system) => {
            system.refresh_cpu_usage();
            Some(system)
        }
        Err(e) => {
            tracing::warn!(error = %e, "host probe: cannot initialise sysinfo");
            None
        }
    }
}

/// `part / whole * 100`, `None` when `whole` is 0.
fn ratio_pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| pct_clamp(part as f64 / whole as f64 * 100.0))
}

fn pct_clamp(pct: f64) -> f64 {
    if pct.is_nan() { 0.0 } else { pct.clamp(0.0, 100.0) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightowl_proto::ProbeStatus;

    #[test]
    fn host_sample_has_all_metrics_in_sane_ranges() {
        let mut probe = HostProbe::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        for _ in 0..2 {
            let r = probe.sample();
            assert_eq!(r.check_id, "host");
            assert_eq!(r.kind, "host");
            assert_eq!(r.status, ProbeStatus::Ok as i32, "{r:?}");
            assert!(r.message.is_empty(), "{r:?}");
            for key in ["cpu_pct", "mem_used_pct", "swap_used_pct", "load1", "load5", "load15", "uptime_s"] {
                let v = *r.metrics.get(key).unwrap_or_else(|| panic!("{key} missing: {r:?}"));
                assert!(v.is_finite(), "{key} = {v}");
                if key.ends_with("_pct") {
                    assert!((0.0..=100.0).contains(&v), "{key} = {v}");
                } else {
                    assert!(v >= 0.0, "{key} = {v}");
                }
            }
            assert!(r.metrics["uptime_s"] > 0.0, "{r:?}");
            assert!(r.metrics["mem_used_pct"] > 0.0, "{r:?}");
            assert_eq!(r.metrics.len(), 7, "{r:?}");
        }
    }

    #[test]
    fn ratio_pct_handles_zero_and_clamps() {
        assert_eq!(ratio_pct(1, 0), None);
        assert_eq!(ratio_pct(1, 4), Some(25.0));
        assert_eq!(ratio_pct(5, 4), Some(100.0));
        assert_eq!(pct_clamp(f64::NAN), 0.0);
    }
}
