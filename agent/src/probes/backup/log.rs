//! The `log` source: a backup job's log file, watched and read incrementally.
//!
//! - **Watching.** The log's *directory* is watched (notify, non-recursive), so a
//!   rotation (rename, then create) is seen as well as appends. Every event naming the
//!   log file reads what is new, on notify's thread; a new matching line sets a flag and
//!   wakes [`LogSource::changed`]. Each sample reads too, so a missed event (network
//!   filesystems often send none) costs one interval, nothing more. A directory that
//!   cannot be watched is retried at every sample, as is one that was replaced (removed
//!   and made again: the watch died with the old one); meanwhile the file is still read.
//! - **Reading.** From the saved offset to the end, complete lines only (a line still
//!   being written waits; a last line without a newline is taken once the file has been
//!   quiet for 2 s). At most the last 1 MiB of what is new is read per pass — on the very
//!   first start that is the whole backlog looked at.
//! - **Rotation.** The open handle is kept. When the path names another file (another
//!   device/inode), the old file is read to its end first, then the new one from its
//!   start. **Truncation** (same file, shorter than the offset): read from the start.
//! - **Matching.** Each line is tried against `failure`, then `success`. Within one
//!   pass the latest matching line decides the result; a success line counts as a
//!   success at the file's mtime (the lines carry no time we could trust) — and only if
//!   no failure line follows it in the same pass. A failure line is kept (trimmed,
//!   200 bytes at most) for the message.
//! - **Restarts.** Offset, file identity and results are in the state file; after a
//!   restart reading resumes at the offset when the file is the same, so lines written
//!   while the agent was down are seen, and from the start of a file that replaced it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use notify::Watcher;
use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Evidence, MAX_LINE_BYTES, human_age, unix_seconds};

/// At most this much of what is new is read per pass (and on the first start).
const BACKLOG_BYTES: u64 = 1024 * 1024;

/// Longer lines are matched on their first 64 KiB.
const MAX_MATCH_BYTES: usize = 64 * 1024;

/// A last line without a newline is taken once the file has been quiet this long.
const QUIET: Duration = Duration::from_secs(2);

/// Which file a handle reads: device and inode on Unix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Identity {
    pub dev: u64,
    pub ino: u64,
}

/// What the state file keeps for a `log` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LogState {
    /// The config this state belongs to; state for another file or pattern is dropped.
    pub file: String,
    pub success: Option<String>,
    pub failure: Option<String>,
    /// The file `offset` refers to.
    pub identity: Option<Identity>,
    /// Bytes of that file already read.
    pub offset: u64,
    /// Whether the latest matching line was a success.
    pub last_result: Option<bool>,
    pub last_success_s: Option<f64>,
    pub last_failure_s: Option<f64>,
    pub last_failure_line: Option<String>,
}

/// Shared between the probe and notify's thread.
struct Shared {
    tail: Mutex<Tail>,
    /// A new matching line was read outside a sample.
    pending: AtomicBool,
    wake: Notify,
}

impl Shared {
    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Tail {
    path: PathBuf,
    success: Option<Regex>,
    failure: Option<Regex>,
    /// The file being read, kept open so a rotated file can be finished.
    open: Option<OpenLog>,
    /// True until the first open: only then may the saved offset be resumed.
    resume: bool,
    state: LogState,
    /// Why the last pass could not read the file; None when it could.
    read_error: Option<String>,
}

struct OpenLog {
    file: File,
    identity: Identity,
}

pub(super) struct LogSource {
    shared: Arc<Shared>,
    path: PathBuf,
    /// A pattern that does not compile (validate() prevents it; kept for robustness).
    config_error: Option<String>,
    watcher: Option<notify::RecommendedWatcher>,
    /// The directory `watcher` watches: when the path names another directory (removed
    /// and made again), the watch died with the old one.
    watched: Option<Identity>,
    watch_error: Option<String>,
}

impl LogSource {
    pub(super) fn new(
        path: PathBuf,
        success: Option<String>,
        failure: Option<String>,
        saved: Option<LogState>,
    ) -> Self {
        let compile = |pattern: &Option<String>, key: &str| match pattern.as_deref().map(Regex::new) {
            None => Ok(None),
            Some(Ok(regex)) => Ok(Some(regex)),
            Some(Err(error)) => Err(format!("{key}: invalid regex: {error}")),
        };
        let (success_regex, failure_regex, config_error) =
            match (compile(&success, "success"), compile(&failure, "failure")) {
                (Ok(success), Ok(failure)) => (success, failure, None),
                (Err(error), _) | (_, Err(error)) => (None, None, Some(error)),
            };
        let file = path.to_string_lossy().into_owned();
        let state = saved
            .filter(|saved| saved.file == file && saved.success == success && saved.failure == failure)
            .unwrap_or(LogState {
                file,
                success,
                failure,
                identity: None,
                offset: 0,
                last_result: None,
                last_success_s: None,
                last_failure_s: None,
                last_failure_line: None,
            });
        let tail = Tail {
            path: path.clone(),
            success: success_regex,
            failure: failure_regex,
            open: None,
            resume: true,
            state,
            read_error: None,
        };
        let shared =
            Arc::new(Shared { tail: Mutex::new(tail), pending: AtomicBool::new(false), wake: Notify::new() });
        let directory = directory_identity(&path);
        let mut source = Self { shared, path, config_error, watcher: None, watched: None, watch_error: None };
        source.ensure_watch(directory);
        source
    }

    /// Starts watching the log's directory unless already watching it; `directory` is
    /// what the directory path names now.
    fn ensure_watch(&mut self, directory: Option<Identity>) {
        if self.watcher.is_some() && self.watched != directory {
            tracing::debug!(file = %self.path.display(), "the backup log's directory was replaced; watching anew");
            self.watcher = None;
        }
        if self.watcher.is_some() || self.config_error.is_some() {
            return;
        }
        match watch(&self.shared, &self.path) {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                self.watched = directory;
                self.watch_error = None;
            }
            Err(error) => {
                tracing::debug!(file = %self.path.display(), %error, "cannot watch the backup log; will retry");
                self.watch_error = Some(error);
            }
        }
    }

    pub(super) async fn sample(&mut self) -> Result<Evidence, String> {
        if let Some(error) = &self.config_error {
            return Err(error.clone());
        }
        let shared = Arc::clone(&self.shared);
        let path = self.path.clone();
        let what = format!("reading {}", path.display());
        let (evidence, directory) = crate::blocking::spawn(what, move || {
            let mut tail = shared.tail();
            tail.poll(true);
            // This sample reports everything read so far. The flag is only set and
            // cleared under the lock, so a line the watcher reads later sets it anew and
            // a line it read earlier leaves no stale wake-up behind.
            shared.pending.store(false, Ordering::Release);
            let evidence = tail.evidence(unix_seconds(SystemTime::now()));
            drop(tail);
            (evidence, directory_identity(&path))
        })
        .await
        .map_err(|error| format!("reading the log failed: {error}"))?;
        self.ensure_watch(directory);
        match (&self.watch_error, evidence) {
            (Some(watch_error), Ok(mut evidence)) => {
                evidence.detail.push_str(&format!("; not watched ({watch_error}): read at each sample only"));
                Ok(evidence)
            }
            (Some(watch_error), Err(reason)) => Err(format!("{reason}; cannot watch either: {watch_error}")),
            (None, evidence) => evidence,
        }
    }

    /// Resolves once a matching line was read outside a sample. Cancel-safe: the flag
    /// stays set until a call returns, and `Notify` keeps a wake-up that found no waiter.
    pub(super) async fn changed(&self) {
        loop {
            let notified = self.shared.wake.notified();
            if self.shared.pending.swap(false, Ordering::AcqRel) {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn state(&self) -> LogState {
        self.shared.tail().state.clone()
    }
}

fn directory_of(path: &Path) -> &Path {
    path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// What the directory of `path` is now (None: it does not exist).
fn directory_identity(path: &Path) -> Option<Identity> {
    std::fs::metadata(directory_of(path)).ok().map(|metadata| identity(&metadata))
}

/// Watches the directory of `path`; each event naming the file reads what is new.
fn watch(shared: &Arc<Shared>, path: &Path) -> Result<notify::RecommendedWatcher, String> {
    let directory = directory_of(path);
    let name = path.file_name().map(|name| name.to_owned());
    let handler_shared = Arc::clone(shared);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "backup log watcher error");
                return;
            }
        };
        // Our own reads open the file: not a change.
        if matches!(
            event.kind,
            notify::EventKind::Access(notify::event::AccessKind::Open(_) | notify::event::AccessKind::Read)
        ) {
            return;
        }
        let ours =
            event.need_rescan() || event.paths.iter().any(|changed| changed.file_name() == name.as_deref());
        if !ours {
            return;
        }
        let mut tail = handler_shared.tail();
        if tail.poll(false) {
            // Set under the lock: see `LogSource::sample`.
            handler_shared.pending.store(true, Ordering::Release);
            drop(tail);
            handler_shared.wake.notify_one();
        }
    })
    .map_err(|error| format!("cannot start a file watcher: {error}"))?;
    watcher
        .watch(directory, notify::RecursiveMode::NonRecursive)
        .map_err(|error| format!("cannot watch {}: {error}", directory.display()))?;
    Ok(watcher)
}

impl Tail {
    /// Reads what is new (following rotation and truncation); true when a line matched.
    /// `sampling`: also take a last line without a newline once the file is quiet.
    fn poll(&mut self, sampling: bool) -> bool {
        let mut matched = false;
        let opened = File::open(&self.path).and_then(|file| {
            let metadata = file.metadata()?;
            Ok((file, identity(&metadata)))
        });
        match opened {
            Ok((file, identity)) => {
                self.read_error = None;
                if self.open.as_ref().is_none_or(|open| open.identity != identity) {
                    if let Some(mut old) = self.open.take() {
                        // Rotated: finish the old file before switching.
                        matched |= self.read_new(&mut old, true);
                    }
                    let resume = std::mem::take(&mut self.resume) && self.state.identity == Some(identity);
                    if !resume {
                        self.state.offset = 0;
                    }
                    self.state.identity = Some(identity);
                    self.open = Some(OpenLog { file, identity });
                }
            }
            Err(error) => {
                self.read_error = Some(format!("cannot read {}: {error}", self.path.display()));
            }
        }
        // Whatever is open: the current file, or a rotated one whose successor is missing.
        if let Some(mut open) = self.open.take() {
            matched |= self.read_new(&mut open, sampling);
            self.open = Some(open);
        }
        matched
    }

    /// Reads `open` from the saved offset; true when a line matched.
    fn read_new(&mut self, open: &mut OpenLog, take_quiet_tail: bool) -> bool {
        match self.try_read_new(open, take_quiet_tail) {
            Ok(matched) => matched,
            Err(error) => {
                self.read_error = Some(format!("cannot read {}: {error}", self.path.display()));
                false
            }
        }
    }

    fn try_read_new(&mut self, open: &mut OpenLog, take_quiet_tail: bool) -> std::io::Result<bool> {
        let metadata = open.file.metadata()?;
        let length = metadata.len();
        if length < self.state.offset {
            // Truncated in place (copytruncate, `> file`): start over.
            self.state.offset = 0;
        }
        let mut start = self.state.offset;
        let mut skip_partial = false;
        if length - start > BACKLOG_BYTES {
            // Only the last 1 MiB; start one byte early so a line beginning exactly at
            // the cut is recognised as complete.
            start = length - BACKLOG_BYTES - 1;
            skip_partial = true;
        }
        if length == start {
            return Ok(false);
        }
        open.file.seek(SeekFrom::Start(start))?;
        let mut buffer = Vec::new();
        (&open.file).take(length - start).read_to_end(&mut buffer)?;
        let mut body: &[u8] = &buffer;
        let mut body_start = start;
        if skip_partial {
            match body.iter().position(|&byte| byte == b'\n') {
                Some(newline) => {
                    body = &body[newline + 1..];
                    body_start += newline as u64 + 1;
                }
                None => {
                    // One enormous line: nothing to match, skip it.
                    self.state.offset = start + buffer.len() as u64;
                    return Ok(false);
                }
            }
        }
        let modified = metadata.modified().ok();
        let now = SystemTime::now();
        let quiet =
            modified.is_some_and(|modified| now.duration_since(modified).is_ok_and(|age| age >= QUIET));
        let complete = body.iter().rposition(|&byte| byte == b'\n').map_or(0, |newline| newline + 1);
        let lines = if take_quiet_tail && quiet { body } else { &body[..complete] };
        self.state.offset = body_start + lines.len() as u64;
        // The lines carry no time we trust: the file's last write (never in the future).
        let written = unix_seconds(modified.map_or(now, |modified| modified.min(now)));
        Ok(self.match_lines(lines, written))
    }

    /// Applies the lines of one pass; true when one matched.
    fn match_lines(&mut self, lines: &[u8], written: f64) -> bool {
        let mut latest: Option<bool> = None;
        let mut latest_failure: Option<String> = None;
        for raw in lines.split(|&byte| byte == b'\n') {
            let raw = &raw[..raw.len().min(MAX_MATCH_BYTES)];
            if raw.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(raw);
            let line = text.trim_end_matches('\r');
            if self.failure.as_ref().is_some_and(|failure| failure.is_match(line)) {
                latest = Some(false);
                let line = line.trim();
                latest_failure = Some(line[..line.floor_char_boundary(MAX_LINE_BYTES)].to_owned());
            } else if self.success.as_ref().is_some_and(|success| success.is_match(line)) {
                latest = Some(true);
            }
        }
        if let Some(line) = latest_failure {
            self.state.last_failure_s = Some(written);
            self.state.last_failure_line = Some(line);
        }
        if latest == Some(true) {
            self.state.last_success_s = Some(written);
        }
        if latest.is_some() {
            self.state.last_result = latest;
        }
        latest.is_some()
    }

    fn evidence(&self, now: f64) -> Result<Evidence, String> {
        let state = &self.state;
        let known = state.last_result.is_some() || state.last_success_s.is_some();
        if let Some(error) = &self.read_error
            && !known
        {
            return Err(error.clone());
        }
        let mut detail = match state.last_result {
            Some(false) => format!(
                "failure line{}: {}",
                state.last_failure_s.map_or(String::new(), |at| format!(" {} ago", human_age(now - at))),
                state.last_failure_line.as_deref().unwrap_or("")
            ),
            Some(true) => format!(
                "success line{}",
                state.last_success_s.map_or(String::new(), |at| format!(" {} ago", human_age(now - at)))
            ),
            None => format!("no success or failure line in {} yet", self.path.display()),
        };
        if let Some(error) = &self.read_error {
            detail.push_str(&format!("; {error}"));
        }
        Ok(Evidence {
            last_success: state.last_success_s,
            reports_success: self.success.is_some(),
            last_result: state.last_result,
            size_bytes: None,
            detail,
        })
    }
}

#[cfg(unix)]
fn identity(metadata: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    Identity { dev: metadata.dev(), ino: metadata.ino() }
}

/// No stable file id in std on other systems: the creation time stands in for it.
#[cfg(not(unix))]
fn identity(metadata: &std::fs::Metadata) -> Identity {
    let created =
        metadata.created().ok().and_then(|created| created.duration_since(std::time::UNIX_EPOCH).ok());
    Identity { dev: 0, ino: created.map_or(0, |created| created.as_nanos() as u64) }
}

#[cfg(test)]
mod tests;
