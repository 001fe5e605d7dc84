//! Agent configuration: raw TOML (`deny_unknown_fields`) → [`Config::parse`] → typed
//! [`Config`]. Every error names the file, the line and the key path ([`ConfigError`],
//! the collector's `config_error.rs`); the binary exits 64 on them.
//!
//! ```toml
//! [collector]
//! url = "https://collector.example.net:7443"
//! ca = "/etc/nightowl/ca.pem"          # the collector's CA
//! cert = "/etc/nightowl/agent.pem"     # this agent's client certificate (its identity)
//! key = "/etc/nightowl/agent.key"
//! # server_name = "collector.example.net"   # TLS name to verify; default: the URL's host
//!
//! [agent]
//! state_dir = "/var/lib/nightowl-agent"   # spool lives here
//! interval = "10s"                         # how often probes sample
//! heartbeat = "10s"                        # keep-alive towards the collector
//! labels = { role = "server", site = "hq" } # rules and overrides select on these
//!
//! [spool]                                  # bound on unacked reports (oldest dropped first)
//! max_reports = 100000
//! max_bytes = 67108864
//!
//! [disk]                                   # see probes::disk::DiskConfig
//! include = ["/", "/var"]
//! ```
//!
//! Relative paths are taken relative to the directory of the config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;
use crate::probes::backup::BackupConfig;
use crate::probes::command::CommandConfig;
use crate::probes::disk::DiskConfig;
use crate::probes::host::HostConfig;
use crate::probes::latency::LatencyConfig;
use crate::probes::service::ServiceConfig;
use crate::probes::{ProbeSpec, ProbeUnit};
use crate::spool::SpoolLimits;

// One source file for both binaries' config errors (see its module doc).
#[path = "../../collector/src/config_error.rs"]
mod error;

pub use error::{ConfigError, Document, KeyError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    collector: Option<RawCollector>,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    disk: DiskConfig,
    #[serde(default)]
    host: HostConfig,
    #[serde(default)]
    service: Vec<ServiceConfig>,
    #[serde(default)]
    backup: Vec<BackupConfig>,
    #[serde(default)]
    latency: Vec<LatencyConfig>,
    #[serde(default)]
    command: Vec<CommandConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    url: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    state_dir: Option<PathBuf>,
    labels: Option<std::collections::BTreeMap<String, String>>,
    interval: Option<String>,
    heartbeat: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    max_reports: Option<u64>,
    max_bytes: Option<u64>,
}

/// Where and how to reach the collector.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectorConfig {
    /// `https://host[:port]`, checked by [`parse_collector_url`].
    pub url: http::Uri,
    /// Host name the collector's certificate must carry.
    pub server_name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[collector] url`: an https URL of a host, with an optional port and nothing after it
/// (the session is always mutual TLS; gRPC has no use for a path).
fn parse_collector_url(text: &str) -> Result<http::Uri, String> {
    let url: http::Uri = text.parse().map_err(|error| format!("{text:?} is not a URL ({error})"))?;
    if url.scheme_str() != Some("https") {
        return Err(format!("{text:?} must start with https:// (the session is always mutual TLS)"));
    }
    if url.host().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    if url.path_and_query().is_some_and(|rest| rest.as_str() != "/") {
        return Err(format!("{text:?}: give only https://host[:port], without a path or query"));
    }
    Ok(url)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: String,
    /// Required by `run`; `check` works without it.
    pub collector: Option<CollectorConfig>,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub heartbeat: Duration,
    /// Descriptive labels sent to the collector (rules and overrides select on them).
    pub labels: std::collections::BTreeMap<String, String>,
    pub spool: SpoolLimits,
    /// Every probe unit to run, in config order (disk, host, then the listed checks).
    pub units: Vec<ProbeUnit>,
}

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nightowl/agent.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nightowl-agent";
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::file(&file, format!("cannot read: {error}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &file, &base)
    }

    /// No config file: every probe with its defaults, no collector (enough for `check`).
    pub fn embedded() -> Config {
        Self::parse("", "<embedded defaults>", Path::new(".")).expect("embedded defaults are valid")
    }

    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let document = Document::parse(text, file)?;
        let raw: RawConfig = document.deserialize()?;
        let error = |key: &str, message: String| document.error(key, message);
        let resolve = |path: PathBuf| if path.is_absolute() { path } else { base.join(path) };

        let collector = match raw.collector {
            None => None,
            Some(collector) => {
                let url = collector.url.ok_or_else(|| {
                    error("collector.url", "missing: e.g. \"https://collector:7443\"".into())
                })?;
                let url = parse_collector_url(&url).map_err(|message| error("collector.url", message))?;
                // `host()` keeps an IPv6 literal's brackets; the TLS name has none.
                let host = url.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_owned();
                let path = |key: &str, value: Option<PathBuf>| {
                    value.map(resolve).ok_or_else(|| error(key, "missing: path to a PEM file".into()))
                };
                Some(CollectorConfig {
                    server_name: collector.server_name.unwrap_or(host),
                    ca: path("collector.ca", collector.ca)?,
                    cert: path("collector.cert", collector.cert)?,
                    key: path("collector.key", collector.key)?,
                    url,
                })
            }
        };
        let duration =
            |key: &str, value: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
                let Some(text) = value else { return Ok(default) };
                let parsed = humantime::parse_duration(&text).map_err(|parse| {
                    error(key, format!("{text:?} is not a duration ({parse}): use e.g. \"10s\", \"1m\""))
                })?;
                if parsed < MIN_INTERVAL {
                    return Err(error(key, format!("{text:?} is too short: at least 100ms")));
                }
                Ok(parsed)
            };
        let interval = duration("agent.interval", raw.agent.interval, Duration::from_secs(10))?;
        let labels = raw.agent.labels.unwrap_or_default();
        for (key, value) in &labels {
            let fits = |text: &str| !text.is_empty() && text.len() <= 64;
            if !fits(key) || !fits(value) || labels.len() > 32 {
                return Err(error(
                    "agent.labels",
                    format!("{key:?} = {value:?}: at most 32 labels of 1-64 characters"),
                ));
            }
        }
        let heartbeat = duration("agent.heartbeat", raw.agent.heartbeat, Duration::from_secs(10))?;
        let defaults = SpoolLimits::default();
        let spool = SpoolLimits {
            max_reports: match raw.spool.max_reports {
                Some(0) => return Err(error("spool.max_reports", "must be at least 1".into())),
                Some(count) => count,
                None => defaults.max_reports,
            },
            max_bytes: match raw.spool.max_bytes {
                Some(bytes) if bytes < 64 * 1024 => {
                    return Err(error("spool.max_bytes", format!("{bytes} is too small: at least 65536")));
                }
                Some(bytes) => bytes,
                None => defaults.max_bytes,
            },
        };
        raw.disk.validate().map_err(|message| error("disk", message))?;
        let mut units = vec![
            ProbeUnit {
                key: "disk".into(),
                interval: unit_interval(raw.disk.interval, interval)
                    .map_err(|message| error("disk.interval", message))?,
                spec: ProbeSpec::Disk(raw.disk),
            },
            ProbeUnit {
                key: "host".into(),
                interval: unit_interval(raw.host.interval, interval)
                    .map_err(|message| error("host.interval", message))?,
                spec: ProbeSpec::Host(raw.host),
            },
        ];
        let listed = ListedChecks {
            service: raw.service,
            backup: raw.backup,
            latency: raw.latency,
            command: raw.command,
        };
        units.extend(listed.into_units(interval).map_err(|invalid| document.key_error(invalid))?);
        Ok(Config {
            source: file.to_owned(),
            collector,
            state_dir: raw.agent.state_dir.map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), resolve),
            interval,
            heartbeat,
            labels,
            spool,
            units,
        })
    }
}

/// A unit's sampling interval: its own `interval`, else `default` (`[agent] interval`).
fn unit_interval(value: Option<HumanDuration>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(HumanDuration(duration)) if duration >= MIN_INTERVAL => Ok(duration),
        Some(_) => Err("interval is too short: at least 100ms".into()),
    }
}

/// The listed checks (`[[service]]`, `[[backup]]`, `[[latency]]`, `[[command]]`) of one
/// document, as deserialised. The local config and a central policy (`crate::policy`)
/// both turn theirs into units here, so a check means the same and is validated the
/// same wherever it was written.
#[derive(Debug, Default)]
pub(crate) struct ListedChecks {
    pub service: Vec<ServiceConfig>,
    pub backup: Vec<BackupConfig>,
    pub latency: Vec<LatencyConfig>,
    pub command: Vec<CommandConfig>,
}

impl ListedChecks {
    /// Validates every check (unique name per family) and makes it a unit keyed
    /// `<family>:<name>` (which is also its check id). Errors name the check as
    /// `<family>[<index>]`, the index in its own document.
    pub(crate) fn into_units(self, interval: Duration) -> Result<Vec<ProbeUnit>, KeyError> {
        let error = |key: &str, message: String| KeyError::new(key, message);
        let mut units: Vec<ProbeUnit> = Vec::new();
        macro_rules! listed {
            ($family:literal, $list:expr, $variant:ident) => {
                for (index, check) in $list.into_iter().enumerate() {
                    let key = format!("{}[{index}]", $family);
                    check.validate().map_err(|message| error(&key, message))?;
                    let unit_key = format!("{}:{}", $family, check.name);
                    if units.iter().any(|unit| unit.key == unit_key) {
                        return Err(error(
                            &key,
                            format!("name {:?} is used twice in [[{}]]", check.name, $family),
                        ));
                    }
                    let interval = unit_interval(check.interval, interval)
                        .map_err(|message| error(&format!("{key}.interval"), message))?;
                    units.push(ProbeUnit { key: unit_key, interval, spec: ProbeSpec::$variant(check) });
                }
            };
        }
        listed!("service", self.service, Service);
        listed!("backup", self.backup, Backup);
        listed!("latency", self.latency, Latency);
        listed!("command", self.command, Command);
        Ok(units)
    }
}

#[cfg(test)]
mod tests;
