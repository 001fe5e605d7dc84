//! Supervision of long-running tasks: no task ends unseen. One file for both binaries:
//! the agent compiles it as its `supervise` (a `#[path]` module), so it may use only what
//! both crates have (std, tokio, tokio-util, tracing, thiserror).
//!
//! Every long-running task is started through a [`Supervisor`], as one of three kinds
//! (which task is which, and why, is in ARCHITECTURE.md, "Supervision"):
//!
//! - **critical** ([`Supervisor::critical`], [`Supervisor::critical_blocking`]): the
//!   process cannot do its job without it (the collector's accept loop and store writer,
//!   the agent's reporter). If it ends before its `until` is cancelled — returns or
//!   panics — [`Supervisor::failed`] resolves with what happened; `run` drains and
//!   returns `RunError::TaskFailed` (the binary exits non-zero and the service manager
//!   starts it again; what is unacked is replayed).
//! - **restarted** ([`Supervisor::restarting`]): it can start over from durable state
//!   (the collector's offline monitor, releaser, retention and sinks; the agent's session
//!   and config watcher). If it ends before its `until` is cancelled it is logged,
//!   counted ([`Supervisor::restarts`]) and started again after a [`RestartBackoff`]. A
//!   run is never dropped: after `until` is cancelled the supervisor waits for it to
//!   end, so a task that must finish in-flight work (a sink's delivery) does.
//! - **self-supervised** ([`Supervisor::task`]): the agent's probe units, which catch
//!   their probe's panics themselves (`crate::sampler`: an UNKNOWN result naming the
//!   panic, the probe rebuilt after a [`RestartBackoff`], counted with
//!   [`Supervisor::count_caught_panic`]). A panic outside the probe is still logged here.
//!
//! Every task is named while it runs, so that a shutdown that cannot wait any longer
//! ([`Supervisor::drain`]) says which tasks it leaves behind.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first restart of a task (or of a probe) comes after this long; each further one
/// doubles it, up to [`RESTART_BACKOFF_MAX`].
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff: the failure was not a crash loop.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);

/// A critical task that ended before shutdown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} {reason}")]
pub struct Failure {
    pub task: Cow<'static, str>,
    /// "panicked: <payload>", "returned an error: <error>" or "exited".
    pub reason: String,
}

/// The delays between restarts: [`RESTART_BACKOFF_MIN`] doubling to
/// [`RESTART_BACKOFF_MAX`], from the minimum again after a run of [`HEALTHY_AFTER`].
#[derive(Debug)]
pub struct RestartBackoff {
    next: Duration,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self { next: RESTART_BACKOFF_MIN }
    }
}

impl RestartBackoff {
    /// The delay before the next run, after a run that lasted `ran`.
    pub fn after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_AFTER {
            self.next = RESTART_BACKOFF_MIN;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(RESTART_BACKOFF_MAX);
        delay
    }
}

/// Starts, names and watches the long-running tasks; see the module doc. Each task is
/// given the token whose cancellation is its expected end (`until`): an end before that
/// is a failure (critical) or a restart (restarted).
#[derive(Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    failed: CancellationToken,
    failure: Mutex<Option<Failure>>,
    tasks: TaskTracker,
    restarts: AtomicU64,
    caught_panics: AtomicU64,
    /// The tasks running now, by a number of their own (names may repeat).
    running: Mutex<BTreeMap<u64, Cow<'static, str>>>,
    next_id: AtomicU64,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// How many times restarted tasks have been restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// How many panics self-supervised tasks caught themselves (the agent's probe units:
    /// each one restarted its probe).
    pub fn caught_panics(&self) -> u64 {
        self.inner.caught_panics.load(Ordering::Relaxed)
    }

    /// Counts one panic a self-supervised task caught; returns the total so far.
    pub fn count_caught_panic(&self) -> u64 {
        self.inner.caught_panics.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `task` as a critical task: an end before `until` is cancelled, or a panic at
    /// any time, is a failure.
    pub fn critical<F>(&self, name: impl Into<Cow<'static, str>>, until: CancellationToken, task: F)
    where
        F: Future<Output: TaskEnd> + Send + 'static,
    {
        let name = name.into();
        let inner = self.inner.clone();
        self.spawn_named(name.clone(), async move {
            let ended = Ended::of(CatchUnwind(pin!(task)).await);
            if until.is_cancelled() && !matches!(ended, Ended::Panicked(_)) {
                if let Ended::Error(error) = &ended {
                    tracing::warn!(task = %name, %error, "task ended with an error while stopping");
                }
                return;
            }
            inner.fail(Failure { task: name, reason: ended.reason() });
        });
    }

    /// Runs a blocking critical task (a thread's body, e.g. joining the store writer) on
    /// the blocking pool.
    pub fn critical_blocking(
        &self,
        name: impl Into<Cow<'static, str>>,
        until: CancellationToken,
        task: impl FnOnce() + Send + 'static,
    ) {
        self.critical(name, until, async move {
            match tokio::task::spawn_blocking(task).await {
                Ok(()) => Ok::<(), String>(()),
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(join) => Err(join.to_string()),
            }
        });
    }

    /// Runs the task `start` makes, and makes and runs a new one whenever it ends before
    /// `until` is cancelled (see the module doc). A run is not dropped when `until` is
    /// cancelled: it is expected to end then, by itself.
    pub fn restarting<S, F>(&self, name: impl Into<Cow<'static, str>>, until: CancellationToken, mut start: S)
    where
        S: FnMut() -> F + Send + 'static,
        F: Future<Output: TaskEnd> + Send,
    {
        let name = name.into();
        let inner = self.inner.clone();
        self.spawn_named(name.clone(), async move {
            let mut backoff = RestartBackoff::default();
            loop {
                let began = tokio::time::Instant::now();
                let ended = Ended::of(CatchUnwind(pin!(start())).await);
                if until.is_cancelled() {
                    if let Ended::Panicked(payload) = &ended {
                        tracing::error!(task = %name, %payload, "task panicked while stopping");
                    }
                    return;
                }
                let delay = backoff.after(began.elapsed());
                let restarts = inner.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(task = %name, reason = %ended.reason(), restart_in = ?delay, restarts, "task ended; restarting it");
                tokio::select! {
                    () = until.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        });
    }

    /// Runs `task`, which supervises itself (a probe unit); a panic that still reaches
    /// here is logged.
    pub fn task(&self, name: impl Into<Cow<'static, str>>, task: impl Future<Output = ()> + Send + 'static) {
        let name = name.into();
        self.spawn_named(name.clone(), async move {
            if let Err(payload) = CatchUnwind(pin!(task)).await {
                tracing::error!(task = %name, panic = %panic_message(payload.as_ref()), "task panicked; it is not restarted");
            }
        });
    }

    /// Resolves with the first critical task's failure; pending while there is none.
    pub async fn failed(&self) -> Failure {
        self.inner.failed.cancelled().await;
        self.failure().unwrap_or_else(|| Failure { task: "unknown".into(), reason: "failed".into() })
    }

    /// The first critical failure so far.
    pub fn failure(&self) -> Option<Failure> {
        self.inner.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits for every task to end (each ends once its `until` is cancelled).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Waits for every task to end, until `deadline` at the latest; returns the names of
    /// those still running then (empty when all ended).
    pub async fn drain(&self, deadline: tokio::time::Instant) -> Vec<String> {
        if tokio::time::timeout_at(deadline, self.wait()).await.is_ok() {
            return Vec::new();
        }
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|name| name.to_string())
            .collect()
    }

    fn spawn_named(&self, name: Cow<'static, str>, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).insert(id, name);
        // Removed however the task ends: done, panicked or dropped with the runtime.
        let running = Running { inner: self.inner.clone(), id };
        self.inner.tasks.spawn(async move {
            let _running = running;
            task.await;
        });
    }
}

/// Takes a task's name off the running list when dropped.
struct Running {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

impl Inner {
    fn fail(&self, failure: Failure) {
        tracing::error!(task = %failure.task, reason = %failure.reason, "critical task failed; stopping");
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(failure);
        self.failed.cancel();
    }
}

/// What a task's future ends with: nothing (`()`), or a result whose error is reported
/// as the reason it ended.
pub trait TaskEnd {
    /// The error it ended with, if any.
    fn error(self) -> Option<String>;
}

impl TaskEnd for () {
    fn error(self) -> Option<String> {
        None
    }
}

impl<E: std::fmt::Display> TaskEnd for Result<(), E> {
    fn error(self) -> Option<String> {
        self.err().map(|error| error.to_string())
    }
}

/// What one run of a task came to.
enum Ended {
    Done,
    Error(String),
    Panicked(String),
}

impl Ended {
    fn of(ended: Result<impl TaskEnd, Box<dyn Any + Send>>) -> Ended {
        match ended.map(TaskEnd::error) {
            Ok(None) => Ended::Done,
            Ok(Some(error)) => Ended::Error(error),
            Err(payload) => Ended::Panicked(panic_message(payload.as_ref())),
        }
    }

    fn reason(&self) -> String {
        match self {
            Ended::Done => "exited".to_owned(),
            Ended::Error(error) => format!("returned an error: {error}"),
            Ended::Panicked(payload) => format!("panicked: {payload}"),
        }
    }
}

/// Polls a future and catches a panic in it, as tokio does for a spawned task, but
/// without a task of its own: a probe unit stays one task, and what the caught future
/// borrowed (a unit's last check ids) is still there after the panic.
///
/// Unwind safety: after a panic the future is dropped and never polled again, and the
/// state it borrowed is only ever replaced whole, never left half-updated.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(future).poll(context))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
