//! The agent's side of the session: connect with mutual TLS, say Hello, stream spooled
//! reports, delete what the collector acks, reconnect with backoff when anything fails.
//!
//! Policy messages are handed to the main loop on a watch channel (latest wins; see
//! `crate::policy`), which checks and applies them; action requests are not run.
//!
//! Delivery: a report is in the spool before it is sent; it leaves the spool only when
//! an Ack covers its seq. After a reconnect everything unacked is sent again (the
//! collector drops what it already has). At most [`WINDOW`] reports are in flight.
//!
//! Limits: the collector says how large a report may be (`Limits`, right after the Ack
//! that answers Hello); no report is sent before that message (or, from a collector
//! older than `Limits`, the Policy in its place) is read. The spool builds new reports
//! within them; a pending report over them (spooled under larger limits) is refitted by
//! the spool once every report sent before it is acked, so the collector has seen none
//! of the seqs it rewrites (see `crate::spool`, "Reports within the collector's limits").

mod backoff;

use std::sync::Arc;
use std::time::Duration;

use nightowl_proto::v1::collector_client::CollectorClient;
use nightowl_proto::{AgentMessage, CollectorMessage, Hello, Limits, Policy, collector_message};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use backoff::Backoff;

use crate::config::CollectorConfig;
use crate::spool::{ReportLimits, SharedSpool, SpoolError, now_ms, with_spool};

/// Reports sent but not yet acked, at most.
pub const WINDOW: u64 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message we accept from the collector.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot read {path}: {source}")]
    ReadPem { path: String, source: std::io::Error },
    #[error("invalid collector url: {0}")]
    Url(String),
    #[error("cannot connect: {0}")]
    Connect(tonic::transport::Error),
    #[error("collector refused or ended the session: {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("collector closed the session")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

impl From<tonic::Status> for SessionError {
    fn from(status: tonic::Status) -> Self {
        SessionError::Status { code: status.code(), message: status.message().to_owned() }
    }
}

/// What the agent says about itself in Hello.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub labels: std::collections::BTreeMap<String, String>,
    pub hostname: String,
    pub os: String,
    pub boot_id: String,
}

impl AgentInfo {
    pub fn detect(labels: std::collections::BTreeMap<String, String>) -> Self {
        Self {
            labels,
            hostname: sysinfo::System::host_name().unwrap_or_default(),
            os: sysinfo::System::long_os_version().unwrap_or_default(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|id| id.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// Keeps a session up until `shutdown`: connect, stream, and on any failure wait with
/// backoff and start again. Never returns an error: failures are logged and retried.
/// Every Policy the collector sends is published on `policies` (unchecked: the receiver
/// decides).
pub async fn run(
    collector: CollectorConfig,
    spool: SharedSpool,
    info: AgentInfo,
    heartbeat: Duration,
    new_report: Arc<Notify>,
    policies: watch::Sender<Option<Policy>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    let stream_id = spool.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stream_id().to_owned();
    loop {
        let mut established = false;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = session(&collector, &spool, &info, &stream_id, heartbeat, &new_report, &policies, &shutdown, &mut established) => outcome,
        };
        if established {
            backoff.reset();
        }
        match outcome {
            Ok(()) => return,
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, url = %collector.url, "collector session lost");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {},
                }
            }
        }
    }
}

async fn connect(collector: &CollectorConfig) -> Result<Channel, SessionError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|source| SessionError::ReadPem { path: path.display().to_string(), source })
    };
    // Read on every connect: a renewed certificate is picked up without a restart.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&collector.ca)?))
        .identity(Identity::from_pem(read(&collector.cert)?, read(&collector.key)?))
        .domain_name(collector.server_name.clone());
    let endpoint = Endpoint::from(collector.url.clone())
        .tls_config(tls)
        .map_err(|error| SessionError::Url(error.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    endpoint.connect().await.map_err(SessionError::Connect)
}

#[allow(clippy::too_many_arguments)]
async fn session(
    collector: &CollectorConfig,
    spool: &SharedSpool,
    info: &AgentInfo,
    stream_id: &str,
    heartbeat: Duration,
    new_report: &Notify,
    policies: &watch::Sender<Option<Policy>>,
    shutdown: &CancellationToken,
    established: &mut bool,
) -> Result<(), SessionError> {
    let channel = connect(collector).await?;
    let mut client = CollectorClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, receiver) = mpsc::channel::<AgentMessage>(WINDOW as usize + 4);
    let hello = Hello {
        hostname: info.hostname.clone(),
        os: info.os.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        boot_id: info.boot_id.clone(),
        stream_id: stream_id.to_owned(),
        tenant: String::new(),
        agent: String::new(),
        labels: info.labels.clone().into_iter().collect(),
    };
    outbound.send(AgentMessage::hello(hello)).await.map_err(|_| SessionError::Closed)?;
    let mut inbound = client.session(ReceiverStream::new(receiver)).await?.into_inner();

    // The collector first tells us what it already has.
    let first = inbound.message().await?.ok_or(SessionError::Closed)?;
    let Heard::Ack(mut acked) = heard(first, policies) else {
        return Err(SessionError::Protocol("the collector must answer hello with an ack"));
    };
    *established = true;
    let deleted = with_spool(spool, move |spool| spool.ack(acked)).await?;
    // Then its limits, before any report goes out. A collector older than `Limits` sends
    // its Policy here: the conservative limits hold.
    let second = inbound.message().await?.ok_or(SessionError::Closed)?;
    let mut limits = match heard(second, policies) {
        Heard::Limits(limits) => limits,
        _ => ReportLimits::CONSERVATIVE,
    };
    with_spool(spool, move |spool| {
        spool.set_report_limits(limits);
        Ok(())
    })
    .await?;
    tracing::info!(
        url = %collector.url,
        collector_has = acked,
        deleted,
        max_message_bytes = limits.max_message_bytes,
        max_results = limits.max_results,
        "session established"
    );
    let mut sent = acked;
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.reset();

    loop {
        // Fill the window from the spool.
        let room = WINDOW.saturating_sub(sent.saturating_sub(acked));
        if room > 0 {
            let after = sent;
            let batch = with_spool(spool, move |spool| spool.pending_after(after, room as usize)).await?;
            let mut refitted = false;
            for report in batch {
                if !limits.fits(&report) {
                    if sent > acked {
                        // Refit only reports the collector has not seen: wait for the acks.
                        break;
                    }
                    let refit = with_spool(spool, |spool| spool.refit()).await?;
                    if refit.reports_before > 0 {
                        refitted = true;
                        break;
                    }
                    // Nothing to refit (the limits changed meanwhile): the collector decides.
                }
                sent = report.seq;
                outbound.send(AgentMessage::report(report)).await.map_err(|_| SessionError::Closed)?;
            }
            if refitted {
                continue;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = new_report.notified() => {}
            _ = ticker.tick() => {
                outbound.send(AgentMessage::heartbeat(now_ms())).await.map_err(|_| SessionError::Closed)?;
            }
            message = inbound.message() => {
                let message = message?.ok_or(SessionError::Closed)?;
                match heard(message, policies) {
                    Heard::Ack(seq) => {
                        if seq > acked {
                            acked = seq;
                            with_spool(spool, move |spool| spool.ack(seq)).await?;
                        }
                        // After a collector-side restore the collector may be ahead of what we sent.
                        sent = sent.max(acked);
                    }
                    Heard::Limits(changed) => {
                        limits = changed;
                        with_spool(spool, move |spool| {
                            spool.set_report_limits(changed);
                            Ok(())
                        })
                        .await?;
                    }
                    Heard::Other => {}
                }
            }
        }
    }
}

/// What a collector message means to the session.
#[derive(Debug, PartialEq)]
enum Heard {
    Ack(u64),
    Limits(ReportLimits),
    /// Handled here (a Policy, published) or ignorable (an action request; a message of
    /// a later protocol version, which decodes as no message).
    Other,
}

/// Reads a collector message. A Policy is published on `policies` for the main loop.
/// Action requests are for later agent versions: logged and ignored, and never executed
/// here (the agent runs only actions its LOCAL config pre-authorises; see DESIGN
/// "Identity and trust").
fn heard(message: CollectorMessage, policies: &watch::Sender<Option<Policy>>) -> Heard {
    match message.msg {
        Some(collector_message::Msg::Ack(ack)) => Heard::Ack(ack.seq),
        Some(collector_message::Msg::Limits(Limits { max_message_bytes, max_results_per_report })) => {
            Heard::Limits(ReportLimits::announced(max_message_bytes, max_results_per_report))
        }
        Some(collector_message::Msg::Policy(policy)) => {
            tracing::debug!(version = policy.version, "policy received");
            // No receiver only while the agent shuts down.
            if policies.send(Some(policy)).is_err() {
                tracing::debug!("policy received during shutdown; ignored");
            }
            Heard::Other
        }
        Some(collector_message::Msg::ActionRequest(request)) => {
            tracing::warn!(action = %request.action_id, "collector requested an action; this agent version runs none");
            Heard::Other
        }
        None => Heard::Other,
    }
}

#[cfg(test)]
mod tests;
