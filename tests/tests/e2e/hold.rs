//! Acceptance (issue 4, points 4 and 5): maintenance windows and after-hours holds, with
//! the real collector and a raw gRPC client that controls exactly what is reported.
//!
//! 4. A maintenance window covering now suppresses a firing disk alert; when it ends the
//!    still-firing alert is emitted once.
//! 5. With a coverage calendar saying it is night, a P3 is held and a P1 is emitted; when
//!    business hours start the held P3 is released exactly once, also across a collector
//!    restart (kill -9) in between.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nightowl_proto::v1::collector_client::CollectorClient;
use nightowl_proto::{
    AgentMessage, CheckResult, CollectorMessage, Hello, ProbeStatus, Report, collector_message,
};
use nightowl_tests::{Collector, Pki, rfc3339, wait_for};
use serde_json::Value;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// One session: sends `messages`, returns the acks (expects `expect_acks` of them).
async fn session(
    url: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    messages: Vec<AgentMessage>,
    expect_acks: usize,
) -> Vec<u64> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost")
        .identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
    let channel =
        Endpoint::from_shared(url.to_owned()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut client = CollectorClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for message in messages {
        sender.send(message).await.unwrap();
    }
    let mut inbound =
        client.session(tokio_stream::wrappers::ReceiverStream::new(receiver)).await.unwrap().into_inner();
    let mut acks = Vec::new();
    while acks.len() < expect_acks {
        match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await {
            Err(_) => panic!("no answer from the collector within 30s"),
            Ok(Err(status)) => panic!("session failed: {status:?}"),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::Ack(ack)) }))) => {
                acks.push(ack.seq)
            }
            // Sent after the hello ack: the collector's limits, the central policy (empty here).
            Ok(Ok(Some(CollectorMessage {
                msg: Some(collector_message::Msg::Limits(_) | collector_message::Msg::Policy(_)),
            }))) => {}
            Ok(Ok(Some(other))) => panic!("unexpected message {other:?}"),
        }
    }
    drop(sender);
    acks
}

fn hello() -> AgentMessage {
    AgentMessage::hello(Hello {
        hostname: "test-host".into(),
        os: "test".into(),
        agent_version: "0.0.0".into(),
        boot_id: "boot".into(),
        stream_id: "stream-1".into(),
        tenant: "acme".into(),
        agent: "srv-01".into(),
        labels: Default::default(),
    })
}

fn disk_report(seq: u64, check: &str, used_pct: f64) -> AgentMessage {
    AgentMessage::report(Report {
        seq,
        retired_checks: Vec::new(),
        sampled_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64,
        results: vec![CheckResult {
            check_id: check.into(),
            kind: "disk".into(),
            status: ProbeStatus::Ok as i32,
            metrics: BTreeMap::from([("used_pct".to_owned(), used_pct)]),
            message: String::new(),
            interval_ms: 10_000,
        }],
    })
}

fn of_check<'a>(events: &'a [Value], check: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["check"] == check).collect()
}

fn held(collector: &Collector) -> u64 {
    collector.agent("acme", "srv-01").and_then(|row| row["held"].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_holds_a_firing_alert_and_emits_it_once_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let now = SystemTime::now();
    let end = now + Duration::from_secs(15);
    let window = format!(
        "[[maintenance]]\nname = \"acme patch\"\ntenant = \"acme\"\nstart = \"{}\"\nend = \"{}\"\n",
        rfc3339(now - Duration::from_secs(60)),
        rfc3339(end)
    );
    let mut collector = Collector::with_config(dir.path(), &pki, "", &window);
    tokio::task::block_in_place(|| collector.start());

    let acks = session(
        &collector.url(),
        &pki.ca(),
        &cert,
        &key,
        vec![hello(), disk_report(1, "disk:/data", 99.0)],
        2,
    )
    .await;
    assert_eq!(acks, [0, 1]);
    tokio::task::block_in_place(|| {
        assert_eq!(held(&collector), 1, "the firing event is held: {:?}", collector.agents());
        // Nothing while the window lasts (the releaser runs every 2 s; stop 1 s early).
        while SystemTime::now() + Duration::from_secs(1) < end {
            let events = collector.events();
            assert!(of_check(&events, "disk:/data").is_empty(), "emitted inside the window: {events:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_for("the still-firing alert after the window", Duration::from_secs(30), || {
            let events = collector.events();
            (!of_check(&events, "disk:/data").is_empty()).then_some(events)
        });
        // Give a second release pass the chance to emit it again: it must not.
        std::thread::sleep(Duration::from_secs(5));
        let events = collector.events();
        let disk = of_check(&events, "disk:/data");
        assert_eq!(disk.len(), 1, "exactly one event after the window: {events:?}");
        assert_eq!(disk[0]["status"], "firing");
        assert_eq!(disk[0]["severity"], "P2");
        // As instants, not strings: "…:05.3Z" sorts before "…:05Z" as text.
        let emitted: jiff::Timestamp = disk[0]["emitted_at"].as_str().unwrap().parse().unwrap();
        let window_end: jiff::Timestamp = rfc3339(end).parse().unwrap();
        assert!(emitted >= window_end, "emitted when the window ended ({window_end}): {:?}", disk[0]);
        assert_eq!(held(&collector), 0);
        assert!(collector.log_text().contains("alert event held"), "{}", collector.log_text());
        assert_eq!(collector.terminate(), Some(0));
    });
}

const RULES: &str = r#"
[[rule]]
name = "disk_used_pct"
kind = "disk"
metric = "used_pct"
check = "disk:/data"
warn = 90
crit = 95
clear = 85
severity = { warn = "P3", crit = "P2" }

[[rule]]
name = "test_p1"
kind = "disk"
metric = "used_pct"
check = "disk:/p1"
crit = 90
clear = 85
severity = { crit = "P1" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_hours_a_p3_waits_for_business_hours_and_is_released_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    // Business hours start at the next full minute + 1 (60–120 s from now), until 23:59
    // UTC, every day: it is night now. (Computed after the binaries are built.)
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let start_secs = (now / 60 + 2) * 60;
    let minute_of_day = start_secs % 86_400 / 60;
    if now / 86_400 != start_secs / 86_400 || minute_of_day > 23 * 60 + 57 {
        eprintln!(
            "SKIP: business hours starting at {} would cross midnight UTC; run again in a few minutes",
            rfc3339(UNIX_EPOCH + Duration::from_secs(start_secs))
        );
        return;
    }
    let opens = UNIX_EPOCH + Duration::from_secs(start_secs);
    let hours = format!("{:02}:{:02}-23:59", minute_of_day / 60, minute_of_day % 60);
    std::fs::write(dir.path().join("rules.toml"), RULES).unwrap();
    let coverage =
        format!("[coverage.default]\ntimezone = \"UTC\"\nhours = {{ \"mon-sun\" = \"{hours}\" }}\n");
    let mut collector = Collector::with_config(
        dir.path(),
        &pki,
        &format!("rules = \"{}\"", dir.path().join("rules.toml").display()),
        &coverage,
    );
    tokio::task::block_in_place(|| collector.start());

    let acks = session(
        &collector.url(),
        &pki.ca(),
        &cert,
        &key,
        vec![hello(), disk_report(1, "disk:/data", 91.0), disk_report(2, "disk:/p1", 99.0)],
        3,
    )
    .await;
    assert_eq!(acks, [0, 1, 2]);
    assert!(
        SystemTime::now() + Duration::from_secs(30) < opens,
        "too slow: the reports came close to business hours"
    );
    tokio::task::block_in_place(|| {
        // The P1 is in the queue at once; the P3 is held.
        let events = wait_for("the P1", Duration::from_secs(30), || {
            let events = collector.events();
            (!of_check(&events, "disk:/p1").is_empty()).then_some(events)
        });
        let p1 = of_check(&events, "disk:/p1");
        assert_eq!((p1.len(), p1[0]["severity"].as_str()), (1, Some("P1")), "{events:?}");
        assert!(of_check(&events, "disk:/data").is_empty(), "the P3 went out at night: {events:?}");
        assert_eq!(held(&collector), 1);

        // kill -9 and start again, before business hours.
        collector.kill9();
        assert!(
            SystemTime::now() + Duration::from_secs(15) < opens,
            "too slow: business hours start before the restart"
        );
        collector.start();
        std::thread::sleep(Duration::from_secs(3));
        let events = collector.events();
        assert!(
            of_check(&events, "disk:/data").is_empty(),
            "the P3 went out before business hours: {events:?}"
        );
        assert_eq!(held(&collector), 1, "the hold survived kill -9");

        wait_for("the P3 in business hours", Duration::from_secs(180), || {
            let events = collector.events();
            (!of_check(&events, "disk:/data").is_empty()).then_some(events)
        });
        assert!(SystemTime::now() >= opens, "released before business hours");
        std::thread::sleep(Duration::from_secs(5));
        let events = collector.events();
        let p3 = of_check(&events, "disk:/data");
        assert_eq!(p3.len(), 1, "the P3 exactly once: {events:?}");
        assert_eq!((p3[0]["status"].as_str(), p3[0]["severity"].as_str()), (Some("firing"), Some("P3")));
        assert_eq!(of_check(&events, "disk:/p1").len(), 1, "the P1 once: {events:?}");
        assert_eq!(held(&collector), 0);
        assert_eq!(collector.terminate(), Some(0));
    });
}
