//! Ingest: the gRPC `Collector` service that agents stream into.
//!
//! One session per agent connection (`session.rs`): identity from the client
//! certificate, Hello, then reports → evaluate → durable commit → Ack. `server.rs` is the
//! listening side (TLS acceptor, limits).
//!
//! Sessions of the same agent are serialised: a new session of an agent cancels the
//! previous one and waits for it to finish its in-flight commit before reading the
//! agent's durable state, so two sessions never evaluate the same agent at once.

mod client_cert;
mod refused;
mod server;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use nightowl_proto::v1::collector_server::{Collector, CollectorServer};
use nightowl_proto::{AgentMessage, CollectorMessage};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

pub use server::{TlsSetupError, server_tls_config};
pub use session::{ValidatedReport, sample_time, validate_report};

use crate::config::Limits;
use crate::evaluate::RuleSet;
use crate::identity::AgentIdentity;
use crate::offline::{self, OfflineConfig, Presence};
use crate::policy::PolicySet;
use crate::queue::{KnownAgent, Store};
use crate::status::StreamError;
use crate::supervise::Supervisor;

/// Counters for operations (exported by the metrics endpoint later). Bounded labels
/// only: never per agent.
#[derive(Debug, Default)]
pub struct Counters {
    pub sessions_started: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub sessions_refused: AtomicU64,
    /// Session tasks that panicked (a bug: the log says where).
    pub sessions_panicked: AtomicU64,
    pub reports_applied: AtomicU64,
    pub reports_duplicate: AtomicU64,
    pub reports_rejected: AtomicU64,
    /// Reports refused: too many results (also in `reports_rejected`) or over
    /// `max_message_bytes`; each episode raises `reports_refused` for its agent.
    pub reports_refused: AtomicU64,
    /// Messages the codec refused: oversized or not protobuf (the session ends).
    pub messages_undecodable: AtomicU64,
    pub results_invalid: AtomicU64,
    pub checks_retired: AtomicU64,
    pub policies_sent: AtomicU64,
    pub seq_gaps: AtomicU64,
    pub events_emitted: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub connections_refused_limit: AtomicU64,
}

impl Counters {
    /// Logs every counter on one line (`ingest counters`), e.g. at shutdown: the figures
    /// operators and the drills (`deploy/drills/`) read until a metrics endpoint exists.
    pub fn log(&self) {
        let get = |counter: &AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            sessions_started = get(&self.sessions_started),
            sessions_ended = get(&self.sessions_ended),
            sessions_refused = get(&self.sessions_refused),
            sessions_panicked = get(&self.sessions_panicked),
            reports_applied = get(&self.reports_applied),
            reports_duplicate = get(&self.reports_duplicate),
            reports_rejected = get(&self.reports_rejected),
            reports_refused = get(&self.reports_refused),
            messages_undecodable = get(&self.messages_undecodable),
            results_invalid = get(&self.results_invalid),
            checks_retired = get(&self.checks_retired),
            policies_sent = get(&self.policies_sent),
            seq_gaps = get(&self.seq_gaps),
            events_emitted = get(&self.events_emitted),
            handshakes_failed = get(&self.handshakes_failed),
            connections_refused_limit = get(&self.connections_refused_limit),
            "ingest counters"
        );
    }
}

/// Per-agent session slot: the lock a session holds while it runs and the token that
/// tells the current session to give way.
struct AgentSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    current: CancellationToken,
    presence: Arc<Presence>,
}

#[derive(Default)]
struct Registry {
    agents: Mutex<HashMap<AgentIdentity, AgentSlot>>,
}

impl Registry {
    /// Cancels the agent's current session (if any) and returns the agent's lock and a
    /// token for the new session.
    fn claim(
        &self,
        identity: &AgentIdentity,
        shutdown: &CancellationToken,
    ) -> (Arc<tokio::sync::Mutex<()>>, CancellationToken, Arc<Presence>) {
        let token = shutdown.child_token();
        let mut agents = self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let slot = agents.entry(identity.clone()).or_insert_with(|| AgentSlot {
            lock: Arc::new(tokio::sync::Mutex::new(())),
            current: CancellationToken::new(),
            presence: Arc::new(Presence::default()),
        });
        slot.current.cancel();
        slot.current = token.clone();
        (slot.lock.clone(), token, slot.presence.clone())
    }

    /// Adds the agents the store knows (at startup), so the offline monitor watches them
    /// before they reconnect.
    fn seed(&self, known: Vec<KnownAgent>) {
        let mut agents = self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for agent in known {
            agents.entry(agent.identity).or_insert_with(|| AgentSlot {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                current: CancellationToken::new(),
                presence: Arc::new(Presence::known(
                    agent.last_seen,
                    agent.address,
                    agent.labels,
                    agent.offline,
                )),
            });
        }
    }
}

impl offline::Agents for Registry {
    fn snapshot(&self) -> Vec<(AgentIdentity, Arc<Presence>)> {
        let agents = self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        agents.iter().map(|(identity, slot)| (identity.clone(), slot.presence.clone())).collect()
    }
}

/// Everything a session needs; shared by all sessions.
pub(crate) struct Shared {
    store: Store,
    rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
    policies: tokio::sync::watch::Receiver<Arc<PolicySet>>,
    limits: Limits,
    counters: Arc<Counters>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Collector for Service {
    type SessionStream = ReceiverStream<Result<CollectorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer = request.remote_addr();
        let identity = match session::identify(&request) {
            Ok(identity) => identity,
            Err(reason) => {
                self.shared.counters.sessions_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(?peer, %reason, "session refused: no usable identity in client certificate");
                return Err(StreamError::Unauthenticated(reason.to_string()).into());
            }
        };
        let (outbound, receiver) = tokio::sync::mpsc::channel(64);
        let shared = self.shared.clone();
        let session =
            tokio::spawn(session::run(shared, identity.clone(), peer, request.into_inner(), outbound));
        // A session that panics ends (its agent reconnects and replays what is unacked);
        // it is logged and counted, never silent.
        let counters = self.shared.counters.clone();
        self.shared.sessions.spawn(async move {
            if let Err(error) = session.await {
                counters.sessions_panicked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reason = match error.try_into_panic() {
                    Ok(payload) => crate::supervise::panic_message(payload.as_ref()),
                    Err(error) => error.to_string(),
                };
                tracing::error!(agent = %identity, %reason, "session task panicked; the agent will reconnect");
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("grpc server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, ready-to-run ingest server.
pub struct Ingest {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shared: Arc<Shared>,
}

impl Ingest {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        store: Store,
        rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
        policies: tokio::sync::watch::Receiver<Arc<PolicySet>>,
        limits: Limits,
        counters: Arc<Counters>,
    ) -> Result<Ingest, ServeError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        let shared = Arc::new(Shared {
            store,
            rules,
            policies,
            limits,
            counters,
            registry: Arc::new(Registry::default()),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
        });
        Ok(Ingest { listener, tls, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends every session (the
    /// agents reconnect elsewhere or later; nothing unacked is lost) and returns once
    /// all sessions have finished their in-flight commits.
    ///
    /// The offline monitor runs as a restarted task of `supervisor`, the accept loop as a
    /// critical one; a critical failure anywhere (`supervisor.failed()`) drains the same
    /// way as `shutdown`.
    pub async fn run(
        self,
        known: Vec<KnownAgent>,
        offline: OfflineConfig,
        supervisor: &Supervisor,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Ingest { listener, tls, shared } = self;
        shared.registry.seed(known);
        {
            let (agents, store, stop) =
                (shared.registry.clone(), shared.store.clone(), shared.shutdown.clone());
            supervisor.restarting("offline monitor", shared.shutdown.clone(), move || {
                offline::monitor(agents.clone(), store.clone(), offline.clone(), stop.clone())
            });
        }
        let limits = shared.limits.clone();
        let (established, incoming) = tokio::sync::mpsc::channel(256);
        supervisor.critical(
            "accept loop",
            shared.shutdown.clone(),
            server::accept_loop(
                listener,
                tls,
                limits.clone(),
                shared.counters.clone(),
                established,
                shared.shutdown.clone(),
            ),
        );
        let service = CollectorServer::new(Service { shared: shared.clone() })
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes);
        // The alert feed shares the listener (and its TLS limits); its subscribers are
        // told apart by their operator certificates.
        let data_dir = shared.store.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let feed = nightowl_proto::v1::feed_server::FeedServer::new(crate::feed::FeedService::new(
            shared.store.clone(),
            data_dir,
            shared.shutdown.clone(),
            shared.sessions.clone(),
        ))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes.max(4 * 1024 * 1024));
        let stop = shared.shutdown.clone();
        let failed = {
            let supervisor = supervisor.clone();
            async move { supervisor.failed().await }
        };
        let mut server = tonic::transport::Server::builder()
            .max_concurrent_streams(limits.max_streams_per_connection.get())
            .http2_keepalive_interval(Some(limits.keepalive_interval))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout))
            .http2_max_pending_accept_reset_streams(Some(64))
            .http2_max_local_error_reset_streams(Some(1024))
            .http2_max_header_list_size(16 * 1024);
        let served = server
            .add_service(service)
            .add_service(feed)
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                tokio::select! {
                    () = shutdown => {},
                    () = stop.cancelled() => {},
                    failure = failed => tracing::error!(%failure, "draining after a critical task failure"),
                }
                // Tell every session to end; graceful HTTP/2 shutdown waits for them.
                stop.cancel();
            })
            .await;
        shared.shutdown.cancel();
        shared.sessions.close();
        shared.sessions.wait().await;
        shared.counters.log();
        served.map_err(ServeError::from)
    }
}
