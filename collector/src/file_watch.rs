//! The debounced watch of one file, for the hot reloads of both crates (the collector's
//! rules and policy files, `config::watch`; the agent's config file, its `reload`).
//! [`watch_file`] returns the watcher and a [`FileChanges`] stream that yields once per
//! burst of changes to that file; what to load and what to do with it stays with the
//! caller.
//!
//! The watch is on the file's directory, not the file: editors and config management
//! replace files by rename, which a watch on the old inode would miss. Events for other
//! names in that directory, and access events, are dropped.
//!
//! The agent compiles this same file as its `reload::file_watch` (a `#[path]` module):
//! the two crates share no library but the wire protocol. So it uses only std, tokio,
//! notify and tracing, which both have.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Changes closer together than this are one change (one save fires several events).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// The debounced changes of one watched file; see [`watch_file`].
#[derive(Debug)]
pub struct FileChanges {
    raw: mpsc::UnboundedReceiver<()>,
}

impl FileChanges {
    /// Resolves once the file has changed and then been quiet for [`DEBOUNCE`]; `None`
    /// once the watcher is dropped (after the changes it had already seen).
    pub async fn next(&mut self) -> Option<()> {
        self.raw.recv().await?;
        // Debounce: wait until the changes stop.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.raw.recv()).await {}
        Some(())
    }
}

/// Starts watching `path`. Keep the returned watcher alive for as long as changes are
/// wanted: dropping it ends the [`FileChanges`].
pub fn watch_file(path: &Path) -> notify::Result<(RecommendedWatcher, FileChanges)> {
    let directory =
        path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let logged_path: PathBuf = path.to_path_buf();
    let (events, raw) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if event.kind.is_access() => {}
        Ok(event) => {
            if event.paths.iter().any(|changed| changed.file_name() == file_name.as_deref()) {
                // The receiver is gone only when the caller stopped listening.
                let _ = events.send(());
            }
        }
        Err(error) => tracing::warn!(%error, file = %logged_path.display(), "file watch error"),
    })?;
    watcher.watch(&directory, RecursiveMode::NonRecursive)?;
    Ok((watcher, FileChanges { raw }))
}

// An explicit path: the agent includes this file by `#[path]`, where a plain `mod tests;`
// would resolve beside the file rather than under `file_watch/`.
#[cfg(test)]
#[path = "file_watch/tests.rs"]
mod tests;
