//! NATS JetStream sink: every event is published to a JetStream stream, and counts as
//! delivered only when the stream acknowledged storing it.
//!
//! ```toml
//! [[sink]]
//! name = "bus"
//! [sink.nats]
//! url = "nats://10.0.0.5:4222"      # several servers: "nats://a:4222,nats://b:4222"
//! stream = "NIGHTOWL_ALERTS"        # created if missing (subjects "<subject_prefix>.>")
//! subject_prefix = "nightowl.alerts"
//! ```
//!
//! # What is published
//! Subject `<subject_prefix>.<tenant>.<severity>` (`nightowl.alerts.acme.P2`; a `.` in a
//! tenant id becomes `_`, because a dot separates subject tokens), header `Nats-Msg-Id`
//! = the event id, header `Nats-Expected-Stream` = the stream, body = the event JSON as
//! stored in the queue.
//!
//! # Invariants
//! 1. **Only the publish ack counts.** The NATS client buffers outgoing messages while it
//!    is disconnected and flushes them after a reconnect; a message handed to that buffer
//!    is not delivered. So the sink publishes only on a connected client, then waits for
//!    JetStream's ack (at most `timeout`); no ack is a retryable failure and the runner's
//!    cursor stays put.
//! 2. **No duplicates from retries.** A retry publishes the same `Nats-Msg-Id`; the stream
//!    drops copies within its `duplicate_window`. A message that may still be in flight
//!    (ack timed out, connection lost) is retried after a short pause rather than the
//!    runner's growing backoff, so the retry lands inside the window.
//! 3. **An outage holds only this sink.** The connection is opened on first use and the
//!    client reconnects on its own; while it is down each delivery waits at most `timeout`
//!    for it and then fails as retryable. Events stay in the embedded queue; ingest and
//!    other sinks do not wait for NATS.
//! 4. **The stream is ours only if it was missing.** An existing stream (its subjects,
//!    retention, replicas) is left exactly as its operator configured it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::{ConnectOptions, ServerAddr};
use serde::Deserialize;

use super::{BoxFuture, Delivery, DeliveryError, Sink, SinkSettings, SinkSpec};
use crate::config_error::KeyError;

#[cfg(test)]
mod tests;

const DEFAULT_STREAM: &str = "NIGHTOWL_ALERTS";
const DEFAULT_SUBJECT_PREFIX: &str = "nightowl.alerts";
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying a publish whose message may still reach the stream: short, so
/// the retry falls inside the duplicate window (see invariant 2).
const RETRY_SOON: Duration = Duration::from_secs(1);
/// How often a delivery looks whether the client has reconnected.
const CONNECTED_POLL: Duration = Duration::from_millis(20);
/// Detects a silently dead connection (no RST) within about two intervals.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// `[sink.nats]`: publish every alert event to a NATS JetStream stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URL (`nats://host:4222`, or `tls://host:4222` to require TLS); several
    /// servers of one cluster separated by commas. Required.
    url: Option<String>,
    /// A `.creds` file (user JWT + nkey seed) for decentralised auth. Optional; not
    /// together with `token_file`.
    credentials_file: Option<PathBuf>,
    /// A file holding an auth token (surrounding whitespace ignored). Optional.
    token_file: Option<PathBuf>,
    /// PEM CA certificate(s) to verify the server with; setting it requires TLS. Default:
    /// plain TCP unless the URL says `tls://` (then the system roots).
    ca: Option<PathBuf>,
    /// The JetStream stream; created if missing, left alone if it exists. Default
    /// `NIGHTOWL_ALERTS`.
    stream: Option<String>,
    /// Subjects are `<subject_prefix>.<tenant>.<severity>`. Default `nightowl.alerts`.
    subject_prefix: Option<String>,
    /// Retention of a stream this sink creates. Default `7d`.
    max_age: Option<String>,
    /// Dedup window (`Nats-Msg-Id`) of a stream this sink creates. Default `2m`.
    duplicate_window: Option<String>,
    /// How long a delivery waits for a connection, and then for the publish ack.
    /// Default `5s`.
    timeout: Option<String>,
}

/// A secret read from a file; never printed.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
enum Auth {
    None,
    Token(Secret),
    /// The `.creds` file's contents.
    Credentials(Secret),
}

/// The validated `[sink.nats]`.
#[derive(Debug, Clone)]
struct Settings {
    servers: Vec<ServerAddr>,
    /// For messages.
    url: String,
    auth: Auth,
    ca: Option<PathBuf>,
    stream: String,
    subject_prefix: String,
    max_age: Duration,
    duplicate_window: Duration,
    timeout: Duration,
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { base.join(path) }
}

fn duration(key: &str, text: Option<String>, default: Duration) -> Result<Duration, KeyError> {
    let Some(text) = text else { return Ok(default) };
    match humantime::parse_duration(&text) {
        Ok(value) if !value.is_zero() => Ok(value),
        Ok(_) => Err(KeyError::new(key, "must be longer than zero")),
        Err(error) => Err(KeyError::new(key, format!("{text:?} is not a duration ({error})"))),
    }
}

fn read_secret(key: &str, path: &Path) -> Result<Secret, KeyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| KeyError::new(key.to_owned(), format!("cannot read {}: {error}", path.display())))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyError::new(key.to_owned(), format!("{} is empty", path.display())));
    }
    Ok(Secret(text.to_owned()))
}

/// A stream name as NATS accepts it (no whitespace, dots, wildcards or path separators).
fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// Dot-separated tokens of `[A-Za-z0-9_-]`.
fn valid_subject_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|token| {
        !token.is_empty()
            && token.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    })
}

/// Validates `[sink.nats]`; error keys are relative to the sub-table.
pub(super) fn spec(settings: SinkSettings, raw: NatsConfig, base: &Path) -> Result<SinkSpec, KeyError> {
    let Some(url) = raw.url else {
        return Err(KeyError::new("url", "is required (e.g. \"nats://127.0.0.1:4222\")"));
    };
    let mut servers = Vec::new();
    for part in url.split(',').map(str::trim) {
        let server: ServerAddr =
            part.parse().map_err(|error| KeyError::new("url".to_owned(), format!("{part:?}: {error}")))?;
        if !matches!(server.scheme(), "nats" | "tls") {
            return Err(KeyError::new("url", format!("{part:?}: use nats:// or tls://")));
        }
        servers.push(server);
    }
    let auth = match (raw.credentials_file, raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(KeyError::new("token_file", "give credentials_file or token_file, not both"));
        }
        (Some(path), None) => {
            let creds = read_secret("credentials_file", &resolve(base, path))?;
            // Parse now, so a broken file is a config error and not a retry loop.
            ConnectOptions::with_credentials(&creds.0).map_err(|error| {
                KeyError::new("credentials_file".to_owned(), format!("not a NATS .creds file: {error}"))
            })?;
            Auth::Credentials(creds)
        }
        (None, Some(path)) => Auth::Token(read_secret("token_file", &resolve(base, path))?),
        (None, None) => Auth::None,
    };
    let ca = raw.ca.map(|path| resolve(base, path));
    if let Some(ca) = &ca {
        std::fs::metadata(ca)
            .map_err(|error| KeyError::new("ca".to_owned(), format!("{}: {error}", ca.display())))?;
    }
    let stream = raw.stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    if !valid_stream_name(&stream) {
        return Err(KeyError::new("stream", format!("{stream:?}: use letters, digits, '_' and '-'")));
    }
    let subject_prefix = raw.subject_prefix.unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.to_owned());
    if !valid_subject_prefix(&subject_prefix) {
        return Err(KeyError::new(
            "subject_prefix",
            format!("{subject_prefix:?}: use dot-separated tokens of letters, digits, '_' and '-'"),
        ));
    }
    let max_age = duration("max_age", raw.max_age, DEFAULT_MAX_AGE)?;
    let duplicate_window = duration("duplicate_window", raw.duplicate_window, DEFAULT_DUPLICATE_WINDOW)?;
    if duplicate_window > max_age {
        return Err(KeyError::new("duplicate_window", "must not be longer than max_age"));
    }
    let timeout = duration("timeout", raw.timeout, DEFAULT_TIMEOUT)?;
    let nats = Arc::new(Settings {
        servers,
        url,
        auth,
        ca,
        stream,
        subject_prefix,
        max_age,
        duplicate_window,
        timeout,
    });
    Ok(SinkSpec::new(settings, move |_context| {
        Ok(Arc::new(NatsSink::new(nats.as_ref().clone())) as Arc<dyn Sink>)
    }))
}

/// Publishes to JetStream (see the module doc).
pub struct NatsSink {
    settings: Settings,
    /// Opened on the first delivery; reconnects on its own from then on.
    connection: tokio::sync::Mutex<Option<(async_nats::Client, jetstream::Context)>>,
    /// The stream exists (checked or created since the last "no stream" answer).
    stream_ready: AtomicBool,
    /// The client's last complaint (refused connection, auth), for failure reasons.
    last_event: Arc<StdMutex<Option<String>>>,
}

impl NatsSink {
    fn new(settings: Settings) -> Self {
        Self {
            settings,
            connection: tokio::sync::Mutex::new(None),
            stream_ready: AtomicBool::new(false),
            last_event: Arc::new(StdMutex::new(None)),
        }
    }

    fn options(&self) -> Result<ConnectOptions, DeliveryError> {
        let last_event = self.last_event.clone();
        let mut options = match &self.settings.auth {
            Auth::None => ConnectOptions::new(),
            Auth::Token(token) => ConnectOptions::with_token(token.0.clone()),
            Auth::Credentials(creds) => ConnectOptions::with_credentials(&creds.0)
                .map_err(|error| DeliveryError::permanent(format!("nats: credentials: {error}")))?,
        }
        .name("nightowl-collector")
        .connection_timeout(self.settings.timeout)
        .ping_interval(PING_INTERVAL)
        // Dial in the background and keep dialing: deliveries wait for the connection
        // (bounded by `timeout`) instead of failing on the first refused dial.
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let last_event = last_event.clone();
            async move {
                let text = match event {
                    async_nats::Event::Connected => None,
                    other => Some(other.to_string()),
                };
                *last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = text;
            }
        });
        if let Some(ca) = &self.settings.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(options)
    }

    /// The client and JetStream context, created on first use (no I/O here: the client
    /// dials in the background).
    async fn connection(&self) -> Result<(async_nats::Client, jetstream::Context), DeliveryError> {
        let mut slot = self.connection.lock().await;
        if let Some((client, context)) = slot.as_ref() {
            return Ok((client.clone(), context.clone()));
        }
        let client = self.options()?.connect(self.settings.servers.clone()).await.map_err(|error| {
            DeliveryError::retryable(format!("nats: cannot connect to {}: {error}", self.settings.url))
        })?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(self.settings.timeout);
        *slot = Some((client.clone(), context.clone()));
        Ok((client, context))
    }

    /// Waits (at most `timeout`) until the client is connected; never hands a message to
    /// a disconnected client's buffer.
    async fn wait_connected(&self, client: &async_nats::Client) -> Result<(), DeliveryError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            let state = client.connection_state();
            if state == State::Connected {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let last = self.last_event.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
                return Err(DeliveryError::Retryable {
                    reason: format!(
                        "nats: not connected to {} ({state}{}{})",
                        self.settings.url,
                        if last.is_some() { "; last: " } else { "" },
                        last.unwrap_or_default()
                    ),
                    // Nothing was sent; the wait itself paces the retries, so come back
                    // soon and publish as soon as the client is connected again.
                    retry_after: Some(RETRY_SOON),
                });
            }
            tokio::time::sleep(CONNECTED_POLL).await;
        }
    }

    /// Makes sure the stream exists: creates it if missing, leaves an existing one alone.
    async fn ensure_stream(&self, context: &jetstream::Context) -> Result<(), DeliveryError> {
        if self.stream_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let settings = &self.settings;
        let config = jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            max_age: settings.max_age,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        let stream = context.get_or_create_stream(config).await.map_err(|error| {
            DeliveryError::retryable(format!(
                "nats: cannot find or create stream {}: {error}",
                settings.stream
            ))
        })?;
        let info = stream.cached_info();
        tracing::info!(
            stream = %settings.stream,
            subjects = ?info.config.subjects,
            duplicate_window = ?info.config.duplicate_window,
            messages = info.state.messages,
            "nats stream ready"
        );
        self.stream_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// `<prefix>.<tenant>.<severity>`; dots in the tenant would split the token.
    fn subject(&self, delivery: &Delivery) -> String {
        format!(
            "{}.{}.{}",
            self.settings.subject_prefix,
            delivery.event.tenant.replace('.', "_"),
            delivery.event.severity.as_str()
        )
    }

    async fn publish(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let (client, context) = self.connection().await?;
        self.wait_connected(&client).await?;
        self.ensure_stream(&context).await?;
        let message = PublishMessage::build()
            .payload(delivery.body.clone().into())
            .message_id(&delivery.event.id)
            .expected_stream(&self.settings.stream);
        // Only the ack counts: a message still in the client's buffer is not delivered.
        let ack = async { context.send_publish(self.subject(delivery), message).await?.await };
        match ack.await {
            Ok(ack) => {
                if ack.duplicate {
                    tracing::debug!(id = %delivery.event.id, stream = %ack.stream, seq = ack.sequence, "nats: already in the stream");
                }
                Ok(())
            }
            Err(error) => Err(self.classify(error)),
        }
    }

    fn classify(&self, error: jetstream::context::PublishError) -> DeliveryError {
        let reason = format!("nats: publish to stream {}: {error}", self.settings.stream);
        match error.kind() {
            // The message was refused before it was sent; it will never fit.
            PublishErrorKind::MaxPayloadExceeded => DeliveryError::permanent(reason),
            // No stream takes the subject (deleted, or a fresh server): look again.
            PublishErrorKind::StreamNotFound => {
                self.stream_ready.store(false, Ordering::Release);
                DeliveryError::retryable(reason)
            }
            // The message may still reach the stream: retry within the duplicate window.
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
                DeliveryError::Retryable { reason, retry_after: Some(RETRY_SOON) }
            }
            // The server answered with an error (storage full, wrong stream…).
            _ => DeliveryError::retryable(reason),
        }
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.publish(delivery))
    }
}
