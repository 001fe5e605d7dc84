//! `nightowl-collector`: parse the command line and hand over to the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nightowl_collector::config::{Config, ConfigError};
use tokio_util::sync::CancellationToken;

/// Under load the collector allocates per report and per result (decode, HTTP/2
/// buffers, events); glibc malloc spent a large share of the CPU on it
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc madvises its regions for
/// huge pages, and a 2 MiB page is resident as a whole however little of it is used:
/// with 10,000 sessions' small buffers scattered over them that was a large part of
/// the collector's memory, and turning it off costs no CPU (docs/performance.md). Best
/// effort: a kernel without the flag keeps its default.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// Exit status for configuration errors (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// How long shutdown may take before we give up waiting for sessions.
const DRAIN_GRACE: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(
    name = "nightowl-collector",
    version,
    about = "nightowl collector: mTLS ingest, rule evaluation, durable alert queue"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector (no --config: embedded defaults, data in ./nightowl-data).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The collector's certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Alert events in the queue.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Agents the collector knows.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Consumers of the alert queue: sinks and feed subscribers.
    Sinks {
        #[command(subcommand)]
        command: SinksCommand,
    },
}

#[derive(Subcommand)]
enum SinksCommand {
    /// Every consumer with its cursor, lag, delivered and dead-lettered counts.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Events a sink refused for good or gave up on (JSON lines).
    DeadLetters {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only this sink's.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a CA and the collector's server certificate in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// DNS name or IP the agents use to reach the collector (repeatable;
        /// default: localhost and 127.0.0.1).
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Issue an agent client certificate.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        agent: String,
        #[arg(long)]
        cert_out: PathBuf,
        #[arg(long)]
        key_out: PathBuf,
    },
    /// Issue an operator client certificate for the alert feed (every tenant, or one
    /// with --tenant).
    IssueOperator {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        cert_out: PathBuf,
        #[arg(long)]
        key_out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Print queued alert events as JSON lines, oldest first: from the local store, or
    /// with --collector from the alert feed (acked as printed, under --consumer).
    Tail {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Keep printing new events as they are queued.
        #[arg(long)]
        follow: bool,
        /// Read the feed of this collector (https://host:port) instead of the local store.
        #[arg(long, requires_all = ["ca", "cert", "key"])]
        collector: Option<String>,
        /// The collector's CA (feed mode).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Operator certificate and key (feed mode; `ca issue-operator`).
        #[arg(long)]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        /// Durable consumer name (feed mode): a second tail under the same name resumes
        /// where this one stopped.
        #[arg(long, default_value = "tail")]
        consumer: String,
        /// A new consumer starts with every event still queued (default: only new ones).
        #[arg(long)]
        earliest: bool,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List agents with their last report and open alerts.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Run { config } => {
            let config = match load_config(config) {
                Ok(config) => config,
                Err(error) => return config_error(error),
            };
            run(config)
        }
        Command::Ca { command: CaCommand::Init { dir, names } } => {
            report(nightowl_collector::pki::init_ca(&dir, &names).map(|()| {
                eprintln!("created CA and collector certificate in {}", dir.display());
            }))
        }
        Command::Ca { command: CaCommand::Issue { dir, tenant, agent, cert_out, key_out } } => report(
            nightowl_collector::pki::issue_agent(&dir, &tenant, &agent, &cert_out, &key_out).map(|()| {
                eprintln!("issued certificate for {tenant}/{agent}: {}", cert_out.display());
            }),
        ),
        Command::Alerts {
            command:
                AlertsCommand::Tail { collector: Some(url), ca, cert, key, consumer, earliest, follow, config: _ },
        } => {
            let target = nightowl_collector::feed::client::FeedTarget {
                url,
                ca: ca.unwrap_or_default(),
                cert: cert.unwrap_or_default(),
                key: key.unwrap_or_default(),
                server_name: None,
            };
            let mut options = nightowl_collector::feed::client::SubscribeOptions::new(&consumer);
            options.earliest = earliest;
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => return report(Err(error)),
            };
            report(runtime.block_on(async {
                let stop = CancellationToken::new();
                tokio::spawn(signal_watch(stop.clone()));
                nightowl_collector::cli::alerts_tail_remote(&target, &options, follow, stop.cancelled_owned())
                    .await
            }))
        }
        Command::Alerts { command: AlertsCommand::Tail { config, follow, .. } } => {
            match load_config(config) {
                Ok(config) => {
                    let stop = CancellationToken::new();
                    let on_signal = stop.clone();
                    // Ctrl-C ends --follow cleanly (after the current batch is printed).
                    let _ = ctrlc_thread(move || on_signal.cancel());
                    report(nightowl_collector::cli::alerts_tail(&config.data_dir, follow, &|| {
                        stop.is_cancelled()
                    }))
                }
                Err(error) => config_error(error),
            }
        }
        Command::Agents { command: AgentsCommand::List { config, json } } => match load_config(config) {
            Ok(config) => report(nightowl_collector::cli::agents_list(&config.data_dir, json)),
            Err(error) => config_error(error),
        },
        Command::Sinks { command: SinksCommand::List { config, json } } => match load_config(config) {
            Ok(config) => report(nightowl_collector::cli::sinks_list(&config.data_dir, json)),
            Err(error) => config_error(error),
        },
        Command::Sinks { command: SinksCommand::DeadLetters { config, sink } } => match load_config(config) {
            Ok(config) => report(nightowl_collector::cli::dead_letters(&config.data_dir, sink.as_deref())),
            Err(error) => config_error(error),
        },
        Command::Ca { command: CaCommand::IssueOperator { dir, name, tenant, cert_out, key_out } } => report(
            nightowl_collector::pki::issue_operator(&dir, &name, tenant.as_deref(), &cert_out, &key_out).map(
                |()| {
                    eprintln!("issued operator certificate for {name}: {}", cert_out.display());
                },
            ),
        ),
    }
}

fn load_config(path: Option<PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(&path),
        None => Ok(Config::embedded()),
    }
}

fn config_error(error: ConfigError) -> ExitCode {
    tracing::error!("config error: {error}");
    eprintln!("nightowl-collector: config error: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("nightowl-collector: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nightowl-collector: cannot start runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_watch(shutdown.clone()));
        let run = nightowl_collector::run(config, shutdown.clone().cancelled_owned());
        tokio::pin!(run);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN_GRACE).await } => {
                tracing::warn!(grace = ?DRAIN_GRACE, "drain took too long; exiting (unacked reports will be replayed by agents)");
                return ExitCode::FAILURE;
            }
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "collector failed");
                eprintln!("nightowl-collector: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signal_watch(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot watch SIGTERM");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested; draining");
    shutdown.cancel();
}

/// Runs `on_signal` on SIGINT/SIGTERM from a small runtime thread (the CLI commands are
/// synchronous).
fn ctrlc_thread(on_signal: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async move {
            let token = CancellationToken::new();
            signal_watch(token.clone()).await;
            on_signal();
        });
    })?;
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
