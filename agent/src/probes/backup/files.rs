//! The `path` source: the newest file (or directory) matching a glob is the latest backup.
//!
//! - Its mtime is the last success, its size `size_bytes` (directories have no size).
//! - Matches modified less than `settle` ago are still being written: skipped, and the
//!   newest older match is judged instead (counted in the message). This keeps a dump
//!   caught half-written — empty, or smaller than yesterday's — from reading as a failure.
//! - Failures: no match at all; an empty newest file; a newest file smaller than the
//!   previous newest file seen (by more than `shrink_tolerance_pct`). The previous
//!   newest file and its verdict are kept in the state file, so the comparison survives
//!   a restart and a verdict sticks to its file until a newer one appears.
//! - Listing runs on its own thread: a glob over a dead network filesystem blocks in the
//!   kernel. A listing that outlives `timeout` is reported as not checked and awaited
//!   again by the next sample (one stuck thread per check at most, never one per sample).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{Evidence, human_age, human_bytes, unix_seconds};

/// What the state file keeps for a `path` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PathState {
    /// The glob this state belongs to; state for another glob is dropped.
    pub pattern: String,
    /// The newest settled match seen at the last sample.
    pub newest: Option<SeenFile>,
    /// Why `newest` is a failure; None when it was fine.
    pub newest_failure: Option<String>,
    /// The mtime of the latest newest match that was fine.
    pub last_success_s: Option<f64>,
}

/// One match, as compared between samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct SeenFile {
    pub path: String,
    pub mtime_ns: i64,
    /// None for a directory.
    pub size: Option<u64>,
}

/// What one listing found.
#[derive(Debug, Clone, PartialEq)]
struct Scan {
    /// The newest match modified at least `settle` ago.
    newest: Option<SeenFile>,
    /// How many matches were modified within `settle`.
    being_written: usize,
    /// The first error met while listing (an unreadable directory, a vanished file).
    error: Option<String>,
}

pub(super) struct FilesSource {
    pattern: String,
    settle: Duration,
    shrink_tolerance_pct: f64,
    timeout: Duration,
    pub(super) state: PathState,
    /// A listing that outlived a sample's timeout, awaited again by the next sample.
    pending: Option<oneshot::Receiver<Result<Scan, String>>>,
}

impl FilesSource {
    pub(super) fn new(
        pattern: String,
        settle: Duration,
        shrink_tolerance_pct: f64,
        timeout: Duration,
        saved: Option<PathState>,
    ) -> Self {
        let state = saved.filter(|saved| saved.pattern == pattern).unwrap_or_else(|| PathState {
            pattern: pattern.clone(),
            newest: None,
            newest_failure: None,
            last_success_s: None,
        });
        Self { pattern, settle, shrink_tolerance_pct, timeout, state, pending: None }
    }

    pub(super) async fn sample(&mut self) -> Result<Evidence, String> {
        if self.pending.is_none() {
            let (sender, receiver) = oneshot::channel();
            let pattern = self.pattern.clone();
            let settle = self.settle;
            let spawned = std::thread::Builder::new().name("backup-path".into()).spawn(move || {
                // The receiver is gone only when the probe was dropped: nobody to tell.
                let _ = sender.send(scan(&pattern, settle));
            });
            if let Err(error) = spawned {
                return Err(format!("cannot start a thread to list {}: {error}", self.pattern));
            }
            self.pending = Some(receiver);
        }
        let Some(receiver) = self.pending.as_mut() else { unreachable!("set above") };
        let listed = match tokio::time::timeout(self.timeout, receiver).await {
            Ok(listed) => listed,
            Err(_) => {
                return Err(format!(
                    "listing {} did not finish within {} (hung filesystem?)",
                    self.pattern,
                    humantime::format_duration(self.timeout)
                ));
            }
        };
        self.pending = None;
        match listed {
            Ok(Ok(scan)) => self.judge(scan, unix_seconds(SystemTime::now())),
            Ok(Err(error)) => Err(error),
            Err(_) => Err("the file listing thread ended without an answer".into()),
        }
    }

    /// Turns a listing into evidence, updating the remembered newest file.
    fn judge(&mut self, scan: Scan, now: f64) -> Result<Evidence, String> {
        let mut notes = Vec::new();
        if scan.being_written > 0 {
            notes.push(format!(
                "{} newer match(es) modified within {}, taken as still being written",
                scan.being_written,
                humantime::format_duration(self.settle)
            ));
        }
        if let Some(error) = &scan.error {
            notes.push(format!("not everything could be listed: {error}"));
        }
        let with_notes = |text: String| {
            if notes.is_empty() { text } else { format!("{text} ({})", notes.join("; ")) }
        };
        let state = &mut self.state;
        let Some(newest) = scan.newest else {
            if scan.being_written > 0 {
                return Ok(Evidence {
                    last_success: state.last_success_s,
                    reports_success: true,
                    last_result: None,
                    size_bytes: None,
                    detail: with_notes(format!("no completed file matching {} yet", self.pattern)),
                });
            }
            if let Some(error) = scan.error {
                return Err(format!("cannot list {}: {error}", self.pattern));
            }
            return Ok(Evidence {
                last_success: state.last_success_s,
                reports_success: true,
                last_result: Some(false),
                size_bytes: None,
                detail: format!("no file matches {}", self.pattern),
            });
        };
        let failure = if state.newest.as_ref() == Some(&newest) {
            state.newest_failure.clone()
        } else {
            let previous_size = state.newest.as_ref().and_then(|previous| previous.size);
            let failure = match (newest.size, previous_size) {
                (Some(0), _) => Some(format!("newest file {} is empty (0 bytes)", newest.path)),
                (Some(size), Some(previous))
                    if (size as f64) < previous as f64 * (1.0 - self.shrink_tolerance_pct / 100.0) =>
                {
                    let previous_path = state.newest.as_ref().map_or("", |previous| previous.path.as_str());
                    Some(format!(
                        "newest file {} shrank: {} ({size} bytes), the previous newest {previous_path} had {} \
                         ({previous} bytes)",
                        newest.path,
                        human_bytes(size),
                        human_bytes(previous),
                    ))
                }
                _ => None,
            };
            state.newest = Some(newest.clone());
            state.newest_failure = failure.clone();
            failure
        };
        let mtime = newest.mtime_ns as f64 / 1e9;
        let size_text = newest.size.map_or_else(|| "directory".to_owned(), human_bytes);
        let description =
            format!("newest {} ({size_text}, modified {} ago)", newest.path, human_age(now - mtime));
        Ok(match failure {
            None => {
                state.last_success_s = Some(mtime);
                Evidence {
                    last_success: Some(mtime),
                    reports_success: true,
                    last_result: Some(true),
                    size_bytes: newest.size,
                    detail: with_notes(description),
                }
            }
            Some(reason) => Evidence {
                last_success: state.last_success_s,
                reports_success: true,
                last_result: Some(false),
                size_bytes: newest.size,
                detail: with_notes(format!("{reason}; {description}")),
            },
        })
    }
}

/// Lists the matches of `pattern` (blocking).
fn scan(pattern: &str, settle: Duration) -> Result<Scan, String> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let paths =
        glob::glob_with(pattern, options).map_err(|error| format!("invalid pattern {pattern:?}: {error}"))?;
    let now = SystemTime::now();
    let mut scan = Scan { newest: None, being_written: 0, error: None };
    for entry in paths {
        let path: PathBuf = match entry {
            Ok(path) => path,
            Err(error) => {
                scan.error.get_or_insert_with(|| error.to_string());
                continue;
            }
        };
        // Follows symlinks: a link to the latest dump counts as the dump.
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) => {
                scan.error.get_or_insert_with(|| format!("{}: {error}", path.display()));
                continue;
            }
        };
        if !metadata.is_file() && !metadata.is_dir() {
            continue;
        }
        let Ok(modified) = metadata.modified() else { continue };
        let recent = !settle.is_zero() && now.duration_since(modified).map_or(true, |age| age < settle);
        if recent {
            scan.being_written += 1;
            continue;
        }
        let seen = SeenFile {
            path: path.to_string_lossy().into_owned(),
            mtime_ns: unix_nanos(modified),
            size: metadata.is_file().then_some(metadata.len()),
        };
        let newer = scan
            .newest
            .as_ref()
            .is_none_or(|newest| (seen.mtime_ns, &seen.path) > (newest.mtime_ns, &newest.path));
        if newer {
            scan.newest = Some(seen);
        }
    }
    Ok(scan)
}

fn unix_nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |nanos| -nanos),
    }
}

#[cfg(test)]
mod tests;
