//! The emission policy: whether an alert event goes out now or is held.
//!
//! [`Policy::decide`] is the ONE place that decides; the store applies it to every event
//! inside the commit that records it (`queue::commit`), so a held event is durable in
//! the same transaction as the report's other effects, and the releaser
//! (`queue::held::release_due`, driven by `queue::run_releaser`) moves it into the queue later.
//!
//! - **maintenance**: a window covering (tenant, agent, check, labels) at the event's
//!   `emitted_at` holds it until the window's current end, reason `maintenance:<name>`.
//!   At release only the latest held event per fingerprint counts (see
//!   `queue::held`): an alert still firing when the window ends is emitted then, once.
//! - **coverage**: else, after hours for the tenant, P3/P4 are held until business hours
//!   start, reason `after-hours` (the morning summary, released in original order).
//! - else the event is emitted now.

use jiff::Timestamp;

use crate::alert::AlertEvent;
use crate::calendar::{CoverageSet, Maintenance};

/// Reason of after-hours holds.
pub const AFTER_HOURS: &str = "after-hours";
/// Prefix of maintenance holds (`maintenance:<window name>`).
pub const MAINTENANCE_PREFIX: &str = "maintenance:";

/// Maintenance windows and coverage calendars in force. The default holds nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub maintenance: Maintenance,
    pub coverage: CoverageSet,
}

/// What to do with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Into the queue now.
    Emit,
    /// Into `held_events` until `release_at`.
    Hold { release_at: Timestamp, reason: String },
}

impl Policy {
    /// Decides for `event` at its `emitted_at`.
    pub fn decide(&self, event: &AlertEvent) -> Decision {
        let at = event.emitted_at;
        if let Some(window) =
            self.maintenance.covering(&event.tenant, &event.agent, &event.check, &event.labels, at)
        {
            // A window active at `at` has an end (one-off or weekly occurrence); the
            // fallback only guards against a schedule that says otherwise.
            let release_at = window
                .schedule
                .current_end(at)
                .unwrap_or_else(|| at.saturating_add(jiff::SignedDuration::from_hours(24)).unwrap_or(at));
            return Decision::Hold { release_at, reason: format!("{MAINTENANCE_PREFIX}{}", window.name) };
        }
        self.after_hours(event)
    }

    /// The coverage part alone (also applied to maintenance releases: an alert still
    /// firing when a night window ends waits for the morning if it is a P3/P4).
    pub fn after_hours(&self, event: &AlertEvent) -> Decision {
        match self.coverage.hold_until(&event.tenant, event.severity, event.emitted_at) {
            Some(release_at) => Decision::Hold { release_at, reason: AFTER_HOURS.to_owned() },
            None => Decision::Emit,
        }
    }

    /// True when nothing can ever be held (no windows, no calendars).
    pub fn is_empty(&self) -> bool {
        self.maintenance.windows.is_empty()
            && self.coverage.default.is_none()
            && self.coverage.per_tenant.is_empty()
    }
}

#[cfg(test)]
mod tests;
