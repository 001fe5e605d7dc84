//! Email sink: one plain-text mail per alert event over SMTP, in the shape PSA
//! email-to-ticket parsers thread on.
//!
//! ```toml
//! [[sink]]
//! name = "psa-mail"
//! [sink.email]
//! server = "smtp.example.net"
//! tls = "starttls"                  # default; "tls" = implicit TLS (465); "none" = loopback relays only
//! username = "nightowl"
//! password_file = "/etc/nightowl/smtp.pass"
//! from = "nightowl <noc@msp.example.net>"
//! to = ["tickets@psa.example.net"]
//! ```
//!
//! # Threading, without state
//! - Subject: `[P2] FIRING acme/srv-01 disk:/var: Disk /var 96.2% used
//!   [nightowl:0123456789ab]` (`RESOLVED` for a resolved event). The token is the first
//!   12 hex digits of the fingerprint, the same for every mail about one check and
//!   rule, so a PSA files the resolved mail into the ticket the firing mail opened.
//! - `Message-ID` of a firing mail: `<nightowl.<fingerprint>.<started_at ms>.<severity>@
//!   <from domain>>`, derived from the problem's start and severity; a resolved event
//!   carries the same fingerprint, `started_at` and (last announced) severity, so its
//!   `In-Reply-To` and `References` name exactly that message. The severity is part of
//!   the id so that an escalation (P3 → P1, same problem) is a new message and never
//!   dropped by a mailbox as a duplicate; a redelivered event (at-least-once) keeps its
//!   id and is.
//! - `Message-ID` of a resolved mail: `<nightowl.<event id>@<from domain>>`.
//!
//! # Body
//! One `field: value` line per event field (contract order, then any newer fields),
//! then the event JSON exactly as queued.
//!
//! # Errors
//! Connection failures, timeouts, TLS failures and 4xx replies are retryable; 5xx
//! replies (550 mailbox unavailable, 554 rejected) are permanent and dead-letter the
//! event, except the authentication refusals (530, 534, 535, 538): those are a
//! configuration problem, not the event's, and are retried until someone fixes it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, Message, SinglePart};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{BoxFuture, Delivery, DeliveryError, Sink, SinkSettings, SinkSpec};
use crate::alert::{AlertEvent, Status};
use crate::config_error::KeyError;

#[cfg(test)]
mod tests;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Length of the fingerprint prefix in the subject token.
const TOKEN_HEX: usize = 12;

/// `[sink.email]`: send each alert event as a plain-text mail (e.g. to a PSA's
/// email-to-ticket address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name (verified against its certificate). Required.
    server: Option<String>,
    /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    port: Option<u16>,
    /// `"starttls"` (default: plain connect, then STARTTLS is required), `"tls"`
    /// (implicit TLS, usually port 465) or `"none"` (no encryption: only for a relay on
    /// this machine; refused together with a username unless `server` is loopback).
    tls: Option<String>,
    /// SMTP AUTH user; needs `password_file`. Optional.
    username: Option<String>,
    /// File holding the SMTP password (a trailing newline is ignored).
    password_file: Option<PathBuf>,
    /// Sender, `"noc@msp.example.net"` or `"nightowl <noc@msp.example.net>"`; its domain
    /// also names the Message-IDs. Required.
    from: Option<String>,
    /// Recipients (one or more). Required.
    #[serde(default)]
    to: Vec<String>,
    /// PEM CA certificate(s) to verify the server with, instead of the system roots.
    ca: Option<PathBuf>,
    /// Limit for connecting and for each SMTP reply. Default `30s`.
    timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    StartTls,
    Implicit,
    None,
}

/// The validated `[sink.email]`.
#[derive(Clone)]
struct Settings {
    server: String,
    port: u16,
    tls: TlsMode,
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// For Message-IDs.
    domain: String,
    timeout: Duration,
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { base.join(path) }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Validates `[sink.email]`; error keys are relative to the sub-table.
pub(super) fn spec(settings: SinkSettings, raw: EmailConfig, base: &Path) -> Result<SinkSpec, KeyError> {
    let server = raw.server.filter(|server| !server.trim().is_empty()).ok_or_else(|| {
        KeyError::new("server".to_owned(), "is required (the SMTP server's host name)".to_owned())
    })?;
    let from_text = raw.from.ok_or_else(|| KeyError::new("from".to_owned(), "is required".to_owned()))?;
    let from: Mailbox = from_text
        .parse()
        .map_err(|error| KeyError::new("from".to_owned(), format!("{from_text:?}: {error}")))?;
    if raw.to.is_empty() {
        return Err(KeyError::new("to", "is required: at least one recipient"));
    }
    let to = raw
        .to
        .iter()
        .map(|text| {
            text.parse::<Mailbox>()
                .map_err(|error| KeyError::new("to".to_owned(), format!("{text:?}: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tls = match raw.tls.as_deref() {
        None | Some("starttls") => TlsMode::StartTls,
        Some("tls") => TlsMode::Implicit,
        Some("none") => TlsMode::None,
        Some(other) => {
            return Err(KeyError::new("tls", format!("{other:?}: use \"starttls\", \"tls\" or \"none\"")));
        }
    };
    let credentials = match (raw.username, raw.password_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(KeyError::new("password_file", "is required with username"));
        }
        (None, Some(_)) => {
            return Err(KeyError::new("username", "is required with password_file"));
        }
        (Some(username), Some(path)) => {
            let path = resolve(base, path);
            let password = std::fs::read_to_string(&path).map_err(|error| {
                KeyError::new("password_file".to_owned(), format!("cannot read {}: {error}", path.display()))
            })?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(KeyError::new("password_file", format!("{} is empty", path.display())));
            }
            Some(Credentials::new(username, password.to_owned()))
        }
    };
    if tls == TlsMode::None && credentials.is_some() && !is_loopback(&server) {
        return Err(KeyError::new(
            "tls",
            format!(
                "\"none\" would send the password in clear text to {server}: use \"starttls\" or \"tls\""
            ),
        ));
    }
    let tls_parameters = match tls {
        TlsMode::None => {
            if raw.ca.is_some() {
                return Err(KeyError::new("ca", "has no effect with tls = \"none\""));
            }
            None
        }
        TlsMode::StartTls | TlsMode::Implicit => {
            let mut builder = TlsParameters::builder(server.clone());
            if let Some(path) = raw.ca {
                let path = resolve(base, path);
                let pem = std::fs::read(&path).map_err(|error| {
                    KeyError::new("ca".to_owned(), format!("cannot read {}: {error}", path.display()))
                })?;
                let certificate = Certificate::from_pem(&pem).map_err(|error| {
                    KeyError::new("ca".to_owned(), format!("{}: {error}", path.display()))
                })?;
                builder = builder.certificate_store(CertificateStore::None).add_root_certificate(certificate);
            }
            Some(builder.build_rustls().map_err(|error| KeyError::new("ca".to_owned(), error.to_string()))?)
        }
    };
    let port = raw.port.unwrap_or(match tls {
        TlsMode::StartTls => 587,
        TlsMode::Implicit => 465,
        TlsMode::None => 25,
    });
    let timeout = match raw.timeout {
        None => DEFAULT_TIMEOUT,
        Some(text) => match humantime::parse_duration(&text) {
            Ok(value) if !value.is_zero() => value,
            Ok(_) => return Err(KeyError::new("timeout", "must be longer than zero")),
            Err(error) => {
                return Err(KeyError::new("timeout", format!("{text:?} is not a duration ({error})")));
            }
        },
    };
    let domain = from.email.domain().to_owned();
    let email =
        Arc::new(Settings { server, port, tls, tls_parameters, credentials, from, to, domain, timeout });
    Ok(SinkSpec::new(settings, move |_context| {
        Ok(Arc::new(EmailSink::new(email.as_ref().clone())) as Arc<dyn Sink>)
    }))
}

/// Sends one mail per event (a new SMTP session each: alert mail is rare and servers
/// close idle sessions anyway).
pub struct EmailSink {
    settings: Settings,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl EmailSink {
    fn new(settings: Settings) -> Self {
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.server.clone())
            .port(settings.port)
            .timeout(Some(settings.timeout));
        builder = match (&settings.tls, &settings.tls_parameters) {
            (TlsMode::StartTls, Some(parameters)) => builder.tls(Tls::Required(parameters.clone())),
            (TlsMode::Implicit, Some(parameters)) => builder.tls(Tls::Wrapper(parameters.clone())),
            _ => builder.tls(Tls::None),
        };
        if let Some(credentials) = &settings.credentials {
            builder = builder.credentials(credentials.clone());
        }
        Self { transport: builder.build(), settings }
    }

    async fn send(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        let message = compose(&self.settings, delivery)
            .map_err(|error| DeliveryError::permanent(format!("cannot build the mail: {error}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.classify(&error)),
        }
    }

    fn classify(&self, error: &lettre::transport::smtp::Error) -> DeliveryError {
        let reason = format!("smtp {}:{}: {error}", self.settings.server, self.settings.port);
        let code = error.status().map(|code| code.to_string());
        match code.as_deref() {
            // Refused credentials: fix the config; do not dead-letter every event meanwhile.
            Some("530" | "534" | "535" | "538") => {
                DeliveryError::retryable(format!("{reason} (check username / password_file)"))
            }
            Some(_) if error.is_permanent() => DeliveryError::permanent(reason),
            _ => DeliveryError::retryable(reason),
        }
    }
}

impl Sink for EmailSink {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.send(delivery))
    }
}

/// `[nightowl:<first 12 hex of the fingerprint>]`: the PSA threading token.
fn thread_token(event: &AlertEvent) -> String {
    let prefix: String = event.fingerprint.chars().take(TOKEN_HEX).collect();
    format!("[nightowl:{prefix}]")
}

/// The Message-ID of the firing mail of this problem at this severity (see module doc).
fn firing_message_id(event: &AlertEvent, domain: &str) -> String {
    format!(
        "<nightowl.{}.{}.{}@{domain}>",
        event.fingerprint,
        event.started_at.as_millisecond(),
        event.severity.as_str().to_ascii_lowercase()
    )
}

/// One line, no control characters (they would break the subject or a `field:` line).
fn one_line(text: &str) -> String {
    text.chars().map(|character| if character.is_control() { ' ' } else { character }).collect()
}

fn subject(event: &AlertEvent) -> String {
    let status = match event.status {
        Status::Firing => "FIRING",
        Status::Resolved => "RESOLVED",
    };
    one_line(&format!(
        "[{}] {status} {}/{} {}: {} {}",
        event.severity.as_str(),
        event.tenant,
        event.agent,
        event.check,
        event.summary,
        thread_token(event)
    ))
}

/// The event's fields in the contract's order (DESIGN.md); newer fields follow sorted.
const FIELD_ORDER: &[&str] = &[
    "id",
    "fingerprint",
    "status",
    "severity",
    "tenant",
    "agent",
    "check",
    "kind",
    "rule",
    "summary",
    "value",
    "threshold",
    "started_at",
    "resolved_at",
    "emitted_at",
    "labels",
    "runbook",
    "remediation",
    "flapping",
];

/// `field: value` per field of the stored JSON (so fields added later show up too), then
/// the JSON itself.
fn body(delivery: &Delivery) -> String {
    let json: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(&delivery.body) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::to_value(&delivery.event)
            .ok()
            .and_then(|value| value.as_object().cloned())
            .unwrap_or_default(),
    };
    let mut keys: Vec<&String> =
        FIELD_ORDER.iter().filter_map(|key| json.get_key_value(*key).map(|(k, _)| k)).collect();
    let mut newer: Vec<&String> = json.keys().filter(|key| !FIELD_ORDER.contains(&key.as_str())).collect();
    newer.sort();
    keys.extend(newer);
    let mut text = String::new();
    for key in keys {
        let value = match &json[key.as_str()] {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(text) => one_line(text),
            other => one_line(&other.to_string()),
        };
        text.push_str(&format!("{key}: {value}\n"));
    }
    text.push_str("\nevent JSON:\n");
    text.push_str(delivery.body.trim_end());
    text.push('\n');
    text
}

fn compose(settings: &Settings, delivery: &Delivery) -> Result<Message, lettre::error::Error> {
    let event = &delivery.event;
    let mut builder = Message::builder().from(settings.from.clone()).subject(subject(event)).date_now();
    for recipient in &settings.to {
        builder = builder.to(recipient.clone());
    }
    let firing = firing_message_id(event, &settings.domain);
    builder = match event.status {
        Status::Firing => builder.message_id(Some(firing)),
        Status::Resolved => builder
            .message_id(Some(format!("<nightowl.{}@{}>", event.id, settings.domain)))
            .in_reply_to(firing.clone())
            .references(firing),
    };
    // A MIME single part: MIME-Version, charset, and a transfer encoding chosen for the
    // content (the JSON line is longer than SMTP allows, so quoted-printable).
    builder.singlepart(SinglePart::plain(body(delivery)))
}
