//! State machine tests on a simulated clock: every step passes its own timestamp.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nightowl_proto::{CheckResult, ProbeStatus};

use super::*;
use crate::alert::{Severity, Status};

fn identity() -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() }
}

fn at(second: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000 + second).unwrap()
}

fn result(check: &str, kind: &str, metric: &str, value: f64) -> CheckResult {
    CheckResult {
        check_id: check.into(),
        kind: kind.into(),
        status: ProbeStatus::Ok as i32,
        metrics: BTreeMap::from([(metric.to_owned(), value)]),
        message: String::new(),
        interval_ms: 10_000,
    }
}

fn disk(value: f64) -> CheckResult {
    result("disk:/var", "disk", "used_pct", value)
}

/// One step of a scenario.
#[derive(Clone)]
enum Input {
    /// A disk used % sample.
    Disk(f64),
    /// Any result.
    Result(CheckResult),
    /// The probe could not sample.
    Unknown(&'static str, &'static str),
    /// The session's timer.
    Tick,
}

type Expected = Option<(Status, Severity)>;

/// Runs inputs at the given seconds; returns the events per step.
fn scenario(rules: Arc<RuleSet>, steps: &[(i64, Input)]) -> (AgentEvaluator, Vec<Vec<AlertEvent>>) {
    let mut evaluator = AgentEvaluator::new(identity(), BTreeMap::new(), rules, HashMap::new());
    let mut all = Vec::new();
    for (second, input) in steps {
        let now = at(*second);
        let evaluation = match input {
            Input::Disk(value) => evaluator.evaluate(&[disk(*value)], now, now),
            Input::Result(result) => evaluator.evaluate(std::slice::from_ref(result), now, now),
            Input::Unknown(check, kind) => {
                let failed = CheckResult {
                    check_id: (*check).into(),
                    kind: (*kind).into(),
                    status: ProbeStatus::Unknown as i32,
                    message: "restic: repository not found".into(),
                    interval_ms: 10_000,
                    ..Default::default()
                };
                evaluator.evaluate(&[failed], now, now)
            }
            Input::Tick => evaluator.tick(now),
        };
        evaluator.apply(evaluation.updates);
        all.push(evaluation.events);
    }
    (evaluator, all)
}

fn only(events: &[AlertEvent], name: &str, index: usize) -> Expected {
    match events {
        [] => None,
        [event] => Some((event.status, event.severity)),
        more => panic!("{name}: {} events at step {index}: {more:?}", more.len()),
    }
}

fn check_table(name: &str, rules: Arc<RuleSet>, steps: &[(i64, Input, Expected)]) -> Vec<Vec<AlertEvent>> {
    let inputs: Vec<(i64, Input)> = steps.iter().map(|(second, input, _)| (*second, input.clone())).collect();
    let (_, events) = scenario(rules, &inputs);
    for (index, ((_, _, expected), got)) in steps.iter().zip(&events).enumerate() {
        assert_eq!(&only(got, name, index), expected, "{name}: step {index}");
    }
    events
}

const F: Status = Status::Firing;
const R: Status = Status::Resolved;

#[test]
fn hysteresis_severity_change_and_resolve() {
    use Input::Disk;
    let rules = RuleSet::defaults();
    type Case = (&'static str, Vec<(i64, Input, Expected)>);
    let cases: Vec<Case> = vec![
        ("stays ok below warn", vec![(0, Disk(50.0), None), (10, Disk(89.9), None)]),
        (
            "warn then clear",
            vec![(0, Disk(91.0), Some((F, Severity::P3))), (10, Disk(80.0), Some((R, Severity::P3)))],
        ),
        (
            "hysteresis band keeps firing",
            vec![
                (0, Disk(91.0), Some((F, Severity::P3))),
                (10, Disk(87.0), None),
                (20, Disk(85.0), None),
                (30, Disk(84.9), Some((R, Severity::P3))),
            ],
        ),
        ("straight to critical", vec![(0, Disk(96.2), Some((F, Severity::P2)))]),
        (
            "severity changes both ways with the same fingerprint",
            vec![
                (0, Disk(91.0), Some((F, Severity::P3))),
                (10, Disk(95.0), Some((F, Severity::P2))),
                (20, Disk(92.0), Some((F, Severity::P3))),
                (30, Disk(88.0), None),
                (40, Disk(10.0), Some((R, Severity::P3))),
            ],
        ),
        (
            "critical resolves with its severity",
            vec![(0, Disk(99.0), Some((F, Severity::P2))), (10, Disk(1.0), Some((R, Severity::P2)))],
        ),
        ("band without firing stays ok", vec![(0, Disk(87.0), None), (10, Disk(89.0), None)]),
    ];
    for (name, steps) in cases {
        let events = check_table(name, rules.clone(), &steps);
        let fingerprints: Vec<&str> =
            events.iter().flatten().map(|event| event.fingerprint.as_str()).collect();
        assert!(
            fingerprints.windows(2).all(|pair| pair[0] == pair[1]),
            "{name}: one fingerprint per check and rule"
        );
    }
}

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(RuleSet::parse(text, "test-rules.toml").unwrap())
}

const DISK_FOR_60S: &str = "[[rule]]\nname = \"disk_used_pct\"\nkind = \"disk\"\nmetric = \"used_pct\"\nwarn = 90\ncrit = 95\nclear = 85\nfor = \"60s\"\n";

#[test]
fn for_duration_holds_in_pending_and_fires_with_the_start_of_the_condition() {
    use Input::Disk;
    let events = check_table(
        "for 60s",
        rules(DISK_FOR_60S),
        &[
            (0, Disk(96.0), None),  // pending
            (30, Disk(97.0), None), // still pending
            (61, Disk(96.0), Some((F, Severity::P2))),
            (70, Disk(96.0), None),
            (80, Disk(10.0), Some((R, Severity::P2))),
        ],
    );
    assert_eq!(events[2][0].started_at, at(0), "started_at is when the condition began");
    check_table(
        "pending that clears emits nothing",
        rules(DISK_FOR_60S),
        &[
            (0, Disk(96.0), None),
            (30, Disk(50.0), None),
            (61, Disk(50.0), None),
            (70, Disk(96.0), None),
            (100, Disk(96.0), None),
        ],
    );
}

#[test]
fn flapping_emits_one_note_then_silence_then_the_settled_state() {
    use Input::Disk;
    let flappy = "[[rule]]\nname = \"disk_used_pct\"\nkind = \"disk\"\nmetric = \"used_pct\"\ncrit = 95\nclear = 85\n\
                  [flapping]\nwindow = \"5m\"\nchanges = 4\n";
    let events = check_table(
        "flapping",
        rules(flappy),
        &[
            (0, Disk(96.0), Some((F, Severity::P2))),
            (10, Disk(50.0), Some((R, Severity::P2))),
            (20, Disk(96.0), Some((F, Severity::P2))),
            (30, Disk(50.0), Some((R, Severity::P2))), // 4th change: the flapping note
            (40, Disk(96.0), None),
            (50, Disk(50.0), None),
            (60, Disk(96.0), None),
            (70, Disk(96.0), None),
            (380, Disk(96.0), Some((F, Severity::P2))), // quiet for the window: settled, firing
            (390, Disk(50.0), Some((R, Severity::P2))), // normal again
        ],
    );
    assert!(events[3][0].flapping, "the 4th change is the flapping note");
    assert!(events[3][0].summary.contains("flapping"), "{}", events[3][0].summary);
    assert!(!events[8][0].flapping);
    let json = serde_json::to_value(&events[0][0]).unwrap();
    assert!(json.get("flapping").is_none(), "ordinary events keep the contract shape");
}

#[test]
fn stale_checks_alert_once_and_resolve_when_data_returns() {
    use Input::{Disk, Tick};
    let events = check_table(
        "staleness",
        RuleSet::defaults(),
        &[
            (0, Disk(50.0), None),
            (20, Tick, None),                          // 20 s: within 3 × 10 s
            (31, Tick, Some((F, Severity::P3))),       // > 30 s without data
            (45, Tick, None),                          // once only
            (50, Disk(50.0), Some((R, Severity::P3))), // data again
        ],
    );
    assert_eq!(events[2][0].rule, "no_data");
    assert_eq!(events[2][0].check, "disk:/var");
}

#[test]
fn unknown_probes_hold_metric_states_and_alert_after_a_while() {
    use Input::{Result, Unknown};
    let backup = |last_result: f64| Result(result("backup:db", "backup", "last_result", last_result));
    let events = check_table(
        "unknown",
        RuleSet::defaults(),
        &[
            (0, backup(0.0), Some((F, Severity::P3))),  // backup failed
            (10, Unknown("backup:db", "backup"), None), // cannot tell: failure stays, unknown pending
            (200, Unknown("backup:db", "backup"), None),
            (311, Unknown("backup:db", "backup"), Some((F, Severity::P4))), // unknown for 5 min
        ],
    );
    assert_eq!(events[3][0].rule, "probe_unknown");
    assert!(events[3][0].summary.contains("repository not found"), "{}", events[3][0].summary);
    // A good result resolves both: the failure and the unknown.
    let (_, events) = scenario(
        RuleSet::defaults(),
        &[
            (0, backup(0.0)),
            (10, Unknown("backup:db", "backup")),
            (311, Unknown("backup:db", "backup")),
            (320, backup(1.0)),
        ],
    );
    let last: Vec<(&str, Status)> =
        events[3].iter().map(|event| (event.rule.as_str(), event.status)).collect();
    assert_eq!(last.len(), 2, "{last:?}");
    assert!(last.contains(&("backup_failed", R)) && last.contains(&("probe_unknown", R)), "{last:?}");
}

#[test]
fn missing_metric_policy_and_probe_verdicts() {
    // disk_time_to_full has `missing = "ok"` and `for = "5m"`.
    let with_ttf = |ttf: Option<f64>| {
        let mut result = disk(50.0);
        if let Some(ttf) = ttf {
            result.metrics.insert("time_to_full_s".into(), ttf);
        }
        Input::Result(result)
    };
    check_table(
        "time to full",
        RuleSet::defaults(),
        &[
            (0, with_ttf(Some(3600.0)), None),
            (301, with_ttf(Some(3000.0)), Some((F, Severity::P2))),
            (310, with_ttf(None), Some((R, Severity::P2))), // not filling any more
        ],
    );
    let plugin = |status: ProbeStatus| {
        Input::Result(CheckResult {
            status: status as i32,
            message: "DISK CRITICAL".into(),
            ..result("command:disk", "command", "x", 1.0)
        })
    };
    let events = check_table(
        "plugin verdicts",
        RuleSet::defaults(),
        &[
            (0, plugin(ProbeStatus::Ok), None),
            (10, plugin(ProbeStatus::Warning), Some((F, Severity::P3))),
            (20, plugin(ProbeStatus::Critical), Some((F, Severity::P2))),
            (30, plugin(ProbeStatus::Ok), Some((R, Severity::P2))),
        ],
    );
    assert_eq!(events[2][0].summary, "disk: DISK CRITICAL");
}

#[test]
fn events_carry_contract_fields_and_agent_labels() {
    let labels = BTreeMap::from([("role".to_owned(), "server".to_owned())]);
    let mut evaluator = AgentEvaluator::new(identity(), labels.clone(), RuleSet::defaults(), HashMap::new());
    let firing = evaluator.evaluate(&[disk(96.2)], at(0), at(1));
    evaluator.apply(firing.updates);
    let firing = &firing.events[0];
    assert_eq!(firing.summary, "Disk /var 96.2% used (critical at 95%)");
    assert_eq!((firing.value, firing.threshold), (96.2, 95.0));
    assert_eq!((firing.started_at, firing.emitted_at, firing.resolved_at), (at(0), at(1), None));
    assert_eq!(firing.labels, labels);
    assert_eq!(firing.rule, "disk_used_pct");
    let resolved = evaluator.evaluate(&[disk(40.0)], at(2), at(2));
    let resolved = &resolved.events[0];
    assert_eq!(resolved.status, Status::Resolved);
    assert_eq!(resolved.fingerprint, firing.fingerprint);
    assert_eq!((resolved.started_at, resolved.resolved_at), (at(0), Some(at(2))));
    assert_eq!(resolved.threshold, 85.0);
    assert_eq!(resolved.summary, "Disk /var 40% used (back below 85%)");
}

#[test]
fn evaluate_does_not_mutate_until_applied() {
    let mut evaluator = AgentEvaluator::new(identity(), BTreeMap::new(), RuleSet::defaults(), HashMap::new());
    let first = evaluator.evaluate(&[disk(99.0)], at(0), at(0));
    let again = evaluator.evaluate(&[disk(99.0)], at(0), at(0));
    // Replaying the same report against the same durable state gives the same
    // transition: this is what makes "crash before commit" safe.
    assert_eq!(first.events.len(), 1);
    assert_eq!(again.events.len(), 1);
    assert_eq!(first.updates, again.updates);
}

#[test]
fn non_finite_values_are_counted_not_evaluated() {
    let mut evaluator = AgentEvaluator::new(identity(), BTreeMap::new(), RuleSet::defaults(), HashMap::new());
    let evaluation = evaluator.evaluate(&[disk(f64::NAN), disk(f64::INFINITY)], at(0), at(0));
    assert!(evaluation.events.is_empty());
    assert_eq!(evaluation.invalid_values, 2);
}

proptest::proptest! {
    /// For any sequence of values, gaps and timer ticks, under a rule with `for` and
    /// flap detection: per fingerprint, events start with firing, a resolved always
    /// follows a firing (never two resolved in a row, never resolved first), and the
    /// last event agrees with what consumers were told.
    #[test]
    fn firing_and_resolved_alternate_per_fingerprint(
        steps in proptest::collection::vec((0.0f64..100.0, 1i64..120, proptest::bool::weighted(0.1)), 1..80)
    ) {
        let text = format!("{DISK_FOR_60S}[flapping]\nwindow = \"10m\"\nchanges = 5\n");
        let mut second = 0;
        let inputs: Vec<(i64, Input)> = steps
            .iter()
            .map(|(value, gap, tick)| {
                second += gap;
                (second, if *tick { Input::Tick } else { Input::Disk(*value) })
            })
            .collect();
        let mut evaluator = AgentEvaluator::new(identity(), BTreeMap::new(), {
            let mut set = (*rules(&text)).clone();
            set.source = "prop".into();
            Arc::new(set)
        }, HashMap::new());
        let mut open: HashMap<String, bool> = HashMap::new();
        for (second, input) in inputs {
            let now = at(second);
            let evaluation = match input {
                Input::Disk(value) => evaluator.evaluate(&[disk(value)], now, now),
                _ => evaluator.tick(now),
            };
            for event in &evaluation.events {
                let firing = open.entry(event.fingerprint.clone()).or_insert(false);
                match event.status {
                    Status::Firing => *firing = true,
                    Status::Resolved => {
                        proptest::prop_assert!(*firing, "resolved without firing: {event:?}");
                        *firing = false;
                    }
                }
            }
            evaluator.apply(evaluation.updates);
        }
        // What consumers were told matches the emitted level of every state.
        for (key, state) in evaluator.states() {
            let fingerprint = alert::fingerprint("acme", "srv-01", &key.check, &key.rule);
            proptest::prop_assert_eq!(open.get(&fingerprint).copied().unwrap_or(false), state.emitted.is_firing());
        }
    }
}

fn service(up: f64) -> CheckResult {
    result("service:web", "service", "up", up)
}

#[test]
fn a_retired_firing_check_resolves_once_and_is_forgotten() {
    let rules = RuleSet::defaults();
    let (mut evaluator, events) =
        scenario(rules, &[(0, Input::Result(service(0.0))), (5, Input::Result(disk(96.0)))]);
    assert_eq!(only(&events[0], "service down", 0), Some((F, Severity::P2)));
    let firing = &events[0][0];
    let down = StateKey { check: "service:web".into(), rule: "service_down".into() };
    assert!(evaluator.state(&down).is_some());

    let retired = evaluator.retire(&["service:web".to_owned()], at(10), at(11));
    assert_eq!(retired.events.len(), 1, "{:?}", retired.events);
    let event = &retired.events[0];
    assert_eq!((event.status, event.severity), (R, Severity::P2));
    assert_eq!(event.fingerprint, firing.fingerprint, "it closes the firing event");
    assert_eq!(
        (event.check.as_str(), event.kind.as_str(), event.rule.as_str()),
        ("service:web", "service", "service_down")
    );
    assert!(event.summary.contains("removed from the agent's configuration"), "{}", event.summary);
    assert_eq!(event.started_at, firing.started_at);
    assert_eq!(event.resolved_at, Some(at(10)));
    // Every state of the check goes (service_down, probe_unknown, no_data…), nothing else.
    assert!(!retired.updates.is_empty());
    assert!(
        retired
            .updates
            .iter()
            .all(|update| update.key.check == "service:web" && update.change == StateChange::Remove)
    );
    // Pure until applied.
    assert!(evaluator.state(&down).is_some());
    evaluator.apply(retired.updates);
    assert!(evaluator.state(&down).is_none());
    let disk_key = StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() };
    assert!(evaluator.state(&disk_key).is_some(), "other checks are untouched");

    // Its silence is no longer a problem: only the disk goes stale.
    let stale = evaluator.tick(at(300));
    assert!(stale.events.iter().all(|event| event.check == "disk:/var"), "{:?}", stale.events);
    assert!(stale.events.iter().any(|event| event.rule == "no_data"));
    // Retiring again is a no-op.
    let again = evaluator.retire(&["service:web".to_owned()], at(301), at(301));
    assert!(again.events.is_empty() && again.updates.is_empty());
}

#[test]
fn a_retired_ok_check_is_removed_without_an_event() {
    let (mut evaluator, events) = scenario(RuleSet::defaults(), &[(0, Input::Result(service(1.0)))]);
    assert!(events[0].is_empty());
    let retired =
        evaluator.retire(&["service:web".to_owned(), "service:never-seen".to_owned()], at(5), at(5));
    assert!(retired.events.is_empty(), "{:?}", retired.events);
    // A check that never left OK has no state to remove.
    assert!(retired.updates.is_empty(), "{:?}", retired.updates);
    assert!(evaluator.tick(at(300)).events.is_empty(), "no no_data for a retired check");
}

#[test]
fn the_agent_cannot_retire_its_offline_state() {
    let key = StateKey {
        check: crate::synthetic::offline::CHECK.into(),
        rule: crate::synthetic::offline::RULE.into(),
    };
    let firing = CheckState { level: Level::Critical, emitted: Level::Critical, ..CheckState::ok(1.0) };
    let mut evaluator = AgentEvaluator::new(
        identity(),
        BTreeMap::new(),
        RuleSet::defaults(),
        HashMap::from([(key.clone(), firing)]),
    );
    let retired = evaluator.retire(&[crate::synthetic::offline::CHECK.to_owned()], at(0), at(0));
    assert!(retired.events.is_empty() && retired.updates.is_empty());
    assert!(evaluator.state(&key).is_some());
}

/// The settled fast path (no clone, no key, no fingerprint) must decide exactly what the
/// full state machine would: nothing to write while settled, and a same-report sequence
/// of values still ends at the last one.
#[test]
fn settled_states_write_nothing_and_same_report_values_still_chain() {
    let rules = RuleSet::defaults();
    let mut evaluator = AgentEvaluator::new(identity(), BTreeMap::new(), rules, HashMap::new());
    // First sight at OK: a pristine state is the same as none, so nothing is kept.
    let first = evaluator.evaluate(&[disk(40.0)], at(0), at(0));
    assert!(first.events.is_empty() && first.updates.is_empty(), "{first:?}");
    // Any OK value changes nothing durable.
    for (second, value) in [(10, 41.0), (20, 60.0), (30, 12.5)] {
        let steady = evaluator.evaluate(&[disk(value)], at(second), at(second));
        assert!(steady.events.is_empty() && steady.updates.is_empty(), "{value}: {steady:?}");
    }
    // In one report: critical, then OK-ish again, then critical: the state machine runs
    // on the report's working state (later results win), not on the settled fast path.
    let report = [disk(97.0), disk(40.0), disk(98.0)];
    let chained = evaluator.evaluate(&report, at(40), at(40));
    let statuses: Vec<Status> = chained.events.iter().map(|event| event.status).collect();
    assert_eq!(statuses, [Status::Firing, Status::Resolved, Status::Firing]);
    let used: Vec<&StateUpdate> =
        chained.updates.iter().filter(|update| update.key.rule == "disk_used_pct").collect();
    assert_eq!(used.len(), 1, "{:?}", chained.updates);
    let StateChange::Set(state) = &used[0].change else { panic!("a set") };
    assert_eq!((state.level, state.value), (Level::Critical, 98.0));
    evaluator.apply(chained.updates);
    // Firing and settled at critical (changes are recent, so not yet "settled"): the
    // machine still prunes its change history later, and never re-fires.
    let again = evaluator.evaluate(&[disk(99.0)], at(50), at(50));
    assert!(again.events.is_empty(), "{again:?}");
    // A settled firing state whose value moves within its level keeps the last value
    // when it is written next.
    let key = StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() };
    assert!(evaluator.state(&key).is_some_and(|state| state.level == Level::Critical));
}

/// Pristine OK states (never crossed, or resolved long enough ago that no flap history
/// is left) are not kept: not on first sight, not from an older store, and a state that
/// becomes pristine again is removed, durably and in memory.
#[test]
fn pristine_ok_states_are_not_kept() {
    let key = StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() };
    // A pristine row written by an earlier version is dropped at load; a firing one stays.
    let down = StateKey { check: "service:web".into(), rule: "service_down".into() };
    let firing = CheckState { level: Level::Critical, emitted: Level::Critical, ..CheckState::ok(0.0) };
    let mut evaluator = AgentEvaluator::new(
        identity(),
        BTreeMap::new(),
        RuleSet::defaults(),
        HashMap::from([(key.clone(), CheckState::ok(40.0)), (down.clone(), firing)]),
    );
    assert!(evaluator.state(&key).is_none());
    assert!(evaluator.state(&down).is_some());

    let fired = evaluator.evaluate(&[disk(97.0)], at(0), at(0));
    assert_eq!(fired.events.len(), 1);
    evaluator.apply(fired.updates);
    let resolved = evaluator.evaluate(&[disk(40.0)], at(10), at(10));
    assert_eq!(resolved.events.iter().map(|event| event.status).collect::<Vec<_>>(), [Status::Resolved]);
    evaluator.apply(resolved.updates);
    // Resolved but with recent changes (flap detection): still kept.
    assert!(evaluator.state(&key).is_some_and(|state| !state.changes.is_empty()));
    let window = RuleSet::defaults().flapping.window.as_secs() as i64;
    let later = evaluator.evaluate(&[disk(41.0)], at(20 + window), at(20 + window));
    assert!(later.events.is_empty(), "{later:?}");
    let removed: Vec<&StateUpdate> = later.updates.iter().filter(|update| update.key == key).collect();
    assert_eq!(removed.len(), 1, "{:?}", later.updates);
    assert_eq!(removed[0].change, StateChange::Remove);
    evaluator.apply(later.updates);
    assert!(evaluator.state(&key).is_none());
    // And it fires again as from scratch.
    let again = evaluator.evaluate(&[disk(97.0)], at(30 + window), at(30 + window));
    assert_eq!(again.events.iter().map(|event| event.status).collect::<Vec<_>>(), [Status::Firing]);
}

/// A session applies what it staged before the commit (`stage` + `apply_staged`, so it
/// holds no copy of the updates meanwhile): the result must be `apply`'s, removals
/// (retired checks) and the staleness watch included.
#[test]
fn staged_updates_apply_like_the_updates() {
    let rules = RuleSet::defaults();
    let mut direct = AgentEvaluator::new(identity(), BTreeMap::new(), rules.clone(), HashMap::new());
    let mut staged = AgentEvaluator::new(identity(), BTreeMap::new(), rules, HashMap::new());
    let steps: [(i64, Vec<CheckResult>, Vec<String>); 5] = [
        (0, vec![disk(40.0), service(1.0)], vec![]),
        (10, vec![disk(97.0), service(0.0)], vec![]),
        (20, vec![disk(98.0)], vec!["service:web".into()]),
        (30, vec![disk(50.0), service(1.0)], vec![]),
        (100, vec![], vec![]),
    ];
    for (second, results, retired) in steps {
        let mut outcomes = Vec::new();
        for (evaluator, stage) in [(&mut direct, false), (&mut staged, true)] {
            let mut evaluation = if results.is_empty() {
                evaluator.tick(at(second))
            } else {
                evaluator.evaluate(&results, at(second), at(second))
            };
            let retirement = evaluator.retire(&retired, at(second), at(second));
            evaluation.events.extend(retirement.events);
            evaluation.updates.extend(retirement.updates);
            outcomes.push((evaluation.events.len(), evaluation.updates.clone()));
            if stage {
                let pending = evaluator.stage(&evaluation.updates);
                drop(evaluation);
                evaluator.apply_staged(pending);
            } else {
                evaluator.apply(evaluation.updates);
            }
        }
        assert_eq!(outcomes[0], outcomes[1], "at {second}");
        let mut direct_states: Vec<_> = direct.states().collect();
        let mut staged_states: Vec<_> = staged.states().collect();
        direct_states.sort_by(|a, b| a.0.cmp(&b.0));
        staged_states.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(direct_states, staged_states, "at {second}");
    }
}
