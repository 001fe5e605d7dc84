//! The embedded durable store: the alert queue plus what evaluation must remember.
//!
//! # File
//! `<data_dir>/nightowl.db`, SQLite in WAL mode with `synchronous = FULL`: a transaction
//! is on disk (fsync'd) when `COMMIT` returns, and it survives `kill -9` and power loss.
//! WAL lets readers (`alerts tail`, `agents list`, other processes) read while the
//! collector writes.
//!
//! # Tables
//! - `events`: the alert queue. `pos` (INTEGER PRIMARY KEY AUTOINCREMENT) is the queue
//!   position, strictly increasing and never reused; `id` is the event id (unique);
//!   `body` is the event's JSON exactly as consumers receive it.
//! - `agents`: per (tenant, agent): the spool `stream_id`, `last_seq` (highest processed
//!   report), counters (`seq_gaps`, `reports`, `sessions`), when the current session began and what Hello said.
//! - `check_states`: per (tenant, agent, check, rule): level, fingerprint, firing since,
//!   and `machine`, the whole state (pending, flap history) as JSON.
//! - `held_events` (v4): events the emission policy (`crate::hold`) held back
//!   (maintenance window, after hours): `seq` (hold order), `id` (unique), tenant, agent,
//!   fingerprint, status, severity, `reason` (`after-hours`, `maintenance:<name>`),
//!   `release_at` (unix milliseconds) and `body`. The releaser moves due ones into
//!   `events` in one transaction ([`Store::release_due`], `held.rs`).
//!
//! # Invariants
//! 1. A report's events, its state changes (set or removed: a check the agent retired)
//!    and its `last_seq` are committed in ONE transaction ([`CommitReport`]). So either all of a report's effects are durable
//!    (and a replay of it is recognised by `last_seq` and dropped) or none are (and the
//!    replay evaluates again from the same state, producing the same transitions).
//! 2. The collector acks a seq only after that transaction committed.
//! 3. `pos` order is emission order; readers resume from a `pos`.
//!
//! # Writer
//! One thread owns the write connection. Commits from all sessions are queued to it and
//! applied in group commits (several reports, one fsync), which is what makes thousands
//! of sessions cheap. Each caller gets its own result back.

mod consumers;
mod held;
mod read;
mod tasks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use crate::alert::AlertEvent;
use crate::evaluate::{CheckState, Level, StateChange, StateKey, StateUpdate};
use crate::hold::{Decision, Policy};
use crate::identity::AgentIdentity;

pub use consumers::{ConsumerUpdate, DeadLetter, Pruned, Retention, StartAt};
pub use held::ReleaseOutcome;
pub use read::{AgentRow, ConsumerRow, DeadLetterRow, EventRow, KnownAgent, Reader};
pub use tasks::{RELEASE_EVERY, run_releaser, run_retention};

/// The database file inside the data directory.
pub const DB_FILE: &str = "nightowl.db";

/// Schema version, in SQLite's `user_version`. Bump it with a migration in
/// [`open_connection`] whenever [`SCHEMA`] changes shape.
const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    pos INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    emitted_at TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_tenant_pos ON events (tenant, pos);
CREATE TABLE IF NOT EXISTS agents (
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    seq_gaps INTEGER NOT NULL DEFAULT 0,
    reports INTEGER NOT NULL DEFAULT 0,
    hostname TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    agent_version TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT '',
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    connected_at TEXT NOT NULL,
    sessions INTEGER NOT NULL DEFAULT 0,
    labels TEXT,
    address TEXT,
    PRIMARY KEY (tenant, agent)
);
CREATE TABLE IF NOT EXISTS check_states (
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    check_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    level TEXT NOT NULL,
    started_at TEXT,
    value REAL NOT NULL,
    updated_at TEXT NOT NULL,
    machine TEXT,
    PRIMARY KEY (tenant, agent, check_id, rule)
);
CREATE TABLE IF NOT EXISTS held_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    agent TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    severity TEXT NOT NULL,
    reason TEXT NOT NULL,
    held_at TEXT NOT NULL,
    release_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS held_events_release ON held_events (release_at);
CREATE INDEX IF NOT EXISTS held_events_fingerprint ON held_events (fingerprint, seq);
CREATE INDEX IF NOT EXISTS held_events_agent ON held_events (tenant, agent);
CREATE INDEX IF NOT EXISTS events_fingerprint_pos ON events (fingerprint, pos);
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("alert store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("alert store {path}: cannot create directory: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("alert store {path}: corrupt row: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("alert store writer has stopped")]
    WriterGone,
    #[error("alert store: batch not committed: {0}")]
    BatchFailed(String),
}

fn sqlite(path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite { path: path.to_owned(), source }
}

/// Opens a connection with the durability settings every writer and reader relies on.
fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let flags = if read_only {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let connection = Connection::open_with_flags(path, flags).map_err(sqlite(path))?;
    connection.busy_timeout(std::time::Duration::from_secs(5)).map_err(sqlite(path))?;
    // Room for every statement the writer and readers prepare (rusqlite's default is
    // 16); an evicted statement is parsed again on its next use.
    connection.set_prepared_statement_cache_capacity(64);
    if !read_only {
        connection
            .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(sqlite(path))?;
        let version: i64 =
            connection.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(sqlite(path))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "schema version {version} is newer than this collector understands ({SCHEMA_VERSION}): upgrade the collector"
                ),
            });
        }
        connection.execute_batch(SCHEMA).map_err(sqlite(path))?;
        // v5: consumers, dead_letters, queue_meta (consumers.rs), IF NOT EXISTS as well.
        connection.execute_batch(consumers::SCHEMA).map_err(sqlite(path))?;
        if version == 1 {
            // v2: the whole per-check state machine as JSON (pending, flapping…).
            connection
                .execute_batch("ALTER TABLE check_states ADD COLUMN machine TEXT")
                .map_err(sqlite(path))?;
        }
        // v4: `held_events` and its indexes, created by SCHEMA above (IF NOT EXISTS).
        connection.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sqlite(path))?;
    }
    Ok(connection)
}

/// What Hello changes and what the session needs back.
#[derive(Debug, Clone)]
pub struct HelloRecord {
    pub identity: AgentIdentity,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The peer's IP address, for reachability probes when the agent goes silent.
    pub address: Option<std::net::IpAddr>,
    pub stream_id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub boot_id: String,
    pub at: jiff::Timestamp,
}

/// The durable view of one agent at session start.
#[derive(Debug, Clone, Default)]
pub struct AgentSnapshot {
    /// Highest processed seq of the agent's current stream (0: none).
    pub last_seq: u64,
    /// True when the agent came with a stream id we did not know (new spool).
    pub new_stream: bool,
    pub states: HashMap<StateKey, CheckState>,
}

/// One report's effects, committed atomically.
#[derive(Debug)]
pub struct CommitReport {
    pub identity: AgentIdentity,
    /// The session's spool stream; None for transitions not caused by a session (the
    /// offline monitor), which skip the stream check.
    pub stream_id: Option<String>,
    /// The report's seq; None for transitions caused by the clock (staleness), which
    /// belong to no report.
    pub seq: Option<u64>,
    pub events: Vec<AlertEvent>,
    pub updates: Vec<StateUpdate>,
    pub at: jiff::Timestamp,
}

/// How a commit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Applied; `gap` reports between the previous seq and this one never arrived.
    Applied { gap: u64 },
    /// Already processed (seq <= last_seq): nothing written.
    Duplicate { last_seq: u64 },
}

enum Command {
    Hello(HelloRecord, oneshot::Sender<Result<AgentSnapshot, StoreError>>),
    Commit(CommitReport, oneshot::Sender<Result<Committed, StoreError>>),
    Release(jiff::Timestamp, oneshot::Sender<Result<ReleaseOutcome, StoreError>>),
    Register(String, StartAt, oneshot::Sender<Result<i64, StoreError>>),
    Advance(ConsumerUpdate, oneshot::Sender<Result<(), StoreError>>),
    Prune(Retention, jiff::Timestamp, oneshot::Sender<Result<Pruned, StoreError>>),
}

/// Handle to the writer thread. Cheap to clone; the thread stops when every handle is
/// dropped and the queue is drained.
#[derive(Clone, Debug)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    path: PathBuf,
    /// The highest queue position, published after every commit that moved it.
    head: tokio::sync::watch::Receiver<i64>,
}

/// How many queued commands one group commit takes at most.
const GROUP_COMMIT_MAX: usize = 512;

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<(Store, thread::JoinHandle<()>), StoreError> {
        Self::open_with_policy(data_dir, Arc::new(Policy::default()))
    }

    /// Like [`Store::open`], applying `policy` to every event committed (see `crate::hold`).
    pub fn open_with_policy(
        data_dir: &Path,
        policy: Arc<Policy>,
    ) -> Result<(Store, thread::JoinHandle<()>), StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::Io { path: data_dir.to_owned(), source })?;
        let path = data_dir.join(DB_FILE);
        let connection = open_connection(&path, false)?;
        let (commands, receiver) = mpsc::channel(4096);
        let (head_sender, head) = tokio::sync::watch::channel(consumers::head(&connection, &path)?);
        let writer_path = path.clone();
        let handle = thread::Builder::new()
            .name("nightowl-store".into())
            .spawn(move || Writer { connection, path: writer_path, policy, head: head_sender }.run(receiver))
            .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        Ok((Store { commands, path, head }, handle))
    }

    /// The queue's head position, updated after every commit that appended events:
    /// consumers wait on it instead of polling.
    pub fn head(&self) -> tokio::sync::watch::Receiver<i64> {
        self.head.clone()
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, response) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| StoreError::WriterGone)?;
        response.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Creates the named consumer if it is new (starting at `start`); returns its cursor.
    pub async fn register_consumer(&self, consumer: &str, start: StartAt) -> Result<i64, StoreError> {
        let consumer = consumer.to_owned();
        self.request(|reply| Command::Register(consumer, start, reply)).await
    }

    /// Moves a consumer's cursor forward and records its dead letters; durable on return.
    pub async fn advance_consumer(&self, update: ConsumerUpdate) -> Result<(), StoreError> {
        self.request(|reply| Command::Advance(update, reply)).await
    }

    /// Deletes events past `retention`; durable on return.
    pub async fn prune(&self, retention: Retention, now: jiff::Timestamp) -> Result<Pruned, StoreError> {
        self.request(|reply| Command::Prune(retention, now, reply)).await
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a Hello and returns what the session needs to continue the agent.
    pub async fn hello(&self, record: HelloRecord) -> Result<AgentSnapshot, StoreError> {
        self.request(|reply| Command::Hello(record, reply)).await
    }

    /// Commits one report's effects; returns once they are durable (fsync'd).
    pub async fn commit(&self, report: CommitReport) -> Result<Committed, StoreError> {
        self.request(|reply| Command::Commit(report, reply)).await
    }

    /// Moves held events due at `now` into the queue, in one transaction; returns once
    /// that is durable.
    pub async fn release_due(&self, now: jiff::Timestamp) -> Result<ReleaseOutcome, StoreError> {
        self.request(|reply| Command::Release(now, reply)).await
    }
}

struct Writer {
    connection: Connection,
    path: PathBuf,
    policy: Arc<Policy>,
    head: tokio::sync::watch::Sender<i64>,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < GROUP_COMMIT_MAX {
                match receiver.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.apply_batch(&mut batch);
        }
        tracing::debug!(path = %self.path.display(), "alert store writer stopped");
    }

    /// Applies a batch in one transaction. Each command runs inside a savepoint so a
    /// failing command fails alone; replies are sent only after COMMIT returned.
    fn apply_batch(&mut self, batch: &mut Vec<Command>) {
        let path = self.path.clone();
        let policy = self.policy.clone();
        let mut replies = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<i64, StoreError> {
            let mut transaction = self.connection.transaction().map_err(sqlite(&path))?;
            for command in batch.drain(..) {
                match command {
                    Command::Hello(record, reply) => {
                        let result = savepoint(&mut transaction, &path, |tx| hello(tx, &path, &record));
                        replies.push(Reply::Hello(reply, result));
                    }
                    Command::Commit(report, reply) => {
                        let result =
                            savepoint(&mut transaction, &path, |tx| commit(tx, &path, &policy, &report));
                        replies.push(Reply::Commit(reply, result));
                    }
                    Command::Release(now, reply) => {
                        let result = savepoint(&mut transaction, &path, |tx| {
                            held::release_due(tx, &path, &policy, now)
                        });
                        replies.push(Reply::Release(reply, result));
                    }
                    Command::Register(consumer, start, reply) => {
                        let result = savepoint(&mut transaction, &path, |tx| {
                            consumers::register(tx, &path, &consumer, start, jiff::Timestamp::now())
                        });
                        replies.push(Reply::Register(reply, result));
                    }
                    Command::Advance(update, reply) => {
                        let result = savepoint(&mut transaction, &path, |tx| {
                            consumers::advance(tx, &path, &update, jiff::Timestamp::now())
                        });
                        replies.push(Reply::Advance(reply, result));
                    }
                    Command::Prune(retention, now, reply) => {
                        let result = savepoint(&mut transaction, &path, |tx| {
                            consumers::prune(tx, &path, &retention, now)
                        });
                        replies.push(Reply::Prune(reply, result));
                    }
                }
            }
            let head = consumers::head(&transaction, &path)?;
            transaction.commit().map_err(sqlite(&path))?;
            Ok(head)
        })();
        match &outcome {
            // Published only once durable: a consumer never sees an event that a crash
            // could still take back.
            Ok(head) => {
                self.head.send_if_modified(|current| {
                    let moved = *current != *head;
                    *current = *head;
                    moved
                });
            }
            Err(error) => tracing::error!(%error, "alert store commit failed; sessions will not be acked"),
        }
        let outcome = outcome.map(|_| ());
        for reply in replies {
            reply.send(outcome.as_ref().err());
        }
    }
}

/// A command's own result, held until the batch's COMMIT returned.
enum Reply {
    Hello(oneshot::Sender<Result<AgentSnapshot, StoreError>>, Result<AgentSnapshot, StoreError>),
    Commit(oneshot::Sender<Result<Committed, StoreError>>, Result<Committed, StoreError>),
    Release(oneshot::Sender<Result<ReleaseOutcome, StoreError>>, Result<ReleaseOutcome, StoreError>),
    Register(oneshot::Sender<Result<i64, StoreError>>, Result<i64, StoreError>),
    Advance(oneshot::Sender<Result<(), StoreError>>, Result<(), StoreError>),
    Prune(oneshot::Sender<Result<Pruned, StoreError>>, Result<Pruned, StoreError>),
}

impl Reply {
    /// Sends the result; a failed COMMIT overrides a command's own success, since
    /// nothing of the batch is durable then. A caller that went away (agent
    /// disconnected) is fine: its report will be replayed.
    fn send(self, commit_error: Option<&StoreError>) {
        fn answer<T>(
            sender: oneshot::Sender<Result<T, StoreError>>,
            result: Result<T, StoreError>,
            commit_error: Option<&StoreError>,
        ) {
            let result = match commit_error {
                Some(error) => Err(StoreError::BatchFailed(error.to_string())),
                None => result,
            };
            // The caller may have gone away (agent disconnected): nothing to tell then.
            let _ = sender.send(result);
        }
        match self {
            Reply::Hello(sender, result) => answer(sender, result, commit_error),
            Reply::Commit(sender, result) => answer(sender, result, commit_error),
            Reply::Release(sender, result) => answer(sender, result, commit_error),
            Reply::Register(sender, result) => answer(sender, result, commit_error),
            Reply::Advance(sender, result) => answer(sender, result, commit_error),
            Reply::Prune(sender, result) => answer(sender, result, commit_error),
        }
    }
}

fn savepoint<T>(
    transaction: &mut Transaction<'_>,
    path: &Path,
    work: impl FnOnce(&rusqlite::Savepoint<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let savepoint = transaction.savepoint().map_err(sqlite(path))?;
    match work(&savepoint) {
        Ok(value) => {
            savepoint.commit().map_err(sqlite(path))?;
            Ok(value)
        }
        Err(error) => {
            // Dropping the savepoint rolls it back; the rest of the batch goes on.
            drop(savepoint);
            Err(error)
        }
    }
}

fn hello(tx: &Connection, path: &Path, record: &HelloRecord) -> Result<AgentSnapshot, StoreError> {
    let tenant = &record.identity.tenant;
    let agent = &record.identity.agent;
    let at = record.at.to_string();
    let known: Option<(String, i64)> = tx
        .query_row(
            "SELECT stream_id, last_seq FROM agents WHERE tenant = ?1 AND agent = ?2",
            params![tenant, agent],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(sqlite(path))?;
    let (last_seq, new_stream) = match known {
        Some((stream_id, last_seq)) if stream_id == record.stream_id => (last_seq as u64, false),
        Some(_) => (0, true),
        None => (0, true),
    };
    tx.execute(
        "INSERT INTO agents (tenant, agent, stream_id, last_seq, hostname, os, agent_version, boot_id,
                             first_seen, last_seen, connected_at, sessions, labels, address)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, 1, ?10, ?11)
         ON CONFLICT (tenant, agent) DO UPDATE SET
           stream_id = excluded.stream_id, last_seq = excluded.last_seq, hostname = excluded.hostname,
           os = excluded.os, agent_version = excluded.agent_version, boot_id = excluded.boot_id,
           last_seen = excluded.last_seen, connected_at = excluded.connected_at, sessions = sessions + 1,
           labels = excluded.labels, address = excluded.address",
        params![
            tenant,
            agent,
            record.stream_id,
            last_seq as i64,
            record.hostname,
            record.os,
            record.agent_version,
            record.boot_id,
            at,
            serde_json::to_string(&record.labels).unwrap_or_default(),
            record.address.map(|address| address.to_string())
        ],
    )
    .map_err(sqlite(path))?;
    let mut statement = tx
        .prepare_cached(
            "SELECT check_id, rule, level, started_at, value, machine FROM check_states WHERE tenant = ?1 AND agent = ?2",
        )
        .map_err(sqlite(path))?;
    let rows = statement
        .query_map(params![tenant, agent], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, f64>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(sqlite(path))?;
    let mut states = HashMap::new();
    for row in rows {
        let (check, rule, level, started_at, value, machine) = row.map_err(sqlite(path))?;
        let corrupt = |detail: String| StoreError::Corrupt { path: path.to_owned(), detail };
        let state = match machine {
            Some(json) => serde_json::from_str::<CheckState>(&json)
                .map_err(|error| corrupt(format!("check state {check}/{rule}: {error}")))?,
            // Written by schema v1: only the level was kept.
            None => {
                let level =
                    Level::parse(&level).ok_or_else(|| corrupt(format!("unknown level {level:?}")))?;
                let started_at = started_at
                    .map(|text| text.parse::<jiff::Timestamp>())
                    .transpose()
                    .map_err(|error| corrupt(format!("bad started_at: {error}")))?;
                CheckState { level, emitted: level, started_at, ..CheckState::ok(value) }
            }
        };
        states.insert(StateKey { check, rule }, state);
    }
    Ok(AgentSnapshot { last_seq, new_stream, states })
}

fn commit(
    tx: &Connection,
    path: &Path,
    policy: &Policy,
    report: &CommitReport,
) -> Result<Committed, StoreError> {
    let tenant = &report.identity.tenant;
    let agent = &report.identity.agent;
    // Cached statements: this runs for every report (parsing SQL each time cost more
    // than executing it).
    let stored: Option<(String, i64)> = tx
        .prepare_cached("SELECT stream_id, last_seq FROM agents WHERE tenant = ?1 AND agent = ?2")
        .and_then(|mut statement| {
            statement.query_row(params![tenant, agent], |row| Ok((row.get(0)?, row.get(1)?))).optional()
        })
        .map_err(sqlite(path))?;
    let Some((stream_id, last_seq)) = stored else {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("report from {} before hello", report.identity),
        });
    };
    let last_seq = last_seq as u64;
    if report.stream_id.as_ref().is_some_and(|current| *current != stream_id) {
        // Another session of the same agent with a newer spool took over meanwhile.
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("stale stream for {}", report.identity),
        });
    }
    let at = report.at.to_string();
    let gap = match report.seq {
        // The session dedups against its in-memory last_seq first; this is the safety net
        // for a race with a superseded session. Nothing to write.
        Some(seq) if seq <= last_seq => return Ok(Committed::Duplicate { last_seq }),
        Some(seq) => seq - last_seq - 1,
        None => 0,
    };
    for event in &report.events {
        let body = serde_json::to_string(event).map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("event does not serialise: {error}"),
        })?;
        // The emission policy, applied here and only here (see `crate::hold`).
        match policy.decide(event) {
            Decision::Hold { release_at, reason } => {
                held::release_before_hold(tx, path, policy, &event.fingerprint, event.emitted_at)?;
                held::hold(tx, path, event, &body, release_at, &reason)?;
            }
            Decision::Emit => {
                held::release_before_emit(tx, path, policy, &event.fingerprint, event.emitted_at)?;
                insert_event(tx, path, event, &body)?;
            }
        }
    }
    for update in &report.updates {
        let state = match &update.change {
            StateChange::Set(state) => state,
            StateChange::Remove => {
                tx.prepare_cached(
                    "DELETE FROM check_states WHERE tenant = ?1 AND agent = ?2 AND check_id = ?3 AND rule = ?4",
                )
                .and_then(|mut statement| {
                    statement.execute(params![tenant, agent, update.key.check, update.key.rule])
                })
                .map_err(sqlite(path))?;
                continue;
            }
        };
        tx.prepare_cached(
            "INSERT INTO check_states (tenant, agent, check_id, rule, fingerprint, level, started_at, value, updated_at, machine)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant, agent, check_id, rule) DO UPDATE SET
               fingerprint = excluded.fingerprint, level = excluded.level, started_at = excluded.started_at,
               value = excluded.value, updated_at = excluded.updated_at, machine = excluded.machine",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                tenant,
                agent,
                update.key.check,
                update.key.rule,
                update.fingerprint,
                // What consumers were told: `agents list` counts these as open alerts.
                state.emitted.as_str(),
                state.started_at.map(|started| started.to_string()),
                state.value,
                at,
                machine_json(state)
            ])
        })
        .map_err(sqlite(path))?;
    }
    if let Some(seq) = report.seq {
        tx.prepare_cached(
            "UPDATE agents SET last_seq = ?3, seq_gaps = seq_gaps + ?4, reports = reports + 1, last_seen = ?5
             WHERE tenant = ?1 AND agent = ?2",
        )
        .and_then(|mut statement| statement.execute(params![tenant, agent, seq as i64, gap as i64, at]))
        .map_err(sqlite(path))?;
    }
    Ok(Committed::Applied { gap })
}

/// Appends one event to the queue (a new `pos`).
fn insert_event(tx: &Connection, path: &Path, event: &AlertEvent, body: &str) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO events (id, tenant, fingerprint, status, severity, emitted_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            event.id,
            event.tenant,
            event.fingerprint,
            match event.status {
                crate::alert::Status::Firing => "firing",
                crate::alert::Status::Resolved => "resolved",
            },
            event.severity.as_str(),
            event.emitted_at.to_string(),
            body
        ])
    })
    .map_err(sqlite(path))?;
    Ok(())
}

fn machine_json(state: &CheckState) -> String {
    // CheckState is plain data: serialising it cannot fail.
    serde_json::to_string(state).unwrap_or_default()
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
