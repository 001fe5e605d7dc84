//! The Alertmanager sink against a local receiver (payload, re-sending, seeding after a
//! restart) and against a real `prometheus-alertmanager`.

use std::time::Duration;

use super::*;
use crate::alert::Severity;
use crate::queue::{StartAt, Store};
use crate::sinks::BuildContext;
use crate::sinks::http::receiver::{Received, Receiver};
use crate::sinks::testing::{self, event, eventually, queue_events};

fn config(url: &str, resend_interval: &str) -> AlertmanagerConfig {
    AlertmanagerConfig {
        url: Some(url.to_owned()),
        resend_interval: Some(resend_interval.to_owned()),
        generator_url: Some("https://noc.example.net/alerts".into()),
        timeout: Some("5s".into()),
        ca: None,
    }
}

/// The alerts of one request.
fn alerts(request: &Received) -> Vec<Value> {
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/api/v2/alerts"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    request.json().as_array().expect("a JSON array").clone()
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value.as_str().expect("a string").parse().expect("RFC 3339")
}

#[test]
fn label_names_are_made_valid() {
    assert_eq!(label_name("role"), "role");
    assert_eq!(label_name("site-code"), "site_code");
    assert_eq!(label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
    assert_eq!(label_name("9lives"), "_9lives");
    assert_eq!(label_name(""), "_");
    assert_eq!(label_name("größe"), "gr__e");
    assert_eq!(label_name("_ok_2"), "_ok_2");
}

#[tokio::test]
async fn firing_and_resolved_alerts_carry_our_labels_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    let spec =
        spec(testing::settings("am", 2), config(&format!("{}/", receiver.url()), "60s"), dir.path()).unwrap();
    let running = testing::run(&store, dir.path(), spec);

    let mut firing = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P2);
    firing.summary = "Disk /var 96.5% used (critical at 95%)".into();
    firing.labels = BTreeMap::from([
        ("role".into(), "server".into()),
        ("site-code".into(), "ber-1".into()),
        ("9lives".into(), "x".into()),
        ("tenant".into(), "not-the-tenant".into()),
        ("empty".into(), String::new()),
    ]);
    let mut resolved = firing.clone();
    resolved.id = crate::alert::new_event_id();
    resolved.status = Status::Resolved;
    resolved.resolved_at = Some(firing.started_at + jiff::SignedDuration::from_secs(90));
    let before = jiff::Timestamp::now();
    queue_events(&store, vec![firing.clone()]).await;
    let received = receiver.wait_for(1, 10).await;
    let after = jiff::Timestamp::now();
    queue_events(&store, vec![resolved.clone()]).await;

    let expected_labels = json!({
        "alertname": "test_rule",
        "tenant": "acme",
        "agent": "srv-01",
        "check": "disk:/var",
        "kind": "disk",
        "severity": "P2",
        "fingerprint": firing.fingerprint,
        "role": "server",
        "site_code": "ber-1",
        "_9lives": "x",
    });
    let sent = alerts(&received[0]);
    assert_eq!(sent.len(), 1);
    let alert = &sent[0];
    assert_eq!(alert["labels"], expected_labels);
    assert_eq!(
        alert["annotations"],
        json!({
            "summary": "Disk /var 96.5% used (critical at 95%)",
            "runbook_url": "https://runbooks.example.net/disk",
            "value": "96.5",
            "threshold": "95",
            "event_id": firing.id,
        })
    );
    assert_eq!(timestamp(&alert["startsAt"]), firing.started_at);
    // Firing: endsAt is 4 × resend_interval ahead of the send.
    let ends_at = timestamp(&alert["endsAt"]);
    let ahead = jiff::SignedDuration::from_secs(240);
    assert!(ends_at >= before + ahead && ends_at <= after + ahead, "endsAt {ends_at} not ~ now + 240 s");
    assert_eq!(alert["generatorURL"], "https://noc.example.net/alerts");

    // Resolved: same labels, endsAt = resolved_at. (A re-send of the firing alert may
    // come in between: it has the same content with a fresh endsAt.)
    let resolution = eventually("the resolution", 10, || {
        receiver
            .received()
            .iter()
            .map(alerts)
            .find(|sent| sent[0]["annotations"]["event_id"] == resolved.id.as_str())
    })
    .await;
    assert_eq!(resolution.len(), 1);
    assert_eq!(resolution[0]["labels"], expected_labels);
    assert_eq!(timestamp(&resolution[0]["startsAt"]), firing.started_at);
    assert_eq!(timestamp(&resolution[0]["endsAt"]), resolved.resolved_at.unwrap());
    assert_eq!(resolution[0]["annotations"]["event_id"], resolved.id.as_str());
    running.stop().await;
}

#[tokio::test]
async fn firing_alerts_are_re_sent_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    let spec = spec(testing::settings("am", 2), config(&receiver.url(), "300ms"), dir.path()).unwrap();
    let running = testing::run(&store, dir.path(), spec);
    let firing = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1);
    let fingerprint = firing.fingerprint.clone();
    queue_events(&store, vec![firing.clone()]).await;

    // Delivered, then re-sent every 300 ms with a fresh endsAt (now + 1.2 s).
    let received = receiver.wait_for(4, 10).await;
    for request in &received {
        let sent = alerts(request);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["labels"]["fingerprint"], fingerprint.as_str());
        let ends_in = timestamp(&sent[0]["endsAt"]).duration_since(jiff::Timestamp::now());
        assert!(ends_in > jiff::SignedDuration::from_millis(-200), "{ends_in:?}");
    }
    let first_end = timestamp(&alerts(&received[0])[0]["endsAt"]);
    let last_end = timestamp(&alerts(&received[3])[0]["endsAt"]);
    assert!(last_end > first_end, "re-sends move endsAt forward");

    let mut resolved = firing.clone();
    resolved.id = crate::alert::new_event_id();
    resolved.status = Status::Resolved;
    resolved.resolved_at = Some(jiff::Timestamp::now());
    queue_events(&store, vec![resolved.clone()]).await;
    let resolution_at = eventually("the resolution", 10, || {
        receiver
            .received()
            .into_iter()
            .position(|request| alerts(&request)[0]["annotations"]["event_id"] == resolved.id.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let received = receiver.received();
    assert_eq!(
        received.len(),
        resolution_at + 1,
        "re-sent after its resolution: {:#?}",
        &received[resolution_at..]
    );
    running.stop().await;
}

#[tokio::test]
async fn a_label_change_resolves_the_old_label_set() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let spec = spec(testing::settings("am", 1), config(&receiver.url(), "60s"), dir.path()).unwrap();
    let sink = spec.build(&BuildContext { data_dir: dir.path().to_owned() }).unwrap();
    let delivery = |event: AlertEvent| Delivery { pos: 1, body: String::new(), event, attempt: 1 };
    let warning = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P3);
    let mut critical = warning.clone();
    critical.id = crate::alert::new_event_id();
    critical.severity = Severity::P1;
    sink.deliver(&delivery(warning.clone())).await.unwrap();
    let sent_at = jiff::Timestamp::now();
    sink.deliver(&delivery(critical.clone())).await.unwrap();
    let received = receiver.wait_for(2, 5).await;
    let escalation = alerts(&received[1]);
    assert_eq!(escalation.len(), 2);
    assert_eq!(escalation[0]["labels"]["severity"], "P1");
    assert!(
        timestamp(&escalation[0]["endsAt"]) > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(200)
    );
    assert_eq!(escalation[1]["labels"]["severity"], "P3");
    assert!(timestamp(&escalation[1]["endsAt"]) >= sent_at, "the P3 alert ends now");
    assert!(timestamp(&escalation[1]["endsAt"]) <= jiff::Timestamp::now());
}

#[tokio::test]
async fn after_a_restart_still_firing_alerts_are_seeded_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    // History from before the restart.
    let open = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P2);
    let closed = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P2);
    let mut closed_resolved = closed.clone();
    closed_resolved.id = crate::alert::new_event_id();
    closed_resolved.status = Status::Resolved;
    closed_resolved.resolved_at = Some(jiff::Timestamp::now());
    let other_tenant = event("globex", "ws-07", "disk:/", Status::Firing, Severity::P1);
    queue_events(&store, vec![open.clone(), closed, closed_resolved]).await;
    queue_events(&store, vec![other_tenant]).await;

    // A sink that delivers nothing old (its cursor is at the head) and only takes acme.
    let receiver = Receiver::start().await;
    let mut settings = testing::settings("am", 2);
    settings.start = StartAt::Latest;
    settings.filter.tenants = ["acme".to_owned()].into();
    let spec = spec(settings, config(&receiver.url(), "60s"), dir.path()).unwrap();
    let running = testing::run(&store, dir.path(), spec);
    let received = receiver.wait_for(1, 10).await;
    let sent = alerts(&received[0]);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["labels"]["fingerprint"], open.fingerprint.as_str());
    assert_eq!(sent[0]["annotations"]["event_id"], open.id.as_str());
    assert!(timestamp(&sent[0]["endsAt"]) > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(running.stats.report().delivered, 0);
    running.stop().await;
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_of = |raw: AlertmanagerConfig| {
        spec(testing::settings("am", 1), raw, dir.path()).map(|_| ()).unwrap_err().key
    };
    let good = || config("http://127.0.0.1:9093", "60s");
    assert!(spec(testing::settings("am", 1), good(), dir.path()).is_ok());
    assert!(
        spec(testing::settings("am", 1), AlertmanagerConfig { resend_interval: None, ..good() }, dir.path())
            .is_ok()
    );
    assert_eq!(key_of(AlertmanagerConfig { url: None, ..good() }), "url");
    assert_eq!(key_of(AlertmanagerConfig { url: Some("127.0.0.1:9093".into()), ..good() }), "url");
    assert_eq!(
        key_of(AlertmanagerConfig { resend_interval: Some("0s".into()), ..good() }),
        "resend_interval"
    );
    assert_eq!(
        key_of(AlertmanagerConfig { resend_interval: Some("60ms".into()), ..good() }),
        "resend_interval"
    );
    // An absurd interval is accepted, and endsAt saturates instead of overflowing.
    let forever = AlertmanagerConfig { resend_interval: Some("100000000years".into()), ..good() };
    assert!(spec(testing::settings("am", 1), forever, dir.path()).is_ok());
    let now = jiff::Timestamp::now();
    assert_eq!(firing_ends_at(now, Duration::from_secs(60)), now + jiff::SignedDuration::from_secs(240));
    assert_eq!(firing_ends_at(now, Duration::MAX), jiff::Timestamp::MAX);
    assert_eq!(firing_ends_at(now, Duration::from_secs(u64::MAX / 8)), jiff::Timestamp::MAX);
    assert_eq!(
        key_of(AlertmanagerConfig { resend_interval: Some("often".into()), ..good() }),
        "resend_interval"
    );
    assert_eq!(key_of(AlertmanagerConfig { generator_url: Some("noc".into()), ..good() }), "generator_url");
}

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A real Alertmanager on a free loopback port, killed when dropped.
struct RealAlertmanager {
    _child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RealAlertmanager {
    async fn start() -> Option<RealAlertmanager> {
        let binary = std::path::Path::new(ALERTMANAGER);
        if !binary.exists() {
            println!("SKIP: prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n").unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg("--cluster.listen-address=")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("alertmanager.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus-alertmanager");
        let url = format!("http://127.0.0.1:{port}");
        let client =
            HttpClient::new("test", &HttpUrl::parse(&url).unwrap(), &ClientSettings::default()).unwrap();
        let ready = HttpUrl::parse(&format!("{url}/-/ready")).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if client.get(&ready).await.is_ok_and(|response| response.status == 200) {
                break;
            }
            let log = std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default();
            assert!(tokio::time::Instant::now() < deadline, "alertmanager did not become ready:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(RealAlertmanager { _child: child, url, _dir: dir })
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds (resolved ones are left out).
    async fn alerts(&self) -> Vec<Value> {
        let client =
            HttpClient::new("test", &HttpUrl::parse(&self.url).unwrap(), &ClientSettings::default()).unwrap();
        let response =
            client.get(&HttpUrl::parse(&format!("{}/api/v2/alerts", self.url)).unwrap()).await.unwrap();
        assert_eq!(response.status, 200);
        serde_json::from_slice::<Value>(&response.body).unwrap().as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn a_real_alertmanager_takes_our_alerts_and_their_resolution() {
    let Some(alertmanager) = RealAlertmanager::start().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let spec = spec(testing::settings("am", 2), config(&alertmanager.url, "60s"), dir.path()).unwrap();
    let running = testing::run(&store, dir.path(), spec);

    let mut firing = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P1);
    firing.labels.insert("site-code".into(), "ber-1".into());
    queue_events(&store, vec![firing.clone()]).await;
    let listed = eventually_async("alertmanager lists the alert", || async {
        alertmanager
            .alerts()
            .await
            .into_iter()
            .find(|alert| alert["labels"]["fingerprint"] == firing.fingerprint.as_str())
    })
    .await;
    let labels = &listed["labels"];
    for (name, value) in [
        ("alertname", "test_rule"),
        ("tenant", "acme"),
        ("agent", "srv-01"),
        ("check", "disk:/var"),
        ("kind", "disk"),
        ("severity", "P1"),
        ("role", "server"),
        ("site_code", "ber-1"),
    ] {
        assert_eq!(labels[name], value, "label {name}: {listed:#}");
    }
    assert_eq!(listed["annotations"]["event_id"], firing.id.as_str());
    assert_eq!(listed["annotations"]["runbook_url"], "https://runbooks.example.net/disk");
    assert_eq!(listed["generatorURL"], "https://noc.example.net/alerts");
    assert_ne!(listed["status"]["state"], "suppressed");
    assert!(timestamp(&listed["endsAt"]) > jiff::Timestamp::now() + jiff::SignedDuration::from_secs(200));

    let mut resolved = firing.clone();
    resolved.id = crate::alert::new_event_id();
    resolved.status = Status::Resolved;
    resolved.resolved_at = Some(jiff::Timestamp::now());
    queue_events(&store, vec![resolved]).await;
    eventually_async("alertmanager sees it resolved", || async {
        let alerts = alertmanager.alerts().await;
        let still = alerts.iter().find(|alert| alert["labels"]["fingerprint"] == firing.fingerprint.as_str());
        match still {
            None => Some(()),
            Some(alert) => (timestamp(&alert["endsAt"]) <= jiff::Timestamp::now()).then_some(()),
        }
    })
    .await;
    testing::eventually("both delivered", 5, || (running.stats.report().delivered == 2).then_some(())).await;
    running.stop().await;
}

/// Polls an async probe every 100 ms until it returns Some; panics after 15 s.
async fn eventually_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
