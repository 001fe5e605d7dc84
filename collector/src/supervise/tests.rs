use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
        async {}
    });
    // Paused time: runs at 0, 0.5 s and 1.5 s (backoff 0.5 s, 1 s, then 2 s), not a
    // hot loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(supervisor.restarts(), 3, "the third restart is waiting out its backoff");
    until.cancel();
    tokio::time::timeout(WAIT, supervisor.wait()).await.expect("all tasks end");
}

/// The whole collector, in process: a critical task that fails stops it with an error
/// naming the task, after the same drain as a shutdown (the address file goes, the
/// data_dir lock is released so a restart can take over).
#[tokio::test]
async fn the_collector_stops_with_an_error_when_a_critical_task_fails() {
    let dir = tempfile::tempdir().unwrap();
    crate::pki::init_ca(&dir.path().join("pki"), &[]).unwrap();
    let text = "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/collector.pem\"\nkey = \"pki/collector.key\"\n";
    let config = crate::config::Config::parse(text, "collector.toml", dir.path()).unwrap();
    let address_file = dir.path().join("data").join(crate::LISTEN_ADDRESS_FILE);

    let supervisor = Supervisor::new();
    let listening = address_file.clone();
    supervisor.critical("fault", CancellationToken::new(), async move {
        while !listening.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if true {
            panic!("injected fault");
        }
        Ok::<(), String>(())
    });
    let never = std::future::pending::<()>();
    let outcome = tokio::time::timeout(WAIT, crate::run_supervised(config.clone(), supervisor, never))
        .await
        .expect("the collector stops by itself");
    match outcome {
        Err(crate::RunError::TaskFailed(failure)) => {
            assert_eq!(
                (failure.task.as_ref(), failure.reason.as_str()),
                ("fault", "panicked: injected fault")
            );
        }
        other => panic!("expected a task failure, got {other:?}"),
    }
    assert!(!address_file.exists(), "the address file is removed at the stop");

    // Released: the next start gets the data_dir and serves until told to stop.
    let stop = CancellationToken::new();
    let next = tokio::spawn(crate::run(config, stop.clone().cancelled_owned()));
    let bound = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&address_file)
                && let Ok(addr) = text.trim().parse::<std::net::SocketAddr>()
            {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the restart listens");
    assert_ne!(bound.port(), 0, "port 0 is resolved to the bound port");
    tokio::net::TcpStream::connect(bound).await.expect("it accepts connections on that port");
    stop.cancel();
    tokio::time::timeout(WAIT, next).await.expect("stops").unwrap().expect("a clean stop");
}
