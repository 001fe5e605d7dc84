//! Probes: one module per health family.
//!
//! Each family owns its config section (a serde struct with `deny_unknown_fields`; doc
//! comments are the user documentation) and a probe type implementing [`Probe`]: one
//! async sampling function, plus an optional event hook ([`Probe::changed`]) for
//! families where the OS tells us about a change (a process exit, a log line, a systemd
//! signal) so it is reported at once instead of at the next interval.
//!
//! A probe that cannot sample yields a [`CheckResult`] with status UNKNOWN and the reason
//! in `message` (and a `warn` log line) — never a panic, never a loop that stops
//! sampling. Thresholds are the collector's business: a successful sample is OK, except
//! for families that carry their own verdict (Nagios plugins).
//!
//! The agent runs every configured unit ([`ProbeUnit`]) as its own task on its own
//! interval on the agent's sampling grid (`crate::sampler`), so a slow probe never delays another.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus};

pub mod backup;
pub mod command;
pub mod disk;
pub mod exec;
pub mod host;
pub mod latency;
pub mod policy_status;
pub mod service;

/// One configured probe.
///
/// `sample` and `changed` are never polled at the same time. `changed` is raced against
/// the interval timer and shutdown, so it must be cancel-safe: dropping its future must
/// lose nothing (keep watchers and buffered events in `self`, not in the future).
pub trait Probe: Send + 'static {
    /// Samples once. Must bound its own time (timeouts on I/O and commands) and must not
    /// block the async runtime (use `spawn_blocking` or a thread for blocking calls).
    fn sample(&mut self) -> impl Future<Output = Vec<CheckResult>> + Send;

    /// Resolves when something changed that warrants sampling now. Default: never.
    fn changed(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// What every probe may need from the agent.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// The agent's state directory; probes keep small state files under
    /// `<state_dir>/probes/` (e.g. a backup's last success across restarts).
    pub state_dir: PathBuf,
}

impl ProbeContext {
    /// `<state_dir>/probes`, created on demand by the probe that needs it.
    pub fn probe_state_dir(&self) -> PathBuf {
        self.state_dir.join("probes")
    }
}

/// A configured unit: what to build and how often to sample it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeUnit {
    /// Unique per agent: "disk", "host", "service:<name>", "backup:<name>", …
    pub key: String,
    pub interval: Duration,
    pub spec: ProbeSpec,
}

/// The config of one unit, by family.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSpec {
    Disk(disk::DiskConfig),
    Host,
    Service(service::ServiceConfig),
    Backup(backup::BackupConfig),
    Latency(latency::LatencyConfig),
    Command(command::CommandConfig),
    /// The agent's own central-policy status (`agent:policy`, see [`policy_status`]).
    Policy(policy_status::StatusWatch),
}

impl ProbeSpec {
    /// The family name ("disk", "service", …), as in check ids and `check` output.
    pub fn family(&self) -> &'static str {
        match self {
            ProbeSpec::Disk(_) => "disk",
            ProbeSpec::Host => "host",
            ProbeSpec::Service(_) => "service",
            ProbeSpec::Backup(_) => "backup",
            ProbeSpec::Latency(_) => "latency",
            ProbeSpec::Command(_) => "command",
            ProbeSpec::Policy(_) => policy_status::KIND,
        }
    }

    pub fn build(&self, context: &ProbeContext) -> AnyProbe {
        match self {
            ProbeSpec::Disk(config) => AnyProbe::Disk(disk::DiskProbe::new(config)),
            ProbeSpec::Host => AnyProbe::Host(Box::new(host::HostProbe::new(context))),
            ProbeSpec::Service(config) => AnyProbe::Service(service::ServiceProbe::new(config, context)),
            ProbeSpec::Backup(config) => AnyProbe::Backup(backup::BackupProbe::new(config, context)),
            ProbeSpec::Latency(config) => AnyProbe::Latency(latency::LatencyProbe::new(config, context)),
            ProbeSpec::Command(config) => AnyProbe::Command(command::CommandProbe::new(config, context)),
            ProbeSpec::Policy(status) => AnyProbe::Policy(status.probe()),
        }
    }
}

/// Any family's probe (enum dispatch: `Probe` uses `impl Future` and is not dyn-safe).
pub enum AnyProbe {
    Disk(disk::DiskProbe),
    Host(Box<host::HostProbe>),
    Service(service::ServiceProbe),
    Backup(backup::BackupProbe),
    Latency(latency::LatencyProbe),
    Command(command::CommandProbe),
    Policy(policy_status::StatusProbe),
}

/// A probe's future, boxed: see [`AnyProbe::sample`].
pub type ProbeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl AnyProbe {
    /// One sample. Boxed per family: every unit is a task that lives as long as the unit,
    /// and an inline future would make each of them as large as the largest probe's
    /// (an HTTPS check's TLS handshake; figures in docs/performance.md). Boxed,
    /// a sample costs exactly its own family's future, and only while it runs.
    pub fn sample(&mut self) -> ProbeFuture<'_, Vec<CheckResult>> {
        match self {
            AnyProbe::Disk(probe) => Box::pin(probe.sample()),
            AnyProbe::Host(probe) => Box::pin(std::future::ready(vec![probe.sample()])),
            AnyProbe::Service(probe) => Box::pin(probe.sample()),
            AnyProbe::Backup(probe) => Box::pin(probe.sample()),
            AnyProbe::Latency(probe) => Box::pin(probe.sample()),
            AnyProbe::Command(probe) => Box::pin(probe.sample()),
            AnyProbe::Policy(probe) => Box::pin(probe.sample()),
        }
    }

    /// Resolves when the probe wants a sample now (see [`Probe::changed`]); boxed for the
    /// same reason as [`AnyProbe::sample`].
    pub fn changed(&mut self) -> ProbeFuture<'_, ()> {
        match self {
            AnyProbe::Disk(probe) => Box::pin(probe.changed()),
            AnyProbe::Host(_) => Box::pin(std::future::pending()),
            AnyProbe::Service(probe) => Box::pin(probe.changed()),
            AnyProbe::Backup(probe) => Box::pin(probe.changed()),
            AnyProbe::Latency(probe) => Box::pin(probe.changed()),
            AnyProbe::Command(probe) => Box::pin(probe.changed()),
            AnyProbe::Policy(probe) => Box::pin(probe.changed()),
        }
    }
}

/// Enum dispatch to the family's probe; the futures are [`AnyProbe::sample`]'s and
/// [`AnyProbe::changed`]'s, boxed.
impl Probe for AnyProbe {
    fn sample(&mut self) -> impl Future<Output = Vec<CheckResult>> + Send {
        AnyProbe::sample(self)
    }

    fn changed(&mut self) -> impl Future<Output = ()> + Send {
        AnyProbe::changed(self)
    }
}

/// A check name as used in check ids (`service:<name>`): 1–64 characters of letters,
/// digits, '.', '_', '-', '/', '@'; no spaces or colons.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!("name {name:?}: use 1-64 characters of letters, digits, '.', '_', '-', '/', '@'"))
    }
}

/// A successful sample.
pub(crate) fn ok_result(
    check_id: String,
    kind: &str,
    metrics: impl IntoIterator<Item = (String, f64)>,
    message: String,
) -> CheckResult {
    CheckResult {
        check_id,
        kind: kind.to_owned(),
        status: ProbeStatus::Ok as i32,
        metrics: metrics.into_iter().collect(),
        message,
        // Set by the sampler, which knows the unit's interval.
        interval_ms: 0,
    }
}

/// A probe that could not sample: UNKNOWN with the reason, and a log line.
pub(crate) fn unknown_result(check_id: String, kind: &str, reason: String) -> CheckResult {
    tracing::warn!(check = %check_id, kind, reason = %reason, "probe could not sample");
    CheckResult {
        check_id,
        kind: kind.to_owned(),
        status: ProbeStatus::Unknown as i32,
        metrics: BTreeMap::new(),
        message: reason,
        interval_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["nginx", "db-nightly", "gw.branch_2", "postgres@main", "a/b"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "with space", "a:b", &"x".repeat(65), "ü"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
