//! Durable, bounded spool of reports the collector has not acked yet.
//!
//! # File
//!
//! One SQLite database, `<state dir>/spool.db` (the directory is created with mode 0700 if
//! missing), in WAL mode. Appends commit with `synchronous = FULL` (fsync: a committed
//! report is on disk); acks' deletes with `NORMAL` (no fsync of their own: the next append
//! syncs them, and a delete lost to a power cut only means reports sent again, which the
//! collector acks without evaluating twice — half the fsyncs per report). A reader
//! (`nightowl-agent spool`, [`Spool::stats_at`]) can look at a consistent snapshot while
//! the agent writes. The page cache is capped at 256 KiB (`cache_size = -256`)
//! and the WAL file is truncated to 4 MiB after checkpoints: the agent targets < 8 MiB RSS.
//!
//! # Tables (schema version 2)
//!
//! - `meta(key TEXT PRIMARY KEY, value)`, one row per key:
//!   - `schema_version` = 2;
//!   - `stream_id`: a UUIDv7 string, created once with the spool;
//!   - `next_seq`: the seq the next append gets (starts at 1);
//!   - `dropped_total`: reports ever dropped to respect the bound;
//!   - `pending_count`, `pending_bytes`: running totals over `reports` (kept in the same
//!     transaction as every change to `reports`, so enforcing the bound never scans the table).
//! - `reports(seq INTEGER PRIMARY KEY, len INTEGER, body BLOB)`: `body` is the prost-encoded
//!   `nightowl.v1.Report` (its `seq` field equals the row's seq), `len` is `length(body)`.
//!   The body carries the results and the checks retired since the previous report
//!   (`retired_checks`), so a retirement is exactly as durable as a result.
//! - `unit_checks(unit TEXT, check_id TEXT, PRIMARY KEY (unit, check_id))`: the check ids
//!   each probe unit (`ProbeUnit.key`) reported last, one row per check. It outlives acks
//!   (it describes the units, not the pending reports) and lets the agent retire the checks
//!   of a unit removed from the config while the agent was stopped (see `crate::sampler`).
//!   The caller states the changes ([`UnitChange`]) with the report they belong to.
//!
//! Version 1 had no `unit_checks`; [`Spool::open`] migrates it in place (creates the empty
//! table and sets the version, in one transaction; pending reports and the stream are
//! untouched). A reader ([`Spool::stats_at`]) reads either version. An agent that knows an
//! older version refuses a newer file rather than guess.
//!
//! # Invariants
//!
//! 1. A seq is assigned once and strictly increases: `next_seq` only grows, in the same
//!    transaction as the insert, and is never derived from the rows — so it is never reused,
//!    even after every report was acked and deleted, or across restarts. An ack beyond the
//!    newest seq deletes everything and leaves `next_seq` where it is.
//! 2. A report is durable before [`Spool::append`] returns (committed, `synchronous = FULL`).
//! 3. A report is deleted only when an ack covers it (`ack(n)` covers every seq <= n) or when
//!    the bound forces the oldest reports out. Both delete from the oldest end, so the pending
//!    seqs always form one contiguous range `oldest..=newest`, with `newest < next_seq`.
//! 4. Drops are counted persistently (`dropped_total`, same transaction as the deletion) and
//!    logged with `tracing::warn!` carrying the counts.
//! 5. The stream id identifies this seq sequence to the collector. It never changes for the
//!    life of the file; a wiped state directory is a new spool, hence a new stream.
//! 6. `unit_checks` changes only in the transaction of the append whose report carries the
//!    change ([`Spool::append_report`]'s `units`): the new check ids of a unit with the
//!    results that reported them, the deletion of a removed unit with the report retiring
//!    its checks. So after any crash the table says what the committed reports say: a unit
//!    has a row exactly when its last committed word was a result, not a retirement.
//! 7. A retirement is not lost to the bound: the `retired_checks` of reports dropped to make
//!    room move into the report being appended (same transaction; deduplicated, after its
//!    own), except a check that is back — one with a result in the appended report, or in
//!    `unit_checks` (after the appended report's own changes), i.e. reported since by a unit
//!    still running, whose result is in a surviving report or was dropped as well. A carried
//!    retirement in a report dropped later moves on again. Only the dropped reports' bodies
//!    are read (drops are rare), and only their `retired_checks` field is decoded.
//!
//! Edges of 7, accepted: a dropped body that does not decode loses its retirements (logged;
//! the report is dropped either way). A check retired twice (in a dropped and a surviving
//! report) is retired twice; the collector ignores a check it does not know. The exception
//! for a check that is back trusts `unit_checks`: with [`Spool::append`] (no unit changes, as
//! in tests) a check retired in a dropped report and reporting again only in a surviving,
//! older-than-new report is retired after that result — the collector forgets it until its
//! next result (a firing alert resolves, then fires again). The sampler always states its
//! units' changes, so the agent does not reach this.
//!
//! # Bound
//!
//! [`SpoolLimits`] bounds the pending reports by count and by encoded bytes. An append first
//! drops the oldest pending reports until the new one fits (count + 1 <= `max_reports` and
//! bytes + len <= `max_bytes`, `len` including the retirements carried from the dropped
//! ones), then inserts. The report being appended is never dropped by its own append: a
//! single report larger than `max_bytes` (or `max_reports` = 0) leaves it as the only
//! pending report. Limits lowered between runs are enforced by the next append.
//!
//! # Reports within the collector's limits
//!
//! The collector says how large a report may be (`nightowl.v1.Limits`: message bytes,
//! results per report); until it has, [`ReportLimits::CONSERVATIVE`] holds. The session
//! tells the spool ([`Spool::set_report_limits`]), and an append splits a batch that does
//! not fit into several reports, consecutive seqs in one transaction ([`fit`]: in order,
//! retirements after the last result; a result too large alone is cut or replaced by an
//! UNKNOWN saying so). For the bound they count together, like one report.
//!
//! A report spooled under larger limits (an earlier collector's, the conservative ones,
//! an older agent's) is refitted before it is sent: [`Spool::refit`] rewrites every
//! pending report into reports within the current limits, numbered from `next_seq` on
//! (invariant 1 holds: no seq is reused; the collector sees a gap, which it counts and
//! logs). The session calls it only when none of the pending reports has been sent in
//! the session (every sent one is acked), so the collector has seen none of the old
//! seqs and evaluates each result once. The pending seqs stay contiguous (invariant 3).
//!
//! # Layout
//!
//! `spool.rs` the store; [`fit`] report splitting (pure); [`shared`] the async facade
//! the agent's tasks use ([`SharedSpool`], [`with_spool`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nightowl_proto::{CheckResult, Report};
use prost::Message;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

pub mod fit;
mod shared;

pub use fit::ReportLimits;
pub use shared::{SharedSpool, now_ms, with_spool};

/// File name of the spool inside the agent's state directory.
pub const FILE_NAME: &str = "spool.db";

const SCHEMA_VERSION: i64 = 2;
/// The oldest schema this agent reads; [`Spool::open`] migrates it to [`SCHEMA_VERSION`].
const OLDEST_SCHEMA_VERSION: i64 = 1;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds on the pending (unacked) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    pub max_reports: u64,
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits { max_reports: 100_000, max_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {error}", path.display())]
    Sqlite { path: PathBuf, error: rusqlite::Error },
    #[error("spool {}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    #[error("no spool at {}", path.display())]
    NotFound { path: PathBuf },
    #[error("spool {}: report seq {seq} is corrupt: {detail}", path.display())]
    CorruptReport { path: PathBuf, seq: u64, detail: String },
    #[error("spool {}: metadata is corrupt: {detail}", path.display())]
    CorruptMeta { path: PathBuf, detail: String },
    #[error("spool {}: unsupported: {detail}", path.display())]
    Unsupported { path: PathBuf, detail: String },
    #[error("spool task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub stream_id: String,
    pub pending: u64,
    pub pending_bytes: u64,
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    pub next_seq: u64,
    pub dropped_total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The seq of the first report appended.
    pub seq: u64,
    /// Reports appended: more than one when the batch was split to fit the collector's
    /// limits (seqs `seq..seq + reports`).
    pub reports: u64,
    /// Results cut or replaced to fit, or dropped ([`fit::Fitted`]).
    pub fitted: fit::Fitted,
    /// Reports dropped by this append to respect the bound.
    pub dropped: u64,
}

#[cfg(test)]
impl Appended {
    /// One report appended, nothing fitted.
    fn single(seq: u64, dropped: u64) -> Appended {
        Appended { seq, reports: 1, fitted: fit::Fitted::default(), dropped }
    }
}

/// What the spool remembers per probe unit (`unit_checks`): unit key → the check ids it
/// reported last, sorted.
pub type UnitChecks = BTreeMap<String, Vec<String>>;

/// A change to [`UnitChecks`], written in the transaction of the report it belongs to
/// (invariant 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitChange {
    /// The unit's latest sample, in this report, reported these check ids (they replace
    /// the remembered ones).
    Reported { unit: String, checks: Vec<String> },
    /// The unit was removed and this report retires its checks: forget the unit.
    Retired { unit: String },
}

/// The `retired_checks` of an encoded `nightowl.v1.Report` (field 4), decoded alone: the
/// results of a dropped report are skipped, not decoded. A test pins the tag.
#[derive(Clone, PartialEq, prost::Message)]
struct RetiredChecks {
    #[prost(string, repeated, tag = "4")]
    retired_checks: Vec<String>,
}

/// The open spool. Owns its connection: `Send`, not `Sync`; the caller wraps it in a mutex.
#[derive(Debug)]
pub struct Spool {
    conn: Connection,
    path: PathBuf,
    limits: SpoolLimits,
    report_limits: ReportLimits,
    stream_id: String,
}

/// What [`Spool::refit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Refitted {
    /// Pending reports rewritten (0: all fitted, nothing changed).
    pub reports_before: u64,
    /// The reports they became.
    pub reports_after: u64,
    /// The first seq of the rewritten reports.
    pub first_seq: u64,
    pub fitted: fit::Fitted,
}

impl Spool {
    /// Opens or creates `<dir>/spool.db` (creating `dir` with mode 0700 if missing).
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Spool, SpoolError> {
        create_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let mut conn = Connection::open(&path).map_err(sql(&path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(&path))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql(&path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SpoolError::Unsupported {
                path,
                detail: format!("journal_mode is {mode}, WAL is required"),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA cache_size = -256;
             PRAGMA journal_size_limit = 4194304;",
        )
        .map_err(sql(&path))?;

        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(&path))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (
                 key TEXT PRIMARY KEY NOT NULL,
                 value NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS reports (
                 seq INTEGER PRIMARY KEY,
                 len INTEGER NOT NULL,
                 body BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS unit_checks (
                 unit TEXT NOT NULL,
                 check_id TEXT NOT NULL,
                 PRIMARY KEY (unit, check_id)
             ) WITHOUT ROWID;",
        )
        .map_err(sql(&path))?;
        let version: Option<i64> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
            .optional()
            .map_err(sql(&path))?;
        let stream_id = match version {
            None => {
                let stream_id = uuid::Uuid::now_v7().to_string();
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES
                         ('schema_version', ?1), ('stream_id', ?2), ('next_seq', 1),
                         ('dropped_total', 0), ('pending_count', 0), ('pending_bytes', 0)",
                    params![SCHEMA_VERSION, stream_id],
                )
                .map_err(sql(&path))?;
                tracing::info!(path = %path.display(), %stream_id, "created spool");
                stream_id
            }
            Some(_) => {
                let version = check_schema(&tx, &path)?;
                if version < SCHEMA_VERSION {
                    // 1 → 2: `unit_checks` is new and starts empty (created above); the
                    // reports, seqs and stream stay as they are.
                    set_meta(&tx, &path, "schema_version", SCHEMA_VERSION)?;
                    tracing::info!(path = %path.display(), from = version, to = SCHEMA_VERSION, "migrated spool schema");
                }
                meta_text(&tx, &path, "stream_id")?
            }
        };
        tx.commit().map_err(sql(&path))?;
        Ok(Spool { conn, path, limits, report_limits: ReportLimits::default(), stream_id })
    }

    /// Read-only look for `nightowl-agent spool` while an agent may be running (SQLite WAL
    /// allows it); error if no spool exists there. Never creates anything.
    pub fn stats_at(dir: &Path) -> Result<SpoolStats, SpoolError> {
        let path = dir.join(FILE_NAME);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound { path });
            }
            Err(error) => return Err(SpoolError::Io { path, error }),
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(&path))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(&path))?;
        conn.pragma_update(None, "cache_size", -256).map_err(sql(&path))?;
        read_stats(&conn, &path)
    }

    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Assigns the next seq, encodes `Report { seq, sampled_at_ms, results }` with prost and
    /// stores it durably, in one transaction with the `next_seq` bump, any bound-forced
    /// deletion of the oldest reports (whose retirements it takes over, invariant 7) and
    /// the drop counter.
    pub fn append(&mut self, sampled_at_ms: i64, results: Vec<CheckResult>) -> Result<Appended, SpoolError> {
        self.append_report(sampled_at_ms, results, Vec::new(), &[])
    }

    /// [`Spool::append`] with the check ids the agent stopped running (`retired_checks`)
    /// and the changes to the units' check ids this report carries (`units`, invariant 6):
    /// the retirements travel in the report body, so they are as durable as results and
    /// reach the collector exactly when (and in the order) the report does.
    pub fn append_report(
        &mut self,
        sampled_at_ms: i64,
        results: Vec<CheckResult>,
        retired_checks: Vec<String>,
        units: &[UnitChange],
    ) -> Result<Appended, SpoolError> {
        let path = self.path.as_path();
        let limits = self.limits;
        // Durable before returning (invariant 2); `ack` relaxes this for its deletes.
        self.conn.pragma_update(None, "synchronous", "FULL").map_err(sql(path))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        let seq = meta_u64(&tx, path, "next_seq")?;
        i64::try_from(seq).map_err(|_| SpoolError::CorruptMeta {
            path: path.to_owned(),
            detail: format!("next_seq {seq} is out of range"),
        })?;
        let count = meta_u64(&tx, path, "pending_count")?;
        let bytes = meta_u64(&tx, path, "pending_bytes")?;
        // Before the drops: a check these changes report is back (invariant 7).
        write_unit_changes(&tx, path, units)?;

        // Within the collector's limits: one report, or several with consecutive seqs.
        let report_limits = self.report_limits;
        let (mut parts, mut fitted) =
            fit::split(Report { seq, sampled_at_ms, results, retired_checks }, report_limits);
        let mut new_len = numbered_len(&mut parts, seq);

        // Drop the oldest reports until the new ones fit; their retirements move into them,
        // which makes them longer (so the loop looks at `new_len` again after each).
        let must_drop = |dropped: u64, dropped_bytes: u64, new_len: u64, new_count: u64| {
            let (count, bytes) = (count - dropped, bytes - dropped_bytes);
            count > 0
                && (count.saturating_add(new_count) > limits.max_reports
                    || bytes.saturating_add(new_len) > limits.max_bytes)
        };
        let (mut dropped, mut dropped_bytes, mut carried) = (0u64, 0u64, 0usize);
        let mut dropped_range: Option<(i64, i64)> = None;
        if must_drop(0, 0, new_len, parts.len() as u64) {
            // The checks whose retirement is not carried; filled at the first one to carry.
            let mut not_carried: Option<HashSet<String>> = None;
            let mut stmt =
                tx.prepare_cached("SELECT seq, len, body FROM reports ORDER BY seq").map_err(sql(path))?;
            let mut rows = stmt.query([]).map_err(sql(path))?;
            while must_drop(dropped, dropped_bytes, new_len, parts.len() as u64) {
                let Some(row) = rows.next().map_err(sql(path))? else { break };
                let s: i64 = row.get(0).map_err(sql(path))?;
                let l: i64 = row.get(1).map_err(sql(path))?;
                dropped += 1;
                dropped_bytes += u64::try_from(l).unwrap_or(0);
                dropped_range = Some((dropped_range.map_or(s, |(first, _)| first), s));
                let retired = dropped_retirements(row.get_ref(2).map_err(sql(path))?, path, s);
                if retired.is_empty() {
                    continue;
                }
                // Rare (a drop that carries retirements): join, add, split again.
                let mut report = fit::join(std::mem::take(&mut parts));
                let excluded = match &mut not_carried {
                    Some(excluded) => excluded,
                    None => not_carried.insert(back_or_retired(&tx, path, &report)?),
                };
                let before = report.retired_checks.len();
                for check in retired {
                    if excluded.insert(check.clone()) {
                        report.retired_checks.push(check);
                    }
                }
                carried += report.retired_checks.len() - before;
                let refitted;
                (parts, refitted) = fit::split(report, report_limits);
                fitted.dropped += refitted.dropped;
                new_len = numbered_len(&mut parts, seq);
            }
        }
        if let Some((_, last)) = dropped_range {
            tx.prepare_cached("DELETE FROM reports WHERE seq <= ?1")
                .and_then(|mut stmt| stmt.execute([last]))
                .map_err(sql(path))?;
        }
        let reports = parts.len() as u64;
        let len = insert_reports(&tx, path, &parts)?;
        set_meta(&tx, path, "next_seq", to_i64(seq + reports))?;
        set_meta(&tx, path, "pending_count", to_i64(count - dropped + reports))?;
        set_meta(&tx, path, "pending_bytes", to_i64(bytes - dropped_bytes + len))?;
        let dropped_total = if dropped > 0 {
            let total = meta_u64(&tx, path, "dropped_total")? + dropped;
            set_meta(&tx, path, "dropped_total", to_i64(total))?;
            Some(total)
        } else {
            None
        };
        tx.commit().map_err(sql(path))?;

        if let (Some(dropped_total), Some((first, last))) = (dropped_total, dropped_range) {
            tracing::warn!(
                path = %path.display(),
                dropped,
                dropped_bytes,
                dropped_total,
                first_dropped_seq = first,
                last_dropped_seq = last,
                carried_retirements = carried,
                max_reports = limits.max_reports,
                max_bytes = limits.max_bytes,
                "spool full: dropped oldest unacked reports"
            );
        }
        log_fitted(path, fitted, report_limits);
        Ok(Appended { seq, reports, fitted, dropped })
    }

    /// The collector's limits on one report (from its `Limits` message); appends and
    /// [`Spool::refit`] keep reports within them. Not stored: a restarted agent starts from
    /// [`ReportLimits::CONSERVATIVE`] until the collector says them again.
    pub fn set_report_limits(&mut self, limits: ReportLimits) {
        self.report_limits = limits;
    }

    pub fn report_limits(&self) -> ReportLimits {
        self.report_limits
    }

    /// Rewrites the pending reports into reports within the current [`ReportLimits`], if
    /// any is over them: in order, with new seqs from `next_seq` on, in one transaction
    /// (see "Reports within the collector's limits" above). Only for reports the collector
    /// has not seen: the caller calls it when no pending report was sent unacked.
    pub fn refit(&mut self) -> Result<Refitted, SpoolError> {
        let path = self.path.as_path();
        let report_limits = self.report_limits;
        self.conn.pragma_update(None, "synchronous", "FULL").map_err(sql(path))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        let pending = read_reports(&tx, path, 0, i64::MAX)?;
        if pending.iter().all(|report| report_limits.fits(report)) {
            return Ok(Refitted::default());
        }
        let mut seq = meta_u64(&tx, path, "next_seq")?;
        let first_seq = seq;
        let mut refitted =
            Refitted { reports_before: pending.len() as u64, first_seq, ..Refitted::default() };
        let mut rewritten = Vec::new();
        for report in pending {
            let (mut parts, fitted) = fit::split(report, report_limits);
            numbered_len(&mut parts, seq);
            seq += parts.len() as u64;
            refitted.fitted.cut += fitted.cut;
            refitted.fitted.replaced += fitted.replaced;
            refitted.fitted.dropped += fitted.dropped;
            rewritten.extend(parts);
        }
        refitted.reports_after = rewritten.len() as u64;
        tx.execute("DELETE FROM reports", []).map_err(sql(path))?;
        let len = insert_reports(&tx, path, &rewritten)?;
        set_meta(&tx, path, "next_seq", to_i64(seq))?;
        set_meta(&tx, path, "pending_count", to_i64(refitted.reports_after))?;
        set_meta(&tx, path, "pending_bytes", to_i64(len))?;
        tx.commit().map_err(sql(path))?;
        tracing::warn!(
            path = %path.display(),
            reports_before = refitted.reports_before,
            reports_after = refitted.reports_after,
            first_seq,
            max_message_bytes = report_limits.max_message_bytes,
            max_results = report_limits.max_results,
            "pending reports over the collector's limits: split into reports that fit, with new seqs"
        );
        log_fitted(path, refitted.fitted, report_limits);
        Ok(refitted)
    }

    /// Up to `limit` pending reports with seq > `after`, ascending, decoded.
    pub fn pending_after(&self, after: u64, limit: usize) -> Result<Vec<Report>, SpoolError> {
        read_reports(&self.conn, &self.path, after, i64::try_from(limit).unwrap_or(i64::MAX))
    }

    /// Deletes every report with seq <= `seq`; returns how many were deleted. An ack beyond
    /// the newest seq is harmless (deletes all) and does not move `next_seq`.
    pub fn ack(&mut self, seq: u64) -> Result<u64, SpoolError> {
        let path = self.path.as_path();
        let upto = to_i64(seq);
        // Deleting needs no fsync: a delete lost to a power cut only makes the agent send
        // those reports again, and the collector acks a seq it already has without
        // evaluating it twice. The next append's FULL commit syncs the WAL, deletes included.
        self.conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql(path))?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(path))?;
        let (deleted, deleted_bytes): (i64, i64) = tx
            .prepare_cached("SELECT COUNT(*), COALESCE(SUM(len), 0) FROM reports WHERE seq <= ?1")
            .and_then(|mut stmt| stmt.query_row([upto], |row| Ok((row.get(0)?, row.get(1)?))))
            .map_err(sql(path))?;
        let next_seq = meta_u64(&tx, path, "next_seq")?;
        if deleted > 0 {
            tx.prepare_cached("DELETE FROM reports WHERE seq <= ?1")
                .and_then(|mut stmt| stmt.execute([upto]))
                .map_err(sql(path))?;
            let count = meta_u64(&tx, path, "pending_count")?;
            let bytes = meta_u64(&tx, path, "pending_bytes")?;
            let (deleted, deleted_bytes) = (deleted as u64, deleted_bytes as u64);
            if deleted > count || deleted_bytes > bytes {
                return Err(SpoolError::CorruptMeta {
                    path: path.to_owned(),
                    detail: format!(
                        "pending totals ({count} reports, {bytes} bytes) below what ack {seq} \
                         deletes ({deleted} reports, {deleted_bytes} bytes)"
                    ),
                });
            }
            set_meta(&tx, path, "pending_count", to_i64(count - deleted))?;
            set_meta(&tx, path, "pending_bytes", to_i64(bytes - deleted_bytes))?;
            tx.commit().map_err(sql(path))?;
        }
        // else: nothing to write; dropping `tx` rolls back the read transaction.
        if seq >= next_seq {
            tracing::warn!(
                path = %path.display(),
                ack = seq,
                next_seq,
                "collector acked a seq this spool never assigned"
            );
        }
        Ok(deleted as u64)
    }

    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        read_stats(&self.conn, &self.path)
    }

    /// The check ids every unit reported last, as committed (`unit_checks`).
    pub fn unit_checks(&self) -> Result<UnitChecks, SpoolError> {
        let path = self.path.as_path();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT unit, check_id FROM unit_checks ORDER BY unit, check_id")
            .map_err(sql(path))?;
        let mut rows = stmt.query([]).map_err(sql(path))?;
        let mut units = UnitChecks::new();
        while let Some(row) = rows.next().map_err(sql(path))? {
            let unit: String = row.get(0).map_err(sql(path))?;
            let check: String = row.get(1).map_err(sql(path))?;
            units.entry(unit).or_default().push(check);
        }
        Ok(units)
    }

    /// Test helper: the running totals and the seq range match the rows.
    #[cfg(test)]
    fn check_invariants(&self) {
        let (count, sum, min, max, bad_len): (i64, i64, Option<i64>, Option<i64>, i64) = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(len), 0), MIN(seq), MAX(seq),
                        COALESCE(SUM(len != length(body)), 0) FROM reports",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        let stats = self.stats().unwrap();
        assert_eq!(stats.pending, count as u64);
        assert_eq!(stats.pending_bytes, sum as u64);
        assert_eq!(bad_len, 0);
        if let (Some(min), Some(max)) = (min, max) {
            assert_eq!(max - min + 1, count, "pending seqs are contiguous");
            assert!((max as u64) < stats.next_seq);
        }
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> SpoolError + '_ {
    move |error| SpoolError::Sqlite { path: path.to_owned(), error }
}

/// Clamps a u64 into SQLite's integer range (seq bounds, totals).
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn create_dir(dir: &Path) -> Result<(), SpoolError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|error| SpoolError::Io { path: dir.to_owned(), error })
}

/// The file's schema version, if this agent reads it (`OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION`).
fn check_schema(conn: &Connection, path: &Path) -> Result<i64, SpoolError> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'schema_version'")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
        .map_err(sql(path))?;
    match version {
        Some(v) if (OLDEST_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&v) => Ok(v),
        Some(v) => Err(SpoolError::Unsupported {
            path: path.to_owned(),
            detail: format!("schema version {v} (this agent knows {SCHEMA_VERSION})"),
        }),
        None => {
            Err(SpoolError::CorruptMeta { path: path.to_owned(), detail: "schema_version is missing".into() })
        }
    }
}

/// Applies `units` to `unit_checks` (invariant 6).
fn write_unit_changes(conn: &Connection, path: &Path, units: &[UnitChange]) -> Result<(), SpoolError> {
    for change in units {
        let (UnitChange::Reported { unit, .. } | UnitChange::Retired { unit }) = change;
        conn.prepare_cached("DELETE FROM unit_checks WHERE unit = ?1")
            .and_then(|mut stmt| stmt.execute([unit]))
            .map_err(sql(path))?;
        if let UnitChange::Reported { unit, checks } = change {
            let mut insert = conn
                .prepare_cached("INSERT OR IGNORE INTO unit_checks (unit, check_id) VALUES (?1, ?2)")
                .map_err(sql(path))?;
            for check in checks {
                insert.execute([unit, check]).map_err(sql(path))?;
            }
        }
    }
    Ok(())
}

/// The `retired_checks` of a dropped report's body; none (logged) if it does not decode:
/// the report is dropped either way.
fn dropped_retirements(body: rusqlite::types::ValueRef<'_>, path: &Path, seq: i64) -> Vec<String> {
    let decoded = body
        .as_blob()
        .map_err(|error| error.to_string())
        .and_then(|body| RetiredChecks::decode(body).map_err(|error| error.to_string()));
    match decoded {
        Ok(decoded) => decoded.retired_checks,
        Err(error) => {
            tracing::warn!(path = %path.display(), seq, %error, "dropped report does not decode; its retirements are lost");
            Vec::new()
        }
    }
}

/// The checks a dropped report's retirement is not carried for: those `report` already
/// retires or has a result for, and those a running unit reports (`unit_checks`): back
/// since (invariant 7).
/// Up to `limit` pending reports with seq > `after`, ascending, decoded.
fn read_reports(conn: &Connection, path: &Path, after: u64, limit: i64) -> Result<Vec<Report>, SpoolError> {
    let mut stmt = conn
        .prepare_cached("SELECT seq, body FROM reports WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .map_err(sql(path))?;
    let mut rows = stmt.query(params![to_i64(after), limit]).map_err(sql(path))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(path))? {
        let seq: i64 = row.get(0).map_err(sql(path))?;
        let seq = seq as u64;
        let body = row.get_ref(1).map_err(sql(path))?;
        let corrupt = |detail: String| SpoolError::CorruptReport { path: path.to_owned(), seq, detail };
        let body = body.as_blob().map_err(|e| corrupt(format!("body is not a blob: {e}")))?;
        let report = Report::decode(body).map_err(|e| corrupt(e.to_string()))?;
        if report.seq != seq {
            return Err(corrupt(format!("encoded seq is {}", report.seq)));
        }
        out.push(report);
    }
    Ok(out)
}

/// Numbers `parts` from `first` on; returns their encoded length in total.
fn numbered_len(parts: &mut [Report], first: u64) -> u64 {
    let mut len = 0;
    for (index, part) in parts.iter_mut().enumerate() {
        part.seq = first + index as u64;
        len += part.encoded_len() as u64;
    }
    len
}

/// Inserts numbered reports; returns the bytes stored.
fn insert_reports(conn: &Connection, path: &Path, reports: &[Report]) -> Result<u64, SpoolError> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO reports (seq, len, body) VALUES (?1, ?2, ?3)").map_err(sql(path))?;
    let mut total = 0u64;
    for report in reports {
        let body = report.encode_to_vec();
        total += body.len() as u64;
        stmt.execute(params![to_i64(report.seq), body.len() as i64, body]).map_err(sql(path))?;
    }
    Ok(total)
}

fn log_fitted(path: &Path, fitted: fit::Fitted, limits: ReportLimits) {
    if fitted != fit::Fitted::default() {
        tracing::warn!(
            path = %path.display(),
            cut = fitted.cut,
            replaced_by_unknown = fitted.replaced,
            dropped = fitted.dropped,
            max_message_bytes = limits.max_message_bytes,
            "results over the collector's size limit: cut, replaced or dropped"
        );
    }
}

fn back_or_retired(conn: &Connection, path: &Path, report: &Report) -> Result<HashSet<String>, SpoolError> {
    let mut checks: HashSet<String> = report.retired_checks.iter().cloned().collect();
    checks.extend(report.results.iter().map(|result| result.check_id.clone()));
    let mut stmt = conn.prepare_cached("SELECT check_id FROM unit_checks").map_err(sql(path))?;
    let mut rows = stmt.query([]).map_err(sql(path))?;
    while let Some(row) = rows.next().map_err(sql(path))? {
        checks.insert(row.get(0).map_err(sql(path))?);
    }
    Ok(checks)
}

fn meta_value<T: rusqlite::types::FromSql>(
    conn: &Connection,
    path: &Path,
    key: &str,
) -> Result<T, SpoolError> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(sql(path))?
        .ok_or_else(|| SpoolError::CorruptMeta { path: path.to_owned(), detail: format!("{key} is missing") })
}

fn meta_text(conn: &Connection, path: &Path, key: &str) -> Result<String, SpoolError> {
    meta_value(conn, path, key)
}

fn meta_u64(conn: &Connection, path: &Path, key: &str) -> Result<u64, SpoolError> {
    let v: i64 = meta_value(conn, path, key)?;
    u64::try_from(v).map_err(|_| SpoolError::CorruptMeta {
        path: path.to_owned(),
        detail: format!("{key} is negative ({v})"),
    })
}

fn set_meta(conn: &Connection, path: &Path, key: &str, value: i64) -> Result<(), SpoolError> {
    let changed = conn
        .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")
        .and_then(|mut stmt| stmt.execute(params![key, value]))
        .map_err(sql(path))?;
    if changed == 1 {
        Ok(())
    } else {
        Err(SpoolError::CorruptMeta { path: path.to_owned(), detail: format!("{key} is missing") })
    }
}

/// Reads the stats in one read transaction (a consistent snapshot even while a writer runs).
fn read_stats(conn: &Connection, path: &Path) -> Result<SpoolStats, SpoolError> {
    let tx = conn.unchecked_transaction().map_err(sql(path))?;
    check_schema(&tx, path)?;
    let (oldest, newest): (Option<i64>, Option<i64>) = tx
        .prepare_cached("SELECT MIN(seq), MAX(seq) FROM reports")
        .and_then(|mut stmt| stmt.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(sql(path))?;
    let stats = SpoolStats {
        stream_id: meta_text(&tx, path, "stream_id")?,
        pending: meta_u64(&tx, path, "pending_count")?,
        pending_bytes: meta_u64(&tx, path, "pending_bytes")?,
        oldest_seq: oldest.map(|s| s as u64),
        newest_seq: newest.map(|s| s as u64),
        next_seq: meta_u64(&tx, path, "next_seq")?,
        dropped_total: meta_u64(&tx, path, "dropped_total")?,
    };
    drop(tx); // read-only: rolling back ends the snapshot
    Ok(stats)
}

#[cfg(test)]
mod tests;
