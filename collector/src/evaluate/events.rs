//! Building the alert events an evaluation emits: the text, the fields, the fingerprint's
//! context, for a transition and for a retired check.

use nightowl_proto::CheckResult;

use super::AgentEvaluator;
use super::machine::Transition;
use super::rules::Rule;
use super::state::{CheckState, StateKey};
use crate::alert::{self, AlertEvent, Status};

impl AgentEvaluator {
    /// The `resolved` event for a firing check the agent retired.
    pub(super) fn retired_event(
        &mut self,
        kind: &str,
        key: &StateKey,
        fingerprint: &str,
        state: &CheckState,
        at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> AlertEvent {
        // The rule as it applies to this check (overrides included), if it still exists.
        let rule = self.rules_for(kind, &key.check).rules.iter().find(|rule| rule.name == key.rule).cloned();
        let level = state.emitted;
        AlertEvent {
            id: alert::new_event_id(),
            fingerprint: fingerprint.to_owned(),
            status: Status::Resolved,
            severity: rule.as_ref().map_or(crate::alert::Severity::P3, |rule| rule.severity(level)),
            tenant: self.identity.tenant.clone(),
            agent: self.identity.agent.clone(),
            check: key.check.clone(),
            kind: kind.to_owned(),
            rule: key.rule.clone(),
            summary: format!(
                "{} was removed from the agent's configuration; its alert is resolved",
                key.check
            ),
            value: state.value,
            threshold: rule.as_ref().map_or(0.0, |rule| rule.threshold(level)),
            started_at: state.started_at.unwrap_or(at),
            resolved_at: Some(at),
            emitted_at: now,
            labels: self.labels.clone(),
            runbook: rule.and_then(|rule| rule.runbook.clone()),
            remediation: None,
            flapping: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn event(
        &self,
        rule: &Rule,
        result: &CheckResult,
        fingerprint: &str,
        previous: &CheckState,
        state: &CheckState,
        transition: Transition,
        at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> AlertEvent {
        let subject =
            result.check_id.split_once(':').map_or(result.check_id.as_str(), |(_, subject)| subject);
        let (status, level) = match transition {
            Transition::Fire(level) | Transition::Flapping(level) if level.is_firing() => {
                (Status::Firing, level)
            }
            Transition::Flapping(_) => (Status::Resolved, previous.emitted),
            Transition::Fire(level) => (Status::Firing, level),
            Transition::Resolve(level) => (Status::Resolved, level),
        };
        let threshold = if status == Status::Firing { rule.threshold(level) } else { rule.clear };
        let values = [
            ("subject", subject.to_owned()),
            ("check", result.check_id.clone()),
            ("metric", rule.metric.clone()),
            ("value", format_number(state.value)),
            ("value_duration", format_duration(state.value)),
            ("threshold", format_number(threshold)),
            ("clear", format_number(rule.clear)),
            ("level", level.as_str().to_owned()),
            (
                "message",
                if result.message.is_empty() { "no details".to_owned() } else { result.message.clone() },
            ),
        ];
        let mut summary = if status == Status::Firing {
            rule.summary.render(&values)
        } else {
            rule.resolved.render(&values)
        };
        let flapping = matches!(transition, Transition::Flapping(_));
        if flapping {
            summary = format!(
                "{summary} — flapping ({} changes within {}); notifications paused until it settles",
                state.changes.len(),
                humantime::format_duration(self.rules.flapping.window)
            );
        }
        AlertEvent {
            id: alert::new_event_id(),
            fingerprint: fingerprint.to_owned(),
            status,
            severity: rule.severity(level),
            tenant: self.identity.tenant.clone(),
            agent: self.identity.agent.clone(),
            check: result.check_id.clone(),
            kind: result.kind.clone(),
            rule: rule.name.clone(),
            summary,
            value: state.value,
            threshold,
            started_at: state.started_at.or(previous.started_at).unwrap_or(at),
            resolved_at: (status == Status::Resolved).then_some(at),
            emitted_at: now,
            labels: self.labels.clone(),
            runbook: rule.runbook.clone(),
            remediation: None,
            flapping,
        }
    }
}

/// One decimal, without a trailing ".0" ("96.2", "95").
pub(super) fn format_number(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}") } else { format!("{rounded:.1}") }
}

/// Seconds as "3h 20m" (minutes precision; "0m" for under a minute).
pub(super) fn format_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return format_number(seconds);
    }
    let minutes = (seconds / 60.0).round() as u64;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}
