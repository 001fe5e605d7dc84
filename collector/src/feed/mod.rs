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
//! `pki::OperatorIdentity`); agent certificates are refused.
//!
//! The cursor is "everything at or below it was acked". Acks may come out of order:
//! the cursor moves to just below the oldest unacked event sent. Acks above it that are
//! not yet contiguous live in memory only; after a collector restart those events come
//! again (at-least-once; consumers dedupe on the id).

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

use crate::pki::OperatorIdentity;
use crate::queue::{ConsumerUpdate, EventRow, Reader, StartAt, Store, StoreError};

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
            Status::permission_denied(format!("the feed needs an operator certificate: {reason}"))
        })?;
        let mut inbound = request.into_inner();
        let subscribe = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no subscribe within 10s")),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(Some(FeedRequest { msg: Some(feed_request::Msg::Subscribe(subscribe)) }))) => subscribe,
            Ok(Ok(_)) => return Err(Status::invalid_argument("the first message must be subscribe")),
        };
        crate::pki::validate_id("consumer", &subscribe.consumer)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
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

async fn serve(
    shared: &Shared,
    operator: &OperatorIdentity,
    key: &str,
    subscribe: Subscribe,
    mut inbound: Streaming<FeedRequest>,
    outbound: &mpsc::Sender<Result<FeedMessage, Status>>,
    token: &CancellationToken,
) -> Result<&'static str, Status> {
    let unavailable = |error: StoreError| {
        tracing::error!(consumer = key, %error, "feed: store unavailable");
        Status::unavailable("collector storage unavailable; retry")
    };
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
    let mut cursor = shared.store.register_consumer(key, start).await.map_err(unavailable)?;
    let reader = Arc::new(Mutex::new(Reader::open(&shared.data_dir).map_err(unavailable)?));
    let tenant = operator.tenant.clone();

    let pruned = blocking(&reader, |reader| reader.pruned_through()).await.map_err(unavailable)?;
    if pruned > cursor {
        tracing::warn!(consumer = key, from = cursor + 1, to = pruned, "feed consumer fell behind retention");
        send(
            outbound,
            feed_message::Msg::Gap(FeedGap {
                from_pos: cursor + 1,
                to_pos: pruned,
                reason: "deleted by retention before this consumer read them".into(),
            }),
        )
        .await?;
    }

    let mut head = shared.store.head();
    let mut read_through = cursor;
    let mut in_flight: BTreeMap<i64, InFlight> = BTreeMap::new();
    let mut acked_unflushed: u64 = 0;
    let mut idle_sent_at: Option<i64> = None;
    let mut ticker = tokio::time::interval(REDELIVERY_TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        // Fill the window.
        let room = max_in_flight.saturating_sub(in_flight.len());
        if room > 0 && *head.borrow_and_update() > read_through {
            let after = read_through;
            let tenant_filter = tenant.clone();
            let (rows, scanned_through) = blocking(&reader, move |reader| {
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
            .map_err(unavailable)?;
            read_through = scanned_through.max(read_through);
            for EventRow { pos, body } in rows {
                let id = event_id(&body);
                let entry =
                    InFlight { id, json: body, delivery: 1, due: tokio::time::Instant::now() + ack_timeout };
                send_event(outbound, pos, &entry).await?;
                in_flight.insert(pos, entry);
            }
        }
        // Everything queued so far was sent: say so once per head (a client that wants
        // only what is there, like `alerts tail` without --follow, stops on it).
        if in_flight.len() < max_in_flight && idle_sent_at != Some(read_through) {
            send(outbound, feed_message::Msg::Idle(FeedIdle { head: read_through })).await?;
            idle_sent_at = Some(read_through);
        }
        // The cursor: just below the oldest unacked event, or all that was read.
        let new_cursor = in_flight.keys().next().map_or(read_through, |oldest| oldest - 1);
        if new_cursor > cursor || acked_unflushed > 0 {
            shared
                .store
                .advance_consumer(ConsumerUpdate {
                    consumer: key.to_owned(),
                    acked_pos: new_cursor,
                    delivered: acked_unflushed,
                    dead_letters: Vec::new(),
                })
                .await
                .map_err(unavailable)?;
            cursor = new_cursor.max(cursor);
            acked_unflushed = 0;
        }
        tokio::select! {
            () = token.cancelled() => {
                break if shared.shutdown.is_cancelled() {
                    Err(Status::unavailable("collector shutting down; reconnect"))
                } else {
                    Err(Status::aborted("another subscription took over this consumer"))
                };
            }
            changed = head.changed(), if in_flight.len() < max_in_flight => {
                if changed.is_err() {
                    break Err(Status::unavailable("collector shutting down; reconnect"));
                }
            }
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                let due: Vec<i64> = in_flight.iter().filter(|(_, entry)| entry.due <= now).map(|(pos, _)| *pos).collect();
                for pos in due {
                    if let Some(entry) = in_flight.get_mut(&pos) {
                        entry.delivery += 1;
                        entry.due = now + ack_timeout;
                        tracing::debug!(consumer = key, pos, delivery = entry.delivery, "feed: redelivering an unacked event");
                        send_event(outbound, pos, entry).await?;
                    }
                }
            }
            message = inbound.message() => match message {
                Ok(Some(FeedRequest { msg: Some(feed_request::Msg::Ack(ack)) })) => {
                    if ack.positions.len() > MAX_ACK_POSITIONS {
                        break Err(Status::invalid_argument("too many positions in one ack"));
                    }
                    for pos in ack.positions {
                        if in_flight.remove(&pos).is_some() {
                            acked_unflushed += 1;
                        }
                    }
                }
                Ok(Some(_)) => break Err(Status::invalid_argument("only acks may follow subscribe")),
                Ok(None) => break Ok("subscriber closed the stream"),
                Err(status) => {
                    tracing::debug!(consumer = key, code = ?status.code(), "feed inbound stream error");
                    break Ok("stream error");
                }
            },
        }
    };
    // What was acked is recorded; what is in flight will come again.
    let final_cursor = in_flight.keys().next().map_or(read_through, |oldest| oldest - 1);
    if final_cursor > cursor || acked_unflushed > 0 {
        let update = ConsumerUpdate {
            consumer: key.to_owned(),
            acked_pos: final_cursor,
            delivered: acked_unflushed,
            dead_letters: Vec::new(),
        };
        if let Err(error) = shared.store.advance_consumer(update).await {
            tracing::warn!(consumer = key, %error, "feed: last acks not recorded; those events come again");
        }
    }
    outcome
}

/// The `id` field of a stored event (the store wrote it; it always parses).
fn event_id(json: &str) -> String {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(json).map(|only| only.id).unwrap_or_default()
}

async fn send_event(
    outbound: &mpsc::Sender<Result<FeedMessage, Status>>,
    pos: i64,
    entry: &InFlight,
) -> Result<(), Status> {
    send(
        outbound,
        feed_message::Msg::Event(FeedEvent {
            pos,
            id: entry.id.clone(),
            json: entry.json.clone(),
            delivery: entry.delivery,
        }),
    )
    .await
}

async fn send(
    outbound: &mpsc::Sender<Result<FeedMessage, Status>>,
    msg: feed_message::Msg,
) -> Result<(), Status> {
    outbound
        .send(Ok(FeedMessage { msg: Some(msg) }))
        .await
        .map_err(|_| Status::cancelled("subscriber went away"))
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
