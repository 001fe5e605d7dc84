//! The `restic_repo` source: the newest snapshot of a restic repository.
//!
//! - `restic snapshots --json --latest 1 --no-lock [restic_args…]` with
//!   `RESTIC_REPOSITORY` (and `RESTIC_PASSWORD_FILE`) in the environment. `--latest 1`
//!   keeps the newest snapshot *per host and path set*, so a shared repository answers
//!   with several: the newest of them is the last success — narrow it down with
//!   `restic_args = ["--host", …]`. `--no-lock` because a running `restic backup` or
//!   `prune` must not make the check fail, and a read-only repository must work.
//! - Size: restic ≥ 0.17 puts a `summary` in each snapshot (`total_bytes_processed`);
//!   older ones (0.14 here) do not, so `restic stats <id> --json --no-lock` (restore size)
//!   runs once per *new* snapshot within what is left of `timeout`; its answer, or its
//!   failure, is remembered for that snapshot.
//! - A repository without snapshots is a failure; an error or a non-zero exit is "cannot
//!   check" with restic's first line of output (e.g. `Fatal: wrong password or no key
//!   found`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Evidence, first_line, human_age, human_bytes, timestamp};
use crate::probes::exec::{self, ExecError, ExecSpec};

/// `restic snapshots` of a repository with many hosts and paths can be long.
const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// `restic stats` is not started with less than this left of the timeout.
const MIN_STATS_TIME: Duration = Duration::from_secs(1);

pub(super) struct ResticSource {
    pub binary: String,
    pub repo: String,
    pub password_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub timeout: Duration,
    /// The size of the newest snapshot (by id), or why it is not known.
    pub size_cache: Option<(String, Result<u64, String>)>,
}

#[derive(Debug, Deserialize)]
struct Snapshot {
    time: String,
    id: String,
    #[serde(default)]
    short_id: Option<String>,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    summary: Option<Summary>,
}

/// restic ≥ 0.17.
#[derive(Debug, Deserialize)]
struct Summary {
    #[serde(default)]
    total_bytes_processed: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    total_size: u64,
}

impl ResticSource {
    fn spec(&self, subcommand: &[&str], timeout: Duration) -> ExecSpec {
        let mut argv = vec![self.binary.clone()];
        argv.extend(subcommand.iter().map(|arg| (*arg).to_owned()));
        argv.extend(["--json".to_owned(), "--no-lock".to_owned()]);
        argv.extend(self.args.iter().cloned());
        let mut spec = ExecSpec::new(argv, timeout);
        spec.max_output = MAX_OUTPUT;
        spec.env.push(("RESTIC_REPOSITORY".into(), self.repo.clone()));
        if let Some(file) = &self.password_file {
            spec.env.push(("RESTIC_PASSWORD_FILE".into(), file.to_string_lossy().into_owned()));
        }
        spec
    }

    pub(super) async fn sample(&mut self, now: f64) -> Result<Evidence, String> {
        let started = Instant::now();
        let stdout = run(&self.spec(&["snapshots", "--latest", "1"], self.timeout)).await?;
        let snapshots: Vec<Snapshot> = serde_json::from_str(stdout.trim())
            .map_err(|error| format!("cannot parse `restic snapshots --json`: {error}"))?;
        let mut newest: Option<(f64, &Snapshot)> = None;
        for snapshot in &snapshots {
            let time = timestamp::parse(&snapshot.time)
                .ok_or_else(|| format!("snapshot {}: unreadable time {:?}", snapshot.id, snapshot.time))?;
            if newest.is_none_or(|(newest_time, _)| time > newest_time) {
                newest = Some((time, snapshot));
            }
        }
        let Some((time, snapshot)) = newest else {
            return Ok(Evidence {
                last_success: None,
                reports_success: true,
                last_result: Some(false),
                size_bytes: None,
                detail: "no snapshot in the repository".into(),
            });
        };
        let short_id = snapshot.short_id.clone().unwrap_or_else(|| snapshot.id.chars().take(8).collect());
        let mut detail = format!(
            "newest snapshot {short_id} of {}:{} taken {} ago",
            snapshot.hostname,
            snapshot.paths.join(","),
            human_age(now - time)
        );
        let size = match snapshot.summary.as_ref().and_then(|summary| summary.total_bytes_processed) {
            Some(size) => Some(size),
            None => {
                let id = snapshot.id.clone();
                self.size_of(&id, started).await
            }
        };
        match (size, &self.size_cache) {
            (Some(size), _) => detail.push_str(&format!(", {}", human_bytes(size))),
            (None, Some((_, Err(reason)))) => detail.push_str(&format!(", size unknown: {reason}")),
            (None, _) => {}
        }
        Ok(Evidence {
            last_success: Some(time),
            reports_success: true,
            last_result: Some(true),
            size_bytes: size,
            detail,
        })
    }

    /// The restore size of snapshot `id`: remembered, or asked once per snapshot.
    async fn size_of(&mut self, id: &str, started: Instant) -> Option<u64> {
        if let Some((cached_id, size)) = &self.size_cache
            && cached_id == id
        {
            return size.as_ref().ok().copied();
        }
        let left = self.timeout.saturating_sub(started.elapsed());
        if left < MIN_STATS_TIME {
            return None; // Try again at the next sample.
        }
        let size = match run(&self.spec(&["stats", id], left)).await {
            Ok(stdout) => serde_json::from_str::<Stats>(stdout.trim())
                .map(|stats| stats.total_size)
                .map_err(|error| format!("cannot parse `restic stats --json`: {error}")),
            Err(reason) => Err(reason),
        };
        self.size_cache = Some((id.to_owned(), size.clone()));
        size.ok()
    }
}

/// Runs restic; its stdout, or why it failed (restic's first line of output).
async fn run(spec: &ExecSpec) -> Result<String, String> {
    match exec::run(spec).await {
        Ok(output) if output.code == Some(0) => Ok(output.stdout),
        Ok(output) => {
            let status =
                output.code.map_or("was killed by a signal".to_owned(), |code| format!("exited with {code}"));
            let said =
                first_line(&output.stderr, &output.stdout).map_or(String::new(), |line| format!(": {line}"));
            Err(format!("restic {status}{said}"))
        }
        Err(ExecError::Spawn { program, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("cannot run {program}: not found (is restic installed?)"))
        }
        Err(error) => Err(error.to_string()),
    }
}
