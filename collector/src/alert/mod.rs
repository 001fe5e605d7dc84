//! Alert events: the consumers' contract.
//!
//! An [`AlertEvent`] serialises to exactly the JSON object of DESIGN.md ("Alert event"),
//! one object per line on the CLI and webhooks. Field names and meanings are a public
//! contract: add fields, never rename or repurpose them.
//!
//! - `id` is unique per event (UUIDv7: time-ordered); consumers dedupe on it.
//! - `fingerprint` is stable per (tenant, agent, check, rule): it is the dedup/threading
//!   key towards ticketing tools, so a "resolved" event carries the fingerprint of the
//!   "firing" event it closes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Severity towards people: P1 wakes someone, P4 waits for business hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// What an agent-side runbook action did about the alert (filled in by later issues).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    pub action: String,
    pub status: String,
    pub at: jiff::Timestamp,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub id: String,
    pub fingerprint: String,
    pub status: Status,
    pub severity: Severity,
    pub tenant: String,
    pub agent: String,
    pub check: String,
    pub kind: String,
    pub rule: String,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    pub started_at: jiff::Timestamp,
    pub resolved_at: Option<jiff::Timestamp>,
    pub emitted_at: jiff::Timestamp,
    pub labels: BTreeMap<String, String>,
    pub runbook: Option<String>,
    pub remediation: Option<Remediation>,
    /// Present (true) only on the one event that says the check started flapping and
    /// its notifications are paused; absent on every other event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
}

/// Stable hex fingerprint of (tenant, agent, check, rule): the first 16 bytes of a
/// SHA-256 over the NUL-separated fields (NUL cannot occur in any of them: ids are
/// validated and check ids come from the agent's config), as 32 lowercase hex digits.
pub fn fingerprint(tenant: &str, agent: &str, check: &str, rule: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (index, part) in [tenant, agent, check, rule].into_iter().enumerate() {
        if index > 0 {
            context.update(&[0]);
        }
        context.update(part.as_bytes());
    }
    let digest = context.finish();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(32);
    for byte in &digest.as_ref()[..16] {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    hex
}

/// A fresh, unique, time-ordered event id.
pub fn new_event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests;
