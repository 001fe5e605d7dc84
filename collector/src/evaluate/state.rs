//! The durable state types: what the collector remembers per (agent, check, rule) and
//! the changes to it that an evaluation hands to the store.

use serde::{Deserialize, Serialize};

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
    pub(super) fn settled_at(&self, level: Level) -> bool {
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
