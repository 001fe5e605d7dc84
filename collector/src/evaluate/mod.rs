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

mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nightowl_proto::{CheckResult, ProbeStatus};
use serde::{Deserialize, Serialize};

use crate::alert::{self, AlertEvent, Status};
use crate::identity::AgentIdentity;

pub use rules::{Direction, Flapping, Missing, Rule, RuleSet, RulesError, Template};

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

/// A condition waiting for its rule's `for` to elapse.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub level: Level,
    pub since: jiff::Timestamp,
}

/// What the collector remembers per (agent, check, rule); persisted when it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckState {
    /// The level the rule judges the check to be at.
    pub level: Level,
    /// The level consumers were last told (differs from `level` only while flapping).
    pub emitted: Level,
    /// When the current firing episode started (None while OK).
    pub started_at: Option<jiff::Timestamp>,
    /// The last value evaluated.
    pub value: f64,
    pub pending: Option<Pending>,
    /// Recent level changes, for flap detection (pruned to the flap window).
    #[serde(default)]
    pub changes: Vec<jiff::Timestamp>,
    #[serde(default)]
    pub flapping: bool,
}

impl CheckState {
    pub fn ok(value: f64) -> Self {
        Self {
            level: Level::Ok,
            emitted: Level::Ok,
            started_at: None,
            value,
            pending: None,
            changes: Vec::new(),
            flapping: false,
        }
    }

    /// Settled at `level`: not pending, not flapping, no recent changes to prune, and
    /// consumers were told this level. Judging such a state at the same level again
    /// changes nothing but its last value (see [`step`]), which is the common case.
    fn settled_at(&self, level: Level) -> bool {
        self.level == level
            && self.emitted == level
            && self.pending.is_none()
            && !self.flapping
            && self.changes.is_empty()
    }

    /// Settled at OK, as a check that never crossed a threshold: the same as no state
    /// at all, which is how it is kept (not in memory, not in `check_states`). Most of
    /// an agent's checks are in this state almost always; keeping one state per (check,
    /// rule) for them cost a state in memory and a row write per rule on first sight.
    /// (Only the last value is lost, and nothing reads that of an OK state.)
    pub fn pristine(&self) -> bool {
        self.settled_at(Level::Ok) && self.started_at.is_none()
    }
}

/// Identifies a state within one agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    pub check: String,
    pub rule: String,
}

/// The states one evaluation changes, by check then rule: looked up by `&str` pairs.
/// Only states that leave the settled fast path land here.
#[derive(Debug, Default)]
struct Working {
    by_check: HashMap<String, HashMap<String, CheckState>>,
}

impl Working {
    fn get(&self, check: &str, rule: &str) -> Option<&CheckState> {
        self.by_check.get(check)?.get(rule)
    }

    fn get_mut(&mut self, check: &str, rule: &str) -> Option<&mut CheckState> {
        self.by_check.get_mut(check)?.get_mut(rule)
    }

    fn insert(&mut self, key: StateKey, state: CheckState) {
        self.by_check.entry(key.check).or_default().insert(key.rule, state);
    }

    fn is_empty(&self) -> bool {
        self.by_check.is_empty()
    }

    fn into_states(self) -> impl Iterator<Item = (StateKey, CheckState)> {
        self.by_check.into_iter().flat_map(|(check, rules)| {
            rules.into_iter().map(move |(rule, state)| (StateKey { check: check.clone(), rule }, state))
        })
    }
}

/// Index of a name (a rule's name or a check's kind) in one agent's [`Names`].
type NameId = u32;

/// The rule names and check kinds of one agent, each stored once: states and checks
/// refer to them by [`NameId`] (a few bytes instead of a `String` each).
#[derive(Debug, Default)]
struct Names {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, NameId>,
}

impl Names {
    fn id(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = NameId::try_from(self.names.len()).unwrap_or(NameId::MAX);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn find(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    fn get(&self, id: NameId) -> Option<&str> {
        self.names.get(id as usize).map(|name| &**name)
    }
}

/// The rules that apply to one check with their names' ids, resolved once per rule set
/// and shared by every check of the agent that resolves to the same rules (typically
/// one list per kind).
#[derive(Debug)]
struct Resolved {
    rules: Box<[Arc<Rule>]>,
    ids: Box<[NameId]>,
}

type RuleList = Arc<Resolved>;

/// One (check, rule) state as held in memory: [`CheckState`] with its common part inline
/// (level, emitted level, last value) and the rest — firing since, pending, flap
/// history — boxed only while any of it is set. 24 bytes per state.
#[derive(Debug, Clone)]
struct RuleState {
    value: f64,
    history: Option<Box<History>>,
    rule: NameId,
    level: Level,
    emitted: Level,
}

/// The parts of a [`CheckState`] that a settled OK state does not have.
#[derive(Debug, Clone, PartialEq)]
struct History {
    started_at: Option<jiff::Timestamp>,
    pending: Option<Pending>,
    changes: Vec<jiff::Timestamp>,
    flapping: bool,
}

impl RuleState {
    fn new(rule: NameId, state: CheckState) -> Self {
        let CheckState { level, emitted, started_at, value, pending, changes, flapping } = state;
        let history = (started_at.is_some() || pending.is_some() || !changes.is_empty() || flapping)
            .then(|| Box::new(History { started_at, pending, changes, flapping }));
        Self { value, history, rule, level, emitted }
    }

    fn to_state(&self) -> CheckState {
        let mut state = CheckState { level: self.level, emitted: self.emitted, ..CheckState::ok(self.value) };
        if let Some(history) = &self.history {
            state.started_at = history.started_at;
            state.pending = history.pending;
            state.changes.clone_from(&history.changes);
            state.flapping = history.flapping;
        }
        state
    }

    /// [`CheckState::settled_at`] without building the state.
    fn settled_at(&self, level: Level) -> bool {
        self.level == level
            && self.emitted == level
            && self.history.as_ref().is_none_or(|history| {
                history.pending.is_none() && !history.flapping && history.changes.is_empty()
            })
    }

    /// Equal to `other` apart from the last value: nothing worth a write.
    fn same_machine(&self, other: &CheckState) -> bool {
        let (started_at, pending, changes, flapping) = match &self.history {
            Some(history) => {
                (history.started_at, history.pending, history.changes.as_slice(), history.flapping)
            }
            None => (None, None, &[][..], false),
        };
        self.level == other.level
            && self.emitted == other.emitted
            && started_at == other.started_at
            && pending == other.pending
            && changes == other.changes.as_slice()
            && flapping == other.flapping
    }
}

/// Everything the evaluator keeps about one check of its agent, in one place: its rule
/// states, the rules that apply to it, and its staleness watch.
#[derive(Debug)]
struct Check {
    /// One per rule that judged it (or that the store had), in no particular order.
    states: Vec<RuleState>,
    /// Resolved for `kind`; None until needed (and after a rule reload).
    rules: Option<RuleList>,
    /// When its last result was sampled (meaningful while `watched`).
    seen_at: jiff::Timestamp,
    /// How often it should come, as the result said (0: [`DEFAULT_INTERVAL`]).
    interval_ms: u32,
    /// The kind of its last result (or the kind `rules` were resolved for);
    /// [`NO_KIND`] for a check known only from the store.
    kind: NameId,
    /// Watched for staleness: it reported in this session and was not retired.
    /// Memory only: after a collector restart the clock starts again with the session.
    watched: bool,
    /// Judged stale; its next result brings `@stale = 0`.
    stale: bool,
}

/// [`Check::kind`] of a check that has not reported in this session.
const NO_KIND: NameId = NameId::MAX;

impl Check {
    fn new() -> Self {
        Check {
            states: Vec::new(),
            rules: None,
            seen_at: jiff::Timestamp::UNIX_EPOCH,
            interval_ms: 0,
            kind: NO_KIND,
            watched: false,
            stale: false,
        }
    }

    fn state(&self, rule: NameId) -> Option<&RuleState> {
        self.states.iter().find(|state| state.rule == rule)
    }

    fn interval(&self) -> std::time::Duration {
        match self.interval_ms {
            0 => DEFAULT_INTERVAL,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        }
    }
}

/// A state that changed, with the fingerprint it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct StateUpdate {
    pub key: StateKey,
    pub fingerprint: String,
    pub change: StateChange,
}

/// What happens to a state.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    /// Insert or replace it.
    Set(CheckState),
    /// Forget it: the agent retired the check.
    Remove,
}

impl StateUpdate {
    pub fn set(key: StateKey, fingerprint: String, state: CheckState) -> Self {
        Self { key, fingerprint, change: StateChange::Set(state) }
    }
}

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

/// What a step of the state machine tells consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Firing at this level (new, or a severity change).
    Fire(Level),
    /// Back to OK; carries the level it was firing at.
    Resolve(Level),
    /// Started flapping at this level: one note, then silence.
    Flapping(Level),
}

/// One step of the state machine: `target` is the level the value calls for.
pub fn step(
    rule: &Rule,
    flapping: &Flapping,
    state: &CheckState,
    target: Level,
    value: f64,
    at: jiff::Timestamp,
) -> (CheckState, Option<Transition>) {
    let mut next = state.clone();
    next.value = value;
    let window = jiff::SignedDuration::try_from(flapping.window).unwrap_or(jiff::SignedDuration::MAX);
    next.changes.retain(|&change| at.duration_since(change) < window);

    // `for`: entering FIRING from OK waits until the condition has held long enough.
    let mut level = target;
    if !state.level.is_firing() && target.is_firing() && !rule.for_duration.is_zero() {
        let since = state.pending.map_or(at, |pending| pending.since);
        let held = at.duration_since(since);
        if held < jiff::SignedDuration::try_from(rule.for_duration).unwrap_or(jiff::SignedDuration::MAX) {
            next.pending = Some(Pending { level: target, since });
            return (next, None);
        }
        level = target;
    }
    let condition_since = state.pending.map_or(at, |pending| pending.since);
    next.pending = None;

    let mut transition = None;
    if level != state.level {
        next.level = level;
        next.started_at = match (state.level.is_firing(), level.is_firing()) {
            (false, true) => Some(condition_since),
            (true, true) => state.started_at.or(Some(at)),
            (_, false) => None,
        };
        next.changes.push(at);
        if !state.flapping && next.changes.len() >= flapping.changes {
            next.flapping = true;
            transition = Some(Transition::Flapping(level));
        }
    }
    if next.flapping && next.changes.is_empty() {
        // Quiet for a whole window: flapping is over.
        next.flapping = false;
    }
    if transition.is_none() && !next.flapping && next.level != state.emitted {
        transition = Some(if next.level.is_firing() {
            Transition::Fire(next.level)
        } else {
            Transition::Resolve(state.emitted)
        });
    }
    match transition {
        Some(Transition::Fire(level) | Transition::Flapping(level)) => next.emitted = level,
        Some(Transition::Resolve(_)) => next.emitted = Level::Ok,
        None => {}
    }
    (next, transition)
}

/// The value a settled state keeps when judged again (the fast path), or None when the
/// judgement may change it (`settled_at(level)`: settled at that level).
fn settled_value(
    rule: &Rule,
    value: Option<f64>,
    level: Level,
    last: f64,
    settled_at: impl Fn(Level) -> bool,
) -> Option<f64> {
    match value {
        Some(value) if value.is_finite() => settled_at(rule.next_level(level, value)).then_some(value),
        None if rule.missing == Missing::Ok => settled_at(Level::Ok).then_some(last),
        _ => None,
    }
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

    /// The `resolved` event for a firing check the agent retired.
    fn retired_event(
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
    fn event(
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
fn format_number(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}") } else { format!("{rounded:.1}") }
}

/// Seconds as "3h 20m" (minutes precision; "0m" for under a minute).
fn format_duration(seconds: f64) -> String {
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

#[cfg(test)]
mod tests;
