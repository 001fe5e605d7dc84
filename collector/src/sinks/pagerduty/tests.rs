//! The PagerDuty sink against a real local receiver answering like the Events API v2.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::alert::Remediation;
use crate::queue::Store;
use crate::sinks::http::receiver::{Receiver, Reply};
use crate::sinks::testing::{self, event, queue_events};

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdef012345";

fn accepted() -> Reply {
    Reply::status(202).body(r#"{"status":"success","message":"Event processed","dedup_key":"x"}"#)
}

fn pagerduty(dir: &Path, url: &str) -> SinkSpec {
    std::fs::write(dir.join("pagerduty.key"), format!("{ROUTING_KEY}\n")).unwrap();
    let raw = PagerDutyConfig {
        routing_key_file: Some("pagerduty.key".into()),
        routing_key: None,
        url: Some(url.to_owned()),
        timeout: None,
        ca: None,
    };
    spec(testing::settings("pd", 1), raw, dir).unwrap()
}

#[tokio::test]
async fn trigger_and_resolve_follow_the_events_api_v2() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    receiver.set_default(accepted());
    let running = testing::run(&store, dir.path(), pagerduty(dir.path(), &receiver.url()));

    let mut firing = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P1);
    firing.summary = "Disk /var 96.5% used (critical at 95%)".into();
    firing.labels = BTreeMap::from([("role".into(), "server".into()), ("site".into(), "ber-1".into())]);
    let mut resolved = firing.clone();
    resolved.id = crate::alert::new_event_id();
    resolved.status = Status::Resolved;
    resolved.resolved_at = Some(jiff::Timestamp::now());
    queue_events(&store, vec![firing.clone(), resolved.clone()]).await;

    let received = receiver.wait_for(2, 10).await;
    for request in &received {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v2/enqueue"));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let trigger = received[0].json();
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["dedup_key"], firing.fingerprint.as_str());
    assert_eq!(trigger["client"], "nightowl");
    let payload = &trigger["payload"];
    assert_eq!(payload["summary"], "Disk /var 96.5% used (critical at 95%)");
    assert_eq!(payload["source"], "srv-01");
    assert_eq!(payload["severity"], "critical");
    let timestamp: jiff::Timestamp = payload["timestamp"].as_str().unwrap().parse().expect("RFC 3339");
    assert_eq!(timestamp, firing.emitted_at);
    assert_eq!(payload["component"], "disk:/var");
    assert_eq!(payload["group"], "acme");
    assert_eq!(payload["class"], "disk");
    let details = &payload["custom_details"];
    assert_eq!(details["rule"], "test_rule");
    assert_eq!(details["value"], 96.5);
    assert_eq!(details["threshold"], 95.0);
    assert_eq!(details["labels"], json!({"role": "server", "site": "ber-1"}));
    assert_eq!(
        details["started_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(),
        firing.started_at
    );
    assert_eq!(details["event_id"], firing.id.as_str());
    assert_eq!(details["runbook"], "https://runbooks.example.net/disk");
    assert!(details.get("remediation").is_none());
    assert_eq!(trigger["links"], json!([{"href": "https://runbooks.example.net/disk", "text": "Runbook"}]));
    let mut keys: Vec<&str> = payload.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["class", "component", "custom_details", "group", "severity", "source", "summary", "timestamp"]
    );

    let resolve = received[1].json();
    assert_eq!(
        resolve,
        json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": firing.fingerprint})
    );
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    testing::eventually("both delivered", 5, || (running.stats.report().delivered == 2).then_some(())).await;
    running.stop().await;
}

#[test]
fn severities_summaries_and_remediation() {
    let expected = [
        (Severity::P1, "critical"),
        (Severity::P2, "error"),
        (Severity::P3, "warning"),
        (Severity::P4, "info"),
    ];
    for (ours, theirs) in expected {
        let body = body(&event("acme", "srv-01", "disk:/", Status::Firing, ours), "k");
        assert_eq!(body["payload"]["severity"], theirs, "{ours:?}");
    }
    let mut long = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P3);
    long.summary = "é".repeat(2000);
    long.runbook = None;
    long.remediation = Some(Remediation {
        action: "restart_service:nginx".into(),
        status: "succeeded".into(),
        at: jiff::Timestamp::UNIX_EPOCH,
        note: "restarted once".into(),
    });
    let body = body(&long, "k");
    let summary = body["payload"]["summary"].as_str().unwrap();
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.ends_with('…'));
    assert!(body.get("links").is_none(), "no runbook, no links");
    assert_eq!(body["payload"]["custom_details"]["runbook"], Value::Null);
    assert_eq!(body["payload"]["custom_details"]["remediation"]["action"], "restart_service:nginx");
    let mut empty = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P3);
    empty.summary = " ".into();
    assert_eq!(super::body(&empty, "k")["payload"]["summary"], "test_rule disk:/ on srv-01");
}

#[tokio::test]
async fn refusals_are_permanent_and_throttling_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::status(400).body(r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#),
        Reply::status(429).header("retry-after", "2"),
        Reply::status(502),
        accepted(),
    ]);
    let spec = pagerduty(dir.path(), &format!("{}/", receiver.url()));
    let sink = spec.build(&crate::sinks::BuildContext { data_dir: dir.path().to_owned() }).unwrap();
    let delivery = Delivery {
        pos: 1,
        body: String::new(),
        event: event("acme", "srv-01", "disk:/", Status::Firing, Severity::P2),
        attempt: 1,
    };
    let refused = sink.deliver(&delivery).await.unwrap_err();
    assert!(
        matches!(&refused, DeliveryError::Permanent { reason } if reason.contains("400") && reason.contains("routing_key")),
        "{refused:?}"
    );
    assert_eq!(
        sink.deliver(&delivery).await.unwrap_err(),
        DeliveryError::Retryable {
            reason: "HTTP 429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert!(matches!(sink.deliver(&delivery).await, Err(DeliveryError::Retryable { .. })));
    sink.deliver(&delivery).await.unwrap();
    // A trailing slash in `url` does not double the path.
    assert!(receiver.received().iter().all(|request| request.path == "/v2/enqueue"));
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let raw =
        || PagerDutyConfig { routing_key_file: None, routing_key: None, url: None, timeout: None, ca: None };
    let key_of =
        |raw: PagerDutyConfig| spec(testing::settings("pd", 1), raw, base).map(|_| ()).unwrap_err().key;
    assert_eq!(key_of(raw()), "routing_key_file");
    assert_eq!(
        key_of(PagerDutyConfig {
            routing_key_file: Some("k".into()),
            routing_key: Some("k".into()),
            ..raw()
        }),
        "routing_key"
    );
    assert_eq!(
        key_of(PagerDutyConfig { routing_key_file: Some("missing.key".into()), ..raw() }),
        "routing_key_file"
    );
    assert_eq!(key_of(PagerDutyConfig { routing_key: Some(" ".into()), ..raw() }), "routing_key");
    let inline = || PagerDutyConfig { routing_key: Some(ROUTING_KEY.into()), ..raw() };
    assert!(spec(testing::settings("pd", 1), inline(), base).is_ok(), "the default url is valid");
    assert_eq!(key_of(PagerDutyConfig { url: Some("events.pagerduty.com".into()), ..inline() }), "url");
    assert_eq!(key_of(PagerDutyConfig { timeout: Some("0s".into()), ..inline() }), "timeout");
}
