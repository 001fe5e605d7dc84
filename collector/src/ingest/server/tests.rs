use std::num::NonZeroU32;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::pki::{CaDir, CaSigner, init_ca};

/// A TLS record header announcing a 512-byte ClientHello, and its first bytes.
const PARTIAL_CLIENT_HELLO: [u8; 11] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];

struct Server {
    addr: std::net::SocketAddr,
    ca: CaDir,
    counters: Arc<Counters>,
    established: mpsc::Receiver<Result<Conn, io::Error>>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// The real accept loop on loopback with a fresh CA.
async fn start(max_concurrent_handshakes: u32, handshake_timeout: Duration) -> Server {
    let dir = tempfile::tempdir().unwrap();
    init_ca(dir.path(), &[]).unwrap();
    let ca = CaDir::new(dir.path());
    let tls =
        server_tls_config(&TlsPaths { ca: ca.ca_cert(), cert: ca.collector_cert(), key: ca.collector_key() })
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_concurrent_handshakes: NonZeroU32::new(max_concurrent_handshakes).unwrap(),
        handshake_timeout,
        ..Limits::default()
    };
    let counters = Arc::new(Counters::default());
    let (sender, established) = mpsc::channel(16);
    let shutdown = CancellationToken::new();
    tokio::spawn(accept_loop(listener, tls, limits, counters.clone(), sender, shutdown.clone()));
    Server { addr, ca, counters, established, shutdown, _dir: dir }
}

/// `count` connections that never complete a ClientHello: even ones send a partial
/// one, odd ones nothing.
async fn half_open(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(count);
    for index in 0..count {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if index % 2 == 0 {
            tcp.write_all(&PARTIAL_CLIENT_HELLO).await.unwrap();
        }
        connections.push(tcp);
    }
    connections
}

/// A real agent's mTLS handshake (certificate issued by the test CA).
async fn agent_handshake(server: &Server) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (cert_pem, key_pem) = CaSigner::load(server.ca.dir()).unwrap().agent_pem("acme", "srv-01").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(server.ca.ca_cert()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    let tcp = TcpStream::connect(server.addr).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Regression (abuse drill: a fresh agent waited 28 s during a half-open flood): the
/// half-open connections used to hold every handshake slot for the whole timeout,
/// and the agent queued for a slot behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_does_not_delay_a_real_handshake() {
    let handshake_timeout = Duration::from_secs(30);
    let mut server = start(4, handshake_timeout).await;
    // 150 × the slots: before the fix, the agent behind them waited 150 timeouts.
    let flood = half_open(server.addr, 600).await;

    let started = Instant::now();
    let budget = handshake_timeout / 2;
    let _client = timeout_at(started + budget, agent_handshake(&server))
        .await
        .expect("the agent's handshake finishes well before the half-open ones time out")
        .expect("the agent's handshake succeeds");
    let conn = timeout_at(started + budget, server.established.recv())
        .await
        .expect("the server hands the connection on well before the half-open ones time out")
        .expect("accept loop running")
        .expect("an established connection");
    assert!(
        conn.inner.get_ref().1.peer_certificates().is_some_and(|chain| !chain.is_empty()),
        "the established connection carries the verified client certificate"
    );
    // The flood is still waiting: nothing timed out, none of it got through.
    assert_eq!(server.counters.handshakes_failed.load(Ordering::Relaxed), 0);
    assert!(server.established.try_recv().is_err(), "a half-open connection was established");
    drop(flood);
    server.shutdown.cancel();
}

/// The deadline still closes connections that never send a ClientHello, and counts
/// them as failed handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_and_counted_at_the_deadline() {
    let handshake_timeout = Duration::from_millis(500);
    let server = start(4, handshake_timeout).await;
    let started = Instant::now();
    let mut flood = half_open(server.addr, 10).await;
    for tcp in &mut flood {
        let mut buffer = [0u8; 64];
        let read = timeout_at(started + Duration::from_secs(10), tcp.read(&mut buffer))
            .await
            .expect("the collector closes a half-open connection at its deadline");
        assert!(matches!(read, Ok(0) | Err(_)), "closed without a TLS answer: {read:?}");
    }
    assert!(started.elapsed() >= handshake_timeout, "closed before the deadline");
    crate::sinks::testing::eventually("10 failed handshakes counted", 10, || {
        (server.counters.handshakes_failed.load(Ordering::Relaxed) == 10).then_some(())
    })
    .await;
    server.shutdown.cancel();
}
