//! Collector configuration: raw TOML (`deny_unknown_fields`) → [`Config::validate`] →
//! typed [`Config`]. Every error names the file, the line and the key path and says how
//! to fix it ([`ConfigError`], `error.rs`); the binary exits with status 64 on any of them.
//!
//! ```toml
//! # Address the agents connect to.
//! listen = "127.0.0.1:7443"
//! # Where the alert store and state live.
//! data_dir = "/var/lib/nightowl"
//! # Alerting rules (see evaluate::rules); default: the embedded rules. Reloaded on change.
//! rules = "/etc/nightowl/rules.toml"
//! # Central policy: checks pushed to agents by tenant/label (see crate::policy);
//! # default: none. Reloaded on change.
//! policies = "/etc/nightowl/policies.toml"
//!
//! [tls]                      # default: <data_dir>/pki/{ca.pem,collector.pem,collector.key}
//! ca = "/etc/nightowl/pki/ca.pem"
//! cert = "/etc/nightowl/pki/collector.pem"
//! key = "/etc/nightowl/pki/collector.key"
//!
//! [offline]                  # agent offline alerts
//! after = "25s"              # silence (no report, no heartbeat) before an agent is offline
//! probe_ports = [22, 135, 445, 3389, 80, 443]   # to tell "agent down" from "host unreachable"
//! probe_timeout = "3s"
//!
//! [limits]                   # all optional; the defaults are safe for 10,000 agents
//! max_message_bytes = 1048576
//! max_results_per_report = 10000
//! max_connections = 20000
//! max_concurrent_handshakes = 512
//! max_streams_per_connection = 4
//! handshake_timeout = "10s"
//! keepalive_interval = "30s"
//! keepalive_timeout = "20s"
//! idle_timeout = "90s"
//!
//! [[maintenance]]            # alerts inside are held, not emitted (see calendar, hold)
//! name = "acme patch night"
//! tenant = "acme"
//! days = ["sat"]
//! from = "22:00"
//! to = "02:00"
//! timezone = "Europe/Berlin"
//!
//! [coverage.default]         # after hours P3/P4 wait for business hours
//! timezone = "Europe/London"
//! hours = { mon-fri = "08:00-18:00" }
//! ```
//!
//! Relative paths are taken relative to the directory of the config file.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::calendar::{CoverageSet, Maintenance, RawCoverageSet, RawMaintenance};
use crate::evaluate::RuleSet;
use crate::offline::OfflineConfig;
use crate::policy::PolicySet;
use crate::queue::Retention;
use crate::sinks::{RawSink, SinkSpec};

pub mod watch;

pub use crate::config_error::{ConfigError, Document, KeyError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    rules: Option<PathBuf>,
    policies: Option<PathBuf>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    offline: RawOffline,
    #[serde(default)]
    maintenance: Vec<RawMaintenance>,
    coverage: Option<RawCoverageSet>,
    #[serde(default)]
    sink: Vec<RawSink>,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_age: Option<String>,
    max_events: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffline {
    after: Option<String>,
    probe_ports: Option<Vec<u16>>,
    probe_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<u32>,
    max_results_per_report: Option<u32>,
    max_connections: Option<u32>,
    max_concurrent_handshakes: Option<u32>,
    max_streams_per_connection: Option<u32>,
    handshake_timeout: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_timeout: Option<String>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Limits on what peers may cost us. tonic's defaults are unsafe (unlimited streams,
/// no handshake timeout, no reset-flood guard), so every one is explicit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_results_per_report: usize,
    pub max_connections: NonZeroU32,
    /// Handshakes doing their CPU work (key exchange, signature, client-certificate
    /// verification) at once. Waiting for a ClientHello takes no slot.
    pub max_concurrent_handshakes: NonZeroU32,
    pub max_streams_per_connection: NonZeroU32,
    /// The whole TLS handshake, counted from accept (ClientHello, slot wait, the rest).
    pub handshake_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A session that sends nothing (not even a heartbeat) for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_results_per_report: 10_000,
            max_connections: NonZeroU32::new(20_000).unwrap(),
            max_concurrent_handshakes: NonZeroU32::new(512).unwrap(),
            max_streams_per_connection: NonZeroU32::new(4).unwrap(),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the config came from, for messages.
    pub source: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsPaths,
    pub limits: Limits,
    /// The rules file, when one is configured (watched for changes).
    pub rules_path: Option<PathBuf>,
    /// The rules in force at load: from `rules_path`, or the embedded defaults.
    pub rules: Arc<RuleSet>,
    /// The policy file, when one is configured (watched for changes).
    pub policies_path: Option<PathBuf>,
    /// The central policies in force at load (none without `policies_path`).
    pub policies: Arc<PolicySet>,
    pub offline: OfflineConfig,
    /// `[[maintenance]]`: windows during which alerts are held (`crate::hold`).
    pub maintenance: Maintenance,
    /// `[coverage]`: business hours per tenant; none = covered 24/7.
    pub coverage: CoverageSet,
    /// `[[sink]]`: where alert events are delivered (see `crate::sinks`).
    pub sinks: Vec<SinkSpec>,
    /// `[retention]`: how long / how many events the queue keeps.
    pub retention: Retention,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
pub const DEFAULT_DATA_DIR: &str = "./nightowl-data";
const EMBEDDED: &str = "<embedded defaults>";

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::file(&file, format!("cannot read: {error}")))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &file, &base)
    }

    /// The embedded defaults (`run` without `--config`): listen on 127.0.0.1:7443, data
    /// and PKI under ./nightowl-data.
    pub fn embedded() -> Config {
        Self::parse("", EMBEDDED, Path::new(".")).expect("embedded defaults are valid")
    }

    /// Parses TOML text; `file` names it in errors, `base` resolves relative paths.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let document = Document::parse(text, file)?;
        let raw: RawConfig = document.deserialize()?;
        raw.validate(&document, base)
    }
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { base.join(path) }
}

impl RawConfig {
    fn validate(self, document: &Document<'_>, base: &Path) -> Result<Config, ConfigError> {
        let error = |key: &str, message: String| document.error(key, message);
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            error("listen", format!("{listen_text:?} is not an address: use IP:PORT, e.g. \"0.0.0.0:7443\""))
        })?;
        let data_dir = resolve(base, self.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)));
        let pki = data_dir.join("pki");
        let tls = TlsPaths {
            ca: self.tls.ca.map_or_else(|| pki.join("ca.pem"), |path| resolve(base, path)),
            cert: self.tls.cert.map_or_else(|| pki.join("collector.pem"), |path| resolve(base, path)),
            key: self.tls.key.map_or_else(|| pki.join("collector.key"), |path| resolve(base, path)),
        };
        let defaults = Limits::default();
        let raw = self.limits;
        let non_zero = |key: &str, value: Option<u32>, default: NonZeroU32| match value {
            None => Ok(default),
            Some(value) => NonZeroU32::new(value).ok_or_else(|| error(key, "must be at least 1".into())),
        };
        let duration = |key: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => match humantime::parse_duration(&text) {
                Ok(duration) if !duration.is_zero() => Ok(duration),
                Ok(_) => Err(error(key, "must be longer than zero".into())),
                Err(parse) => {
                    Err(error(key, format!("{text:?} is not a duration ({parse}): use e.g. \"10s\", \"2m\"")))
                }
            },
        };
        let max_message_bytes = match raw.max_message_bytes {
            None => defaults.max_message_bytes,
            Some(bytes) if (4096..=64 * 1024 * 1024).contains(&bytes) => bytes as usize,
            Some(bytes) => {
                return Err(error(
                    "limits.max_message_bytes",
                    format!("{bytes} is out of range 4096..=67108864"),
                ));
            }
        };
        let limits = Limits {
            max_message_bytes,
            max_results_per_report: non_zero(
                "limits.max_results_per_report",
                raw.max_results_per_report,
                NonZeroU32::new(defaults.max_results_per_report as u32).unwrap(),
            )?
            .get() as usize,
            max_connections: non_zero(
                "limits.max_connections",
                raw.max_connections,
                defaults.max_connections,
            )?,
            max_concurrent_handshakes: non_zero(
                "limits.max_concurrent_handshakes",
                raw.max_concurrent_handshakes,
                defaults.max_concurrent_handshakes,
            )?,
            max_streams_per_connection: non_zero(
                "limits.max_streams_per_connection",
                raw.max_streams_per_connection,
                defaults.max_streams_per_connection,
            )?,
            handshake_timeout: duration(
                "limits.handshake_timeout",
                raw.handshake_timeout,
                defaults.handshake_timeout,
            )?,
            keepalive_interval: duration(
                "limits.keepalive_interval",
                raw.keepalive_interval,
                defaults.keepalive_interval,
            )?,
            keepalive_timeout: duration(
                "limits.keepalive_timeout",
                raw.keepalive_timeout,
                defaults.keepalive_timeout,
            )?,
            idle_timeout: duration("limits.idle_timeout", raw.idle_timeout, defaults.idle_timeout)?,
        };
        let offline_defaults = OfflineConfig::default();
        let offline = OfflineConfig {
            after: duration("offline.after", self.offline.after, offline_defaults.after)?,
            probe_ports: match self.offline.probe_ports {
                Some(ports) if ports.contains(&0) => {
                    return Err(error("offline.probe_ports", "port 0 cannot be probed".into()));
                }
                Some(ports) => ports,
                None => offline_defaults.probe_ports,
            },
            probe_timeout: duration(
                "offline.probe_timeout",
                self.offline.probe_timeout,
                offline_defaults.probe_timeout,
            )?,
        };
        let rules_path = self.rules.map(|path| resolve(base, path));
        let rules = match &rules_path {
            None => RuleSet::defaults(),
            Some(path) => Arc::new(RuleSet::load(path).map_err(|rules| error("rules", rules.to_string()))?),
        };
        let policies_path = self.policies.map(|path| resolve(base, path));
        let policies = match &policies_path {
            None => Arc::new(PolicySet::default()),
            Some(path) => {
                Arc::new(PolicySet::load(path).map_err(|policies| error("policies", policies.to_string()))?)
            }
        };
        let maintenance = Maintenance::from_raw(self.maintenance, "maintenance")
            .map_err(|error| document.key_error(error))?;
        let coverage = match self.coverage {
            Some(raw) => raw.validate("coverage").map_err(|error| document.key_error(error))?,
            None => CoverageSet::default(),
        };
        let sinks = crate::sinks::validate_all(self.sink, base).map_err(|error| document.key_error(error))?;
        let retention_defaults = Retention::default();
        let retention = Retention {
            max_age: duration("retention.max_age", self.retention.max_age, retention_defaults.max_age)?,
            max_events: match self.retention.max_events {
                None => retention_defaults.max_events,
                Some(count) if count >= 1000 => count,
                Some(count) => {
                    return Err(error(
                        "retention.max_events",
                        format!("{count} is too few: keep at least 1000"),
                    ));
                }
            },
        };
        Ok(Config {
            source: document.file().to_owned(),
            listen,
            data_dir,
            tls,
            limits,
            rules_path,
            rules,
            policies_path,
            policies,
            offline,
            maintenance,
            coverage,
            sinks,
            retention,
        })
    }
}

#[cfg(test)]
mod tests;
