//! Held alert events (`held_events`): what the emission policy (`crate::hold`) kept back,
//! and the releaser that moves due ones into the queue.
//!
//! Both run on the writer's connection inside its transactions: holding is part of the
//! report's commit, releasing is one transaction of its own, so a held event reaches the
//! queue exactly once, also across crashes and restarts.
//!
//! Per alert (fingerprint) consumers hear its history in commit order, so they end with
//! its latest state: before a new event of an alert is held, its due holds are released
//! (the releaser passes only every few seconds); before one goes out now, its due and
//! after-hours holds are (a window's outcome deferred to the morning included); a
//! window's outcome counts an older after-hours hold of the alert as told, and goes out
//! after it. The queue model (`model_tests.rs`) checks the end state.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, insert_event, sqlite};
use crate::alert::{AlertEvent, Status};
use crate::hold::{AFTER_HOURS, Decision, MAINTENANCE_PREFIX, Policy};

/// What one release pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Moved into the queue.
    pub released: u64,
    /// Deleted without emission (superseded inside a maintenance window, or nothing new
    /// to tell consumers).
    pub dropped: u64,
    /// Released from maintenance into an after-hours hold.
    pub deferred: u64,
}

impl ReleaseOutcome {
    pub fn is_empty(&self) -> bool {
        *self == ReleaseOutcome::default()
    }

    fn add(&mut self, other: ReleaseOutcome) {
        self.released += other.released;
        self.dropped += other.dropped;
        self.deferred += other.deferred;
    }
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn status_str(status: Status) -> &'static str {
    match status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

/// Records `event` as held until `release_at`.
pub(super) fn hold(
    tx: &Connection,
    path: &Path,
    event: &AlertEvent,
    body: &str,
    release_at: Timestamp,
    reason: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO held_events (id, tenant, agent, fingerprint, status, severity, reason, held_at, release_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            event.id,
            event.tenant,
            event.agent,
            event.fingerprint,
            status_str(event.status),
            event.severity.as_str(),
            reason,
            event.emitted_at.to_string(),
            millis(release_at),
            body
        ])
    })
    .map_err(sqlite(path))?;
    tracing::info!(
        id = %event.id,
        tenant = %event.tenant,
        agent = %event.agent,
        check = %event.check,
        fingerprint = %event.fingerprint,
        status = status_str(event.status),
        severity = event.severity.as_str(),
        %reason,
        %release_at,
        "alert event held"
    );
    Ok(())
}

/// Whether `fingerprint` has held events that must reach the queue before a new event of
/// it is emitted now (due ones, and after-hours ones: an escalation that goes out now
/// comes after the night's history of the same alert).
pub(super) fn release_before_emit(
    tx: &Connection,
    path: &Path,
    policy: &Policy,
    fingerprint: &str,
    now: Timestamp,
) -> Result<ReleaseOutcome, StoreError> {
    let pending: Option<i64> = tx
        .prepare_cached(
            "SELECT seq FROM held_events WHERE fingerprint = ?1 AND (release_at <= ?2 OR reason = ?3) LIMIT 1",
        )
        .and_then(|mut statement| {
            statement.query_row(params![fingerprint, millis(now), AFTER_HOURS], |row| row.get(0)).optional()
        })
        .map_err(sqlite(path))?;
    if pending.is_none() {
        return Ok(ReleaseOutcome::default());
    }
    let mut outcome = release(tx, path, policy, now, Some((fingerprint, true)))?;
    if outcome.deferred > 0 {
        // A window's outcome just handed to the morning is after-hours history as well:
        // it goes before the new event too.
        outcome.add(release(tx, path, policy, now, Some((fingerprint, true)))?);
    }
    Ok(outcome)
}

/// Releases the held events of `fingerprint` due at `now` before a new event of it is
/// held: a window's hold that came due moments ago (the releaser passes every few
/// seconds) must reach the queue, or a morning hold, before the newer event does.
pub(super) fn release_before_hold(
    tx: &Connection,
    path: &Path,
    policy: &Policy,
    fingerprint: &str,
    now: Timestamp,
) -> Result<ReleaseOutcome, StoreError> {
    let due: Option<i64> = tx
        .prepare_cached("SELECT seq FROM held_events WHERE fingerprint = ?1 AND release_at <= ?2 LIMIT 1")
        .and_then(|mut statement| {
            statement.query_row(params![fingerprint, millis(now)], |row| row.get(0)).optional()
        })
        .map_err(sqlite(path))?;
    if due.is_none() {
        return Ok(ReleaseOutcome::default());
    }
    release(tx, path, policy, now, Some((fingerprint, false)))
}

/// Releases every held event due at `now` (release_at <= now).
pub(super) fn release_due(
    tx: &Connection,
    path: &Path,
    policy: &Policy,
    now: Timestamp,
) -> Result<ReleaseOutcome, StoreError> {
    release(tx, path, policy, now, None)
}

/// Moves the after-hours holds of `fingerprint` older than hold `before` into the queue,
/// in hold order: what a maintenance outcome emitted now must follow.
fn release_after_hours_before(
    tx: &Connection,
    path: &Path,
    fingerprint: &str,
    before: i64,
) -> Result<u64, StoreError> {
    let rows: Vec<(i64, String)> = {
        let mut statement = tx
            .prepare_cached(
                "SELECT seq, body FROM held_events WHERE fingerprint = ?1 AND reason = ?2 AND seq < ?3 ORDER BY seq",
            )
            .map_err(sqlite(path))?;
        let rows = statement
            .query_map(params![fingerprint, AFTER_HOURS, before], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(sqlite(path))?;
        rows.collect::<Result<_, _>>().map_err(sqlite(path))?
    };
    for (seq, body) in &rows {
        tx.prepare_cached("DELETE FROM held_events WHERE seq = ?1")
            .and_then(|mut statement| statement.execute(params![seq]))
            .map_err(sqlite(path))?;
        let event: AlertEvent = serde_json::from_str(body).map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("held event {seq}: {error}"),
        })?;
        insert_event(tx, path, &event, body)?;
    }
    Ok(rows.len() as u64)
}

struct HeldRow {
    seq: i64,
    fingerprint: String,
    reason: String,
    body: String,
}

/// Releases what is due at `now`; with `only` = (fingerprint, after-hours too) only that
/// alert's due holds, and its after-hours ones (due or not) when asked.
fn release(
    tx: &Connection,
    path: &Path,
    policy: &Policy,
    now: Timestamp,
    only: Option<(&str, bool)>,
) -> Result<ReleaseOutcome, StoreError> {
    let (fingerprint, after_hours_too) = match only {
        Some((fingerprint, after_hours_too)) => (Some(fingerprint), after_hours_too),
        None => (None, false),
    };
    let rows: Vec<HeldRow> = {
        let mut statement = tx
            .prepare_cached(
                "SELECT seq, fingerprint, reason, body FROM held_events
                 WHERE (?2 IS NULL AND release_at <= ?1)
                    OR (fingerprint = ?2 AND (release_at <= ?1 OR (?4 AND reason = ?3)))
                 ORDER BY seq",
            )
            .map_err(sqlite(path))?;
        let rows = statement
            .query_map(params![millis(now), fingerprint, AFTER_HOURS, after_hours_too], |row| {
                Ok(HeldRow {
                    seq: row.get(0)?,
                    fingerprint: row.get(1)?,
                    reason: row.get(2)?,
                    body: row.get(3)?,
                })
            })
            .map_err(sqlite(path))?;
        rows.collect::<Result<_, _>>().map_err(sqlite(path))?
    };
    // Per fingerprint, the latest maintenance hold is the only one that counts.
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for row in rows.iter().filter(|row| row.reason.starts_with(MAINTENANCE_PREFIX)) {
        latest.insert(&row.fingerprint, row.seq);
    }
    let mut outcome = ReleaseOutcome::default();
    for row in &rows {
        tx.prepare_cached("DELETE FROM held_events WHERE seq = ?1")
            .and_then(|mut statement| statement.execute(params![row.seq]))
            .map_err(sqlite(path))?;
        let mut event: AlertEvent = serde_json::from_str(&row.body).map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("held event {}: {error}", row.seq),
        })?;
        if !row.reason.starts_with(MAINTENANCE_PREFIX) {
            insert_event(tx, path, &event, &row.body)?;
            tracing::info!(
                id = %event.id, tenant = %event.tenant, agent = %event.agent, check = %event.check,
                fingerprint = %event.fingerprint, status = status_str(event.status),
                severity = event.severity.as_str(), reason = %row.reason,
                "held alert event released"
            );
            outcome.released += 1;
            continue;
        }
        if latest.get(row.fingerprint.as_str()) != Some(&row.seq) {
            tracing::info!(
                id = %event.id, fingerprint = %event.fingerprint, status = status_str(event.status),
                reason = %row.reason, "held alert event dropped: superseded inside the maintenance window"
            );
            outcome.dropped += 1;
            continue;
        }
        // What consumers were last told about this alert decides whether the window's
        // outcome is news: still firing (and not already known so) → emit it once;
        // resolved while consumers never saw it fire → nothing to say. An older
        // after-hours hold of the alert counts as told: the morning tells it, before
        // this outcome.
        let earlier: Option<(String, String)> = tx
            .prepare_cached(
                "SELECT status, severity FROM held_events WHERE fingerprint = ?1 AND reason = ?2 AND seq < ?3
                 ORDER BY seq DESC LIMIT 1",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![event.fingerprint, AFTER_HOURS, row.seq], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
            })
            .map_err(sqlite(path))?;
        let last: Option<(String, String)> = match &earlier {
            Some(told) => Some(told.clone()),
            None => tx
                .prepare_cached(
                    "SELECT status, severity FROM events WHERE fingerprint = ?1 ORDER BY pos DESC LIMIT 1",
                )
                .and_then(|mut statement| {
                    statement
                        .query_row(params![event.fingerprint], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .map_err(sqlite(path))?,
        };
        let known_firing = last.as_ref().is_some_and(|(status, _)| status == "firing");
        let news = match event.status {
            Status::Firing => !last
                .as_ref()
                .is_some_and(|(status, severity)| status == "firing" && severity == event.severity.as_str()),
            Status::Resolved => known_firing,
        };
        if !news {
            tracing::info!(
                id = %event.id, fingerprint = %event.fingerprint, status = status_str(event.status),
                reason = %row.reason, "held alert event dropped at the end of its maintenance window: nothing new to tell"
            );
            outcome.dropped += 1;
            continue;
        }
        event.emitted_at = now;
        let body = serde_json::to_string(&event).map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("event does not serialise: {error}"),
        })?;
        let mut one = ReleaseOutcome::default();
        match policy.after_hours(&event) {
            Decision::Hold { release_at, reason } => {
                hold(tx, path, &event, &body, release_at, &reason)?;
                one.deferred += 1;
            }
            Decision::Emit => {
                if earlier.is_some() {
                    one.released += release_after_hours_before(tx, path, &event.fingerprint, row.seq)?;
                }
                insert_event(tx, path, &event, &body)?;
                tracing::info!(
                    id = %event.id, tenant = %event.tenant, agent = %event.agent, check = %event.check,
                    fingerprint = %event.fingerprint, status = status_str(event.status),
                    severity = event.severity.as_str(), reason = %row.reason,
                    "held alert event released: still so when the maintenance window ended"
                );
                one.released += 1;
            }
        }
        outcome.add(one);
    }
    Ok(outcome)
}
