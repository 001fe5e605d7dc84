//! The backup probe's state file: what must survive an agent restart.
//!
//! One JSON file per check, `<probe state dir>/backup-<name>.json`, `/` in the name
//! written as `%2F` (`%` cannot occur in a check name, so the mapping is one-to-one):
//!
//! ```json
//! {
//!   "version": 1,
//!   "path": { "pattern": "/backups/db-*", "newest": { "path": "…", "mtime_ns": 0, "size": 1 },
//!             "newest_failure": null, "last_success_s": 1700000000.0 },
//!   "log": { "file": "/var/log/backup.log", "success": "…", "failure": "…",
//!            "identity": { "dev": 2049, "ino": 1234 }, "offset": 4096, "last_result": true,
//!            "last_success_s": 1700000000.0, "last_failure_s": null, "last_failure_line": null },
//!   "command": { "command": ["…"], "last_success_s": 1700000000.0 }
//! }
//! ```
//!
//! Invariants: the file is replaced atomically (temporary file in the same directory,
//! fsync, rename), so a crash leaves the old or the new state, never a torn one. Each part
//! records the config it belongs to; a source drops a part written for another config.
//! A file that cannot be read or parsed is logged and ignored: the probe starts afresh.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{command, files, log};

/// The format version written; files of another version are ignored.
pub(super) const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct StateFile {
    pub version: u32,
    pub path: Option<files::PathState>,
    pub log: Option<log::LogState>,
    pub command: Option<command::CommandState>,
}

/// Where check `name` keeps its state.
pub(super) fn file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("backup-{}.json", name.replace('/', "%2F")))
}

/// Reads the state; a missing, unreadable or foreign file yields the empty state.
/// Also returns the bytes read, so an unchanged state is not written again.
pub(super) fn load(path: &Path) -> (StateFile, Option<Vec<u8>>) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (StateFile::default(), None),
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read backup probe state; starting afresh");
            return (StateFile::default(), None);
        }
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(state) if state.version == VERSION => (state, Some(bytes)),
        Ok(state) => {
            tracing::warn!(file = %path.display(), version = state.version, "unknown backup probe state version; starting afresh");
            (StateFile::default(), None)
        }
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "corrupt backup probe state; starting afresh");
            (StateFile::default(), None)
        }
    }
}

/// Replaces the state file atomically, creating its directory if needed.
pub(super) fn store(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests;
