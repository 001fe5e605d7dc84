//! A model of the store (proptest): random sequences of Hellos, report commits (new,
//! skipped, replayed and stale seqs, clock commits without one), releases of held events,
//! consumers registering, reading and acking, retention and close-and-reopen, against a
//! plain in-memory model. After every step the store must show exactly what the model
//! says: the queue (positions and bodies), the held events, the head, how far retention
//! went, every consumer's cursor, lag and counts, the dead letters, every agent's seq
//! marks and counters, and the alerts still open. At the end everything is released
//! and each alert must end as its latest committed event said (firing at its severity,
//! or resolved / never told): the check that holds never reorder an alert's history.
//!
//! The model decides hold or emit with `Policy::decide` / `Policy::after_hours`, the ONE
//! place that decides (calendar arithmetic is tested beside it, `hold/tests.rs`); what it
//! checks is what the store does with the decision: durable holds, release order, the
//! latest-per-fingerprint rule of maintenance, held history released before an event of
//! the same alert goes out now.
//!
//! `PROPTEST_CASES` overrides the number of cases (64).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::*;
use crate::alert::{self, Severity, Status};
use crate::calendar::{CoverageSet, Maintenance, RawCoverage, RawCoverageSet, RawMaintenance};
use crate::evaluate::{CheckState, Level, StateChange, StateKey, StateUpdate};
use crate::hold::{AFTER_HOURS, MAINTENANCE_PREFIX};

const TENANT: &str = "acme";
const AGENTS: [&str; 2] = ["a0", "a1"];
/// `disk:/m` is inside the maintenance window's scope, `disk:/a` is not.
const CHECKS: [&str; 2] = ["disk:/a", "disk:/m"];
const RULE: &str = "disk_used_pct";
const CONSUMERS: [&str; 3] = ["sink:one", "sink:two", "feed:ops"];
const SEVERITIES: [Severity; 4] = [Severity::P1, Severity::P2, Severity::P3, Severity::P4];

/// Monday 2026-01-05 06:50 UTC: before the window (07:00–07:30) and before business
/// hours (08:00); a case's clock moves through both.
fn start() -> Timestamp {
    "2026-01-05T06:50:00Z".parse().unwrap()
}

fn policy() -> Policy {
    let window = RawMaintenance {
        name: Some("patch".into()),
        tenant: Some(TENANT.into()),
        check: Some("disk:/m*".into()),
        start: Some("2026-01-05T07:00:00Z".into()),
        end: Some("2026-01-05T07:30:00Z".into()),
        ..RawMaintenance::default()
    };
    let coverage: CoverageSet = RawCoverageSet {
        default: Some(RawCoverage {
            timezone: Some("UTC".into()),
            hours: BTreeMap::from([("mon-fri".to_owned(), "08:00-18:00".to_owned())]),
            holidays: Vec::new(),
        }),
        tenant: BTreeMap::new(),
    }
    .validate("coverage")
    .unwrap();
    Policy { maintenance: Maintenance::from_raw(vec![window], "maintenance").unwrap(), coverage }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(64)
}

// ---- operations ----

/// An event of a report: (check, firing, severity).
type EventSpec = (usize, bool, usize);

#[derive(Debug, Clone)]
enum SeqPick {
    /// `last_seq + 1`.
    Next,
    /// `last_seq + 1 + n`: n reports never arrived.
    Gap(u64),
    /// `last_seq - n` (saturating): a replay.
    Old(u64),
}

#[derive(Debug, Clone)]
enum StartPick {
    Earliest,
    Latest,
    After(i64),
}

#[derive(Debug, Clone)]
enum AckPick {
    /// Through the last event read.
    Read,
    /// Below the cursor: a late, repeated update.
    Stale,
    /// Nothing.
    None,
}

#[derive(Debug, Clone)]
enum Op {
    Hello {
        agent: usize,
        new_stream: bool,
    },
    Commit {
        agent: usize,
        seq: SeqPick,
        stale_stream: bool,
        events: Vec<EventSpec>,
    },
    /// A transition of the clock (staleness, offline): no seq, no stream.
    ClockCommit {
        agent: usize,
        events: Vec<EventSpec>,
    },
    Release,
    Advance {
        minutes: i64,
    },
    Register {
        consumer: usize,
        start: StartPick,
    },
    Read {
        consumer: usize,
        limit: usize,
        ack: AckPick,
        dead_letter: bool,
    },
    Prune {
        max_age_minutes: u64,
        max_events: u64,
    },
    Reopen,
}

fn event_specs() -> impl Strategy<Value = Vec<EventSpec>> {
    proptest::collection::vec((0..CHECKS.len(), any::<bool>(), 0..SEVERITIES.len()), 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS.len();
    let consumer = 0..CONSUMERS.len();
    prop_oneof![
        2 => (agent.clone(), proptest::bool::weighted(0.2))
            .prop_map(|(agent, new_stream)| Op::Hello { agent, new_stream }),
        6 => (
            agent.clone(),
            prop_oneof![4 => Just(SeqPick::Next), 1 => (1..4u64).prop_map(SeqPick::Gap), 2 => (0..3u64).prop_map(SeqPick::Old)],
            proptest::bool::weighted(0.05),
            event_specs(),
        )
            .prop_map(|(agent, seq, stale_stream, events)| Op::Commit { agent, seq, stale_stream, events }),
        1 => (agent, event_specs()).prop_map(|(agent, events)| Op::ClockCommit { agent, events }),
        2 => Just(Op::Release),
        2 => (0..30i64).prop_map(|minutes| Op::Advance { minutes }),
        1 => (
            consumer.clone(),
            prop_oneof![Just(StartPick::Earliest), Just(StartPick::Latest), (0..12i64).prop_map(StartPick::After)],
        )
            .prop_map(|(consumer, start)| Op::Register { consumer, start }),
        3 => (
            consumer,
            1..5usize,
            prop_oneof![4 => Just(AckPick::Read), 1 => Just(AckPick::Stale), 1 => Just(AckPick::None)],
            proptest::bool::weighted(0.15),
        )
            .prop_map(|(consumer, limit, ack, dead_letter)| Op::Read { consumer, limit, ack, dead_letter }),
        1 => (
            prop_oneof![Just(10u64), Just(45), Just(1_000_000)],
            prop_oneof![Just(0u64), Just(2), Just(5), Just(1_000_000)],
        )
            .prop_map(|(max_age_minutes, max_events)| Op::Prune { max_age_minutes, max_events }),
        1 => Just(Op::Reopen),
    ]
}

// ---- the model ----

#[derive(Debug, Clone)]
struct Queued {
    pos: i64,
    event: AlertEvent,
    body: String,
}

#[derive(Debug, Clone)]
struct Held {
    seq: i64,
    event: AlertEvent,
    body: String,
    reason: String,
    release_at: i64,
}

#[derive(Debug, Clone, Default)]
struct AgentModel {
    /// Index of the current stream (`<agent>-s<n>`).
    stream: u32,
    last_seq: u64,
    seq_gaps: u64,
    reports: u64,
    sessions: u64,
    /// check → level of the states kept (this model sets Critical or removes).
    states: BTreeMap<String, Level>,
}

#[derive(Debug, Clone, Default)]
struct ConsumerModel {
    acked: i64,
    delivered: u64,
    dead_lettered: u64,
}

#[derive(Debug, Default)]
struct Model {
    queue: Vec<Queued>,
    /// The highest position ever assigned (positions are never reused).
    last_pos: i64,
    held: Vec<Held>,
    last_held_seq: i64,
    pruned_through: i64,
    agents: BTreeMap<String, AgentModel>,
    consumers: BTreeMap<String, ConsumerModel>,
    /// (consumer, pos, event id, attempts), in insertion order.
    dead_letters: Vec<(String, i64, String, u32)>,
    /// Per alert (fingerprint), its latest event committed, held or not.
    last_committed: BTreeMap<String, (Status, Severity)>,
}

/// What the store shows, compared whole after every step.
#[derive(Debug, PartialEq)]
struct Observed {
    queue: Vec<(i64, String)>,
    held: Vec<(String, i64, String)>,
    head: i64,
    published_head: i64,
    pruned_through: i64,
    /// (name, acked_pos, lag, delivered, dead_lettered)
    consumers: Vec<(String, i64, i64, u64, u64)>,
    dead_letters: Vec<(String, i64, String, u32)>,
    /// (agent, last_seq, seq_gaps, reports, sessions, open_alerts, held)
    agents: Vec<(String, u64, u64, u64, u64, u64, u64)>,
    latest_firing: Vec<i64>,
}

fn stream_id(agent: &str, stream: u32) -> String {
    format!("{agent}-s{stream}")
}

fn body(event: &AlertEvent) -> String {
    serde_json::to_string(event).unwrap()
}

impl Model {
    fn hello(&mut self, agent: &str, new_stream: bool) -> (u64, bool, BTreeMap<String, Level>) {
        let known = self.agents.contains_key(agent);
        let state = self.agents.entry(agent.to_owned()).or_default();
        state.sessions += 1;
        if known && new_stream {
            state.stream += 1;
        }
        if !known || new_stream {
            state.last_seq = 0;
        }
        (state.last_seq, !known || new_stream, state.states.clone())
    }

    fn commit(
        &mut self,
        policy: &Policy,
        agent: &str,
        stream: Option<&str>,
        seq: Option<u64>,
        events: &[AlertEvent],
    ) -> Option<Committed> {
        let state = self.agents.get(agent)?;
        if stream.is_some_and(|stream| stream != stream_id(agent, state.stream)) {
            return None;
        }
        let gap = match seq {
            Some(seq) if seq <= state.last_seq => {
                return Some(Committed::Duplicate { last_seq: state.last_seq });
            }
            Some(seq) => seq - state.last_seq - 1,
            None => 0,
        };
        for event in events {
            self.last_committed.insert(event.fingerprint.clone(), (event.status, event.severity));
            match policy.decide(event) {
                Decision::Hold { release_at, reason } => {
                    self.release_before_hold(policy, &event.fingerprint, event.emitted_at);
                    self.hold(event.clone(), body(event), release_at, reason);
                }
                Decision::Emit => {
                    self.release_before_emit(policy, &event.fingerprint, event.emitted_at);
                    self.insert(event.clone(), body(event));
                }
            }
        }
        let state = self.agents.get_mut(agent).expect("checked above");
        for event in events {
            match event.status {
                Status::Firing => state.states.insert(event.check.clone(), Level::Critical),
                Status::Resolved => state.states.remove(&event.check),
            };
        }
        if let Some(seq) = seq {
            state.last_seq = seq;
            state.seq_gaps += gap;
            state.reports += 1;
        }
        Some(Committed::Applied { gap })
    }

    fn insert(&mut self, event: AlertEvent, body: String) {
        self.last_pos += 1;
        self.queue.push(Queued { pos: self.last_pos, event, body });
    }

    fn hold(&mut self, event: AlertEvent, body: String, release_at: Timestamp, reason: String) {
        self.last_held_seq += 1;
        self.held.push(Held {
            seq: self.last_held_seq,
            event,
            body,
            reason,
            release_at: release_at.as_millisecond(),
        });
    }

    fn release_before_emit(&mut self, policy: &Policy, fingerprint: &str, now: Timestamp) {
        let now_ms = now.as_millisecond();
        let pending = self.held.iter().any(|held| {
            held.event.fingerprint == fingerprint && (held.release_at <= now_ms || held.reason == AFTER_HOURS)
        });
        // A window's outcome deferred to the morning by this release goes first as well.
        if pending && self.release(policy, now, Some((fingerprint, true))).deferred > 0 {
            self.release(policy, now, Some((fingerprint, true)));
        }
    }

    fn release_before_hold(&mut self, policy: &Policy, fingerprint: &str, now: Timestamp) {
        let now_ms = now.as_millisecond();
        if self.held.iter().any(|held| held.event.fingerprint == fingerprint && held.release_at <= now_ms) {
            self.release(policy, now, Some((fingerprint, false)));
        }
    }

    /// The due holds (of one alert only, and its after-hours ones too when asked), in
    /// hold order.
    fn release(&mut self, policy: &Policy, now: Timestamp, only: Option<(&str, bool)>) -> ReleaseOutcome {
        let now_ms = now.as_millisecond();
        let selected = |held: &Held| match only {
            None => held.release_at <= now_ms,
            Some((fingerprint, after_hours_too)) => {
                held.event.fingerprint == fingerprint
                    && (held.release_at <= now_ms || (after_hours_too && held.reason == AFTER_HOURS))
            }
        };
        let (rows, kept): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(selected);
        self.held = kept;
        let mut latest: HashMap<String, i64> = HashMap::new();
        for row in rows.iter().filter(|row| row.reason.starts_with(MAINTENANCE_PREFIX)) {
            latest.insert(row.event.fingerprint.clone(), row.seq);
        }
        let mut outcome = ReleaseOutcome::default();
        for row in rows {
            if !row.reason.starts_with(MAINTENANCE_PREFIX) {
                self.insert(row.event, row.body);
                outcome.released += 1;
                continue;
            }
            if latest.get(&row.event.fingerprint) != Some(&row.seq) {
                outcome.dropped += 1;
                continue;
            }
            // Told last: an older after-hours hold of the alert (the morning tells it
            // before this), else its latest queued event.
            let fingerprint = row.event.fingerprint.clone();
            let earlier_after_hours = |held: &Held| {
                held.event.fingerprint == fingerprint && held.reason == AFTER_HOURS && held.seq < row.seq
            };
            let earlier = self
                .held
                .iter()
                .rev()
                .find(|held| earlier_after_hours(held))
                .map(|held| (held.event.status, held.event.severity));
            let last = earlier.or_else(|| {
                let queued =
                    self.queue.iter().rev().find(|queued| queued.event.fingerprint == fingerprint)?;
                Some((queued.event.status, queued.event.severity))
            });
            let news = match row.event.status {
                Status::Firing => last != Some((Status::Firing, row.event.severity)),
                Status::Resolved => last.is_some_and(|(status, _)| status == Status::Firing),
            };
            if !news {
                outcome.dropped += 1;
                continue;
            }
            let mut event = row.event.clone();
            event.emitted_at = now;
            let body = body(&event);
            match policy.after_hours(&event) {
                Decision::Hold { release_at, reason } => {
                    self.hold(event, body, release_at, reason);
                    outcome.deferred += 1;
                }
                Decision::Emit => {
                    // The older after-hours holds go first.
                    let (before, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
                        .into_iter()
                        .partition(|held| earlier_after_hours(held));
                    self.held = kept;
                    for held in before {
                        self.insert(held.event, held.body);
                        outcome.released += 1;
                    }
                    self.insert(event, body);
                    outcome.released += 1;
                }
            }
        }
        outcome
    }

    fn register(&mut self, consumer: &str, start: StartAt) -> i64 {
        let head = self.last_pos;
        self.consumers
            .entry(consumer.to_owned())
            .or_insert_with(|| ConsumerModel {
                acked: match start {
                    StartAt::Earliest => 0,
                    StartAt::Latest => head,
                    StartAt::After(pos) => pos.max(0),
                },
                ..ConsumerModel::default()
            })
            .acked
    }

    fn read(&self, after: i64, limit: usize) -> Vec<(i64, String)> {
        self.queue
            .iter()
            .filter(|queued| queued.pos > after)
            .take(limit)
            .map(|q| (q.pos, q.body.clone()))
            .collect()
    }

    fn advance(&mut self, update: &ConsumerUpdate) -> bool {
        let Some(consumer) = self.consumers.get_mut(&update.consumer) else { return false };
        for letter in &update.dead_letters {
            let known = self
                .dead_letters
                .iter()
                .any(|(name, _, event_id, _)| *name == update.consumer && *event_id == letter.event_id);
            if !known {
                self.dead_letters.push((
                    update.consumer.clone(),
                    letter.pos,
                    letter.event_id.clone(),
                    letter.attempts,
                ));
                consumer.dead_lettered += 1;
            }
        }
        consumer.acked = consumer.acked.max(update.acked_pos);
        consumer.delivered += update.delivered;
        true
    }

    /// Retention: by count, and by age as a prefix of the queue — an event is deleted
    /// when it and every event before it are older than `max_age` (positions are
    /// emission order; an after-hours release keeps its original `emitted_at`).
    fn prune(&mut self, retention: Retention, now: Timestamp) -> Pruned {
        let head = self.last_pos;
        let by_count = head - i64::try_from(retention.max_events).unwrap();
        let cutoff = now.checked_sub(SignedDuration::try_from(retention.max_age).unwrap()).unwrap();
        let by_age = self
            .queue
            .iter()
            .find(|queued| queued.event.emitted_at >= cutoff)
            .map_or(head, |young| young.pos - 1);
        let through = by_count.max(by_age);
        if through <= self.pruned_through {
            return Pruned { events: 0, pruned_through: self.pruned_through };
        }
        let before = self.queue.len();
        self.queue.retain(|queued| queued.pos > through);
        self.pruned_through = through;
        Pruned { events: (before - self.queue.len()) as u64, pruned_through: through }
    }

    fn observed(&self) -> Observed {
        let head = self.last_pos;
        let mut latest_firing: BTreeMap<&str, &Queued> = BTreeMap::new();
        for queued in &self.queue {
            latest_firing.insert(&queued.event.fingerprint, queued);
        }
        let mut latest_firing: Vec<i64> = latest_firing
            .values()
            .filter(|queued| queued.event.status == Status::Firing)
            .map(|queued| queued.pos)
            .collect();
        latest_firing.sort();
        Observed {
            queue: self.queue.iter().map(|queued| (queued.pos, queued.body.clone())).collect(),
            held: self
                .held
                .iter()
                .map(|held| (held.reason.clone(), held.release_at, held.body.clone()))
                .collect(),
            head,
            published_head: head,
            pruned_through: self.pruned_through,
            consumers: self
                .consumers
                .iter()
                .map(|(name, c)| {
                    (name.clone(), c.acked, (head - c.acked).max(0), c.delivered, c.dead_lettered)
                })
                .collect(),
            dead_letters: self.dead_letters.clone(),
            agents: self
                .agents
                .iter()
                .map(|(agent, a)| {
                    let held = self.held.iter().filter(|held| held.event.agent == *agent).count() as u64;
                    (
                        agent.clone(),
                        a.last_seq,
                        a.seq_gaps,
                        a.reports,
                        a.sessions,
                        a.states.len() as u64,
                        held,
                    )
                })
                .collect(),
            latest_firing,
        }
    }
}

// ---- the real store ----

fn observe(dir: &Path, store: &Store) -> Observed {
    let reader = Reader::open(dir).unwrap();
    // In insertion order, as the model keeps them.
    let dead_letters = reader
        .dead_letters(None)
        .unwrap()
        .into_iter()
        .map(|row| (row.consumer, row.pos, row.event_id, row.attempts))
        .collect();
    Observed {
        queue: reader
            .events_after(0, usize::MAX >> 1)
            .unwrap()
            .into_iter()
            .map(|row| (row.pos, row.body))
            .collect(),
        held: reader.held_events().unwrap(),
        head: reader.head().unwrap(),
        published_head: *store.head().borrow(),
        pruned_through: reader.pruned_through().unwrap(),
        consumers: reader
            .consumers()
            .unwrap()
            .into_iter()
            .map(|row| (row.name, row.acked_pos, row.lag, row.delivered, row.dead_lettered))
            .collect(),
        dead_letters,
        agents: reader
            .agents()
            .unwrap()
            .into_iter()
            .map(|row| {
                (row.agent, row.last_seq, row.seq_gaps, row.reports, row.sessions, row.open_alerts, row.held)
            })
            .collect(),
        latest_firing: reader.latest_firing().unwrap().into_iter().map(|row| row.pos).collect(),
    }
}

fn make_event(agent: &str, (check, firing, severity): EventSpec, at: Timestamp) -> AlertEvent {
    let check = CHECKS[check];
    let status = if firing { Status::Firing } else { Status::Resolved };
    AlertEvent {
        id: alert::new_event_id(),
        fingerprint: alert::fingerprint(TENANT, agent, check, RULE),
        status,
        severity: SEVERITIES[severity],
        tenant: TENANT.into(),
        agent: agent.into(),
        check: check.into(),
        kind: "disk".into(),
        rule: RULE.into(),
        summary: format!("{check} {status:?}"),
        value: 99.0,
        threshold: 95.0,
        started_at: at,
        resolved_at: (!firing).then_some(at),
        emitted_at: at,
        labels: BTreeMap::new(),
        runbook: None,
        remediation: None,
        flapping: false,
    }
}

/// The state changes evaluation would commit with these events: firing sets a critical
/// state, resolved removes it.
fn updates(events: &[AlertEvent]) -> Vec<StateUpdate> {
    events
        .iter()
        .map(|event| {
            let key = StateKey { check: event.check.clone(), rule: RULE.into() };
            let change = match event.status {
                Status::Firing => StateChange::Set(CheckState {
                    level: Level::Critical,
                    emitted: Level::Critical,
                    started_at: Some(event.emitted_at),
                    ..CheckState::ok(event.value)
                }),
                Status::Resolved => StateChange::Remove,
            };
            StateUpdate { key, fingerprint: event.fingerprint.clone(), change }
        })
        .collect()
}

fn hello_record(agent: &str, stream_id: String, at: Timestamp) -> HelloRecord {
    HelloRecord {
        identity: AgentIdentity { tenant: TENANT.into(), agent: agent.into() },
        labels: BTreeMap::new(),
        address: None,
        stream_id,
        hostname: agent.into(),
        os: "Linux".into(),
        agent_version: "0".into(),
        boot_id: "b".into(),
        at,
    }
}

fn open(dir: &Path) -> (Store, thread::JoinHandle<()>) {
    Store::open_with_policy(dir, Arc::new(policy())).unwrap()
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy();
    let (mut store, mut writer) = open(dir.path());
    let mut model = Model::default();
    let mut now = start();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Hello { agent, new_stream } => {
                let agent = AGENTS[agent];
                let (last_seq, new, states) = model.hello(agent, new_stream);
                let stream = stream_id(agent, model.agents[agent].stream);
                let snapshot = store.hello(hello_record(agent, stream, now)).await.unwrap();
                prop_assert_eq!((snapshot.last_seq, snapshot.new_stream), (last_seq, new), "step {}", step);
                let got: BTreeMap<String, Level> =
                    snapshot.states.iter().map(|(key, state)| (key.check.clone(), state.level)).collect();
                prop_assert_eq!(got, states, "step {}", step);
            }
            Op::Commit { agent, seq, stale_stream, events } => {
                let agent = AGENTS[agent];
                let known = model.agents.get(agent).cloned().unwrap_or_default();
                let stream = if stale_stream {
                    stream_id(agent, known.stream + 1)
                } else {
                    stream_id(agent, known.stream)
                };
                let seq = match seq {
                    SeqPick::Next => known.last_seq + 1,
                    SeqPick::Gap(n) => known.last_seq + 1 + n,
                    SeqPick::Old(n) => known.last_seq.saturating_sub(n),
                };
                let events: Vec<AlertEvent> =
                    events.into_iter().map(|spec| make_event(agent, spec, now)).collect();
                let want = model.commit(&policy, agent, Some(&stream), Some(seq), &events);
                let got = store
                    .commit(CommitReport {
                        identity: AgentIdentity { tenant: TENANT.into(), agent: agent.into() },
                        stream_id: Some(stream),
                        seq: Some(seq),
                        updates: updates(&events),
                        events,
                        at: now,
                    })
                    .await
                    .ok();
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::ClockCommit { agent, events } => {
                let agent = AGENTS[agent];
                let events: Vec<AlertEvent> =
                    events.into_iter().map(|spec| make_event(agent, spec, now)).collect();
                let want = model.commit(&policy, agent, None, None, &events);
                let got = store
                    .commit(CommitReport {
                        identity: AgentIdentity { tenant: TENANT.into(), agent: agent.into() },
                        stream_id: None,
                        seq: None,
                        updates: updates(&events),
                        events,
                        at: now,
                    })
                    .await
                    .ok();
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Release => {
                let want = model.release(&policy, now, None);
                prop_assert_eq!(store.release_due(now).await.unwrap(), want, "step {}", step);
            }
            Op::Advance { minutes } => now = now.checked_add(SignedDuration::from_mins(minutes)).unwrap(),
            Op::Register { consumer, start } => {
                let start = match start {
                    StartPick::Earliest => StartAt::Earliest,
                    StartPick::Latest => StartAt::Latest,
                    StartPick::After(pos) => StartAt::After(pos),
                };
                let want = model.register(CONSUMERS[consumer], start);
                prop_assert_eq!(store.register_consumer(CONSUMERS[consumer], start).await.unwrap(), want);
            }
            Op::Read { consumer, limit, ack, dead_letter } => {
                let name = CONSUMERS[consumer];
                let cursor = model.consumers.get(name).map_or(0, |c| c.acked);
                let want = model.read(cursor, limit);
                let got: Vec<(i64, String)> = Reader::open(dir.path())
                    .unwrap()
                    .events_after(cursor, limit)
                    .unwrap()
                    .into_iter()
                    .map(|row| (row.pos, row.body))
                    .collect();
                prop_assert_eq!(&got, &want, "step {}", step);
                let acked_pos = match ack {
                    AckPick::Read => match got.last() {
                        Some((pos, _)) => *pos,
                        None => continue,
                    },
                    AckPick::Stale => cursor - 2,
                    AckPick::None => continue,
                };
                let dead_letters = match got.first() {
                    Some((pos, body)) if dead_letter => vec![DeadLetter {
                        pos: *pos,
                        event_id: serde_json::from_str::<AlertEvent>(body).unwrap().id,
                        error: "refused".into(),
                        attempts: 3,
                        body: body.clone(),
                    }],
                    _ => Vec::new(),
                };
                let update = ConsumerUpdate {
                    consumer: name.into(),
                    acked_pos,
                    delivered: got.len() as u64,
                    dead_letters,
                };
                let want = model.advance(&update);
                prop_assert_eq!(store.advance_consumer(update).await.is_ok(), want, "step {}", step);
            }
            Op::Prune { max_age_minutes, max_events } => {
                let retention =
                    Retention { max_age: std::time::Duration::from_secs(max_age_minutes * 60), max_events };
                let want = model.prune(retention, now);
                prop_assert_eq!(store.prune(retention, now).await.unwrap(), want, "step {}", step);
            }
            Op::Reopen => {
                drop(store);
                writer.join().unwrap();
                (store, writer) = open(dir.path());
            }
        }
        prop_assert_eq!(observe(dir.path(), &store), model.observed(), "after step {}", step);
    }

    // Everything due, in business hours: nothing stays held, and (unless retention
    // deleted some) each alert ends as its latest event said — firing at that severity,
    // or resolved / never told at all.
    let tuesday_noon: Timestamp = "2026-01-06T12:00:00Z".parse().unwrap();
    let want = model.release(&policy, tuesday_noon, None);
    prop_assert_eq!(store.release_due(tuesday_noon).await.unwrap(), want);
    prop_assert_eq!(observe(dir.path(), &store), model.observed());
    prop_assert!(model.held.is_empty());
    if model.pruned_through == 0 {
        let queue: Vec<AlertEvent> = Reader::open(dir.path())
            .unwrap()
            .events_after(0, usize::MAX >> 1)
            .unwrap()
            .iter()
            .map(|row| serde_json::from_str(&row.body).unwrap())
            .collect();
        for (fingerprint, (status, severity)) in &model.last_committed {
            let told = queue.iter().rev().find(|event| event.fingerprint == *fingerprint);
            let told = told.map(|event| (event.status, event.severity));
            match status {
                Status::Firing => prop_assert_eq!(told, Some((Status::Firing, *severity)), "{}", fingerprint),
                Status::Resolved => prop_assert!(
                    told.is_none_or(|(status, _)| status == Status::Resolved),
                    "{} ends {:?}",
                    fingerprint,
                    told
                ),
            }
        }
    }
    drop(store);
    writer.join().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..48)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(ops))?;
    }
}
