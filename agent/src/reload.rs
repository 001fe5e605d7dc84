//! Config hot reload: the agent watches its config file and re-runs the same load +
//! validate path as at startup. A valid edit is applied to the probe units (see
//! `Sampler::apply`); an invalid one is refused with the error and the running checks
//! stay. Changes that cannot be applied live (collector, state dir, spool, heartbeat)
//! are logged as needing a restart.
//!
//! The watch itself (on the file's directory, so that a replace by rename is seen;
//! debounced) is the collector's `file_watch`, compiled here as a `#[path]` module: the
//! two crates share no library but the wire protocol, and one watcher is written once.

use std::path::PathBuf;

use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};

#[path = "../../collector/src/file_watch.rs"]
mod file_watch;

/// Watches `path` and sends each reload attempt's outcome to `reloads`, until dropped
/// (the agent runs it as a supervised task: see `crate::supervise`). Returns an error
/// when the watch cannot be set up, and Ok only once `reloads` is closed.
pub async fn watch(path: PathBuf, reloads: mpsc::Sender<Result<Config, ConfigError>>) -> notify::Result<()> {
    let (watcher, mut changes) = file_watch::watch_file(&path)?;
    // The watcher lives as long as this future: `changes` ends only when it is dropped.
    while changes.next().await.is_some() {
        let load_path = path.clone();
        let loaded =
            match crate::blocking::spawn("loading the config", move || Config::load(&load_path)).await {
                Ok(loaded) => loaded,
                Err(error) => {
                    tracing::error!(%error, "config reload task failed");
                    continue;
                }
            };
        if reloads.send(loaded).await.is_err() {
            break;
        }
    }
    drop(watcher);
    Ok(())
}

/// Logs the edits that a reload does not apply.
pub fn warn_unapplied(current: &Config, new: &Config) {
    let mut restart = Vec::new();
    if current.collector != new.collector {
        restart.push("[collector]");
    }
    if current.state_dir != new.state_dir {
        restart.push("agent.state_dir");
    }
    if current.heartbeat != new.heartbeat {
        restart.push("agent.heartbeat");
    }
    if current.spool != new.spool {
        restart.push("[spool]");
    }
    if !restart.is_empty() {
        tracing::warn!(changed = ?restart, "these config changes take effect after a restart");
    }
}
