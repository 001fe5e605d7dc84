use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::alert::{self, Severity, Status};
use crate::evaluate::{CheckState, Level, StateKey, StateUpdate};

fn identity() -> AgentIdentity {
    AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000).unwrap()
}

fn hello_record(stream_id: &str) -> HelloRecord {
    HelloRecord {
        identity: identity(),
        labels: Default::default(),
        address: None,
        stream_id: stream_id.into(),
        hostname: "srv-01".into(),
        os: "Linux".into(),
        agent_version: "0.1.0".into(),
        boot_id: "b".into(),
        at: now(),
    }
}

fn event(status: Status) -> AlertEvent {
    AlertEvent {
        id: alert::new_event_id(),
        fingerprint: alert::fingerprint("acme", "srv-01", "disk:/var", "disk_used_pct"),
        status,
        severity: Severity::P2,
        tenant: "acme".into(),
        agent: "srv-01".into(),
        check: "disk:/var".into(),
        kind: "disk".into(),
        rule: "disk_used_pct".into(),
        summary: "s".into(),
        value: 96.0,
        threshold: 95.0,
        started_at: now(),
        resolved_at: None,
        emitted_at: now(),
        labels: BTreeMap::new(),
        runbook: None,
        remediation: None,
        flapping: false,
    }
}

fn firing_update() -> StateUpdate {
    StateUpdate::set(
        StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() },
        alert::fingerprint("acme", "srv-01", "disk:/var", "disk_used_pct"),
        CheckState {
            level: Level::Critical,
            emitted: Level::Critical,
            started_at: Some(now()),
            ..CheckState::ok(96.0)
        },
    )
}

fn report(stream_id: &str, seq: u64, events: Vec<AlertEvent>, updates: Vec<StateUpdate>) -> CommitReport {
    CommitReport {
        identity: identity(),
        stream_id: Some(stream_id.into()),
        seq: Some(seq),
        events,
        updates,
        at: now(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn commit_dedup_gap_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, writer) = Store::open(dir.path()).unwrap();
        let snapshot = store.hello(hello_record("s1")).await.unwrap();
        assert_eq!(snapshot.last_seq, 0);
        assert!(snapshot.new_stream);

        let applied =
            store.commit(report("s1", 1, vec![event(Status::Firing)], vec![firing_update()])).await.unwrap();
        assert_eq!(applied, Committed::Applied { gap: 0 });
        // Replay of the same seq: recognised, nothing written.
        let replay =
            store.commit(report("s1", 1, vec![event(Status::Firing)], vec![firing_update()])).await.unwrap();
        assert_eq!(replay, Committed::Duplicate { last_seq: 1 });
        // A jump counts the missing reports.
        let jumped = store.commit(report("s1", 5, vec![], vec![])).await.unwrap();
        assert_eq!(jumped, Committed::Applied { gap: 3 });
        drop(store);
        writer.join().unwrap();

        // Reopen: seq, state and events are all there.
        let (store, _writer) = Store::open(dir.path()).unwrap();
        let snapshot = store.hello(hello_record("s1")).await.unwrap();
        assert_eq!(snapshot.last_seq, 5);
        assert!(!snapshot.new_stream);
        let key = StateKey { check: "disk:/var".into(), rule: "disk_used_pct".into() };
        assert_eq!(snapshot.states[&key].level, Level::Critical);
        assert_eq!(snapshot.states[&key].started_at, Some(now()));

        let reader = Reader::open(dir.path()).unwrap();
        let events = reader.events_after(0, 100).unwrap();
        assert_eq!(events.len(), 1, "the replayed report must not have queued a second event");
        let agents = reader.agents().unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(
            (agents[0].last_seq, agents[0].seq_gaps, agents[0].reports, agents[0].open_alerts),
            (5, 3, 2, 1)
        );
        assert_eq!(agents[0].sessions, 2, "two hellos so far");

        // A new spool stream restarts the seq sequence instead of being taken for replay.
        let snapshot = store.hello(hello_record("s2")).await.unwrap();
        assert_eq!(snapshot.last_seq, 0);
        assert!(snapshot.new_stream);
        assert_eq!(
            store.commit(report("s2", 1, vec![], vec![])).await.unwrap(),
            Committed::Applied { gap: 0 }
        );
        // The old stream's reports are refused, not silently merged.
        assert!(store.commit(report("s1", 6, vec![], vec![])).await.is_err());
    });
}

#[test]
fn concurrent_commits_are_group_committed_and_all_acked() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (store, _writer) = Store::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for agent in 0..20 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let identity = AgentIdentity { tenant: "acme".into(), agent: format!("a{agent}") };
                store.hello(HelloRecord { identity: identity.clone(), ..hello_record("s") }).await.unwrap();
                for seq in 1..=25 {
                    let mut event = event(Status::Firing);
                    event.agent = identity.agent.clone();
                    let committed = store
                        .commit(CommitReport {
                            identity: identity.clone(),
                            ..report("s", seq, vec![event], vec![])
                        })
                        .await
                        .unwrap();
                    assert_eq!(committed, Committed::Applied { gap: 0 });
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let reader = Reader::open(dir.path()).unwrap();
        let events = reader.events_after(0, 10_000).unwrap();
        assert_eq!(events.len(), 500);
        // Queue positions strictly increase.
        assert!(events.windows(2).all(|pair| pair[0].pos < pair[1].pos));
        let per_agent: HashMap<String, u64> =
            reader.agents().unwrap().into_iter().map(|row| (row.agent, row.last_seq)).collect();
        assert!(per_agent.values().all(|&seq| seq == 25));
    });
}

#[test]
fn latest_firing_is_the_latest_event_of_each_still_firing_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, _writer) = Store::open(dir.path()).unwrap();
        store.hello(hello_record("s1")).await.unwrap();
        let on = |check: &str, status: Status, severity: Severity| {
            let mut event = event(status);
            event.check = check.into();
            event.fingerprint = alert::fingerprint("acme", "srv-01", check, "disk_used_pct");
            event.severity = severity;
            event
        };
        let events = vec![
            on("disk:/", Status::Firing, Severity::P2),
            on("disk:/var", Status::Firing, Severity::P3),
            on("disk:/", Status::Resolved, Severity::P2),
            on("disk:/srv", Status::Firing, Severity::P3),
            // Escalated: the latest firing event of /var is the P2 one.
            on("disk:/var", Status::Firing, Severity::P2),
            // Resolved, then firing again: open.
            on("disk:/tmp", Status::Firing, Severity::P4),
            on("disk:/tmp", Status::Resolved, Severity::P4),
            on("disk:/tmp", Status::Firing, Severity::P4),
        ];
        let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
        store.commit(report("s1", 1, events, vec![])).await.unwrap();
        let reader = Reader::open(dir.path()).unwrap();
        let open: Vec<String> = reader
            .latest_firing()
            .unwrap()
            .iter()
            .map(|row| serde_json::from_str::<AlertEvent>(&row.body).unwrap().id)
            .collect();
        assert_eq!(open, [ids[3].clone(), ids[4].clone(), ids[7].clone()]);
    });
}

#[test]
fn a_removed_state_is_deleted_with_its_report() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, _writer) = Store::open(dir.path()).unwrap();
        store.hello(hello_record("s1")).await.unwrap();
        store.commit(report("s1", 1, vec![event(Status::Firing)], vec![firing_update()])).await.unwrap();
        let update = firing_update();
        let remove = StateUpdate { change: crate::evaluate::StateChange::Remove, ..update };
        let applied =
            store.commit(report("s1", 2, vec![event(Status::Resolved)], vec![remove])).await.unwrap();
        assert_eq!(applied, Committed::Applied { gap: 0 });
        let snapshot = store.hello(hello_record("s1")).await.unwrap();
        assert!(snapshot.states.is_empty(), "{:?}", snapshot.states);
        assert_eq!(snapshot.last_seq, 2);
        let reader = Reader::open(dir.path()).unwrap();
        assert_eq!(reader.events_after(0, 100).unwrap().len(), 2);
        assert_eq!(reader.agents().unwrap()[0].open_alerts, 0);
    });
}

#[test]
fn a_consumer_starting_at_latest_after_retention_emptied_the_queue_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let (store, _writer) = Store::open(dir.path()).unwrap();
        store.hello(hello_record("s1")).await.unwrap();
        let events = vec![event(Status::Firing), event(Status::Resolved), event(Status::Firing)];
        store.commit(report("s1", 1, events, vec![])).await.unwrap();
        // A quiet month: every event is older than max_age.
        let month_later = now().checked_add(jiff::SignedDuration::from_hours(31 * 24)).unwrap();
        let retention =
            Retention { max_age: std::time::Duration::from_secs(24 * 3600), ..Retention::default() };
        assert_eq!(
            store.prune(retention, month_later).await.unwrap(),
            Pruned { events: 3, pruned_through: 3 }
        );

        // The head does not go back to 0 with the queue empty: "latest" is after 3, so
        // the new consumer is not below pruned_through (which the feed and the sinks
        // report as events lost to retention).
        let reader = Reader::open(dir.path()).unwrap();
        assert_eq!(reader.head().unwrap(), 3);
        assert_eq!(*store.head().borrow(), 3);
        let cursor = store.register_consumer("sink:new", StartAt::Latest).await.unwrap();
        assert_eq!(cursor, 3);
        assert!(cursor >= reader.pruned_through().unwrap());

        store.commit(report("s1", 2, vec![event(Status::Resolved)], vec![])).await.unwrap();
        let next = reader.events_after(cursor, 10).unwrap();
        assert_eq!(next.iter().map(|row| row.pos).collect::<Vec<_>>(), [4]);
        assert_eq!(reader.consumers().unwrap()[0].lag, 1);
    });
}
