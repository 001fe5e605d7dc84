//! The HTTP client of the HTTP sinks (webhook, PagerDuty, Alertmanager): one JSON `POST`
//! per call, and ONE place that turns an HTTP outcome into a [`DeliveryError`].
//!
//! # What it does
//! - HTTP/1.1 over a new TCP connection per request (hyper's connection API; no pool:
//!   alert traffic is a trickle, and a fresh connection never trips over a peer's idle
//!   timeout). `https://` runs over rustls with the `ring` provider; trusted roots are the
//!   system's (rustls-native-certs) plus the sink's optional `ca` file. Redirects are not
//!   followed.
//! - One deadline per request (default [`DEFAULT_TIMEOUT`]) covering connect, TLS,
//!   sending and reading the answer. At most [`BODY_CAP`] bytes of the answer's body are
//!   kept; the rest is dropped with the connection.
//!
//! # Outcomes ([`judge`])
//! | outcome | result |
//! |---|---|
//! | 2xx | delivered |
//! | connect, TLS, I/O errors, timeout | retryable |
//! | 408, 429, 5xx | retryable, with the peer's `Retry-After` (seconds or HTTP-date) |
//! | anything else (other 4xx, 3xx) | permanent: status and an excerpt of the body |
//!
//! Plain `http://` stays allowed (local receivers, an Alertmanager on the same host) but
//! a warning is logged at startup when it goes to a host that is not loopback.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::DeliveryError;
use crate::config_error::KeyError;

/// Per-request deadline unless the sink sets `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of an answer's body kept at most.
pub const BODY_CAP: usize = 64 * 1024;
/// Characters of a refused answer's body quoted in the error (and so in dead letters).
const EXCERPT_CHARS: usize = 300;

const USER_AGENT_VALUE: &str = concat!("nightowl-collector/", env!("CARGO_PKG_VERSION"));

/// A validated `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUrl {
    https: bool,
    /// Without brackets for IPv6: what is resolved, and the TLS server name.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    path: String,
    /// With its `?`, or empty.
    query: String,
}

impl HttpUrl {
    /// Parses `text`; the error says what is wrong (the caller names the key).
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        let uri: Uri = text.trim().parse().map_err(|error| format!("{text:?} is not a URL: {error}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{text:?}: use an http:// or https:// URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{text:?}: user names or passwords in the URL are not supported"));
        }
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        if https {
            ServerName::try_from(host.to_owned())
                .map_err(|error| format!("{text:?}: {host:?} is not a valid TLS server name: {error}"))?;
        }
        Ok(HttpUrl {
            https,
            host: host.to_owned(),
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path: if uri.path().is_empty() { "/".to_owned() } else { uri.path().to_owned() },
            query: uri.query().map(|query| format!("?{query}")).unwrap_or_default(),
        })
    }

    /// This URL with `suffix` (starting with `/`) appended to its path, unless the path
    /// already ends with it: `https://events.pagerduty.com` + `/v2/enqueue`.
    pub fn join(&self, suffix: &str) -> HttpUrl {
        let base = self.path.trim_end_matches('/');
        if base.ends_with(suffix) {
            return HttpUrl { path: base.to_owned(), ..self.clone() };
        }
        HttpUrl { path: format!("{base}{suffix}"), ..self.clone() }
    }

    pub fn is_https(&self) -> bool {
        self.https
    }

    /// A loopback address or `localhost`: plain http there never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|address| address.is_loopback())
    }

    /// `scheme://authority`: what logs and errors show (the path may hold a token).
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    fn path_and_query(&self) -> String {
        format!("{}{}", self.path, self.query)
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(formatter, "{scheme}://{}{}{}", self.authority, self.path, self.query)
    }
}

/// The client settings every HTTP sink shares (`timeout`, `ca`), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub timeout: Duration,
    /// The extra trusted CA certificates (`ca`), read at validation.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl ClientSettings {
    /// Validates `timeout` and reads `ca` (relative to `base`); errors are
    /// `(key, message)` relative to the kind's sub-table.
    pub fn validate(
        timeout: Option<&str>,
        ca: Option<&Path>,
        base: &Path,
    ) -> Result<ClientSettings, KeyError> {
        let timeout = match timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => match humantime::parse_duration(text) {
                Ok(duration) if !duration.is_zero() => duration,
                Ok(_) => return Err(KeyError::new("timeout", "must be longer than zero")),
                Err(error) => {
                    return Err(KeyError::new(
                        "timeout",
                        format!("{text:?} is not a duration ({error}): use e.g. \"10s\""),
                    ));
                }
            },
        };
        let extra_roots = match ca {
            None => Vec::new(),
            Some(path) => {
                read_ca(&resolve(base, path)).map_err(|message| KeyError::new("ca".to_owned(), message))?
            }
        };
        Ok(ClientSettings { timeout, extra_roots })
    }
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings { timeout: DEFAULT_TIMEOUT, extra_roots: Vec::new() }
    }
}

/// `path` against the config file's directory, unless absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_owned() } else { base.join(path) }
}

/// Reads a secret (an HMAC key, a routing key) from `path`, without surrounding
/// whitespace (files written by `echo` end in a newline).
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_owned())
}

fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|error| format!("cannot read {shown}: {error}"))?
        .collect::<Result<_, _>>()
        .map_err(|error| format!("{shown} is not a PEM certificate file: {error}"))?;
    if certificates.is_empty() {
        return Err(format!("{shown} holds no certificate"));
    }
    // Fail now, not on the first alert.
    let mut roots = RootCertStore::empty();
    for certificate in &certificates {
        roots.add(certificate.clone()).map_err(|error| format!("{shown}: unusable certificate: {error}"))?;
    }
    Ok(certificates)
}

/// What came back: status, headers and up to [`BODY_CAP`] bytes of body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The HTTP client of one sink, for one URL's scheme.
pub struct HttpClient {
    tls: Option<TlsConnector>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpClient")
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpClient {
    /// A client for `url` (TLS set up when it is https: the system's roots are loaded
    /// here, once). Warns when `url` is plain http to a host that is not loopback.
    pub fn new(sink: &str, url: &HttpUrl, settings: &ClientSettings) -> Result<HttpClient, String> {
        if !url.is_https() && !url.is_loopback() {
            tracing::warn!(
                sink,
                url = %url.origin(),
                "plain http to a host that is not loopback: alert events and any secret in them travel unencrypted; use https"
            );
        }
        if !url.is_https() && !settings.extra_roots.is_empty() {
            tracing::warn!(sink, url = %url.origin(), "ca is set but the url is plain http: it is not used");
        }
        let tls = if url.is_https() { Some(tls_connector(&settings.extra_roots)?) } else { None };
        Ok(HttpClient { tls, timeout: settings.timeout })
    }

    /// POSTs `body` as `application/json` to `url` with `headers`, within the timeout.
    /// Errors are transport errors (the caller retries them); any HTTP answer is `Ok`.
    pub async fn post_json(
        &self,
        url: &HttpUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        self.send(Method::POST, url, headers, body).await
    }

    /// GETs `url` (tests read what a real peer stored).
    #[cfg(test)]
    pub async fn get(&self, url: &HttpUrl) -> Result<HttpResponse, String> {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    async fn send(
        &self,
        method: Method,
        url: &HttpUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        // Errors name the origin only: webhook URLs often carry a token in their path.
        let exchange = self.send_once(method, url, headers, body);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.map_err(|error| format!("{}: {error}", url.origin())),
            Err(_) => Err(format!("{}: no answer within {:?}", url.origin(), self.timeout)),
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &HttpUrl,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        let mut request = Request::builder().method(method.clone()).uri(url.path_and_query());
        request = request.header(HOST, url.authority.as_str()).header(USER_AGENT, USER_AGENT_VALUE);
        if method == Method::POST {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let mut request =
            request.body(Full::new(body)).map_err(|error| format!("cannot build the request: {error}"))?;
        for (name, value) in headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let stream = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => exchange(stream, request).await,
            Some(connector) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|error| format!("tls: {:?}: {error}", url.host))?;
                let stream =
                    connector.connect(name, stream).await.map_err(|error| format!("tls: {error}"))?;
                exchange(stream, request).await
            }
        }
    }
}

fn tls_connector(extra_roots: &[CertificateDer<'static>]) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    for certificate in extra_roots {
        roots.add(certificate.clone()).map_err(|error| format!("ca: unusable certificate: {error}"))?;
    }
    if roots.is_empty() {
        let why = native.errors.first().map(|error| format!(" ({error})")).unwrap_or_default();
        return Err(format!(
            "tls: no trusted roots: the system's CA certificates could not be loaded{why}; install them or set ca"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("tls: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One request on a fresh HTTP/1.1 connection, driven in this future and closed when
/// it returns.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<HttpResponse, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|error| format!("http: {error}"))?;
    let request_and_answer = async {
        let response = sender.send_request(request).await.map_err(|error| format!("http: {error}"))?;
        let (parts, body) = response.into_parts();
        let body = read_capped(body).await.map_err(|error| format!("http: reading the answer: {error}"))?;
        Ok(HttpResponse { status: parts.status, headers: parts.headers, body })
    };
    // The connection's errors reach `send_request`; once it ends it needs no polling.
    let drive = async {
        let _ = connection.await;
        std::future::pending().await
    };
    tokio::select! {
        result = request_and_answer => result,
        result = drive => result,
    }
}

/// Reads up to [`BODY_CAP`] bytes of `body`; the rest is dropped with the connection.
async fn read_capped(mut body: Incoming) -> Result<Bytes, hyper::Error> {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < BODY_CAP {
        match body.frame().await {
            Some(frame) => {
                if let Some(data) = frame?.data_ref() {
                    let room = BODY_CAP - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            None => break,
        }
    }
    Ok(Bytes::from(kept))
}

/// The one mapping from an HTTP exchange to a delivery outcome (table in the module doc).
pub fn judge(result: Result<HttpResponse, String>) -> Result<HttpResponse, DeliveryError> {
    let response = result.map_err(DeliveryError::retryable)?;
    let status = response.status;
    if status.is_success() {
        return Ok(response);
    }
    let excerpt = excerpt(&response.body);
    let reason =
        if excerpt.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {excerpt}") };
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        let retry_after = retry_after(&response.headers, jiff::Timestamp::now());
        Err(DeliveryError::Retryable { reason, retry_after })
    } else {
        Err(DeliveryError::Permanent { reason })
    }
}

/// The start of a body as one line of text, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut words = text.split_whitespace();
    let mut line = String::new();
    for word in words.by_ref() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        if line.chars().count() > EXCERPT_CHARS {
            break;
        }
    }
    if line.chars().count() > EXCERPT_CHARS {
        line = line.chars().take(EXCERPT_CHARS).collect();
        line.push('…');
    }
    line
}

/// A `Retry-After` header: delay-seconds, or an HTTP-date (`Wed, 21 Oct 2015 07:28:00
/// GMT`) taken relative to `now` (a date in the past means "now").
pub fn retry_after(headers: &HeaderMap, now: jiff::Timestamp) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = now.duration_until(at);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
pub(crate) mod receiver;
#[cfg(test)]
mod tests;
