//! One simulated agent: its own HTTP/2 connection with its own mTLS identity, speaking
//! the agent's protocol (`agent/src/session/mod.rs`): Hello → Ack (what the collector
//! has) → Policy (ignored) → Reports with seq and Heartbeats, at most [`WINDOW`]
//! reports unacked, everything unacked sent again after a reconnect, reconnect with the
//! agent's own [`Backoff`].
//!
//! Reports are made on schedule whether or not the session is up (as the agent's
//! sampler fills its spool); only their seq and sample time are kept until acked, the
//! report itself is made from them when sent (`workload::EncodedReports`: encoded once
//! per session kind, so sending costs a copy, not an encoding).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use nightowl_agent::session::Backoff;
use nightowl_proto::{AgentMessage, CollectorMessage, Hello, collector_message};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{Shared, workload};

/// Reports sent but not yet acked, at most (as the agent).
pub const WINDOW: u64 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one session measured, merged by the caller.
#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub row: Option<super::ledger::LedgerRow>,
    /// Report sent → covered by an Ack, microseconds.
    pub ack_micros: Vec<u64>,
    pub reports_generated: u64,
    pub reports_acked: u64,
}

/// Per-session state that survives reconnects: the "spool".
struct State {
    index: u32,
    crossing: u32,
    /// (seq, sampled_at_ms) made and not yet acked, oldest first.
    pending: VecDeque<(u64, i64)>,
    generated: u64,
    sent_max: u64,
    acked: u64,
    /// Sent on this connection and not yet acked: (seq, when sent).
    in_flight: VecDeque<(u64, Instant)>,
    /// Highest seq sent on this connection.
    sent: u64,
    generating: bool,
    ack_micros: Vec<u64>,
    /// This session's reports, encoded once (`workload::EncodedReports`).
    encoded: workload::EncodedReports,
}

impl State {
    /// Makes the next report (at its schedule) and remembers which transitions it
    /// should cause, for the sample → alert latency.
    fn generate(&mut self, shared: &Shared) {
        if Instant::now() >= shared.stop_generating {
            self.generating = false;
            return;
        }
        self.generated += 1;
        let sampled_at_ms = now_ms();
        self.pending.push_back((self.generated, sampled_at_ms));
        shared.reports_generated.fetch_add(1, Ordering::Relaxed);
        if self.crossing > 0 {
            shared.expect_transitions(
                self.index,
                self.crossing,
                workload::fires(self.generated),
                sampled_at_ms,
            );
        }
    }

    fn on_ack(&mut self, seq: u64, shared: &Shared) {
        let now = Instant::now();
        while let Some(&(sent_seq, at)) = self.in_flight.front() {
            if sent_seq > seq {
                break;
            }
            self.in_flight.pop_front();
            self.ack_micros.push(now.duration_since(at).as_micros() as u64);
        }
        while self.pending.front().is_some_and(|&(pending_seq, _)| pending_seq <= seq) {
            self.pending.pop_front();
        }
        if seq > self.acked {
            shared.reports_acked.fetch_add(seq - self.acked, Ordering::Relaxed);
            self.acked = seq;
        }
        self.sent = self.sent.max(seq);
    }

    fn done(&self) -> bool {
        !self.generating && self.pending.is_empty()
    }
}

/// Runs session `index` until its reports are generated and acked, or `hard_stop`.
pub async fn run(shared: Arc<Shared>, index: u32, cert_pem: String, key_pem: String) -> SessionOutcome {
    let config = &shared.config;
    let agent = workload::agent_id(&config.agent_prefix, index);
    let crossing = workload::crossing_checks(index, config.results, config.crossing);
    let identity = Identity::from_pem(cert_pem, key_pem);
    let stream_id = format!("loadgen-{}-{}-{index}", std::process::id(), shared.run_id);
    let mut state = State {
        index,
        crossing,
        pending: VecDeque::new(),
        generated: 0,
        sent_max: 0,
        acked: 0,
        in_flight: VecDeque::new(),
        sent: 0,
        generating: true,
        ack_micros: Vec::new(),
        encoded: shared.encoded_reports(crossing),
    };
    // Spread the sessions' report times over the interval.
    let phase = config.interval.mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(Instant::now() + phase, config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Backoff::default();
    let mut connected_before = false;
    loop {
        if state.done() || Instant::now() >= shared.hard_stop {
            break;
        }
        let mut established = false;
        let outcome =
            connection(&shared, &identity, &stream_id, &mut state, &mut ticker, &mut established).await;
        if established {
            backoff.reset();
            if connected_before {
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            connected_before = true;
        }
        state.in_flight.clear();
        match outcome {
            Ok(()) => break,
            Err(kind) => {
                shared.count_error(kind);
                let delay = backoff.next_delay();
                let wait = tokio::time::sleep(delay);
                if generating_while(&shared, &mut state, &mut ticker, wait).await.is_none() {
                    break;
                }
            }
        }
    }
    SessionOutcome {
        row: Some(super::ledger::LedgerRow {
            tenant: config.tenant.clone(),
            agent,
            generated: state.generated,
            sent: state.sent_max,
            acked: state.acked,
            crossing,
            results: config.results,
        }),
        reports_generated: state.generated,
        reports_acked: state.acked,
        ack_micros: state.ack_micros,
    }
}

/// Awaits `work` while keeping the report schedule; None at `hard_stop`.
async fn generating_while<T>(
    shared: &Shared,
    state: &mut State,
    ticker: &mut Interval,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Some(output),
            _ = ticker.tick(), if state.generating => state.generate(shared),
            () = tokio::time::sleep_until(shared.hard_stop) => return None,
        }
    }
}

/// Failure kinds, as counted in the summary.
pub type ErrorKind = &'static str;

/// Classifies a connect error: TCP refused, timed out, or TLS/HTTP/2 setup.
fn connect_error(error: &tonic::transport::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "refused",
                std::io::ErrorKind::TimedOut => return "timeout",
                _ => {}
            }
        }
        source = current.source();
    }
    let text = format!("{error:?}");
    if text.contains("Elapsed") || text.contains("timed out") { "timeout" } else { "connect" }
}

/// One connection: connect, Hello, then stream until done. Ok when everything generated
/// was acked (or at `hard_stop`).
async fn connection(
    shared: &Shared,
    identity: &Identity,
    stream_id: &str,
    state: &mut State,
    ticker: &mut Interval,
    established: &mut bool,
) -> Result<(), ErrorKind> {
    let config = &shared.config;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&shared.ca_pem))
        .identity(identity.clone())
        .domain_name(shared.server_name.clone());
    let endpoint = Endpoint::from_shared(config.collector.clone())
        .map_err(|_| "connect")?
        .tls_config(tls)
        .map_err(|_| "connect")?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let Some(connected) = generating_while(shared, state, ticker, endpoint.connect()).await else {
        return Ok(());
    };
    let channel = connected.map_err(|error| connect_error(&error))?;
    let mut client = tonic::client::Grpc::new(channel);
    let (outbound, receiver) = mpsc::channel::<Bytes>(WINDOW as usize + 16);
    let hello = Hello {
        hostname: format!("loadgen-{}", state.index),
        os: "loadgen".to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id: shared.run_id.clone(),
        stream_id: stream_id.to_owned(),
        ..Default::default()
    };
    outbound.send(AgentMessage::hello(hello).encode_to_vec().into()).await.map_err(|_| "stream")?;
    let session = async {
        client.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/nightowl.v1.Collector/Session");
        client.streaming(tonic::Request::new(ReceiverStream::new(receiver)), path, PreEncoded).await
    };
    let opened = generating_while(shared, state, ticker, session).await;
    let Some(opened) = opened else { return Ok(()) };
    // With TLS 1.3 a refused client certificate surfaces here, on the first RPC.
    let mut inbound = opened.map_err(|_| "connect")?.into_inner();
    let first = generating_while(shared, state, ticker, inbound.message()).await;
    let Some(first) = first else { return Ok(()) };
    let Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::Ack(ack)) })) = first else {
        return Err("stream");
    };
    *established = true;
    let _up = shared.session_up();
    state.sent = state.acked;
    state.on_ack(ack.seq, shared);
    state.sent = state.acked.max(ack.seq);
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.reset();
    loop {
        // Fill the window.
        while state.sent.saturating_sub(state.acked) < WINDOW {
            let Some(&(seq, sampled_at_ms)) = state.pending.iter().find(|(seq, _)| *seq > state.sent) else {
                break;
            };
            let report = state.encoded.agent_message(seq, sampled_at_ms);
            outbound.send(report).await.map_err(|_| "stream")?;
            state.sent = seq;
            state.sent_max = state.sent_max.max(seq);
            state.in_flight.push_back((seq, Instant::now()));
        }
        if state.done() {
            return Ok(());
        }
        tokio::select! {
            _ = ticker.tick(), if state.generating => state.generate(shared),
            _ = heartbeat.tick() => {
                let heartbeat = AgentMessage::heartbeat(now_ms()).encode_to_vec().into();
                outbound.send(heartbeat).await.map_err(|_| "stream")?;
            }
            message = inbound.message() => match message {
                Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::Ack(ack)) })) => state.on_ack(ack.seq, shared),
                // Limits, Policy, action requests: a load generator runs no checks or
                // actions, and its reports are far below any limit.
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return Err("stream"),
            },
            () = tokio::time::sleep_until(shared.hard_stop) => return Ok(()),
        }
    }
}

/// The session's gRPC codec: sends `AgentMessage`s already encoded (reports from
/// `workload::EncodedReports`), decodes `CollectorMessage`s with prost.
#[derive(Debug, Default, Clone, Copy)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = CollectorMessage;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = CollectorMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CollectorMessage>, Status> {
        CollectorMessage::decode(src).map(Some).map_err(|error| Status::internal(error.to_string()))
    }
}

/// Unix epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
