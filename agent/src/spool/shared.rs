//! The spool as the agent's tasks use it: shared by the sampler (append) and the session
//! (read, ack, refit), every call on the blocking pool (SQLite fsyncs).

use std::sync::{Arc, Mutex};

use super::{Spool, SpoolError};

/// The spool, shared by the sampler and the session. Every call goes through
/// [`with_spool`].
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Runs `work` on the spool on the blocking pool, named while it runs (`crate::blocking`):
/// SQLite fsyncs, and the agent's runtime is current-thread.
pub async fn with_spool<T: Send + 'static>(
    spool: &SharedSpool,
    work: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let spool = spool.clone();
    crate::blocking::spawn("spool", move || {
        let mut spool = spool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut spool)
    })
    .await?
}

/// Unix epoch milliseconds (a report's `sampled_at_ms`, a heartbeat's `sent_at_ms`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
