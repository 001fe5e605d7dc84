//! The alert-feed watcher: subscribes as an operator (a fresh consumer that starts at
//! the head, so it sees only this run's events), acks everything, and matches each
//! event of our checks to the sample that should have caused it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use nightowl_collector::feed::client::{FeedItem, FeedTarget, SubscribeOptions, Subscription};
use tokio_util::sync::CancellationToken;

use super::{Config, FeedMode, LoadgenError, Shared, session, workload};

/// Positions per ack message at most.
const ACK_BATCH: usize = 128;

/// What the watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Sample → event received, microseconds.
    pub latency_micros: Vec<u64>,
    pub matched: u64,
    pub unmatched: u64,
    pub errors: u64,
}

/// Where and as whom to subscribe; None when the feed is off. An issued operator
/// certificate is written into `dir` (the feed client reads files).
pub fn target(
    config: &Config,
    server_name: &str,
    dir: &tempfile::TempDir,
) -> Result<Option<FeedTarget>, LoadgenError> {
    let (cert, key) = match &config.feed {
        FeedMode::Off => return Ok(None),
        FeedMode::Files { cert, key } => (cert.clone(), key.clone()),
        FeedMode::Issue => {
            let signer = nightowl_collector::pki::CaSigner::load(&config.pki)?;
            let (cert_pem, key_pem) = signer.operator_pem("loadgen", None)?;
            let cert = dir.path().join("operator.pem");
            let key = dir.path().join("operator.key");
            let write = |path: &std::path::Path, text: &str| {
                std::fs::write(path, text)
                    .map_err(|source| LoadgenError::Read { path: path.to_owned(), source })
            };
            write(&cert, &cert_pem)?;
            write(&key, &key_pem)?;
            (cert, key)
        }
    };
    Ok(Some(FeedTarget {
        url: config.collector.clone(),
        ca: config.pki.join("ca.pem"),
        cert,
        key,
        server_name: Some(server_name.to_owned()),
    }))
}

pub async fn subscribe(
    target: &FeedTarget,
    run_id: &str,
) -> Result<(FeedTarget, Subscription), LoadgenError> {
    let subscription = Subscription::open(target, &options(run_id)).await?;
    Ok((target.clone(), subscription))
}

fn options(run_id: &str) -> SubscribeOptions {
    let mut options = SubscribeOptions::new(&format!("loadgen-{}-{run_id}", std::process::id()));
    options.max_in_flight = 1024;
    options.ack_timeout = Duration::from_secs(30);
    options
}

/// Reads the feed until `done`, resubscribing (same consumer) when the collector goes
/// away (a drill restarts it).
pub async fn watch(
    (target, mut subscription): (FeedTarget, Subscription),
    shared: Arc<Shared>,
    done: CancellationToken,
) -> Seen {
    let mut seen = Seen::default();
    let run_id = shared.run_id.clone();
    let mut seen_ids = std::collections::HashSet::new();
    // Acks go in batches: the collector does not read acks while it waits to send, so
    // one ack message per event (awaited) can fill the ack channel and stall both sides.
    let mut unacked: Vec<i64> = Vec::new();
    let mut flush = tokio::time::interval(Duration::from_millis(100));
    loop {
        let item = tokio::select! {
            () = done.cancelled() => break,
            _ = flush.tick() => {
                if subscription.ack(std::mem::take(&mut unacked)).await.is_err() {
                    seen.errors += 1;
                }
                continue;
            }
            item = subscription.next() => item,
        };
        match item {
            Ok(Some(FeedItem::Event { pos, id, json, .. })) => {
                if seen_ids.insert(id) {
                    record(&shared, &json, &mut seen);
                }
                unacked.push(pos);
                if unacked.len() >= ACK_BATCH && subscription.ack(std::mem::take(&mut unacked)).await.is_err()
                {
                    seen.errors += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                if let Err(error) = &item
                    && seen.errors == 0
                {
                    eprintln!("loadgen: alert feed lost (resubscribing): {error}");
                }
                unacked.clear();
                seen.errors += 1;
                // The collector restarts: try again until it is back or we are done.
                loop {
                    tokio::select! {
                        () = done.cancelled() => return seen,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    if let Ok(next) = Subscription::open(&target, &options(&run_id)).await {
                        subscription = next;
                        break;
                    }
                }
            }
        }
    }
    seen
}

fn record(shared: &Shared, json: &str, seen: &mut Seen) {
    let received_ms = session::now_ms();
    let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else { return };
    let config = &shared.config;
    if event["tenant"] != config.tenant.as_str() || event["rule"] != workload::RULE {
        return;
    }
    let session = event["agent"]
        .as_str()
        .and_then(|agent| agent.strip_prefix(config.agent_prefix.as_str()))
        .and_then(|index| index.parse::<u32>().ok());
    let check = event["check"].as_str().and_then(workload::check_index);
    let (Some(session), Some(check)) = (session, check) else { return };
    let firing = event["status"] == "firing";
    let sampled = shared
        .expected
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get_mut(&(session, check))
        .and_then(VecDeque::pop_front);
    match sampled {
        Some((expected_firing, sampled_at_ms)) if expected_firing == firing => {
            seen.matched += 1;
            seen.latency_micros.push((received_ms - sampled_at_ms).max(0) as u64 * 1000);
        }
        // Nothing expected, or out of step: a duplicate, a lost one, or flapping.
        _ => seen.unmatched += 1,
    }
}
