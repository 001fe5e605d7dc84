//! `nightowl-agent`: parse the command line and hand over to the library.

// `deny`, not `forbid`: the one exception is the `malloc` module below (a glibc tunable).
#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nightowl_agent::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Exit status for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "nightowl-agent",
    version,
    about = "nightowl agent: samples endpoint health, streams it to the collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (default config: /etc/nightowl/agent.toml).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run every probe once, print the results grouped by family, exit.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the spool: reports waiting for the collector's ack (JSON).
    Spool {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // First, while this is the only thread: every later thread shares one malloc arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let one_arena = malloc::use_one_arena();
    let cli = Cli::parse();
    init_tracing();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !one_arena {
        tracing::warn!("mallopt(M_ARENA_MAX, 1) refused; threads keep their own malloc arenas");
    }
    // One crypto provider for rustls, chosen explicitly (see STACK.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
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
        None if require_file => Err(ConfigError {
            file: DEFAULT_CONFIG_PATH.into(),
            key: "(file)".into(),
            message: "not found: pass --config FILE".into(),
        }),
        None => Ok(Config::embedded()),
    }
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("nightowl-agent: config error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// A small single-threaded runtime: the agent's work is a few tasks, and every thread
/// costs memory on the endpoint. Blocking work (SQLite, statvfs) goes to the blocking pool.
fn block_on<F: std::future::Future<Output = ExitCode>>(future: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().max_blocking_threads(4).build() {
        Ok(runtime) => runtime.block_on(future),
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
/// and each keeps its own free memory: measured ~0.5 MiB of the agent's RSS, for a
/// process whose threads (tokio's blocking pool, notify, the statvfs deadline threads)
/// allocate a few KiB now and then. One arena for all of them: contention is negligible
/// at the agent's allocation rate.
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
