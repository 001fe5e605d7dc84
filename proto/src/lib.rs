//! # nightowl-proto
//!
//! The wire protocol between agent and collector (`nightowl.v1`), generated at build time
//! from `proto/nightowl/v1/collector.proto`, and the alert feed that subscribers read
//! (`proto/nightowl/v1/feed.proto`). The proto file documents the delivery
//! contract (seq, Ack, replay); this crate only adds small helpers that both sides need.

#![forbid(unsafe_code)]

/// Generated messages and the `Collector` and `Feed` services (client and server).
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("nightowl.v1");
}

pub use v1::{
    AgentMessage, CheckResult, CollectorMessage, Heartbeat, Hello, Limits, Policy, ProbeStatus, Report,
    agent_message, collector_message,
};

impl AgentMessage {
    pub fn hello(hello: Hello) -> Self {
        Self { msg: Some(agent_message::Msg::Hello(hello)) }
    }
    pub fn report(report: Report) -> Self {
        Self { msg: Some(agent_message::Msg::Report(report)) }
    }
    pub fn heartbeat(sent_at_ms: i64) -> Self {
        Self { msg: Some(agent_message::Msg::Heartbeat(Heartbeat { sent_at_ms })) }
    }
}

impl CollectorMessage {
    pub fn ack(seq: u64) -> Self {
        Self { msg: Some(collector_message::Msg::Ack(v1::Ack { seq })) }
    }
    pub fn policy(policy: Policy) -> Self {
        Self { msg: Some(collector_message::Msg::Policy(policy)) }
    }
    pub fn limits(limits: Limits) -> Self {
        Self { msg: Some(collector_message::Msg::Limits(limits)) }
    }
}

impl ProbeStatus {
    /// Lowercase name used in logs and `nightowl-agent check` output.
    pub fn label(self) -> &'static str {
        match self {
            ProbeStatus::Unspecified => "unspecified",
            ProbeStatus::Ok => "ok",
            ProbeStatus::Warning => "warning",
            ProbeStatus::Critical => "critical",
            ProbeStatus::Unknown => "unknown",
        }
    }
}
