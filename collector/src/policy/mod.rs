//! Central policy: check definitions the collector pushes to agents by tenant and label.
//!
//! # File
//!
//! `policies = "policies.toml"` in the collector config (relative to the config file;
//! optional; watched and reloaded like the rules file, an invalid edit keeps the policies
//! in force):
//!
//! ```toml
//! [[policy]]
//! name = "acme-servers"
//! tenant = "acme"                 # optional; absent = every tenant
//! labels = { role = "server" }    # optional; all must match the agent's Hello labels
//! [[policy.service]]
//! name = "nginx"
//! process = "nginx"
//! [[policy.latency]]
//! name = "gateway"
//! method = "tcp"
//! target = "10.0.0.1:443"
//! [[policy.backup]]
//! name = "db"
//! path = "/backups/db-*.tar.zst"
//! max_age = "26h"
//! ```
//!
//! The check tables are the agent's own `[[service]]`, `[[latency]]` and `[[backup]]`
//! entries, verbatim: the agent parses them with the structs and validation of its local
//! config. The collector checks what it can without those structs: the envelope
//! (`name`, `tenant`, `labels`; nothing else), families, a valid and unique `name` per
//! family within a policy, and the security rule below.
//!
//! # Nothing that executes
//!
//! The agent never runs a program its LOCAL config does not name. A policy may therefore
//! carry only checks that execute nothing: services, latency probes, and backups whose
//! sources only read files (`path`, `log`). `[[policy.command]]`, a `command` key
//! anywhere, and a backup's restic / borg keys are refused here at load — and again by
//! the agent, which does not trust the collector on this.
//!
//! # Effective policy
//!
//! For an agent (tenant from its certificate, labels from its Hello), the effective
//! policy is every matching policy's checks, concatenated in file order. When two
//! matching policies define the same check (family and name), the first in the file wins
//! and the clash is logged. It goes to the agent as `Policy { version, checks_toml,
//! policies }`: `checks_toml` is a TOML document of `[[service]]`, `[[latency]]` and
//! `[[backup]]` arrays, `version` the first 8 bytes of its SHA-256 (0: no checks), and
//! `policies` the names of the matching policies. The session sends it after the Ack
//! that answers Hello (always, so an emptied policy removes its checks) and again when a
//! reload changes it.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

use crate::config_error::KeyError;

/// Families a policy may carry, in the order they are sent.
pub const FAMILIES: [&str; 3] = ["service", "latency", "backup"];

/// Keys of a policy `[[backup]]` entry: sources that only read files and their tuning.
/// Every other backup key (restic, borg, `command`) makes the agent start a program.
/// The agent applies the same allow-list.
const BACKUP_KEYS: &[&str] = &[
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

/// Keys of a `[[policy]]` besides the families.
const ENVELOPE_KEYS: &[&str] = &["name", "tenant", "labels"];

/// A larger policy file is refused: each agent's policy must fit in one message.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// A problem in the policy file, naming the file, the policy and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct PolicyError {
    pub file: String,
    /// `policy "acme-servers".service[1].command`, or a location for syntax errors.
    pub key: String,
    pub message: String,
}

/// One validated `[[policy]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub tenant: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Per family (in [`FAMILIES`] order), the check tables as written.
    checks: Vec<(&'static str, Vec<Table>)>,
}

impl Policy {
    pub fn matches(&self, tenant: &str, labels: &BTreeMap<String, String>) -> bool {
        self.tenant.as_deref().is_none_or(|wanted| wanted == tenant)
            && self.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
    }
}

/// Every policy of the file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

/// What one agent gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effective {
    pub version: u64,
    pub checks_toml: String,
    /// The matching policies, in file order.
    pub policies: Vec<String>,
    /// How many checks `checks_toml` holds.
    pub checks: usize,
}

impl Effective {
    pub fn message(&self) -> nightowl_proto::Policy {
        nightowl_proto::Policy {
            version: self.version,
            checks_toml: self.checks_toml.clone(),
            policies: self.policies.clone(),
        }
    }
}

impl PolicySet {
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Reads and validates the policy file.
    pub fn load(path: &Path) -> Result<PolicySet, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError {
            file: file.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {error}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parses policy TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<PolicySet, PolicyError> {
        let error =
            |key: &str, message: String| PolicyError { file: file.to_owned(), key: key.to_owned(), message };
        if text.len() > MAX_FILE_BYTES {
            return Err(error("(file)", format!("{} bytes; at most {MAX_FILE_BYTES}", text.len())));
        }
        let document: Table = toml::from_str(text).map_err(|parse| {
            let line = parse.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            error(
                &line.map_or_else(|| "(document)".to_owned(), |line| format!("line {line}")),
                parse.message().to_owned(),
            )
        })?;
        let mut policies: Vec<Policy> = Vec::new();
        for (key, value) in document {
            if key != "policy" {
                return Err(error(&key, "unknown key: the file holds [[policy]] entries only".into()));
            }
            let Value::Array(entries) = value else {
                return Err(error("policy", "write each policy as a [[policy]] table".into()));
            };
            for (index, entry) in entries.into_iter().enumerate() {
                let policy =
                    parse_policy(index, entry).map_err(|invalid| error(&invalid.key, invalid.message))?;
                if policies.iter().any(|known| known.name == policy.name) {
                    return Err(error(
                        &format!("policy {:?}", policy.name),
                        "name used twice: policy names must be unique".into(),
                    ));
                }
                policies.push(policy);
            }
        }
        Ok(PolicySet { policies })
    }

    /// The policy for an agent of `tenant` with `labels`. Name clashes between matching
    /// policies: the first in file order wins (logged).
    pub fn effective(&self, tenant: &str, labels: &BTreeMap<String, String>) -> Effective {
        let mut names = Vec::new();
        let mut families: Vec<(&'static str, Vec<Chosen<'_>>)> =
            FAMILIES.iter().map(|family| (*family, Vec::new())).collect();
        for policy in self.policies.iter().filter(|policy| policy.matches(tenant, labels)) {
            names.push(policy.name.clone());
            for (family, tables) in &policy.checks {
                let Some((_, chosen)) = families.iter_mut().find(|(known, _)| known == family) else {
                    continue;
                };
                for table in tables {
                    let name = check_name(table);
                    if let Some(first) = chosen.iter().find(|known| known.name == name) {
                        tracing::warn!(
                            tenant,
                            check = %format!("{family}:{name}"),
                            kept = first.policy,
                            dropped = %policy.name,
                            "two matching policies define the same check; the first in the file wins"
                        );
                        continue;
                    }
                    chosen.push(Chosen { name, policy: &policy.name, table });
                }
            }
        }
        let mut document = Table::new();
        let mut checks = 0;
        for (family, chosen) in families {
            if chosen.is_empty() {
                continue;
            }
            checks += chosen.len();
            let tables = chosen.into_iter().map(|chosen| Value::Table(chosen.table.clone())).collect();
            document.insert(family.to_owned(), Value::Array(tables));
        }
        if document.is_empty() {
            return Effective { version: 0, checks_toml: String::new(), policies: names, checks: 0 };
        }
        // A table of arrays of tables of plain values always serialises.
        let checks_toml = toml::to_string(&document).unwrap_or_default();
        Effective { version: version_of(&checks_toml), checks_toml, policies: names, checks }
    }
}

/// A check picked for an effective policy, and the policy that defined it.
struct Chosen<'a> {
    name: &'a str,
    policy: &'a str,
    table: &'a Table,
}

/// First 8 bytes (big-endian) of the SHA-256 of `checks_toml`; never 0, which means "no
/// policy".
pub fn version_of(checks_toml: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, checks_toml.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first).max(1)
}

/// The `name` of a validated check table.
fn check_name(table: &Table) -> &str {
    table.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Validates one `[[policy]]`.
fn parse_policy(index: usize, entry: Value) -> Result<Policy, KeyError> {
    let Value::Table(mut table) = entry else {
        return Err(KeyError::new(format!("policy[{index}]"), "write each policy as a [[policy]] table"));
    };
    let name = match table.remove("name") {
        Some(Value::String(name)) if valid_policy_name(&name) => name,
        Some(Value::String(name)) => {
            return Err(KeyError::new(
                format!("policy[{index}].name"),
                format!("{name:?}: use 1-64 characters of letters, digits, '.', '_', '-'"),
            ));
        }
        Some(_) => return Err(KeyError::new(format!("policy[{index}].name"), "must be a string")),
        None => {
            return Err(KeyError::new(
                format!("policy[{index}]"),
                "name is missing: every policy needs a unique name",
            ));
        }
    };
    let here = format!("policy {name:?}");
    let at = |key: &str| format!("{here}.{key}");
    let tenant = match table.remove("tenant") {
        None => None,
        Some(Value::String(tenant)) => {
            crate::identity::validate_id("tenant", &tenant)
                .map_err(|error| KeyError::new(at("tenant"), error.to_string()))?;
            Some(tenant)
        }
        Some(_) => return Err(KeyError::new(at("tenant"), "must be a string (a tenant id)")),
    };
    let labels = match table.remove("labels") {
        None => BTreeMap::new(),
        Some(Value::Table(labels)) => {
            let mut parsed = BTreeMap::new();
            for (key, value) in labels {
                let Value::String(value) = value else {
                    return Err(KeyError::new(at(&format!("labels.{key}")), "must be a string"));
                };
                parsed.insert(key, value);
            }
            parsed
        }
        Some(_) => return Err(KeyError::new(at("labels"), "must be a table, e.g. { role = \"server\" }")),
    };
    if let Some(key) = table.keys().find(|key| key.as_str() == "command") {
        return Err(KeyError::new(
            at(key),
            "[[policy.command]] is not allowed: a policy may only carry checks that execute \
             nothing (service, latency, backup with path/log); commands run only from the \
             agent's local config",
        ));
    }
    if let Some(key) = table.keys().find(|key| !FAMILIES.contains(&key.as_str())) {
        return Err(KeyError::new(
            at(key),
            format!(
                "unknown key; a policy has {} and the check families {}",
                ENVELOPE_KEYS.join(", "),
                FAMILIES.join(", ")
            ),
        ));
    }
    let mut checks = Vec::new();
    for family in FAMILIES {
        let Some(value) = table.remove(family) else { continue };
        let Value::Array(entries) = value else {
            return Err(KeyError::new(at(family), format!("write the checks as [[policy.{family}]] tables")));
        };
        let mut tables: Vec<Table> = Vec::with_capacity(entries.len());
        for (position, entry) in entries.into_iter().enumerate() {
            let key = at(&format!("{family}[{position}]"));
            let Value::Table(check) = entry else {
                return Err(KeyError::new(key, format!("write the checks as [[policy.{family}]] tables")));
            };
            validate_check(family, &check).map_err(|(field, message)| match field {
                Some(field) => KeyError::new(format!("{key}.{field}"), message),
                None => KeyError::new(key.clone(), message),
            })?;
            let name = check_name(&check);
            if tables.iter().any(|known| check_name(known) == name) {
                return Err(KeyError::new(
                    key,
                    format!("name {name:?} is used twice in [[policy.{family}]]"),
                ));
            }
            tables.push(check);
        }
        checks.push((family, tables));
    }
    Ok(Policy { name, tenant, labels, checks })
}

/// What the collector can check of a check table without the agent's structs; the error
/// names the offending key when there is one.
fn validate_check(family: &str, check: &Table) -> Result<(), (Option<String>, String)> {
    match check.get("name") {
        Some(Value::String(name)) if valid_check_name(name) => {}
        Some(Value::String(name)) => {
            return Err((
                Some("name".into()),
                format!("{name:?}: use 1-64 characters of letters, digits, '.', '_', '-', '/', '@'"),
            ));
        }
        Some(_) => return Err((Some("name".into()), "must be a string".into())),
        None => return Err((None, "name is missing".into())),
    }
    if check.contains_key("command") {
        return Err((Some("command".into()), "runs a program: not allowed in a policy".into()));
    }
    if family == "backup"
        && let Some(key) = check.keys().find(|key| !BACKUP_KEYS.contains(&key.as_str()))
    {
        return Err((
            Some(key.clone()),
            "not allowed in a policy: a policy backup may only read files (path, log); \
             restic, borg and command run programs"
                .into(),
        ));
    }
    Ok(())
}

/// The agent's check-name grammar (`probes::validate_name`): it becomes a check id.
fn valid_check_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '@'))
}

fn valid_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests;
