//! Central policy: checks the collector asks this agent to run, merged with the local
//! config's checks.
//!
//! # What a policy may carry
//!
//! The agent never runs a program that its LOCAL config did not name (DESIGN "Identity
//! and trust"). So a policy may only carry checks that execute nothing: `[[service]]`
//! (process, port, systemd, windows), `[[latency]]` (icmp, tcp, http, dns) and
//! `[[backup]]` with `path` and `log` sources. `[[command]]` and a backup's restic, borg
//! or `command` keys are refused. The collector refuses such policies too, but the agent
//! does not trust it to: [`Policy::accept`] checks every message on its own.
//!
//! # Format
//!
//! `Policy.checks_toml` is a TOML document in the local config's own format, holding only
//! `[[service]]`, `[[latency]]` and `[[backup]]` arrays. It goes through the same structs
//! and the same validation (`config::ListedChecks`) as the local config, plus the
//! restrictions above, so a check means exactly the same wherever it is written.
//!
//! # Merge
//!
//! Local units first, then the policy's. A policy check whose unit key (`service:nginx`)
//! is also a local check is dropped: the LOCAL check wins, and the conflict is logged
//! (`warn`, with the key and the policy names). A local config reload merges again with
//! the current policy; a new policy merges with the current local config.
//!
//! # Refusal
//!
//! A policy that does not pass is refused as a whole: logged, reported as check
//! `agent:policy` (UNKNOWN, with the reason), and the checks running before stay — the
//! previous policy included.
//!
//! # Persistence
//!
//! The last accepted policy is kept in `<state_dir>/policy.toml` (written to a temporary
//! file, fsync'd, renamed), and loaded at startup through [`Policy::accept`] again, so
//! policy checks keep running when the agent restarts while the collector is unreachable.
//!
//! # Status
//!
//! The agent reports its policy state as check `agent:policy`: the main loop publishes a
//! [`PolicyStatus`](crate::probes::policy_status::PolicyStatus) on a watch channel and the unit in `probes/policy_status.rs` reports
//! it (OK with what runs, or UNKNOWN with the refusal).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Document, ListedChecks};
use crate::probes::ProbeUnit;
use crate::probes::backup::BackupConfig;
use crate::probes::latency::LatencyConfig;
use crate::probes::service::ServiceConfig;

/// The accepted policy, in the agent's state directory.
pub const STATE_FILE: &str = "policy.toml";

/// A larger `checks_toml` is refused (the collector caps its policy file well below).
const MAX_CHECKS_BYTES: usize = 512 * 1024;
const MAX_POLICY_NAMES: usize = 256;

/// Keys of a `[[backup]]` entry a policy may set: the sources that only read files
/// (`path`, `log`) and their tuning. Every other key (restic, borg, `command`) makes the
/// agent start a program. An allow-list, so a key added to backups later is refused in
/// policies until someone decides it is safe.
const POLICY_BACKUP_KEYS: &[&str] = &[
    "name",
    "interval",
    "max_age",
    "timeout",
    "path",
    "settle",
    "shrink_tolerance_pct",
    "log",
    "success",
    "failure",
];

/// The families a policy may carry, as deserialised.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyChecks {
    #[serde(default)]
    service: Vec<ServiceConfig>,
    #[serde(default)]
    latency: Vec<LatencyConfig>,
    #[serde(default)]
    backup: Vec<BackupConfig>,
}

/// A policy the agent accepted (or the empty one: version 0, no checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub version: u64,
    /// The collector-side policies it was made of.
    pub names: Vec<String>,
    pub checks_toml: String,
}

/// Why a policy was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy {version:016x} refused: {reason}")]
pub struct Refused {
    pub version: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a saved policy: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {refused}")]
    Refused { path: PathBuf, refused: Refused },
}

/// The file written to `<state_dir>/policy.toml`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Persisted {
    /// Hex: TOML integers are signed 64-bit.
    version: String,
    policies: Vec<String>,
    checks_toml: String,
}

impl Policy {
    /// Checks a Policy message: only families that execute nothing, the same validation
    /// as the local config. `interval` is the local `[agent] interval` (the default of
    /// checks that set none).
    pub fn accept(message: &nightowl_proto::Policy, interval: Duration) -> Result<Policy, Refused> {
        let policy = Policy {
            version: message.version,
            names: message.policies.clone(),
            checks_toml: message.checks_toml.clone(),
        };
        let refuse = |reason: String| Refused { version: message.version, reason };
        if policy.names.len() > MAX_POLICY_NAMES {
            return Err(refuse(format!("names {} policies; at most {MAX_POLICY_NAMES}", policy.names.len())));
        }
        policy.units(interval).map_err(refuse)?;
        Ok(policy)
    }

    /// The policy's checks as units (validated again: cheap, and the default interval
    /// may have changed with a local reload).
    pub fn units(&self, interval: Duration) -> Result<Vec<ProbeUnit>, String> {
        let text = self.checks_toml.as_str();
        if text.len() > MAX_CHECKS_BYTES {
            return Err(format!("checks_toml is {} bytes; at most {MAX_CHECKS_BYTES}", text.len()));
        }
        // "line 4, key `service[0].bogus`: unknown field …": the position in checks_toml.
        let located = |error: ConfigError| format!("{}: {}", error.position(), error.message);
        let document = Document::parse(text, "checks_toml").map_err(located)?;
        let table: toml::Table = document.deserialize().map_err(located)?;
        for (family, value) in &table {
            match family.as_str() {
                "service" | "latency" => {}
                "backup" => check_backup_keys(value)?,
                "command" => {
                    return Err("[[command]] is not allowed in a policy: the agent runs programs only \
                                from its local config"
                        .into());
                }
                other => {
                    return Err(format!(
                        "[{other}] is not allowed in a policy: only [[service]], [[latency]] and [[backup]]"
                    ));
                }
            }
        }
        let raw: RawPolicyChecks = document.deserialize().map_err(located)?;
        // The key allow-list above already refused these; checked again on the typed
        // struct so no later edit of either can let a program through.
        for (index, backup) in raw.backup.iter().enumerate() {
            if let Some(key) = backup.program_keys().first() {
                return Err(format!("backup[{index}].{key}: runs a program; not allowed in a policy"));
            }
        }
        // Only these families; any other (commands, and every family added later) stays
        // empty: a policy never carries what executes, and a new family is refused
        // until someone decides it does not.
        let listed = ListedChecks {
            service: raw.service,
            latency: raw.latency,
            backup: raw.backup,
            ..ListedChecks::default()
        };
        listed.into_units(interval).map_err(|error| error.to_string())
    }

    /// True when `message` is this policy (same version and text): nothing to do.
    pub fn is(&self, message: &nightowl_proto::Policy) -> bool {
        self.version == message.version
            && self.checks_toml == message.checks_toml
            && self.names == message.policies
    }

    fn message(&self) -> nightowl_proto::Policy {
        nightowl_proto::Policy {
            version: self.version,
            checks_toml: self.checks_toml.clone(),
            policies: self.names.clone(),
        }
    }

    /// Writes the policy to `<state_dir>/policy.toml`: temporary file, fsync, rename,
    /// fsync of the directory. Blocking.
    pub fn save(&self, state_dir: &Path) -> Result<(), PersistError> {
        let path = state_dir.join(STATE_FILE);
        let temporary = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PersistError::Io { path, source }
        };
        let persisted = Persisted {
            version: format!("{:016x}", self.version),
            policies: self.names.clone(),
            checks_toml: self.checks_toml.clone(),
        };
        let text = toml::to_string(&persisted)
            .map_err(|error| PersistError::Corrupt { path: path.clone(), reason: error.to_string() })?;
        let mut file = std::fs::File::create(&temporary).map_err(io(&temporary))?;
        file.write_all(b"# The central policy this agent last accepted from the collector (written by\n# nightowl-agent; loaded at startup). Do not edit: put local checks in the config.\n")
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io(&path))?;
        #[cfg(unix)]
        std::fs::File::open(state_dir).and_then(|directory| directory.sync_all()).map_err(io(state_dir))?;
        Ok(())
    }

    /// The policy saved in `state_dir`, accepted again as if the collector had just sent
    /// it (the file is not trusted either); None when there is none.
    pub fn load(state_dir: &Path, interval: Duration) -> Result<Option<Policy>, PersistError> {
        let path = state_dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(PersistError::Io { path, source }),
        };
        let corrupt = |reason: String| PersistError::Corrupt { path: path.clone(), reason };
        let persisted: Persisted = toml::from_str(&text).map_err(|error| corrupt(error.to_string()))?;
        let version = u64::from_str_radix(&persisted.version, 16)
            .map_err(|error| corrupt(format!("version {:?}: {error}", persisted.version)))?;
        let saved = Policy { version, names: persisted.policies, checks_toml: persisted.checks_toml };
        Policy::accept(&saved.message(), interval)
            .map(Some)
            .map_err(|refused| PersistError::Refused { path: path.clone(), refused })
    }
}

/// A policy's `[[backup]]` entries may only set [`POLICY_BACKUP_KEYS`].
fn check_backup_keys(value: &toml::Value) -> Result<(), String> {
    let Some(entries) = value.as_array() else {
        return Err("backup: write it as [[backup]] entries".into());
    };
    for (index, entry) in entries.iter().enumerate() {
        let Some(table) = entry.as_table() else {
            return Err(format!("backup[{index}]: not a table"));
        };
        if let Some(key) = table.keys().find(|key| !POLICY_BACKUP_KEYS.contains(&key.as_str())) {
            return Err(format!(
                "backup[{index}].{key}: not allowed in a policy (a policy backup may only read files: \
                 path, log; restic, borg and command run programs)"
            ));
        }
    }
    Ok(())
}

/// The merged unit list and what the policy contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub units: Vec<ProbeUnit>,
    /// Policy units running (keys).
    pub added: Vec<String>,
    /// Policy units shadowed by a local unit of the same key (the local one runs).
    pub conflicts: Vec<String>,
}

/// Local units, then the policy's units whose key no local unit has. Each conflict is
/// logged with its key and the policy names.
pub fn merge(local: &[ProbeUnit], policy: &Policy, policy_units: Vec<ProbeUnit>) -> Merged {
    let mut units = local.to_vec();
    let (mut added, mut conflicts) = (Vec::new(), Vec::new());
    for unit in policy_units {
        if local.iter().any(|known| known.key == unit.key) {
            tracing::warn!(
                check = %unit.key,
                policy = %policy.names.join(","),
                version = %format!("{:016x}", policy.version),
                "a policy check has the name of a local check; the local check wins"
            );
            conflicts.push(unit.key);
        } else {
            added.push(unit.key.clone());
            units.push(unit);
        }
    }
    Merged { units, added, conflicts }
}

#[cfg(test)]
mod tests;
