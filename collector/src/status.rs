//! Why the collector ends an agent session or a feed subscription: ONE mapping from
//! each reason to its gRPC status code, for `ingest` and `feed` alike.
//!
//! The code is what a client acts on (DESIGN "wire protocol"): UNAVAILABLE and ABORTED
//! mean "reconnect, nothing is lost"; DEADLINE_EXCEEDED and INVALID_ARGUMENT mean the
//! client broke the protocol (a bug or a foreign client); PERMISSION_DENIED and
//! UNAUTHENTICATED mean its certificate or its claims are wrong, which no retry fixes;
//! RESOURCE_EXHAUSTED means a message was over the collector's limits. The message says
//! why in words an operator reading the client's log understands.

use std::borrow::Cow;
use std::time::Duration;

use tonic::{Code, Status};

/// Why a stream ends with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream's opening message (`hello`, `subscribe`) did not come in time.
    #[error("no {expected} within {}s", within.as_secs())]
    NoOpening { expected: &'static str, within: Duration },

    /// The first message was not the opening one.
    #[error("the first message must be {expected}")]
    WrongOpening { expected: &'static str },

    /// A message the protocol does not allow here ("hello sent twice", a seq of 0, …).
    #[error("{0}")]
    Protocol(Cow<'static, str>),

    /// A message the codec could not decode.
    #[error("undecodable message: {0}")]
    Undecodable(String),

    /// A message over `limits.max_message_bytes`; `size` says by how much, as known.
    #[error(
        "message over the collector's limits.max_message_bytes ({size}); \
         build reports within the Limits sent after the hello ack"
    )]
    Oversized { size: String },

    /// Nothing came within the idle timeout.
    #[error("idle timeout: no report or heartbeat")]
    Idle,

    /// The client certificate names no usable identity.
    #[error("{0}")]
    Unauthenticated(String),

    /// The identity is known but not allowed this (claims, no operator certificate).
    #[error("{0}")]
    PermissionDenied(String),

    /// The store could not record what the stream needs; nothing was acked.
    #[error("collector storage unavailable; retry")]
    Storage,

    /// The collector is stopping.
    #[error("collector shutting down; reconnect")]
    ShuttingDown,

    /// A newer stream of the same agent or consumer took over.
    #[error("{0}")]
    Superseded(&'static str),

    /// The other side stopped reading ("agent", "subscriber").
    #[error("{0} went away")]
    PeerGone(&'static str),
}

impl StreamError {
    /// The status code clients act on (module doc).
    pub fn code(&self) -> Code {
        match self {
            StreamError::NoOpening { .. } | StreamError::Idle => Code::DeadlineExceeded,
            StreamError::WrongOpening { .. } | StreamError::Protocol(_) | StreamError::Undecodable(_) => {
                Code::InvalidArgument
            }
            StreamError::Oversized { .. } => Code::ResourceExhausted,
            StreamError::Unauthenticated(_) => Code::Unauthenticated,
            StreamError::PermissionDenied(_) => Code::PermissionDenied,
            StreamError::Storage | StreamError::ShuttingDown => Code::Unavailable,
            StreamError::Superseded(_) => Code::Aborted,
            StreamError::PeerGone(_) => Code::Cancelled,
        }
    }

    /// A protocol violation described by `message`.
    pub fn protocol(message: impl Into<Cow<'static, str>>) -> Self {
        StreamError::Protocol(message.into())
    }
}

impl From<StreamError> for Status {
    fn from(error: StreamError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests;
