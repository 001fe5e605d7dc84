//! # nightowl-agent
//!
//! Runs on every managed endpoint: samples health, keeps every report in a durable
//! spool until the collector acks it, and streams reports over one mutual-TLS gRPC
//! session. Opens no listening port; runs no command the collector sends.
//!
//! # Layout
//! - `config`: raw TOML → validated [`config::Config`]; errors name file and key.
//! - `duration`: [`duration::HumanDuration`] ("10s", "26h") for every config struct; a leaf.
//! - `probes/`: one module per health family; each owns its config section and exposes
//!   one sampling function. A failing probe yields an UNKNOWN result, never a dead loop.
//! - `spool`: durable, bounded queue of reports not yet acked by the collector, and the
//!   check ids each unit reported last (to retire a unit removed while the agent was down).
//! - `sampler`: runs every probe unit as its own task (interval on a per-agent grid + event hook),
//!   batches results into reports, appends them to the spool; applies config reloads.
//! - `session/`: connect, Hello, stream the spool, apply acks, reconnect with backoff.
//! - `reload`: watches the config file and re-runs the same load + validate path.
//! - `policy`: central policy from the collector: checked (nothing that executes),
//!   merged with the local checks (local wins), persisted, reported as `agent:policy`.
//! - `supervise`: every long-running task is critical (its end stops the agent),
//!   restarted with backoff and counted, or a probe unit that restarts its own probe.
//! - `blocking`: blocking calls on tokio's pool, named, so that a bounded shutdown can
//!   say which it left running.
//!
//! Data path: `probes` → `sampler` → `spool` → `session` → collector → Ack → `spool`
//! deletes.

#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod policy;
pub mod probes;
pub mod sampler;
pub mod session;
pub mod spool;
// The collector's supervisor, one file for both binaries (see its module doc).
#[path = "../../collector/src/supervise/mod.rs"]
pub mod supervise;

mod blocking;
mod reload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::policy::Policy;
use crate::probes::ProbeContext;
use crate::probes::policy_status::{PolicyStatus, StatusWatch};
use crate::sampler::{Applied, Sampler};
use crate::session::AgentInfo;
use crate::spool::{SharedSpool, Spool, SpoolError};
use crate::supervise::Supervisor;

/// How long the agent waits at shutdown for its tasks and its blocking calls (a spool
/// commit, a probe's file read) to end before it exits without them, naming them. A
/// blocking call cannot be cancelled; one stuck on a hung mount would otherwise hold the
/// exit forever.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{file}: [collector] section missing: `run` needs url, ca, cert and key")]
    NoCollector { file: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("stopped after a failure: {0}")]
    TaskFailed(supervise::Failure),
    #[error("shutdown did not finish within {grace:?}; left running: {left:?}")]
    ShutdownTimedOut { grace: Duration, left: Vec<String> },
}

/// Runs the agent until `shutdown` resolves: every probe unit samples into the spool; the
/// session streams the spool to the collector. With `config_path`, edits of that file
/// are applied to the probe units without touching the session (an invalid edit is
/// refused and the running checks stay). The collector's central policy is merged with
/// the local checks (see [`policy`]); the last accepted one is kept in the state dir.
///
/// Every task runs under a [`supervise::Supervisor`]; a critical one that fails stops the
/// agent like `shutdown` does, and is returned as [`RunError::TaskFailed`]. Stopping waits
/// at most [`SHUTDOWN_GRACE`] for the tasks and blocking calls to end, then returns
/// [`RunError::ShutdownTimedOut`] naming those left.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let collector =
        config.collector.clone().ok_or_else(|| RunError::NoCollector { file: config.source.clone() })?;
    let spool = Spool::open(&config.state_dir, config.spool)?;
    let stats = spool.stats()?;
    // The units that reported before this start: those no longer configured are retired.
    let remembered = spool.unit_checks()?;
    tracing::info!(
        state_dir = %config.state_dir.display(),
        pending = stats.pending,
        next_seq = stats.next_seq,
        stream_id = %stats.stream_id,
        interval = ?config.interval,
        units = config.units.len(),
        collector = %collector.url,
        "agent starting"
    );
    let spool: SharedSpool = Arc::new(Mutex::new(spool));
    let new_report = Arc::new(Notify::new());
    let token = CancellationToken::new();
    let supervisor = Supervisor::new();

    let (policy_sender, mut policy_messages) = watch::channel(None);
    {
        // Restarted: the session starts over from the spool (the collector acks what it has).
        let (spool, new_report, token) = (spool.clone(), new_report.clone(), token.clone());
        let info = AgentInfo::detect(config.labels.clone());
        let heartbeat = config.heartbeat;
        supervisor.restarting("session", token.clone(), move || {
            session::run(
                collector.clone(),
                spool.clone(),
                info.clone(),
                heartbeat,
                new_report.clone(),
                policy_sender.clone(),
                token.clone(),
            )
        });
    }
    let context = ProbeContext { state_dir: config.state_dir.clone() };
    let mut sampler = Sampler::new(context, spool, remembered, new_report, token.clone(), supervisor.clone());
    let policy = match Policy::load(&config.state_dir, config.interval) {
        Ok(Some(policy)) => {
            tracing::info!(version = %format!("{:016x}", policy.version), policies = ?policy.names, "saved central policy loaded");
            policy
        }
        Ok(None) => Policy::default(),
        Err(error) => {
            tracing::warn!(%error, "saved central policy not usable; running local checks until the collector sends one");
            Policy::default()
        }
    };
    let (status, status_receiver) = watch::channel(PolicyStatus::default());
    let mut checks = Checks { policy, refused: None, status, status_unit: StatusWatch::new(status_receiver) };
    checks.apply(&mut sampler, &config);

    let (reloads, mut reloaded) = tokio::sync::mpsc::channel(4);
    if let Some(path) = config_path {
        // Restarted: a watch that failed (or could not be set up) is set up again.
        // A run is not dropped at shutdown (the supervisor waits for it): it ends with
        // the token, since a watch holds nothing a cancellation could lose.
        let stop = token.clone();
        supervisor.restarting("config watcher", token.clone(), move || {
            let (watch, stop) = (reload::watch(path.clone(), reloads.clone()), stop.clone());
            async move {
                tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    watched = watch => watched,
                }
            }
        });
    }
    let mut current = config;
    let failed = supervisor.failed();
    tokio::pin!(shutdown, failed);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("shutdown requested");
                break;
            }
            failure = &mut failed => {
                tracing::error!(%failure, "stopping after a task failure");
                break;
            }
            Ok(()) = policy_messages.changed() => {
                let Some(message) = policy_messages.borrow_and_update().clone() else { continue };
                // Saving the policy may block on the disk: it does not hold up a shutdown.
                tokio::select! {
                    () = &mut shutdown => {
                        tracing::info!("shutdown requested");
                        break;
                    }
                    () = checks.receive(&message, &mut sampler, &current) => {}
                }
            }
            Some(loaded) = reloaded.recv() => match loaded {
                Ok(new_config) => {
                    reload::warn_unapplied(&current, &new_config);
                    let (applied, _) = checks.apply(&mut sampler, &new_config);
                    tracing::info!(
                        started = ?applied.started,
                        restarted = ?applied.restarted,
                        stopped = ?applied.stopped,
                        unchanged = applied.unchanged,
                        "config reloaded"
                    );
                    current = new_config;
                }
                Err(error) => tracing::warn!(%error, "config reload refused; the running checks stay as they are"),
            },
        }
    }
    token.cancel();
    drop(sampler);
    // Units and session stop at their next await point, the reporter after the report it
    // is writing; the spool keeps whatever is unacked. Blocking calls cannot be stopped:
    // those the grace does not see end are left to the process exit.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    let mut left = supervisor.drain(deadline).await;
    left.extend(blocking::drain(deadline).await.into_iter().map(|call| format!("blocking call: {call}")));
    let (restarts, probe_panics) = (supervisor.restarts(), supervisor.caught_panics());
    if let Some(failure) = supervisor.failure() {
        tracing::error!(%failure, restarts, probe_panics, "agent stopped after a task failure");
        return Err(RunError::TaskFailed(failure));
    }
    if !left.is_empty() {
        tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            not_stopped = ?left,
            restarts,
            probe_panics,
            "shutdown grace expired; the agent exits without what did not stop"
        );
        return Err(RunError::ShutdownTimedOut { grace: SHUTDOWN_GRACE, left });
    }
    tracing::info!(restarts, probe_panics, "agent stopped");
    Ok(())
}

/// What the agent runs: the local config's units, the central policy's (local wins), and
/// the `agent:policy` status unit.
struct Checks {
    /// The policy in force (the default, empty one when there is none).
    policy: Policy,
    /// The latest policy refused since `policy` was accepted.
    refused: Option<policy::Refused>,
    status: watch::Sender<PolicyStatus>,
    status_unit: StatusWatch,
}

impl Checks {
    /// Merges `config`'s units with the policy and makes that the running set; returns
    /// what changed and what the policy contributed (`Merged::units` left empty).
    fn apply(&self, sampler: &mut Sampler, config: &Config) -> (Applied, policy::Merged) {
        let policy_units = self.policy.units(config.interval).unwrap_or_else(|reason| {
            // Accepted with the same validation; only a changed default interval could
            // matter here, and it does not make a check invalid.
            tracing::error!(%reason, "the policy in force no longer validates; its checks stop");
            Vec::new()
        });
        let mut merged = policy::merge(&config.units, &self.policy, policy_units);
        let mut units = std::mem::take(&mut merged.units);
        units.push(self.status_unit.unit(config.interval));
        let status = PolicyStatus {
            version: self.policy.version,
            names: self.policy.names.clone(),
            checks: merged.added.len(),
            conflicts: merged.conflicts.len(),
            refused: self.refused.as_ref().map(ToString::to_string),
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
        (sampler.apply(&units), merged)
    }

    /// A Policy message from the collector: accepted (saved, merged, applied) or refused
    /// (logged, reported; the running checks stay).
    async fn receive(&mut self, message: &nightowl_proto::Policy, sampler: &mut Sampler, config: &Config) {
        let version = format!("{:016x}", message.version);
        if self.policy.is(message) && self.refused.is_none() {
            tracing::debug!(%version, "policy unchanged");
            return;
        }
        match Policy::accept(message, config.interval) {
            Ok(accepted) => {
                let state_dir = config.state_dir.clone();
                let saving = accepted.clone();
                match blocking::spawn("saving the policy", move || saving.save(&state_dir)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot save the policy; it applies now but not after a restart without the collector")
                    }
                    Err(error) => tracing::error!(%error, "policy save task failed"),
                }
                self.policy = accepted;
                self.refused = None;
                let (applied, merged) = self.apply(sampler, config);
                tracing::info!(
                    %version,
                    policies = ?self.policy.names,
                    added = ?merged.added,
                    conflicts = ?merged.conflicts,
                    started = ?applied.started,
                    restarted = ?applied.restarted,
                    stopped = ?applied.stopped,
                    "policy applied"
                );
            }
            Err(refused) => {
                tracing::warn!(
                    %version,
                    policies = ?message.policies,
                    reason = %refused.reason,
                    running = %format!("{:016x}", self.policy.version),
                    "policy refused; the checks running stay as they are"
                );
                self.refused = Some(refused);
                self.apply(sampler, config);
            }
        }
    }
}

/// `nightowl-agent check`: samples every probe once and renders the results grouped by
/// family.
///
/// `check` must not change what the running agent remembers (a reboot not yet
/// reported, a backup log's read position), so its probes work on a throwaway copy of
/// the probe state.
pub async fn check(config: &Config) -> String {
    let scratch = std::env::temp_dir().join(format!("nightowl-check-{}", std::process::id()));
    let live = ProbeContext { state_dir: config.state_dir.clone() };
    let context = ProbeContext { state_dir: scratch.clone() };
    if let Err(error) = copy_dir(&live.probe_state_dir(), &context.probe_state_dir()) {
        tracing::debug!(%error, "no probe state to copy for check");
    }
    let sampled = sampler::sample_once(&config.units, &context).await;
    if let Err(error) = std::fs::remove_dir_all(&scratch) {
        tracing::debug!(%error, path = %scratch.display(), "cannot remove check scratch state");
    }
    let results: Vec<nightowl_proto::CheckResult> =
        sampled.into_iter().flat_map(|(_, results)| results).collect();
    render_check(&results)
}

/// Copies the regular files of `from` into `to` (created), not recursing.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
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
    use nightowl_proto::{CheckResult, ProbeStatus};

    use super::*;

    #[test]
    fn check_output_groups_by_family() {
        let result =
            |id: &str, kind: &str, status: ProbeStatus, metrics: &[(&str, f64)], message: &str| CheckResult {
                check_id: id.into(),
                kind: kind.into(),
                status: status as i32,
                metrics: metrics.iter().map(|(name, value)| (name.to_string(), *value)).collect(),
                message: message.into(),
                interval_ms: 0,
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
