//! The webhook sink through the real runner and a real local receiver: retries, dead
//! letters, Retry-After, signatures, config errors.

use std::time::Duration;

use super::*;
use crate::alert::{Severity, Status};
use crate::queue::{Reader, Store};
use crate::sinks::http::receiver::{Received, Receiver, Reply};
use crate::sinks::testing::{self, event, eventually, queue_events};

const SECRET: &str = "s3cret";

/// A webhook spec for `url`, with its secret file in `dir`.
fn webhook(dir: &Path, name: &str, url: &str, concurrency: usize) -> SinkSpec {
    std::fs::write(dir.join("webhook.secret"), format!("{SECRET}\n")).unwrap();
    let raw = WebhookConfig {
        url: Some(format!("{url}/hooks/nightowl")),
        secret_file: Some("webhook.secret".into()),
        headers: BTreeMap::from([("X-Api-Key".to_owned(), "k-123".to_owned())]),
        timeout: Some("5s".into()),
        ca: None,
    };
    spec(testing::settings(name, concurrency), raw, dir).unwrap()
}

/// Checks one request's headers and signature; returns its event id.
fn assert_signed(request: &Received) -> String {
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/hooks/nightowl");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-api-key"), Some("k-123"));
    let timestamp = request.header("x-nightowl-timestamp").expect("timestamp header");
    let sent: i64 = timestamp.parse().unwrap();
    assert!((jiff::Timestamp::now().as_second() - sent).abs() < 60, "timestamp {sent} is not now");
    let signature = request.header("x-nightowl-signature").expect("signature header");
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    // Recompute as a receiver would, and verify in constant time.
    let tag: Vec<u8> =
        (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap()).collect();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    hmac::verify(&key, &signed, &tag).expect("a valid signature");
    let id = request.header("x-nightowl-event-id").expect("event id header").to_owned();
    assert_eq!(request.json()["id"], id.as_str());
    id
}

#[test]
fn signature_matches_an_independent_implementation() {
    // printf '%s' '1790000000.{"id":"x"}' | openssl dgst -sha256 -hmac 's3cret'
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
    assert_eq!(
        signature(&key, 1_790_000_000, br#"{"id":"x"}"#),
        "sha256=4858f6940a5aaf0f4f56b7218ba90921c602d091b07901a1c4ec4fec0d8de7e8"
    );
}

#[tokio::test]
async fn three_503s_are_retried_and_the_event_delivered_once_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(503), Reply::status(503), Reply::status(503).body("maintenance")]);
    let running = testing::run(&store, dir.path(), webhook(dir.path(), "psa", &receiver.url(), 4));
    let queued = event("acme", "srv-01", "disk:/var", Status::Firing, Severity::P2);
    let id = queued.id.clone();
    queue_events(&store, vec![queued]).await;

    // Backoff 1 s, 2 s, 4 s with jitter: at most 7 s.
    let received = receiver.wait_for(4, 20).await;
    eventually("the delivery recorded", 5, || (running.stats.report().delivered == 1).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received_after = receiver.received();
    assert_eq!(received_after.len(), 4, "delivered more than once: {received_after:#?}");
    let answered: Vec<u16> = received.iter().map(|request| request.answered).collect();
    assert_eq!(answered, [503, 503, 503, 200]);
    let stored = Reader::open(dir.path()).unwrap().events_after(0, 10).unwrap();
    for request in &received {
        assert_eq!(assert_signed(request), id);
        assert_eq!(request.text(), stored[0].body, "the body is the stored event JSON, verbatim");
    }
    // Every attempt is signed at its own send time.
    assert!(received.windows(2).all(|pair| pair[1].at > pair[0].at));
    let report = running.stats.report();
    assert_eq!((report.delivered, report.retried, report.failed, report.dead_lettered), (1, 3, 3, 0));
    running.stop().await;
}

#[tokio::test]
async fn a_400_dead_letters_the_event_and_the_next_one_still_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(400).body("{\"error\": \"unknown client\"}")]);
    // One lane: the events go out in queue order, so the 400 answers the first.
    let running = testing::run(&store, dir.path(), webhook(dir.path(), "psa", &receiver.url(), 1));
    let refused = event("acme", "srv-01", "disk:/", Status::Firing, Severity::P1);
    let next = event("acme", "srv-02", "disk:/", Status::Firing, Severity::P1);
    let (refused_id, next_id) = (refused.id.clone(), next.id.clone());
    queue_events(&store, vec![refused]).await;
    queue_events(&store, vec![next]).await;

    let received = receiver.wait_for(2, 10).await;
    assert_eq!(assert_signed(&received[0]), refused_id);
    assert_eq!(received[0].answered, 400);
    assert_eq!(assert_signed(&received[1]), next_id);
    assert_eq!(received[1].answered, 200);
    let letters = eventually("the dead letter", 10, || {
        let letters = Reader::open(dir.path()).unwrap().dead_letters(Some("sink:psa")).unwrap();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, refused_id);
    assert_eq!(letters[0].attempts, 1, "a 400 is not retried");
    assert!(letters[0].error.contains("HTTP 400 Bad Request"), "{}", letters[0].error);
    assert!(letters[0].error.contains("unknown client"), "{}", letters[0].error);
    assert_eq!(letters[0].event["id"], refused_id.as_str());
    eventually("both done", 5, || {
        let report = running.stats.report();
        (report.delivered == 1 && report.dead_lettered == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _writer) = Store::open(dir.path()).unwrap();
    let receiver = Receiver::start().await;
    receiver.script([Reply::status(429).header("Retry-After", "1")]);
    let running = testing::run(&store, dir.path(), webhook(dir.path(), "psa", &receiver.url(), 4));
    queue_events(&store, vec![event("acme", "srv-01", "disk:/", Status::Firing, Severity::P3)]).await;
    let received = receiver.wait_for(2, 10).await;
    assert_eq!((received[0].answered, received[1].answered), (429, 200));
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_millis(900), "retried after {waited:?}, asked for 1 s");
    assert_eq!(assert_signed(&received[0]), assert_signed(&received[1]));
    running.stop().await;
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    std::fs::write(base.join("webhook.secret"), "s3cret\n").unwrap();
    let raw = || WebhookConfig {
        url: Some("https://psa.example.net/hook".into()),
        secret_file: Some("webhook.secret".into()),
        headers: BTreeMap::new(),
        timeout: None,
        ca: None,
    };
    let key_of =
        |raw: WebhookConfig| spec(testing::settings("psa", 1), raw, base).map(|_| ()).unwrap_err().key;
    assert!(spec(testing::settings("psa", 1), raw(), base).is_ok());
    assert_eq!(key_of(WebhookConfig { url: None, ..raw() }), "url");
    assert_eq!(key_of(WebhookConfig { url: Some("psa.example.net".into()), ..raw() }), "url");
    assert_eq!(key_of(WebhookConfig { secret_file: None, ..raw() }), "secret_file");
    assert_eq!(key_of(WebhookConfig { secret_file: Some("missing".into()), ..raw() }), "secret_file");
    assert_eq!(key_of(WebhookConfig { timeout: Some("soon".into()), ..raw() }), "timeout");
    assert_eq!(key_of(WebhookConfig { ca: Some("missing.pem".into()), ..raw() }), "ca");
    let headers = |name: &str, value: &str| BTreeMap::from([(name.to_owned(), value.to_owned())]);
    assert_eq!(
        key_of(WebhookConfig { headers: headers("X-Nightowl-Signature", "forged"), ..raw() }),
        "headers.X-Nightowl-Signature"
    );
    assert_eq!(key_of(WebhookConfig { headers: headers("Bad Name", "x"), ..raw() }), "headers.Bad Name");
    assert_eq!(key_of(WebhookConfig { headers: headers("X-Ok", "line\nbreak"), ..raw() }), "headers.X-Ok");
}
