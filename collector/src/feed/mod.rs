//! The alert feed: `nightowl.v1.Feed/Subscribe`, for PSA connectors, paging bridges and
//! `alerts tail --collector`.
//!
//! The contract is in `proto/nightowl/v1/feed.proto`. In short: named consumers with a
//! durable cursor in the store (`feed:<scope>/<name>`, scope `all` or the operator's
//! tenant), explicit acks, redelivery after `ack_timeout` and after reconnect, one live
//! subscription per consumer (a new one takes over), a tenant-scoped operator sees only
//! its tenant's events, and a consumer behind retention gets a `FeedGap`.
//!
//! Identity comes only from the client certificate (an operator certificate, see
//! `identity::OperatorIdentity`); agent certificates are refused.
//!
//! The cursor is "everything at or below it was acked". Acks may come out of order:
//! the cursor moves to just below the oldest unacked event sent. Acks above it that are
//! not yet contiguous live in memory only; after a collector restart those events come
//! again (at-least-once; consumers dedupe on the id).
//!
//! Acks are read whenever the subscription waits, also while it waits for room to send:
//! a subscriber may block on sending an ack until we read (HTTP/2 flow control runs
//! both ways), so waiting only for the subscriber to read would deadlock both.

pub mod client;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nightowl_proto::v1::feed_server::Feed;
use nightowl_proto::v1::{
    FeedEvent, FeedGap, FeedIdle, FeedMessage, FeedRequest, StartFrom, Subscribe, feed_message, feed_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::OperatorIdentity;
use crate::queue::{ConsumerUpdate, EventRow, Reader, StartAt, Store, StoreError};
use crate::status::StreamError;

const DEFAULT_IN_FLIGHT: u32 = 256;
const MAX_IN_FLIGHT: u32 = 4096;
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
const MIN_ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a subscriber may take to say Subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often redelivery deadlines are checked.
const REDELIVERY_TICK: Duration = Duration::from_millis(500);
/// At most this many positions in one ack message.
const MAX_ACK_POSITIONS: usize = 65_536;

/// The store's name for a feed consumer: scoped, so two tenants' "psa" never share a
/// cursor, and a tenant operator cannot move an all-tenants consumer.
pub fn consumer_key(operator: &OperatorIdentity, name: &str) -> String {
    match &operator.tenant {
        None => format!("feed:all/{name}"),
        Some(tenant) => format!("feed:{tenant}/{name}"),
    }
}

/// The `Feed` gRPC service.
pub struct FeedService {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// The live subscription per consumer key (generation, token), to take over from.
    live: Mutex<HashMap<String, (u64, CancellationToken)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl FeedService {
    pub fn new(store: Store, data_dir: PathBuf, shutdown: CancellationToken, tasks: TaskTracker) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                data_dir,
                shutdown,
                tasks,
                live: Mutex::new(HashMap::new()),
                generations: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }
}

#[tonic::async_trait]
impl Feed for FeedService {
    type SubscribeStream = ReceiverStream<Result<FeedMessage, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request.remote_addr();
        let operator = identify(&request).map_err(|reason| {
            tracing::warn!(?peer, %reason, "feed subscription refused: not an operator certificate");
            Status::from(StreamError::PermissionDenied(format!(
                "the feed needs an operator certificate: {reason}"
            )))
        })?;
        let mut inbound = request.into_inner();
        let subscribe = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(
                    StreamError::NoOpening { expected: "subscribe", within: SUBSCRIBE_TIMEOUT }.into()
                );
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(Some(FeedRequest { msg: Some(feed_request::Msg::Subscribe(subscribe)) }))) => subscribe,
            Ok(Ok(_)) => return Err(StreamError::WrongOpening { expected: "subscribe" }.into()),
        };
        crate::identity::validate_id("consumer", &subscribe.consumer)
            .map_err(|error| Status::from(StreamError::protocol(error.to_string())))?;
        let key = consumer_key(&operator, &subscribe.consumer);
        let token = self.shared.shutdown.child_token();
        let generation = self.shared.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut live = self.shared.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((_, previous)) = live.insert(key.clone(), (generation, token.clone())) {
                previous.cancel();
            }
        }
        let (outbound, receiver) = mpsc::channel(64);
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            tracing::info!(consumer = %key, %operator, ?peer, "feed subscriber connected");
            let outcome = serve(&shared, &operator, &key, subscribe, inbound, &outbound, &token).await;
            {
                let mut live = shared.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if live.get(&key).is_some_and(|(current, _)| *current == generation) {
                    live.remove(&key);
                }
            }
            match outcome {
                Ok(reason) => tracing::info!(consumer = %key, reason, "feed subscriber gone"),
                Err(status) => {
                    tracing::info!(consumer = %key, code = ?status.code(), message = status.message(), "feed subscription ended");
                    let _ = outbound.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

fn identify<T>(request: &Request<T>) -> Result<OperatorIdentity, String> {
    let certs = request.peer_certs().ok_or("no client certificate")?;
    let leaf = certs.first().ok_or("empty client certificate chain")?;
    OperatorIdentity::from_certificate(leaf.as_ref()).map_err(|error| error.to_string())
}

/// One event sent and not yet acked.
struct InFlight {
    id: String,
    json: String,
    delivery: u32,
    due: tokio::time::Instant,
}

/// How a subscription ends.
enum Ending {
    /// The subscriber went away (the reason is logged).
    Gone(&'static str),
    /// An error status for the subscriber.
    Failed(Status),
}

impl From<Status> for Ending {
    fn from(status: Status) -> Self {
        Ending::Failed(status)
    }
}

/// One subscription: its streams, where it is, and what is in flight.
///
/// The subscriber's acks are read whenever we wait for it, including while we wait to
/// send: a subscriber that acks each event as it reads it blocks on sending that ack
/// once the server stops reading (HTTP/2 flow control runs both ways), and if we only
/// waited for room to send, both sides would wait forever. Reading acks costs nothing
/// to buffer: they only remove positions from `in_flight`.
struct Delivery<'a> {
    shared: &'a Shared,
    key: &'a str,
    tenant: Option<String>,
    reader: Arc<Mutex<Reader>>,
    max_in_flight: usize,
    ack_timeout: Duration,
    inbound: Streaming<FeedRequest>,
    outbound: &'a mpsc::Sender<Result<FeedMessage, Status>>,
    token: &'a CancellationToken,
    /// The durable cursor as last written.
    cursor: i64,
    /// Every event up to here was read from the queue (sent, or another tenant's).
    read_through: i64,
    in_flight: BTreeMap<i64, InFlight>,
    /// Acks counted since the cursor was last written.
    acked_unflushed: u64,
}

async fn serve(
    shared: &Shared,
    operator: &OperatorIdentity,
    key: &str,
    subscribe: Subscribe,
    inbound: Streaming<FeedRequest>,
    outbound: &mpsc::Sender<Result<FeedMessage, Status>>,
    token: &CancellationToken,
) -> Result<&'static str, Status> {
    let start = match subscribe.start() {
        StartFrom::Latest => StartAt::Latest,
        StartFrom::Earliest => StartAt::Earliest,
    };
    let max_in_flight = match subscribe.max_in_flight {
        0 => DEFAULT_IN_FLIGHT,
        count => count.min(MAX_IN_FLIGHT),
    } as usize;
    let ack_timeout = match subscribe.ack_timeout_ms {
        0 => DEFAULT_ACK_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).max(MIN_ACK_TIMEOUT),
    };
    let cursor = shared.store.register_consumer(key, start).await.map_err(|error| unavailable(key, error))?;
    let reader =
        Arc::new(Mutex::new(Reader::open(&shared.data_dir).map_err(|error| unavailable(key, error))?));
    let mut delivery = Delivery {
        shared,
        key,
        tenant: operator.tenant.clone(),
        reader,
        max_in_flight,
        ack_timeout,
        inbound,
        outbound,
        token,
        cursor,
        read_through: cursor,
        in_flight: BTreeMap::new(),
        acked_unflushed: 0,
    };
    let Err(ending) = delivery.run().await;
    // What was acked is recorded; what is in flight will come again.
    let final_cursor = delivery.oldest_unacked_below();
    if final_cursor > delivery.cursor || delivery.acked_unflushed > 0 {
        let update = ConsumerUpdate {
            consumer: key.to_owned(),
            acked_pos: final_cursor,
            delivered: delivery.acked_unflushed,
            dead_letters: Vec::new(),
        };
        if let Err(error) = shared.store.advance_consumer(update).await {
            tracing::warn!(consumer = key, %error, "feed: last acks not recorded; those events come again");
        }
    }
    match ending {
        Ending::Gone(reason) => Ok(reason),
        Ending::Failed(status) => Err(status),
    }
}

fn unavailable(key: &str, error: StoreError) -> Status {
    tracing::error!(consumer = key, %error, "feed: store unavailable");
    StreamError::Storage.into()
}

impl Delivery<'_> {
    /// Delivers until the subscription ends; returns why.
    async fn run(&mut self) -> Result<std::convert::Infallible, Ending> {
        let key = self.key;
        let pruned = blocking(&self.reader, |reader| reader.pruned_through())
            .await
            .map_err(|error| unavailable(key, error))?;
        if pruned > self.cursor {
            tracing::warn!(
                consumer = key,
                from = self.cursor + 1,
                to = pruned,
                "feed consumer fell behind retention"
            );
            self.send(feed_message::Msg::Gap(FeedGap {
                from_pos: self.cursor + 1,
                to_pos: pruned,
                reason: "deleted by retention before this consumer read them".into(),
            }))
            .await?;
        }

        let mut head = self.shared.store.head();
        let mut idle_sent_at: Option<i64> = None;
        let mut ticker = tokio::time::interval(REDELIVERY_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Fill the window.
            let room = self.max_in_flight.saturating_sub(self.in_flight.len());
            if room > 0 && *head.borrow_and_update() > self.read_through {
                let after = self.read_through;
                let tenant_filter = self.tenant.clone();
                let (rows, scanned_through) = blocking(&self.reader, move |reader| {
                    let head = reader.head()?;
                    let rows = match &tenant_filter {
                        None => reader.events_after(after, room)?,
                        Some(tenant) => reader.tenant_events_after(tenant, after, room)?,
                    };
                    // Fewer rows than asked: everything up to the head was seen (the other
                    // tenants' events are skipped, not pending).
                    let through = if rows.len() < room {
                        head.max(rows.last().map_or(after, |row| row.pos))
                    } else {
                        rows.last().map_or(after, |row| row.pos)
                    };
                    Ok((rows, through))
                })
                .await
                .map_err(|error| unavailable(key, error))?;
                self.read_through = scanned_through.max(self.read_through);
                for EventRow { pos, body } in rows {
                    let entry = InFlight {
                        id: event_id(&body),
                        json: body,
                        delivery: 1,
                        due: tokio::time::Instant::now() + self.ack_timeout,
                    };
                    let message = event_message(pos, &entry);
                    // In flight before it is sent: should the subscription end during the
                    // send, the cursor stays below it.
                    self.in_flight.insert(pos, entry);
                    self.send(message).await?;
                }
            }
            // Everything queued so far was sent: say so once per head (a client that wants
            // only what is there, like `alerts tail` without --follow, stops on it).
            if self.in_flight.len() < self.max_in_flight && idle_sent_at != Some(self.read_through) {
                self.send(feed_message::Msg::Idle(FeedIdle { head: self.read_through })).await?;
                idle_sent_at = Some(self.read_through);
            }
            let new_cursor = self.oldest_unacked_below();
            if new_cursor > self.cursor || self.acked_unflushed > 0 {
                self.shared
                    .store
                    .advance_consumer(ConsumerUpdate {
                        consumer: key.to_owned(),
                        acked_pos: new_cursor,
                        delivered: self.acked_unflushed,
                        dead_letters: Vec::new(),
                    })
                    .await
                    .map_err(|error| unavailable(key, error))?;
                self.cursor = new_cursor.max(self.cursor);
                self.acked_unflushed = 0;
            }
            let window_full = self.in_flight.len() >= self.max_in_flight;
            tokio::select! {
                () = self.token.cancelled() => return Err(self.cancelled()),
                changed = head.changed(), if !window_full => {
                    if changed.is_err() {
                        return Err(Status::from(StreamError::ShuttingDown).into());
                    }
                }
                _ = ticker.tick() => self.redeliver_due().await?,
                request = self.inbound.message() => {
                    self.take(request)?;
                    self.take_arrived().await?;
                }
            }
        }
    }

    /// The cursor: just below the oldest unacked event, or all that was read.
    fn oldest_unacked_below(&self) -> i64 {
        self.in_flight.keys().next().map_or(self.read_through, |oldest| oldest - 1)
    }

    /// Sends again every event whose ack is overdue.
    async fn redeliver_due(&mut self) -> Result<(), Ending> {
        let now = tokio::time::Instant::now();
        let due: Vec<i64> =
            self.in_flight.iter().filter(|(_, entry)| entry.due <= now).map(|(pos, _)| *pos).collect();
        for pos in due {
            // Acks read while sending the previous ones may have taken it.
            let Some(entry) = self.in_flight.get_mut(&pos) else { continue };
            entry.delivery += 1;
            entry.due = now + self.ack_timeout;
            tracing::debug!(
                consumer = self.key,
                pos,
                delivery = entry.delivery,
                "feed: redelivering an unacked event"
            );
            let message = event_message(pos, entry);
            self.send(message).await?;
        }
        Ok(())
    }

    /// Sends one message, reading (and applying) the subscriber's acks while there is no
    /// room to send; a takeover or shutdown ends the wait.
    async fn send(&mut self, msg: feed_message::Msg) -> Result<(), Ending> {
        loop {
            tokio::select! {
                biased;
                () = self.token.cancelled() => return Err(self.cancelled()),
                permit = self.outbound.reserve() => {
                    let permit = permit.map_err(|_| Status::from(StreamError::PeerGone("subscriber")))?;
                    permit.send(Ok(FeedMessage { msg: Some(msg) }));
                    return Ok(());
                }
                request = self.inbound.message() => self.take(request)?,
            }
        }
    }

    /// Applies the acks that have already arrived, without waiting for more (one cursor
    /// write then covers all of them).
    async fn take_arrived(&mut self) -> Result<(), Ending> {
        loop {
            tokio::select! {
                biased;
                request = self.inbound.message() => self.take(request)?,
                () = std::future::ready(()) => return Ok(()),
            }
        }
    }

    /// Applies one message from the subscriber: an ack frees its positions (positions not
    /// in flight, acked twice or never sent, are ignored); anything else ends it.
    fn take(&mut self, request: Result<Option<FeedRequest>, Status>) -> Result<(), Ending> {
        match request {
            Ok(Some(FeedRequest { msg: Some(feed_request::Msg::Ack(ack)) })) => {
                if ack.positions.len() > MAX_ACK_POSITIONS {
                    return Err(Status::from(StreamError::protocol("too many positions in one ack")).into());
                }
                for pos in ack.positions {
                    if self.in_flight.remove(&pos).is_some() {
                        self.acked_unflushed += 1;
                    }
                }
                Ok(())
            }
            Ok(Some(_)) => Err(Status::from(StreamError::protocol("only acks may follow subscribe")).into()),
            Ok(None) => Err(Ending::Gone("subscriber closed the stream")),
            Err(status) => {
                tracing::debug!(consumer = self.key, code = ?status.code(), "feed inbound stream error");
                Err(Ending::Gone("stream error"))
            }
        }
    }

    /// Why the token was cancelled: the collector stops, or a new subscription took over.
    fn cancelled(&self) -> Ending {
        Ending::Failed(
            if self.shared.shutdown.is_cancelled() {
                StreamError::ShuttingDown
            } else {
                StreamError::Superseded("another subscription took over this consumer")
            }
            .into(),
        )
    }
}

/// The `id` field of a stored event (the store wrote it; it always parses).
fn event_id(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(json).map(|only| only.id).unwrap_or_default()
}

fn event_message(pos: i64, entry: &InFlight) -> feed_message::Msg {
    feed_message::Msg::Event(FeedEvent {
        pos,
        id: entry.id.clone(),
        json: entry.json.clone(),
        delivery: entry.delivery,
    })
}

/// Runs a read on the blocking pool with the subscription's own connection.
async fn blocking<T: Send + 'static>(
    reader: &Arc<Mutex<Reader>>,
    work: impl FnOnce(&Reader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || {
        let reader = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&reader)
    })
    .await
    .map_err(|_| StoreError::WriterGone)?
}

#[cfg(test)]
mod tests;
