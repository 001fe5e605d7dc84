//! Critical tasks fail the process; restarted ones come back, counted; a drain names
//! what did not stop. Compiled into both crates with the module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_panicking_critical_task_is_a_failure_naming_the_panic() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    supervisor.critical("accept", until.clone(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if true {
            panic!("listener gone");
        }
        Ok::<(), String>(())
    });
    let failure = tokio::time::timeout(WAIT, supervisor.failed()).await.expect("the failure is seen");
    assert_eq!(failure.task, "accept");
    assert_eq!(failure.reason, "panicked: listener gone");
    until.cancel();
    tokio::time::timeout(WAIT, supervisor.wait()).await.expect("all tasks end");
}

#[tokio::test]
async fn a_critical_task_that_returns_early_is_a_failure_and_after_its_end_is_not() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    supervisor.critical("writer", until.clone(), async { Err::<(), _>("disk gone") });
    let failure = tokio::time::timeout(WAIT, supervisor.failed()).await.expect("the failure is seen");
    assert_eq!(failure.reason, "returned an error: disk gone");

    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    let stopped = until.clone();
    supervisor.critical("accept", until.clone(), async move {
        stopped.cancelled().await;
        Ok::<(), String>(())
    });
    until.cancel();
    tokio::time::timeout(WAIT, supervisor.wait()).await.expect("all tasks end");
    assert_eq!(supervisor.failure(), None, "an end after `until` is the expected one");
}

#[tokio::test]
async fn a_blocking_critical_task_that_panics_is_a_failure() {
    let supervisor = Supervisor::new();
    supervisor.critical_blocking("store writer", CancellationToken::new(), || panic!("sqlite is gone"));
    let failure = tokio::time::timeout(WAIT, supervisor.failed()).await.expect("the failure is seen");
    assert_eq!(
        (failure.task.as_ref(), failure.reason.as_str()),
        ("store writer", "panicked: sqlite is gone")
    );
}

#[tokio::test]
async fn a_restarted_task_that_panics_is_counted_and_started_again() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    let runs = Arc::new(AtomicU32::new(0));
    let (second_run, mut started_again) = tokio::sync::mpsc::unbounded_channel();
    {
        let runs = runs.clone();
        let until = until.clone();
        supervisor.restarting("releaser", until.clone(), move || {
            let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
            let until = until.clone();
            let second_run = second_run.clone();
            async move {
                if run == 1 {
                    panic!("first run dies");
                }
                let _ = second_run.send(run);
                until.cancelled().await;
                Ok::<(), String>(())
            }
        });
    }
    let run = tokio::time::timeout(WAIT, started_again.recv()).await.expect("restarted").expect("a run");
    assert_eq!(run, 2);
    assert_eq!(supervisor.restarts(), 1);
    assert_eq!(supervisor.failure(), None, "a restarted task is never a failure");
    until.cancel();
    tokio::time::timeout(WAIT, supervisor.wait()).await.expect("all tasks end");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "not restarted after its end");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_task_that_returns_early_backs_off_between_restarts() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    supervisor.restarting("retention", until.clone(), move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), String>(()) }
    });
    // Paused time: runs at 0, 1 s and 3 s (backoff 1 s, 2 s, then 4 s), not a hot loop.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(supervisor.restarts(), 3, "the third restart is waiting out its backoff");
    until.cancel();
    tokio::time::timeout(WAIT, supervisor.wait()).await.expect("all tasks end");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_task_that_panics_runs_again_after_the_backoff() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let (counted, stop) = (runs.clone(), until.clone());
    supervisor.restarting("flaky", until.clone(), move || {
        let (run, stop) = (counted.fetch_add(1, Ordering::SeqCst), stop.clone());
        async move {
            if run < 2 {
                panic!("run {run} fails");
            }
            // A run is not dropped at `until`: it ends then by itself.
            stop.cancelled().await;
            Ok::<(), String>(())
        }
    });
    // 1 s, then 2 s of backoff: the third run is up by then and stays up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((runs.load(Ordering::SeqCst), supervisor.restarts()), (3, 2));
    assert!(supervisor.failure().is_none());
    until.cancel();
    supervisor.wait().await;
}

#[tokio::test]
async fn a_drain_names_the_tasks_that_did_not_stop() {
    let supervisor = Supervisor::new();
    supervisor.task("unit stuck", std::future::pending());
    supervisor.task("unit done", async {});
    tokio::task::yield_now().await;
    let left = supervisor.drain(tokio::time::Instant::now() + Duration::from_millis(50)).await;
    assert_eq!(left, ["unit stuck"]);
}

#[test]
fn the_backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() {
    let mut backoff = RestartBackoff::default();
    let delays: Vec<u64> = (0..8).map(|_| backoff.after(Duration::ZERO).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(backoff.after(HEALTHY_AFTER), RESTART_BACKOFF_MIN);
}
