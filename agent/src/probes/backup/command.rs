//! The `command` source: a program that checks the backup by its exit status.
//!
//! Exit status 0 is a success now; any other status a failure whose detail is the first
//! line of output (stdout, else stderr). A program that cannot be started, is killed by a
//! signal or outlives `timeout` (its process group is killed) cannot be checked. The last
//! success is kept in the state file, so a failing command still reports when it last
//! succeeded, across restarts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Evidence, first_line, human_age};
use crate::probes::exec::{self, ExecSpec};

/// What the state file keeps for a `command` source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct CommandState {
    /// The command this state belongs to; state for another command is dropped.
    pub command: Vec<String>,
    pub last_success_s: Option<f64>,
}

pub(super) struct CommandSource {
    timeout: Duration,
    pub(super) state: CommandState,
}

impl CommandSource {
    pub(super) fn new(command: Vec<String>, timeout: Duration, saved: Option<CommandState>) -> Self {
        let state = saved
            .filter(|saved| saved.command == command)
            .unwrap_or(CommandState { command, last_success_s: None });
        Self { timeout, state }
    }

    pub(super) async fn sample(&mut self, now: f64) -> Result<Evidence, String> {
        let program = self.state.command.first().cloned().unwrap_or_default();
        let output = exec::run(&ExecSpec::new(self.state.command.clone(), self.timeout))
            .await
            .map_err(|error| error.to_string())?;
        let said = first_line(&output.stdout, &output.stderr);
        match output.code {
            Some(0) => {
                self.state.last_success_s = Some(now);
                Ok(Evidence {
                    last_success: Some(now),
                    reports_success: true,
                    last_result: Some(true),
                    size_bytes: None,
                    detail: format!(
                        "{program} exited 0{}",
                        said.map_or(String::new(), |line| format!(": {line}"))
                    ),
                })
            }
            Some(code) => {
                let previous = self
                    .state
                    .last_success_s
                    .map_or(String::new(), |at| format!(" (last success {} ago)", human_age(now - at)));
                Ok(Evidence {
                    last_success: self.state.last_success_s,
                    reports_success: true,
                    last_result: Some(false),
                    size_bytes: None,
                    detail: format!(
                        "{program} exited {code}: {}{previous}",
                        said.as_deref().unwrap_or("(no output)")
                    ),
                })
            }
            None => Err(format!("{program} was killed by a signal")),
        }
    }
}
