//! The emission policy and the releaser against a real (temporary) store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::alert::{self, AlertEvent, Severity, Status};
use crate::calendar::{RawCoverage, RawCoverageSet, RawMaintenance};
use crate::identity::AgentIdentity;
use crate::queue::{CommitReport, HelloRecord, Reader, ReleaseOutcome, Store};

/// Monday 2026-01-05 03:00 UTC: night.
fn night() -> Timestamp {
    "2026-01-05T03:00:00Z".parse().unwrap()
}

/// Monday 08:00 UTC: business hours start.
fn morning() -> Timestamp {
    "2026-01-05T08:00:00Z".parse().unwrap()
}

fn minutes(at: Timestamp, minutes: i64) -> Timestamp {
    at.checked_add(SignedDuration::from_mins(minutes)).unwrap()
}

fn window(tenant: &str, start: Timestamp, end: Timestamp) -> Maintenance {
    let raw = RawMaintenance {
        name: Some("patch".into()),
        tenant: Some(tenant.into()),
        start: Some(start.to_string()),
        end: Some(end.to_string()),
        ..RawMaintenance::default()
    };
    Maintenance::from_raw(vec![raw], "maintenance").unwrap()
}

fn office_hours() -> CoverageSet {
    RawCoverageSet {
        default: Some(RawCoverage {
            timezone: Some("UTC".into()),
            hours: BTreeMap::from([("mon-fri".to_owned(), "08:00-18:00".to_owned())]),
            holidays: Vec::new(),
        }),
        tenant: BTreeMap::new(),
    }
    .validate("coverage")
    .unwrap()
}

/// Maintenance for acme from night−1h to night+1h.
fn maintenance_policy() -> Policy {
    Policy { maintenance: window("acme", minutes(night(), -60), minutes(night(), 60)), ..Policy::default() }
}

fn coverage_policy() -> Policy {
    Policy { coverage: office_hours(), ..Policy::default() }
}

fn event(check: &str, status: Status, severity: Severity, at: Timestamp) -> AlertEvent {
    AlertEvent {
        id: alert::new_event_id(),
        fingerprint: alert::fingerprint("acme", "srv-01", check, "disk_used_pct"),
        status,
        severity,
        tenant: "acme".into(),
        agent: "srv-01".into(),
        check: check.into(),
        kind: "disk".into(),
        rule: "disk_used_pct".into(),
        summary: "s".into(),
        value: 99.0,
        threshold: 95.0,
        started_at: at,
        resolved_at: (status == Status::Resolved).then_some(at),
        emitted_at: at,
        labels: BTreeMap::new(),
        runbook: None,
        remediation: None,
        flapping: false,
    }
}

#[test]
fn maintenance_holds_until_the_window_ends_and_only_its_scope() {
    let policy = maintenance_policy();
    let inside = event("disk:/var", Status::Firing, Severity::P1, night());
    assert_eq!(
        policy.decide(&inside),
        Decision::Hold { release_at: minutes(night(), 60), reason: "maintenance:patch".into() }
    );
    let after = event("disk:/var", Status::Firing, Severity::P1, minutes(night(), 60));
    assert_eq!(policy.decide(&after), Decision::Emit, "the end is exclusive");
    let mut other_tenant = inside.clone();
    other_tenant.tenant = "globex".into();
    assert_eq!(policy.decide(&other_tenant), Decision::Emit);
}

#[test]
fn after_hours_holds_p3_p4_until_morning_and_never_p1_p2() {
    let policy = coverage_policy();
    for severity in [Severity::P3, Severity::P4] {
        assert_eq!(
            policy.decide(&event("disk:/var", Status::Firing, severity, night())),
            Decision::Hold { release_at: morning(), reason: AFTER_HOURS.into() },
            "{severity:?}"
        );
    }
    for severity in [Severity::P1, Severity::P2] {
        assert_eq!(policy.decide(&event("disk:/var", Status::Firing, severity, night())), Decision::Emit);
    }
    let daytime = event("disk:/var", Status::Firing, Severity::P3, minutes(morning(), 60));
    assert_eq!(policy.decide(&daytime), Decision::Emit);
    assert!(Policy::default().is_empty() && !policy.is_empty());
    assert_eq!(Policy::default().decide(&event("d", Status::Firing, Severity::P4, night())), Decision::Emit);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn identity() -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() }
}

fn open(dir: &Path, policy: Policy) -> (Store, std::thread::JoinHandle<()>) {
    Store::open_with_policy(dir, Arc::new(policy)).unwrap()
}

async fn hello(store: &Store) {
    store
        .hello(HelloRecord {
            identity: identity(),
            labels: BTreeMap::new(),
            address: None,
            stream_id: "s1".into(),
            hostname: "srv-01".into(),
            os: "Linux".into(),
            agent_version: "0".into(),
            boot_id: "b".into(),
            at: night(),
        })
        .await
        .unwrap();
}

async fn commit(store: &Store, seq: u64, events: Vec<AlertEvent>) {
    let at = events.first().map_or(night(), |event| event.emitted_at);
    store
        .commit(CommitReport {
            identity: identity(),
            stream_id: Some("s1".into()),
            seq: Some(seq),
            events,
            updates: Vec::new(),
            at,
        })
        .await
        .unwrap();
}

fn queued(dir: &Path) -> Vec<AlertEvent> {
    Reader::open(dir)
        .unwrap()
        .events_after(0, 1000)
        .unwrap()
        .into_iter()
        .map(|row| serde_json::from_str(&row.body).unwrap())
        .collect()
}

fn held(dir: &Path) -> usize {
    Reader::open(dir).unwrap().held_events().unwrap().len()
}

fn close(store: Store, writer: std::thread::JoinHandle<()>) {
    drop(store);
    writer.join().unwrap();
}

#[test]
fn a_problem_that_came_and_went_inside_the_window_is_never_emitted() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), maintenance_policy());
        hello(&store).await;
        commit(&store, 1, vec![event("disk:/var", Status::Firing, Severity::P2, night())]).await;
        commit(&store, 2, vec![event("disk:/var", Status::Resolved, Severity::P2, minutes(night(), 10))])
            .await;
        assert!(queued(dir.path()).is_empty());
        assert_eq!(held(dir.path()), 2);
        assert_eq!(Reader::open(dir.path()).unwrap().agents().unwrap()[0].held, 2);
        // Not due before the window ends.
        assert!(store.release_due(minutes(night(), 59)).await.unwrap().is_empty());
        let outcome = store.release_due(minutes(night(), 61)).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 0, dropped: 2, deferred: 0 });
        assert!(queued(dir.path()).is_empty());
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}

#[test]
fn an_alert_still_firing_when_the_window_ends_is_emitted_once_then() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), maintenance_policy());
        hello(&store).await;
        let first = event("disk:/var", Status::Firing, Severity::P3, night());
        commit(&store, 1, vec![first]).await;
        // A severity change inside the window: only the latest counts.
        let latest = event("disk:/var", Status::Firing, Severity::P2, minutes(night(), 5));
        commit(&store, 2, vec![latest.clone()]).await;
        let end = minutes(night(), 61);
        let outcome = store.release_due(end).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 1, dropped: 1, deferred: 0 });
        let events = queued(dir.path());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].id, latest.id);
        assert_eq!(events[0].severity, Severity::P2);
        assert_eq!(events[0].emitted_at, end, "emitted when released");
        // Releasing again finds nothing.
        assert!(store.release_due(minutes(end, 1)).await.unwrap().is_empty());
        assert_eq!(queued(dir.path()).len(), 1);
        close(store, writer);
    });
}

#[test]
fn after_the_window_a_resolve_is_emitted_only_if_consumers_saw_it_fire() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), maintenance_policy());
        hello(&store).await;
        // Firing before the window: emitted.
        let before = minutes(night(), -90);
        commit(&store, 1, vec![event("disk:/var", Status::Firing, Severity::P2, before)]).await;
        // Resolved inside it: held, then released (consumers have an open alert).
        commit(&store, 2, vec![event("disk:/var", Status::Resolved, Severity::P2, night())]).await;
        // Another check firing before and still firing (same severity) inside: nothing new.
        commit(&store, 3, vec![event("disk:/srv", Status::Firing, Severity::P2, before)]).await;
        commit(&store, 4, vec![event("disk:/srv", Status::Firing, Severity::P2, night())]).await;
        let outcome = store.release_due(minutes(night(), 61)).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 1, dropped: 1, deferred: 0 });
        let statuses: Vec<(String, Status)> =
            queued(dir.path()).into_iter().map(|event| (event.check, event.status)).collect();
        assert_eq!(
            statuses,
            [
                ("disk:/var".to_owned(), Status::Firing),
                ("disk:/srv".to_owned(), Status::Firing),
                ("disk:/var".to_owned(), Status::Resolved)
            ]
        );
        close(store, writer);
    });
}

#[test]
fn after_hours_p3_is_held_p1_goes_out_and_the_morning_releases_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), coverage_policy());
        hello(&store).await;
        let p3 = event("disk:/var", Status::Firing, Severity::P3, night());
        let p3_later = event("disk:/home", Status::Firing, Severity::P4, minutes(night(), 1));
        let p1 = event("disk:/p1", Status::Firing, Severity::P1, minutes(night(), 2));
        commit(&store, 1, vec![p3.clone(), p3_later.clone()]).await;
        commit(&store, 2, vec![p1.clone()]).await;
        let events = queued(dir.path());
        assert_eq!(events.iter().map(|event| &event.id).collect::<Vec<_>>(), [&p1.id]);
        assert_eq!(held(dir.path()), 2);
        assert!(store.release_due(minutes(morning(), -1)).await.unwrap().is_empty());
        close(store, writer);

        // The collector restarts before the morning.
        let (store, writer) = open(dir.path(), coverage_policy());
        assert_eq!(held(dir.path()), 2, "held events are durable");
        let outcome = store.release_due(morning()).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 2, dropped: 0, deferred: 0 });
        let ids: Vec<String> = queued(dir.path()).into_iter().map(|event| event.id).collect();
        assert_eq!(ids, [p1.id.clone(), p3.id.clone(), p3_later.id.clone()], "original order after the P1");
        assert!(store.release_due(minutes(morning(), 1)).await.unwrap().is_empty(), "released once");
        close(store, writer);

        let (store, writer) = open(dir.path(), coverage_policy());
        assert!(store.release_due(minutes(morning(), 2)).await.unwrap().is_empty());
        assert_eq!(queued(dir.path()).len(), 3);
        close(store, writer);
    });
}

#[test]
fn an_escalation_sent_now_follows_the_held_history_of_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), coverage_policy());
        hello(&store).await;
        let p3 = event("disk:/var", Status::Firing, Severity::P3, night());
        let p2 = event("disk:/var", Status::Firing, Severity::P2, minutes(night(), 5));
        commit(&store, 1, vec![p3.clone()]).await;
        commit(&store, 2, vec![p2.clone()]).await;
        let ids: Vec<String> = queued(dir.path()).into_iter().map(|event| event.id).collect();
        assert_eq!(ids, [p3.id, p2.id]);
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}

#[test]
fn a_night_window_end_hands_a_p3_to_the_morning() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let policy = Policy { coverage: office_hours(), ..maintenance_policy() };
        let (store, writer) = open(dir.path(), policy);
        hello(&store).await;
        commit(&store, 1, vec![event("disk:/var", Status::Firing, Severity::P3, night())]).await;
        let outcome = store.release_due(minutes(night(), 61)).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 0, dropped: 0, deferred: 1 });
        assert!(queued(dir.path()).is_empty());
        let outcome = store.release_due(morning()).await.unwrap();
        assert_eq!(outcome, ReleaseOutcome { released: 1, dropped: 0, deferred: 0 });
        assert_eq!(queued(dir.path()).len(), 1);
        close(store, writer);
    });
}

#[test]
fn retention_keeps_events_younger_than_a_night_hold_released_after_them() {
    use crate::queue::{Pruned, Retention};
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), coverage_policy());
        hello(&store).await;
        let p3 = event("disk:/var", Status::Firing, Severity::P3, night());
        let p1 = event("disk:/p1", Status::Firing, Severity::P1, minutes(morning(), -10));
        commit(&store, 1, vec![p3.clone()]).await;
        commit(&store, 2, vec![p1.clone()]).await;
        store.release_due(morning()).await.unwrap();
        // Position 2 is the night's P3, still with its 03:00 emitted_at.
        let ids: Vec<String> = queued(dir.path()).into_iter().map(|event| event.id).collect();
        assert_eq!(ids, [p1.id.clone(), p3.id.clone()]);

        // One hour of retention at 08:00: the P1 (07:50) is young, so nothing goes —
        // neither the P1 nor the P3 released a moment ago, which no sink has seen yet.
        let hour = Retention { max_age: Duration::from_secs(3600), ..Retention::default() };
        assert_eq!(store.prune(hour, morning()).await.unwrap(), Pruned { events: 0, pruned_through: 0 });
        assert_eq!(queued(dir.path()).len(), 2);
        // Once the P1 is old as well, both go.
        let later = minutes(morning(), 60);
        assert_eq!(store.prune(hour, later).await.unwrap(), Pruned { events: 2, pruned_through: 2 });
        close(store, writer);
    });
}

/// Maintenance for acme's `disk:/m*` from 07:00 to 07:30, before business hours (08:00).
fn morning_window_policy() -> Policy {
    let raw = RawMaintenance {
        name: Some("patch".into()),
        tenant: Some("acme".into()),
        check: Some("disk:/m*".into()),
        start: Some(minutes(morning(), -60).to_string()),
        end: Some(minutes(morning(), -30).to_string()),
        ..RawMaintenance::default()
    };
    Policy { maintenance: Maintenance::from_raw(vec![raw], "maintenance").unwrap(), coverage: office_hours() }
}

/// (status, severity) of what consumers end up with, in queue order.
fn told(dir: &Path) -> Vec<(Status, Severity)> {
    queued(dir).into_iter().map(|event| (event.status, event.severity)).collect()
}

#[test]
fn an_alert_resolved_just_after_its_window_ended_ends_resolved() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), morning_window_policy());
        hello(&store).await;
        // Firing inside the window (07:10): held until 07:30.
        commit(&store, 1, vec![event("disk:/m", Status::Firing, Severity::P3, minutes(morning(), -50))])
            .await;
        // Resolved at 07:30:01, before the releaser's next pass: after hours, held for
        // the morning. The window's hold of the same alert is due: it goes first.
        let resolved_at = minutes(morning(), -30).checked_add(SignedDuration::from_secs(1)).unwrap();
        commit(&store, 2, vec![event("disk:/m", Status::Resolved, Severity::P3, resolved_at)]).await;
        store.release_due(minutes(morning(), -29)).await.unwrap();
        store.release_due(morning()).await.unwrap();
        assert_eq!(told(dir.path()), [(Status::Firing, Severity::P3), (Status::Resolved, Severity::P3)]);
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}

#[test]
fn a_resolve_inside_a_window_counts_the_nights_held_firing_as_told() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), morning_window_policy());
        hello(&store).await;
        // 06:50, after hours: a P3 fires, held for the morning.
        commit(&store, 1, vec![event("disk:/m", Status::Firing, Severity::P3, minutes(morning(), -70))])
            .await;
        // 07:10, inside the window: it resolves, held until 07:30.
        commit(&store, 2, vec![event("disk:/m", Status::Resolved, Severity::P3, minutes(morning(), -50))])
            .await;
        store.release_due(minutes(morning(), -30)).await.unwrap();
        store.release_due(morning()).await.unwrap();
        // The morning tells the firing, so the resolve is news: the alert ends resolved.
        assert_eq!(told(dir.path()), [(Status::Firing, Severity::P3), (Status::Resolved, Severity::P3)]);
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}

#[test]
fn a_p1_out_of_a_window_goes_out_after_the_nights_held_history() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), morning_window_policy());
        hello(&store).await;
        commit(&store, 1, vec![event("disk:/m", Status::Firing, Severity::P3, minutes(morning(), -70))])
            .await;
        // Escalated to P1 inside the window: at its end the P1 goes out now (no
        // after-hours hold for a P1), after the P3 the night held, not before it.
        commit(&store, 2, vec![event("disk:/m", Status::Firing, Severity::P1, minutes(morning(), -50))])
            .await;
        store.release_due(minutes(morning(), -30)).await.unwrap();
        assert_eq!(told(dir.path()), [(Status::Firing, Severity::P3), (Status::Firing, Severity::P1)]);
        store.release_due(morning()).await.unwrap();
        assert_eq!(told(dir.path()), [(Status::Firing, Severity::P3), (Status::Firing, Severity::P1)]);
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}

#[test]
fn a_window_outcome_handed_to_the_morning_goes_before_a_newer_event_sent_now() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = open(dir.path(), morning_window_policy());
        hello(&store).await;
        // 07:10, inside the window: a P3 fires, held until 07:30.
        commit(&store, 1, vec![event("disk:/m", Status::Firing, Severity::P3, minutes(morning(), -50))])
            .await;
        // 07:30, the window just ended, before the releaser's pass: it resolves as a P1,
        // which goes out now. The window's outcome (firing, a P3 after hours: for the
        // morning) is the alert's history and goes first, not after the resolve.
        commit(&store, 2, vec![event("disk:/m", Status::Resolved, Severity::P1, minutes(morning(), -30))])
            .await;
        store.release_due(morning()).await.unwrap();
        assert_eq!(told(dir.path()), [(Status::Firing, Severity::P3), (Status::Resolved, Severity::P1)]);
        assert_eq!(held(dir.path()), 0);
        close(store, writer);
    });
}
