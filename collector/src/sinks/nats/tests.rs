//! The NATS sink against a real `nats-server -js` on a loopback port, through the real
//! runner and store: subjects and `Nats-Msg-Id`, then a server outage (killed, events
//! queued meanwhile, restarted on the same store) with every event in the stream
//! exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::{Severity, Status};
use crate::queue::{Reader, Store};
use crate::sinks::testing::{event, eventually, queue_events};
use crate::sinks::{
    BoxFuture, Delivery, DeliveryError, HealthState, RawSink, Sink, SinkSpec, SinkStats, run_sink,
    validate_all,
};

fn nats_server_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/sbin/nats-server")]).find(|path| path.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `nats-server -js` on 127.0.0.1:`port` storing under `store`; killed on drop.
struct NatsServer {
    child: tokio::process::Child,
}

impl NatsServer {
    async fn start(binary: &Path, port: u16, store: &Path) -> Self {
        let child = tokio::process::Command::new(binary)
            .args(["-js", "-sd"])
            .arg(store)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "nats-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self { child }
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("kill nats-server");
    }
}

/// (subject, Nats-Msg-Id, the body's event id) of every message in the stream, read
/// with a JetStream pull consumer.
async fn stream_messages(url: &str) -> Vec<(String, String, String)> {
    let client = async_nats::connect(url).await.expect("test client connects");
    let context = jetstream::new(client);
    // Not there yet: the sink creates it with its first delivery.
    let Ok(stream) = context.get_stream("NIGHTOWL_ALERTS").await else { return Vec::new() };
    let total = stream.cached_info().state.messages;
    if total == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer
        .fetch()
        .max_messages(total as usize)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut seen = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.expect("message");
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get("Nats-Msg-Id"))
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&message.payload).expect("body is JSON");
        seen.push((message.subject.to_string(), msg_id, body["id"].as_str().unwrap_or_default().to_owned()));
        message.double_ack().await.expect("ack");
    }
    seen
}

/// Counts what it is given: the other sink that must not notice a NATS outage.
#[derive(Default)]
struct CountingSink {
    delivered: Mutex<Vec<String>>,
}

impl Sink for CountingSink {
    fn kind(&self) -> &'static str {
        "counting"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            self.delivered.lock().unwrap().push(delivery.event.id.clone());
            Ok(())
        })
    }
}

fn parse_sinks(text: &str) -> Result<Vec<SinkSpec>, (String, String)> {
    #[derive(serde::Deserialize)]
    struct Root {
        sink: Vec<RawSink>,
    }
    let root: Root = toml::from_str(text).map_err(|error| ("toml".to_owned(), error.to_string()))?;
    validate_all(root.sink, Path::new("/etc/nightowl")).map_err(|error| (error.key, error.message))
}

#[tokio::test]
async fn publishes_to_jetstream_and_survives_a_server_outage() {
    let Some(binary) = nats_server_binary() else {
        println!("SKIP: nats-server not installed (apt-get install nats-server)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nats_store = dir.path().join("nats");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let server = NatsServer::start(&binary, port, &nats_store).await;

    let (store, _writer) = Store::open(&data_dir).unwrap();
    let specs = parse_sinks(&format!(
        "[[sink]]\nname = \"bus\"\nstart = \"earliest\"\n[sink.nats]\nurl = \"{url}\"\ntimeout = \"1s\"\n"
    ))
    .expect("valid config");
    let spec = specs.into_iter().next().unwrap();
    let sink = spec
        .build(&crate::sinks::BuildContext { data_dir: std::env::temp_dir() })
        .expect("builds without connecting");
    let stats = Arc::new(SinkStats::new("bus", sink.kind()));
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(run_sink(store.clone(), data_dir.clone(), spec, sink, stats.clone(), stop.clone()));
    // A second sink on the same queue: it must not notice the NATS outage.
    let other = Arc::new(CountingSink::default());
    let other_spec = parse_sinks(&format!("[[sink]]\nname = \"other\"\n[sink.nats]\nurl = \"{url}\"\n"))
        .unwrap()
        .remove(0);
    let other_stats = Arc::new(SinkStats::new("other", "counting"));
    tasks.spawn(run_sink(
        store.clone(),
        data_dir.clone(),
        other_spec,
        other.clone(),
        other_stats,
        stop.clone(),
    ));

    // Up: every event lands with its subject and Nats-Msg-Id.
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    queue(
        &store,
        &mut expected,
        vec![
            event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P2),
            event("acme", "srv-01", "disk:/var", Status::Resolved, Severity::P2),
        ],
    )
    .await;
    queue(
        &store,
        &mut expected,
        vec![event("globex.eu", "ws-07", "service:nginx", Status::Firing, Severity::P1)],
    )
    .await;
    let messages =
        eventually_async("3 messages in the stream", 20, || stream_messages(&url), |m| m.len() == 3).await;
    for (subject, msg_id, body_id) in &messages {
        assert_eq!(msg_id, body_id, "Nats-Msg-Id is the event id");
        assert_eq!(Some(subject), expected.get(msg_id), "subject of {msg_id}");
    }
    assert!(messages.iter().any(|(subject, _, _)| subject == "nightowl.alerts.globex_eu.P1"), "{messages:?}");
    eventually("healthy", 5, || (stats.health().state == HealthState::Healthy).then_some(())).await;

    // Down: queued events wait in the embedded queue; the sink retries; others go on.
    server.kill().await;
    let before_outage = other.delivered.lock().unwrap().len();
    let started = tokio::time::Instant::now();
    queue(&store, &mut expected, vec![event("acme", "srv-02", "disk:/", Status::Firing, Severity::P1)]).await;
    queue(&store, &mut expected, vec![event("acme", "srv-03", "disk:/", Status::Firing, Severity::P3)]).await;
    queue(
        &store,
        &mut expected,
        vec![event("globex.eu", "ws-07", "service:nginx", Status::Resolved, Severity::P1)],
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2), "ingest waited for NATS: {:?}", started.elapsed());
    eventually("the other sink gets the outage's events", 10, || {
        (other.delivered.lock().unwrap().len() == before_outage + 3).then_some(())
    })
    .await;
    eventually("the nats sink is retrying", 20, || {
        matches!(stats.health().state, HealthState::Retrying | HealthState::Failing).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let health = stats.health();
    assert_ne!(health.state, HealthState::Healthy, "{health:?}");
    assert!(health.last_error.as_deref().unwrap_or_default().contains("nats"), "{health:?}");
    let consumers = Reader::open(&data_dir).unwrap().consumers().unwrap();
    let bus = consumers.iter().find(|consumer| consumer.name == "sink:bus").unwrap();
    assert_eq!(bus.lag, 3, "the cursor did not move past undelivered events: {consumers:?}");
    assert!(stats.report().retried >= 2, "{:?}", stats.report());

    // Back on the same port and store: every event exactly once.
    let server = NatsServer::start(&binary, port, &nats_store).await;
    let messages =
        eventually_async("6 messages in the stream", 30, || stream_messages(&url), |m| m.len() >= 6).await;
    eventually("healthy again", 10, || (stats.health().state == HealthState::Healthy).then_some(())).await;
    // Let late retries (if any) land before counting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let messages_after = stream_messages(&url).await;
    assert_eq!(messages_after.len(), messages.len(), "late duplicates: {messages_after:?}");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (subject, msg_id, body_id) in &messages_after {
        assert_eq!(msg_id, body_id);
        assert_eq!(Some(subject), expected.get(msg_id));
        *per_id.entry(msg_id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), expected.len(), "every queued event arrived: {per_id:?}");
    assert!(per_id.values().all(|count| *count == 1), "each exactly once: {per_id:?}");
    assert_eq!(messages_after.len(), 6);
    eventually("cursor at the head", 10, || {
        let consumers = Reader::open(&data_dir).unwrap().consumers().unwrap();
        consumers
            .iter()
            .find(|consumer| consumer.name == "sink:bus")
            .is_some_and(|bus| bus.lag == 0)
            .then_some(())
    })
    .await;

    stop.cancel();
    tasks.close();
    tasks.wait().await;
    server.kill().await;
}

/// Queues `events` and records the subject each must arrive on.
async fn queue(
    store: &Store,
    expected: &mut BTreeMap<String, String>,
    events: Vec<crate::alert::AlertEvent>,
) {
    for event in &events {
        let subject =
            format!("nightowl.alerts.{}.{}", event.tenant.replace('.', "_"), event.severity.as_str());
        expected.insert(event.id.clone(), subject);
    }
    queue_events(store, events).await;
}

/// Polls an async probe until `done` holds for its value; panics after `seconds`.
async fn eventually_async<T, F, Fut>(what: &str, seconds: u64, mut probe: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let value = probe().await;
        if done(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {seconds}s waiting for {what}: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn config_is_validated_naming_the_key() {
    let sink = |body: &str| format!("[[sink]]\nname = \"bus\"\n[sink.nats]\n{body}");
    // Through the collector's config loader: the unknown key is named with its table.
    let error = crate::config::Config::parse(
        &sink("url = \"nats://127.0.0.1:4222\"\nstreem = \"X\"\n"),
        "/etc/nightowl/collector.toml",
        Path::new("/etc/nightowl"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("key `sink[0].nats.streem`") && error.contains("unknown field `streem`"),
        "{error}"
    );
    let (key, message) = parse_sinks(&sink("stream = \"X\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.url", "{message}");
    let (key, message) = parse_sinks(&sink("url = \"http://127.0.0.1:4222\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.url", "{message}");
    let (key, _) = parse_sinks(&sink("url = \"nats://127.0.0.1\"\nstream = \"a.b\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.stream");
    let (key, _) = parse_sinks(&sink("url = \"nats://127.0.0.1\"\nsubject_prefix = \"a.*\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.subject_prefix");
    let (key, _) = parse_sinks(&sink("url = \"nats://127.0.0.1\"\nmax_age = \"1m\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.duplicate_window", "2m window inside a 1m retention");
    let (key, message) =
        parse_sinks(&sink("url = \"nats://127.0.0.1\"\ntoken_file = \"/nonexistent/token\"\n")).unwrap_err();
    assert_eq!(key, "sink[0].nats.token_file", "{message}");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("bad.creds");
    std::fs::write(&creds, "not a creds file\n").unwrap();
    let (key, _) =
        parse_sinks(&sink(&format!("url = \"nats://127.0.0.1\"\ncredentials_file = {:?}\n", creds)))
            .unwrap_err();
    assert_eq!(key, "sink[0].nats.credentials_file");
    let specs = parse_sinks(&sink("url = \"nats://127.0.0.1:4222, tls://127.0.0.2:4222\"\n")).unwrap();
    assert_eq!(specs[0].settings.name, "bus");
}
