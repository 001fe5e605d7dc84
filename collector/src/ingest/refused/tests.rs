use std::collections::HashMap;

use super::*;
use crate::evaluate::RuleSet;

fn identity() -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("role".to_owned(), "server".to_owned())])
}

fn evaluator(states: HashMap<StateKey, CheckState>) -> AgentEvaluator {
    AgentEvaluator::new(identity(), labels(), RuleSet::defaults(), states)
}

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000 + second).unwrap()
}

fn key() -> StateKey {
    StateKey { check: CHECK.into(), rule: RULE.into() }
}

#[test]
fn a_refusal_fires_once_and_an_evaluated_report_resolves() {
    let mut evaluator = evaluator(HashMap::new());
    // Nothing refused, nothing firing: nothing to say.
    assert!(transition(&evaluator, &identity(), &labels(), None, at(0)).is_none());

    let refusal = Refusal::oversized(Some(9000), 4096);
    let (event, update) = transition(&evaluator, &identity(), &labels(), Some(&refusal), at(1)).unwrap();
    assert_eq!(event.status, Status::Firing);
    assert_eq!((event.check.as_str(), event.rule.as_str()), ("agent:reports", "reports_refused"));
    assert_eq!(event.summary, "Agent srv-01: reports refused: over the size limit (9000 bytes > 4096)");
    assert_eq!((event.value, event.threshold), (9000.0, 4096.0));
    assert_eq!(event.severity, alert::Severity::P1, "a server's reports refused is as bad as offline");
    assert_eq!(event.fingerprint, alert::fingerprint("acme", "srv-01", CHECK, RULE));
    // The session applies the update once it is durable.
    let staged = evaluator.stage(&[update]);
    evaluator.apply_staged(staged);
    assert!(evaluator.state(&key()).unwrap().emitted.is_firing());

    // Refused again while firing: no second event.
    let again = Refusal::too_many_results(20, 10);
    assert!(transition(&evaluator, &identity(), &labels(), Some(&again), at(2)).is_none());

    let (resolved, update) = transition(&evaluator, &identity(), &labels(), None, at(3)).unwrap();
    assert_eq!(resolved.status, Status::Resolved);
    assert_eq!(resolved.fingerprint, event.fingerprint);
    assert_eq!(resolved.started_at, at(1), "the episode's start");
    assert_eq!(resolved.resolved_at, Some(at(3)));
    assert_eq!(update.change, StateChange::Remove, "settled at OK: not kept");
    let staged = evaluator.stage(&[update]);
    evaluator.apply_staged(staged);
    assert!(evaluator.state(&key()).is_none());
    assert!(transition(&evaluator, &identity(), &labels(), None, at(4)).is_none());
}

#[test]
fn a_firing_refusal_from_an_earlier_session_resolves() {
    let firing = CheckState {
        level: Level::Critical,
        emitted: Level::Critical,
        started_at: Some(at(-60)),
        ..CheckState::ok(20.0)
    };
    let evaluator = evaluator(HashMap::from([(key(), firing)]));
    let (event, _) = transition(&evaluator, &identity(), &labels(), None, at(0)).unwrap();
    assert_eq!((event.status, event.started_at), (Status::Resolved, at(-60)));
}

#[test]
fn the_agent_cannot_retire_the_refused_state() {
    let firing = CheckState { level: Level::Critical, emitted: Level::Critical, ..CheckState::ok(1.0) };
    let mut evaluator = evaluator(HashMap::from([(key(), firing)]));
    let retired = evaluator.retire(&[CHECK.to_owned()], at(0), at(0));
    assert!(retired.events.is_empty() && retired.updates.is_empty());
    assert!(evaluator.state(&key()).is_some());
}

#[test]
fn refusals_say_the_size_and_the_limit() {
    assert_eq!(Refusal::too_many_results(12, 10).reason, "too many results (12 > 10)");
    assert_eq!(Refusal::oversized(None, 4096).reason, "over the size limit (> 4096 bytes)");
    let tonic = "Error, decoded message length too large: found 70000 bytes, the limit is: 65536 bytes";
    assert_eq!(refused_bytes(tonic), Some(70000));
    assert_eq!(refused_bytes("something else"), None);
}
