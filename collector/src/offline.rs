//! Agent offline detection: "server offline" is the first overnight scenario.
//!
//! Every agent has a [`Presence`] (in the ingest registry): when it was last heard (any
//! message: report or heartbeat), whether a session is up, its address and labels. The
//! [`monitor`] looks every [`SCAN_EVERY`]:
//!
//! - an agent silent for longer than `after` (default 25 s; heartbeats come every 10 s)
//!   gets ONE `agent_offline` alert. Before emitting it the monitor probes the agent's
//!   last address with TCP connects to a few ports common on servers and workstations:
//!   any answer — a connection, or a refusal (RST) — means the host is up and only the
//!   agent is down; silence on all of them means the host or the network is down. The
//!   summary says which.
//! - an agent heard again (its session is back) resolves the alert.
//!
//! Severity by the agent's `role` label: server P1, workstation P4, anything else P2.
//! The alert's state lives in `check_states` (check `agent`, rule `agent_offline`) like
//! any other, so it fires and resolves exactly once across collector restarts. After a
//! restart every agent gets `after` of grace from the collector's start, so a restart
//! does not page for agents that are simply reconnecting.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::alert::{Severity, Status};
use crate::evaluate::{CheckState, Level, StateKey, StateUpdate};
use crate::identity::AgentIdentity;
use crate::queue::{CommitReport, Store};

/// Check id and rule name of the offline alert (part of its fingerprint).
pub use crate::synthetic::offline::{CHECK, RULE};
/// How often the monitor looks (adds at most this much to `after`).
pub const SCAN_EVERY: Duration = Duration::from_secs(1);

/// `[offline]` in the collector config.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineConfig {
    /// Silence longer than this makes an agent offline.
    pub after: Duration,
    /// Ports tried to tell "host up, agent down" from "host unreachable".
    pub probe_ports: Vec<u16>,
    pub probe_timeout: Duration,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self {
            // Two missed heartbeats and a half. With the scan (≤ 1 s) and the probe (at
            // once when the host answers, ≤ `probe_timeout` when it is silent) the alert
            // is out within 30 s of the agent's last word (issue 6's target).
            after: Duration::from_secs(25),
            probe_ports: vec![22, 135, 445, 3389, 80, 443],
            probe_timeout: Duration::from_secs(3),
        }
    }
}

/// What the collector knows about an agent's liveness. Updated by its sessions (cheap
/// atomics on every message), read by the monitor.
#[derive(Debug, Default)]
pub struct Presence {
    /// Unix ms of the last message (0: never heard since the collector started).
    last_heard_ms: AtomicI64,
    connected: AtomicBool,
    details: Mutex<Details>,
}

#[derive(Debug, Default, Clone)]
struct Details {
    address: Option<IpAddr>,
    labels: BTreeMap<String, String>,
    /// The offline alert's state.
    offline: Option<CheckState>,
    /// A probe + commit is under way.
    busy: bool,
}

impl Presence {
    pub fn heard(&self, at: jiff::Timestamp) {
        self.last_heard_ms.fetch_max(at.as_millisecond(), Ordering::Relaxed);
    }

    pub fn connected(&self, address: Option<IpAddr>, labels: BTreeMap<String, String>, at: jiff::Timestamp) {
        {
            let mut details = self.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            details.address = address.or(details.address);
            details.labels = labels;
        }
        self.connected.store(true, Ordering::Relaxed);
        self.heard(at);
    }

    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    /// Seeds a presence from the store at startup.
    pub fn known(
        last_seen: Option<jiff::Timestamp>,
        address: Option<IpAddr>,
        labels: BTreeMap<String, String>,
        offline: Option<CheckState>,
    ) -> Presence {
        let presence = Presence::default();
        presence.last_heard_ms.store(last_seen.map_or(0, |at| at.as_millisecond()), Ordering::Relaxed);
        *presence.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Details { address, labels, offline, busy: false };
        presence
    }
}

/// The agents to watch: a snapshot of the registry.
pub trait Agents: Send + Sync + 'static {
    fn snapshot(&self) -> Vec<(AgentIdentity, Arc<Presence>)>;
}

/// Runs until `shutdown`.
pub async fn monitor(
    agents: Arc<dyn Agents>,
    store: Store,
    config: OfflineConfig,
    shutdown: CancellationToken,
) {
    let started = jiff::Timestamp::now();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut scan = tokio::time::interval(SCAN_EVERY);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = scan.tick() => {}
        }
        let now = jiff::Timestamp::now();
        for (identity, presence) in agents.snapshot() {
            let heard_ms = presence.last_heard_ms.load(Ordering::Relaxed).max(started.as_millisecond());
            let heard = jiff::Timestamp::from_millisecond(heard_ms).unwrap_or(started);
            let silent = now.duration_since(heard);
            let limit = jiff::SignedDuration::try_from(config.after).unwrap_or(jiff::SignedDuration::MAX);
            let firing = {
                let mut details = presence.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if details.busy {
                    continue;
                }
                let firing = details.offline.as_ref().is_some_and(|state| state.emitted.is_firing());
                let wanted = silent > limit;
                if wanted == firing || (!wanted && !presence.connected.load(Ordering::Relaxed)) {
                    continue;
                }
                details.busy = true;
                firing
            };
            let store = store.clone();
            let config = config.clone();
            tasks.spawn(async move {
                // Reset even if the transition panics: else this agent is never looked at again.
                let busy = Busy(presence);
                transition(&store, &config, &identity, &busy.0, firing, heard, silent, now).await;
            });
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Marks an agent's offline transition as in progress; dropping it ends that.
struct Busy(Arc<Presence>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).busy = false;
    }
}

#[allow(clippy::too_many_arguments)]
async fn transition(
    store: &Store,
    config: &OfflineConfig,
    identity: &AgentIdentity,
    presence: &Presence,
    firing: bool,
    heard: jiff::Timestamp,
    silent: jiff::SignedDuration,
    now: jiff::Timestamp,
) {
    let (address, labels, previous) = {
        let details = presence.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (details.address, details.labels.clone(), details.offline.clone())
    };
    let severity = severity_for(&labels);
    let previous = previous.unwrap_or_else(|| CheckState::ok(0.0));
    let silent_s = silent.as_secs_f64().max(0.0);
    let (status, state, summary) = if firing {
        let state =
            CheckState { level: Level::Ok, emitted: Level::Ok, started_at: None, ..CheckState::ok(0.0) };
        (
            Status::Resolved,
            state,
            format!("Agent {} is back online (silent for {})", identity.agent, seconds(silent_s)),
        )
    } else {
        let reach = match address {
            Some(address) => probe(address, &config.probe_ports, config.probe_timeout).await,
            None => Reach::NoAddress,
        };
        let state = CheckState {
            level: Level::Critical,
            emitted: Level::Critical,
            started_at: Some(heard),
            ..CheckState::ok(silent_s)
        };
        let summary = format!(
            "Agent {} offline: nothing heard for {}; {}",
            identity.agent,
            seconds(silent_s),
            reach.describe()
        );
        (Status::Firing, state, summary)
    };
    let event = crate::synthetic::Event {
        identity,
        check: CHECK,
        rule: RULE,
        status,
        severity,
        summary,
        value: silent_s,
        threshold: config.after.as_secs_f64(),
        started_at: previous.started_at.or(state.started_at).unwrap_or(heard),
        labels,
    }
    .at(now);
    let fingerprint = event.fingerprint.clone();
    let update =
        StateUpdate::set(StateKey { check: CHECK.into(), rule: RULE.into() }, fingerprint, state.clone());
    let committed = store
        .commit(CommitReport {
            identity: identity.clone(),
            stream_id: None,
            seq: None,
            events: vec![event.clone()],
            updates: vec![update],
            at: now,
        })
        .await;
    match committed {
        Ok(_) => {
            tracing::info!(tenant = %identity.tenant, agent = %identity.agent, status = ?event.status, summary = %event.summary, "alert event queued");
            presence.details.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).offline = Some(state);
        }
        // Not durable: the state stays as it was and the next scan tries again.
        Err(error) => tracing::error!(%error, agent = %identity, "offline transition not committed"),
    }
}

pub(crate) fn severity_for(labels: &BTreeMap<String, String>) -> Severity {
    match labels.get("role").map(String::as_str) {
        Some("server") => Severity::P1,
        Some("workstation") => Severity::P4,
        _ => Severity::P2,
    }
}

fn seconds(value: f64) -> String {
    humantime::format_duration(Duration::from_secs(value as u64)).to_string()
}

/// What the reachability probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Something answered on this port (accepted or refused): the host is up.
    Answered {
        address: IpAddr,
        port: u16,
        refused: bool,
    },
    /// No answer on any port.
    Silent {
        address: IpAddr,
    },
    NoAddress,
}

impl Reach {
    pub fn describe(&self) -> String {
        match self {
            Reach::Answered { address, port, refused } => format!(
                "host {address} is reachable (TCP {port} {}): the agent itself is down",
                if *refused { "refused" } else { "accepted" }
            ),
            Reach::Silent { address } => {
                format!("host {address} is unreachable (no answer on TCP): host down or network cut")
            }
            Reach::NoAddress => "its address is unknown, so reachability was not probed".into(),
        }
    }
}

/// Tries all ports at once; the first answer wins.
pub async fn probe(address: IpAddr, ports: &[u16], timeout: Duration) -> Reach {
    let mut attempts = tokio::task::JoinSet::new();
    for &port in ports {
        attempts.spawn(async move {
            let connect = tokio::net::TcpStream::connect(SocketAddr::new(address, port));
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Some((port, false)),
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Some((port, true)),
                _ => None,
            }
        });
    }
    while let Some(joined) = attempts.join_next().await {
        if let Ok(Some((port, refused))) = joined {
            attempts.abort_all();
            return Reach::Answered { address, port, refused };
        }
    }
    Reach::Silent { address }
}

#[cfg(test)]
mod tests;
