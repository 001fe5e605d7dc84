//! `http`: one `GET` per probe over a new connection (HTTP/1.1, hyper's connection API;
//! no pool, so every probe pays the TCP — and for https the TLS — handshake, as a new
//! visitor does). Time: from the start of the connect to the response headers. Up to
//! [`BODY_CAP`] bytes of body are read (until the probe's deadline), the rest is
//! dropped with the connection. Redirects are not followed: a 3xx is the answer.
//!
//! https: rustls with the `ring` provider; trusted roots are the system's
//! (rustls-native-certs) plus the optional `ca` file. The certificate verifier is
//! webpki's, wrapped to note the end-entity certificate's notAfter before it judges, so
//! `tls_expiry_days` is known even for an expired or untrusted certificate (the probe
//! itself is then lost, with the TLS error as reason).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{Reply, Schedule, Series, no_answer, run_series};

/// Body bytes read per response at most.
const BODY_CAP: usize = 16 * 1024;

const USER_AGENT_VALUE: &str = concat!("nightowl-agent/", env!("CARGO_PKG_VERSION"));

/// A validated `http://` or `https://` target.
#[derive(Debug)]
pub(crate) struct HttpTarget {
    https: bool,
    /// Without brackets for IPv6, as resolved and as the TLS server name.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    path_and_query: String,
}

impl HttpTarget {
    pub(super) fn is_https(&self) -> bool {
        self.https
    }

    pub(super) fn host(&self) -> &str {
        &self.host
    }

    pub(super) fn port(&self) -> u16 {
        self.port
    }
}

pub(super) fn parse_target(target: &str) -> Result<HttpTarget, String> {
    let uri: Uri =
        target.trim().parse().map_err(|error| format!("target: {target:?} is not a URL: {error}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("target: {target:?}: use an http:// or https:// URL")),
    };
    let authority = uri.authority().ok_or_else(|| format!("target: {target:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("target: {target:?}: user names or passwords in the URL are not supported"));
    }
    let host = authority.host();
    let host = host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host).to_owned();
    if host.is_empty() {
        return Err(format!("target: {target:?} has no host"));
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    if https {
        ServerName::try_from(host.clone()).map_err(|error| {
            format!("target: {target:?}: {host:?} is not a valid TLS server name: {error}")
        })?;
    }
    let path_and_query = uri.path_and_query().map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned());
    Ok(HttpTarget { https, host, port, authority: authority.as_str().to_owned(), path_and_query })
}

/// The TLS client of an https check: built once, then shared by its probes.
pub(crate) struct TlsClient {
    connector: TlsConnector,
    verifier: Arc<RecordingVerifier>,
}

impl TlsClient {
    /// Loads the system's roots and `ca` (file I/O: on the blocking pool).
    pub(super) async fn load(ca: Option<PathBuf>) -> Result<TlsClient, String> {
        crate::blocking::spawn("loading trust roots", move || TlsClient::load_blocking(ca))
            .await
            .map_err(|error| format!("tls: loading the trust roots failed: {error}"))?
    }

    fn load_blocking(ca: Option<PathBuf>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &ca {
            let shown = path.display();
            let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|error| format!("ca: cannot read {shown}: {error}"))?
                .collect::<Result<_, _>>()
                .map_err(|error| format!("ca: {shown} is not a PEM certificate file: {error}"))?;
            if certificates.is_empty() {
                return Err(format!("ca: {shown} holds no certificate"));
            }
            for certificate in certificates {
                roots
                    .add(certificate)
                    .map_err(|error| format!("ca: {shown}: unusable certificate: {error}"))?;
            }
        }
        if roots.is_empty() {
            let why = native.errors.first().map(|error| format!(" ({error})")).unwrap_or_default();
            return Err(format!(
                "tls: no trusted roots: the system's CA certificates could not be loaded{why}; \
                 install them or set ca"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|error| format!("tls: cannot build the certificate verifier: {error}"))?;
        let verifier = Arc::new(RecordingVerifier { inner: webpki, not_after: Mutex::new(None) });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient { connector: TlsConnector::from(Arc::new(config)), verifier })
    }
}

pub(super) async fn measure(
    target: Arc<HttpTarget>,
    address: std::net::SocketAddr,
    tls: Option<Arc<TlsClient>>,
    schedule: Schedule,
) -> Series {
    if let Some(tls) = &tls {
        tls.verifier.take_not_after();
    }
    let timeout = schedule.timeout;
    let outcomes = run_series(schedule, |_seq, deadline| {
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let outcome =
                tokio::time::timeout_at(deadline, get_once(&target, address, tls.as_deref(), deadline));
            outcome.await.unwrap_or_else(|_| Err(no_answer(timeout)))
        }
    })
    .await;
    let (mut series, statuses) = Series::new(outcomes);
    if let Some(status) = statuses.last() {
        series.extra.insert("status_code".into(), f64::from(*status));
    }
    if let Some(not_after) = tls.as_ref().and_then(|tls| tls.verifier.take_not_after()) {
        series.extra.insert("tls_expiry_days".into(), days_until(not_after, SystemTime::now()));
    }
    series
}

/// Days from `now` until the unix time `not_after` (negative once passed).
pub(super) fn days_until(not_after: i64, now: SystemTime) -> f64 {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    };
    (not_after as f64 - now) / 86_400.0
}

async fn get_once(
    target: &HttpTarget,
    address: std::net::SocketAddr,
    tls: Option<&TlsClient>,
    deadline: Instant,
) -> Result<Reply<u16>, String> {
    let started = Instant::now();
    let stream = TcpStream::connect(address).await.map_err(|error| format!("connect: {error}"))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, target, started, deadline).await,
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|error| format!("tls: {:?}: {error}", target.host))?;
            let stream =
                tls.connector.connect(name, stream).await.map_err(|error| format!("tls: {error}"))?;
            exchange(stream, target, started, deadline).await
        }
    }
}

/// Sends the request on a fresh HTTP/1.1 connection; the connection is driven in this
/// same future and closed when it returns.
async fn exchange<S>(
    stream: S,
    target: &HttpTarget,
    started: Instant,
    deadline: Instant,
) -> Result<Reply<u16>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|error| format!("http: {error}"))?;
    let request = Request::get(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .body(Empty::new())
        .map_err(|error| format!("http: cannot build the request: {error}"))?;
    let request_and_headers = async {
        let response = sender.send_request(request).await.map_err(|error| format!("http: {error}"))?;
        let rtt = started.elapsed();
        let status = response.status().as_u16();
        // Best effort: a slow or broken body does not undo the answer already timed.
        let _ = tokio::time::timeout_at(deadline, drain(response.into_body())).await;
        Ok(Reply { rtt, extra: status })
    };
    // The connection's errors reach `send_request`; once it ends it needs no polling.
    let drive = async {
        let _ = connection.await;
        std::future::pending().await
    };
    tokio::select! {
        result = request_and_headers => result,
        result = drive => result,
    }
}

/// Reads up to [`BODY_CAP`] bytes of body and drops the rest.
async fn drain(mut body: Incoming) {
    let mut read = 0;
    while read < BODY_CAP {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => break,
        }
    }
}

/// webpki's verifier, noting the end-entity certificate's notAfter (unix seconds).
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    not_after: Mutex<Option<i64>>,
}

impl RecordingVerifier {
    fn take_not_after(&self) -> Option<i64> {
        self.not_after.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(not_after) = not_after(end_entity.as_ref()) {
            *self.not_after.lock().unwrap_or_else(PoisonError::into_inner) = Some(not_after);
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The notAfter of a DER X.509 certificate, in unix seconds; `None` when `der` is not
/// one. Only the path to the field is walked (RFC 5280 4.1: Certificate → tbsCertificate
/// → [version], serialNumber, signature, issuer → validity → notBefore, notAfter), so
/// this needs no X.509 library: the agent's program text is resident memory, and a full
/// parser was a sizeable part of it for one date (docs/performance.md).
pub(super) fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0; // [0] EXPLICIT, constructed
    const INTEGER: u8 = 0x02;
    let (certificate, _) = der_element(der, SEQUENCE)?;
    let (tbs, _) = der_element(certificate, SEQUENCE)?;
    let rest = match tbs.first() {
        Some(&VERSION) => der_element(tbs, VERSION)?.1,
        _ => tbs,
    };
    let (_serial, rest) = der_element(rest, INTEGER)?;
    let (_signature, rest) = der_element(rest, SEQUENCE)?;
    let (_issuer, rest) = der_element(rest, SEQUENCE)?;
    let (validity, _) = der_element(rest, SEQUENCE)?;
    let (_, _not_before, after_not_before) = der_any(validity)?;
    let (tag, not_after, _) = der_any(after_not_before)?;
    der_time(tag, not_after)
}

/// The content of the DER element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, content, rest) = der_any(input)?;
    (found == tag).then_some((content, rest))
}

/// Tag, content and rest of the DER element at the start of `input` (single-byte tags,
/// definite lengths of up to 4 bytes: what certificates use).
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |length, &byte| (length << 8) | usize::from(byte))
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the two
/// forms RFC 5280 allows, as unix seconds.
fn der_time(tag: u8, content: &[u8]) -> Option<i64> {
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    let digits = content.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        digits[range].iter().fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'))
    };
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let year = number(0..2);
            (if year >= 50 { 1900 + year } else { 2000 + year }, 2)
        }
        (GENERALIZED_TIME, 14) => (number(0..4), 4),
        _ => return None,
    };
    let (month, day) = (number(rest..rest + 2), number(rest + 2..rest + 4));
    let (hour, minute, second) =
        (number(rest + 4..rest + 6), number(rest + 6..rest + 8), number(rest + 8..rest + 10));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}
