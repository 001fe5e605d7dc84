//! Acceptance (issue 5, point 1): the alert feed. A consumer that crashes before acking
//! gets the events again; two named consumers each get every event; a tenant-scoped
//! consumer never sees another tenant's events; an unacked event is redelivered after
//! its timeout; only operator certificates may subscribe. All against the real
//! collector and agents, with real certificates.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nightowl_collector::feed::client::{FeedItem, FeedTarget, SubscribeOptions, Subscription};
use nightowl_tests::{Agent, Collector, Pki, collector_bin, flag_check, run, wait_for};

/// Reads events until the feed says it has sent everything; returns (pos, id, delivery).
async fn drain(subscription: &mut Subscription) -> Vec<(i64, String, u32)> {
    let mut events = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("the feed answers within 30s")
            .expect("feed ok")
            .expect("feed open");
        match item {
            FeedItem::Event { pos, id, delivery, .. } => events.push((pos, id, delivery)),
            FeedItem::Idle { .. } => return events,
            FeedItem::Gap { .. } => panic!("no retention gap expected here"),
        }
    }
}

fn ids(events: &[(i64, String, u32)]) -> BTreeSet<String> {
    events.iter().map(|(_, id, _)| id.clone()).collect()
}

fn options(consumer: &str) -> SubscribeOptions {
    let mut options = SubscribeOptions::new(consumer);
    options.earliest = true;
    options
}

#[test]
fn the_feed_redelivers_fans_out_and_isolates_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();

    // Two agents of two tenants, each with a check that is CRITICAL until told otherwise.
    let mut agents = Vec::new();
    let mut flags = Vec::new();
    for (tenant, name) in [("acme", "srv-01"), ("globex", "ws-07")] {
        let (cert, key) = pki.issue(tenant, name);
        let flag = dir.path().join(format!("{tenant}.flag"));
        std::fs::write(&flag, "2").unwrap();
        let agent_dir = dir.path().join(format!("agent-{tenant}"));
        let agent =
            Agent::new(&agent_dir, &collector, &pki, &cert, &key, "300ms", &[std::path::Path::new("/")]);
        agent.rewrite_config(&[std::path::Path::new("/")], &flag_check("flag", &flag));
        agents.push(agent);
        flags.push(flag);
    }
    for agent in &mut agents {
        agent.start();
    }
    let snapshot = wait_for("both tenants' checks to fire", Duration::from_secs(60), || {
        let events = collector.events();
        let fired = |tenant: &str| {
            events.iter().any(|event| {
                event["tenant"] == tenant && event["check"] == "command:flag" && event["status"] == "firing"
            })
        };
        (fired("acme") && fired("globex")).then_some(events)
    });
    let all_ids: BTreeSet<String> =
        snapshot.iter().map(|event| event["id"].as_str().unwrap().to_owned()).collect();
    let acme_ids: BTreeSet<String> = snapshot
        .iter()
        .filter(|event| event["tenant"] == "acme")
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();

    let target = |cert: PathBuf, key: PathBuf| FeedTarget {
        url: collector.url(),
        ca: pki.ca(),
        cert,
        key,
        server_name: None,
    };
    let (ops_cert, ops_key) = pki.issue_operator("noc", None);
    let (acme_cert, acme_key) = pki.issue_operator("acme-psa", Some("acme"));
    let noc = target(ops_cert.clone(), ops_key.clone());
    let acme = target(acme_cert, acme_key);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        // A consumer that "crashes" (drops the stream) before acking gets it all again.
        let mut first = Subscription::open(&noc, &options("psa")).await.unwrap();
        let unacked = drain(&mut first).await;
        assert!(ids(&unacked).is_superset(&all_ids), "the first session missed events");
        drop(first);
        let mut second = Subscription::open(&noc, &options("psa")).await.unwrap();
        let again = drain(&mut second).await;
        assert!(ids(&again).is_superset(&ids(&unacked)), "unacked events must come again after reconnect");
        second.ack(again.iter().map(|(pos, _, _)| *pos).collect()).await.unwrap();
        // Acked: gone for this consumer (give the ack a moment to be recorded).
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(second);
        let mut third = Subscription::open(&noc, &options("psa")).await.unwrap();
        let after_ack = drain(&mut third).await;
        assert!(ids(&after_ack).is_disjoint(&ids(&again)), "acked events came again: {after_ack:?}");
        drop(third);

        // A second named consumer gets every event as well.
        let mut pager = Subscription::open(&noc, &options("pager")).await.unwrap();
        let paged = drain(&mut pager).await;
        assert!(ids(&paged).is_superset(&all_ids), "consumer pager missed events");

        // An unacked event is redelivered after its ack timeout.
        let mut slow_options = options("slow");
        slow_options.ack_timeout = Duration::from_secs(1);
        let mut slow = Subscription::open(&noc, &slow_options).await.unwrap();
        let sent = drain(&mut slow).await;
        let (pos, id, _) = sent.first().cloned().expect("events for the slow consumer");
        let redelivered = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(FeedItem::Event { pos: again, delivery, id: again_id, .. }) =
                    slow.next().await.unwrap()
                    && again == pos
                {
                    return (delivery, again_id);
                }
            }
        })
        .await
        .expect("redelivery within 30s");
        assert_eq!(redelivered, (2, id), "the same event, second delivery");

        // A tenant-scoped consumer sees its tenant only.
        let mut scoped = Subscription::open(&acme, &options("psa")).await.unwrap();
        let acme_events = drain(&mut scoped).await;
        assert!(ids(&acme_events).is_superset(&acme_ids), "the acme consumer missed acme events");
        assert!(
            ids(&acme_events).is_disjoint(&(&all_ids - &acme_ids)),
            "the acme consumer saw another tenant's events"
        );

        // Live: resolving a check reaches a following subscriber.
        std::fs::write(&flags[0], "0").unwrap();
        let resolved = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(FeedItem::Event { json, pos, .. }) = scoped.next().await.unwrap() {
                    scoped.ack(vec![pos]).await.unwrap();
                    let event: serde_json::Value = serde_json::from_str(&json).unwrap();
                    assert_eq!(event["tenant"], "acme", "{event}");
                    if event["check"] == "command:flag" && event["status"] == "resolved" {
                        return event;
                    }
                }
            }
        })
        .await
        .expect("the resolved event within 60s");
        assert_eq!(resolved["agent"], "srv-01");

        // An agent certificate cannot read the feed.
        let (agent_cert, agent_key) = (pki.dir.join("acme-srv-01.pem"), pki.dir.join("acme-srv-01.key"));
        let refused = match Subscription::open(&target(agent_cert, agent_key), &options("sneaky")).await {
            Err(error) => error.to_string(),
            Ok(mut subscription) => match subscription.next().await {
                Err(error) => error.to_string(),
                Ok(item) => panic!("an agent certificate read the feed: {item:?}"),
            },
        };
        assert!(
            refused.contains("PermissionDenied") || refused.contains("operator certificate"),
            "{refused}"
        );
    });

    // `alerts tail --collector` is a feed client: it prints and acks, so a second run
    // under the same consumer prints only what is new.
    let tail = || {
        run(Command::new(collector_bin())
            .args(["alerts", "tail", "--collector", &collector.url(), "--ca"])
            .arg(pki.ca())
            .arg("--cert")
            .arg(&ops_cert)
            .arg("--key")
            .arg(&ops_key)
            .args(["--consumer", "cli", "--earliest"]))
    };
    let output = tail();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(printed.is_superset(&all_ids), "alerts tail --collector missed events");
    std::thread::sleep(Duration::from_millis(500));
    let output = tail();
    let reprinted: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(reprinted.is_disjoint(&printed), "acked events printed again");

    // The consumers are visible, with how far they got.
    let output = run(Command::new(collector_bin())
        .args(["sinks", "list", "--json", "--config"])
        .arg(&collector.config));
    let listed = String::from_utf8_lossy(&output.stdout);
    for consumer in ["feed:all/psa", "feed:all/pager", "feed:acme/psa", "feed:all/cli"] {
        assert!(listed.contains(&format!("\"{consumer}\"")), "{consumer} missing from sinks list: {listed}");
    }
}
