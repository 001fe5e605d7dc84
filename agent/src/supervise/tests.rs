//! Critical tasks fail the agent; restarted ones come back, counted.

use std::sync::atomic::AtomicUsize;

use super::*;

#[tokio::test(start_paused = true)]
async fn a_restarted_task_that_panics_runs_again_after_the_backoff() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    supervisor.restarting("flaky", until.clone(), move || {
        let run = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if run < 2 {
                panic!("run {run} fails");
            }
            std::future::pending::<()>().await;
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
async fn a_critical_task_that_ends_early_is_a_failure_and_a_stopping_one_is_not() {
    let supervisor = Supervisor::new();
    let until = CancellationToken::new();
    supervisor.critical("reporter", until.clone(), async { Ok::<(), String>(()) });
    let failure = supervisor.failed().await;
    assert_eq!(failure, Failure { task: "reporter".into(), reason: "exited".into() });

    let calm = Supervisor::new();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    calm.critical("reporter", stop.clone(), async move {
        stopped.cancelled().await;
        Ok::<(), String>(())
    });
    stop.cancel();
    calm.wait().await;
    assert!(calm.failure().is_none());
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
