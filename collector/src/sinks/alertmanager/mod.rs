//! `[sink.alertmanager]`: alert events as Prometheus Alertmanager alerts
//! (`POST <url>/api/v2/alerts`, a JSON array).
//!
//! # Mapping
//! - `labels` identify an alert to Alertmanager: `alertname` (the rule), `tenant`,
//!   `agent`, `check`, `kind`, `severity` (`P1`..`P4`), `fingerprint`, plus the event's
//!   own labels with names made valid (`[a-zA-Z_][a-zA-Z0-9_]*`: other characters become
//!   `_`, a leading digit gets a `_` in front); the built-in names win over an event
//!   label of the same name, and empty values are left out (Alertmanager treats them as
//!   absent).
//! - `annotations`: `summary`, `runbook_url` (when there is a runbook), `value`,
//!   `threshold`, `event_id`.
//! - `startsAt` is `started_at`. A resolved event's `endsAt` is its `resolved_at`; a
//!   firing one's is now + 4 × `resend_interval`, so Alertmanager keeps the alert while
//!   we keep re-sending it and lets it expire by itself if the collector is gone for
//!   good. `generatorURL` is the configured `generator_url`, if any.
//!
//! # Re-sending
//! Alertmanager forgets an alert whose `endsAt` passes, so a firing alert must be sent
//! again and again. The sink keeps the alerts currently firing (by fingerprint: firing
//! adds, resolved removes) and re-posts them every `resend_interval` from its
//! `background` task. After a restart it first seeds that set from the store (the
//! latest event of every fingerprint whose latest event is firing, through the sink's
//! filter), so Alertmanager never lets a still-firing alert expire because the
//! collector restarted.
//!
//! A re-send and a delivery never overlap (a read-write gate: deliveries share it, a
//! re-send takes it alone), so a re-send cannot post an alert as firing after its
//! resolution went out. When an alert's labels change while it fires (its severity
//! escalated, the agent's labels changed), Alertmanager sees a new alert: the old label
//! set is resolved in the same request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::http::{ClientSettings, HttpClient, HttpUrl, judge};
use super::{BoxFuture, Delivery, DeliveryError, Filter, Sink, SinkSettings, SinkSpec};
use crate::alert::{AlertEvent, Status};
use crate::config_error::KeyError;
use crate::queue::Reader;

/// Re-send period unless `resend_interval` says otherwise (Alertmanager's own
/// `resolve_timeout` default is 5 minutes; Prometheus re-sends every minute).
pub const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
/// Below this, a typo ("60ms") would hammer Alertmanager.
const MIN_RESEND_INTERVAL: Duration = Duration::from_millis(100);
/// A firing alert's `endsAt` is this many re-send intervals ahead.
const ENDS_AFTER_INTERVALS: u32 = 4;
/// Alerts per re-send request.
const RESEND_BATCH: usize = 500;

/// `[sink.alertmanager]`: push alerts to a Prometheus Alertmanager (API v2).
///
/// ```toml
/// [sink.alertmanager]
/// url = "http://127.0.0.1:9093"
/// resend_interval = "60s"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL (required); alerts go to `<url>/api/v2/alerts`. Point it
    /// at each Alertmanager of a cluster with one sink each (as Prometheus does): they
    /// deduplicate notifications among themselves.
    pub url: Option<String>,
    /// How often the alerts still firing are sent again. Default "60s", at least
    /// "100ms". A firing
    /// alert's `endsAt` is 4 intervals ahead, so Alertmanager resolves it by itself
    /// only if nightowl stops sending for that long.
    pub resend_interval: Option<String>,
    /// The alerts' `generatorURL` (a link back, e.g. your NOC dashboard). Default: none.
    pub generator_url: Option<String>,
    /// Deadline for one request: connect, TLS, send, answer. Default "10s".
    pub timeout: Option<String>,
    /// Extra CA certificate(s) (PEM) to trust for `https://`.
    pub ca: Option<PathBuf>,
}

/// Validates `[sink.alertmanager]`; an error's key is relative to the sub-table.
pub fn spec(settings: SinkSettings, raw: AlertmanagerConfig, base: &Path) -> Result<SinkSpec, KeyError> {
    let url_text = raw.url.ok_or_else(|| {
        KeyError::new(
            "url".to_owned(),
            "missing: Alertmanager's base URL, e.g. \"http://127.0.0.1:9093\"".to_owned(),
        )
    })?;
    let url = HttpUrl::parse(&url_text)
        .map_err(|message| KeyError::new("url".to_owned(), message))?
        .join("/api/v2/alerts");
    let resend_interval = match raw.resend_interval {
        None => DEFAULT_RESEND_INTERVAL,
        Some(text) => match humantime::parse_duration(&text) {
            Ok(duration) if duration >= MIN_RESEND_INTERVAL => duration,
            Ok(_) => return Err(KeyError::new("resend_interval", "must be at least 100ms")),
            Err(error) => {
                return Err(KeyError::new(
                    "resend_interval",
                    format!("{text:?} is not a duration ({error}): use e.g. \"60s\""),
                ));
            }
        },
    };
    let generator_url = match raw.generator_url {
        None => None,
        Some(text) => {
            HttpUrl::parse(&text).map_err(|message| KeyError::new("generator_url".to_owned(), message))?;
            Some(text.trim().to_owned())
        }
    };
    let client = ClientSettings::validate(raw.timeout.as_deref(), raw.ca.as_deref(), base)?;
    let name = settings.name.clone();
    let filter = settings.filter.clone();
    Ok(SinkSpec::new(settings, move |context| {
        let sink = Alertmanager {
            name: name.clone(),
            client: HttpClient::new(&name, &url, &client)?,
            url: url.clone(),
            resend_interval,
            generator_url: generator_url.clone(),
            data_dir: context.data_dir.clone(),
            filter: filter.clone(),
            firing: Mutex::new(HashMap::new()),
            gate: tokio::sync::RwLock::new(()),
        };
        Ok(Arc::new(sink))
    }))
}

/// The running Alertmanager sink.
pub struct Alertmanager {
    name: String,
    url: HttpUrl,
    client: HttpClient,
    resend_interval: Duration,
    generator_url: Option<String>,
    /// Where the store is, to seed `firing` at startup.
    data_dir: PathBuf,
    /// The sink's filter: what it seeds must be what it would deliver.
    filter: Filter,
    /// The alerts currently firing, by fingerprint: the latest firing event of each.
    firing: Mutex<HashMap<String, AlertEvent>>,
    /// Deliveries hold it shared, a re-send alone (see the module doc).
    gate: tokio::sync::RwLock<()>,
}

/// A label name as Prometheus allows it: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn label_name(name: &str) -> String {
    let mut valid: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if valid.is_empty() || valid.starts_with(|c: char| c.is_ascii_digit()) {
        valid.insert(0, '_');
    }
    valid
}

/// The alert's identity towards Alertmanager (module doc: Mapping).
pub fn labels(event: &AlertEvent) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = event
        .labels
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (label_name(name), value.clone()))
        .collect();
    let own = [
        ("alertname", event.rule.as_str()),
        ("tenant", &event.tenant),
        ("agent", &event.agent),
        ("check", &event.check),
        ("kind", &event.kind),
        ("severity", event.severity.as_str()),
        ("fingerprint", &event.fingerprint),
    ];
    for (name, value) in own {
        if value.is_empty() {
            labels.remove(name);
        } else {
            labels.insert(name.to_owned(), value.to_owned());
        }
    }
    labels
}

/// One Alertmanager alert for `event`, ending at `ends_at` (never before it started).
pub fn alert(event: &AlertEvent, ends_at: jiff::Timestamp, generator_url: Option<&str>) -> Value {
    let mut annotations = BTreeMap::from([
        ("summary", event.summary.clone()),
        ("value", event.value.to_string()),
        ("threshold", event.threshold.to_string()),
        ("event_id", event.id.clone()),
    ]);
    if let Some(runbook) = &event.runbook {
        annotations.insert("runbook_url", runbook.clone());
    }
    let mut alert = json!({
        "labels": labels(event),
        "annotations": annotations,
        "startsAt": event.started_at.to_string(),
        "endsAt": ends_at.max(event.started_at).to_string(),
    });
    if let Some(url) = generator_url {
        alert["generatorURL"] = json!(url);
    }
    alert
}

/// `endsAt` of an alert firing at `now`: 4 re-send intervals ahead (saturating).
pub fn firing_ends_at(now: jiff::Timestamp, resend_interval: Duration) -> jiff::Timestamp {
    let ahead = resend_interval
        .checked_mul(ENDS_AFTER_INTERVALS)
        .and_then(|ahead| jiff::SignedDuration::try_from(ahead).ok())
        .unwrap_or(jiff::SignedDuration::MAX);
    now.checked_add(ahead).unwrap_or(jiff::Timestamp::MAX)
}

impl Alertmanager {
    async fn post(&self, alerts: Vec<Value>) -> Result<(), DeliveryError> {
        let body = Value::Array(alerts).to_string();
        judge(self.client.post_json(&self.url, &[], Bytes::from(body)).await).map(|_| ())
    }

    async fn deliver_event(&self, event: &AlertEvent) -> Result<(), DeliveryError> {
        let _shared = self.gate.read().await;
        let generator_url = self.generator_url.as_deref();
        match event.status {
            Status::Firing => {
                let previous = self.lock_firing().get(&event.fingerprint).cloned();
                let mut alerts = vec![alert(
                    event,
                    firing_ends_at(jiff::Timestamp::now(), self.resend_interval),
                    generator_url,
                )];
                if let Some(previous) = previous.filter(|previous| labels(previous) != labels(event)) {
                    alerts.push(alert(&previous, jiff::Timestamp::now(), generator_url));
                }
                self.post(alerts).await?;
                self.lock_firing().insert(event.fingerprint.clone(), event.clone());
                Ok(())
            }
            Status::Resolved => {
                // Out of the set first: from now on no re-send posts it as firing.
                let previous = self.lock_firing().remove(&event.fingerprint);
                let ended = event.resolved_at.unwrap_or(event.emitted_at);
                let mut alerts = vec![alert(event, ended, generator_url)];
                if let Some(previous) = previous.filter(|previous| labels(previous) != labels(event)) {
                    alerts.push(alert(&previous, ended, generator_url));
                }
                self.post(alerts).await
            }
        }
    }

    fn lock_firing(&self) -> std::sync::MutexGuard<'_, HashMap<String, AlertEvent>> {
        self.firing.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds the store's still-firing alerts (through the filter) to the set; alerts a
    /// delivery already put there stay as they are.
    async fn seed(&self) -> Result<usize, String> {
        let data_dir = self.data_dir.clone();
        let rows = tokio::task::spawn_blocking(move || Reader::open(&data_dir)?.latest_firing())
            .await
            .map_err(|error| format!("reading the store failed: {error}"))?
            .map_err(|error| error.to_string())?;
        let mut firing = self.lock_firing();
        let mut seeded = 0;
        for row in rows {
            let Ok(event) = serde_json::from_str::<AlertEvent>(&row.body) else { continue };
            if self.filter.accepts(&event) && !firing.contains_key(&event.fingerprint) {
                firing.insert(event.fingerprint.clone(), event);
                seeded += 1;
            }
        }
        Ok(seeded)
    }

    /// Posts every firing alert again with a fresh `endsAt`.
    async fn resend(&self) {
        let events: Vec<AlertEvent> = self.lock_firing().values().cloned().collect();
        if events.is_empty() {
            return;
        }
        let ends_at = firing_ends_at(jiff::Timestamp::now(), self.resend_interval);
        for batch in events.chunks(RESEND_BATCH) {
            let alerts =
                batch.iter().map(|event| alert(event, ends_at, self.generator_url.as_deref())).collect();
            if let Err(error) = self.post(alerts).await {
                tracing::warn!(sink = %self.name, alerts = batch.len(), %error, "re-sending firing alerts failed; next try in one interval");
            }
        }
    }

    /// Seeds, then re-sends every `resend_interval`, until `shutdown`.
    async fn run_background(self: Arc<Self>, shutdown: CancellationToken) {
        let mut seeded = false;
        let mut every = tokio::time::interval(self.resend_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let round = async {
                // Alone: no delivery may change the set or post between snapshot and post.
                let _alone = self.gate.write().await;
                if !seeded {
                    match self.seed().await {
                        Ok(count) => {
                            seeded = true;
                            tracing::info!(sink = %self.name, alerts = count, "firing alerts loaded from the store for re-sending");
                        }
                        Err(error) => {
                            tracing::warn!(sink = %self.name, %error, "cannot load the firing alerts from the store; trying again next interval");
                        }
                    }
                }
                self.resend().await;
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = round => {}
            }
        }
    }
}

impl Sink for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.deliver_event(&delivery.event))
    }

    fn background(self: Arc<Self>, shutdown: CancellationToken) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(self.run_background(shutdown)))
    }
}

#[cfg(test)]
mod tests;
