//! Service probe: is a service up, since when, and how often did it restart.
//!
//! A `[[service]]` check watches one service in exactly one way:
//!
//! | key | backend | metrics |
//! |-----|---------|---------|
//! | `process` | the process table (sysinfo), by name or by a regex on the command line | `running`, `count`, `pid`, `started_at_s`, `restarts` |
//! | `port` | a TCP connect to `host:port` | `listening`, `connect_ms` |
//! | `systemd` | the unit's ActiveState over D-Bus (Linux) | `active`, `n_restarts`, `active_since_s` |
//! | `windows` | the Service Control Manager (Windows) | `running`, `pid` |
//!
//! Every backend also reports `up` (1/0: running, listening, active), the one metric the
//! collector's default `service_down` rule judges, whatever the backend.
//!
//! Invariants:
//!
//! - One sample yields one result, check id `service:<name>`, kind `service`. A service
//!   that is down is still an OK *sample* (`running = 0`): judging it is the collector's
//!   business. UNKNOWN means the agent could not tell (no systemd, D-Bus failed, the name
//!   does not resolve).
//! - Stops are seen at once, not at the next interval ([`Probe::changed`]): a watched
//!   process exit through a pidfd per watched pid (Linux; a 250 ms `/proc/<pid>` check
//!   where pidfds are unavailable, a 500 ms sysinfo check of only those pids elsewhere),
//!   a systemd unit through its `PropertiesChanged` signal, a Windows service through a
//!   1 s status query. Full process-table scans happen only in `sample`.
//! - `changed` is cancel-safe: watchers live in the probe, never in the future.

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext};
use crate::duration::HumanDuration;

mod exits;
mod port;
mod process;
mod systemd;
mod windows;

// Real processes, sockets and D-Bus: Linux.
#[cfg(all(test, target_os = "linux"))]
mod tests;

/// The `kind` of every result of this family.
const KIND: &str = "service";

/// One `[[service]]` entry: a name and exactly one of `process`, `port`, `systemd`,
/// `windows`.
///
/// ```toml
/// [[service]]
/// name = "db"
/// process = "postgres"
///
/// [[service]]
/// name = "worker"
/// process = "^/usr/bin/python3 .*worker\\.py"
/// match = "cmdline"
///
/// [[service]]
/// name = "db-port"
/// port = 5432
///
/// [[service]]
/// name = "web"
/// systemd = "nginx.service"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Check name: the check id is `service:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`. Stops are reported at once
    /// regardless.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// Watch processes. By default the process name: the executable's name as the OS
    /// reports it ("postgres", "nginx"; on Windows with or without ".exe"). Names longer
    /// than 15 characters, which Linux truncates, are compared with the executable path
    /// and `argv[0]`. With `match = "cmdline"` this is a regular expression searched in
    /// the full command line (arguments joined by spaces).
    /// Metrics: `running` (1/0), `count`, `pid` (lowest), `started_at_s` (oldest match,
    /// unix seconds), `restarts` (times a matching process went away and a new one
    /// appeared since the agent started watching).
    #[serde(default)]
    pub process: Option<String>,
    /// How `process` matches: "name" (default) or "cmdline" (a regex).
    #[serde(default, rename = "match")]
    pub process_match: Option<ProcessMatch>,
    /// Watch a TCP port: `listening` is 1 when a connection to `host:port` succeeds
    /// within `timeout`; `connect_ms` is how long it took.
    #[serde(default)]
    pub port: Option<u16>,
    /// Host (name or address) for `port`; default "127.0.0.1".
    #[serde(default)]
    pub host: Option<String>,
    /// Connect timeout for `port`; default "2s", at most "60s".
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Watch a systemd unit over D-Bus (Linux). ".service" is added to a name without a
    /// unit suffix. Metrics: `active` (1 when ActiveState is "active"), `n_restarts`
    /// (services), `active_since_s` (when it last became active, unix seconds).
    #[serde(default)]
    pub systemd: Option<String>,
    /// Watch a Windows service by its service name (not the display name), e.g.
    /// "Spooler". Metrics: `running` (1 when Running), `pid`.
    #[serde(default)]
    pub windows: Option<String>,
}

/// How `process` is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessMatch {
    /// The process (executable) name.
    #[default]
    Name,
    /// A regular expression searched in the full command line.
    Cmdline,
}

/// Default `host` for `port`.
const DEFAULT_HOST: &str = "127.0.0.1";
/// Default connect `timeout` for `port`.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl ServiceConfig {
    /// Checks the entry; the error names the offending key and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)?;
        let ways = [
            ("process", self.process.is_some()),
            ("port", self.port.is_some()),
            ("systemd", self.systemd.is_some()),
            ("windows", self.windows.is_some()),
        ];
        let chosen: Vec<&str> = ways.iter().filter(|(_, set)| *set).map(|(key, _)| *key).collect();
        if chosen.len() != 1 {
            let found = if chosen.is_empty() { "none".to_owned() } else { chosen.join(" and ") };
            return Err(format!("set exactly one of process, port, systemd, windows (found {found})"));
        }
        if self.process_match.is_some() && self.process.is_none() {
            return Err("match: only applies to process".into());
        }
        if self.host.is_some() && self.port.is_none() {
            return Err("host: only applies to port".into());
        }
        if self.timeout.is_some() && self.port.is_none() {
            return Err("timeout: only applies to port".into());
        }
        if let Some(pattern) = &self.process {
            match self.process_match.unwrap_or_default() {
                ProcessMatch::Name => {
                    process::validate_name(pattern).map_err(|why| format!("process: {why}"))?
                }
                ProcessMatch::Cmdline => {
                    process::compile_cmdline(pattern).map_err(|why| format!("process: {why}"))?;
                }
            }
        }
        if self.port == Some(0) {
            return Err("port: 0 is not a port; use 1-65535".into());
        }
        if let Some(host) = &self.host
            && (host.trim().is_empty() || host.chars().any(char::is_whitespace))
        {
            return Err(format!("host: {host:?} is not a host name or address"));
        }
        if let Some(HumanDuration(timeout)) = self.timeout {
            if timeout.is_zero() {
                return Err("timeout: must be more than 0, e.g. \"2s\"".into());
            }
            if timeout > MAX_TIMEOUT {
                return Err("timeout: at most \"60s\"".into());
            }
        }
        if let Some(unit) = &self.systemd {
            systemd::validate_unit(unit).map_err(|why| format!("systemd: {why}"))?;
        }
        if let Some(service) = &self.windows {
            windows::validate_service(service).map_err(|why| format!("windows: {why}"))?;
        }
        Ok(())
    }
}

/// Watches one configured service.
pub struct ServiceProbe {
    check_id: String,
    watch: Watch,
}

/// The backend chosen by the config.
enum Watch {
    Process(Box<process::ProcessWatch>),
    Port(port::PortWatch),
    Systemd(Box<systemd::SystemdWatch>),
    Windows(windows::WindowsWatch),
    /// A config that did not pass `validate` (only reachable when a caller skipped it).
    Invalid(String),
}

impl ServiceProbe {
    pub fn new(config: &ServiceConfig, _context: &ProbeContext) -> Self {
        let check_id = format!("service:{}", config.name);
        let watch = match (&config.process, config.port, &config.systemd, &config.windows) {
            (Some(pattern), None, None, None) => {
                match process::ProcessWatch::new(pattern, config.process_match.unwrap_or_default()) {
                    Ok(watch) => Watch::Process(Box::new(watch)),
                    Err(why) => Watch::Invalid(format!("process: {why}")),
                }
            }
            (None, Some(port), None, None) => Watch::Port(port::PortWatch::new(
                config.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned()),
                port,
                config.timeout.map_or(DEFAULT_TIMEOUT, |HumanDuration(timeout)| timeout),
            )),
            (None, None, Some(unit), None) => Watch::Systemd(Box::new(systemd::SystemdWatch::new(unit))),
            (None, None, None, Some(service)) => Watch::Windows(windows::WindowsWatch::new(service)),
            _ => Watch::Invalid("set exactly one of process, port, systemd, windows".into()),
        };
        Self { check_id, watch }
    }
}

impl Probe for ServiceProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let check_id = self.check_id.clone();
        let result = match &mut self.watch {
            Watch::Process(watch) => watch.sample(check_id).await,
            Watch::Port(watch) => watch.sample(check_id).await,
            Watch::Systemd(watch) => watch.sample(check_id).await,
            Watch::Windows(watch) => watch.sample(check_id).await,
            Watch::Invalid(why) => super::unknown_result(check_id, KIND, format!("invalid config: {why}")),
        };
        vec![result]
    }

    async fn changed(&mut self) {
        match &mut self.watch {
            Watch::Process(watch) => watch.changed().await,
            Watch::Port(_) | Watch::Invalid(_) => std::future::pending().await,
            Watch::Systemd(watch) => watch.changed().await,
            Watch::Windows(watch) => watch.changed().await,
        }
    }
}

/// An error with its sources, for messages ("cannot connect: …: permission denied").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
