//! Rules hot reload: the collector watches its rules file and loads it again through
//! [`RuleSet::load`] on every change. A valid file replaces the rules for every session
//! (each picks it up before its next report); an invalid one is refused with the file,
//! rule and reason, and the rules in force stay.
//!
//! The watch is on the file's directory: editors and config management replace files by
//! rename, which a watch on the old inode would miss.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::RuleSet;

/// Edits closer together than this are one reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches `path` and publishes every valid new rule set on `rules`. Keep the returned
/// watcher alive for as long as reloads are wanted.
pub fn watch_rules(
    path: PathBuf,
    rules: watch::Sender<Arc<RuleSet>>,
) -> notify::Result<notify::RecommendedWatcher> {
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
        Err(error) => tracing::warn!(%error, "rules watch error"),
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        while raw.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw.recv()).await {}
            let load_path = path.clone();
            match tokio::task::spawn_blocking(move || RuleSet::load(&load_path)).await {
                Ok(Ok(loaded)) => {
                    tracing::info!(rules = loaded.rules().len(), file = %path.display(), "rules reloaded");
                    if rules.send(Arc::new(loaded)).is_err() {
                        return;
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, "rules reload refused; the rules in force stay"),
                Err(error) => tracing::error!(%error, "rules reload task failed"),
            }
        }
    });
    Ok(watcher)
}
