//! The listening side: TCP accept → TLS handshake (our own rustls acceptor) → tonic.
//!
//! We run the TLS acceptor ourselves instead of tonic's `ServerTlsConfig` because that
//! one has no handshake concurrency bound, no per-connection cap and no hook for
//! revocation or certificate reload. Here:
//! - every handshake must complete within `handshake_timeout` of accept, counting all
//!   of it: waiting for the ClientHello, waiting for a handshake slot, and the rest;
//! - waiting for a client's ClientHello holds no handshake slot (it costs a small
//!   buffer and the connection's slot of `max_connections`); only what costs CPU — key
//!   exchange, our signature, the client-certificate verification — runs under one of
//!   `max_concurrent_handshakes` slots. So a flood of half-open connections (nothing
//!   sent, or a partial ClientHello) cannot keep real agents waiting: each is closed at
//!   its deadline and never takes a slot that a real handshake needs;
//! - at most `max_connections` established connections; beyond that new TCP connections
//!   are closed at once (and counted) rather than queued;
//! - a client certificate issued directly by our CA (`client_cert`: no intermediates,
//!   EKU clientAuth) is REQUIRED at the handshake; identity is
//!   read from it later (`Request::peer_certs`, kept working by `tls-connect-info`).
//!
//! A handshake failure is one connection's problem: it is logged at debug level and
//! counted, never an error of the server.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use super::Counters;
use super::client_cert::DirectlyIssued;
use crate::config::{Limits, TlsPaths};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {path}: {detail} (create a PKI with `nightowl-collector ca init --dir DIR`)")]
    Read { path: String, detail: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("invalid TLS setup: {0}")]
    Rustls(String),
}

/// Builds the server TLS config: our certificate, client certificates required and
/// verified against the CA, HTTP/2 only.
pub fn server_tls_config(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let read_error = |path: &std::path::Path, detail: String| TlsSetupError::Read {
        path: path.display().to_string(),
        detail,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
        .map_err(|error| read_error(&paths.cert, error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| read_error(&paths.cert, error.to_string()))?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: paths.cert.display().to_string() });
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|error| read_error(&paths.key, error.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.ca)
        .map_err(|error| read_error(&paths.ca, error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| read_error(&paths.ca, error.to_string()))?;
    if ca_certs.is_empty() {
        return Err(TlsSetupError::NoCertificate { path: paths.ca.display().to_string() });
    }
    for cert in &ca_certs {
        roots
            .add(cert.clone())
            .map_err(|error| TlsSetupError::Rustls(format!("{}: {error}", paths.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| TlsSetupError::Rustls(error.to_string()))?;
    let verifier = Arc::new(DirectlyIssued::new(webpki, ca_certs));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsSetupError::Rustls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|error| TlsSetupError::Rustls(format!("{}: {error}", paths.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// An established mTLS connection; holds its slot of `max_connections` until dropped.
pub struct Conn {
    inner: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections until `shutdown`, handshakes them and sends established
/// connections to `established`. Returns when shut down or when `established` closes.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    counters: Arc<Counters>,
    established: mpsc::Sender<Result<Conn, io::Error>>,
    shutdown: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(limits.max_concurrent_handshakes.get() as usize));
    let connections = Arc::new(Semaphore::new(limits.max_connections.get() as usize));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            counters.connections_refused_limit.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection limit reached; closing");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // The whole handshake is bounded from accept, whatever it waits for.
        let deadline = Instant::now() + limits.handshake_timeout;
        let tls = tls.clone();
        let handshakes = handshakes.clone();
        let established = established.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = handshake(tcp, tls, &handshakes, deadline) => outcome,
            };
            match outcome {
                Ok(stream) => {
                    // The receiver only goes away at shutdown; the connection is dropped then.
                    let _ = established.send(Ok(Conn { inner: stream, _slot: slot })).await;
                }
                Err(failure) => {
                    counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, %failure, "tls handshake failed");
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Why a TLS handshake did not complete (logged at debug level and counted).
#[derive(Debug, thiserror::Error)]
enum HandshakeFailure {
    #[error("no complete ClientHello before the handshake deadline")]
    NoClientHello,
    #[error("no handshake slot free before the handshake deadline")]
    NoSlot,
    #[error("the handshake did not finish before its deadline")]
    Unfinished,
    #[error("refused: {0}")]
    Refused(io::Error),
}

/// One server handshake, all of it before `deadline`.
///
/// First the ClientHello is read without a handshake slot: a peer that sends nothing,
/// or half a ClientHello, costs a buffer and its connection slot until the deadline, and
/// never delays anyone else. Then a slot of `slots` is taken for the part that costs CPU
/// (key exchange and our signature, computed as the ClientHello is processed, then the
/// verification of the client's certificate) and held until the handshake ends.
async fn handshake(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    slots: &Semaphore,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
    let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = timeout_at(deadline, hello)
        .await
        .map_err(|_| HandshakeFailure::NoClientHello)?
        .map_err(HandshakeFailure::Refused)?;
    // The semaphore is never closed; an error could only mean "no slot".
    let _slot = timeout_at(deadline, slots.acquire())
        .await
        .map_err(|_| HandshakeFailure::NoSlot)?
        .map_err(|_| HandshakeFailure::NoSlot)?;
    timeout_at(deadline, start.into_stream(tls))
        .await
        .map_err(|_| HandshakeFailure::Unfinished)?
        .map_err(HandshakeFailure::Refused)
}

#[cfg(test)]
mod tests;
