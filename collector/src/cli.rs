//! Read-side commands that run beside a live collector: `alerts tail`, `agents list`.
//! They open the store read-only; the collector need not be running.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::queue::{Reader, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write output: {0}")]
    Output(io::Error),
}

/// How often `--follow` looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
const BATCH: usize = 1000;

/// Prints every queued event as one JSON line, oldest first; with `follow`, keeps
/// printing new ones until `stop` returns true. A closed stdout (`| head`) ends quietly.
pub fn alerts_tail(data_dir: &Path, follow: bool, stop: &dyn Fn() -> bool) -> Result<(), CliError> {
    let reader = loop {
        match Reader::open(data_dir) {
            Ok(reader) => break reader,
            // With --follow, wait for a collector that has not created its store yet.
            Err(StoreError::Io { .. }) if follow && !stop() => std::thread::sleep(FOLLOW_POLL),
            Err(error) => return Err(error.into()),
        }
    };
    let stdout = io::stdout();
    let mut after = 0;
    loop {
        let rows = reader.events_after(after, BATCH)?;
        if !rows.is_empty() {
            let mut out = stdout.lock();
            for row in &rows {
                if let Err(error) = writeln!(out, "{}", row.body) {
                    return quiet_on_broken_pipe(error);
                }
                after = row.pos;
            }
            if let Err(error) = out.flush() {
                return quiet_on_broken_pipe(error);
            }
        }
        if rows.len() == BATCH {
            continue;
        }
        if !follow || stop() {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Lists agents: a table, or JSON lines with `json`.
pub fn agents_list(data_dir: &Path, json: bool) -> Result<(), CliError> {
    let agents = Reader::open(data_dir)?.agents()?;
    let mut out = io::stdout().lock();
    let result = (|| -> io::Result<()> {
        if json {
            for agent in &agents {
                writeln!(out, "{}", serde_json::to_string(agent).map_err(io::Error::other)?)?;
            }
        } else {
            writeln!(
                out,
                "{:<16} {:<20} {:<24} {:>8} {:>6} {:>6} {:<26}",
                "TENANT", "AGENT", "HOSTNAME", "LAST_SEQ", "OPEN", "HELD", "LAST_SEEN"
            )?;
            for agent in &agents {
                writeln!(
                    out,
                    "{:<16} {:<20} {:<24} {:>8} {:>6} {:>6} {:<26}",
                    agent.tenant,
                    agent.agent,
                    agent.hostname,
                    agent.last_seq,
                    agent.open_alerts,
                    agent.held,
                    agent.last_seen
                )?;
            }
        }
        out.flush()
    })();
    result.or_else(quiet_on_broken_pipe)
}

fn quiet_on_broken_pipe(error: io::Error) -> Result<(), CliError> {
    if error.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(CliError::Output(error)) }
}
