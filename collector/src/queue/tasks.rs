//! The store's background tasks: the releaser of held events and retention. Each runs
//! until its token is cancelled and is supervised as a restarted task (`crate::supervise`):
//! both start over from what the store holds.

use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::{Retention, Store};

/// How often the releaser looks for due held events.
pub const RELEASE_EVERY: Duration = Duration::from_secs(2);

/// Releases due held events every [`RELEASE_EVERY`] (and once at start, which releases
/// what came due while the collector was down) until `shutdown` is cancelled.
pub async fn run_releaser(store: Store, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(RELEASE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        match store.release_due(Timestamp::now()).await {
            Ok(outcome) if outcome.is_empty() => {}
            Ok(outcome) => tracing::info!(
                released = outcome.released,
                dropped = outcome.dropped,
                deferred = outcome.deferred,
                "held alert events released"
            ),
            Err(error) => tracing::error!(%error, "releasing held alert events failed; will retry"),
        }
    }
}

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Deletes events past `retention` now and then, until `shutdown`.
pub async fn run_retention(store: Store, retention: Retention, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(RETENTION_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.prune(retention, jiff::Timestamp::now()).await {
            Ok(pruned) if pruned.events > 0 => {
                tracing::info!(
                    deleted = pruned.events,
                    through = pruned.pruned_through,
                    "retention: old events deleted"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "retention failed; will try again"),
        }
    }
}
