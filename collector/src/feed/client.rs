//! A feed subscriber: `nightowl-collector alerts tail --collector URL` and the tests.
//!
//! It connects with an operator certificate, subscribes under a consumer name, and
//! hands each event to the caller; the caller says when an event is handled (printed
//! and flushed, written to a ticket) and only then is it acked.

use std::path::PathBuf;
use std::time::Duration;

use nightowl_proto::v1::feed_client::FeedClient;
use nightowl_proto::v1::{
    FeedAck, FeedMessage, FeedRequest, StartFrom, Subscribe, feed_message, feed_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where and as whom to subscribe.
#[derive(Debug, Clone)]
pub struct FeedTarget {
    /// `https://collector:7443`
    pub url: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The TLS name to verify; default: the URL's host.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedClientError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("collector url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("feed refused or ended: {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("the feed ended")]
    Closed,
}

impl From<tonic::Status> for FeedClientError {
    fn from(status: tonic::Status) -> Self {
        FeedClientError::Status { code: status.code(), message: status.message().to_owned() }
    }
}

/// What the subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedItem {
    Event {
        pos: i64,
        id: String,
        json: String,
        delivery: u32,
    },
    /// Positions deleted by retention before this consumer read them.
    Gap {
        from_pos: i64,
        to_pos: i64,
        reason: String,
    },
    /// Everything queued up to `head` has been sent.
    Idle {
        head: i64,
    },
}

/// A live subscription.
pub struct Subscription {
    inbound: tonic::Streaming<FeedMessage>,
    acks: mpsc::Sender<FeedRequest>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Subscription options.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    pub consumer: String,
    /// For a new consumer: every event still queued (true) or only new ones.
    pub earliest: bool,
    pub max_in_flight: u32,
    pub ack_timeout: Duration,
}

impl SubscribeOptions {
    pub fn new(consumer: &str) -> Self {
        Self { consumer: consumer.to_owned(), earliest: false, max_in_flight: 0, ack_timeout: Duration::ZERO }
    }
}

async fn channel(target: &FeedTarget) -> Result<Channel, FeedClientError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| FeedClientError::Read { path: path.clone(), source })
    };
    let url_error = |reason: String| FeedClientError::Url { url: target.url.clone(), reason };
    let host = target
        .url
        .strip_prefix("https://")
        .ok_or_else(|| url_error("must start with https:// (the feed is mutual TLS)".into()))?
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&target.ca)?))
        .identity(Identity::from_pem(read(&target.cert)?, read(&target.key)?))
        .domain_name(target.server_name.clone().unwrap_or_else(|| host.to_owned()));
    let endpoint = Endpoint::from_shared(target.url.clone())
        .map_err(|error| url_error(error.to_string()))?
        .tls_config(tls)
        .map_err(|error| url_error(error.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect().await?)
}

impl Subscription {
    pub async fn open(
        target: &FeedTarget,
        options: &SubscribeOptions,
    ) -> Result<Subscription, FeedClientError> {
        let mut client = FeedClient::new(channel(target).await?).max_decoding_message_size(4 * 1024 * 1024);
        let (acks, receiver) = mpsc::channel(64);
        let subscribe = Subscribe {
            consumer: options.consumer.clone(),
            start: if options.earliest { StartFrom::Earliest } else { StartFrom::Latest } as i32,
            max_in_flight: options.max_in_flight,
            ack_timeout_ms: u32::try_from(options.ack_timeout.as_millis()).unwrap_or(u32::MAX),
        };
        acks.send(FeedRequest { msg: Some(feed_request::Msg::Subscribe(subscribe)) })
            .await
            .map_err(|_| FeedClientError::Closed)?;
        let inbound = client.subscribe(ReceiverStream::new(receiver)).await?.into_inner();
        Ok(Subscription { inbound, acks })
    }

    /// The next item; None when the collector ended the feed cleanly.
    pub async fn next(&mut self) -> Result<Option<FeedItem>, FeedClientError> {
        loop {
            let Some(message) = self.inbound.message().await? else { return Ok(None) };
            let item = match message.msg {
                Some(feed_message::Msg::Event(event)) => FeedItem::Event {
                    pos: event.pos,
                    id: event.id,
                    json: event.json,
                    delivery: event.delivery,
                },
                Some(feed_message::Msg::Gap(gap)) => {
                    FeedItem::Gap { from_pos: gap.from_pos, to_pos: gap.to_pos, reason: gap.reason }
                }
                Some(feed_message::Msg::Idle(idle)) => FeedItem::Idle { head: idle.head },
                None => continue,
            };
            return Ok(Some(item));
        }
    }

    /// Ends the subscription cleanly: no more acks, and waits (a little) until the
    /// collector has recorded the acks sent so far and closed its side.
    pub async fn close(self) {
        let Subscription { mut inbound, acks } = self;
        drop(acks);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
    }

    /// Acks handled positions.
    pub async fn ack(&self, positions: Vec<i64>) -> Result<(), FeedClientError> {
        if positions.is_empty() {
            return Ok(());
        }
        self.acks
            .send(FeedRequest { msg: Some(feed_request::Msg::Ack(FeedAck { positions })) })
            .await
            .map_err(|_| FeedClientError::Closed)
    }
}
