//! The evaluator's in-memory records, kept small: an agent may have thousands of checks
//! and each (check, rule) a state, so names are interned once per agent, a settled
//! state is 24 bytes, and the history a firing or pending state needs is boxed.

use std::collections::HashMap;
use std::sync::Arc;

use super::DEFAULT_INTERVAL;
use super::rules::Rule;
use super::state::{CheckState, Level, Pending, StateKey};

/// The states one evaluation changes, by check then rule: looked up by `&str` pairs.
/// Only states that leave the settled fast path land here.
#[derive(Debug, Default)]
pub(super) struct Working {
    pub(super) by_check: HashMap<String, HashMap<String, CheckState>>,
}

impl Working {
    pub(super) fn get(&self, check: &str, rule: &str) -> Option<&CheckState> {
        self.by_check.get(check)?.get(rule)
    }

    pub(super) fn get_mut(&mut self, check: &str, rule: &str) -> Option<&mut CheckState> {
        self.by_check.get_mut(check)?.get_mut(rule)
    }

    pub(super) fn insert(&mut self, key: StateKey, state: CheckState) {
        self.by_check.entry(key.check).or_default().insert(key.rule, state);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_check.is_empty()
    }

    pub(super) fn into_states(self) -> impl Iterator<Item = (StateKey, CheckState)> {
        self.by_check.into_iter().flat_map(|(check, rules)| {
            rules.into_iter().map(move |(rule, state)| (StateKey { check: check.clone(), rule }, state))
        })
    }
}

/// Index of a name (a rule's name or a check's kind) in one agent's [`Names`].
pub(super) type NameId = u32;

/// The rule names and check kinds of one agent, each stored once: states and checks
/// refer to them by [`NameId`] (a few bytes instead of a `String` each).
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) names: Vec<Arc<str>>,
    pub(super) ids: HashMap<Arc<str>, NameId>,
}

impl Names {
    pub(super) fn id(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = NameId::try_from(self.names.len()).unwrap_or(NameId::MAX);
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    pub(super) fn find(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    pub(super) fn get(&self, id: NameId) -> Option<&str> {
        self.names.get(id as usize).map(|name| &**name)
    }
}

/// The rules that apply to one check with their names' ids, resolved once per rule set
/// and shared by every check of the agent that resolves to the same rules (typically
/// one list per kind).
#[derive(Debug)]
pub(super) struct Resolved {
    pub(super) rules: Box<[Arc<Rule>]>,
    pub(super) ids: Box<[NameId]>,
}

pub(super) type RuleList = Arc<Resolved>;

/// One (check, rule) state as held in memory: [`CheckState`] with its common part inline
/// (level, emitted level, last value) and the rest — firing since, pending, flap
/// history — boxed only while any of it is set. 24 bytes per state.
#[derive(Debug, Clone)]
pub(super) struct RuleState {
    pub(super) value: f64,
    pub(super) history: Option<Box<History>>,
    pub(super) rule: NameId,
    pub(super) level: Level,
    pub(super) emitted: Level,
}

/// The parts of a [`CheckState`] that a settled OK state does not have.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct History {
    pub(super) started_at: Option<jiff::Timestamp>,
    pub(super) pending: Option<Pending>,
    pub(super) changes: Vec<jiff::Timestamp>,
    pub(super) flapping: bool,
}

impl RuleState {
    pub(super) fn new(rule: NameId, state: CheckState) -> Self {
        let CheckState { level, emitted, started_at, value, pending, changes, flapping } = state;
        let history = (started_at.is_some() || pending.is_some() || !changes.is_empty() || flapping)
            .then(|| Box::new(History { started_at, pending, changes, flapping }));
        Self { value, history, rule, level, emitted }
    }

    pub(super) fn to_state(&self) -> CheckState {
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
    pub(super) fn settled_at(&self, level: Level) -> bool {
        self.level == level
            && self.emitted == level
            && self.history.as_ref().is_none_or(|history| {
                history.pending.is_none() && !history.flapping && history.changes.is_empty()
            })
    }

    /// Equal to `other` apart from the last value: nothing worth a write.
    pub(super) fn same_machine(&self, other: &CheckState) -> bool {
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
pub(super) struct Check {
    /// One per rule that judged it (or that the store had), in no particular order.
    pub(super) states: Vec<RuleState>,
    /// Resolved for `kind`; None until needed (and after a rule reload).
    pub(super) rules: Option<RuleList>,
    /// When its last result was sampled (meaningful while `watched`).
    pub(super) seen_at: jiff::Timestamp,
    /// How often it should come, as the result said (0: [`DEFAULT_INTERVAL`]).
    pub(super) interval_ms: u32,
    /// The kind of its last result (or the kind `rules` were resolved for);
    /// [`NO_KIND`] for a check known only from the store.
    pub(super) kind: NameId,
    /// Watched for staleness: it reported in this session and was not retired.
    /// Memory only: after a collector restart the clock starts again with the session.
    pub(super) watched: bool,
    /// Judged stale; its next result brings `@stale = 0`.
    pub(super) stale: bool,
}

/// [`Check::kind`] of a check that has not reported in this session.
pub(super) const NO_KIND: NameId = NameId::MAX;

impl Check {
    pub(super) fn new() -> Self {
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

    pub(super) fn state(&self, rule: NameId) -> Option<&RuleState> {
        self.states.iter().find(|state| state.rule == rule)
    }

    pub(super) fn interval(&self) -> std::time::Duration {
        match self.interval_ms {
            0 => DEFAULT_INTERVAL,
            ms => std::time::Duration::from_millis(u64::from(ms)),
        }
    }
}
