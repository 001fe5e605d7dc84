//! `nightowl-loadgen`: N simulated agents against a collector (see
//! `nightowl_tests::loadgen`), and `nightowl-loadgen verify` for the drills' accounting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use nightowl_tests::loadgen::{self, Config, FeedMode, ledger};

#[derive(Debug, Parser)]
#[command(name = "nightowl-loadgen", version, about = "Load generator for the nightowl collector")]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a ledger against the collector's `agents list --json` and `alerts tail`
    /// output: every acked report durable, every alert transition once, in order.
    Verify {
        #[arg(long)]
        ledger: PathBuf,
        /// `nightowl-collector agents list --json` output.
        #[arg(long)]
        agents: PathBuf,
        /// `nightowl-collector alerts tail` output (JSON lines).
        #[arg(long)]
        events: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Collector URL.
    #[arg(long, default_value = "https://127.0.0.1:7443")]
    collector: String,
    /// TLS name of the collector to verify (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// The collector's CA directory (`ca init --dir`): ca.pem and ca.key.
    #[arg(long, required = true)]
    pki: Option<PathBuf>,
    #[arg(long, default_value = "loadgen")]
    tenant: String,
    /// Agent ids are <prefix><5-digit index>.
    #[arg(long, default_value = "lg-")]
    agent_prefix: String,
    /// Concurrent sessions (one HTTP/2 connection and certificate each).
    #[arg(long, default_value_t = 100)]
    sessions: u32,
    /// Results per report.
    #[arg(long, default_value_t = 10)]
    results: u32,
    /// Report interval per session.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long reports are generated.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// After --duration: how long to wait for outstanding acks and alerts.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Fraction of results that cross thresholds (fire/resolve alternately).
    #[arg(long, default_value_t = 0.01)]
    crossing: f64,
    /// Sessions started per second.
    #[arg(long, default_value_t = 500)]
    ramp: u32,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Operator certificate for the alert feed (default: one is issued from --pki).
    #[arg(long, requires = "feed_key")]
    feed_cert: Option<PathBuf>,
    #[arg(long, requires = "feed_cert")]
    feed_key: Option<PathBuf>,
    /// Do not watch the alert feed (no sample -> alert latency).
    #[arg(long, conflicts_with = "feed_cert")]
    no_feed: bool,
    /// Write what each session sent and got acked (JSON lines), for `verify`.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// A progress line on stderr every second.
    #[arg(long)]
    progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Verify { ledger, agents, events }) => verify(&ledger, &agents, &events),
        None => load(cli.run),
    }
}

fn read_json_lines<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<Vec<T>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(|error| format!("{}: {error}", path.display())))
        .collect()
}

fn verify(ledger_path: &PathBuf, agents: &PathBuf, events: &PathBuf) -> ExitCode {
    let inputs = (|| {
        Ok::<_, String>((read_json_lines(ledger_path)?, read_json_lines(agents)?, read_json_lines(events)?))
    })();
    let (rows, agents, events): (Vec<ledger::LedgerRow>, Vec<serde_json::Value>, Vec<serde_json::Value>) =
        match inputs {
            Ok(inputs) => inputs,
            Err(error) => {
                eprintln!("nightowl-loadgen verify: {error}");
                return ExitCode::from(66);
            }
        };
    let verdict = ledger::verify(&rows, &agents, &events);
    println!("{}", serde_json::to_string(&verdict).expect("verdict serialises"));
    if verdict.pass() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn load(args: RunArgs) -> ExitCode {
    let feed = match (args.no_feed, args.feed_cert, args.feed_key) {
        (true, _, _) => FeedMode::Off,
        (false, Some(cert), Some(key)) => FeedMode::Files { cert, key },
        _ => FeedMode::Issue,
    };
    let config = Config {
        collector: args.collector,
        server_name: args.server_name,
        pki: args.pki.expect("clap requires --pki"),
        tenant: args.tenant,
        agent_prefix: args.agent_prefix,
        sessions: args.sessions,
        results: args.results,
        interval: args.interval,
        duration: args.duration,
        drain: args.drain,
        crossing: args.crossing,
        ramp: args.ramp,
        heartbeat: args.heartbeat,
        feed,
        progress: args.progress,
    };
    // Both providers may be linked in a test build; the one we use is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("nightowl-loadgen: cannot start the runtime: {error}");
            return ExitCode::from(70);
        }
    };
    let (summary, rows) = match runtime.block_on(loadgen::run(config)) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("nightowl-loadgen: {error}");
            return ExitCode::from(64);
        }
    };
    if let Some(path) = &args.ledger {
        let text: String = rows
            .iter()
            .map(|row| serde_json::to_string(row).expect("ledger row serialises") + "\n")
            .collect();
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("nightowl-loadgen: cannot write the ledger {}: {error}", path.display());
            return ExitCode::from(73);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
    } else {
        println!("{summary}");
    }
    ExitCode::SUCCESS
}
