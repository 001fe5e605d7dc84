//! Read-side commands that run beside a live collector: `alerts tail`, `agents list`,
//! `sinks list`, `sinks dead-letters`. They open the store read-only; the collector need
//! not be running. `alerts tail --collector URL` is instead a client of the alert feed
//! (works from anywhere with an operator certificate; acks what it printed).

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
    #[error(transparent)]
    Feed(#[from] crate::feed::client::FeedClientError),
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

/// `alerts tail --collector URL`: prints each event of the feed as a JSON line and acks
/// it once printed and flushed. Without `follow` it stops when it has caught up.
pub async fn alerts_tail_remote(
    target: &crate::feed::client::FeedTarget,
    options: &crate::feed::client::SubscribeOptions,
    follow: bool,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    use crate::feed::client::{FeedItem, Subscription};
    let mut subscription = Subscription::open(target, options).await?;
    tokio::pin!(stop);
    loop {
        let item = tokio::select! {
            () = &mut stop => break,
            item = subscription.next() => item?,
        };
        match item {
            None => return Ok(()),
            Some(FeedItem::Event { pos, json, .. }) => {
                let mut out = io::stdout().lock();
                if let Err(error) = writeln!(out, "{json}").and_then(|()| out.flush()) {
                    return quiet_on_broken_pipe(error);
                }
                drop(out);
                subscription.ack(vec![pos]).await?;
            }
            Some(FeedItem::Gap { from_pos, to_pos, reason }) => {
                eprintln!("nightowl-collector: events {from_pos}..={to_pos} are gone: {reason}");
            }
            Some(FeedItem::Idle { .. }) if !follow => break,
            Some(FeedItem::Idle { .. }) => {}
        }
    }
    // Let the collector record the last acks before the connection goes.
    subscription.close().await;
    Ok(())
}

/// Lists the queue's consumers (sinks and feed subscribers): cursor, lag, counts.
pub fn sinks_list(data_dir: &Path, json: bool) -> Result<(), CliError> {
    let consumers = Reader::open(data_dir)?.consumers()?;
    let mut out = io::stdout().lock();
    let result = (|| -> io::Result<()> {
        if json {
            for consumer in &consumers {
                writeln!(out, "{}", serde_json::to_string(consumer).map_err(io::Error::other)?)?;
            }
        } else {
            writeln!(
                out,
                "{:<32} {:>10} {:>8} {:>10} {:>6} {:<26}",
                "CONSUMER", "CURSOR", "LAG", "DELIVERED", "DEAD", "UPDATED"
            )?;
            for consumer in &consumers {
                writeln!(
                    out,
                    "{:<32} {:>10} {:>8} {:>10} {:>6} {:<26}",
                    consumer.name,
                    consumer.acked_pos,
                    consumer.lag,
                    consumer.delivered,
                    consumer.dead_lettered,
                    consumer.updated_at
                )?;
            }
        }
        out.flush()
    })();
    result.or_else(quiet_on_broken_pipe)
}

/// Prints dead letters as JSON lines (of one sink when `sink` is given).
pub fn dead_letters(data_dir: &Path, sink: Option<&str>) -> Result<(), CliError> {
    let consumer = sink.map(crate::sinks::consumer_name);
    let letters = Reader::open(data_dir)?.dead_letters(consumer.as_deref())?;
    let mut out = io::stdout().lock();
    let result = (|| -> io::Result<()> {
        for letter in &letters {
            writeln!(out, "{}", serde_json::to_string(letter).map_err(io::Error::other)?)?;
        }
        out.flush()
    })();
    result.or_else(quiet_on_broken_pipe)
}

fn quiet_on_broken_pipe(error: io::Error) -> Result<(), CliError> {
    if error.kind() == io::ErrorKind::BrokenPipe { Ok(()) } else { Err(CliError::Output(error)) }
}
