//! Reports within the collector's limits (`nightowl.v1.Limits`): a batch too large for
//! one report becomes several, in order, each with its own seq (the spool assigns them);
//! a single result too large for a report of its own is cut (its message shortened) or,
//! if that is not enough, replaced by an UNKNOWN result saying so.
//!
//! Sizes are exact, not estimated: prost's `encoded_len` of the `AgentMessage` that will
//! carry the report, with the largest seq and sample time encodings assumed, is what the
//! collector's decoder compares with its `max_message_bytes` (gRPC's 5-byte frame header
//! is not counted by it).

use nightowl_proto::{CheckResult, ProbeStatus, Report};
use prost::Message;
use prost::encoding::{encoded_len_varint, key_len};

/// The collector's limits on one report, as the agent applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportLimits {
    /// Largest encoded `AgentMessage` carrying a report.
    pub max_message_bytes: usize,
    /// Most results plus retired check ids in one report.
    pub max_results: usize,
}

impl ReportLimits {
    /// Until the collector has said its limits: small enough for a collector configured
    /// well below its defaults (1 MiB, 10,000 results), large enough that a usual batch
    /// stays one report.
    pub const CONSERVATIVE: ReportLimits = ReportLimits { max_message_bytes: 64 * 1024, max_results: 1000 };

    /// The limits a collector announced; 0 (not said) keeps the conservative value.
    /// Below the collector's own floor (4096 bytes, 1 result) nothing fits, so the floor
    /// holds.
    pub fn announced(max_message_bytes: u32, max_results: u32) -> ReportLimits {
        let or_default = |value: u32, default: usize, floor: usize| match value {
            0 => default,
            value => (value as usize).max(floor),
        };
        ReportLimits {
            max_message_bytes: or_default(max_message_bytes, Self::CONSERVATIVE.max_message_bytes, 4096),
            max_results: or_default(max_results, Self::CONSERVATIVE.max_results, 1),
        }
    }

    /// Whether `report` is within these limits as it is.
    pub fn fits(&self, report: &Report) -> bool {
        report.results.len() + report.retired_checks.len() <= self.max_results
            && message_len(report.encoded_len()) <= self.max_message_bytes
    }

    /// Bytes the results and retired ids of one report may take: the message minus the
    /// envelope (`AgentMessage.report` key and length, seq and sample time at their
    /// largest).
    fn item_budget(&self) -> usize {
        const ENVELOPE: usize = 1 + 5 + (1 + 10) + (1 + 10);
        self.max_message_bytes.saturating_sub(ENVELOPE)
    }
}

impl Default for ReportLimits {
    fn default() -> Self {
        Self::CONSERVATIVE
    }
}

/// Encoded length of the `AgentMessage` carrying a report of `report_len` bytes.
fn message_len(report_len: usize) -> usize {
    key_len(2) + encoded_len_varint(report_len as u64) + report_len
}

/// Encoded length of one repeated field entry (results: tag 3; retired ids: tag 4; both
/// one-byte keys) of `len` bytes.
fn item_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// What [`split`] did besides splitting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fitted {
    /// Results whose message was shortened to fit.
    pub cut: u64,
    /// Results replaced by an UNKNOWN saying they were over the limit.
    pub replaced: u64,
    /// Results or retired ids dropped because not even that fits (ids far beyond what
    /// the collector accepts anyway).
    pub dropped: u64,
}

/// Splits `report` (its seq is ignored) into reports within `limits`, in order: results
/// first, the retired ids after the last result (a retirement follows the unit's last
/// result). An empty report stays one empty report. Every part has `sampled_at_ms` of
/// the original and seq 0: the spool numbers them.
pub fn split(report: Report, limits: ReportLimits) -> (Vec<Report>, Fitted) {
    let Report { sampled_at_ms, results, retired_checks, .. } = report;
    let budget = limits.item_budget();
    let max_items = limits.max_results.max(1);
    let mut fitted = Fitted::default();
    let mut parts = Vec::new();
    let mut current = Report { seq: 0, sampled_at_ms, results: Vec::new(), retired_checks: Vec::new() };
    let mut bytes = 0usize;
    let full = |current: &mut Report, bytes: &mut usize, len: usize, parts: &mut Vec<Report>| {
        let items = current.results.len() + current.retired_checks.len();
        if items > 0 && (items + 1 > max_items || *bytes + len > budget) {
            let next = Report { seq: 0, sampled_at_ms, results: Vec::new(), retired_checks: Vec::new() };
            parts.push(std::mem::replace(current, next));
            *bytes = 0;
        }
    };
    for result in results {
        let Some(result) = fit_result(result, budget, &mut fitted) else { continue };
        let len = item_len(result.encoded_len());
        full(&mut current, &mut bytes, len, &mut parts);
        bytes += len;
        current.results.push(result);
    }
    for check in retired_checks {
        let len = item_len(check.len());
        if len > budget {
            fitted.dropped += 1;
            continue;
        }
        full(&mut current, &mut bytes, len, &mut parts);
        bytes += len;
        current.retired_checks.push(check);
    }
    parts.push(current);
    (parts, fitted)
}

/// `result` if it fits in a report of its own; else cut to fit; else an UNKNOWN result
/// of the same check saying so; else (an id that alone is over the budget) nothing.
fn fit_result(mut result: CheckResult, budget: usize, fitted: &mut Fitted) -> Option<CheckResult> {
    let len = result.encoded_len();
    if item_len(len) <= budget {
        return Some(result);
    }
    // Cutting the message is enough when the rest fits with room for a marker.
    const MARK: &str = " [cut: over the collector's size limit]";
    let over = item_len(len) - budget;
    if result.message.len() >= over + MARK.len() {
        let keep = result.message.floor_char_boundary(result.message.len() - over - MARK.len());
        result.message.truncate(keep);
        result.message.push_str(MARK);
        if item_len(result.encoded_len()) <= budget {
            fitted.cut += 1;
            return Some(result);
        }
    }
    let replaced = CheckResult {
        check_id: result.check_id,
        kind: result.kind,
        status: ProbeStatus::Unknown as i32,
        metrics: Default::default(),
        message: format!("result over the collector's size limit ({len} bytes)"),
        interval_ms: result.interval_ms,
    };
    if item_len(replaced.encoded_len()) <= budget {
        fitted.replaced += 1;
        return Some(replaced);
    }
    fitted.dropped += 1;
    None
}

/// The parts of a split, joined again (in order) into one report with `parts[0]`'s seq
/// and sample time.
pub fn join(parts: Vec<Report>) -> Report {
    let mut parts = parts.into_iter();
    let mut joined = parts.next().unwrap_or_default();
    for part in parts {
        joined.results.extend(part.results);
        joined.retired_checks.extend(part.retired_checks);
    }
    joined
}

#[cfg(test)]
mod tests;
