//! Hot reload of a file the collector loaded at startup (the rules file, the policy
//! file): watch it, load it again through the same function as at startup on every
//! change, and publish each valid new value on a `watch` channel. An invalid edit is
//! refused with the loader's error (file, item, reason) and the value in force stays.
//! Each session picks the new value up from its receiver.
//!
//! The watch itself (on the file's directory, debounced) is `crate::file_watch`, shared
//! with the agent's config reload.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

use crate::file_watch;

/// Watches `path` and publishes every value `load` accepts on `publish`; `what` names
/// the file in log lines ("rules", "policies"). Keep the returned watcher alive for as
/// long as reloads are wanted; the reload task ends when every receiver is gone.
pub fn watch_file<T, E>(
    path: PathBuf,
    what: &'static str,
    load: fn(&Path) -> Result<T, E>,
    publish: watch::Sender<Arc<T>>,
) -> notify::Result<notify::RecommendedWatcher>
where
    T: Send + Sync + 'static,
    E: Display + Send + 'static,
{
    let (watcher, mut changes) = file_watch::watch_file(&path)?;
    tokio::spawn(async move {
        while changes.next().await.is_some() {
            let load_path = path.clone();
            match tokio::task::spawn_blocking(move || load(&load_path)).await {
                Ok(Ok(loaded)) => {
                    tracing::info!(what, file = %path.display(), "{what} reloaded");
                    if publish.send(Arc::new(loaded)).is_err() {
                        return;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, what, "{what} reload refused; what is in force stays")
                }
                Err(error) => tracing::error!(%error, what, "{what} reload task failed"),
            }
        }
    });
    Ok(watcher)
}
