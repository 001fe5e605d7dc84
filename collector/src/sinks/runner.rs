//! The delivery loop every sink shares (see the module doc of `sinks` for the contract).
//!
//! ```text
//!  store head ──► reader (own read-only connection, batches after `dispatched`)
//!                   │ filter: no → done at once
//!                   ▼
//!        lane[hash(fingerprint) % concurrency]  (bounded; in order; retries here)
//!                   │ outcome
//!                   ▼
//!   tracker: cursor = just below the oldest in-flight position ──► store.advance_consumer
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Delivery, DeliveryError, Sink, SinkSpec, SinkStats};
use crate::alert::AlertEvent;
use crate::queue::{ConsumerUpdate, DeadLetter, Reader, Store, StoreError};

/// Events read from the store per query.
const READ_BATCH: usize = 256;
/// Events queued per lane before the reader waits (backpressure).
const LANE_DEPTH: usize = 64;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A peer's Retry-After is honoured up to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long the runner waits before trying again when the store fails.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The consumer name of a sink in the store.
pub fn consumer_name(sink: &str) -> String {
    format!("sink:{sink}")
}

/// The running sinks' stats, for operations (CLI, metrics).
#[derive(Debug, Default, Clone)]
pub struct Sinks {
    pub stats: Vec<Arc<SinkStats>>,
}

/// How one event ended for this sink.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Skipped,
    DeadLetter(DeadLetter),
}

/// Runs one sink until `shutdown`: what it was delivering when shutdown came is
/// delivered again after restart (its cursor had not passed it).
pub async fn run_sink(
    store: Store,
    data_dir: PathBuf,
    spec: SinkSpec,
    sink: Arc<dyn Sink>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
) {
    let settings = spec.settings;
    let consumer = consumer_name(&settings.name);
    let cursor = loop {
        match store.register_consumer(&consumer, settings.start).await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::error!(sink = %settings.name, %error, "cannot register the sink's cursor; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(STORE_RETRY) => {}
                }
            }
        }
    };
    tracing::info!(sink = %settings.name, kind = sink.kind(), cursor, "sink started");

    let tasks = TaskTracker::new();
    if let Some(background) = sink.clone().background(shutdown.clone()) {
        tasks.spawn(background);
    }
    let (outcomes, mut outcome_receiver) = mpsc::unbounded_channel::<(i64, Outcome)>();
    let lanes: Vec<mpsc::Sender<Delivery>> = (0..settings.concurrency)
        .map(|_| {
            let (lane, receiver) = mpsc::channel(LANE_DEPTH);
            tasks.spawn(run_lane(
                receiver,
                sink.clone(),
                stats.clone(),
                settings.give_up_after,
                outcomes.clone(),
                shutdown.clone(),
            ));
            lane
        })
        .collect();
    drop(outcomes);

    let mut tracker = Tracker::new(cursor);
    let reader = Arc::new(Mutex::new(None::<Reader>));
    let mut head = store.head();
    let mut lost_checked_through = cursor;
    'run: loop {
        // Read and dispatch what is there, as long as the lanes take it.
        let after = tracker.dispatched;
        let rows = match read_after(&reader, &data_dir, after).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(sink = %settings.name, %error, "cannot read the queue; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break 'run,
                    () = tokio::time::sleep(STORE_RETRY) => continue,
                }
            }
        };
        if let Some((pruned, first)) = rows.first().map(|row| (row.0, row.1.pos)) {
            // Retention deleted events this sink never saw: say so, loudly, once.
            if pruned > lost_checked_through && first > after + 1 {
                let lost = (first - after - 1) as u64;
                stats.lost_to_retention.fetch_add(lost, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    sink = %settings.name,
                    lost,
                    from = after + 1,
                    to = first - 1,
                    "sink fell behind retention: these events were deleted before delivery"
                );
                lost_checked_through = pruned;
            }
        }
        let read_full = rows.len() == READ_BATCH;
        for (_, row) in rows {
            let pos = row.pos;
            tracker.dispatch(pos);
            match serde_json::from_str::<AlertEvent>(&row.body) {
                Err(error) => tracker.complete(
                    pos,
                    Outcome::DeadLetter(DeadLetter {
                        pos,
                        event_id: format!("pos-{pos}"),
                        error: format!("stored event does not parse: {error}"),
                        attempts: 0,
                        body: row.body,
                    }),
                ),
                Ok(event) if !settings.filter.accepts(&event) => tracker.complete(pos, Outcome::Skipped),
                Ok(event) => {
                    let lane = &lanes[lane_of(&event.fingerprint, lanes.len())];
                    let delivery = Delivery { pos, event, body: row.body, attempt: 1 };
                    // A full lane waits here; outcomes keep flowing meanwhile.
                    let mut pending = Some(delivery);
                    while let Some(delivery) = pending.take() {
                        match lane.try_send(delivery) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Closed(_)) => break 'run,
                            Err(mpsc::error::TrySendError::Full(delivery)) => {
                                pending = Some(delivery);
                                tokio::select! {
                                    () = shutdown.cancelled() => break 'run,
                                    Some((pos, outcome)) = outcome_receiver.recv() => {
                                        tracker.complete(pos, outcome);
                                    }
                                    permit = lane.reserve() => match permit {
                                        Ok(permit) => {
                                            if let Some(delivery) = pending.take() {
                                                permit.send(delivery);
                                            }
                                        }
                                        Err(_) => break 'run,
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
        flush(&store, &consumer, &mut tracker, &stats).await;
        if read_full {
            continue;
        }
        // Wait for new events or outcomes.
        tokio::select! {
            () = shutdown.cancelled() => break 'run,
            changed = head.changed() => if changed.is_err() { break 'run },
            Some((pos, outcome)) = outcome_receiver.recv() => {
                tracker.complete(pos, outcome);
                while let Ok((pos, outcome)) = outcome_receiver.try_recv() {
                    tracker.complete(pos, outcome);
                }
                flush(&store, &consumer, &mut tracker, &stats).await;
            }
        }
    }
    // Lanes stop at shutdown; record what finished before it.
    drop(lanes);
    tasks.close();
    tasks.wait().await;
    while let Ok((pos, outcome)) = outcome_receiver.try_recv() {
        tracker.complete(pos, outcome);
    }
    flush(&store, &consumer, &mut tracker, &stats).await;
    tracing::info!(sink = %settings.name, cursor = tracker.flushed, "sink stopped");
}

/// Reads a batch after `after` with the sink's own connection (opened on first use),
/// on the blocking pool. Each row comes with the retention mark at read time.
async fn read_after(
    reader: &Arc<Mutex<Option<Reader>>>,
    data_dir: &std::path::Path,
    after: i64,
) -> Result<Vec<(i64, crate::queue::EventRow)>, StoreError> {
    let reader = reader.clone();
    let data_dir = data_dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut slot = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(Reader::open(&data_dir)?);
        }
        let reader = slot.as_ref().expect("opened above");
        let pruned = reader.pruned_through()?;
        Ok(reader.events_after(after, READ_BATCH)?.into_iter().map(|row| (pruned, row)).collect())
    })
    .await
    .map_err(|_| StoreError::WriterGone)?
}

fn lane_of(fingerprint: &str, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    fingerprint.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Writes the cursor and dead letters if anything moved. A failed write is retried with
/// the next flush (the tracker keeps what was not written).
async fn flush(store: &Store, consumer: &str, tracker: &mut Tracker, stats: &SinkStats) {
    let Some(update) = tracker.update(consumer) else { return };
    let dead = update.dead_letters.len();
    match store.advance_consumer(update.clone()).await {
        Ok(()) => tracker.flushed(update),
        Err(error) => {
            tracing::error!(consumer, sink = %stats.name, %error, dead_letters = dead, "cannot record the sink's progress; will retry");
        }
    }
}

/// Which positions are in flight, and how far the cursor may move.
#[derive(Debug)]
struct Tracker {
    /// Highest position handed out (delivered, skipped or in a lane).
    dispatched: i64,
    /// Dispatched and not finished.
    in_flight: BTreeSet<i64>,
    /// Finished, waiting to be written.
    delivered: u64,
    dead_letters: BTreeMap<i64, DeadLetter>,
    /// The cursor as last written.
    flushed: i64,
}

impl Tracker {
    fn new(cursor: i64) -> Self {
        Self {
            dispatched: cursor,
            in_flight: BTreeSet::new(),
            delivered: 0,
            dead_letters: BTreeMap::new(),
            flushed: cursor,
        }
    }

    fn dispatch(&mut self, pos: i64) {
        self.dispatched = self.dispatched.max(pos);
        self.in_flight.insert(pos);
    }

    fn complete(&mut self, pos: i64, outcome: Outcome) {
        self.in_flight.remove(&pos);
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Skipped => {}
            Outcome::DeadLetter(letter) => {
                self.dead_letters.insert(pos, letter);
            }
        }
    }

    /// Every position below the oldest in-flight one is done.
    fn cursor(&self) -> i64 {
        match self.in_flight.first() {
            Some(oldest) => oldest - 1,
            None => self.dispatched,
        }
    }

    fn update(&self, consumer: &str) -> Option<ConsumerUpdate> {
        let cursor = self.cursor();
        if cursor == self.flushed && self.delivered == 0 && self.dead_letters.is_empty() {
            return None;
        }
        Some(ConsumerUpdate {
            consumer: consumer.to_owned(),
            acked_pos: cursor,
            delivered: self.delivered,
            dead_letters: self.dead_letters.values().cloned().collect(),
        })
    }

    fn flushed(&mut self, update: ConsumerUpdate) {
        self.flushed = self.flushed.max(update.acked_pos);
        self.delivered -= update.delivered;
        for letter in update.dead_letters {
            self.dead_letters.remove(&letter.pos);
        }
    }
}

/// One lane: delivers its events in order, retrying each until it is delivered, given
/// up on, or shutdown comes.
async fn run_lane(
    mut deliveries: mpsc::Receiver<Delivery>,
    sink: Arc<dyn Sink>,
    stats: Arc<SinkStats>,
    give_up_after: Duration,
    outcomes: mpsc::UnboundedSender<(i64, Outcome)>,
    shutdown: CancellationToken,
) {
    loop {
        let mut delivery = tokio::select! {
            () = shutdown.cancelled() => return,
            delivery = deliveries.recv() => match delivery {
                Some(delivery) => delivery,
                None => return,
            },
        };
        let started = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let outcome = loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = sink.deliver(&delivery) => result,
            };
            let error = match result {
                Ok(()) => {
                    stats.succeeded();
                    break Outcome::Delivered;
                }
                Err(error) => error,
            };
            stats.attempt_failed(&error);
            let retry_after = match &error {
                DeliveryError::Permanent { .. } => None,
                DeliveryError::Retryable { retry_after, .. } => {
                    Some(retry_after.map_or_else(|| jittered(backoff), |asked| asked.min(MAX_RETRY_AFTER)))
                }
            };
            let give_up = match retry_after {
                None => true,
                Some(wait) => started.elapsed() + wait > give_up_after,
            };
            if give_up {
                tracing::warn!(
                    sink = %stats.name, id = %delivery.event.id, attempts = delivery.attempt, %error,
                    "event dead-lettered"
                );
                stats.dead_lettered();
                let error = match &error {
                    DeliveryError::Permanent { .. } => error.to_string(),
                    DeliveryError::Retryable { .. } => {
                        format!(
                            "gave up after {} attempts over {:?}: {error}",
                            delivery.attempt,
                            started.elapsed()
                        )
                    }
                };
                break Outcome::DeadLetter(DeadLetter {
                    pos: delivery.pos,
                    event_id: delivery.event.id.clone(),
                    error,
                    attempts: delivery.attempt,
                    body: delivery.body.clone(),
                });
            }
            let wait = retry_after.unwrap_or(backoff);
            tracing::debug!(sink = %stats.name, id = %delivery.event.id, attempt = delivery.attempt, ?wait, %error, "delivery failed; retrying");
            stats.retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            delivery.attempt += 1;
        };
        if outcomes.send((delivery.pos, outcome)).is_err() {
            return;
        }
    }
}

/// Equal jitter: uniformly in [backoff / 2, backoff].
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Starts every configured sink; returns their stats. Each runs until `shutdown`, as a
/// restarted task of `supervisor` (its cursor is durable: a new run resumes there).
pub fn start_all(
    specs: &[SinkSpec],
    store: &Store,
    data_dir: &std::path::Path,
    supervisor: &crate::supervise::Supervisor,
    shutdown: &CancellationToken,
) -> Result<Sinks, String> {
    let mut sinks = Sinks::default();
    let context = super::BuildContext { data_dir: data_dir.to_owned() };
    for spec in specs {
        let sink = spec.build(&context).map_err(|error| format!("sink {:?}: {error}", spec.settings.name))?;
        let stats = Arc::new(SinkStats::new(&spec.settings.name, sink.kind()));
        sinks.stats.push(stats.clone());
        let (store, data_dir, spec, shutdown) =
            (store.clone(), data_dir.to_owned(), spec.clone(), shutdown.clone());
        supervisor.restarting(format!("sink {}", spec.settings.name), shutdown.clone(), move || {
            run_sink(
                store.clone(),
                data_dir.clone(),
                spec.clone(),
                sink.clone(),
                stats.clone(),
                shutdown.clone(),
            )
        });
    }
    Ok(sinks)
}
