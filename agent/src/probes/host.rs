//! Host probe: cpu %, memory %, swap %, load averages and uptime, from sysinfo.
//!
//! One result, check id `host`, kind `host`. Metrics: `cpu_pct` (all cpus, since the
//! previous sample), `mem_used_pct` (used / total; "used" excludes reclaimable cache),
//! `swap_used_pct` (0 without swap), `load1`, `load5`, `load15`, `uptime_s`,
//! `boot_time_s` (Unix time of the boot) and `rebooted`.
//!
//! Reboot detection: `rebooted` is 1 on the first sample after the machine booted again
//! since the agent's previous run, else 0. The boot's identity — the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`) on Linux, the boot time elsewhere — is kept in
//! `<state_dir>/probes/host-boot` and compared when the probe starts; the file is
//! rewritten once that first sample is taken. No file (first run ever, state wiped)
//! means "don't know": 0. A boot time is compared with a few seconds of tolerance, as
//! some systems compute it from the uptime and it may wobble.
//!
//! Cost: the sysinfo `System` is created empty and only cpu times and memory are
//! refreshed (on Linux: `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime`).
//! A metric that cannot be read is left out and named in `message`; the result is
//! UNKNOWN only when nothing could be read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nightowl_proto::CheckResult;
use sysinfo::{MemoryRefreshKind, System};

use super::{Probe, ProbeContext, ok_result, unknown_result};

const CHECK_ID: &str = "host";
const KIND: &str = "host";

/// The state file under `ProbeContext::probe_state_dir()`.
const BOOT_STATE_FILE: &str = "host-boot";

/// Boot times (where no boot id exists) closer than this are the same boot.
const BOOT_TIME_TOLERANCE_S: u64 = 5;

/// `[host]`: the host probe always runs; only its interval can be set.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<crate::duration::HumanDuration>,
}

/// Samples the host; keeps the sysinfo state that cpu % is computed from.
pub struct HostProbe {
    /// `None` when sysinfo could not be initialised; retried on every sample.
    system: Option<System>,
    reboot: RebootDetector,
}

impl HostProbe {
    /// Creates the probe, takes the first cpu reading (so that the first sample's
    /// `cpu_pct` covers the time since `new()`) and compares this boot with the one
    /// recorded by the previous run.
    pub fn new(_config: &HostConfig, context: &ProbeContext) -> Self {
        Self {
            system: new_system(),
            reboot: RebootDetector::new(context.probe_state_dir().join(BOOT_STATE_FILE), current_boot()),
        }
    }

    /// Samples the host once. Never fails: problems become UNKNOWN or a note in `message`.
    /// Reads `/proc` through sysinfo, which is quick enough for the runtime's thread.
    pub fn sample_now(&mut self) -> CheckResult {
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
        match System::boot_time() {
            Ok(boot_time) => {
                metrics.insert("boot_time_s".to_owned(), boot_time as f64);
            }
            Err(e) => missing.push(format!("boot time unavailable: {e}")),
        }
        match self.reboot.take() {
            Some(rebooted) => {
                metrics.insert("rebooted".to_owned(), if rebooted { 1.0 } else { 0.0 });
            }
            None => missing.push("reboot detection unavailable: cannot identify this boot".to_owned()),
        }

        let message = missing.join("; ");
        if metrics.keys().all(|name| name == "swap_used_pct" || name == "rebooted") {
            // Only the swap default and our own state: nothing was actually read.
            return unknown_result(CHECK_ID.to_owned(), KIND, message);
        }
        if !message.is_empty() {
            tracing::debug!(reason = %message, "host probe: some metrics unavailable");
        }
        ok_result(CHECK_ID.to_owned(), KIND, metrics, message)
    }
}

impl Probe for HostProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        vec![self.sample_now()]
    }
}

/// The identity of a boot, as kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BootIdentity {
    /// The kernel's random boot id (Linux).
    Id(String),
    /// The boot time, Unix seconds (elsewhere).
    Time(u64),
}

impl BootIdentity {
    /// `boot_id <uuid>` or `boot_time <seconds>`.
    fn to_line(&self) -> String {
        match self {
            BootIdentity::Id(id) => format!("boot_id {id}\n"),
            BootIdentity::Time(seconds) => format!("boot_time {seconds}\n"),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let (key, value) = text.trim().split_once(' ')?;
        let value = value.trim();
        match key {
            "boot_id" if !value.is_empty() => Some(BootIdentity::Id(value.to_owned())),
            "boot_time" => value.parse().ok().map(BootIdentity::Time),
            _ => None,
        }
    }

    /// Whether `self` and `other` are the same boot; `None` when they cannot be compared
    /// (one is an id, the other a time: the agent moved to another source).
    fn same_boot(&self, other: &BootIdentity) -> Option<bool> {
        match (self, other) {
            (BootIdentity::Id(a), BootIdentity::Id(b)) => Some(a == b),
            (BootIdentity::Time(a), BootIdentity::Time(b)) => Some(a.abs_diff(*b) <= BOOT_TIME_TOLERANCE_S),
            _ => None,
        }
    }
}

/// This boot's identity: the boot id on Linux, else (or when unreadable) the boot time.
fn current_boot() -> Option<BootIdentity> {
    #[cfg(target_os = "linux")]
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(id) if !id.trim().is_empty() => return Some(BootIdentity::Id(id.trim().to_owned())),
        Ok(_) => tracing::warn!("host probe: the kernel's boot id is empty; using the boot time"),
        Err(e) => tracing::warn!(error = %e, "host probe: cannot read the boot id; using the boot time"),
    }
    match System::boot_time() {
        Ok(seconds) if seconds > 0 => Some(BootIdentity::Time(seconds)),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "host probe: cannot read the boot time; no reboot detection");
            None
        }
    }
}

/// Compares this boot with the one recorded in a state file, once.
#[derive(Debug)]
struct RebootDetector {
    state_file: PathBuf,
    /// `None` when this boot cannot be identified.
    current: Option<BootIdentity>,
    /// The verdict for the first sample; `None` once taken.
    pending: Option<bool>,
}

impl RebootDetector {
    fn new(state_file: PathBuf, current: Option<BootIdentity>) -> Self {
        let previous = match std::fs::read_to_string(&state_file) {
            Ok(text) => {
                let parsed = BootIdentity::parse(&text);
                if parsed.is_none() {
                    tracing::warn!(file = %state_file.display(), "host probe: unreadable boot state; rewriting it");
                }
                parsed
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %state_file.display(), error = %e, "host probe: cannot read the boot state");
                None
            }
        };
        let rebooted = match (&current, &previous) {
            (Some(current), Some(previous)) => current.same_boot(previous).is_some_and(|same| !same),
            _ => false,
        };
        if rebooted {
            tracing::info!(
                ?previous,
                ?current,
                "host probe: the machine rebooted since the agent's last run"
            );
        }
        Self { state_file, current, pending: Some(rebooted) }
    }

    /// `Some(rebooted)`: true only the first time after a reboot. Records this boot at
    /// the first call. `None` when this boot cannot be identified.
    fn take(&mut self) -> Option<bool> {
        let current = self.current.as_ref()?;
        let Some(rebooted) = self.pending.take() else {
            return Some(false);
        };
        if let Err(e) = write_atomically(&self.state_file, &current.to_line()) {
            // Without the file the next run cannot tell; this run's verdict stands.
            tracing::warn!(file = %self.state_file.display(), error = %e, "host probe: cannot record this boot");
        }
        Some(rebooted)
    }
}

/// Writes `text` to a temporary file beside `path` and renames it over `path`, so a
/// crash leaves the old or the new content, never half of it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
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
mod tests;
