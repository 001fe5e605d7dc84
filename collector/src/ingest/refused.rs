//! The `reports_refused` alert: an agent whose reports the collector will not take is
//! as blind as an offline one, and its session alone knows. Fired (once per episode) by
//! the session that refuses a report — too many results (acked, not evaluated) or a
//! message over `limits.max_message_bytes` (the stream ends RESOURCE_EXHAUSTED) — and
//! resolved in the transaction of the next report the collector evaluates. Check
//! `agent:reports`, rule `reports_refused` (`crate::synthetic::reports`); its state is
//! in `check_states` like any other, loaded with the agent's states, so it fires and
//! resolves exactly once across sessions and restarts.

use std::collections::BTreeMap;

use crate::alert::{self, AlertEvent, Status};
use crate::evaluate::{AgentEvaluator, CheckState, Level, StateChange, StateKey, StateUpdate};
use crate::identity::AgentIdentity;
pub use crate::synthetic::reports::{CHECK, RULE};

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refusal {
    /// What the summary says after "reports refused: ".
    pub reason: String,
    /// The refused report's size (bytes or results) and the limit it is over.
    pub value: f64,
    pub threshold: f64,
}

impl Refusal {
    pub fn oversized(bytes: Option<u64>, limit: usize) -> Refusal {
        let reason = match bytes {
            Some(bytes) => format!("over the size limit ({bytes} bytes > {limit})"),
            None => format!("over the size limit (> {limit} bytes)"),
        };
        Refusal { reason, value: bytes.unwrap_or(0) as f64, threshold: limit as f64 }
    }

    pub fn too_many_results(results: usize, limit: usize) -> Refusal {
        Refusal {
            reason: format!("too many results ({results} > {limit})"),
            value: results as f64,
            threshold: limit as f64,
        }
    }
}

/// The event and state change that `refusal` (Some: this report was refused; None: it
/// was evaluated) makes, if it changes the alert: firing when refused and not firing,
/// resolved when evaluated and firing, nothing otherwise.
pub(super) fn transition(
    evaluator: &AgentEvaluator,
    identity: &AgentIdentity,
    labels: &BTreeMap<String, String>,
    refusal: Option<&Refusal>,
    now: jiff::Timestamp,
) -> Option<(AlertEvent, StateUpdate)> {
    let key = StateKey { check: CHECK.into(), rule: RULE.into() };
    let previous = evaluator.state(&key);
    let firing = previous.as_ref().is_some_and(|state| state.emitted.is_firing());
    let fingerprint = alert::fingerprint(&identity.tenant, &identity.agent, CHECK, RULE);
    let (status, change, summary, value, threshold, started_at) = match (refusal, firing) {
        (Some(refusal), false) => {
            let state = CheckState {
                level: Level::Critical,
                emitted: Level::Critical,
                started_at: Some(now),
                ..CheckState::ok(refusal.value)
            };
            let summary = format!("Agent {}: reports refused: {}", identity.agent, refusal.reason);
            (Status::Firing, StateChange::Set(state), summary, refusal.value, refusal.threshold, now)
        }
        (None, true) => {
            let started_at = previous.and_then(|state| state.started_at).unwrap_or(now);
            let summary = format!("Agent {}: reports accepted again", identity.agent);
            // Settled at OK: not kept (a pristine state is the same as none).
            (Status::Resolved, StateChange::Remove, summary, 0.0, 0.0, started_at)
        }
        _ => return None,
    };
    let event = crate::synthetic::Event {
        identity,
        check: CHECK,
        rule: RULE,
        status,
        severity: crate::offline::severity_for(labels),
        summary,
        value,
        threshold,
        started_at,
        labels: labels.clone(),
    }
    .at(now);
    Some((event, StateUpdate { key, fingerprint, change }))
}

/// The size in tonic's refusal of an oversized message ("… found N bytes, the limit
/// is: M bytes"), if it says one.
pub(super) fn refused_bytes(message: &str) -> Option<u64> {
    let after = message.split("found ").nth(1)?;
    after.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests;
