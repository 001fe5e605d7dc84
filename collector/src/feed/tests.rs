//! The feed against a real collector listener on loopback: real TLS with certificates
//! from a fresh CA, real gRPC, the real subscriber (`client.rs`), a real store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{FeedItem, FeedTarget, SubscribeOptions, Subscription};
use crate::alert::{Severity, Status};
use crate::config::Limits;
use crate::evaluate::RuleSet;
use crate::ingest::{Counters, Ingest, server_tls_config};
use crate::offline::OfflineConfig;
use crate::pki::{CaDir, init_ca, issue_operator};
use crate::policy::PolicySet;
use crate::queue::Store;
use crate::sinks::testing::{event, queue_events};
use crate::supervise::Supervisor;

/// A running collector listener with an empty store, and an operator's feed target.
struct Collector {
    store: Store,
    target: FeedTarget,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    init_ca(&pki, &[]).unwrap();
    let ca = CaDir::new(&pki);
    let tls = server_tls_config(&crate::config::TlsPaths {
        ca: ca.ca_cert(),
        cert: ca.collector_cert(),
        key: ca.collector_key(),
    })
    .unwrap();
    let (cert, key) = (dir.path().join("noc.pem"), dir.path().join("noc.key"));
    issue_operator(&pki, "noc", None, &cert, &key).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (store, _writer) = Store::open(&data).unwrap();
    let (_rules, rules) = tokio::sync::watch::channel(RuleSet::defaults());
    let (_policies, policies) = tokio::sync::watch::channel(Arc::new(PolicySet::default()));
    let ingest = Ingest::bind(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        store.clone(),
        rules,
        policies,
        Limits::default(),
        Arc::new(Counters::default()),
    )
    .await
    .unwrap();
    let addr = ingest.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn({
        let stop = stop.clone();
        async move {
            ingest
                .run(Vec::new(), OfflineConfig::default(), &Supervisor::new(), stop.cancelled_owned())
                .await
                .unwrap();
        }
    });
    let target =
        FeedTarget { url: format!("https://{addr}"), ca: ca.ca_cert(), cert, key, server_name: None };
    Collector { store, target, stop, served, _dir: dir }
}

impl Collector {
    async fn stop(self) {
        self.stop.cancel();
        self.served.await.unwrap();
    }
}

/// Regression (the load generator's feed reader stalled at 1,000 sessions): the
/// collector sent a whole window of events without reading acks, so a subscriber that
/// acks each event as it reads it (one task, a bounded ack channel) could block on its
/// ack while the collector blocked on its next event. Here the window (4,096) holds far
/// more than HTTP/2 lets through unread (2 KiB events), so both sides depend on each
/// other reading: every event must still arrive, and every ack must count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_acks_each_event_as_it_reads_gets_them_all() {
    const EVENTS: usize = 6_000;
    let collector = start().await;
    let padding = "x".repeat(2048);
    for chunk in 0..EVENTS / 1000 {
        let events = (0..1000)
            .map(|index| {
                let mut event =
                    event("acme", "srv-01", &format!("disk:/v{chunk}-{index}"), Status::Firing, Severity::P2);
                event.summary = format!("{} {padding}", event.summary);
                event
            })
            .collect();
        queue_events(&collector.store, events).await;
    }

    let mut options = SubscribeOptions::new("one-by-one");
    options.earliest = true;
    options.max_in_flight = 4096;
    // Redelivery adds to the pressure: events whose acks sit unread are sent again and
    // acked again. With this, the code before the fix broke the subscription within ~3 s.
    options.ack_timeout = Duration::from_secs(1);
    let mut subscription = Subscription::open(&collector.target, &options).await.unwrap();
    let mut received = BTreeSet::new();
    let mut last_pos = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while received.len() < EVENTS {
            match subscription.next().await.expect("feed ok").expect("feed open") {
                FeedItem::Event { pos, .. } => {
                    received.insert(pos);
                    last_pos = last_pos.max(pos);
                    subscription.ack(vec![pos]).await.expect("ack sent");
                }
                FeedItem::Idle { .. } => {}
                FeedItem::Gap { .. } => panic!("no retention gap expected"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stalled after {} of {EVENTS} events", received.len()));
    assert_eq!(received.len(), EVENTS);
    // Closing waits for the collector to record the acks; the next subscription of the
    // consumer then starts after the last event: every ack counted, nothing comes again.
    subscription.close().await;
    let mut again = Subscription::open(&collector.target, &options).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), again.next()).await.expect("the feed answers");
    assert_eq!(first.unwrap(), Some(FeedItem::Idle { head: last_pos }), "acked events came again");
    drop(again);
    collector.stop().await;
}
