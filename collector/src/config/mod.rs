//! Collector configuration: raw TOML (`deny_unknown_fields`) → [`Config::validate`] →
//! typed [`Config`]. Every error names the file and the key and says how to fix it; the
//! binary exits with status 64 on any of them.
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

/// A configuration problem, naming where it is.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The config file, or "<embedded defaults>".
    pub file: String,
    /// Dotted key path (`limits.handshake_timeout`), or the TOML parser's location.
    pub key: String,
    pub message: String,
}

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
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {error}"),
        })?;
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
        let raw: RawConfig = toml::from_str(text).map_err(|error| ConfigError {
            file: file.to_owned(),
            key: location(text, &error),
            message: error.message().to_owned(),
        })?;
        raw.validate(file, base)
    }
}

/// "line 3, key `bogus`" for a TOML error: the parser's message names the problem, this
/// names where it is.
fn location(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return "(document)".into();
    };
    let line_index = text[..span.start.min(text.len())].matches('\n').count();
    let line = text.lines().nth(line_index).unwrap_or("").trim();
    let key = line.split('=').next().unwrap_or("").trim();
    let table = table_at(text, line_index);
    match (table.as_deref(), key.is_empty() || key.starts_with('[')) {
        (_, true) => format!("line {}", line_index + 1),
        (Some(table), false) => format!("line {}, key `{table}.{key}`", line_index + 1),
        (None, false) => format!("line {}, key `{key}`", line_index + 1),
    }
}

/// The table in force at line `line_index` (0-based), with array elements numbered as
/// validation errors number them: `[[sink]]` (the first) → `sink[0]`, and its sub-table
/// `[sink.webhook]` → `sink[0].webhook`.
fn table_at(text: &str, line_index: usize) -> Option<String> {
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut table = None;
    for line in text.lines().take(line_index + 1) {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|rest| rest.strip_suffix("]]")) {
            let name = name.trim();
            let index = match arrays.iter_mut().find(|(array, _)| array == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.to_owned(), 1));
                    0
                }
            };
            table = Some(format!("{name}[{index}]"));
        } else if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            let name = name.trim();
            // A sub-table of an array's latest element: `[sink.webhook]` after `[[sink]]`.
            let element = arrays
                .iter()
                .filter(|(array, _)| {
                    name.strip_prefix(array.as_str()).is_some_and(|rest| rest.starts_with('.'))
                })
                .max_by_key(|(array, _)| array.len())
                .map(|(array, count)| format!("{array}[{}]{}", count - 1, &name[array.len()..]));
            table = Some(element.unwrap_or_else(|| name.to_owned()));
        }
    }
    table
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { base.join(path) }
}

impl RawConfig {
    fn validate(self, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let error =
            |key: &str, message: String| ConfigError { file: file.to_owned(), key: key.to_owned(), message };
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
        // The calendar validators name the key in front of their message
        // (`maintenance[1].timezone: ...`); keep it as the error's key.
        let calendar_error = |fallback: &str, text: String| match text.split_once(": ") {
            Some((key, message)) if !key.contains(' ') => error(key, message.to_owned()),
            _ => error(fallback, text),
        };
        let maintenance = Maintenance::from_raw(self.maintenance, "maintenance")
            .map_err(|text| calendar_error("maintenance", text))?;
        let coverage = match self.coverage {
            Some(raw) => raw.validate("coverage").map_err(|text| calendar_error("coverage", text))?,
            None => CoverageSet::default(),
        };
        let sinks =
            crate::sinks::validate_all(self.sink, base).map_err(|(key, message)| error(&key, message))?;
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
            source: file.to_owned(),
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "/etc/nightowl/collector.toml", Path::new("/etc/nightowl"))
    }

    #[test]
    fn embedded_defaults() {
        let config = Config::embedded();
        assert_eq!(config.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(config.data_dir, Path::new("./nightowl-data"));
        assert_eq!(config.tls.ca, Path::new("./nightowl-data/pki/ca.pem"));
        assert_eq!(config.limits, Limits::default());
        assert!(config.rules_path.is_none());
        assert!(config.rules.rules().iter().any(|rule| rule.name == "disk_used_pct"));
    }

    #[test]
    fn a_bad_rules_file_is_a_config_error_naming_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rules.toml"),
            "[[rule]]\nname = \"full\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 99\ncrit = 95\n",
        )
        .unwrap();
        let error = Config::parse("rules = \"rules.toml\"", "collector.toml", dir.path()).unwrap_err();
        assert_eq!(error.key, "rules");
        assert!(error.message.contains("rule full") && error.message.contains("warn (99)"), "{error}");
    }

    #[test]
    fn a_policy_with_a_command_is_a_config_error_naming_the_policy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policies.toml"),
            "[[policy]]\nname = \"acme-servers\"\n[[policy.command]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n",
        )
        .unwrap();
        let error = Config::parse("policies = \"policies.toml\"", "collector.toml", dir.path()).unwrap_err();
        assert_eq!(error.key, "policies");
        assert!(error.message.contains("policies.toml: policy \"acme-servers\".command"), "{error}");
        assert!(Config::embedded().policies.policies().is_empty());
        std::fs::write(dir.path().join("policies.toml"), "[[policy]]\nname = \"ok\"\n").unwrap();
        let config = Config::parse("policies = \"policies.toml\"", "collector.toml", dir.path()).unwrap();
        assert_eq!(config.policies_path.as_deref(), Some(dir.path().join("policies.toml").as_path()));
        assert_eq!(config.policies.policies()[0].name, "ok");
    }

    #[test]
    fn full_config_and_relative_paths() {
        let config = parse(
            "listen = \"0.0.0.0:9000\"\ndata_dir = \"data\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"/abs/c.pem\"\nkey = \"k.key\"\n[limits]\nhandshake_timeout = \"3s\"\nmax_connections = 10\n",
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.data_dir, Path::new("/etc/nightowl/data"));
        assert_eq!(config.tls.ca, Path::new("/etc/nightowl/pki/ca.pem"));
        assert_eq!(config.tls.cert, Path::new("/abs/c.pem"));
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(config.limits.max_connections.get(), 10);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let error = parse("listen = \"127.0.0.1:1\"\n[tls]\nca = \"x\"\ncertificate = \"y\"\n").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("/etc/nightowl/collector.toml: line 4, key `tls.certificate`"), "{text}");
        assert!(text.contains("unknown field `certificate`"), "{text}");
        let error = parse("lisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.to_string().contains("key `lisen`"), "{error}");
    }

    #[test]
    fn maintenance_and_coverage_are_validated() {
        let config = parse(
            "[[maintenance]]\nname = \"patch\"\ntenant = \"acme\"\nstart = \"2026-01-01T00:00:00Z\"\nend = \"2026-01-01T02:00:00Z\"\n\
             [coverage.default]\ntimezone = \"UTC\"\nhours = { mon-fri = \"08:00-18:00\" }\n",
        )
        .unwrap();
        assert_eq!(config.maintenance.windows.len(), 1);
        assert_eq!(config.maintenance.windows[0].name, "patch");
        assert!(config.coverage.default.is_some());
        assert!(parse("").unwrap().maintenance.windows.is_empty());

        let error = parse("[[maintenance]]\nname = \"x\"\nfrom = \"22:00\"\nto = \"02:00\"\n").unwrap_err();
        assert_eq!(error.key, "maintenance[0].timezone", "{error}");
        let error =
            parse("[coverage.tenant.acme]\ntimezone = \"Mars/Olympus\"\nhours = { mon = \"08:00-18:00\" }\n")
                .unwrap_err();
        assert_eq!(error.key, "coverage.tenant.acme.timezone", "{error}");
        let error = parse("[[maintenance]]\nname = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(error.to_string().contains("bogus"), "{error}");
    }

    #[test]
    fn sink_errors_name_the_sink_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook.secret"), "s3cret\n").unwrap();
        let parse = |text: &str| Config::parse(text, "collector.toml", dir.path());
        let good = "[[sink]]\nname = \"psa\"\n[sink.webhook]\nurl = \"https://psa.example.net/hook\"\n\
                    secret_file = \"webhook.secret\"\n";
        let config = parse(good).unwrap();
        assert_eq!(config.sinks.len(), 1);
        assert_eq!(config.sinks[0].settings.name, "psa");

        let missing_url = "[[sink]]\nname = \"psa\"\n[sink.webhook]\nsecret_file = \"webhook.secret\"\n";
        let error = parse(missing_url).unwrap_err();
        assert_eq!(error.key, "sink[0].webhook.url", "{error}");
        // The second sink's unknown key names that sink.
        let unknown = format!(
            "{good}[[sink]]\nname = \"other\"\n[sink.webhook]\nurl = \"https://x.example.net/\"\nsecret = \"inline\"\n"
        );
        let error = parse(&unknown).unwrap_err();
        assert_eq!(error.key, "line 10, key `sink[1].webhook.secret`", "{error}");
        assert!(error.message.contains("unknown field `secret`"), "{error}");
        let error = parse(&format!("{good}[[sink]]\nname = \"psa\"\n[sink.webhook]\nurl = \"https://x.example.net/\"\nsecret_file = \"webhook.secret\"\n")).unwrap_err();
        assert_eq!(error.key, "sink[1].name", "{error}");
    }

    /// The first TOML block of docs/sinks.md, as users copy it.
    fn readme_sinks_example() -> String {
        let docs = include_str!("../../../docs/sinks.md");
        let block = docs.split("```toml collector\n").nth(1).expect("a toml block in docs/sinks.md");
        block.split("```").next().unwrap().to_owned()
    }

    #[test]
    fn the_readme_sinks_example_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook.secret"), "0123456789abcdef\n").unwrap();
        std::fs::write(dir.path().join("pagerduty.key"), "R0UT1NGKEY0123456789abcdef012345\n").unwrap();
        let example = readme_sinks_example();
        let config = Config::parse(&example, "collector.toml", dir.path()).unwrap();
        let names: Vec<&str> = config.sinks.iter().map(|sink| sink.settings.name.as_str()).collect();
        assert_eq!(names, ["psa", "pager", "alertmanager"]);
        let psa = &config.sinks[0].settings;
        assert_eq!(psa.filter.tenants.len(), 2);
        assert_eq!(psa.filter.severities.len(), 3);
        assert_eq!(psa.give_up_after, Duration::from_secs(24 * 3600));
        assert_eq!(config.sinks[1].settings.filter.severities.len(), 1);
        // Its secrets are read at startup: without them the example names the key.
        let error = Config::parse(&example, "collector.toml", Path::new("/nonexistent")).unwrap_err();
        assert_eq!(error.key, "sink[0].webhook.secret_file", "{error}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("listen = \"localhost\"", "listen"),
            ("[limits]\nhandshake_timeout = \"soon\"", "limits.handshake_timeout"),
            ("[limits]\nidle_timeout = \"0s\"", "limits.idle_timeout"),
            ("[limits]\nmax_connections = 0", "limits.max_connections"),
            ("[limits]\nmax_message_bytes = 10", "limits.max_message_bytes"),
        ];
        for (text, key) in cases {
            let error = parse(text).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
        }
        // A type error is located by the parser.
        let error = parse("[limits]\nmax_connections = \"many\"").unwrap_err();
        assert!(error.key.contains("limits.max_connections"), "{error}");
    }
}
