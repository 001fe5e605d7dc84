//! Config hot reload: the agent watches its config file and re-runs the same load +
//! validate path as at startup. A valid edit is applied to the probe units (see
//! `Sampler::apply`); an invalid one is refused with the error and the running checks
//! stay. Changes that cannot be applied live (collector, state dir, spool, heartbeat)
//! are logged as needing a restart.
//!
//! The watch is on the file's directory, not the file: editors and config management
//! replace files by rename, which a watch on the old inode would miss.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};

/// Edits closer together than this are one reload (one save fires several events).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `path` and sends each reload attempt's outcome to `reloads`, until dropped
/// (the agent runs it as a supervised task: see `crate::supervise`). Returns an error
/// when the watch cannot be set up, and Ok only once `reloads` is closed.
pub async fn watch(path: PathBuf, reloads: mpsc::Sender<Result<Config, ConfigError>>) -> notify::Result<()> {
    let directory =
        path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let (events, mut raw) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        Ok(event) => {
            if event.paths.iter().any(|changed| changed.file_name() == file_name.as_deref()) {
                // The receiver is gone only when this watch ends.
                let _ = events.send(());
            }
        }
        Err(error) => tracing::warn!(%error, "config watch error"),
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    // The watcher lives as long as this future: `raw` ends only when it is dropped.
    while raw.recv().await.is_some() {
        // Debounce: wait until the edits stop.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw.recv()).await {}
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
