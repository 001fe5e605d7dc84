//! Evaluation: measurements in, alert transitions out.
//!
//! A [`Rule`] reads one metric of the results of one check kind and maps its value to a
//! [`Level`] with warn / crit thresholds and a separate `clear` threshold (hysteresis).
//! Each (agent, check, rule) has a [`CheckState`]; [`AgentEvaluator::evaluate`] turns one
//! report into the state updates and alert events it causes *without* mutating anything,
//! so the caller can make them durable first and [`AgentEvaluator::apply`] them after.
//! That split is what lets a crash between "evaluated" and "durable" lose nothing and
//! emit nothing twice: the report is not acked, the agent replays it, and evaluation runs
//! again from the last durable state.
//!
//! Transitions (for an "above" rule; "below" mirrors it):
//! - OK → WARNING/CRITICAL when value ≥ warn/crit: a `firing` event;
//! - WARNING ↔ CRITICAL: a `firing` event with the new severity, same fingerprint and
//!   `started_at`;
//! - firing → OK only when value < clear: a `resolved` event. Between clear and warn a
//!   firing check stays firing (at WARNING), so a value hovering around the threshold
//!   does not page anyone twice.

mod rules;

use std::collections::HashMap;
use std::sync::Arc;

use nightowl_proto::{CheckResult, ProbeStatus};
use serde::{Deserialize, Serialize};

use crate::alert::{self, AlertEvent, Status};
use crate::pki::AgentIdentity;

pub use rules::{Direction, Rule, RuleSet};

/// A check's alert level under one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "ok" => Some(Level::Ok),
            "warning" => Some(Level::Warning),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    pub fn is_firing(self) -> bool {
        self != Level::Ok
    }
}

/// What the collector remembers per (agent, check, rule); persisted with every change.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckState {
    pub level: Level,
    /// When the current firing episode started (None while OK).
    pub started_at: Option<jiff::Timestamp>,
    /// The last value evaluated.
    pub value: f64,
}

impl CheckState {
    pub fn ok(value: f64) -> Self {
        Self { level: Level::Ok, started_at: None, value }
    }
}

/// Identifies a state within one agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub check: String,
    pub rule: String,
}

/// A state that changed, with the fingerprint it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    pub key: StateKey,
    pub fingerprint: String,
    pub state: CheckState,
}

/// What one report causes.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub events: Vec<AlertEvent>,
    pub updates: Vec<StateUpdate>,
    /// Metrics that were present but unusable (NaN, infinite): counted, never evaluated.
    pub invalid_values: u64,
}

/// Evaluation state of one agent. Owned by the session that holds the agent, so no lock.
#[derive(Debug)]
pub struct AgentEvaluator {
    identity: AgentIdentity,
    rules: Arc<RuleSet>,
    states: HashMap<StateKey, CheckState>,
}

impl AgentEvaluator {
    pub fn new(identity: AgentIdentity, rules: Arc<RuleSet>, states: HashMap<StateKey, CheckState>) -> Self {
        Self { identity, rules, states }
    }

    pub fn state(&self, key: &StateKey) -> Option<&CheckState> {
        self.states.get(key)
    }

    /// Evaluates one report's results. `at` is when the sample was taken (already
    /// clamped to a plausible range by the caller); `now` is the emission time.
    pub fn evaluate(&self, results: &[CheckResult], at: jiff::Timestamp, now: jiff::Timestamp) -> Evaluation {
        let mut evaluation = Evaluation::default();
        for result in results {
            // A probe that could not sample says nothing about thresholds; UNKNOWN
            // handling (staleness, no-data alerts) is the state machine's next step.
            if result.status() == ProbeStatus::Unknown {
                continue;
            }
            for rule in self.rules.matching(&result.kind) {
                let Some(&value) = result.metrics.get(&rule.metric) else {
                    continue;
                };
                if !value.is_finite() {
                    evaluation.invalid_values += 1;
                    continue;
                }
                let key = StateKey { check: result.check_id.clone(), rule: rule.name.clone() };
                let previous = self.states.get(&key).cloned().unwrap_or(CheckState::ok(value));
                let level = rule.next_level(previous.level, value);
                let fingerprint = alert::fingerprint(
                    &self.identity.tenant,
                    &self.identity.agent,
                    &result.check_id,
                    &rule.name,
                );
                let state = CheckState {
                    level,
                    started_at: match (previous.level.is_firing(), level.is_firing()) {
                        (false, true) => Some(at),
                        (true, true) => previous.started_at.or(Some(at)),
                        (_, false) => None,
                    },
                    value,
                };
                if level != previous.level {
                    let event = self.event(rule, result, &fingerprint, &previous, &state, at, now);
                    evaluation.events.push(event);
                }
                // Persist level changes; plain value drift of an OK check is not worth
                // a write per report.
                if level != previous.level || !self.states.contains_key(&key) {
                    evaluation.updates.push(StateUpdate { key, fingerprint, state });
                }
            }
        }
        evaluation
    }

    /// Makes the evaluation's updates the current state (after they are durable).
    pub fn apply(&mut self, updates: Vec<StateUpdate>) {
        for update in updates {
            self.states.insert(update.key, update.state);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        rule: &Rule,
        result: &CheckResult,
        fingerprint: &str,
        previous: &CheckState,
        state: &CheckState,
        at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> AlertEvent {
        let subject =
            result.check_id.split_once(':').map_or(result.check_id.as_str(), |(_, subject)| subject);
        let (status, severity, threshold, started_at, resolved_at) = if state.level.is_firing() {
            let severity = rule.severity(state.level);
            (Status::Firing, severity, rule.threshold(state.level), state.started_at.unwrap_or(at), None)
        } else {
            // A resolved event carries the severity it fired with, so consumers can
            // route the close exactly like the open.
            let severity = rule.severity(previous.level);
            (Status::Resolved, severity, rule.clear, previous.started_at.unwrap_or(at), Some(at))
        };
        AlertEvent {
            id: alert::new_event_id(),
            fingerprint: fingerprint.to_owned(),
            status,
            severity,
            tenant: self.identity.tenant.clone(),
            agent: self.identity.agent.clone(),
            check: result.check_id.clone(),
            kind: result.kind.clone(),
            rule: rule.name.clone(),
            summary: rule.summary(subject, state.value, state.level),
            value: state.value,
            threshold,
            started_at,
            resolved_at,
            emitted_at: now,
            labels: Default::default(),
            runbook: rule.runbook.clone(),
            remediation: None,
        }
    }
}

#[cfg(test)]
mod tests;
