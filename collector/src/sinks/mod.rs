//! Sinks: deliver the queue's alert events to the tools MSPs already run (PSA webhooks,
//! PagerDuty, Alertmanager, email-to-ticket, NATS JetStream).
//!
//! # The contract
//! A sink implements [`Sink`]: deliver ONE event, and say whether a failure is worth
//! retrying ([`DeliveryError::Retryable`], optionally with the peer's `Retry-After`) or
//! final ([`DeliveryError::Permanent`]: the event goes to the dead-letter list). That is
//! all a sink does; everything else is the runner's (`runner.rs`), the same for every
//! sink:
//!
//! - **Durable cursor.** Each sink is a named consumer of the queue (`sink:<name>`). An
//!   event counts as done only when it was delivered, filtered out or dead-lettered, and
//!   the cursor moves past it only then, durably. A crash or restart redelivers what was
//!   in flight: delivery is at-least-once, and consumers dedupe on the event `id` (the
//!   PagerDuty `dedup_key` and NATS `Nats-Msg-Id` make that automatic).
//! - **Filters** by tenant, severity and status; filtered events just move the cursor.
//! - **Retries** with exponential backoff and equal jitter (1 s doubling up to 5 min, each
//!   wait uniform between half the step and the step), or the `Retry-After` the peer
//!   asked for (at most 1 h); after `give_up_after` (default 24 h) the event is
//!   dead-lettered with the last error.
//! - **Bounded concurrency with per-fingerprint order**: events are spread over
//!   `concurrency` lanes by fingerprint; a lane delivers in queue order, so a `resolved`
//!   never overtakes its `firing`.
//! - **Isolation**: every sink runs its own tasks and reads the store through its own
//!   read-only connection. A slow or dead sink backs up only its own cursor; it never
//!   blocks ingest (which only appends) or another sink.
//! - **Counters and health** per sink ([`SinkStats`]): delivered / failed / retried /
//!   dead-lettered, and a health state from the recent outcomes.
//!
//! # Layout
//! One folder per sink kind with its config struct (`deny_unknown_fields`; its doc
//! comments are the user documentation) and its [`Sink`] impl: `webhook/`,
//! `pagerduty/`, `alertmanager/`, `email/`, `nats/`. `config.rs` is the `[[sink]]` table
//! shared by all kinds; `runner.rs` the delivery loop; `http.rs` the HTTP kinds' client
//! and their one mapping from HTTP outcomes to [`DeliveryError`].

pub mod alertmanager;
mod config;
mod email;
mod http;
mod nats;
pub mod pagerduty;
mod runner;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::alert::AlertEvent;

pub use config::validate_all;
pub use config::{BuildContext, Filter, RawSink, SinkSettings, SinkSpec};
pub use runner::{Sinks, consumer_name, run_sink, start_all};

/// A boxed future, so [`Sink`] stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One event on its way to a sink.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Queue position.
    pub pos: i64,
    /// The event, parsed.
    pub event: AlertEvent,
    /// The event's JSON exactly as stored: what webhooks and feeds send verbatim.
    pub body: String,
    /// 1 on the first try.
    pub attempt: u32,
}

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again: network errors, timeouts, HTTP 429 and 5xx, a broker that is
    /// down. `retry_after` is the peer's own request (`Retry-After`), when it made one.
    #[error("{reason}")]
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Trying again cannot help (HTTP 4xx other than 408/429, a payload the peer
    /// refuses): the event goes to the dead-letter list.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn retryable(reason: impl Into<String>) -> Self {
        DeliveryError::Retryable { reason: reason.into(), retry_after: None }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent { reason: reason.into() }
    }
}

/// Delivers alert events somewhere. Implementations hold their own client (connection
/// pool, SMTP transport, NATS client) and must be cancel-safe: the runner drops a
/// `deliver` future at shutdown, and the event is then delivered again after restart.
pub trait Sink: Send + Sync + 'static {
    /// The kind, for logs (`webhook`, `pagerduty`…).
    fn kind(&self) -> &'static str;

    /// Delivers one event. Called for the events of one fingerprint one at a time, in
    /// queue order; for different fingerprints concurrently (up to `concurrency`).
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Work a sink needs besides delivering (Alertmanager re-sends firing alerts
    /// periodically). Runs until `shutdown`; none by default.
    fn background(
        self: std::sync::Arc<Self>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }
}

/// A sink's health, from its recent outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// The last delivery (if any) succeeded.
    Healthy,
    /// Deliveries are failing and being retried.
    Retrying,
    /// Several consecutive failures, or events given up on: someone should look.
    Failing,
}

/// Consecutive failed attempts after which a retrying sink counts as failing.
const FAILING_AFTER: u32 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub state: HealthState,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub last_success: Option<jiff::Timestamp>,
}

/// Per-sink counters (bounded labels: the sink's name, never an agent) and health.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    pub kind: &'static str,
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry that fails counts).
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Events skipped because retention deleted them before this sink got to them.
    pub lost_to_retention: AtomicU64,
    health: Mutex<Health>,
}

/// A copy of [`SinkStats`] at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    pub name: String,
    pub kind: &'static str,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub lost_to_retention: u64,
    pub health: Health,
}

impl SinkStats {
    pub fn new(name: &str, kind: &'static str) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            lost_to_retention: AtomicU64::new(0),
            health: Mutex::new(Health {
                state: HealthState::Healthy,
                consecutive_failures: 0,
                last_error: None,
                last_success: None,
            }),
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn report(&self) -> SinkReport {
        SinkReport {
            name: self.name.clone(),
            kind: self.kind,
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            lost_to_retention: self.lost_to_retention.load(Ordering::Relaxed),
            health: self.health(),
        }
    }

    fn succeeded(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if health.state != HealthState::Healthy {
            tracing::info!(sink = %self.name, kind = self.kind, "sink healthy again");
        }
        health.state = HealthState::Healthy;
        health.consecutive_failures = 0;
        health.last_success = Some(jiff::Timestamp::now());
    }

    fn attempt_failed(&self, error: &DeliveryError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        health.last_error = Some(error.to_string());
        let state = if health.consecutive_failures >= FAILING_AFTER {
            HealthState::Failing
        } else {
            HealthState::Retrying
        };
        if state != health.state {
            tracing::warn!(sink = %self.name, kind = self.kind, state = ?state, %error, "sink health changed");
        }
        health.state = state;
    }

    fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let mut health = self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        health.state = HealthState::Failing;
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
