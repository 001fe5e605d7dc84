//! Blocking calls (SQLite, file reads, `/proc` scans) on tokio's blocking pool, named
//! while they run.
//!
//! A blocking call cannot be cancelled: when the future awaiting it is dropped (a unit
//! stopped mid-sample, a session ended mid-ack) the call runs on, and a tokio runtime
//! that is dropped waits for every such call — a read on a hung network mount would hold
//! the agent's exit forever. So every blocking call goes through [`spawn`], which keeps
//! its name on a list while it runs, and the shutdown waits for that list to empty only
//! up to its grace ([`drain`]), then exits naming what is left.
//!
//! The list is process-wide, like tokio's blocking pool it mirrors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

static RUNNING: Mutex<BTreeMap<u64, Cow<'static, str>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Notified whenever a call leaves the list.
static FINISHED: Notify = Notify::const_new();

/// `tokio::task::spawn_blocking`, with `what` on the list of running calls until `work`
/// returns (or panics, or is dropped unrun).
pub fn spawn<T, F>(what: impl Into<Cow<'static, str>>, work: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let running = Running::enter(what.into());
    tokio::task::spawn_blocking(move || {
        let _running = running;
        work()
    })
}

/// Waits until no call is running, until `deadline` at the latest; returns the names of
/// those still running then (empty when none is).
pub async fn drain(deadline: tokio::time::Instant) -> Vec<String> {
    loop {
        // Created before looking: a call that ends in between still wakes it.
        let finished = FINISHED.notified();
        let left = running();
        if left.is_empty() || tokio::time::timeout_at(deadline, finished).await.is_err() {
            return left;
        }
    }
}

/// The names of the calls running now.
pub fn running() -> Vec<String> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner).values().map(|what| what.to_string()).collect()
}

/// One call on the list, taken off when dropped.
struct Running(u64);

impl Running {
    fn enter(what: Cow<'static, str>) -> Running {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        RUNNING.lock().unwrap_or_else(PoisonError::into_inner).insert(id, what);
        Running(id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
        FINISHED.notify_waiters();
    }
}
