//! # nightowl-collector
//!
//! Agents stream reports in over mutual TLS; the collector evaluates them against rules,
//! keeps each check's alert state and appends alert events to a durable queue.
//!
//! # Layout
//! - `config`: raw TOML → validated [`config::Config`]; errors name file and key;
//!   `config::watch` reloads the rules and policy files.
//! - `file_watch`: the debounced watch of one file (shared with the agent's reload).
//! - `pki`: the collector's small CA (`ca init`, `ca issue`).
//! - `identity`: who a peer is, read from its certificate (agents, feed operators).
//! - `supervise`: every long-running task is critical (its end stops the collector) or
//!   restarted with backoff and counted.
//! - `synthetic`: ids of the checks the collector raises itself (agent offline).
//! - `ingest`: the gRPC session server (TLS acceptor, limits, one task per agent session).
//! - `feed`: the alert feed (`Feed/Subscribe`): named consumers with durable cursors,
//!   explicit acks, redelivery, tenant scope from the operator certificate; and its client.
//! - `offline`: agent offline detection with a reachability probe of the host.
//! - `evaluate`: rules (file + overrides, hot reload) and per-check state machines;
//!   measurements in, transitions out.
//! - `policy`: central policy: checks pushed to agents by tenant/label (never anything
//!   that executes), sent by the session.
//! - `calendar`: maintenance windows, silences and business-hours coverage (pure time logic).
//! - `hold`: the emission policy (maintenance windows, after hours) and the releaser of
//!   held events.
//! - `alert`: the alert event (the consumers' JSON contract) and its fingerprint.
//! - `queue`: the embedded durable store (SQLite): alert queue, agent seqs, check states,
//!   consumer cursors, dead letters, retention.
//! - `sinks`: delivery of queued events to PSA / paging tools, one folder per kind behind
//!   one trait; a shared runner (durable cursor, retries, dead letters, filters).
//! - `cli`: the read-side commands (`alerts tail`, `agents list`).
//!
//! Data path: `ingest` → `evaluate` → `queue` (one transaction per report) → Ack;
//! `queue` → `sinks` (each at its own durable cursor).

#![forbid(unsafe_code)]

pub mod alert;
pub mod calendar;
pub mod cli;
pub mod config;
/// Config errors naming file, line and key path; a leaf, so that the validators
/// `config` calls (sinks, policy) need not import `config`.
pub mod config_error;
pub mod evaluate;
pub mod feed;
/// The debounced watch of one file (rules, policies, the agent's config); a leaf, which
/// the agent compiles too.
pub mod file_watch;
pub mod hold;
pub mod identity;
pub mod ingest;
pub mod offline;
pub mod pki;
pub mod policy;
pub mod queue;
pub mod sinks;
pub mod status;
pub mod supervise;
pub mod synthetic;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::ingest::{Counters, Ingest, ServeError};
use crate::queue::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: another collector is running with this data_dir")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Sink(String),
    #[error("{0}")]
    TaskFailed(supervise::Failure),
}

/// `<data_dir>/listen.addr`: the address the collector is listening on (`IP:PORT` and a
/// newline), written once bound and removed at a clean stop.
pub const LISTEN_ADDRESS_FILE: &str = "listen.addr";

/// Writes `addr` to `path` by rename, so a reader never sees half of it.
fn write_address_file(path: &std::path::Path, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let temporary = path.with_extension("addr.tmp");
    std::fs::write(&temporary, format!("{addr}\n"))?;
    std::fs::rename(&temporary, path)
}

/// Runs the collector until `shutdown` resolves, then drains: stops accepting, ends
/// sessions after their in-flight commit, flushes the store. A critical task that fails
/// (see `supervise`) drains it the same way and is returned as [`RunError::TaskFailed`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_supervised(config, supervise::Supervisor::new(), shutdown).await
}

/// Like [`run`], under `supervisor`: tasks the caller started under it are watched
/// alongside the collector's own (a critical one that fails stops the collector).
pub async fn run_supervised(
    config: Config,
    supervisor: supervise::Supervisor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|source| RunError::Io { path: config.data_dir.clone(), source })?;
    // One collector per data_dir: two would evaluate the same agents twice.
    let lock_path = config.data_dir.join("collector.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| RunError::Io { path: lock_path.clone(), source })?;
    if lock.try_lock().is_err() {
        return Err(RunError::Locked { path: config.data_dir.clone() });
    }

    // A stale address file would name a port another process may hold by now.
    let address_file = config.data_dir.join(LISTEN_ADDRESS_FILE);
    match std::fs::remove_file(&address_file) {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            return Err(RunError::Io { path: address_file, source });
        }
        _ => {}
    }
    let tls = ingest::server_tls_config(&config.tls).map_err(ServeError::from)?;
    let policy =
        Arc::new(hold::Policy { maintenance: config.maintenance.clone(), coverage: config.coverage.clone() });
    if !policy.is_empty() {
        tracing::info!(
            maintenance_windows = policy.maintenance.windows.len(),
            coverage_tenants = policy.coverage.per_tenant.len(),
            coverage_default = policy.coverage.default.is_some(),
            "emission policy: maintenance windows and coverage calendars in force"
        );
    }
    let (store, writer) = Store::open_with_policy(&config.data_dir, policy)?;
    let counters = Arc::new(Counters::default());
    let (rules, rules_receiver) = tokio::sync::watch::channel(config.rules.clone());
    let _rules_watcher = match &config.rules_path {
        Some(path) => {
            match config::watch::watch_file(path.clone(), "rules", evaluate::RuleSet::load, rules) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "cannot watch the rules file; edits need a restart");
                    None
                }
            }
        }
        None => None,
    };
    let (policies, policies_receiver) = tokio::sync::watch::channel(config.policies.clone());
    let _policies_watcher = match &config.policies_path {
        Some(path) => {
            tracing::info!(policies = config.policies.policies().len(), file = %path.display(), "central policies loaded");
            match config::watch::watch_file(path.clone(), "policies", policy::PolicySet::load, policies) {
                Ok(watcher) => Some(watcher),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "cannot watch the policy file; edits need a restart");
                    None
                }
            }
        }
        None => None,
    };
    let ingest = Ingest::bind(
        config.listen,
        tls,
        store.clone(),
        rules_receiver,
        policies_receiver,
        config.limits.clone(),
        counters,
    )
    .await?;
    let addr =
        ingest.local_addr().map_err(|source| RunError::Io { path: PathBuf::from("listener"), source })?;
    // The bound address (the port when `listen` says port 0) for scripts and tests.
    let address_file = config.data_dir.join(LISTEN_ADDRESS_FILE);
    write_address_file(&address_file, addr)
        .map_err(|source| RunError::Io { path: address_file.clone(), source })?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), store = %store.path().display(), "collector listening");
    let known = queue::Reader::open(&config.data_dir)?.presence()?;
    // Sinks and retention: consumers of the queue, stopped after ingest so that what
    // the last sessions committed is still picked up by the next start.
    let stop_consumers = tokio_util::sync::CancellationToken::new();
    let sinks = match sinks::start_all(&config.sinks, &store, &config.data_dir, &supervisor, &stop_consumers)
    {
        Ok(sinks) => sinks,
        Err(error) => {
            stop_consumers.cancel();
            return Err(RunError::Sink(error));
        }
    };
    // From here on nothing fails before the drain. The writer ends when the last store
    // handle is dropped, at the end of the drain; an end before that is fatal.
    let store_closing = tokio_util::sync::CancellationToken::new();
    supervisor.critical_blocking("store writer", store_closing.clone(), move || {
        if let Err(panic) = writer.join() {
            std::panic::resume_unwind(panic);
        }
    });
    // The releaser runs even without a policy: events held under an earlier config
    // are still released.
    let stop_releaser = tokio_util::sync::CancellationToken::new();
    {
        let (store, stop) = (store.clone(), stop_releaser.clone());
        supervisor.restarting("releaser", stop_releaser.clone(), move || {
            queue::run_releaser(store.clone(), stop.clone())
        });
    }
    {
        let (store, stop, retention) = (store.clone(), stop_consumers.clone(), config.retention);
        supervisor.restarting("retention", stop_consumers.clone(), move || {
            queue::run_retention(store.clone(), retention, stop.clone())
        });
    }
    if !sinks.stats.is_empty() {
        tracing::info!(sinks = sinks.stats.len(), "sinks started");
    }
    let served = ingest.run(known, config.offline.clone(), &supervisor, shutdown).await;
    stop_releaser.cancel();
    stop_consumers.cancel();
    // Every session has ended: once the tasks above drop their handles, the last handle
    // closes the writer's queue and it exits after applying what is queued.
    store_closing.cancel();
    drop(store);
    supervisor.wait().await;
    let _ = std::fs::remove_file(&address_file);
    drop(lock);
    if let Some(failure) = supervisor.failure() {
        tracing::error!(%failure, restarts = supervisor.restarts(), "collector stopped after a task failure");
        return Err(RunError::TaskFailed(failure));
    }
    tracing::info!(restarts = supervisor.restarts(), "collector stopped");
    served.map_err(RunError::from)
}

#[cfg(test)]
mod run_tests;
