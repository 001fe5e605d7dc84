//! The whole collector, in process, under its supervisor.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::supervise::Supervisor;

const WAIT: Duration = Duration::from_secs(30);

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
