//! `[sink.webhook]`: POSTs each alert event's JSON, exactly as stored in the queue (the
//! contract of DESIGN.md, "Alert event"), to a URL — a PSA's inbound webhook, a chat
//! bridge, your own receiver — signed with HMAC-SHA256.
//!
//! # The request
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Nightowl-Event-Id: <event id>          dedupe on this: delivery is at-least-once
//! X-Nightowl-Timestamp: <unix seconds>     when this attempt was sent
//! X-Nightowl-Signature: sha256=<hex>       HMAC-SHA256(secret, "<timestamp>.<body>")
//! <the event JSON>
//! ```
//! Any 2xx is success; 408, 429 (honouring `Retry-After`), 5xx and network errors are
//! retried; any other answer dead-letters the event (see `sinks::http`).
//!
//! # Verifying a request (receiver side)
//! 1. Take the raw body bytes as received (before any JSON parsing) and the
//!    `X-Nightowl-Timestamp` header.
//! 2. Compute `HMAC-SHA256(secret, timestamp + "." + body)` as lowercase hex and compare
//!    it with the signature header minus its `sha256=` prefix **in constant time**
//!    (`hmac.compare_digest` in Python, `crypto.timingSafeEqual` in Node,
//!    `hmac.Equal` in Go).
//! 3. Reject the request when the timestamp is more than 5 minutes away from your clock:
//!    a captured request then cannot be replayed later. Every retry is signed afresh
//!    with its own timestamp, so a legitimate retry is never too old.
//! 4. Dedupe on `X-Nightowl-Event-Id` (or the body's `id`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use ring::hmac;
use serde::Deserialize;

use super::http::{ClientSettings, HttpClient, HttpUrl, judge, read_secret, resolve};
use super::{BoxFuture, Delivery, DeliveryError, Sink, SinkSettings, SinkSpec};
use crate::config_error::KeyError;

/// Headers we set ourselves; `headers` may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-nightowl-event-id",
    "x-nightowl-timestamp",
    "x-nightowl-signature",
];

/// `[sink.webhook]`: POST every event's JSON to a URL, signed with HMAC-SHA256.
///
/// ```toml
/// [sink.webhook]
/// url = "https://psa.example.net/hooks/nightowl"
/// secret_file = "webhook.secret"
/// headers = { "X-Api-Key" = "…" }
/// timeout = "10s"
/// ca = "psa-ca.pem"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (required). `https://` is verified against the system's CA
    /// certificates plus `ca`; plain `http://` is allowed but warned about unless the
    /// host is loopback.
    pub url: Option<String>,
    /// File holding the HMAC-SHA256 signing secret (required; read at startup,
    /// surrounding whitespace ignored). Relative paths are taken from the config file's
    /// directory. Share it with the receiver, which verifies `X-Nightowl-Signature`.
    pub secret_file: Option<PathBuf>,
    /// Extra request headers, e.g. an API key the receiver wants. They cannot replace
    /// `Content-Type`, `Host` or the `X-Nightowl-*` headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Deadline for one request: connect, TLS, send, answer. Default "10s".
    pub timeout: Option<String>,
    /// Extra CA certificate(s) (PEM) to trust for `https://`, e.g. a private PKI's.
    pub ca: Option<PathBuf>,
}

/// Validates `[sink.webhook]`; an error's key is relative to the sub-table.
pub fn spec(settings: SinkSettings, raw: WebhookConfig, base: &Path) -> Result<SinkSpec, KeyError> {
    let url_text = raw
        .url
        .ok_or_else(|| KeyError::new("url".to_owned(), "missing: the URL to POST events to".to_owned()))?;
    let url = HttpUrl::parse(&url_text).map_err(|message| KeyError::new("url".to_owned(), message))?;
    let secret_file = raw.secret_file.ok_or_else(|| {
        KeyError::new(
            "secret_file".to_owned(),
            "missing: a file holding the HMAC signing secret (e.g. `openssl rand -hex 32 > webhook.secret`)"
                .to_owned(),
        )
    })?;
    let secret = read_secret(&resolve(base, &secret_file))
        .map_err(|message| KeyError::new("secret_file".to_owned(), message))?;
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in raw.headers {
        let key = format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| KeyError::new(key.clone(), format!("{name:?} is not a valid header name")))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(KeyError::new(key, format!("{name} is set by nightowl and cannot be replaced")));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| KeyError::new(key, "not a valid header value (control characters?)".to_owned()))?;
        headers.push((header, value));
    }
    let client = ClientSettings::validate(raw.timeout.as_deref(), raw.ca.as_deref(), base)?;
    let name = settings.name.clone();
    Ok(SinkSpec::new(settings, move |_context| {
        let webhook = Webhook {
            client: HttpClient::new(&name, &url, &client)?,
            url: url.clone(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            headers: headers.clone(),
        };
        Ok(Arc::new(webhook))
    }))
}

/// The running webhook sink.
pub struct Webhook {
    url: HttpUrl,
    client: HttpClient,
    key: hmac::Key,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// `sha256=<hex of HMAC-SHA256(key, "<timestamp>.<body>")>`.
pub fn signature(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut context = hmac::Context::with_key(key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256=");
    for byte in tag.as_ref() {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

impl Webhook {
    fn request_headers(
        &self,
        delivery: &Delivery,
        timestamp: i64,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, DeliveryError> {
        let value = |text: String| {
            HeaderValue::try_from(text)
                .map_err(|_| DeliveryError::permanent("event id is not a valid header value"))
        };
        let mut headers = self.headers.clone();
        headers.push((HeaderName::from_static("x-nightowl-event-id"), value(delivery.event.id.clone())?));
        headers.push((HeaderName::from_static("x-nightowl-timestamp"), value(timestamp.to_string())?));
        headers.push((
            HeaderName::from_static("x-nightowl-signature"),
            value(signature(&self.key, timestamp, delivery.body.as_bytes()))?,
        ));
        Ok(headers)
    }
}

impl Sink for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let timestamp = jiff::Timestamp::now().as_second();
            let headers = self.request_headers(delivery, timestamp)?;
            let body = Bytes::copy_from_slice(delivery.body.as_bytes());
            judge(self.client.post_json(&self.url, &headers, body).await).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests;
