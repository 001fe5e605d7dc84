//! Unit tests: statistics, validation, and each method against a real peer on
//! 127.0.0.1 (a listener, an HTTP responder, a DNS responder made here).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nightowl_proto::{CheckResult, ProbeStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use super::*;

fn config(toml_text: &str) -> LatencyConfig {
    toml::from_str(toml_text).unwrap_or_else(|error| panic!("{toml_text}: {error}"))
}

async fn sample(toml_text: &str) -> CheckResult {
    let config = config(toml_text);
    config.validate().unwrap_or_else(|error| panic!("{toml_text}: {error}"));
    let context = ProbeContext { state_dir: PathBuf::from("/nonexistent") };
    let mut results = LatencyProbe::new(&config, &context).sample().await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn metric(result: &CheckResult, name: &str) -> f64 {
    *result.metrics.get(name).unwrap_or_else(|| panic!("no {name} in {result:?}"))
}

fn assert_ok(result: &CheckResult) {
    assert_eq!(result.status, ProbeStatus::Ok as i32, "{result:?}");
}

#[test]
fn percentile_is_nearest_rank() {
    let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(percentile(&sorted, 95.0), 19.0);
    assert_eq!(percentile(&sorted, 50.0), 10.0);
    assert_eq!(percentile(&sorted, 100.0), 20.0);
    assert_eq!(percentile(&sorted, 0.0), 1.0);
    assert_eq!(percentile(&[7.0], 95.0), 7.0);
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&hundred, 95.0), 95.0);
    // 5 values: rank ceil(4.75) = 5, the maximum.
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 50.0], 95.0), 50.0);
}

#[test]
fn jitter_is_mean_absolute_successive_difference() {
    assert_eq!(jitter(&[]), 0.0);
    assert_eq!(jitter(&[10.0]), 0.0);
    assert_eq!(jitter(&[10.0, 10.0, 10.0]), 0.0);
    // |12-10| + |9-12| + |13-9| = 2 + 3 + 4 = 9 over 3 differences.
    assert_eq!(jitter(&[10.0, 12.0, 9.0, 13.0]), 3.0);
    // Order matters: the same values sorted jitter less.
    assert_eq!(jitter(&[9.0, 10.0, 12.0, 13.0]), 4.0 / 3.0);
}

#[test]
fn stats_of_a_series() {
    assert_eq!(RttStats::of(&[]), None);
    let stats = RttStats::of(&[20.0, 10.0, 30.0, 40.0]).unwrap();
    assert_eq!(stats, RttStats { min: 10.0, avg: 25.0, max: 40.0, p95: 40.0, jitter: 40.0 / 3.0 });
}

#[test]
fn metrics_and_message_of_a_lossy_series() {
    let series = Series {
        sent: 4,
        rtts: vec![Duration::from_millis(10), Duration::from_millis(30)],
        errors: vec!["no answer within 1s".into(), "connect: refused".into(), "no answer within 1s".into()],
        extra: HashMap::new(),
        note: None,
        loss_context: Some("icmp via raw socket".into()),
    };
    let metrics = series.metrics();
    assert_eq!(metrics["sent"], 4.0);
    assert_eq!(metrics["received"], 2.0);
    assert_eq!(metrics["loss_pct"], 50.0);
    assert_eq!(metrics["rtt_min_ms"], 10.0);
    assert_eq!(metrics["rtt_avg_ms"], 20.0);
    assert_eq!(metrics["rtt_max_ms"], 30.0);
    assert_eq!(metrics["jitter_ms"], 20.0);
    assert_eq!(series.message(), "2 of 4 probes lost: no answer within 1s (icmp via raw socket)");

    let silent = Series { sent: 3, rtts: Vec::new(), errors: vec!["x".into(); 3], ..series };
    let metrics = silent.metrics();
    assert_eq!(metrics["loss_pct"], 100.0);
    assert!(!metrics.contains_key("rtt_avg_ms"), "no rtt without an answer: {metrics:?}");
    assert_eq!(silent.message(), "all 3 probes lost: x (icmp via raw socket)");
}

#[test]
fn not_after_of_real_certificates() {
    // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280).
    for (year, month, day, unix) in
        [(2031, 5, 17, 1_936_742_400), (2051, 1, 2, 2_556_230_400), (1999, 12, 31, 946_598_400)]
    {
        let mut params = rcgen::CertificateParams::new(vec!["portal.example.com".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(http::not_after(certificate.der()), Some(unix), "{year}-{month}-{day}");
    }
}

#[test]
fn not_after_refuses_what_is_not_a_certificate() {
    assert_eq!(http::not_after(b""), None);
    assert_eq!(http::not_after(b"\x30\x03\x02\x01\x01"), None);
    assert_eq!(http::not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 5, 17);
    let der = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().der().to_vec();
    assert_eq!(http::not_after(&der[..der.len() / 2]), None, "truncated");
}

#[test]
fn days_until_expiry() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    assert_eq!(http::days_until(1_000_000_000 + 86_400 * 30, now), 30.0);
    assert_eq!(http::days_until(1_000_000_000 - 86_400 / 2, now), -0.5);
    assert!(http::days_until(0, SystemTime::now()) < -10_000.0);
}

#[test]
fn validate_table() {
    let good = [
        "name = \"gw\"\nmethod = \"icmp\"\ntarget = \"192.0.2.1\"",
        "name = \"gw6\"\nmethod = \"icmp\"\ntarget = \"2001:db8::1\"",
        "name = \"gw\"\nmethod = \"icmp\"\ntarget = \"router.lan\"\ncount = 100\ntimeout = \"1s\"\nspacing = \"20ms\"",
        "name = \"db\"\nmethod = \"tcp\"\ntarget = \"db.internal:5432\"",
        "name = \"db\"\nmethod = \"tcp\"\ntarget = \"[2001:db8::5]:5432\"\ninterval = \"30s\"",
        "name = \"web\"\nmethod = \"http\"\ntarget = \"http://192.0.2.8:8080/health?full=1\"",
        "name = \"web\"\nmethod = \"http\"\ntarget = \"https://portal.example.com\"\nca = \"/etc/ca.pem\"",
        "name = \"web6\"\nmethod = \"http\"\ntarget = \"https://[2001:db8::8]/\"",
        "name = \"dns\"\nmethod = \"dns\"\ntarget = \"intranet.example.com\"\nserver = \"192.0.2.53\"",
        "name = \"dns\"\nmethod = \"dns\"\ntarget = \"example.com\"\nserver = \"192.0.2.53:5353\"\nrecord = \"AAAA\"",
        "name = \"dns6\"\nmethod = \"dns\"\ntarget = \"example.com\"\nserver = \"2001:db8::53\"\nrecord = \"a\"",
        "name = \"slow\"\nmethod = \"tcp\"\ntarget = \"h:1\"\ncount = 4\ntimeout = \"60s\"\nspacing = \"10s\"",
    ];
    for text in good {
        assert_eq!(config(text).validate(), Ok(()), "{text}");
    }
    let bad = [
        ("name = \"a b\"\nmethod = \"icmp\"\ntarget = \"h\"", "name \"a b\""),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h:80\"", "target: \"h:80\" is not a host name"),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"\"", "target: \"\""),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"db\"", "target: \"db\" needs a port"),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"db:0\"", "is not a port"),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"db:http\"", "is not a port"),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"::1:22\"", "in brackets"),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"bad host:22\"", "is not a host name"),
        ("name = \"x\"\nmethod = \"http\"\ntarget = \"ftp://h/\"", "target: \"ftp://h/\": use an http://"),
        ("name = \"x\"\nmethod = \"http\"\ntarget = \"portal.example.com\"", "use an http://"),
        ("name = \"x\"\nmethod = \"http\"\ntarget = \"http://a b/\"", "is not a URL"),
        ("name = \"x\"\nmethod = \"http\"\ntarget = \"http://u:p@h/\"", "passwords"),
        ("name = \"x\"\nmethod = \"dns\"\ntarget = \"example.com\"", "server: required for method = \"dns\""),
        (
            "name = \"x\"\nmethod = \"dns\"\ntarget = \"example.com\"\nserver = \"ns1.example\"",
            "server: \"ns1.example\"",
        ),
        ("name = \"x\"\nmethod = \"dns\"\ntarget = \".\"\nserver = \"192.0.2.53\"", "target: \".\""),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"h:1\"\nserver = \"192.0.2.53\"", "server: only used"),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\nrecord = \"A\"", "record: only used"),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ncount = 0", "count: 0 is out of range"),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ncount = 101", "count: 101 is out of range"),
        (
            "name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ntimeout = \"1ms\"",
            "timeout: 1ms is out of range",
        ),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ntimeout = \"2m\"", "timeout: 2m is out of range"),
        ("name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\nspacing = \"61s\"", "spacing: 1m 1s is too long"),
        (
            "name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ncount = 100\ntimeout = \"5s\"",
            "count: a sample could take",
        ),
        ("name = \"x\"\nmethod = \"http\"\ntarget = \"http://h/\"\nca = \"/etc/ca.pem\"", "ca: only used"),
        ("name = \"x\"\nmethod = \"tcp\"\ntarget = \"h:1\"\nca = \"/etc/ca.pem\"", "ca: only used"),
        (
            "name = \"x\"\nmethod = \"http\"\ntarget = \"https://h/\"\nca = \"ca.pem\"",
            "ca: \"ca.pem\" is not an absolute",
        ),
    ];
    for (text, expected) in bad {
        let error = config(text).validate().expect_err(text);
        assert!(error.contains(expected), "{text}\n  error {error:?}\n  lacks {expected:?}");
    }
    for text in [
        "name = \"x\"\nmethod = \"udp\"\ntarget = \"h\"",
        "name = \"x\"\nmethod = \"icmp\"\ntarget = \"h\"\ncolour = \"blue\"",
        "name = \"x\"\nmethod = \"dns\"\ntarget = \"h\"\nserver = \"192.0.2.53\"\nrecord = \"MX\"",
        "name = \"x\"\ntarget = \"h\"",
    ] {
        assert!(toml::from_str::<LatencyConfig>(text).is_err(), "{text} should not parse");
    }
}

#[test]
fn defaults() {
    let plan = config("name = \"gw\"\nmethod = \"icmp\"\ntarget = \"h\"").plan().unwrap();
    assert_eq!(
        plan.schedule,
        Schedule { count: 5, timeout: Duration::from_secs(2), spacing: Duration::from_millis(200) }
    );
}

#[tokio::test]
async fn tcp_connects_to_a_local_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio::spawn(async move {
        for _ in 0..4 {
            let _ = listener.accept().await;
        }
    });
    // By name too: "localhost" comes from /etc/hosts, no DNS traffic.
    for target in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let result = sample(&format!(
            "name = \"t\"\nmethod = \"tcp\"\ntarget = \"{target}\"\ncount = 2\nspacing = \"10ms\"\ntimeout = \"1s\""
        ))
        .await;
        assert_ok(&result);
        assert_eq!(result.check_id, "latency:t");
        assert_eq!(result.kind, "latency");
        assert_eq!(metric(&result, "sent"), 2.0);
        assert_eq!(metric(&result, "received"), 2.0, "{result:?}");
        assert_eq!(metric(&result, "loss_pct"), 0.0);
        assert!(metric(&result, "rtt_max_ms") < 500.0, "{result:?}");
        assert!(metric(&result, "rtt_min_ms") <= metric(&result, "rtt_avg_ms"));
        assert_eq!(result.message, "");
    }
    acceptor.await.unwrap();
}

#[tokio::test]
async fn tcp_to_a_closed_port_is_all_lost() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let result = sample(&format!(
        "name = \"t\"\nmethod = \"tcp\"\ntarget = \"127.0.0.1:{port}\"\ncount = 3\nspacing = \"10ms\""
    ))
    .await;
    assert_ok(&result);
    assert_eq!(metric(&result, "loss_pct"), 100.0);
    assert_eq!(metric(&result, "received"), 0.0);
    assert!(!result.metrics.contains_key("rtt_avg_ms"));
    assert!(result.message.starts_with("all 3 probes lost: connect:"), "{}", result.message);
    assert!(result.message.to_lowercase().contains("refused"), "{}", result.message);
}

/// A minimal HTTP/1.1 server: checks the request line and Host header, answers
/// `status` with a short body and closes.
async fn http_server(status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let request = String::from_utf8_lossy(&request).to_lowercase();
                let expected_host = format!("\r\nhost: {address}\r\n");
                let status = if request.starts_with("get /health?x=1 http/1.1\r\n")
                    && request.contains(&expected_host)
                    && request.contains("\r\nuser-agent: nightowl-agent/")
                {
                    status
                } else {
                    "400 Bad Request"
                };
                let body = "x".repeat(100_000);
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn http_reports_status_and_time_to_headers() {
    for (status, code) in [("200 OK", 200.0), ("503 Service Unavailable", 503.0), ("302 Found", 302.0)] {
        let address = http_server(status).await;
        let result = sample(&format!(
            "name = \"w\"\nmethod = \"http\"\ntarget = \"http://{address}/health?x=1\"\ncount = 3\nspacing = \"10ms\""
        ))
        .await;
        assert_ok(&result);
        assert_eq!(metric(&result, "status_code"), code, "{result:?}");
        assert_eq!(metric(&result, "received"), 3.0, "{result:?}");
        assert_eq!(metric(&result, "loss_pct"), 0.0);
        assert!(metric(&result, "rtt_avg_ms") < 1000.0);
        assert!(!result.metrics.contains_key("tls_expiry_days"), "plain http: {result:?}");
    }
}

#[tokio::test]
async fn http_without_a_server_is_all_lost() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let result =
        sample(&format!("name = \"w\"\nmethod = \"http\"\ntarget = \"http://127.0.0.1:{port}/\"\ncount = 2"))
            .await;
    assert_ok(&result);
    assert_eq!(metric(&result, "loss_pct"), 100.0);
    assert!(!result.metrics.contains_key("status_code"));
    assert!(result.message.contains("connect:"), "{}", result.message);
}

#[tokio::test]
async fn https_with_an_unreadable_ca_is_unknown() {
    let result = sample(
        "name = \"w\"\nmethod = \"http\"\ntarget = \"https://127.0.0.1:1/\"\nca = \"/nonexistent/ca.pem\"",
    )
    .await;
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
    assert!(result.message.starts_with("ca: cannot read /nonexistent/ca.pem"), "{}", result.message);
}

/// A DNS responder on 127.0.0.1: `name` A → 192.0.2.7; other names NXDOMAIN. It
/// first sends a datagram with a wrong id, which the probe must ignore.
async fn dns_server(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buffer = [0u8; 512];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
            let Ok(query) = Message::from_vec(&buffer[..length]) else { continue };
            let id = query.metadata.id;
            let mut response = Message::new(id, MessageType::Response, OpCode::Query);
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            let question = query.queries[0].clone();
            let known = question.name() == &Name::from_ascii(name).unwrap();
            if known && question.query_type() == RecordType::A {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 7))),
                ));
            } else if !known {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.add_query(question);
            let mut decoy = response.clone();
            decoy.metadata.id = id.wrapping_add(1);
            let _ = socket.send_to(&decoy.to_vec().unwrap(), peer).await;
            let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
        }
    });
    address
}

#[tokio::test]
async fn dns_counts_answers() {
    let server = dns_server("printer.example.").await;
    let entry = |target: &str, record: &str| {
        format!(
            "name = \"d\"\nmethod = \"dns\"\ntarget = \"{target}\"\nserver = \"{server}\"\nrecord = \"{record}\"\n\
             count = 4\nspacing = \"5ms\"\ntimeout = \"1s\""
        )
    };
    let result = sample(&entry("printer.example", "A")).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "answers"), 1.0, "{result:?}");
    assert_eq!(metric(&result, "received"), 4.0);
    assert_eq!(result.message, "");

    let result = sample(&entry("printer.example", "AAAA")).await;
    assert_eq!(metric(&result, "answers"), 0.0, "{result:?}");
    assert_eq!(metric(&result, "received"), 4.0);

    let result = sample(&entry("nobody.example", "A")).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "answers"), 0.0);
    assert_eq!(metric(&result, "loss_pct"), 0.0);
    assert_eq!(result.message, "the server answered NXDomain (Non-Existent Domain)");
}

#[tokio::test]
async fn dns_silence_is_lost_within_the_bound() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let result = sample(&format!(
        "name = \"d\"\nmethod = \"dns\"\ntarget = \"a.example\"\nserver = \"{server}\"\ncount = 3\n\
         spacing = \"50ms\"\ntimeout = \"200ms\""
    ))
    .await;
    let took = started.elapsed();
    assert_ok(&result);
    assert_eq!(metric(&result, "loss_pct"), 100.0);
    assert_eq!(result.message, "all 3 probes lost: no answer within 200ms");
    // (count - 1) × spacing + timeout = 300 ms; generous slack for a busy machine.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    drop(silent);
}

#[tokio::test]
async fn icmp_echoes_loopback() {
    let result = sample(
        "name = \"lo\"\nmethod = \"icmp\"\ntarget = \"127.0.0.1\"\ncount = 3\nspacing = \"10ms\"\ntimeout = \"1s\"",
    )
    .await;
    if result.status == ProbeStatus::Unknown as i32 {
        assert!(result.message.contains("cannot open an ICMP socket"), "{result:?}");
        eprintln!("SKIP: icmp_echoes_loopback: {}", result.message);
        return;
    }
    assert_ok(&result);
    assert_eq!(metric(&result, "received"), 3.0, "{result:?}");
    assert!(metric(&result, "rtt_max_ms") < 500.0);
}
