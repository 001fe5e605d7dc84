//! Command probe: runs a Nagios-compatible plugin and reports its verdict and perfdata.
//!
//! One result per `[[command]]`, check id `command:<name>`, kind `command`.
//!
//! - **Running.** `command` is an argv run through [`super::exec`]: never a shell, stdin
//!   from /dev/null, `LC_ALL=C`, output capped at 64 KiB, and on `timeout` the plugin's
//!   whole process group is killed.
//! - **Status.** The exit code is the verdict, as in the Nagios plugin guidelines:
//!   0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Any other exit code, death by a signal, a
//!   timeout or a plugin that cannot be started is UNKNOWN with the reason in `message`.
//!   This family carries its own verdict: the collector's rules may still add theirs.
//! - **Message.** The first line of stdout, up to its first `|`, trimmed and capped at
//!   1 KiB (stderr's first line when stdout is empty).
//! - **Metrics.** `exit_code` (absent after a signal or a timeout), `duration_ms`, and one
//!   group per perfdata item (see [`parse_plugin_output`] for where perfdata is found and
//!   [`parse_perfdata`] for its grammar):
//!   - `<label>`: the value, in base units: times (`s`, `ms`, `us`, `ns`) in seconds and
//!     sizes (`B`, `KB`/`kB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`, `TB`/`TiB`, `PB`/`PiB`) in
//!     bytes, the decimal-looking prefixes counting 1024 as the plugins that print them
//!     (check_disk, check_swap) do. `%`, `c` and any other unit are kept as printed.
//!   - `<label>_warn`, `<label>_crit`: only when the threshold is a plain number (`10`),
//!     converted like the value. Ranges (`10:20`, `~:5`, `@10:20`, `10:`) express a
//!     direction a single number cannot carry, so they are left out rather than guessed.
//!   - `<label>_min`, `<label>_max`: when present and numeric, converted like the value.
//!   - A value of `U` (undetermined) yields no `<label>` metric.
//!
//!   Metric names are the labels lowercased, every run of characters outside
//!   `[a-z0-9_./-]` replaced by one `_`, leading/trailing `_` removed, cut to 200 bytes;
//!   a label that sanitises to nothing is skipped. When two names collide the first one
//!   wins, and `exit_code`/`duration_ms` always win over perfdata. At most 250 metrics
//!   are kept per result (the collector refuses results with more than 256).

use std::time::{Duration, Instant};

use nightowl_proto::{CheckResult, ProbeStatus};
use serde::Deserialize;

mod perfdata;

pub use perfdata::{
    PerfItem, Perfdata, PluginOutput, Threshold, metric_name, parse_perfdata, parse_plugin_output,
    perf_metrics,
};

use super::exec::{self, ExecError, ExecSpec};
use super::{Probe, ProbeContext, ok_result, unknown_result};
use crate::duration::HumanDuration;

const KIND: &str = "command";

/// Used when `timeout` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds of `timeout`.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Cap on `message`, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Cap on metrics per result, built-ins included (the collector's limit is 256).
const MAX_METRICS: usize = 250;

/// Cap on a metric name, leaving room for the `_warn` … suffixes within the collector's
/// 256-byte limit.
const MAX_METRIC_NAME_BYTES: usize = 200;

/// One `[[command]]` entry: a Nagios-compatible plugin.
///
/// ```toml
/// [[command]]
/// name = "root-disk"
/// command = ["/usr/lib/nagios/plugins/check_disk", "-w", "10%", "-c", "5%", "-p", "/"]
/// timeout = "10s"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Check name: the check id is `command:<name>`.
    pub name: String,
    /// The program and its arguments, run directly — never through a shell, so quotes,
    /// `$VARS`, globs and pipes are passed to the program verbatim. The program is an
    /// absolute path, or a bare name looked up in the agent's `PATH`. Required (a
    /// missing list is reported by `validate`, naming the entry).
    #[serde(default)]
    pub command: Vec<String>,
    /// How long the plugin may run before it (and every process it started) is killed
    /// and the check reported UNKNOWN; default 10s, at least 100ms, at most 1h.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl CommandConfig {
    /// Checks the name, the argv and the timeout. The error names the key, e.g.
    /// `command[0]: "./check_x" is a relative path; …`.
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)?;
        let Some(program) = self.command.first() else {
            return Err("command: must not be empty; write the plugin and its arguments, \
                        e.g. [\"/usr/lib/nagios/plugins/check_dummy\", \"0\"]"
                .to_owned());
        };
        if program.is_empty() {
            return Err("command[0]: empty program; write the plugin's absolute path".to_owned());
        }
        // A relative path with a '/' would depend on the agent's working directory.
        if program.contains('/') && !program.starts_with('/') {
            return Err(format!(
                "command[0]: {program:?} is a relative path; write the plugin's absolute path \
                 (or a bare program name to look up in PATH)"
            ));
        }
        if let Some(index) = self.command.iter().position(|arg| arg.contains('\0')) {
            return Err(format!("command[{index}]: contains a NUL character"));
        }
        if let Some(HumanDuration(timeout)) = self.timeout
            && !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout)
        {
            return Err(format!(
                "timeout: {} is out of range; use between 100ms and 1h",
                humantime::format_duration(timeout)
            ));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, |HumanDuration(timeout)| timeout)
    }
}

/// Runs one plugin per sample.
pub struct CommandProbe {
    check_id: String,
    spec: ExecSpec,
}

impl CommandProbe {
    pub fn new(config: &CommandConfig, _context: &ProbeContext) -> Self {
        Self {
            check_id: format!("{KIND}:{}", config.name),
            spec: ExecSpec::new(config.command.clone(), config.timeout()),
        }
    }
}

impl Probe for CommandProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let started = Instant::now();
        let outcome = exec::run(&self.spec).await;
        vec![to_result(self.check_id.clone(), outcome, started.elapsed())]
    }
}

/// Turns a plugin run into the check's result.
fn to_result(
    check_id: String,
    outcome: Result<exec::ExecOutput, ExecError>,
    elapsed: Duration,
) -> CheckResult {
    let output = match outcome {
        Ok(output) => output,
        Err(ExecError::TimedOut { timeout, .. }) => {
            let reason = format!(
                "timed out after {}; the plugin and its children were killed",
                humantime::format_duration(timeout)
            );
            let mut result = unknown_result(check_id, KIND, reason);
            result.metrics.insert("duration_ms".to_owned(), elapsed.as_secs_f64() * 1000.0);
            return result;
        }
        Err(error) => return unknown_result(check_id, KIND, error.to_string()),
    };

    let mut stdout = output.stdout.as_str();
    if output.truncated {
        // The cap may have cut a perfdata item in half: drop the incomplete tail.
        stdout = stdout.rfind(char::is_whitespace).map_or("", |end| &stdout[..end]);
    }
    let parsed = parse_plugin_output(stdout);
    let mut message = parsed.message;
    if message.is_empty() {
        let stderr_line = output.stderr.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("");
        message = stderr_line[..stderr_line.floor_char_boundary(MAX_MESSAGE_BYTES)].to_owned();
    }
    if parsed.perfdata.skipped > 0 {
        tracing::debug!(check = %check_id, skipped = parsed.perfdata.skipped, "malformed perfdata items ignored");
    }

    let status = match output.code {
        Some(0) => ProbeStatus::Ok,
        Some(1) => ProbeStatus::Warning,
        Some(2) => ProbeStatus::Critical,
        Some(3) => ProbeStatus::Unknown,
        Some(code) => {
            message = join_reason(format!("exit code {code} is not a plugin status (0-3)"), &message);
            ProbeStatus::Unknown
        }
        None => {
            message = join_reason("the plugin was killed by a signal".to_owned(), &message);
            ProbeStatus::Unknown
        }
    };

    let mut metrics = perf_metrics(&parsed.perfdata.items, MAX_METRICS - 2);
    if let Some(code) = output.code {
        metrics.insert("exit_code".to_owned(), f64::from(code));
    }
    metrics.insert("duration_ms".to_owned(), output.elapsed.as_secs_f64() * 1000.0);
    let mut result = ok_result(check_id, KIND, metrics, message);
    result.status = status as i32;
    result
}

fn join_reason(reason: String, message: &str) -> String {
    if message.is_empty() { reason } else { format!("{reason}: {message}") }
}

#[cfg(test)]
mod tests;
