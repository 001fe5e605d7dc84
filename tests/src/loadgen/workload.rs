//! What the simulated agents send: deterministic in (session, seq), so that a drill can
//! tell from the ledger alone which alert transitions the collector must have emitted.
//!
//! Session `i` has `R` checks `disk:/c<j>` (kind `disk`, metric `used_pct`). The first
//! [`crossing_checks`] of them are *crossing*: their value is 97 in odd reports and 50
//! in even ones, so the default rule `disk_used_pct` (crit 95, clear 85, no `for`) fires
//! at every odd seq and resolves at every even seq. Every other check stays at 50 and
//! never causes an event. Report `seq` thus causes exactly one transition per crossing
//! check: `firing` when `seq` is odd, `resolved` when it is even.
//!
//! (Checks that change level at every report trip flap detection under the default
//! `[flapping]` settings, 6 changes in 10 min; the benchmark and drill scripts run the
//! collector with flap detection raised out of the way.)

use bytes::{BufMut, Bytes, BytesMut};
use nightowl_proto::{CheckResult, ProbeStatus, Report};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// The rule that the crossing checks fire and resolve.
pub const RULE: &str = "disk_used_pct";
/// Value of a crossing check in an odd report (above crit 95).
pub const HIGH: f64 = 97.0;
/// Value of every check otherwise (below clear 85).
pub const LOW: f64 = 50.0;

/// The agent id of session `index`.
pub fn agent_id(prefix: &str, index: u32) -> String {
    format!("{prefix}{index:05}")
}

/// The check id of check `index`.
pub fn check_id(index: u32) -> String {
    format!("disk:/c{index}")
}

/// The index of a check id made by [`check_id`].
pub fn check_index(check: &str) -> Option<u32> {
    check.strip_prefix("disk:/c")?.parse().ok()
}

/// How many of session `session`'s `results` checks cross thresholds, for a fraction
/// `crossing` of all results: the fractional parts are spread over sessions so that N
/// sessions together have `floor(crossing × results × N)` crossing checks.
pub fn crossing_checks(session: u32, results: u32, crossing: f64) -> u32 {
    let per_session = crossing.clamp(0.0, 1.0) * f64::from(results);
    let before = (per_session * f64::from(session)).floor();
    let upto = (per_session * f64::from(session + 1)).floor();
    ((upto - before) as u32).min(results)
}

/// Whether report `seq` takes crossing checks above the threshold (`firing`).
pub fn fires(seq: u64) -> bool {
    seq % 2 == 1
}

/// The report `seq` of a session with `results` checks of which `crossing` cross.
pub fn report(seq: u64, sampled_at_ms: i64, results: u32, crossing: u32, interval_ms: u32) -> Report {
    let high = fires(seq);
    Report {
        seq,
        sampled_at_ms,
        results: (0..results)
            .map(|index| {
                let value = if index < crossing && high { HIGH } else { LOW };
                CheckResult {
                    check_id: check_id(index),
                    kind: "disk".to_owned(),
                    status: ProbeStatus::Ok as i32,
                    metrics: [("used_pct".to_owned(), value)].into_iter().collect(),
                    message: String::new(),
                    interval_ms,
                }
            })
            .collect(),
        retired_checks: Vec::new(),
    }
}

/// A session's reports, encoded once: the `results` of a firing and of a resolving
/// report as protobuf bytes, so that sending report `seq` costs two varints and a copy
/// instead of building and encoding R results (the load generator shares the cores
/// with the collector it measures; every cycle it spends is one the collector lacks).
///
/// Protobuf lets a message's fields come in any order and concatenated encodings merge,
/// so `seq` and `sampled_at_ms` followed by the pre-encoded `results` field is exactly
/// the encoding of [`report`] (a test holds them equal).
#[derive(Debug, Clone)]
pub struct EncodedReports {
    high: Bytes,
    low: Bytes,
}

impl EncodedReports {
    pub fn new(results: u32, crossing: u32, interval_ms: u32) -> Self {
        // A report with seq 0 and sampled_at_ms 0 encodes as nothing but its results.
        let results_of = |seq| {
            let only_results = Report { seq: 0, ..report(seq, 0, results, crossing, interval_ms) };
            Bytes::from(only_results.encode_to_vec())
        };
        EncodedReports { high: results_of(1), low: results_of(2) }
    }

    /// The encoded `AgentMessage { report }` of report `seq`.
    pub fn agent_message(&self, seq: u64, sampled_at_ms: i64) -> Bytes {
        let results = if fires(seq) { &self.high } else { &self.low };
        let head = Report { seq, sampled_at_ms, ..Default::default() };
        let report_len = head.encoded_len() + results.len();
        let mut buffer = BytesMut::with_capacity(report_len + 16);
        // AgentMessage.report is field 2 (length-delimited).
        encode_key(2, WireType::LengthDelimited, &mut buffer);
        encode_varint(report_len as u64, &mut buffer);
        head.encode(&mut buffer).expect("capacity reserved");
        buffer.put_slice(results);
        debug_assert_eq!(buffer.len(), 1 + encoded_len_varint(report_len as u64) + report_len);
        buffer.freeze()
    }
}

#[cfg(test)]
mod tests;
