//! Evaluation: measurements in, alert transitions out.
//!
//! A [`Rule`] reads one metric of the results of matching checks and maps its value to a
//! [`Level`] with warn / crit thresholds and a separate `clear` threshold (hysteresis).
//! Each (agent, check, rule) has a [`CheckState`]; [`AgentEvaluator::evaluate`] turns one
//! report into the state updates and alert events it causes *without* mutating
//! anything, so the caller can make them durable first and [`AgentEvaluator::apply`] them
//! after. A crash between "evaluated" and "durable" therefore loses nothing and emits
//! nothing twice: the report is not acked, the agent replays it, and evaluation runs
//! again from the last durable state.
//!
//! # The state machine (per agent, check, rule)
//!
//! ```text
//!            condition holds            held for `for`
//!   OK ───────────────────► PENDING ───────────────────► FIRING(warning|critical)
//!    ▲  condition gone (no event) │                            │  ▲
//!    └────────────────────────────┘          severity change:  └──┘ new `firing` event
//!    ▲                                                         │
//!    └──────────── value past `clear`: `resolved` event ───────┘
//! ```
//!
//! - `for = 0`: OK goes straight to FIRING. `started_at` is when the condition began
//!   (the start of PENDING), so it is the real start of the problem.
//! - Hysteresis: a firing check whose value is between `clear` and `warn` stays firing
//!   (at warning); it resolves only past `clear`.
//! - UNKNOWN: a probe that cannot sample is not judged by the metric rules (their state
//!   holds); the `@unknown` pseudo-metric lets a rule (default `probe_unknown`) alert on
//!   a probe that stays UNKNOWN.
//! - Flapping: every level change is counted over the rule set's flap window. Reaching
//!   the threshold emits ONE event marked `flapping` and silences the check; when it has
//!   not changed for a whole window, one event brings consumers to its current level.
//!
//! - Staleness: a check that stops reporting for 3 intervals (at least 30 s) is judged
//!   once with `@stale = 1` by [`AgentEvaluator::tick`] (default rule `no_data`).
//! - Retirement: a check the agent says it no longer runs (`Report.retired_checks`:
//!   removed from its config or policy) is forgotten by [`AgentEvaluator::retire`]: every
//!   state of it is removed ([`StateChange::Remove`], deleted in the report's
//!   transaction), a firing one with ONE `resolved` event saying the check was removed,
//!   and it is no longer watched for staleness. The collector's own checks (`agent`:
//!   offline, `agent:reports`: reports refused; `crate::synthetic`) are not the agent's
//!   to retire.
//!
//! Pseudo-metrics available to rules: `@status` (the probe's verdict: 0 OK, 1 WARNING,
//! 2 CRITICAL; absent when UNKNOWN), `@unknown` (1 when UNKNOWN, else 0) and `@stale`
//! (1 when the check stopped reporting, else 0).

mod compact;
mod events;
mod machine;
mod rules;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nightowl_proto::{CheckResult, ProbeStatus};

use crate::alert::{self, AlertEvent};
use crate::identity::AgentIdentity;

use compact::{Check, NameId, Names, Resolved, RuleList, RuleState, Working};
use machine::settled_value;
pub use machine::{Transition, step};
pub use rules::{Direction, Flapping, Missing, Rule, RuleSet, RulesError, Template};
pub use state::{CheckState, Level, Pending, StateChange, StateKey, StateUpdate};

/// What one report causes.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub events: Vec<AlertEvent>,
    pub updates: Vec<StateUpdate>,
    /// Metrics that were present but unusable (NaN, infinite): counted, never evaluated.
    pub invalid_values: u64,
}

/// An evaluation's updates as [`AgentEvaluator::stage`] keeps them until they are
/// durable: per update the check id, the rule's name id and the state (None: removed).
#[derive(Debug, Default)]
pub struct Staged {
    changes: Vec<(Box<str>, NameId, Option<RuleState>)>,
}

/// Evaluation state of one agent. Owned by the session that holds the agent, so no lock.
#[derive(Debug)]
pub struct AgentEvaluator {
    identity: AgentIdentity,
    labels: BTreeMap<String, String>,
    rules: Arc<RuleSet>,
    /// The effective rule lists of this agent's checks, by the addresses of their rules:
    /// checks that resolve to the same rules share one list. Cleared with the rule set.
    lists: HashMap<Box<[usize]>, RuleList>,
    names: Names,
    /// Per check: its states, rules and staleness watch.
    checks: HashMap<Box<str>, Check>,
}

/// A check is stale after this many missed intervals…
pub const STALE_INTERVALS: u32 = 3;
/// …but never sooner than this (fast-sampling checks jitter).
pub const STALE_MINIMUM: std::time::Duration = std::time::Duration::from_secs(30);
/// Interval assumed for results that do not say theirs.
const DEFAULT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The effective rules of `check` (of `kind`), shared with the agent's other checks that
/// resolve to the same rules.
fn resolve(
    rule_set: &RuleSet,
    identity: &AgentIdentity,
    labels: &BTreeMap<String, String>,
    lists: &mut HashMap<Box<[usize]>, RuleList>,
    names: &mut Names,
    kind: &str,
    check: &str,
) -> RuleList {
    let rules = rule_set.effective(&identity.tenant, labels, kind, check);
    // Rules are compared by address: the list in `lists` keeps its rules alive, so an
    // address there always means the same rule. (A rule patched by an override is a new
    // allocation per check, so such checks keep a list each, as before.)
    let addresses: Box<[usize]> = rules.iter().map(|rule| Arc::as_ptr(rule) as usize).collect();
    if let Some(list) = lists.get(&addresses) {
        return list.clone();
    }
    let ids = rules.iter().map(|rule| names.id(&rule.name)).collect();
    let list = Arc::new(Resolved { rules: rules.into(), ids });
    lists.insert(addresses, list.clone());
    list
}

impl AgentEvaluator {
    pub fn new(
        identity: AgentIdentity,
        labels: BTreeMap<String, String>,
        rules: Arc<RuleSet>,
        states: HashMap<StateKey, CheckState>,
    ) -> Self {
        let mut evaluator = Self {
            identity,
            labels,
            rules,
            lists: HashMap::new(),
            names: Names::default(),
            checks: HashMap::new(),
        };
        // Pristine states written by earlier versions: the same as none (their rows stay
        // until the state next changes; nothing counts OK rows).
        for (key, state) in states.into_iter().filter(|(_, state)| !state.pristine()) {
            evaluator.set_state(key, state);
        }
        evaluator
    }

    /// Switches to a reloaded rule set (states are kept: fingerprints are per rule name).
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        if !Arc::ptr_eq(&self.rules, &rules) {
            self.rules = rules;
            self.lists.clear();
            for check in self.checks.values_mut() {
                check.rules = None;
            }
        }
    }

    pub fn state(&self, key: &StateKey) -> Option<CheckState> {
        self.state_of(&key.check, &key.rule).map(RuleState::to_state)
    }

    fn state_of(&self, check: &str, rule: &str) -> Option<&RuleState> {
        self.checks.get(check)?.state(self.names.find(rule)?)
    }

    /// Every state of this agent.
    pub fn states(&self) -> impl Iterator<Item = (StateKey, CheckState)> + '_ {
        self.checks.iter().flat_map(move |(check, entry)| {
            entry.states.iter().map(move |state| {
                let rule = self.names.get(state.rule).unwrap_or_default().to_owned();
                (StateKey { check: check.to_string(), rule }, state.to_state())
            })
        })
    }

    fn set_state(&mut self, key: StateKey, state: CheckState) {
        let rule = self.names.id(&key.rule);
        self.set_rule_state(key.check.into_boxed_str(), RuleState::new(rule, state));
    }

    fn set_rule_state(&mut self, check: Box<str>, state: RuleState) {
        let entry = match self.checks.get_mut(&*check) {
            Some(entry) => entry,
            None => self.checks.entry(check).or_insert_with(Check::new),
        };
        match entry.states.iter_mut().find(|known| known.rule == state.rule) {
            Some(known) => *known = state,
            None => entry.states.push(state),
        }
    }

    fn remove_state(&mut self, check: &str, rule: NameId) {
        let Some(entry) = self.checks.get_mut(check) else {
            return;
        };
        entry.states.retain(|state| state.rule != rule);
        if entry.states.is_empty() && !entry.watched {
            self.checks.remove(check);
        }
    }

    /// The effective rules of `check` for `kind` (cached on the check, if it is known).
    fn rules_for(&mut self, kind: &str, check: &str) -> RuleList {
        let Self { identity, labels, rules, lists, names, checks } = self;
        let kind_id = names.id(kind);
        let Some(entry) = checks.get_mut(check) else {
            return resolve(rules, identity, labels, lists, names, kind, check);
        };
        match &entry.rules {
            Some(list) if entry.kind == kind_id => list.clone(),
            _ => {
                let list = resolve(rules, identity, labels, lists, names, kind, check);
                entry.kind = kind_id;
                entry.rules = Some(list.clone());
                list
            }
        }
    }

    /// Evaluates one report's results. `at` is when the sample was taken (already
    /// clamped to a plausible range by the caller); `now` is the emission time.
    pub fn evaluate(
        &mut self,
        results: &[CheckResult],
        at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> Evaluation {
        let Self { names, checks, .. } = self;
        for result in results {
            let watch = |entry: &mut Check, names: &mut Names| {
                if names.get(entry.kind) != Some(result.kind.as_str()) {
                    entry.kind = names.id(&result.kind);
                    entry.rules = None;
                }
                (entry.seen_at, entry.interval_ms, entry.watched, entry.stale) =
                    (at, result.interval_ms, true, false);
            };
            match checks.get_mut(result.check_id.as_str()) {
                Some(entry) => watch(entry, names),
                None => {
                    watch(checks.entry(result.check_id.as_str().into()).or_insert_with(Check::new), names)
                }
            }
        }
        self.judge(results, false, at, now)
    }

    /// Timer: checks that have sent nothing for [`STALE_INTERVALS`] intervals (at least
    /// [`STALE_MINIMUM`]) are judged with `@stale = 1` once; their next result brings
    /// `@stale = 0`.
    pub fn tick(&mut self, now: jiff::Timestamp) -> Evaluation {
        let mut stale = Vec::new();
        for (check, entry) in &mut self.checks {
            if !entry.watched || entry.stale {
                continue;
            }
            let limit = (entry.interval() * STALE_INTERVALS).max(STALE_MINIMUM);
            let limit = jiff::SignedDuration::try_from(limit).unwrap_or(jiff::SignedDuration::MAX);
            if now.duration_since(entry.seen_at) > limit {
                entry.stale = true;
                stale.push(CheckResult {
                    check_id: check.to_string(),
                    kind: self.names.get(entry.kind).unwrap_or_default().to_owned(),
                    message: format!("no result since {}", entry.seen_at),
                    ..Default::default()
                });
            }
        }
        if stale.is_empty() {
            return Evaluation::default();
        }
        stale.sort_by(|a, b| a.check_id.cmp(&b.check_id));
        self.judge(&stale, true, now, now)
    }

    fn judge(
        &mut self,
        results: &[CheckResult],
        stale: bool,
        at: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> Evaluation {
        let mut evaluation = Evaluation::default();
        let flapping = self.rules.flapping;
        // Later results of the same check in one report win; states change in order.
        let mut working = Working::default();
        for result in results {
            let status = result.status();
            let pseudo = |name: &str| -> Option<f64> {
                match (name, status) {
                    ("@stale", _) => Some(if stale { 1.0 } else { 0.0 }),
                    (_, _) if stale => None,
                    ("@unknown", ProbeStatus::Unknown) => Some(1.0),
                    ("@unknown", _) => Some(0.0),
                    ("@status", ProbeStatus::Ok) => Some(0.0),
                    ("@status", ProbeStatus::Warning) => Some(1.0),
                    ("@status", ProbeStatus::Critical) => Some(2.0),
                    _ => None,
                }
            };
            let check = result.check_id.as_str();
            // The check's rules, resolved once per rule set (and again if its kind
            // changed), and its durable states, looked up once per result.
            let cached = self.checks.get(check).and_then(|entry| {
                let same_kind = self.names.get(entry.kind) == Some(result.kind.as_str());
                entry.rules.clone().filter(|_| same_kind).map(|rules| (rules, entry.states.as_slice()))
            });
            let (rules, known_states) = match cached {
                Some(found) => found,
                None => {
                    let rules = self.rules_for(&result.kind, check);
                    (rules, self.checks.get(check).map_or(&[][..], |entry| entry.states.as_slice()))
                }
            };
            let known = |rule: NameId| known_states.iter().find(|state| state.rule == rule);
            for (rule, &rule_id) in rules.rules.iter().zip(rules.ids.iter()) {
                let value = if rule.metric.starts_with('@') {
                    pseudo(&rule.metric)
                } else if stale || status == ProbeStatus::Unknown {
                    // No judgement on a failed sample; the state holds.
                    continue;
                } else {
                    result.metrics.get(&rule.metric).copied()
                };
                let in_working = if working.is_empty() { None } else { working.get(check, &rule.name) };
                let known_state = known(rule_id);
                // Fast path, no allocation: a settled state judged at its own level again.
                let settled = match (in_working, known_state) {
                    (Some(current), _) => settled_value(rule, value, current.level, current.value, |level| {
                        current.settled_at(level)
                    }),
                    (None, Some(current)) => {
                        settled_value(rule, value, current.level, current.value, |level| {
                            current.settled_at(level)
                        })
                    }
                    (None, None) => None,
                };
                let absent = in_working.is_none() && known_state.is_none();
                let in_working = in_working.is_some();
                if let Some(value) = settled {
                    if in_working && let Some(state) = working.get_mut(check, &rule.name) {
                        state.value = value;
                    }
                    continue;
                }
                if absent
                    && match value {
                        Some(value) if value.is_finite() => rule.next_level(Level::Ok, value) == Level::Ok,
                        None => rule.missing == Missing::Ok,
                        Some(_) => false,
                    }
                {
                    // No state is a pristine OK one (see `CheckState::pristine`), and it
                    // stays one: nothing to keep, nothing to write.
                    continue;
                }
                let state = match (in_working, known_state) {
                    (true, _) => working.get(check, &rule.name).cloned(),
                    (false, known_state) => known_state.map(RuleState::to_state),
                }
                .unwrap_or_else(|| CheckState::ok(value.unwrap_or_default()));
                let (target, value) = match value {
                    Some(value) if value.is_finite() => (rule.next_level(state.level, value), value),
                    Some(_) => {
                        evaluation.invalid_values += 1;
                        continue;
                    }
                    None if rule.missing == Missing::Ok => (Level::Ok, state.value),
                    None => continue,
                };
                let (next, transition) = step(rule, &flapping, &state, target, value, at);
                if let Some(transition) = transition {
                    let fingerprint =
                        alert::fingerprint(&self.identity.tenant, &self.identity.agent, check, &rule.name);
                    evaluation.events.push(self.event(
                        rule,
                        result,
                        &fingerprint,
                        &state,
                        &next,
                        transition,
                        at,
                        now,
                    ));
                }
                if in_working {
                    if let Some(state) = working.get_mut(check, &rule.name) {
                        *state = next;
                    }
                } else if match known_state {
                    None => !next.pristine(),
                    Some(known) => !known.same_machine(&next),
                } {
                    working.insert(StateKey { check: check.to_owned(), rule: rule.name.clone() }, next);
                }
            }
        }
        for (key, state) in working.into_states() {
            let change = if !state.pristine() {
                StateChange::Set(state)
            } else if self.state_of(&key.check, &key.rule).is_some() {
                // Back to pristine (e.g. resolved and its flap history aged out): forget it.
                StateChange::Remove
            } else {
                continue;
            };
            let fingerprint =
                alert::fingerprint(&self.identity.tenant, &self.identity.agent, &key.check, &key.rule);
            evaluation.updates.push(StateUpdate { key, fingerprint, change });
        }
        evaluation.updates.sort_by(|a, b| a.key.cmp(&b.key));
        evaluation
    }

    /// Makes the evaluation's updates the current state (after they are durable).
    pub fn apply(&mut self, updates: Vec<StateUpdate>) {
        for update in updates {
            match update.change {
                StateChange::Set(state) => self.set_state(update.key, state),
                StateChange::Remove => {
                    if let Some(rule) = self.names.find(&update.key.rule) {
                        self.remove_state(&update.key.check, rule);
                    }
                }
            }
        }
    }

    /// The same as [`AgentEvaluator::apply`] for `updates`, taken apart now and applied by
    /// [`AgentEvaluator::apply_staged`] later: a session hands the updates themselves to
    /// the store and keeps only this (a check id and a 24-byte state per update, a third
    /// of a [`StateUpdate`]) while the commit is in flight.
    pub fn stage(&mut self, updates: &[StateUpdate]) -> Staged {
        let changes = updates
            .iter()
            .map(|update| {
                let rule = self.names.id(&update.key.rule);
                let state = match &update.change {
                    StateChange::Set(state) => Some(RuleState::new(rule, state.clone())),
                    StateChange::Remove => None,
                };
                (update.key.check.as_str().into(), rule, state)
            })
            .collect();
        Staged { changes }
    }

    /// Makes staged updates the current state (after they are durable).
    pub fn apply_staged(&mut self, staged: Staged) {
        for (check, rule, state) in staged.changes {
            match state {
                Some(state) => self.set_rule_state(check, state),
                None => self.remove_state(&check, rule),
            }
        }
    }

    /// The agent no longer runs `checks`: every state of them is to be removed, and each
    /// one consumers were last told is firing gets one `resolved` event saying the check
    /// was removed from the agent's configuration. Like [`AgentEvaluator::evaluate`] it
    /// mutates no state (the caller commits, then applies); it does stop the staleness
    /// watch of those checks, memory-only bookkeeping like `evaluate`'s.
    pub fn retire(&mut self, checks: &[String], at: jiff::Timestamp, now: jiff::Timestamp) -> Evaluation {
        let mut evaluation = Evaluation::default();
        for check in checks {
            if check == crate::synthetic::offline::CHECK || check == crate::synthetic::reports::CHECK {
                // The collector's own states (offline, refused reports): not checks the
                // agent runs.
                continue;
            }
            let Some(entry) = self.checks.get_mut(check.as_str()) else {
                continue;
            };
            let seen_kind = entry.watched.then(|| self.names.get(entry.kind).unwrap_or_default().to_owned());
            (entry.watched, entry.stale) = (false, false);
            let mut states: Vec<(StateKey, CheckState)> = entry
                .states
                .iter()
                .map(|state| {
                    let rule = self.names.get(state.rule).unwrap_or_default().to_owned();
                    (StateKey { check: check.clone(), rule }, state.to_state())
                })
                .collect();
            if states.is_empty() {
                self.checks.remove(check.as_str());
            }
            states.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, state) in states {
                let fingerprint =
                    alert::fingerprint(&self.identity.tenant, &self.identity.agent, &key.check, &key.rule);
                if state.emitted.is_firing() {
                    let kind = seen_kind.clone().unwrap_or_else(|| {
                        check.split_once(':').map_or(check.as_str(), |(kind, _)| kind).to_owned()
                    });
                    let event = self.retired_event(&kind, &key, &fingerprint, &state, at, now);
                    evaluation.events.push(event);
                }
                evaluation.updates.push(StateUpdate { key, fingerprint, change: StateChange::Remove });
            }
        }
        evaluation
    }
}

#[cfg(test)]
mod tests;
