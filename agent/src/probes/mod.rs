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

/// Declares the probe families once: [`ProbeSpec`] (a unit's config, by family),
/// [`AnyProbe`] (its probe) and the dispatch between them. One line per family: the
/// variant and its config type, the probe type, the family name (as in check ids and
/// `check` output), and how the probe is built from the config.
macro_rules! families {
    ($($(#[$doc:meta])* $variant:ident($config:ty) => $probe:ty, $name:expr, $build:expr;)+) => {
        /// The config of one unit, by family.
        #[derive(Debug, Clone, PartialEq)]
        pub enum ProbeSpec {
            $($(#[$doc])* $variant($config),)+
        }

        impl ProbeSpec {
            /// The family name ("disk", "service", …), as in check ids and `check` output.
            pub fn family(&self) -> &'static str {
                match self {
                    $(ProbeSpec::$variant(_) => $name,)+
                }
            }

            pub fn build(&self, context: &ProbeContext) -> AnyProbe {
                match self {
                    $(ProbeSpec::$variant(config) => {
                        let build: fn(&$config, &ProbeContext) -> $probe = $build;
                        AnyProbe::$variant(build(config, context))
                    })+
                }
            }
        }

        /// Any family's probe (enum dispatch: `Probe` uses `impl Future` and is not
        /// dyn-safe).
        pub enum AnyProbe {
            $($variant($probe),)+
        }

        impl AnyProbe {
            /// One sample. Boxed per family: every unit is a task that lives as long as
            /// the unit, and an inline future would make each of them as large as the
            /// largest probe's (an HTTPS check's TLS handshake; figures in
            /// docs/performance.md). Boxed, a sample costs exactly its own family's
            /// future, and only while it runs.
            pub fn sample(&mut self) -> ProbeFuture<'_, Vec<CheckResult>> {
                match self {
                    $(AnyProbe::$variant(probe) => Box::pin(probe.sample()),)+
                }
            }

            /// Resolves when the probe wants a sample now (see [`Probe::changed`]); boxed
            /// for the same reason as [`AnyProbe::sample`].
            pub fn changed(&mut self) -> ProbeFuture<'_, ()> {
                match self {
                    $(AnyProbe::$variant(probe) => Box::pin(probe.changed()),)+
                }
            }
        }
    };
}

families! {
    Disk(disk::DiskConfig) => disk::DiskProbe, "disk", |config, _| disk::DiskProbe::new(config);
    // Boxed: sysinfo's state is large, and there is one host unit per agent.
    Host(host::HostConfig) => Box<host::HostProbe>, "host", |config, context| Box::new(host::HostProbe::new(config, context));
    Service(service::ServiceConfig) => service::ServiceProbe, "service", service::ServiceProbe::new;
    Backup(backup::BackupConfig) => backup::BackupProbe, "backup", backup::BackupProbe::new;
    Latency(latency::LatencyConfig) => latency::LatencyProbe, "latency", latency::LatencyProbe::new;
    Command(command::CommandConfig) => command::CommandProbe, "command", command::CommandProbe::new;
    /// The agent's own central-policy status (`agent:policy`, see [`policy_status`]).
    Policy(policy_status::StatusWatch) => policy_status::StatusProbe, policy_status::KIND, |status, _| status.probe();
}

/// A probe's future, boxed: see [`AnyProbe::sample`].
pub type ProbeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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
mod tests;
