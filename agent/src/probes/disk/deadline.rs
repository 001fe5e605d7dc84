//! `statvfs` blocks forever on a dead NFS/CIFS server. Each call runs on its own thread
//! and all of a sample's calls run concurrently against one deadline (5 s); a call that
//! misses it is reported UNKNOWN and left behind. A plain thread rather than tokio's
//! blocking pool, because a runtime waits for its blocking tasks at shutdown: a hung
//! call would hang the agent's exit. A mount whose previous call is still hung gets no
//! new thread until that call returns, so a dead server costs one stuck thread, not one
//! per sample.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// statvfs needs next to no stack; keep each (possibly stuck) thread small.
const STAT_THREAD_STACK: usize = 128 * 1024;

/// Blocking calls that outlived their timeout, by key, each with the flag its thread
/// sets once the call returns. While a key's call is still hung, no new thread is
/// started for it.
static HUNG: Mutex<BTreeMap<PathBuf, Arc<AtomicBool>>> = Mutex::new(BTreeMap::new());

/// A blocking call running on its own thread (or one that could not be started).
pub(super) struct Pending<T> {
    key: PathBuf,
    what: &'static str,
    timeout: Duration,
    state: Result<(oneshot::Receiver<io::Result<T>>, Arc<AtomicBool>), String>,
}

/// Runs `call` on a new thread, unless the previous call for `key` is still hung.
pub(super) fn start_blocking<T, F>(key: &Path, what: &'static str, timeout: Duration, call: F) -> Pending<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let mut pending = Pending { key: key.to_path_buf(), what, timeout, state: Err(String::new()) };
    {
        let mut hung = HUNG.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = hung.get(key) {
            if !done.load(Ordering::Acquire) {
                pending.state = Err(format!(
                    "{what} timed out after {timeout:?} and has not returned since; \
                     not retried until it does"
                ));
                return pending;
            }
            hung.remove(key);
        }
    }
    let (tx, rx) = oneshot::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done_in_thread = Arc::clone(&done);
    let spawned = std::thread::Builder::new()
        .name("nightowl-statvfs".to_owned())
        .stack_size(STAT_THREAD_STACK)
        .spawn(move || {
            // A panic is the call's error, reported as the mount's UNKNOWN: without this
            // the sample would only learn that the thread ended without a result.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|payload| {
                    Err(io::Error::other(format!(
                        "panicked: {}",
                        crate::supervise::panic_message(payload.as_ref())
                    )))
                });
            done_in_thread.store(true, Ordering::Release);
            // The receiver is gone when the sample gave up on us: nothing to do.
            let _ = tx.send(result);
        });
    pending.state = match spawned {
        Ok(_detached) => Ok((rx, done)),
        Err(e) => Err(format!("cannot start a thread for {what}: {e}")),
    };
    pending
}

impl<T> Pending<T> {
    /// The call's result, or why there is none by `deadline`.
    pub(super) async fn wait(self, deadline: Instant) -> Result<T, String> {
        let (rx, done) = self.state?;
        let what = self.what;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(format!("{what} failed: {e}")),
            Ok(Err(_)) => Err(format!("{what} ended without a result")),
            Err(_elapsed) => {
                HUNG.lock().unwrap_or_else(PoisonError::into_inner).insert(self.key, done);
                Err(format!("{what} timed out after {:?}", self.timeout))
            }
        }
    }
}
