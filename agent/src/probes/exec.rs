//! Running external programs for probes (backup tools, Nagios plugins), safely.
//!
//! - No shell: `argv[0]` is executed directly with `argv[1..]` as arguments, so nothing in
//!   a config value is ever interpreted by `/bin/sh`.
//! - A deadline: on expiry the program's whole process group is killed (SIGKILL), so a
//!   plugin that forked children cannot leave them behind.
//! - Bounded output: at most `max_output` bytes of stdout and of stderr are kept; the
//!   rest is read and discarded so the child never blocks on a full pipe.
//! - stdin is /dev/null; `LC_ALL=C` so tools print parseable, unlocalised text.
//!
//! The commands run are the ones in the agent's LOCAL config only.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Default cap on captured stdout / stderr.
pub const DEFAULT_MAX_OUTPUT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command")]
    Empty,
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} timed out after {timeout:?} and was killed")]
    TimedOut { program: String, timeout: Duration },
    #[error("{program}: {source}")]
    Io { program: String, source: std::io::Error },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    /// Exit code; None when the program was ended by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when stdout or stderr was longer than the cap.
    pub truncated: bool,
    pub elapsed: Duration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub max_output: usize,
    /// Extra environment variables (e.g. `RESTIC_PASSWORD_FILE`).
    pub env: Vec<(String, String)>,
    pub current_dir: Option<PathBuf>,
}

impl ExecSpec {
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        Self { argv, timeout, max_output: DEFAULT_MAX_OUTPUT, env: Vec::new(), current_dir: None }
    }
}

/// Runs `spec` to completion or until its deadline.
pub async fn run(spec: &ExecSpec) -> Result<ExecOutput, ExecError> {
    let (program, args) = spec.argv.split_first().ok_or(ExecError::Empty)?;
    let started = Instant::now();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("LC_ALL", "C")
        .kill_on_drop(true);
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(dir) = &spec.current_dir {
        command.current_dir(dir);
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child =
        command.spawn().map_err(|source| ExecError::Spawn { program: program.clone(), source })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let max = spec.max_output;
    let work = async {
        let (out, err, status) =
            tokio::join!(read_capped(stdout, max), read_capped(stderr, max), child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok((out, err, status)) => {
            let status = status.map_err(|source| ExecError::Io { program: program.clone(), source })?;
            let (stdout, out_truncated) =
                out.map_err(|source| ExecError::Io { program: program.clone(), source })?;
            let (stderr, err_truncated) =
                err.map_err(|source| ExecError::Io { program: program.clone(), source })?;
            Ok(ExecOutput {
                code: status.code(),
                stdout,
                stderr,
                truncated: out_truncated || err_truncated,
                elapsed: started.elapsed(),
            })
        }
        Err(_) => {
            kill_group(&mut child);
            // Reap it so no zombie is left; kill_on_drop covers the impossible rest.
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(ExecError::TimedOut { program: program.clone(), timeout: spec.timeout })
        }
    }
}

fn kill_group(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)) {
        // The child leads its own process group (process_group(0) above).
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.start_kill();
}

/// Reads a pipe to its end, keeping at most `max` bytes; returns (text, truncated).
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, max: usize) -> std::io::Result<(String, bool)> {
    let Some(mut pipe) = pipe else { return Ok((String::new(), false)) };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    let mut truncated = false;
    loop {
        let read = pipe.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        let room = max.saturating_sub(kept.len());
        if room < read {
            truncated = true;
        }
        kept.extend_from_slice(&buffer[..read.min(room)]);
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), truncated))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout_ms: u64) -> ExecSpec {
        ExecSpec::new(argv.iter().map(|arg| arg.to_string()).collect(), Duration::from_millis(timeout_ms))
    }

    #[tokio::test]
    async fn exit_code_and_output_without_a_shell() {
        let output = run(&spec(&["sh", "-c", "echo out; echo err >&2; exit 3"], 10_000)).await.unwrap();
        assert_eq!(output.code, Some(3));
        assert_eq!(output.stdout, "out\n");
        assert_eq!(output.stderr, "err\n");
        // Arguments are passed verbatim: no globbing, no expansion.
        let output = run(&spec(&["echo", "$HOME", "*"], 10_000)).await.unwrap();
        assert_eq!(output.stdout, "$HOME *\n");
    }

    #[tokio::test]
    async fn a_hanging_program_and_its_children_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-alive");
        // The child of the program would touch the marker after 2 s if it survived.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = Instant::now();
        let error = run(&spec(&["sh", "-c", &script], 300)).await.unwrap_err();
        assert!(matches!(error, ExecError::TimedOut { .. }), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the program's child survived the kill");
    }

    #[tokio::test]
    async fn output_is_capped_and_drained() {
        let mut big = spec(&["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2"], 10_000);
        big.max_output = 1000;
        let output = run(&big).await.unwrap();
        assert_eq!(output.code, Some(0));
        assert_eq!(output.stdout.len(), 1000);
        assert!(output.truncated);
        assert_eq!(output.stderr, "done\n");
    }

    #[tokio::test]
    async fn missing_programs_and_empty_commands_are_errors() {
        assert!(matches!(run(&spec(&["/nonexistent/plugin"], 1000)).await, Err(ExecError::Spawn { .. })));
        assert!(matches!(run(&spec(&[], 1000)).await, Err(ExecError::Empty)));
    }
}
