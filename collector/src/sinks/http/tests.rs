//! The HTTP client against a real local server: outcomes, Retry-After, timeouts, TLS
//! with an extra CA, the body cap.

use std::time::Duration;

use hyper::header::HeaderMap;

use super::receiver::{Receiver, Reply};
use super::*;

fn url(text: &str) -> HttpUrl {
    HttpUrl::parse(text).unwrap()
}

async fn post(client: &HttpClient, target: &str) -> Result<HttpResponse, DeliveryError> {
    judge(client.post_json(&url(target), &[], Bytes::from_static(b"{\"a\":1}")).await)
}

fn plain_client() -> HttpClient {
    HttpClient::new("test", &url("http://127.0.0.1"), &ClientSettings::default()).unwrap()
}

#[test]
fn urls_are_validated_and_joined() {
    let base = url("https://events.pagerduty.com");
    assert!(base.is_https());
    assert_eq!(base.port, 443);
    assert_eq!(base.join("/v2/enqueue").to_string(), "https://events.pagerduty.com/v2/enqueue");
    let full = url("https://events.pagerduty.com/v2/enqueue/");
    assert_eq!(full.join("/v2/enqueue").to_string(), "https://events.pagerduty.com/v2/enqueue");
    let secret = url("https://hooks.example.net:8443/services/T0KEN?sig=abc");
    assert_eq!(secret.origin(), "https://hooks.example.net:8443");
    let am = url("http://127.0.0.1:9093/am/");
    assert_eq!(am.join("/api/v2/alerts").path_and_query(), "/am/api/v2/alerts");
    assert!(am.is_loopback());
    assert!(url("http://[::1]:8080/x?y=1").is_loopback());
    assert_eq!(url("http://[::1]:8080/x?y=1").path_and_query(), "/x?y=1");
    assert!(url("http://LocalHost/").is_loopback());
    assert!(!url("http://psa.example.net/hook").is_loopback());
    for bad in ["ftp://x/", "psa.example.net/hook", "https://user:pw@x/", "http:///path", "not a url"] {
        assert!(HttpUrl::parse(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn retry_after_takes_seconds_or_an_http_date() {
    let now: jiff::Timestamp = "2026-11-24T02:12:00Z".parse().unwrap();
    let headers = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    };
    assert_eq!(retry_after(&headers("7"), now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(&headers(" 0 "), now), Some(Duration::ZERO));
    assert_eq!(retry_after(&headers("Tue, 24 Nov 2026 02:12:30 GMT"), now), Some(Duration::from_secs(30)));
    assert_eq!(retry_after(&headers("Tue, 24 Nov 2026 02:00:00 GMT"), now), Some(Duration::ZERO), "past");
    assert_eq!(retry_after(&headers("soon"), now), None);
    assert_eq!(retry_after(&headers("-5"), now), None);
    assert_eq!(retry_after(&HeaderMap::new(), now), None);
}

#[tokio::test]
async fn answers_map_to_outcomes() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::status(202).body("{\"status\":\"success\"}"),
        Reply::status(400)
            .body("{\"status\":\"invalid event\",\n  \"errors\": [\"routing_key is invalid\"]}"),
        Reply::status(404),
        Reply::status(301).header("location", "https://elsewhere.example.net/"),
        Reply::status(408),
        Reply::status(429).header("retry-after", "3"),
        Reply::status(503).header("retry-after", "Tue, 24 Nov 2020 02:12:30 GMT"),
        Reply::status(500).body("boom"),
    ]);
    let client = plain_client();
    let target = format!("{}/v2/enqueue", receiver.url());

    let ok = post(&client, &target).await.unwrap();
    assert_eq!(ok.status, 202);
    assert_eq!(&ok.body[..], b"{\"status\":\"success\"}");
    let request = &receiver.received()[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/v2/enqueue"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("content-length"), Some("7"));
    assert!(request.header("user-agent").unwrap().starts_with("nightowl-collector/"));
    assert_eq!(request.header("host"), Some(receiver.url().trim_start_matches("http://")));
    assert_eq!(request.text(), "{\"a\":1}");

    let refused = post(&client, &target).await.unwrap_err();
    assert_eq!(
        refused,
        DeliveryError::permanent(
            "HTTP 400 Bad Request: {\"status\":\"invalid event\", \"errors\": [\"routing_key is invalid\"]}"
        )
    );
    assert_eq!(post(&client, &target).await.unwrap_err(), DeliveryError::permanent("HTTP 404 Not Found"));
    assert!(matches!(post(&client, &target).await, Err(DeliveryError::Permanent { .. })), "3xx");
    assert_eq!(
        post(&client, &target).await.unwrap_err(),
        DeliveryError::Retryable { reason: "HTTP 408 Request Timeout".into(), retry_after: None }
    );
    assert_eq!(
        post(&client, &target).await.unwrap_err(),
        DeliveryError::Retryable {
            reason: "HTTP 429 Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(
        post(&client, &target).await.unwrap_err(),
        DeliveryError::Retryable {
            reason: "HTTP 503 Service Unavailable".into(),
            retry_after: Some(Duration::ZERO)
        }
    );
    assert_eq!(
        post(&client, &target).await.unwrap_err(),
        DeliveryError::Retryable { reason: "HTTP 500 Internal Server Error: boom".into(), retry_after: None }
    );
}

#[tokio::test]
async fn transport_failures_are_retryable() {
    // Nobody listens: connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let error = post(&plain_client(), &format!("http://127.0.0.1:{port}/")).await.unwrap_err();
    assert!(
        matches!(&error, DeliveryError::Retryable { reason, retry_after: None }
            if reason.starts_with(&format!("http://127.0.0.1:{port}: connect: "))),
        "{error:?}"
    );

    // A peer that accepts and never answers: the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/", silent.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let _connection = silent.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let settings = ClientSettings { timeout: Duration::from_millis(300), ..ClientSettings::default() };
    let client = HttpClient::new("test", &url(&target), &settings).unwrap();
    let started = std::time::Instant::now();
    let error = post(&client, &target).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&error, DeliveryError::Retryable { reason, .. } if reason.contains("no answer within")),
        "{error:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn long_answers_are_capped() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(200).body(&"x".repeat(BODY_CAP * 3)));
    let response = post(&plain_client(), &receiver.url()).await.unwrap();
    assert_eq!(response.body.len(), BODY_CAP);
}

#[tokio::test]
async fn https_trusts_the_extra_ca_only_when_given() {
    let dir = tempfile::tempdir().unwrap();
    crate::pki::init_ca(dir.path(), &[]).unwrap();
    let receiver =
        Receiver::start_tls(&dir.path().join("collector.pem"), &dir.path().join("collector.key")).await;
    let target = format!("{}/hook", receiver.url());
    assert!(target.starts_with("https://127.0.0.1:"));

    let settings = ClientSettings::validate(None, Some(Path::new("ca.pem")), dir.path()).unwrap();
    let client = HttpClient::new("test", &url(&target), &settings).unwrap();
    let response = post(&client, &target).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(receiver.received().len(), 1);

    // Without the CA the collector's self-made certificate is refused, and retried.
    let system_only = HttpClient::new("test", &url(&target), &ClientSettings::default());
    if let Ok(client) = system_only {
        let error = post(&client, &target).await.unwrap_err();
        assert!(
            matches!(&error, DeliveryError::Retryable { reason, .. } if reason.contains("tls")),
            "{error:?}"
        );
    }
    assert_eq!(receiver.received().len(), 1);
}

#[test]
fn client_settings_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    assert_eq!(ClientSettings::validate(None, None, base).unwrap(), ClientSettings::default());
    assert_eq!(ClientSettings::validate(Some("3s"), None, base).unwrap().timeout, Duration::from_secs(3));
    assert_eq!(ClientSettings::validate(Some("soon"), None, base).unwrap_err().key, "timeout");
    assert_eq!(ClientSettings::validate(Some("0s"), None, base).unwrap_err().key, "timeout");
    let KeyError { key, message } =
        ClientSettings::validate(None, Some(Path::new("missing.pem")), base).unwrap_err();
    assert_eq!(key, "ca");
    assert!(message.contains("missing.pem"), "{message}");
    std::fs::write(base.join("empty.pem"), "").unwrap();
    assert!(
        ClientSettings::validate(None, Some(Path::new("empty.pem")), base)
            .unwrap_err()
            .message
            .contains("no certificate")
    );
    std::fs::write(base.join("secret"), "  s3cret\n").unwrap();
    assert_eq!(read_secret(&base.join("secret")).unwrap(), "s3cret");
    std::fs::write(base.join("blank"), "\n").unwrap();
    assert!(read_secret(&base.join("blank")).unwrap_err().contains("empty"));
}
