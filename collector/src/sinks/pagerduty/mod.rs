//! `[sink.pagerduty]`: alert events as PagerDuty Events API v2 events
//! (`POST <url>/v2/enqueue`).
//!
//! # Mapping
//! - `firing` → `event_action: "trigger"`, `resolved` → `"resolve"`; `dedup_key` is the
//!   event's `fingerprint` for both, so the resolve closes the incident the trigger
//!   opened, and a redelivered trigger (delivery is at-least-once) lands on the same
//!   incident instead of opening a second one.
//! - A trigger's `payload`: `summary` (the event's, cut to 1024 characters), `source`
//!   (agent), `severity` (P1 → critical, P2 → error, P3 → warning, P4 → info),
//!   `timestamp` (`emitted_at`, RFC 3339), `component` (check), `group` (tenant), `class`
//!   (kind), `custom_details` (rule, value, threshold, labels, started_at, event_id,
//!   runbook, and remediation when there is one); `links` carries the runbook.
//! - PagerDuty answers 202; 400 (a malformed event, an unknown routing key) dead-letters
//!   the event; 429 and 5xx are retried (see `sinks::http`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::http::{ClientSettings, HttpClient, HttpUrl, judge, read_secret, resolve};
use super::{BoxFuture, Delivery, DeliveryError, Sink, SinkSettings, SinkSpec};
use crate::alert::{AlertEvent, Severity, Status};
use crate::config_error::KeyError;

/// PagerDuty's Events API, unless `url` says otherwise.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com";
/// PagerDuty's limit on `payload.summary`.
const SUMMARY_CHARS: usize = 1024;

/// `[sink.pagerduty]`: trigger and resolve PagerDuty incidents (Events API v2).
///
/// ```toml
/// [sink.pagerduty]
/// routing_key_file = "pagerduty.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// File holding the integration's routing key (the "Integration Key" of an Events
    /// API v2 integration on a service); read at startup, surrounding whitespace
    /// ignored, relative to the config file's directory. Set this or `routing_key`.
    pub routing_key_file: Option<PathBuf>,
    /// The routing key inline. Prefer `routing_key_file`: config files get copied around.
    pub routing_key: Option<String>,
    /// The Events API base URL; events go to `<url>/v2/enqueue`. Default
    /// "https://events.pagerduty.com" (an EU account may use
    /// "https://events.eu.pagerduty.com").
    pub url: Option<String>,
    /// Deadline for one request: connect, TLS, send, answer. Default "10s".
    pub timeout: Option<String>,
    /// Extra CA certificate(s) (PEM) to trust for `https://`, e.g. an egress proxy's.
    pub ca: Option<PathBuf>,
}

/// Validates `[sink.pagerduty]`; an error's key is relative to the sub-table.
pub fn spec(settings: SinkSettings, raw: PagerDutyConfig, base: &Path) -> Result<SinkSpec, KeyError> {
    let routing_key = match (raw.routing_key_file, raw.routing_key) {
        (Some(_), Some(_)) => {
            return Err(KeyError::new("routing_key", "set routing_key_file or routing_key, not both"));
        }
        (None, None) => {
            return Err(KeyError::new(
                "routing_key_file",
                "missing: the file holding the Events API v2 routing key (or set routing_key)",
            ));
        }
        (Some(path), None) => read_secret(&resolve(base, &path))
            .map_err(|message| KeyError::new("routing_key_file".to_owned(), message))?,
        (None, Some(key)) => {
            let key = key.trim().to_owned();
            if key.is_empty() {
                return Err(KeyError::new("routing_key", "is empty"));
            }
            key
        }
    };
    let url_text = raw.url.unwrap_or_else(|| DEFAULT_URL.to_owned());
    let url = HttpUrl::parse(&url_text)
        .map_err(|message| KeyError::new("url".to_owned(), message))?
        .join("/v2/enqueue");
    let client = ClientSettings::validate(raw.timeout.as_deref(), raw.ca.as_deref(), base)?;
    let name = settings.name.clone();
    Ok(SinkSpec::new(settings, move |_context| {
        let sink = PagerDuty {
            client: HttpClient::new(&name, &url, &client)?,
            url: url.clone(),
            routing_key: routing_key.clone(),
        };
        Ok(Arc::new(sink))
    }))
}

/// The running PagerDuty sink.
pub struct PagerDuty {
    url: HttpUrl,
    client: HttpClient,
    routing_key: String,
}

/// PagerDuty's severity for ours.
pub fn severity(severity: Severity) -> &'static str {
    match severity {
        Severity::P1 => "critical",
        Severity::P2 => "error",
        Severity::P3 => "warning",
        Severity::P4 => "info",
    }
}

/// The Events API v2 event for `event`.
pub fn body(event: &AlertEvent, routing_key: &str) -> Value {
    match event.status {
        Status::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": event.fingerprint,
        }),
        Status::Firing => {
            let mut custom_details = json!({
                "rule": event.rule,
                "value": event.value,
                "threshold": event.threshold,
                "labels": event.labels,
                "started_at": event.started_at.to_string(),
                "event_id": event.id,
                "runbook": event.runbook,
            });
            if let Some(remediation) = &event.remediation {
                custom_details["remediation"] = json!(remediation);
            }
            let mut body = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": event.fingerprint,
                "client": "nightowl",
                "payload": {
                    "summary": summary(event),
                    "source": event.agent,
                    "severity": severity(event.severity),
                    "timestamp": event.emitted_at.to_string(),
                    "component": event.check,
                    "group": event.tenant,
                    "class": event.kind,
                    "custom_details": custom_details,
                },
            });
            if let Some(runbook) = &event.runbook {
                body["links"] = json!([{ "href": runbook, "text": "Runbook" }]);
            }
            body
        }
    }
}

/// The summary, never empty (PagerDuty requires one), at most 1024 characters.
fn summary(event: &AlertEvent) -> String {
    let text = event.summary.trim();
    let text = if text.is_empty() {
        format!("{} {} on {}", event.rule, event.check, event.agent)
    } else {
        text.to_owned()
    };
    if text.chars().count() <= SUMMARY_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(SUMMARY_CHARS - 1).collect();
    cut.push('…');
    cut
}

impl Sink for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let body = body(&delivery.event, &self.routing_key).to_string();
            judge(self.client.post_json(&self.url, &[], Bytes::from(body)).await).map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests;
