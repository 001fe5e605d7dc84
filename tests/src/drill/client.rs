//! Raw agent-side clients for the drills: a tonic channel with an agent certificate, a
//! well-behaved session that measures report → ack latency, a codec that sends bytes
//! verbatim (malformed protobuf), and a plain rustls config for hand-made HTTP/2.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut};
use nightowl_proto::v1::collector_client::CollectorClient;
use nightowl_proto::{
    AgentMessage, CheckResult, CollectorMessage, Hello, Report, agent_message, collector_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Status, Streaming};

/// Certificates of one agent identity.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A connected channel to `url` (https), presenting `credentials`; the collector's
/// certificate is checked for `localhost`.
pub async fn channel(url: &str, credentials: &Credentials) -> Result<Channel, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|error| format!("{}: {error}", path.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&credentials.ca)?))
        .identity(Identity::from_pem(read(&credentials.cert)?, read(&credentials.key)?))
        .domain_name("localhost");
    Endpoint::from_shared(url.to_owned())
        .map_err(|error| error.to_string())?
        .tls_config(tls)
        .map_err(|error| error.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|error| format!("connect: {error}"))
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

pub fn hello(name: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            hostname: name.to_owned(),
            os: "drill".into(),
            agent_version: "drill".into(),
            boot_id: "drill".into(),
            stream_id: format!("drill-{name}-{}", now_ms()),
            ..Default::default()
        })),
    }
}

pub fn report(seq: u64, sampled_at_ms: i64, results: Vec<CheckResult>) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Report(Report {
            seq,
            sampled_at_ms,
            results,
            retired_checks: Vec::new(),
        })),
    }
}

/// An ordinary host result (cpu 10 %).
pub fn host_result() -> CheckResult {
    CheckResult {
        check_id: "host".into(),
        kind: "host".into(),
        status: nightowl_proto::ProbeStatus::Ok as i32,
        metrics: [("cpu_pct".to_owned(), 10.0)].into_iter().collect(),
        message: String::new(),
        interval_ms: 1000,
    }
}

/// One open session: messages go in through `sender`, the collector's come out of
/// `inbound`. Hello is sent and its Ack awaited by [`Session::open`].
pub struct Session {
    pub sender: mpsc::Sender<AgentMessage>,
    pub inbound: Streaming<CollectorMessage>,
    /// The seq the collector acked in answer to Hello.
    pub acked: u64,
}

impl Session {
    pub async fn open(channel: Channel, name: &str) -> Result<Session, String> {
        let (sender, receiver) = mpsc::channel(64);
        sender.send(hello(name)).await.map_err(|_| "send hello")?;
        let mut client = CollectorClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
        let response = client
            .session(ReceiverStream::new(receiver))
            .await
            .map_err(|status| format!("session refused: {status}"))?;
        let mut session = Session { sender, inbound: response.into_inner(), acked: 0 };
        session.acked = session.next_ack(Duration::from_secs(10)).await?;
        Ok(session)
    }

    /// The next Ack's seq (Policy messages are skipped), waiting at most `timeout`.
    pub async fn next_ack(&mut self, timeout: Duration) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .map_err(|_| format!("no ack within {timeout:?}"))?
                .map_err(|status| format!("stream error: {status}"))?
                .ok_or("the collector closed the stream")?;
            match message.msg {
                Some(collector_message::Msg::Ack(ack)) => return Ok(ack.seq),
                Some(_) | None => continue,
            }
        }
    }

    /// Sends `message` (a report with `seq`) and waits until an Ack covers `seq`.
    pub async fn send_and_ack(&mut self, message: AgentMessage, seq: u64) -> Result<Duration, String> {
        let started = Instant::now();
        self.sender.send(message).await.map_err(|_| "the stream is closed")?;
        loop {
            let acked = self.next_ack(Duration::from_secs(10)).await?;
            if acked >= seq {
                self.acked = acked;
                return Ok(started.elapsed());
            }
        }
    }

    /// Waits (at most `timeout`) for the collector to end the stream; true if it did.
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.inbound.message()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None) | Err(_)) => return true,
            }
        }
    }
}

/// Latencies of well-behaved reports: (when sent, report → ack).
pub type Samples = Arc<Mutex<Vec<(Instant, Duration)>>>;

/// A well-behaved agent: one report every `pace`, each awaited until acked, until `stop`
/// turns true. Errors (a stream that breaks, an ack later than 10 s) end it: the drill
/// reports them as stalls.
pub async fn well_behaved(
    url: String,
    credentials: Credentials,
    name: String,
    pace: Duration,
    samples: Samples,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, String> {
    let channel = channel(&url, &credentials).await?;
    let mut session = Session::open(channel, &name).await?;
    let mut seq = session.acked;
    while !*stop.borrow() {
        seq += 1;
        let sent = Instant::now();
        let latency = session
            .send_and_ack(report(seq, now_ms(), vec![host_result()]), seq)
            .await
            .map_err(|error| format!("{name} seq {seq}: {error}"))?;
        samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((sent, latency));
        tokio::time::sleep(pace.saturating_sub(latency)).await;
    }
    Ok(seq)
}

/// A gRPC codec that sends and receives raw bytes: lets a drill put any bytes (e.g. a
/// malformed protobuf) into a well-formed gRPC frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Opens `Collector/Session` with [`RawCodec`] and sends `frames` as gRPC messages;
/// returns whether the collector ended the stream within 10 s (what it must do after a
/// frame it cannot decode).
pub async fn send_raw_frames(channel: Channel, frames: Vec<Vec<u8>>) -> Result<bool, String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| format!("not ready: {error}"))?;
    let (sender, receiver) = mpsc::channel(16);
    for frame in frames {
        sender.send(frame).await.map_err(|_| "send")?;
    }
    let path = http::uri::PathAndQuery::from_static("/nightowl.v1.Collector/Session");
    let response = grpc.streaming(tonic::Request::new(ReceiverStream::new(receiver)), path, RawCodec).await;
    let mut inbound = match response {
        Ok(response) => response.into_inner(),
        // Refused at once: also an end.
        Err(_) => return Ok(true),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await {
            Err(_) => return Ok(false),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None) | Err(_)) => {
                drop(sender);
                return Ok(true);
            }
        }
    }
}

/// A rustls client config presenting `credentials`, ALPN h2, for hand-made HTTP/2.
pub fn rustls_client(credentials: &Credentials) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&credentials.ca).map_err(|error| error.to_string())? {
        roots.add(cert.map_err(|error| error.to_string())?).map_err(|error| error.to_string())?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&credentials.cert)
        .map_err(|error| error.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|error| error.to_string())?;
    let key = PrivateKeyDer::from_pem_file(&credentials.key).map_err(|error| error.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|error| error.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
