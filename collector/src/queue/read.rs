//! Read-only access to the store, for the CLI (`alerts tail`, `agents list`) and other
//! processes. Uses its own read-only connection; WAL mode lets it run beside the
//! collector's writer without blocking it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{DB_FILE, StoreError, open_connection, sqlite};

/// One queued event: its queue position and its JSON exactly as stored.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub pos: i64,
    pub body: String,
}

/// A consumer of the queue and how far it got.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerRow {
    pub name: String,
    pub acked_pos: i64,
    /// Events queued after the cursor (not yet done with; includes events the
    /// consumer's filters will skip).
    pub lag: i64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub updated_at: String,
}

/// An event a sink refused for good, or gave up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterRow {
    pub consumer: String,
    pub pos: i64,
    pub event_id: String,
    pub error: String,
    pub attempts: u32,
    pub at: String,
    /// The event, as it would have been delivered.
    pub event: serde_json::Value,
}

/// One agent as the collector last saw it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub tenant: String,
    pub agent: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub last_seq: u64,
    pub seq_gaps: u64,
    pub reports: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// When the agent's latest session began (its Hello).
    pub connected_at: String,
    /// Sessions (Hellos) seen from this agent, ever.
    pub sessions: u64,
    pub open_alerts: u64,
    /// Alert events held back (maintenance window, after hours), not yet released.
    pub held: u64,
}

/// An agent as the offline monitor starts from.
#[derive(Debug, Clone)]
pub struct KnownAgent {
    pub identity: crate::identity::AgentIdentity,
    pub last_seen: Option<jiff::Timestamp>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub address: Option<std::net::IpAddr>,
    /// The offline alert's state, if it ever had one.
    pub offline: Option<crate::evaluate::CheckState>,
}

#[derive(Debug)]
pub struct Reader {
    connection: Connection,
    path: PathBuf,
}

impl Reader {
    /// Opens the store of `data_dir` read-only; fails if the collector never ran there.
    pub fn open(data_dir: &Path) -> Result<Reader, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no alert store here: has the collector run with this data_dir?",
                ),
            });
        }
        let connection = open_connection(&path, true)?;
        Ok(Reader { connection, path })
    }

    /// Up to `limit` events after queue position `after`, in queue order.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<EventRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT pos, body FROM events WHERE pos > ?1 ORDER BY pos LIMIT ?2")
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map(params![after, limit as i64], |row| {
                Ok(EventRow { pos: row.get(0)?, body: row.get(1)? })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// Up to `limit` events after `after` whose tenant is `tenant`, in queue order.
    pub fn tenant_events_after(
        &self,
        tenant: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT pos, body FROM events WHERE tenant = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map(params![tenant, after, limit as i64], |row| {
                Ok(EventRow { pos: row.get(0)?, body: row.get(1)? })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// For every fingerprint whose latest queued event is `firing`, that event, in queue
    /// order: the alerts still open as far as the queue knows. (Events retention deleted
    /// are not seen; held events are not in the queue yet.) Alertmanager's sink seeds
    /// the alerts it keeps re-sending from this after a restart.
    pub fn latest_firing(&self) -> Result<Vec<EventRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT e.pos, e.body FROM events e
                 WHERE e.status = 'firing'
                   AND e.pos = (SELECT MAX(l.pos) FROM events l WHERE l.fingerprint = e.fingerprint)
                 ORDER BY e.pos",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map([], |row| Ok(EventRow { pos: row.get(0)?, body: row.get(1)? }))
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// The queue's highest position ever assigned (0: none yet), also once retention
    /// deleted every event.
    pub fn head(&self) -> Result<i64, StoreError> {
        super::consumers::head(&self.connection, &self.path)
    }

    /// The highest position retention has deleted (0: none).
    pub fn pruned_through(&self) -> Result<i64, StoreError> {
        super::consumers::pruned_through(&self.connection, &self.path)
    }

    /// Every consumer with its cursor and counts, by name.
    pub fn consumers(&self) -> Result<Vec<ConsumerRow>, StoreError> {
        let head = self.head()?;
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT name, acked_pos, delivered, dead_lettered, updated_at FROM consumers ORDER BY name",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map([], |row| {
                let acked_pos: i64 = row.get(1)?;
                Ok(ConsumerRow {
                    name: row.get(0)?,
                    acked_pos,
                    lag: (head - acked_pos).max(0),
                    delivered: row.get::<_, i64>(2)? as u64,
                    dead_lettered: row.get::<_, i64>(3)? as u64,
                    updated_at: row.get(4)?,
                })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// Dead letters, oldest first; of one consumer when `consumer` is given.
    pub fn dead_letters(&self, consumer: Option<&str>) -> Result<Vec<DeadLetterRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT consumer, pos, event_id, error, attempts, at, body FROM dead_letters
                 WHERE ?1 IS NULL OR consumer = ?1 ORDER BY id",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map(params![consumer], |row| {
                let body: String = row.get(6)?;
                Ok(DeadLetterRow {
                    consumer: row.get(0)?,
                    pos: row.get(1)?,
                    event_id: row.get(2)?,
                    error: row.get(3)?,
                    attempts: row.get::<_, i64>(4)? as u32,
                    at: row.get(5)?,
                    event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// Every held event as (reason, release_at unix ms, body), in hold order.
    pub fn held_events(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT reason, release_at, body FROM held_events ORDER BY seq")
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }

    /// Every known agent with what the offline monitor needs (see `offline`).
    pub fn presence(&self) -> Result<Vec<KnownAgent>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT a.tenant, a.agent, a.last_seen, a.labels, a.address, s.machine
                 FROM agents a LEFT JOIN check_states s
                   ON s.tenant = a.tenant AND s.agent = a.agent AND s.check_id = ?1 AND s.rule = ?2",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map(params![crate::synthetic::offline::CHECK, crate::synthetic::offline::RULE], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<String>>(4)?,
                    row.get::<_, Option<String>>(5)?,
                ))
            })
            .map_err(sqlite(&self.path))?;
        let mut known = Vec::new();
        for row in rows {
            let (tenant, agent, last_seen, labels, address, machine) = row.map_err(sqlite(&self.path))?;
            known.push(KnownAgent {
                identity: crate::identity::AgentIdentity { tenant, agent },
                last_seen: last_seen.parse().ok(),
                labels: labels.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default(),
                address: address.and_then(|text| text.parse().ok()),
                offline: machine.and_then(|json| serde_json::from_str(&json).ok()),
            });
        }
        Ok(known)
    }

    pub fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached(
                "SELECT a.tenant, a.agent, a.hostname, a.os, a.agent_version, a.last_seq, a.seq_gaps,
                        a.reports, a.first_seen, a.last_seen, a.connected_at, a.sessions,
                        (SELECT COUNT(*) FROM check_states s
                          WHERE s.tenant = a.tenant AND s.agent = a.agent AND s.level != 'ok'),
                        (SELECT COUNT(*) FROM held_events h WHERE h.tenant = a.tenant AND h.agent = a.agent)
                 FROM agents a ORDER BY a.tenant, a.agent",
            )
            .map_err(sqlite(&self.path))?;
        let rows = statement
            .query_map([], |row| {
                Ok(AgentRow {
                    tenant: row.get(0)?,
                    agent: row.get(1)?,
                    hostname: row.get(2)?,
                    os: row.get(3)?,
                    agent_version: row.get(4)?,
                    last_seq: row.get::<_, i64>(5)? as u64,
                    seq_gaps: row.get::<_, i64>(6)? as u64,
                    reports: row.get::<_, i64>(7)? as u64,
                    first_seen: row.get(8)?,
                    last_seen: row.get(9)?,
                    connected_at: row.get(10)?,
                    sessions: row.get::<_, i64>(11)? as u64,
                    open_alerts: row.get::<_, i64>(12)? as u64,
                    held: row.get::<_, i64>(13)? as u64,
                })
            })
            .map_err(sqlite(&self.path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(&self.path))
    }
}
