//! Hot reload of a file the collector loaded at startup (the rules file, the policy
//! file): watch it, load it again through the same function as at startup on every
//! change, and publish each valid new value on a `watch` channel. An invalid edit is
//! refused with the loader's error (file, item, reason) and the value in force stays.
//! Each session picks the new value up from its receiver.
//!
//! The watch is on the file's directory: editors and config management replace files by
//! rename, which a watch on the old inode would miss.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

/// Edits closer together than this are one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

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
    let directory =
        path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let (events, mut raw) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        Ok(event) => {
            if event.paths.iter().any(|changed| changed.file_name() == file_name.as_deref()) {
                // The receiver is gone only at shutdown.
                let _ = events.send(());
            }
        }
        Err(error) => tracing::warn!(%error, what, "file watch error"),
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while raw.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw.recv()).await {}
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
