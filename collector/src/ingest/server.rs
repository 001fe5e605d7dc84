//! The listening side: TCP accept → TLS handshake (our own rustls acceptor) → tonic.
//!
//! We run the TLS acceptor ourselves instead of tonic's `ServerTlsConfig` because that
//! one has no handshake concurrency bound, no per-connection cap and no hook for
//! revocation or certificate reload. Here:
//! - at most `max_concurrent_handshakes` handshakes run at once, each bounded by
//!   `handshake_timeout` (slow or half-open clients cannot pile up);
//! - at most `max_connections` established connections; beyond that new TCP connections
//!   are closed at once (and counted) rather than queued;
//! - a client certificate chaining to our CA is REQUIRED at the handshake; identity is
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
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use super::Counters;
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
    for cert in ca_certs {
        roots.add(cert).map_err(|error| TlsSetupError::Rustls(format!("{}: {error}", paths.ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| TlsSetupError::Rustls(error.to_string()))?;
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
    let acceptor = TlsAcceptor::from(tls);
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
        let acceptor = acceptor.clone();
        let handshakes = handshakes.clone();
        let established = established.clone();
        let counters = counters.clone();
        let timeout = limits.handshake_timeout;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let Ok(_handshake) = handshakes.acquire_owned().await else { return };
            let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp));
            let tls = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = handshake => outcome,
            };
            match tls {
                Ok(Ok(stream)) => {
                    // The receiver only goes away at shutdown; the connection is dropped then.
                    let _ = established.send(Ok(Conn { inner: stream, _slot: slot })).await;
                }
                Ok(Err(error)) => {
                    counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, %error, "tls handshake refused");
                }
                Err(_) => {
                    counters.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "tls handshake timed out");
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}
