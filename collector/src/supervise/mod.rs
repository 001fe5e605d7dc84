//! Supervision of the collector's long-running tasks: no task ends unseen.
//!
//! Every long-running task is started through a [`Supervisor`], as one of two kinds
//! (which task is which, and why, is in ARCHITECTURE.md, "Supervision"):
//!
//! - **critical**: the collector cannot do its job without it (the accept loop, the store
//!   writer). If it ends before shutdown — returns or panics — [`Supervisor::failed`]
//!   resolves with what happened; `run` drains and returns [`crate::RunError::TaskFailed`]
//!   (the binary exits non-zero, the service manager restarts it, agents replay).
//! - **restarted**: it can start over from durable state (the offline monitor, the
//!   releaser, retention, each sink). If it ends before shutdown it is logged, counted
//!   ([`Supervisor::restarts`]) and started again after a backoff that doubles from
//!   [`RESTART_BACKOFF_MIN`] to [`RESTART_BACKOFF_MAX`] and starts over once a run has
//!   lasted [`HEALTHY_AFTER`].
//!
//! Each task runs in its own tokio task so that a panic is caught at its `JoinHandle`
//! and reported with its payload.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff: the failure was not a crash loop.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);

/// A critical task that ended before shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub task: Cow<'static, str>,
    /// "panicked: <payload>", "returned an error: <error>" or "exited".
    pub reason: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} {}", self.task, self.reason)
    }
}

/// What one run of a task came to.
enum Ended {
    Done,
    Error(String),
    Panicked(String),
}

impl Ended {
    fn reason(&self) -> String {
        match self {
            Ended::Done => "exited".to_owned(),
            Ended::Error(error) => format!("returned an error: {error}"),
            Ended::Panicked(payload) => format!("panicked: {payload}"),
        }
    }
}

/// Starts and watches the long-running tasks; see the module doc. Each task is given the
/// token whose cancellation is its expected end (`until`): an end before that is a
/// failure (critical) or a restart (restarted).
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
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// How many times restarted tasks have been restarted.
    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    /// Runs `task` as a critical task: an end before `until` is cancelled, or a panic at
    /// any time, is a failure.
    pub fn critical<F, E>(&self, name: impl Into<Cow<'static, str>>, until: CancellationToken, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let name = name.into();
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let ended = run_once(task).await;
            if until.is_cancelled() && !matches!(ended, Ended::Panicked(_)) {
                if let Ended::Error(error) = &ended {
                    tracing::warn!(task = %name, %error, "task ended with an error while stopping");
                }
                return;
            }
            inner.fail(Failure { task: name, reason: ended.reason() });
        });
    }

    /// Runs a blocking critical task (a thread's body) on the blocking pool.
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
    /// `until` is cancelled (see the module doc).
    pub fn restarting<S, F>(&self, name: impl Into<Cow<'static, str>>, until: CancellationToken, mut start: S)
    where
        S: FnMut() -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        let inner = self.inner.clone();
        self.inner.tasks.spawn(async move {
            let mut backoff = RESTART_BACKOFF_MIN;
            loop {
                let began = tokio::time::Instant::now();
                let run = start();
                let ended = run_once(async move {
                    run.await;
                    Ok::<(), String>(())
                })
                .await;
                if until.is_cancelled() {
                    if let Ended::Panicked(payload) = &ended {
                        tracing::error!(task = %name, %payload, "task panicked while stopping");
                    }
                    return;
                }
                if began.elapsed() >= HEALTHY_AFTER {
                    backoff = RESTART_BACKOFF_MIN;
                }
                let restarts = inner.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(task = %name, reason = %ended.reason(), ?backoff, restarts, "task ended; restarting it");
                tokio::select! {
                    () = until.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
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
        self.inner.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Waits for every task to end (each ends once its `until` is cancelled).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

impl Inner {
    fn fail(&self, failure: Failure) {
        tracing::error!(task = %failure.task, reason = %failure.reason, "critical task failed; the collector stops");
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get_or_insert(failure);
        self.failed.cancel();
    }
}

/// Runs `task` in its own tokio task and says how it ended (a panic is caught there).
async fn run_once<F, E>(task: F) -> Ended
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::spawn(task).await {
        Ok(Ok(())) => Ended::Done,
        Ok(Err(error)) => Ended::Error(error.to_string()),
        Err(join) if join.is_panic() => Ended::Panicked(panic_message(join.into_panic().as_ref())),
        Err(join) => Ended::Error(join.to_string()),
    }
}

/// The text of a panic payload (`panic!("…")` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
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
