//! The runner's contract, with a real store and a scripted sink: order per fingerprint,
//! retries, dead letters, filters, a durable cursor across restarts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::testing::{event, eventually, queue_events};
use super::*;
use crate::alert::{Severity, Status};
use crate::queue::{Reader, StartAt, Store};

/// Records what it was given; answers from a script (then Ok).
#[derive(Default)]
struct ScriptedSink {
    script: Mutex<VecDeque<Result<(), DeliveryError>>>,
    delivered: Mutex<Vec<(i64, String, Status, u32)>>,
    attempts: Mutex<u32>,
}

impl Sink for ScriptedSink {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            *self.attempts.lock().unwrap() += 1;
            let answer = self.script.lock().unwrap().pop_front().unwrap_or(Ok(()));
            if answer.is_ok() {
                self.delivered.lock().unwrap().push((
                    delivery.pos,
                    delivery.event.id.clone(),
                    delivery.event.status,
                    delivery.attempt,
                ));
            }
            answer
        })
    }
}

fn settings(name: &str, filter: Filter, start: StartAt) -> SinkSettings {
    SinkSettings { name: name.into(), filter, concurrency: 3, give_up_after: Duration::from_secs(60), start }
}

struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
    stats: Arc<SinkStats>,
}

fn start(store: &Store, dir: &std::path::Path, settings: SinkSettings, sink: Arc<ScriptedSink>) -> Running {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let stats = Arc::new(SinkStats::new(&settings.name, "scripted"));
    let spec = SinkSpec::new(settings, |_| Err("built by the test".into()));
    tasks.spawn(run_sink(store.clone(), dir.to_owned(), spec, sink, stats.clone(), stop.clone()));
    Running { stop, tasks, stats }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn retry_soon(reason: &str) -> Result<(), DeliveryError> {
    Err(DeliveryError::Retryable { reason: reason.into(), retry_after: Some(Duration::from_millis(10)) })
}

#[tokio::test]
async fn delivers_in_order_per_fingerprint_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let sink = Arc::new(ScriptedSink::default());
    // The first attempt of the first event fails: its resolve must still come after it.
    sink.script.lock().unwrap().push_back(retry_soon("503 service unavailable"));
    let running =
        start(&store, dir.path(), settings("psa", Filter::default(), StartAt::Latest), sink.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut events = Vec::new();
    for check in ["disk:/", "disk:/var", "disk:/srv"] {
        events.push(event("acme", "srv-01", check, Status::Firing, Severity::P2));
        events.push(event("acme", "srv-01", check, Status::Resolved, Severity::P2));
    }
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    queue_events(&store, events).await;
    eventually("six deliveries", 10, || (sink.delivered.lock().unwrap().len() == 6).then_some(())).await;

    let delivered = sink.delivered.lock().unwrap().clone();
    for pair in ids.chunks(2) {
        let firing = delivered.iter().position(|(_, id, _, _)| *id == pair[0]).unwrap();
        let resolved = delivered.iter().position(|(_, id, _, _)| *id == pair[1]).unwrap();
        assert!(firing < resolved, "resolved overtook its firing: {delivered:?}");
    }
    assert_eq!(
        delivered.iter().find(|(_, id, _, _)| *id == ids[0]).unwrap().3,
        2,
        "second attempt delivered it"
    );
    assert_eq!(running.stats.report().delivered, 6);
    assert_eq!(running.stats.report().retried, 1);
    assert_eq!(running.stats.health().state, HealthState::Healthy);
    eventually("cursor at the head", 5, || {
        let consumers = Reader::open(dir.path()).unwrap().consumers().unwrap();
        (consumers[0].lag == 0 && consumers[0].delivered == 6).then_some(())
    })
    .await;
    running.stop().await;

    // Restart: nothing is delivered twice; new events are.
    let again = Arc::new(ScriptedSink::default());
    let running =
        start(&store, dir.path(), settings("psa", Filter::default(), StartAt::Latest), again.clone());
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Firing, Severity::P2)]).await;
    eventually("the new event", 10, || (again.delivered.lock().unwrap().len() == 1).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(again.delivered.lock().unwrap().len(), 1, "old events came again: {:?}", again.delivered);
    running.stop().await;
}

#[tokio::test]
async fn permanent_failures_are_dead_lettered_and_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let sink = Arc::new(ScriptedSink::default());
    sink.script.lock().unwrap().push_back(Err(DeliveryError::permanent("HTTP 400: unknown routing key")));
    let running = start(&store, dir.path(), settings("pd", Filter::default(), StartAt::Latest), sink.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1);
    let fine = event("acme", "srv-02", "disk:/", Status::Firing, Severity::P1);
    let refused_id = refused.id.clone();
    queue_events(&store, vec![refused]).await;
    queue_events(&store, vec![fine]).await;
    let letters = eventually("a dead letter", 10, || {
        let letters = Reader::open(dir.path()).unwrap().dead_letters(Some("sink:pd")).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, refused_id);
    assert!(letters[0].error.contains("unknown routing key"), "{}", letters[0].error);
    assert_eq!(letters[0].event["id"], refused_id.as_str());
    eventually("the other event", 10, || (sink.delivered.lock().unwrap().len() == 1).then_some(())).await;
    assert_eq!(*sink.attempts.lock().unwrap(), 2, "a permanent failure is not retried");
    let report = running.stats.report();
    assert_eq!((report.delivered, report.dead_lettered, report.retried), (1, 1, 0));
    eventually("cursor past the dead letter", 5, || {
        let consumers = Reader::open(dir.path()).unwrap().consumers().unwrap();
        (consumers[0].lag == 0 && consumers[0].dead_lettered == 1).then_some(())
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn retries_give_up_after_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let sink = Arc::new(ScriptedSink::default());
    for _ in 0..1000 {
        sink.script.lock().unwrap().push_back(retry_soon("connection refused"));
    }
    let mut settings = settings("down", Filter::default(), StartAt::Latest);
    settings.give_up_after = Duration::from_millis(300);
    let running = start(&store, dir.path(), settings, sink.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1)]).await;
    let letters = eventually("given up", 10, || {
        let letters = Reader::open(dir.path()).unwrap().dead_letters(None).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert!(letters[0].error.starts_with("gave up after"), "{}", letters[0].error);
    assert!(letters[0].attempts > 3, "{}", letters[0].attempts);
    assert_eq!(running.stats.health().state, HealthState::Failing);
    assert!(running.stats.report().retried >= 3);
    running.stop().await;
}

#[tokio::test]
async fn filters_skip_events_and_earliest_sees_history() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    // Queued before the sink exists.
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1)]).await;
    queue_events(&store, vec![event("globex", "ws-07", "disk:/", Status::Firing, Severity::P1)]).await;
    queue_events(&store, vec![event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P4)]).await;
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Resolved, Severity::P1)]).await;
    let filter = Filter {
        tenants: ["acme".to_owned()].into(),
        severities: [Severity::P1, Severity::P2].into(),
        statuses: vec![Status::Firing],
    };
    let sink = Arc::new(ScriptedSink::default());
    let running = start(&store, dir.path(), settings("acme-pages", filter, StartAt::Earliest), sink.clone());
    eventually("the matching event", 10, || (!sink.delivered.lock().unwrap().is_empty()).then_some(())).await;
    eventually("cursor at the head", 5, || {
        let consumers = Reader::open(dir.path()).unwrap().consumers().unwrap();
        (consumers[0].lag == 0).then_some(())
    })
    .await;
    let delivered = sink.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].2, Status::Firing);
    running.stop().await;

    // A sink that starts at "latest" sees none of that history.
    let late = Arc::new(ScriptedSink::default());
    let running =
        start(&store, dir.path(), settings("late", Filter::default(), StartAt::Latest), late.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(late.delivered.lock().unwrap().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn a_sink_behind_retention_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    store.register_consumer("sink:slow", StartAt::Earliest).await.unwrap();
    for index in 0..5 {
        queue_events(
            &store,
            vec![event("acme", "srv-01", &format!("disk:/d{index}"), Status::Firing, Severity::P3)],
        )
        .await;
    }
    let retention = crate::queue::Retention { max_age: Duration::from_secs(3600), max_events: 2 };
    let pruned = store.prune(retention, jiff::Timestamp::now()).await.unwrap();
    assert_eq!((pruned.events, pruned.pruned_through), (3, 3));
    let sink = Arc::new(ScriptedSink::default());
    let running =
        start(&store, dir.path(), settings("slow", Filter::default(), StartAt::Earliest), sink.clone());
    eventually("the kept events", 10, || (sink.delivered.lock().unwrap().len() == 2).then_some(())).await;
    assert_eq!(running.stats.report().lost_to_retention, 3);
    running.stop().await;
}

#[test]
fn sink_config_is_validated() {
    let parse = |text: &str| -> Result<Vec<SinkSpec>, (String, String)> {
        #[derive(serde::Deserialize)]
        struct Root {
            sink: Vec<RawSink>,
        }
        let document = crate::config::Document::parse(text, "collector.toml")
            .map_err(|error| (error.key, error.message))?;
        let root: Root = document.deserialize().map_err(|error| (error.key, error.message))?;
        validate_all(root.sink, std::path::Path::new("/etc/nightowl"))
            .map_err(|error| (error.key, error.message))
    };
    let (key, message) =
        parse("[[sink]]\nname = \"Bad Name\"\n[sink.pagerduty]\nrouting_key = \"k\"\n").unwrap_err();
    assert_eq!(key, "sink[0].name", "{message}");
    let (key, _) = parse("[[sink]]\nname = \"a\"\nconcurrency = 0\n[sink.pagerduty]\nrouting_key = \"k\"\n")
        .unwrap_err();
    assert_eq!(key, "sink[0].concurrency");
    let (key, _) =
        parse("[[sink]]\nname = \"a\"\nstart = \"yesterday\"\n[sink.pagerduty]\nrouting_key = \"k\"\n")
            .unwrap_err();
    assert_eq!(key, "sink[0].start");
    let (key, message) = parse("[[sink]]\nname = \"a\"\n").unwrap_err();
    assert_eq!(key, "sink[0]", "{message}");
    assert!(message.contains("exactly one kind"), "{message}");
    assert!(message.contains("webhook, pagerduty, alertmanager"), "{message}");
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "s3cret").unwrap();
    let two = format!(
        "[[sink]]\nname = \"a\"\n[sink.pagerduty]\nrouting_key = \"k\"\n[sink.webhook]\nurl = \"http://127.0.0.1/\"\nsecret_file = {:?}\n",
        secret.path()
    );
    let (key, message) = parse(&two).unwrap_err();
    assert_eq!(key, "sink[0]", "{message}");
    assert!(message.contains("[sink.pagerduty] and [sink.webhook] are both given"), "{message}");
    let (key, message) = parse("[[sink]]\nname = \"a\"\nbogus = 1\n[sink.webhook]\n").unwrap_err();
    assert_eq!(key, "sink[0]", "{message}");
    assert!(message.contains("unknown key `bogus`"), "{message}");
    let (key, _) =
        parse("[[sink]]\nname = \"a\"\n[sink.webhook]\nsecret_file = \"/nonexistent\"\n").unwrap_err();
    assert_eq!(key, "sink[0].webhook.url");
    let (key, _) = parse("[[sink]]\nname = \"a\"\n[sink.pagerduty]\n").unwrap_err();
    assert_eq!(key, "sink[0].pagerduty.routing_key_file");
    let (_, message) =
        parse("[[sink]]\nname = \"a\"\nseverities = [\"P9\"]\n[sink.pagerduty]\nrouting_key = \"k\"\n")
            .unwrap_err();
    assert!(message.contains("P9"), "{message}");
}
