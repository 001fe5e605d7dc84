//! Backup probe: did the job run, did it succeed, is it recent, is it plausibly sized?
//!
//! One result per `[[backup]]` check, check id `backup:<name>`, kind `backup`. A check
//! names one backup job and one or more *sources* of evidence about it; each sample asks
//! every configured source (concurrently) and combines the answers.
//!
//! # Sources
//!
//! - `path` (module `files`): a glob; the newest matching file (or directory) is the latest
//!   backup. Its mtime is the last success, its size `size_bytes`. An empty newest file,
//!   or one smaller than the previous newest file seen, is a failure; no match at all is
//!   a failure. Files modified within `settle` are still being written and are skipped.
//! - `log` (module `log`): a log file, watched with notify, read incrementally; lines matching
//!   `failure` / `success` set the last result (the latest matching line wins). A new
//!   matching line wakes the probe at once ([`Probe::changed`]).
//! - `restic_repo` (module `restic`): `restic snapshots --json --latest 1 --no-lock`; the
//!   newest snapshot's time is the last success; its size comes from the snapshot's
//!   summary (restic ≥ 0.17) or one `restic stats <id> --json` per new snapshot.
//! - `borg_repo` (module `borg`): `borg list --json --last 1 --bypass-lock`; the newest
//!   archive's time is the last success (no size: `borg info` may rebuild borg's cache).
//! - `command` (module `command`): exit status 0 is a success now; anything else a failure
//!   with the first output line.
//!
//! Every external program runs through [`super::exec`]: no shell, `timeout` (default
//! 60 s) and a killed process group on expiry, capped output.
//!
//! # Metrics
//!
//! - `last_success_s`: unix seconds of the last success. With several sources, the
//!   *oldest* of their last successes: a job is only as fresh as its stalest evidence.
//!   Absent while a source that reports successes has not seen one.
//! - `age_s`: now − `last_success_s` (never negative).
//! - `last_result`: 1 success, 0 failure — 0 when any source says the latest run failed;
//!   absent when no source knows.
//! - `size_bytes`: from the first source that knows it (path, then restic).
//! - `stale`: only with `max_age`: 1 when `age_s` > `max_age` or no success is known.
//! - `sources_unknown`: how many sources could not be checked this time.
//!
//! # Status
//!
//! OK when at least one source could be evaluated: a failure or staleness is a metric for
//! the collector to judge, and a source that could not be checked is named in `message`
//! and counted in `sources_unknown`. UNKNOWN (with each source's reason) only when no
//! source could be evaluated — repository unreachable, tool missing, timeout. Why not
//! UNKNOWN as soon as one source fails: the collector does not evaluate the metrics of an
//! UNKNOWN result, so an unreachable repository would hide a failure line in the log.
//!
//! # State
//!
//! What must survive an agent restart — the log's read position, file identity and last
//! success/failure; the previous newest file (for the shrink test); the command's last
//! success — is one small JSON file per check, `<state_dir>/probes/backup-<name>.json`
//! (`/` in the name written as `%2F`), see module `state`. It is written after a sample when
//! it changed, atomically (temporary file, fsync, rename). On load, a part whose config
//! changed (another glob, log file or pattern) is dropped; an unreadable file is logged
//! and ignored — the probe starts afresh and rescans.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nightowl_proto::CheckResult;
use serde::Deserialize;

use super::{Probe, ProbeContext, ok_result, unknown_result};
use crate::duration::HumanDuration;

mod borg;
mod command;
mod files;
mod log;
mod restic;
mod state;
mod timestamp;

#[cfg(test)]
mod tests;

const KIND: &str = "backup";

/// Used when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Used when `settle` is not set.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

/// Bounds of `timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Upper bound of `settle`.
const MAX_SETTLE: Duration = Duration::from_secs(24 * 3600);

/// Cap on `message`, in bytes (the collector accepts 4 KiB).
const MAX_MESSAGE_BYTES: usize = 1024;

/// Cap on a quoted output or log line inside the message, in bytes.
const MAX_LINE_BYTES: usize = 200;

/// One `[[backup]]` entry: a backup job and the evidence that it ran.
///
/// ```toml
/// [[backup]]
/// name = "db"
/// max_age = "26h"
/// path = "/backups/db-*.tar.zst"
///
/// [[backup]]
/// name = "db-log"
/// log = "/var/log/backup-db.log"
/// success = "^backup finished"
/// failure = "(?i)error|failed"
///
/// [[backup]]
/// name = "offsite"
/// max_age = "26h"
/// interval = "15m"
/// restic_repo = "sftp:backup@nas:/srv/restic"
/// restic_password_file = "/etc/nightowl/restic.pass"
/// ```
///
/// Set at least one source: `path`, `log`, `restic_repo`, `borg_repo`, `command`; with
/// several, the result combines them (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Check name: the check id is `backup:<name>`.
    pub name: String,
    /// How often to sample; default: `[agent] interval`. Checks of remote repositories
    /// (restic, borg) cost a round trip each: consider "15m". A watched log reports a
    /// new success or failure line at once, whatever the interval.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
    /// The age beyond which the backup is stale: metric `stale` is 1 when the last
    /// success is older, or when no success is known at all. Applies to whatever
    /// source yields the last success. Unset: no `stale` metric.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// How long one sample may take per source: each external program (restic, borg,
    /// `command`) is killed with its process group after it, and a `path` listing that
    /// takes longer (dead network filesystem) is reported as not checked. Default "60s";
    /// 100ms to 1h.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,

    /// Files (or directories) the job writes, as an absolute glob pattern
    /// (`*`, `?`, `[a-z]`, `**`; `*` does not cross `/`), e.g. "/backups/db-*.tar.zst".
    /// The newest match (by mtime) is the latest backup: its mtime is the last success
    /// and its size `size_bytes`. It is a failure when it is empty, when it is smaller
    /// than the previous newest file seen (beyond `shrink_tolerance_pct`), and when
    /// nothing matches.
    #[serde(default)]
    pub path: Option<Box<str>>,
    /// With `path`: files modified less than this long ago are taken to be still being
    /// written and are skipped (the newest older one is judged). Default "60s".
    #[serde(default)]
    pub settle: Option<HumanDuration>,
    /// With `path`: how much smaller than the previous newest file the newest may be,
    /// in percent, before it counts as a failure. Default 0: any shrink is a failure.
    #[serde(default)]
    pub shrink_tolerance_pct: Option<f64>,

    /// A log file the job appends to, as an absolute path. It is watched (its directory,
    /// so rotation by rename-and-create is followed, as is truncation) and read from
    /// where the agent left off; on the very first start the last 1 MiB is read to find
    /// the latest success/failure. Lines are matched against `failure` first, then
    /// `success`; the latest matching line sets the result.
    #[serde(default)]
    pub log: Option<Box<Path>>,
    /// With `log`: a regular expression (`regex-lite` syntax: Rust `regex` minus Unicode
    /// classes) matching a line that reports success, e.g. "^backup finished OK".
    #[serde(default)]
    pub success: Option<Box<str>>,
    /// With `log`: a regular expression matching a line that reports failure, e.g.
    /// "(?i)\\berror\\b|failed". The line (trimmed, 200 bytes at most) becomes the
    /// message.
    #[serde(default)]
    pub failure: Option<Box<str>>,

    /// A restic repository, as restic's `-r` takes it ("/srv/restic", "sftp:…",
    /// "s3:…", "rest:…"); passed as `RESTIC_REPOSITORY`. Other settings restic needs
    /// (cloud credentials, `RESTIC_CACHE_DIR`) come from the agent's environment.
    #[serde(default)]
    pub restic_repo: Option<Box<str>>,
    /// With `restic_repo`: the file holding the repository password; passed as
    /// `RESTIC_PASSWORD_FILE`. Unset: whatever the agent's environment provides.
    #[serde(default)]
    pub restic_password_file: Option<Box<Path>>,
    /// With `restic_repo`: the restic program, a path or a name looked up in `PATH`.
    /// Default "restic".
    #[serde(default)]
    pub restic_binary: Option<Box<str>>,
    /// With `restic_repo`: extra arguments for `restic snapshots` and `restic stats`,
    /// e.g. `["--host", "db1", "--tag", "nightly"]` when the repository holds other
    /// jobs' snapshots too. Passed verbatim (no shell).
    #[serde(default)]
    pub restic_args: Box<[String]>,

    /// A borg repository, as borg takes it ("/srv/borg", "ssh://user@host/./repo").
    #[serde(default)]
    pub borg_repo: Option<Box<str>>,
    /// With `borg_repo`: the file holding the passphrase (its first line); the agent
    /// reads it and passes it as `BORG_PASSPHRASE`. Unset: whatever the agent's
    /// environment provides (`BORG_PASSPHRASE`, `BORG_PASSCOMMAND`, …).
    #[serde(default)]
    pub borg_passphrase_file: Option<Box<Path>>,
    /// With `borg_repo`: the borg program. Default "borg".
    #[serde(default)]
    pub borg_binary: Option<Box<str>>,
    /// With `borg_repo`: extra arguments for `borg list`, placed before the repository,
    /// e.g. `["--glob-archives", "db-*"]` or `["--remote-path", "borg1"]`.
    #[serde(default)]
    pub borg_args: Box<[String]>,

    /// A program that checks the backup, with its arguments, run directly (never
    /// through a shell): exit status 0 is a success (now), anything else a failure
    /// whose message is the first line of output.
    #[serde(default)]
    pub command: Option<Box<[String]>>,
}

impl BackupConfig {
    /// The keys set in this entry that make the agent start a program (restic, borg,
    /// `command`). A central policy may carry none of them (`crate::policy`): the agent
    /// runs programs only from its local config.
    pub fn program_keys(&self) -> Vec<&'static str> {
        let keys = [
            ("restic_repo", self.restic_repo.is_some()),
            ("restic_password_file", self.restic_password_file.is_some()),
            ("restic_binary", self.restic_binary.is_some()),
            ("restic_args", !self.restic_args.is_empty()),
            ("borg_repo", self.borg_repo.is_some()),
            ("borg_passphrase_file", self.borg_passphrase_file.is_some()),
            ("borg_binary", self.borg_binary.is_some()),
            ("borg_args", !self.borg_args.is_empty()),
            ("command", self.command.is_some()),
        ];
        keys.iter().filter(|(_, set)| *set).map(|(key, _)| *key).collect()
    }

    /// Checks the config; the error names the key, e.g. `failure: invalid regex …`.
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)?;
        if self.path.is_none()
            && self.log.is_none()
            && self.restic_repo.is_none()
            && self.borg_repo.is_none()
            && self.command.is_none()
        {
            return Err("set at least one of path, log, restic_repo, borg_repo, command".into());
        }
        if let Some(HumanDuration(timeout)) = self.timeout
            && !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout)
        {
            return Err(format!("timeout: {timeout:?} is out of range: use 100ms to 1h"));
        }
        if let Some(HumanDuration(max_age)) = self.max_age
            && max_age.is_zero()
        {
            return Err("max_age: must be more than 0, e.g. \"26h\"".into());
        }
        self.validate_path()?;
        self.validate_log()?;
        self.validate_restic()?;
        self.validate_borg()?;
        if let Some(argv) = &self.command {
            match argv.first() {
                None => return Err("command: empty; write the program and its arguments as a list".into()),
                Some(program) if program.trim().is_empty() => {
                    return Err("command: the program (first element) is empty".into());
                }
                Some(_) => {}
            }
        }
        if self.max_age.is_some()
            && self.success.is_none()
            && self.path.is_none()
            && self.restic_repo.is_none()
            && self.borg_repo.is_none()
            && self.command.is_none()
        {
            return Err("max_age: no source reports successes; set success (the log's success \
                        pattern) or another source"
                .into());
        }
        Ok(())
    }

    fn validate_path(&self) -> Result<(), String> {
        let Some(pattern) = self.path.as_deref() else {
            if self.settle.is_some() {
                return Err("settle: only used with path; set path".into());
            }
            if self.shrink_tolerance_pct.is_some() {
                return Err("shrink_tolerance_pct: only used with path; set path".into());
            }
            return Ok(());
        };
        if pattern.trim().is_empty() {
            return Err("path: empty; write an absolute glob pattern, e.g. \"/backups/db-*.tar.zst\"".into());
        }
        if !Path::new(pattern).is_absolute() {
            return Err(format!(
                "path: {pattern:?} is not absolute; write the full pattern, e.g. \"/backups/db-*.tar.zst\""
            ));
        }
        if let Err(error) = glob::Pattern::new(pattern) {
            return Err(format!("path: invalid glob pattern {pattern:?}: {error}"));
        }
        if let Some(HumanDuration(settle)) = self.settle
            && settle > MAX_SETTLE
        {
            return Err(format!("settle: {settle:?} is too long: at most 24h"));
        }
        if let Some(tolerance) = self.shrink_tolerance_pct
            && !(0.0..=100.0).contains(&tolerance)
        {
            return Err(format!("shrink_tolerance_pct: {tolerance} is out of range: use 0 to 100"));
        }
        Ok(())
    }

    fn validate_log(&self) -> Result<(), String> {
        let Some(log) = &self.log else {
            for (key, set) in [("success", self.success.is_some()), ("failure", self.failure.is_some())] {
                if set {
                    return Err(format!("{key}: only used with log; set log"));
                }
            }
            return Ok(());
        };
        if log.as_os_str().is_empty() || !log.is_absolute() || log.file_name().is_none() {
            return Err(format!("log: {log:?} is not an absolute file path, e.g. \"/var/log/backup.log\""));
        }
        if self.success.is_none() && self.failure.is_none() {
            return Err("log: set success and/or failure (regular expressions matching its lines)".into());
        }
        for (key, pattern) in [("success", &self.success), ("failure", &self.failure)] {
            if let Some(pattern) = pattern {
                if pattern.is_empty() {
                    return Err(format!("{key}: empty regex would match every line"));
                }
                if let Err(error) = regex_lite::Regex::new(pattern) {
                    return Err(format!("{key}: invalid regex {pattern:?}: {error}"));
                }
            }
        }
        Ok(())
    }

    fn validate_restic(&self) -> Result<(), String> {
        let Some(repo) = &self.restic_repo else {
            let dependent = [
                ("restic_password_file", self.restic_password_file.is_some()),
                ("restic_binary", self.restic_binary.is_some()),
                ("restic_args", !self.restic_args.is_empty()),
            ];
            if let Some((key, _)) = dependent.iter().find(|(_, set)| *set) {
                return Err(format!("{key}: only used with restic_repo; set restic_repo"));
            }
            return Ok(());
        };
        if repo.trim().is_empty() {
            return Err("restic_repo: empty".into());
        }
        if let Some(file) = &self.restic_password_file
            && file.as_os_str().is_empty()
        {
            return Err("restic_password_file: empty path".into());
        }
        if self.restic_binary.as_ref().is_some_and(|binary| binary.trim().is_empty()) {
            return Err("restic_binary: empty".into());
        }
        Ok(())
    }

    fn validate_borg(&self) -> Result<(), String> {
        let Some(repo) = &self.borg_repo else {
            let dependent = [
                ("borg_passphrase_file", self.borg_passphrase_file.is_some()),
                ("borg_binary", self.borg_binary.is_some()),
                ("borg_args", !self.borg_args.is_empty()),
            ];
            if let Some((key, _)) = dependent.iter().find(|(_, set)| *set) {
                return Err(format!("{key}: only used with borg_repo; set borg_repo"));
            }
            return Ok(());
        };
        if repo.trim().is_empty() {
            return Err("borg_repo: empty".into());
        }
        if let Some(file) = &self.borg_passphrase_file
            && file.as_os_str().is_empty()
        {
            return Err("borg_passphrase_file: empty path".into());
        }
        if self.borg_binary.as_ref().is_some_and(|binary| binary.trim().is_empty()) {
            return Err("borg_binary: empty".into());
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |HumanDuration(timeout)| timeout)
    }
}

/// What one source found out.
#[derive(Debug, Clone, PartialEq, Default)]
struct Evidence {
    /// Unix seconds of the latest success this source knows of.
    last_success: Option<f64>,
    /// Whether this source can report successes at all (a log with only a `failure`
    /// pattern cannot); one that cannot is left out of `last_success_s`.
    reports_success: bool,
    /// The latest outcome: Some(true) success, Some(false) failure, None unknown.
    last_result: Option<bool>,
    size_bytes: Option<u64>,
    /// For the message, e.g. "newest /backups/db-3.tar.zst (1.2 MiB, 3h ago)".
    detail: String,
}

/// One source's answer: evidence, or why it could not be checked.
#[derive(Debug)]
struct Report {
    source: &'static str,
    outcome: Result<Evidence, String>,
}

/// The backup probe: asks every configured source on each sample.
pub struct BackupProbe {
    check_id: String,
    max_age: Option<Duration>,
    // Boxed: a probe lives in an enum of all families; keep its inline size small.
    files: Option<Box<files::FilesSource>>,
    log: Option<Box<log::LogSource>>,
    restic: Option<Box<restic::ResticSource>>,
    borg: Option<Box<borg::BorgSource>>,
    command: Option<Box<command::CommandSource>>,
    state_file: PathBuf,
    /// The state file's content as last written or loaded: written again only on change.
    written: Option<Vec<u8>>,
}

impl BackupProbe {
    /// Builds the probe; never fails: problems (unreadable state, unwatchable
    /// directory…) surface in the samples and are retried.
    pub fn new(config: &BackupConfig, context: &ProbeContext) -> Self {
        let state_file = state::file_path(&context.probe_state_dir(), &config.name);
        let (saved, written) = state::load(&state_file);
        let timeout = config.timeout();
        let files = config.path.as_ref().map(|pattern| {
            Box::new(files::FilesSource::new(
                pattern.to_string(),
                config.settle.map_or(DEFAULT_SETTLE, |HumanDuration(settle)| settle),
                config.shrink_tolerance_pct.unwrap_or(0.0),
                timeout,
                saved.path,
            ))
        });
        let log = config.log.as_ref().map(|path| {
            Box::new(log::LogSource::new(
                path.to_path_buf(),
                config.success.as_deref().map(str::to_owned),
                config.failure.as_deref().map(str::to_owned),
                saved.log,
            ))
        });
        let restic = config.restic_repo.as_ref().map(|repo| {
            Box::new(restic::ResticSource {
                binary: config.restic_binary.as_deref().unwrap_or("restic").to_owned(),
                repo: repo.to_string(),
                password_file: config.restic_password_file.as_deref().map(Path::to_path_buf),
                args: config.restic_args.to_vec(),
                timeout,
                size_cache: None,
            })
        });
        let borg = config.borg_repo.as_ref().map(|repo| {
            Box::new(borg::BorgSource {
                binary: config.borg_binary.as_deref().unwrap_or("borg").to_owned(),
                repo: repo.to_string(),
                passphrase_file: config.borg_passphrase_file.as_deref().map(Path::to_path_buf),
                args: config.borg_args.to_vec(),
                timeout,
            })
        });
        let command = config
            .command
            .as_ref()
            .map(|argv| Box::new(command::CommandSource::new(argv.to_vec(), timeout, saved.command)));
        Self {
            check_id: format!("{KIND}:{}", config.name),
            max_age: config.max_age.map(|HumanDuration(max_age)| max_age),
            files,
            log,
            restic,
            borg,
            command,
            state_file,
            written,
        }
    }

    /// Writes the state file when it changed; a failure is logged and retried next time.
    async fn persist(&mut self) {
        let current = state::StateFile {
            version: state::VERSION,
            path: self.files.as_ref().map(|files| files.state.clone()),
            log: self.log.as_ref().map(|log| log.state()),
            command: self.command.as_ref().map(|command| command.state.clone()),
        };
        let bytes = match serde_json::to_vec_pretty(&current) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(check = %self.check_id, %error, "cannot encode backup probe state");
                return;
            }
        };
        if self.written.as_ref() == Some(&bytes) {
            return;
        }
        let path = self.state_file.clone();
        let to_write = bytes.clone();
        let what = format!("writing {}", path.display());
        match crate::blocking::spawn(what, move || state::store(&path, &to_write)).await {
            Ok(Ok(())) => self.written = Some(bytes),
            Ok(Err(error)) => tracing::warn!(
                check = %self.check_id, file = %self.state_file.display(), %error,
                "cannot write backup probe state; retrying after the next sample"
            ),
            Err(error) => tracing::warn!(check = %self.check_id, %error, "backup state writer failed"),
        }
    }
}

/// Runs an optional source.
async fn maybe<T>(future: Option<impl Future<Output = T>>) -> Option<T> {
    match future {
        Some(future) => Some(future.await),
        None => None,
    }
}

impl Probe for BackupProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let now = unix_seconds(SystemTime::now());
        // Each source's future is boxed: inlined, the programs' output buffers would
        // make this future some 160 KB, copied around on the stack in debug builds.
        let (files, log, restic, borg, command) = tokio::join!(
            maybe(self.files.as_mut().map(|source| Box::pin(source.sample()))),
            maybe(self.log.as_mut().map(|source| Box::pin(source.sample()))),
            maybe(self.restic.as_mut().map(|source| Box::pin(source.sample(now)))),
            maybe(self.borg.as_mut().map(|source| Box::pin(source.sample(now)))),
            maybe(self.command.as_mut().map(|source| Box::pin(source.sample(now)))),
        );
        let reports: Vec<Report> =
            [("path", files), ("log", log), ("restic", restic), ("borg", borg), ("command", command)]
                .into_iter()
                .filter_map(|(source, outcome)| outcome.map(|outcome| Report { source, outcome }))
                .collect();
        self.persist().await;
        vec![combine(&self.check_id, &reports, unix_seconds(SystemTime::now()), self.max_age)]
    }

    /// Resolves when the watched log shows a new success or failure line.
    async fn changed(&mut self) {
        match &self.log {
            Some(log) => log.changed().await,
            None => std::future::pending().await,
        }
    }
}

/// One result from the sources' reports (see the module documentation for the rules).
fn combine(check_id: &str, reports: &[Report], now: f64, max_age: Option<Duration>) -> CheckResult {
    let evaluated: Vec<&Evidence> =
        reports.iter().filter_map(|report| report.outcome.as_ref().ok()).collect();
    let describe = |report: &Report| match &report.outcome {
        Ok(evidence) => format!("{}: {}", report.source, evidence.detail),
        Err(reason) => format!("{}: cannot check: {reason}", report.source),
    };
    if evaluated.is_empty() {
        let mut reason = reports.iter().map(describe).collect::<Vec<_>>().join("; ");
        reason.truncate(reason.floor_char_boundary(MAX_MESSAGE_BYTES));
        return unknown_result(check_id.to_owned(), KIND, reason);
    }
    let trackers: Vec<&&Evidence> = evaluated.iter().filter(|evidence| evidence.reports_success).collect();
    let last_success = if trackers.iter().all(|evidence| evidence.last_success.is_some()) {
        trackers.iter().filter_map(|evidence| evidence.last_success).reduce(f64::min)
    } else {
        None
    };
    let last_result = if evaluated.iter().any(|evidence| evidence.last_result == Some(false)) {
        Some(false)
    } else if evaluated.iter().any(|evidence| evidence.last_result == Some(true)) {
        Some(true)
    } else {
        None
    };
    let unknown = reports.len() - evaluated.len();

    let mut metrics = HashMap::new();
    let mut parts = Vec::new();
    if let Some(last_success) = last_success {
        metrics.insert("last_success_s".to_owned(), last_success);
        metrics.insert("age_s".to_owned(), (now - last_success).max(0.0));
    }
    if let Some(max_age) = max_age {
        let stale = match last_success {
            Some(last_success) if now - last_success <= max_age.as_secs_f64() => false,
            Some(last_success) => {
                parts.push(format!(
                    "stale: last success {} ago, max_age {}",
                    human_age(now - last_success),
                    humantime::format_duration(max_age)
                ));
                true
            }
            None => {
                parts.push(format!(
                    "stale: no success seen (max_age {})",
                    humantime::format_duration(max_age)
                ));
                true
            }
        };
        metrics.insert("stale".to_owned(), if stale { 1.0 } else { 0.0 });
    }
    if let Some(success) = last_result {
        metrics.insert("last_result".to_owned(), if success { 1.0 } else { 0.0 });
    }
    if let Some(size) = evaluated.iter().find_map(|evidence| evidence.size_bytes) {
        metrics.insert("size_bytes".to_owned(), size as f64);
    }
    metrics.insert("sources_unknown".to_owned(), unknown as f64);
    parts.extend(reports.iter().map(describe));
    let mut message = parts.join("; ");
    message.truncate(message.floor_char_boundary(MAX_MESSAGE_BYTES));
    ok_result(check_id.to_owned(), KIND, metrics, message)
}

/// Unix seconds (negative before 1970).
fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// "3h 12m", "45s", "2days 4h": rounded to what a reader cares about.
fn human_age(seconds: f64) -> String {
    let seconds = seconds.max(0.0).round() as u64;
    let rounded = if seconds >= 86_400 {
        seconds / 3600 * 3600
    } else if seconds >= 3600 {
        seconds / 60 * 60
    } else {
        seconds
    };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// "512 B", "1.5 KiB", "12.3 MiB".
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// The first non-empty line of a program's output (stdout, else stderr), trimmed and capped.
fn first_line(stdout: &str, stderr: &str) -> Option<String> {
    [stdout, stderr]
        .iter()
        .flat_map(|text| text.lines())
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line[..line.floor_char_boundary(MAX_LINE_BYTES)].to_owned())
}
