//! Helpers for sink tests: real stores in temporary directories, real events.

use std::collections::BTreeMap;

use crate::alert::{self, AlertEvent, Severity, Status};
use crate::identity::AgentIdentity;
use crate::queue::{CommitReport, HelloRecord, Store};

/// An event of `tenant`/`agent` for `check` (fingerprint from those, rule `test_rule`).
pub fn event(tenant: &str, agent: &str, check: &str, status: Status, severity: Severity) -> AlertEvent {
    let now = jiff::Timestamp::now();
    AlertEvent {
        id: alert::new_event_id(),
        fingerprint: alert::fingerprint(tenant, agent, check, "test_rule"),
        status,
        severity,
        tenant: tenant.into(),
        agent: agent.into(),
        check: check.into(),
        kind: check.split(':').next().unwrap_or("disk").into(),
        rule: "test_rule".into(),
        summary: format!("{check} is {status:?}"),
        value: 96.5,
        threshold: 95.0,
        started_at: now,
        resolved_at: (status == Status::Resolved).then_some(now),
        emitted_at: now,
        labels: BTreeMap::from([("role".to_owned(), "server".to_owned())]),
        runbook: Some("https://runbooks.example.net/disk".into()),
        remediation: None,
        flapping: false,
    }
}

/// Appends `events` to the queue as one clock-driven commit of their (first) agent.
pub async fn queue_events(store: &Store, events: Vec<AlertEvent>) {
    let Some(first) = events.first() else { return };
    let identity = AgentIdentity { tenant: first.tenant.clone(), agent: first.agent.clone() };
    let now = jiff::Timestamp::now();
    store
        .hello(HelloRecord {
            identity: identity.clone(),
            labels: BTreeMap::new(),
            address: None,
            stream_id: "test-stream".into(),
            hostname: identity.agent.clone(),
            os: "Linux".into(),
            agent_version: "test".into(),
            boot_id: "boot".into(),
            at: now,
        })
        .await
        .expect("hello");
    store
        .commit(CommitReport { identity, stream_id: None, seq: None, events, updates: Vec::new(), at: now })
        .await
        .expect("commit");
}

/// Polls `probe` every 20 ms until it returns Some; panics after `seconds`.
pub async fn eventually<T>(what: &str, seconds: u64, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {seconds}s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runner settings for a test sink: every event of a fresh store (`Earliest`, so events
/// queued before the runner registered its cursor are not missed), 60 s give-up.
pub fn settings(name: &str, concurrency: usize) -> super::SinkSettings {
    super::SinkSettings {
        name: name.into(),
        filter: super::Filter::default(),
        concurrency,
        give_up_after: std::time::Duration::from_secs(60),
        start: crate::queue::StartAt::Earliest,
    }
}

/// A sink built from its spec and run by the real runner until [`Running::stop`].
pub struct Running {
    stop: tokio_util::sync::CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    pub stats: std::sync::Arc<super::SinkStats>,
}

/// Builds `spec` (as the collector does at startup) and runs it over `store`.
pub fn run(store: &Store, data_dir: &std::path::Path, spec: super::SinkSpec) -> Running {
    let context = super::BuildContext { data_dir: data_dir.to_owned() };
    let sink = spec.build(&context).expect("the sink builds");
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let stats = std::sync::Arc::new(super::SinkStats::new(&spec.settings.name, sink.kind()));
    tasks.spawn(super::run_sink(store.clone(), data_dir.to_owned(), spec, sink, stats.clone(), stop.clone()));
    Running { stop, tasks, stats }
}

impl Running {
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}
