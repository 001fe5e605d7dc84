//! The `borg_repo` source: the newest archive of a borg repository.
//!
//! - `borg list --json --last 1 --bypass-lock [borg_args…] <repo>`. `--bypass-lock`
//!   because `list` otherwise waits for a shared lock (1 s) and fails while `borg create`
//!   holds the repository — the very moment a check runs at night. Exit status 1 is a
//!   borg warning: the JSON is still used.
//! - borg 1.x prints archive times in *local* time without an offset; borg runs with
//!   `TZ=UTC0` so the times are UTC whatever the host's zone.
//! - The passphrase: read by the agent from `borg_passphrase_file` (first line) and passed
//!   as `BORG_PASSPHRASE`, rather than `BORG_PASSCOMMAND="cat FILE"` (which borg splits
//!   shell-like, so a path with spaces or quotes would break).
//! - No size: `borg info` would have to build borg's chunk cache, which for a remote
//!   repository without one means fetching every archive's metadata.
//! - A repository without archives is a failure; an error is "cannot check" with
//!   borg's first line of output.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Evidence, first_line, human_age, timestamp};
use crate::probes::exec::{self, ExecError, ExecSpec};

pub(super) struct BorgSource {
    pub binary: String,
    pub repo: String,
    pub passphrase_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct Listing {
    archives: Vec<Archive>,
}

#[derive(Debug, Deserialize)]
struct Archive {
    name: String,
    time: String,
}

impl BorgSource {
    pub(super) async fn sample(&mut self, now: f64) -> Result<Evidence, String> {
        let mut argv: Vec<String> = [&self.binary, "list", "--json", "--last", "1", "--bypass-lock"]
            .iter()
            .map(|arg| arg.to_string())
            .collect();
        argv.extend(self.args.iter().cloned());
        argv.push(self.repo.clone());
        let mut spec = ExecSpec::new(argv, self.timeout);
        spec.env.push(("TZ".into(), "UTC0".into()));
        if let Some(file) = &self.passphrase_file {
            // A few bytes from a local file: not worth a blocking-pool round trip.
            let text = std::fs::read_to_string(file)
                .map_err(|error| format!("cannot read borg_passphrase_file {}: {error}", file.display()))?;
            let passphrase = text.lines().next().unwrap_or("").to_owned();
            spec.env.push(("BORG_PASSPHRASE".into(), passphrase));
        }
        let output = match exec::run(&spec).await {
            Ok(output) => output,
            Err(ExecError::Spawn { program, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("cannot run {program}: not found (is borg installed?)"));
            }
            Err(error) => return Err(error.to_string()),
        };
        // 0: fine; 1: a warning, the listing is still good; anything else: an error.
        if !matches!(output.code, Some(0 | 1)) {
            let status =
                output.code.map_or("was killed by a signal".to_owned(), |code| format!("exited with {code}"));
            let said =
                first_line(&output.stderr, &output.stdout).map_or(String::new(), |line| format!(": {line}"));
            return Err(format!("borg {status}{said}"));
        }
        let listing: Listing = serde_json::from_str(output.stdout.trim())
            .map_err(|error| format!("cannot parse `borg list --json`: {error}"))?;
        let mut newest: Option<(f64, &Archive)> = None;
        for archive in &listing.archives {
            let time = timestamp::parse(&archive.time)
                .ok_or_else(|| format!("archive {}: unreadable time {:?}", archive.name, archive.time))?;
            if newest.is_none_or(|(newest_time, _)| time > newest_time) {
                newest = Some((time, archive));
            }
        }
        Ok(match newest {
            Some((time, archive)) => Evidence {
                last_success: Some(time),
                reports_success: true,
                last_result: Some(true),
                size_bytes: None,
                detail: format!("newest archive {} created {} ago", archive.name, human_age(now - time)),
            },
            None => Evidence {
                last_success: None,
                reports_success: true,
                last_result: Some(false),
                size_bytes: None,
                detail: "no archive in the repository".into(),
            },
        })
    }
}
