//! Consumers of the queue: durable cursors, dead letters and retention.
//!
//! # Tables (schema v5)
//! - `consumers`: one row per named consumer (`sink:<name>` for a configured sink,
//!   `feed:<name>` for a feed subscriber). `acked_pos` is the consumer's cursor: every
//!   event at or below it is done with (delivered, filtered out, or dead-lettered).
//!   `delivered` / `dead_lettered` count what the consumer did, for `sinks list`.
//! - `dead_letters`: events a sink refused for good (e.g. HTTP 400) or gave up on, with
//!   the error and the attempts made; unique per (consumer, event id).
//! - `queue_meta`: `pruned_through`, the highest position retention has deleted. A
//!   consumer whose cursor is below it has missed events and is told so.
//!
//! # Invariants
//! 1. A cursor only moves forward ([`advance`] never lowers it), so a late or repeated
//!    update cannot make a consumer see events again, nor skip them.
//! 2. A dead letter and the cursor move that passes its event are one transaction.
//! 3. Retention deletes events by age and count only, always a prefix of the queue
//!    (positions `1..=pruned_through`); it never waits for consumers (the disk is
//!    bounded), but it records how far it went so no consumer is silently skipped.
//! 4. The head (highest position ever assigned) never goes back, also when retention
//!    emptied the queue: it is the newest event's position or `pruned_through`.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, sqlite};

/// The tables this module owns (part of the store's schema).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    acked_pos INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    pos INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (consumer, event_id)
);
CREATE TABLE IF NOT EXISTS queue_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Where a consumer that has no cursor yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Every event still in the queue.
    Earliest,
    /// Only events queued from now on (a new PSA integration must not be flooded
    /// with history).
    Latest,
    /// After this queue position.
    After(i64),
}

/// A consumer's progress, reported by its runner.
#[derive(Debug, Clone)]
pub struct ConsumerUpdate {
    pub consumer: String,
    /// New cursor (ignored if not above the stored one).
    pub acked_pos: i64,
    pub delivered: u64,
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub pos: i64,
    pub event_id: String,
    pub error: String,
    pub attempts: u32,
    pub body: String,
}

/// What retention deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    /// Highest position deleted so far (0: none ever).
    pub pruned_through: i64,
}

/// Retention limits for the `events` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events emitted longer ago than this are deleted, from the oldest position on: an
    /// old event queued after a younger one (a held event released) waits for it.
    pub max_age: std::time::Duration,
    /// At most this many events are kept (the oldest go first).
    pub max_events: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: std::time::Duration::from_secs(30 * 24 * 3600), max_events: 10_000_000 }
    }
}

/// The highest position ever assigned (0: none yet). Retention deletes a prefix of the
/// queue, so that is the newest event's position, or `pruned_through` once retention
/// deleted everything: never lower, or a consumer starting at the latest position would
/// start below `pruned_through` and be told it missed events it never asked for.
pub(super) fn head(tx: &Connection, path: &Path) -> Result<i64, StoreError> {
    tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(pos) FROM events), 0),
                    COALESCE((SELECT value FROM queue_meta WHERE key = 'pruned_through'), 0))",
        [],
        |row| row.get(0),
    )
    .map_err(sqlite(path))
}

pub(super) fn pruned_through(tx: &Connection, path: &Path) -> Result<i64, StoreError> {
    tx.query_row("SELECT value FROM queue_meta WHERE key = 'pruned_through'", [], |row| row.get(0))
        .optional()
        .map_err(sqlite(path))
        .map(|value| value.unwrap_or(0))
}

/// Creates the consumer if it does not exist; returns its cursor.
pub(super) fn register(
    tx: &Connection,
    path: &Path,
    consumer: &str,
    start: StartAt,
    at: jiff::Timestamp,
) -> Result<i64, StoreError> {
    let known: Option<i64> = tx
        .query_row("SELECT acked_pos FROM consumers WHERE name = ?1", params![consumer], |row| row.get(0))
        .optional()
        .map_err(sqlite(path))?;
    if let Some(acked_pos) = known {
        return Ok(acked_pos);
    }
    let acked_pos = match start {
        StartAt::Earliest => 0,
        StartAt::Latest => head(tx, path)?,
        StartAt::After(pos) => pos.max(0),
    };
    let at = at.to_string();
    tx.execute(
        "INSERT INTO consumers (name, acked_pos, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![consumer, acked_pos, at],
    )
    .map_err(sqlite(path))?;
    Ok(acked_pos)
}

/// Moves a cursor forward and records dead letters, in the caller's transaction.
pub(super) fn advance(
    tx: &Connection,
    path: &Path,
    update: &ConsumerUpdate,
    at: jiff::Timestamp,
) -> Result<(), StoreError> {
    let at = at.to_string();
    let mut dead_lettered = 0i64;
    for letter in &update.dead_letters {
        dead_lettered += tx
            .prepare_cached(
                "INSERT OR IGNORE INTO dead_letters (consumer, pos, event_id, error, attempts, at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    update.consumer,
                    letter.pos,
                    letter.event_id,
                    letter.error,
                    letter.attempts,
                    at,
                    letter.body
                ])
            })
            .map_err(sqlite(path))? as i64;
    }
    let changed = tx
        .prepare_cached(
            "UPDATE consumers SET acked_pos = MAX(acked_pos, ?2), delivered = delivered + ?3,
                    dead_lettered = dead_lettered + ?4, updated_at = ?5
             WHERE name = ?1",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                update.consumer,
                update.acked_pos,
                update.delivered as i64,
                dead_lettered,
                at
            ])
        })
        .map_err(sqlite(path))?;
    if changed == 0 {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("consumer {:?} advanced before it was registered", update.consumer),
        });
    }
    Ok(())
}

/// Deletes events past the retention limits, always a prefix of the queue; never
/// touches held events.
pub(super) fn prune(
    tx: &Connection,
    path: &Path,
    retention: &Retention,
    now: jiff::Timestamp,
) -> Result<Pruned, StoreError> {
    let head = head(tx, path)?;
    let by_count = head - i64::try_from(retention.max_events).unwrap_or(i64::MAX);
    let cutoff = now
        .checked_sub(jiff::SignedDuration::try_from(retention.max_age).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MIN);
    // By age, the queue's prefix of too-old events: up to the first event that is not.
    // Not "the last too-old position": an after-hours hold released in the morning keeps
    // its night's `emitted_at` at a new position, and that would take every younger event
    // queued before it along. emitted_at is RFC 3339 in UTC ("Z"), so text order is time
    // order (to the second). Scans only the old events, in position order.
    let first_young: Option<i64> = tx
        .prepare_cached("SELECT pos FROM events WHERE emitted_at >= ?1 ORDER BY pos LIMIT 1")
        .and_then(|mut statement| {
            statement.query_row(params![cutoff.to_string()], |row| row.get(0)).optional()
        })
        .map_err(sqlite(path))?;
    let by_age = first_young.map_or(head, |pos| pos - 1);
    let through = by_count.max(by_age);
    let previous = pruned_through(tx, path)?;
    if through <= previous {
        return Ok(Pruned { events: 0, pruned_through: previous });
    }
    let deleted = tx.execute("DELETE FROM events WHERE pos <= ?1", params![through]).map_err(sqlite(path))?;
    tx.execute(
        "INSERT INTO queue_meta (key, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
        params![through],
    )
    .map_err(sqlite(path))?;
    Ok(Pruned { events: deleted as u64, pruned_through: through })
}
