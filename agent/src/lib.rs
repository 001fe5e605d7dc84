//! # nightowl-agent
//!
//! Runs on every managed endpoint: samples health, keeps every report in a durable
//! spool until the collector acks it, and streams reports over one mutual-TLS gRPC
//! session. Opens no listening port; runs no command the collector sends.
//!
//! # Layout
//! - `config`: raw TOML → validated [`config::Config`]; errors name file and key.
//! - `probes/`: one module per health family; each owns its config section and exposes
//!   one sampling function. A failing probe yields an UNKNOWN result, never a dead loop.
//! - `spool`: durable, bounded queue of reports not yet acked by the collector.
//! - `session/`: connect, Hello, stream the spool, apply acks, reconnect with backoff.
//!
//! Data path: `probes` → (sampler task) → `spool` → (session task) → collector → Ack →
//! `spool` deletes.

#![forbid(unsafe_code)]

pub mod config;
pub mod probes;
pub mod session;
pub mod spool;

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::probes::Probes;
use crate::session::{AgentInfo, SharedSpool, with_spool};
use crate::spool::{Spool, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{file}: [collector] section missing: `run` needs url, ca, cert and key")]
    NoCollector { file: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Runs the agent until `shutdown` resolves: the sampler appends a report to the spool
/// every interval; the session streams the spool to the collector.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let collector =
        config.collector.clone().ok_or_else(|| RunError::NoCollector { file: config.source.clone() })?;
    let spool = Spool::open(&config.state_dir, config.spool)?;
    let stats = spool.stats()?;
    tracing::info!(
        state_dir = %config.state_dir.display(),
        pending = stats.pending,
        next_seq = stats.next_seq,
        stream_id = %stats.stream_id,
        interval = ?config.interval,
        collector = %collector.url,
        "agent starting"
    );
    let spool: SharedSpool = Arc::new(Mutex::new(spool));
    let new_report = Arc::new(Notify::new());
    let token = CancellationToken::new();

    let session = tokio::spawn(session::run(
        collector,
        spool.clone(),
        AgentInfo::detect(),
        config.heartbeat,
        new_report.clone(),
        token.clone(),
    ));
    let sampler = tokio::spawn(sample_loop(config, spool, new_report, token.clone()));

    shutdown.await;
    tracing::info!("shutdown requested");
    token.cancel();
    // Both tasks stop at their next await point; the spool keeps whatever is unacked.
    if let Err(error) = sampler.await {
        tracing::error!(%error, "sampler task failed");
    }
    if let Err(error) = session.await {
        tracing::error!(%error, "session task failed");
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Samples every `interval` and appends the results to the spool. A failing append is
/// logged and retried on the next tick; it never stops the loop.
async fn sample_loop(
    config: Config,
    spool: SharedSpool,
    new_report: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut probes = Probes::new(&config.disk);
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let results = probes.sample().await;
        let sampled_at_ms = session::now_ms();
        match with_spool(&spool, move |spool| spool.append(sampled_at_ms, results)).await {
            Ok(appended) => {
                tracing::debug!(seq = appended.seq, "report spooled");
                new_report.notify_one();
            }
            Err(error) => tracing::error!(%error, "cannot spool report; sample lost"),
        }
    }
}

/// `nightowl-agent check`: samples every probe once and renders the results grouped by
/// family.
pub async fn check(config: &Config) -> String {
    let mut probes = Probes::new(&config.disk);
    let results = probes.sample().await;
    render_check(&results)
}

fn render_check(results: &[nightowl_proto::CheckResult]) -> String {
    use std::fmt::Write;
    // Families in the order they first appear (probes sample disk first, host last).
    let mut families: Vec<&str> = Vec::new();
    for result in results {
        if !families.contains(&result.kind.as_str()) {
            families.push(&result.kind);
        }
    }
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "{family}");
        for result in results.iter().filter(|result| result.kind == family) {
            let status = result.status().label();
            let mut metrics: Vec<(&String, &f64)> = result.metrics.iter().collect();
            metrics.sort_by(|a, b| a.0.cmp(b.0));
            let metrics: Vec<String> =
                metrics.iter().map(|(name, value)| format!("{name}={}", format_value(**value))).collect();
            let _ = write!(out, "  {:<28} {:<8} {}", result.check_id, status, metrics.join(" "));
            if !result.message.is_empty() {
                let _ = write!(out, "  ({})", result.message);
            }
            out.push('\n');
        }
    }
    out
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.2}") }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use nightowl_proto::{CheckResult, ProbeStatus};

    use super::*;

    #[test]
    fn check_output_groups_by_family() {
        let result =
            |id: &str, kind: &str, status: ProbeStatus, metrics: &[(&str, f64)], message: &str| CheckResult {
                check_id: id.into(),
                kind: kind.into(),
                status: status as i32,
                metrics: metrics
                    .iter()
                    .map(|(name, value)| (name.to_string(), *value))
                    .collect::<HashMap<_, _>>(),
                message: message.into(),
            };
        let text = render_check(&[
            result("disk:/", "disk", ProbeStatus::Ok, &[("used_pct", 42.126), ("free_bytes", 1024.0)], ""),
            result("host", "host", ProbeStatus::Ok, &[("cpu_pct", 3.5)], ""),
            result("disk:/backup", "disk", ProbeStatus::Unknown, &[], "/backup is not a mount point"),
        ]);
        assert_eq!(
            text,
            "disk\n  disk:/                       ok       free_bytes=1024 used_pct=42.13\n  \
             disk:/backup                 unknown    (/backup is not a mount point)\n\
             host\n  host                         ok       cpu_pct=3.50\n"
        );
    }
}
