//! `nightowl-agent`: parse the command line and hand over to the library.

// `deny`, not `forbid`: the one exception is the `malloc` module below (a glibc tunable).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nightowl_agent::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Exit status for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit status for a command line that does not parse (EX_USAGE, as for config errors).
const EXIT_USAGE: u8 = 64;
/// What the runtime waits, at exit, for blocking calls still running (ones `run` does
/// not name: the resolver's, say).
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

const USAGE: &str = "\
nightowl agent: samples endpoint health, streams it to the collector

Usage: nightowl-agent <COMMAND> [--config FILE]

Commands:
  run    Run the agent (default config: /etc/nightowl/agent.toml)
  check  Run every probe once, print the results grouped by family, exit
  spool  Show the spool: reports waiting for the collector's ack (JSON)

Options:
  --config FILE  The agent's config file
  -h, --help     Print this help
  -V, --version  Print the version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run { config: Option<PathBuf> },
    Check { config: Option<PathBuf> },
    Spool { config: Option<PathBuf> },
    Help,
    Version,
}

/// Parses the arguments after the program name. A hand-written parser over `lexopt`
/// rather than clap: three subcommands and one option do not need clap's program text,
/// which on an endpoint is resident memory (as ripgrep 14 did for size; figures in
/// docs/performance.md).
fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut subcommand: Option<String> = None;
    let mut config: Option<PathBuf> = None;
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("config") if subcommand.is_some() => {
                if config.is_some() {
                    return Err("--config given twice".into());
                }
                config = Some(parser.value().map_err(|error| error.to_string())?.into());
            }
            Value(value) if subcommand.is_none() => {
                let name = value.into_string().map_err(|value| format!("unknown command {value:?}"))?;
                match name.as_str() {
                    "run" | "check" | "spool" => subcommand = Some(name),
                    "help" => return Ok(Command::Help),
                    _ => return Err(format!("unknown command {name:?}")),
                }
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    match subcommand.as_deref() {
        Some("run") => Ok(Command::Run { config }),
        Some("check") => Ok(Command::Check { config }),
        Some("spool") => Ok(Command::Spool { config }),
        _ => Err("a command is required".into()),
    }
}

fn main() -> ExitCode {
    // First, while this is the only thread: every later thread shares one malloc arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let one_arena = malloc::use_one_arena();
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("nightowl-agent: {error}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_tracing();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !one_arena {
        tracing::warn!("mallopt(M_ARENA_MAX, 1) refused; threads keep their own malloc arenas");
    }
    // One crypto provider for rustls, chosen explicitly (see STACK.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("nightowl-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            let config = match Config::load(&path) {
                Ok(config) => config,
                Err(error) => return config_error(&error),
            };
            if config.collector.is_none() {
                eprintln!(
                    "nightowl-agent: config error: {}: collector: missing [collector] section (url, ca, cert, key)",
                    config.source
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            block_on(async move {
                match nightowl_agent::run(config, Some(path), shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("nightowl-agent: {error}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Check { config } => {
            let config = match load(config.as_deref(), false) {
                Ok(config) => config,
                Err(error) => return config_error(&error),
            };
            block_on(async move {
                print!("{}", nightowl_agent::check(&config).await);
                ExitCode::SUCCESS
            })
        }
        Command::Spool { config } => {
            let config = match load(config.as_deref(), true) {
                Ok(config) => config,
                Err(error) => return config_error(&error),
            };
            match nightowl_agent::spool::Spool::stats_at(&config.state_dir) {
                Ok(stats) => {
                    println!("{}", serde_json::to_string(&stats).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("nightowl-agent: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads `path`, or the default config path when it exists, or (only when
/// `require_file` is false) the embedded defaults.
fn load(path: Option<&Path>, require_file: bool) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Config::load(Path::new(DEFAULT_CONFIG_PATH)),
        None if require_file => Err(ConfigError::file(DEFAULT_CONFIG_PATH, "not found: pass --config FILE")),
        None => Ok(Config::embedded()),
    }
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("nightowl-agent: config error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// A small single-threaded runtime: the agent's work is a few tasks, and every thread
/// costs memory on the endpoint. Blocking work (SQLite, statvfs) goes to the blocking pool.
///
/// The runtime is shut down with a timeout, not dropped: a drop waits for every blocking
/// call still running, and one stuck on a hung mount never returns. `run` has already
/// waited its grace ([`nightowl_agent::SHUTDOWN_GRACE`]) for the calls it knows of.
fn block_on<F: std::future::Future<Output = ExitCode>>(future: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build() {
        Ok(runtime) => {
            let code = runtime.block_on(future);
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
            code
        }
        Err(error) => {
            eprintln!("nightowl-agent: cannot start runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM; only Ctrl-C stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs to stderr, filtered by `RUST_LOG` ("warn", "info,nightowl_agent=debug": a default
/// level and levels per target prefix); unset, empty or invalid means "info".
/// `filter::Targets` rather than `EnvFilter`: the same directives minus span-field
/// filters, without the regex engine `EnvFilter` carries (resident program text).
fn init_tracing() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| directives.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO));
    let format = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    tracing_subscriber::registry().with(filter).with(format).init();
}

/// glibc's allocator gives each thread that allocates its own arena (up to 8 per core),
/// and each keeps its own free memory: a measurable part of the agent's RSS (figures in
/// docs/performance.md), for a process whose threads (tokio's blocking pool, notify,
/// the statvfs deadline threads) allocate a few KiB now and then. One arena for all of
/// them: contention is negligible at the agent's allocation rate.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod malloc {
    /// Limits glibc malloc to its main arena; false when glibc refused.
    pub fn use_one_arena() -> bool {
        // SAFETY: mallopt only sets an allocator tunable and touches no Rust-visible
        // memory; it is called from `main` before any other thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn commands_and_config() {
        assert_eq!(parse(&["run"]), Ok(Command::Run { config: None }));
        let config = Some(PathBuf::from("/etc/a.toml"));
        assert_eq!(parse(&["run", "--config", "/etc/a.toml"]), Ok(Command::Run { config: config.clone() }));
        assert_eq!(parse(&["check", "--config=/etc/a.toml"]), Ok(Command::Check { config: config.clone() }));
        assert_eq!(parse(&["spool", "--config", "/etc/a.toml"]), Ok(Command::Spool { config }));
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["run", "-h"]), Ok(Command::Help));
        assert_eq!(parse(&["help"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn bad_command_lines_name_the_problem() {
        let error = |args: &[&str]| parse(args).unwrap_err();
        assert_eq!(error(&[]), "a command is required");
        assert_eq!(error(&["enrol"]), "unknown command \"enrol\"");
        assert!(error(&["run", "--config"]).contains("--config"), "{}", error(&["run", "--config"]));
        assert!(error(&["run", "--verbose"]).contains("--verbose"), "{}", error(&["run", "--verbose"]));
        assert!(error(&["run", "extra"]).contains("extra"), "{}", error(&["run", "extra"]));
        assert_eq!(error(&["run", "--config", "a", "--config", "b"]), "--config given twice");
        // --config belongs to the command, as it always did.
        assert!(error(&["--config", "a", "run"]).contains("--config"));
    }
}
