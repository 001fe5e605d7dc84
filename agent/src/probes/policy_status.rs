//! The `agent:policy` unit: the agent's central-policy state as a check.
//!
//! Check id `agent:policy`, kind `agent`, sampled on the agent's interval like any unit
//! (so the collector's `no_data` treats it like any check) and at once when the state
//! changes: OK with metrics `version` (lossy as a float; the message has it exactly),
//! `checks` (policy checks running) and `conflicts` (policy checks shadowed by local
//! ones), or UNKNOWN with the latest refusal.
//!
//! What the state is, and when it changes, is `crate::policy`'s business; this probe only
//! reads it from a watch channel, so `probes` needs nothing from `policy`.

use std::collections::BTreeMap;
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus};
use tokio::sync::watch;

use super::{Probe, ProbeSpec, ProbeUnit};

/// Check id and kind of the policy status result.
pub const CHECK_ID: &str = "agent:policy";
pub const KIND: &str = "agent";

/// Longest message, in bytes (a refusal quotes the policy's TOML error).
const MAX_MESSAGE_BYTES: usize = 1024;

/// What `agent:policy` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyStatus {
    pub version: u64,
    pub names: Vec<String>,
    pub checks: usize,
    pub conflicts: usize,
    /// The latest refusal since the policy in force was accepted (its message).
    pub refused: Option<String>,
}

impl PolicyStatus {
    pub fn result(&self) -> CheckResult {
        let running = if self.version == 0 {
            "no central policy".to_owned()
        } else {
            format!(
                "policy {:016x} ({}): {} checks, {} shadowed by local checks",
                self.version,
                self.names.join(", "),
                self.checks,
                self.conflicts
            )
        };
        match &self.refused {
            Some(refused) => CheckResult {
                check_id: CHECK_ID.into(),
                kind: KIND.into(),
                status: ProbeStatus::Unknown as i32,
                metrics: BTreeMap::new(),
                message: truncate(&format!("{refused}; still running: {running}")),
                interval_ms: 0,
            },
            None => CheckResult {
                check_id: CHECK_ID.into(),
                kind: KIND.into(),
                status: ProbeStatus::Ok as i32,
                metrics: BTreeMap::from([
                    ("version".to_owned(), self.version as f64),
                    ("checks".to_owned(), self.checks as f64),
                    ("conflicts".to_owned(), self.conflicts as f64),
                ]),
                message: truncate(&running),
                interval_ms: 0,
            },
        }
    }
}

fn truncate(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_MESSAGE_BYTES)].to_owned()
}

/// The status unit's config: a handle on the current [`PolicyStatus`]. Two handles on
/// the same channel are equal, so a reload never restarts the unit.
#[derive(Debug, Clone)]
pub struct StatusWatch(watch::Receiver<PolicyStatus>);

impl StatusWatch {
    pub fn new(receiver: watch::Receiver<PolicyStatus>) -> Self {
        Self(receiver)
    }

    /// The `agent:policy` unit, sampled every `interval` (so the collector's staleness
    /// detection sees it like any check) and at once on a change.
    pub fn unit(&self, interval: Duration) -> ProbeUnit {
        ProbeUnit { key: CHECK_ID.into(), interval, spec: ProbeSpec::Policy(self.clone()) }
    }

    pub fn probe(&self) -> StatusProbe {
        StatusProbe { status: self.0.clone() }
    }
}

impl PartialEq for StatusWatch {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

/// Reports the policy status; wakes when it changes.
pub struct StatusProbe {
    status: watch::Receiver<PolicyStatus>,
}

impl Probe for StatusProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        vec![self.status.borrow_and_update().result()]
    }

    async fn changed(&mut self) {
        // `changed` is cancel-safe. The sender lives as long as the agent runs; if it is
        // gone there is nothing more to wait for.
        if self.status.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests;
