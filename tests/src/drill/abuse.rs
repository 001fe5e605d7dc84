//! Drill 4, abuse: a real collector, well-behaved sessions measuring report → ack
//! latency, and one abuse piece at a time:
//!
//! - `oversize`: a report larger than `limits.max_message_bytes`;
//! - `malformed`: bytes that are not protobuf inside well-formed gRPC frames;
//! - `values`: NaN / ±inf metrics, far-future / ancient / negative sample times, unknown
//!   check ids and kinds, ids out of bounds, a report with too many results;
//! - `half-open`: many TCP connections that never finish (or never start) a TLS handshake;
//! - `rapid-reset`: HTTP/2 streams opened and reset at once, many, on authenticated
//!   connections (CVE-2023-44487 pattern).
//!
//! Pass: the collector is alive after every piece, its RSS stayed under the bound, no
//! well-behaved session broke or waited more than 10 s for an ack. The figures show the
//! well-behaved p99 before and during each piece, and the collector's counters (logged
//! at shutdown) show the rejections.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nightowl_proto::{AgentMessage, CheckResult, agent_message};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::client::{self, Credentials, Samples, Session};
use super::{Outcome, Verdict, ms, quantile, rss_bytes};
use crate::{Collector, Pki};

/// One abuse piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Oversize,
    Malformed,
    Values,
    HalfOpen,
    RapidReset,
}

impl Piece {
    pub const ALL: [Piece; 5] =
        [Piece::Oversize, Piece::Malformed, Piece::Values, Piece::HalfOpen, Piece::RapidReset];

    pub fn name(self) -> &'static str {
        match self {
            Piece::Oversize => "oversize",
            Piece::Malformed => "malformed",
            Piece::Values => "values",
            Piece::HalfOpen => "halfopen",
            Piece::RapidReset => "reset",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AbuseOptions {
    /// Well-behaved sessions (one report every 100 ms each).
    pub sessions: usize,
    /// How long the baseline (no abuse) is measured.
    pub baseline: Duration,
    pub pieces: Vec<Piece>,
    /// Half-open TLS connections to hold (capped below `ulimit -n`).
    pub half_open: usize,
    /// How long they are held (longer than the collector's 10 s handshake timeout).
    pub half_open_hold: Duration,
    /// How long the rapid-reset piece runs.
    pub reset_duration: Duration,
    /// The collector's RSS must stay below this.
    pub rss_limit_bytes: u64,
    /// The quick pieces (oversize, malformed, values) repeat until they have run this
    /// long, so that "during" has enough well-behaved samples.
    pub repeat_for: Duration,
}

impl Default for AbuseOptions {
    fn default() -> Self {
        Self {
            sessions: 20,
            baseline: Duration::from_secs(5),
            pieces: Piece::ALL.to_vec(),
            half_open: 2000,
            half_open_hold: Duration::from_secs(12),
            reset_duration: Duration::from_secs(10),
            rss_limit_bytes: 512 * 1024 * 1024,
            repeat_for: Duration::from_secs(5),
        }
    }
}

/// The collector's `[limits]` in the drill: small enough that a piece costs little.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
pub const MAX_RESULTS_PER_REPORT: usize = 1000;
/// Each piece must finish within this.
const PIECE_BUDGET: Duration = Duration::from_secs(90);

/// What a run found: the final line, and the collector's counters at shutdown.
#[derive(Debug)]
pub struct AbuseReport {
    pub outcome: Outcome,
    pub counters: BTreeMap<String, u64>,
    /// Per piece: its own figures (e.g. `oversize_ended=3/3`).
    pub pieces: Vec<(Piece, Result<Vec<String>, String>)>,
}

struct Context {
    url: String,
    addr: std::net::SocketAddr,
    abuser: Credentials,
    good: Credentials,
}

/// Runs the drill in `dir` (PKI, collector data and logs go there).
pub fn run(options: &AbuseOptions, dir: &Path) -> AbuseReport {
    let pki = Pki::init(&dir.join("pki"));
    let credentials = |agent: &str| {
        let (cert, key) = pki.issue("drill", agent);
        Credentials { ca: pki.ca(), cert, key }
    };
    let good: Vec<Credentials> =
        (0..options.sessions).map(|index| credentials(&format!("good-{index}"))).collect();
    let context = Context {
        abuser: credentials("abuser"),
        good: credentials("fresh"),
        url: String::new(),
        addr: "127.0.0.1:0".parse().unwrap(),
    };
    let mut collector = Collector::with_config(
        dir,
        &pki,
        "",
        &format!(
            "[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\nmax_results_per_report = {MAX_RESULTS_PER_REPORT}\n"
        ),
    );
    collector.start();
    let context = Context { url: collector.url(), addr: collector.addr(), ..context };
    let pid = collector.pid().expect("collector running");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    let mut pieces = Vec::new();
    let max_rss = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sampler = tokio::spawn(sample_rss(pid, max_rss.clone(), stopped.clone()));
        let samples: Samples = Arc::new(Mutex::new(Vec::new()));
        let mut sessions = tokio::task::JoinSet::new();
        for (index, credentials) in good.into_iter().enumerate() {
            sessions.spawn(client::well_behaved(
                context.url.clone(),
                credentials,
                format!("good-{index}"),
                Duration::from_millis(100),
                samples.clone(),
                stopped.clone(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let window = |from: Instant, to: Instant| {
            let samples = samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let latencies: Vec<Duration> = samples
                .iter()
                .filter(|(sent, _)| *sent >= from && *sent < to)
                .map(|(_, latency)| *latency)
                .collect();
            (quantile(&latencies, 0.99), latencies.len())
        };
        let from = Instant::now();
        tokio::time::sleep(options.baseline).await;
        let (p99, count) = window(from, Instant::now());
        figures.push(format!("sessions={} p99_before={}ms(n={count})", options.sessions, ms(p99)));

        for piece in &options.pieces {
            let from = Instant::now();
            let mut rounds = 0;
            let result = loop {
                rounds += 1;
                let result =
                    match tokio::time::timeout(PIECE_BUDGET, run_piece(*piece, &context, options)).await {
                        Ok(result) => result,
                        Err(_) => Err(format!("did not finish within {PIECE_BUDGET:?}")),
                    };
                let quick = matches!(piece, Piece::Oversize | Piece::Malformed | Piece::Values);
                if result.is_err()
                    || !quick
                    || from.elapsed() >= options.repeat_for
                    || !collector.is_running()
                {
                    break result.map(|mut details| {
                        if rounds > 1 {
                            details.push(format!("{}_rounds={rounds}", piece.name()));
                        }
                        details
                    });
                }
            };
            let (p99, count) = window(from, Instant::now());
            figures.push(format!("p99_{}={}ms(n={count})", piece.name(), ms(p99)));
            match &result {
                Ok(details) => figures.extend(details.iter().cloned()),
                Err(error) => failures.push(format!("{}: {error}", piece.name())),
            }
            pieces.push((*piece, result));
            if !collector.is_running() {
                failures.push(format!("collector died during {}", piece.name()));
                break;
            }
            while let Some(joined) = sessions.try_join_next() {
                match joined {
                    Ok(Ok(_)) => {
                        failures.push(format!("a well-behaved session ended during {}", piece.name()))
                    }
                    Ok(Err(error)) => {
                        failures.push(format!("well-behaved stalled during {}: {error}", piece.name()))
                    }
                    Err(error) => failures.push(format!("well-behaved task failed: {error}")),
                }
            }
        }
        let _ = stop.send(true);
        while let Some(joined) = sessions.join_next().await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => failures.push(format!("well-behaved stalled: {error}")),
                Err(error) => failures.push(format!("well-behaved task failed: {error}")),
            }
        }
        let _ = sampler.await;
    });
    drop(runtime);
    let rss = max_rss.load(Ordering::Relaxed);
    figures.push(format!(
        "max_rss={}MiB(limit {}MiB)",
        rss / (1024 * 1024),
        options.rss_limit_bytes / (1024 * 1024)
    ));
    if rss > options.rss_limit_bytes {
        failures.push(format!("collector RSS {rss} bytes over the bound"));
    }
    let alive = collector.is_running();
    figures.push(format!("collector_alive={alive}"));
    if alive {
        collector.terminate();
    } else {
        failures.push("the collector is not running".into());
    }
    let counters = super::ingest_counters(&collector.log_text());
    for key in [
        "messages_undecodable",
        "results_invalid",
        "reports_rejected",
        "handshakes_failed",
        "reports_applied",
        "sessions_refused",
    ] {
        figures.push(format!("{key}={}", counters.get(key).map_or_else(|| "-".into(), u64::to_string)));
    }
    let verdict = if failures.is_empty() { Verdict::Pass } else { Verdict::Fail };
    let mut all = failures.into_iter().map(|failure| format!("FAILED({failure})")).collect::<Vec<_>>();
    all.extend(figures);
    AbuseReport { outcome: Outcome { drill: "abuse", verdict, figures: all }, counters, pieces }
}

async fn sample_rss(pid: u32, max: Arc<AtomicU64>, stopped: tokio::sync::watch::Receiver<bool>) {
    while !*stopped.borrow() {
        if let Some(rss) = rss_bytes(pid) {
            max.fetch_max(rss, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_piece(piece: Piece, context: &Context, options: &AbuseOptions) -> Result<Vec<String>, String> {
    match piece {
        Piece::Oversize => oversize(context).await,
        Piece::Malformed => malformed(context).await,
        Piece::Values => values(context).await,
        Piece::HalfOpen => half_open(context, options.half_open, options.half_open_hold).await,
        Piece::RapidReset => rapid_reset(context, options.reset_duration).await,
    }
}

/// Reports larger than `limits.max_message_bytes`: each must end its session.
async fn oversize(context: &Context) -> Result<Vec<String>, String> {
    const TRIES: usize = 3;
    let mut ended = 0;
    for _ in 0..TRIES {
        let channel = client::channel(&context.url, &context.abuser).await?;
        let mut session = Session::open(channel, "abuser").await?;
        let mut result = client::host_result();
        result.message = "x".repeat(MAX_MESSAGE_BYTES + 1024);
        let seq = session.acked + 1;
        session.sender.send(client::report(seq, client::now_ms(), vec![result])).await.map_err(|_| "send")?;
        if session.ends_within(Duration::from_secs(10)).await {
            ended += 1;
        }
    }
    Ok(vec![format!("oversize_ended={ended}/{TRIES}")])
}

/// Frames that are not protobuf (before and after Hello): each must end its session.
async fn malformed(context: &Context) -> Result<Vec<String>, String> {
    let hello = client::hello("abuser").encode_to_vec();
    let report = client::report(1, client::now_ms(), vec![client::host_result()]).encode_to_vec();
    let cases: Vec<Vec<Vec<u8>>> = vec![
        // Garbage instead of Hello: a varint that never ends.
        vec![vec![0xff; 32]],
        // Hello, then field 2 (report) claiming a length far beyond the frame.
        vec![hello.clone(), vec![0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]],
        // Hello, then a report cut in half.
        vec![hello.clone(), report[..report.len() / 2].to_vec()],
        // Hello, then wire type 7 (does not exist).
        vec![hello, vec![0x0f, 0x00]],
    ];
    let total = cases.len();
    let channel = client::channel(&context.url, &context.abuser).await?;
    let mut ended = 0;
    for frames in cases {
        if client::send_raw_frames(channel.clone(), frames).await? {
            ended += 1;
        }
    }
    Ok(vec![format!("malformed_ended={ended}/{total}")])
}

/// Odd values in otherwise valid reports: each is acked (never refused forever), the bad
/// parts counted.
async fn values(context: &Context) -> Result<Vec<String>, String> {
    let channel = client::channel(&context.url, &context.abuser).await?;
    let mut session = Session::open(channel, "abuser").await?;
    let now = client::now_ms();
    let metric = |name: &str, value: f64| CheckResult {
        check_id: "disk:/drill".into(),
        kind: "disk".into(),
        status: nightowl_proto::ProbeStatus::Ok as i32,
        metrics: [(name.to_owned(), value)].into_iter().collect(),
        message: String::new(),
        interval_ms: 1000,
    };
    let with_id = |id: &str, kind: &str| CheckResult {
        check_id: id.into(),
        kind: kind.into(),
        ..client::host_result()
    };
    let mut many_metrics = client::host_result();
    many_metrics.metrics = (0..300).map(|index| (format!("m{index}"), 1.0)).collect();
    let ten_years_ms = 10 * 365 * 24 * 3600 * 1000_i64;
    let reports: Vec<(i64, Vec<CheckResult>)> = vec![
        (now, vec![metric("used_pct", f64::NAN)]),
        (now, vec![metric("used_pct", f64::INFINITY)]),
        (now, vec![metric("used_pct", f64::NEG_INFINITY)]),
        (now, vec![metric("used_pct", f64::MAX), metric("free_bytes", -0.0)]),
        (i64::MAX, vec![client::host_result()]),
        (i64::MIN, vec![client::host_result()]),
        (now + ten_years_ms, vec![client::host_result()]),
        (now - ten_years_ms, vec![client::host_result()]),
        (0, vec![client::host_result()]),
        (now, vec![with_id("quantum:flux", "quantum")]),
        (now, vec![with_id("nosuch", "disk")]),
        (now, vec![with_id("", "disk")]),
        (now, vec![with_id(&"x".repeat(300), "disk")]),
        (now, vec![with_id("a\0b", "disk")]),
        (now, vec![with_id("disk:/k", &"k".repeat(40))]),
        (now, vec![many_metrics]),
        (now, (0..=MAX_RESULTS_PER_REPORT).map(|index| with_id(&format!("disk:/{index}"), "disk")).collect()),
    ];
    let total = reports.len() + 1;
    let mut acked = 0;
    let mut seq = session.acked;
    for (sampled_at_ms, results) in reports {
        seq += 1;
        if session.send_and_ack(client::report(seq, sampled_at_ms, results), seq).await.is_ok() {
            acked += 1;
        }
    }
    // Retired ids out of bounds.
    seq += 1;
    let retired = AgentMessage {
        msg: Some(agent_message::Msg::Report(nightowl_proto::Report {
            seq,
            sampled_at_ms: now,
            results: Vec::new(),
            retired_checks: vec![String::new(), "y".repeat(300), "disk:/drill".into()],
        })),
    };
    if session.send_and_ack(retired, seq).await.is_ok() {
        acked += 1;
    }
    Ok(vec![format!("values_acked={acked}/{total}")])
}

/// A partial TLS ClientHello: a record header promising 512 bytes, then a few of them.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

/// Many TCP connections that never complete a handshake (half send a partial
/// ClientHello, half nothing), held for `hold`; meanwhile a fresh well-behaved session
/// connects (how long did its handshake wait?).
async fn half_open(context: &Context, wanted: usize, hold: Duration) -> Result<Vec<String>, String> {
    // Our own descriptors: leave room for the runtime, sessions and the fresh client.
    let limit = super::open_files_limit().unwrap_or(1024) as usize;
    let count = wanted.min(limit.saturating_sub(256));
    let mut connections = Vec::with_capacity(count);
    let mut failed = 0;
    for batch in 0..count.div_ceil(100) {
        let mut connects = tokio::task::JoinSet::new();
        for index in batch * 100..((batch + 1) * 100).min(count) {
            let addr = context.addr;
            connects.spawn(async move {
                let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                    .await
                    .ok()?
                    .ok()?;
                if index % 2 == 0 {
                    stream.write_all(&PARTIAL_CLIENT_HELLO).await.ok()?;
                }
                Some(stream)
            });
        }
        while let Some(joined) = connects.join_next().await {
            match joined {
                Ok(Some(stream)) => connections.push(stream),
                _ => failed += 1,
            }
        }
    }
    let held_at = Instant::now();
    // A fresh agent connecting while the handshake slots are taken.
    let fresh = async {
        let started = Instant::now();
        let channel = client::channel(&context.url, &context.good).await?;
        let mut session = Session::open(channel, "fresh").await?;
        let seq = session.acked + 1;
        session.send_and_ack(client::report(seq, client::now_ms(), vec![client::host_result()]), seq).await?;
        Ok::<Duration, String>(started.elapsed())
    };
    let fresh = tokio::time::timeout(hold + Duration::from_secs(20), fresh).await;
    tokio::time::sleep(hold.saturating_sub(held_at.elapsed())).await;
    let mut closed = 0;
    let mut buffer = [0u8; 64];
    for stream in &connections {
        match stream.try_read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => closed += 1,
        }
    }
    let held = connections.len();
    drop(connections);
    let fresh = match fresh {
        Ok(Ok(elapsed)) => format!("{}ms", ms(Some(elapsed))),
        Ok(Err(error)) => format!("failed({})", error.replace(' ', "_")),
        Err(_) => "timeout".into(),
    };
    Ok(vec![
        format!("halfopen_held={held}(wanted {wanted}, connect_failed {failed})"),
        format!("halfopen_closed_by_collector_after_{}s={closed}", hold.as_secs()),
        format!("fresh_session_during_halfopen={fresh}"),
    ])
}

/// HTTP/2 rapid reset: on authenticated connections, open `Collector/Session` streams
/// and reset each at once, for `duration`; reconnect when the collector says GOAWAY.
async fn rapid_reset(context: &Context, duration: Duration) -> Result<Vec<String>, String> {
    const MAX_CONNECTIONS: usize = 200;
    const MAX_RESETS: u64 = 200_000;
    let connector = tokio_rustls::TlsConnector::from(client::rustls_client(&context.abuser)?);
    let server_name =
        rustls_pki_types::ServerName::try_from("localhost").map_err(|error| error.to_string())?;
    let uri = format!("https://localhost:{}/nightowl.v1.Collector/Session", context.addr.port());
    let deadline = Instant::now() + duration;
    let (mut resets, mut connections, mut goaways, mut errors) = (0u64, 0usize, 0usize, 0usize);
    while Instant::now() < deadline && connections < MAX_CONNECTIONS && resets < MAX_RESETS {
        connections += 1;
        let tcp = TcpStream::connect(context.addr).await.map_err(|error| format!("connect: {error}"))?;
        let tls = match connector.connect(server_name.clone(), tcp).await {
            Ok(tls) => tls,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let Ok((send, connection)) = h2::client::handshake(tls).await else {
            errors += 1;
            continue;
        };
        let driver = tokio::spawn(connection);
        let mut idle = Some(send);
        while Instant::now() < deadline && resets < MAX_RESETS {
            let Some(waiting) = idle.take() else { break };
            let mut send = match tokio::time::timeout(Duration::from_secs(5), waiting.ready()).await {
                Ok(Ok(ready)) => ready,
                _ => break,
            };
            let request = http::Request::post(uri.as_str())
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .map_err(|error| error.to_string())?;
            match send.send_request(request, false) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    resets += 1;
                }
                Err(_) => break,
            }
            idle = Some(send);
            // Without a yield this loop never gives the well-behaved sessions (same
            // runtime) a turn: their figures would measure our client, not the collector.
            tokio::task::yield_now().await;
        }
        drop(idle);
        match tokio::time::timeout(Duration::from_secs(5), driver).await {
            Ok(Ok(Err(error))) if error.is_go_away() => goaways += 1,
            Ok(Ok(Err(_))) => errors += 1,
            _ => {}
        }
    }
    Ok(vec![
        format!("reset_streams={resets}"),
        format!("reset_connections={connections}(goaway {goaways}, errors {errors})"),
    ])
}
