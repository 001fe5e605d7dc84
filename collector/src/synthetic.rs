//! The checks the collector raises about an agent itself, not from the agent's reports.
//! Their alert state lives in `check_states` like any other check's. A leaf module:
//! `evaluate`, `queue`, `offline` and `ingest` all import these ids from below.

/// The agent went silent (`crate::offline`).
pub mod offline {
    /// Check id of the offline alert.
    pub const CHECK: &str = "agent";
    /// Rule name of the offline alert.
    pub const RULE: &str = "agent_offline";
}

/// The collector refused the agent's reports (over `[limits]`; `crate::ingest`).
pub mod reports {
    /// Check id of the refused-reports alert. The agent cannot retire it.
    pub const CHECK: &str = "agent:reports";
    /// Rule name of the refused-reports alert.
    pub const RULE: &str = "reports_refused";
}

use std::collections::BTreeMap;

use crate::alert::{self, AlertEvent, Severity, Status};
use crate::identity::AgentIdentity;

/// An alert event of one of these checks: what differs between them; the rest is the
/// same for all (kind `agent`, no runbook or remediation, never flapping).
pub struct Event<'a> {
    pub identity: &'a AgentIdentity,
    pub check: &'static str,
    pub rule: &'static str,
    pub status: Status,
    pub severity: Severity,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    pub started_at: jiff::Timestamp,
    pub labels: BTreeMap<String, String>,
}

impl Event<'_> {
    /// The event, emitted `now` (and resolved `now` when it says resolved).
    pub fn at(self, now: jiff::Timestamp) -> AlertEvent {
        let Event { identity, check, rule, status, severity, summary, value, threshold, started_at, labels } =
            self;
        AlertEvent {
            id: alert::new_event_id(),
            fingerprint: alert::fingerprint(&identity.tenant, &identity.agent, check, rule),
            status,
            severity,
            tenant: identity.tenant.clone(),
            agent: identity.agent.clone(),
            check: check.into(),
            kind: "agent".into(),
            rule: rule.into(),
            summary,
            value,
            threshold,
            started_at,
            resolved_at: (status == Status::Resolved).then_some(now),
            emitted_at: now,
            labels,
            runbook: None,
            remediation: None,
            flapping: false,
        }
    }
}
