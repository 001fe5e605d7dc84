//! The state machine of one (agent, check, rule), pure: a state, a target level and a
//! time in, the next state and what consumers are told out (module doc of `evaluate`).

use super::rules::{Flapping, Missing, Rule};
use super::state::{CheckState, Level, Pending};

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
pub(super) fn settled_value(
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
