use std::collections::HashMap;

use nightowl_proto::{CheckResult, ProbeStatus};

use super::*;
use crate::alert::Severity;

fn identity() -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() }
}

fn disk(value: f64) -> CheckResult {
    CheckResult {
        check_id: "disk:/var".into(),
        kind: "disk".into(),
        status: ProbeStatus::Ok as i32,
        metrics: HashMap::from([("used_pct".to_owned(), value)]),
        message: String::new(),
    }
}

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000 + second).unwrap()
}

/// Feeds values one report at a time, applying each evaluation, and returns
/// (level after each value, events emitted at each value).
fn run(values: &[f64]) -> Vec<(Level, Vec<AlertEvent>)> {
    let mut evaluator = AgentEvaluator::new(identity(), RuleSet::defaults(), HashMap::new());
    let key = StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() };
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            let evaluation = evaluator.evaluate(&[disk(value)], at(index as i64), at(index as i64));
            evaluator.apply(evaluation.updates);
            (evaluator.state(&key).unwrap().level, evaluation.events)
        })
        .collect()
}

#[test]
fn hysteresis_table() {
    use Level::*;
    // (values fed in order, expected level after each, expected event per step as
    // Some((status, severity)))
    type Step = Option<(Status, Severity)>;
    type Case<'a> = (&'a str, &'a [f64], &'a [Level], &'a [Step]);
    let cases: &[Case] = &[
        ("stays ok below warn", &[50.0, 89.9], &[Ok, Ok], &[None, None]),
        (
            "warn then clear",
            &[91.0, 80.0],
            &[Warning, Ok],
            &[Some((Status::Firing, Severity::P3)), Some((Status::Resolved, Severity::P3))],
        ),
        (
            "hysteresis band keeps firing",
            &[91.0, 87.0, 85.0, 84.9],
            &[Warning, Warning, Warning, Ok],
            &[Some((Status::Firing, Severity::P3)), None, None, Some((Status::Resolved, Severity::P3))],
        ),
        ("straight to critical", &[96.2], &[Critical], &[Some((Status::Firing, Severity::P2))]),
        (
            "escalate and de-escalate change severity",
            &[91.0, 95.0, 92.0, 88.0, 10.0],
            &[Warning, Critical, Warning, Warning, Ok],
            &[
                Some((Status::Firing, Severity::P3)),
                Some((Status::Firing, Severity::P2)),
                Some((Status::Firing, Severity::P3)),
                None,
                Some((Status::Resolved, Severity::P3)),
            ],
        ),
        (
            "critical to band drops to warning",
            &[99.0, 86.0],
            &[Critical, Warning],
            &[Some((Status::Firing, Severity::P2)), Some((Status::Firing, Severity::P3))],
        ),
        (
            "critical resolves with its severity",
            &[99.0, 1.0],
            &[Critical, Ok],
            &[Some((Status::Firing, Severity::P2)), Some((Status::Resolved, Severity::P2))],
        ),
        ("band without firing stays ok", &[87.0, 89.0], &[Ok, Ok], &[None, None]),
    ];
    for (name, values, levels, steps) in cases {
        let outcome = run(values);
        for (index, ((level, events), (expected_level, expected_step))) in
            outcome.iter().zip(levels.iter().zip(steps.iter())).enumerate()
        {
            assert_eq!(level, expected_level, "{name}: level at step {index}");
            let got: Option<(Status, Severity)> = match events.as_slice() {
                [] => None,
                [event] => Some((event.status, event.severity)),
                more => panic!("{name}: {} events at step {index}", more.len()),
            };
            assert_eq!(&got, expected_step, "{name}: event at step {index}");
        }
    }
}

#[test]
fn events_carry_contract_fields() {
    let outcome = run(&[96.2, 95.5, 40.0]);
    let firing = &outcome[0].1[0];
    assert_eq!(firing.summary, "Disk /var 96.2% used (critical at 95%)");
    assert_eq!(firing.value, 96.2);
    assert_eq!(firing.threshold, 95.0);
    assert_eq!(firing.started_at, at(0));
    assert_eq!(firing.resolved_at, None);
    assert_eq!((firing.tenant.as_str(), firing.agent.as_str()), ("acme", "srv-01"));
    assert_eq!((firing.check.as_str(), firing.kind.as_str()), ("disk:/var", "disk"));
    assert_eq!(firing.rule, "disk_used_pct");
    // No event while the level holds.
    assert!(outcome[1].1.is_empty());
    let resolved = &outcome[2].1[0];
    assert_eq!(resolved.status, Status::Resolved);
    assert_eq!(resolved.fingerprint, firing.fingerprint);
    assert_eq!(resolved.started_at, at(0));
    assert_eq!(resolved.resolved_at, Some(at(2)));
    assert_eq!(resolved.threshold, 85.0);
    assert_eq!(resolved.summary, "Disk /var 40% used (back below 85%)");
    assert_ne!(resolved.id, firing.id);
}

#[test]
fn evaluate_does_not_mutate_until_applied() {
    let evaluator = AgentEvaluator::new(identity(), RuleSet::defaults(), HashMap::new());
    let first = evaluator.evaluate(&[disk(99.0)], at(0), at(0));
    let again = evaluator.evaluate(&[disk(99.0)], at(0), at(0));
    // Replaying the same report against the same durable state gives the same
    // transition: this is what makes "crash before commit" safe.
    assert_eq!(first.events.len(), 1);
    assert_eq!(again.events.len(), 1);
    assert_eq!(first.events[0].fingerprint, again.events[0].fingerprint);
    assert_eq!(first.updates, again.updates);
}

#[test]
fn unknown_results_and_non_finite_values_are_not_evaluated() {
    let evaluator = AgentEvaluator::new(identity(), RuleSet::defaults(), HashMap::new());
    let mut unknown = disk(99.0);
    unknown.status = ProbeStatus::Unknown as i32;
    let evaluation = evaluator.evaluate(&[unknown, disk(f64::NAN), disk(f64::INFINITY)], at(0), at(0));
    assert!(evaluation.events.is_empty());
    assert!(evaluation.updates.is_empty());
    assert_eq!(evaluation.invalid_values, 2);
}

#[test]
fn below_rules_mirror_above() {
    let rule = Rule {
        name: "free_low".into(),
        kind: "disk".into(),
        metric: "free_bytes".into(),
        direction: Direction::Below,
        warn: Some(10.0),
        crit: Some(5.0),
        clear: 15.0,
        warn_severity: Severity::P3,
        crit_severity: Severity::P2,
        label: "Disk".into(),
        noun: "free".into(),
        unit: " GB".into(),
        runbook: None,
    };
    assert_eq!(rule.next_level(Level::Ok, 20.0), Level::Ok);
    assert_eq!(rule.next_level(Level::Ok, 9.0), Level::Warning);
    assert_eq!(rule.next_level(Level::Warning, 4.0), Level::Critical);
    assert_eq!(rule.next_level(Level::Critical, 12.0), Level::Warning);
    assert_eq!(rule.next_level(Level::Warning, 15.5), Level::Ok);
}

proptest::proptest! {
    /// For any value sequence: events per fingerprint start with firing, a resolved
    /// always follows a firing, and never two resolved in a row.
    #[test]
    fn firing_and_resolved_alternate(values in proptest::collection::vec(0.0f64..100.0, 1..60)) {
        let outcome = run(&values);
        let mut firing = false;
        for (level, events) in outcome {
            for event in events {
                match event.status {
                    Status::Firing => firing = true,
                    Status::Resolved => {
                        proptest::prop_assert!(firing, "resolved without firing");
                        firing = false;
                    }
                }
            }
            proptest::prop_assert_eq!(firing, level.is_firing());
        }
    }
}
