//! `nightowl-drill`: the drills of issue 6 that need more than a shell script (see
//! `nightowl_tests::drill`). Run by `deploy/drills/*.sh`; prints progress on stderr and
//! ONE final line on stdout: `drill <name>: pass|fail|skip <figures>`. Exit code 0 on
//! pass, 1 on fail, 2 on skip.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use nightowl_tests::drill::abuse::{self, AbuseOptions, Piece};
use nightowl_tests::drill::partition::{self, PartitionOptions};
use nightowl_tests::drill::{Outcome, Verdict};

#[derive(Parser)]
#[command(about = "nightowl drills: bounded abuse and partition runs against the real binaries")]
struct Cli {
    /// Keep the working directory (logs, data) here instead of a removed temporary one.
    #[arg(long, global = true)]
    keep: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drill 3: cut an agent's network link; spool bounded, everything delivered after.
    Partition {
        /// Seconds the link stays down.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The agent's `[spool] max_reports`.
        #[arg(long, default_value_t = 50)]
        max_reports: u64,
    },
    /// Drill 4: abuse the collector while well-behaved sessions measure their latency.
    Abuse {
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        #[arg(long, default_value_t = 2000)]
        half_open: usize,
        /// Seconds of rapid resets.
        #[arg(long, default_value_t = 10)]
        reset_seconds: u64,
        /// Only these pieces (oversize, malformed, values, halfopen, reset); all by default.
        #[arg(long, value_delimiter = ',')]
        pieces: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let temporary = tempfile::tempdir().expect("temporary directory");
    let dir = match &cli.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).expect("create --keep directory");
            dir.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let outcome: Outcome = match cli.command {
        Command::Partition { seconds, max_reports } => partition::run(
            &PartitionOptions { cut: Duration::from_secs(seconds), max_reports, ..Default::default() },
            &dir,
        ),
        Command::Abuse { sessions, half_open, reset_seconds, pieces } => {
            let pieces = if pieces.is_empty() {
                Piece::ALL.to_vec()
            } else {
                let mut chosen = Vec::new();
                for name in &pieces {
                    match Piece::ALL.iter().find(|piece| piece.name() == name) {
                        Some(piece) => chosen.push(*piece),
                        None => {
                            eprintln!("nightowl-drill: unknown piece {name:?}");
                            return ExitCode::from(64);
                        }
                    }
                }
                chosen
            };
            let options = AbuseOptions {
                sessions,
                half_open,
                reset_duration: Duration::from_secs(reset_seconds),
                pieces,
                ..Default::default()
            };
            let report = abuse::run(&options, &dir);
            for (piece, result) in &report.pieces {
                eprintln!("abuse {}: {result:?}", piece.name());
            }
            report.outcome
        }
    };
    println!("{outcome}");
    match outcome.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Fail => ExitCode::from(1),
        Verdict::Skip => ExitCode::from(2),
    }
}
