//! One agent session: Hello → Ack → Policy → (Report → evaluate → commit → Ack)* until
//! the agent goes, the session is superseded, or the collector shuts down. The agent's
//! effective central policy is sent again whenever a policy reload changes it.
//!
//! Limits: right after the Hello Ack the session tells the agent its `[limits]`
//! (`Limits`), and the agent builds reports within them. A report it still cannot take
//! must not loop, and must be seen:
//! - more results than `max_results_per_report`: acked and counted, not evaluated (not
//!   acking it would make the agent resend it forever);
//! - a message over `max_message_bytes`: the codec refuses it before decoding (that is
//!   the memory bound), so its seq is unknown and it cannot be acked. The stream ends
//!   with RESOURCE_EXHAUSTED naming the size and the limit (a message that is not
//!   protobuf: INVALID_ARGUMENT); the agent hears the limits again on its next session
//!   and refits what it has spooled (an agent older than `Limits` resends it, which the
//!   alert below makes visible).
//!
//! Both fire `reports_refused` for the agent (`refused.rs`); the next evaluated report
//! resolves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nightowl_proto::{AgentMessage, CheckResult, CollectorMessage, Hello, Limits, Report, agent_message};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Status, Streaming};

use super::Shared;
use super::refused::{self, Refusal};
use crate::evaluate::AgentEvaluator;
use crate::identity::AgentIdentity;
use crate::offline::Presence;
use crate::policy::Effective;
use crate::queue::{CommitReport, Committed, HelloRecord};
use crate::status::StreamError;

/// How long a fresh session may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds on what one result may carry (larger ones are dropped and counted).
const MAX_ID_BYTES: usize = 256;
const MAX_KIND_BYTES: usize = 32;
const MAX_METRICS: usize = 256;
const MAX_MESSAGE_BYTES: usize = 4096;
/// Sample times further in the future than this are not believed.
const MAX_CLOCK_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_secs(300);
/// Nor older than this (a spool replay after a week-long outage is still plausible).
const MAX_SAMPLE_AGE: jiff::SignedDuration = jiff::SignedDuration::from_secs(30 * 24 * 3600);

/// The agent's identity, from its TLS client certificate and nothing else.
pub(super) fn identify<T>(request: &Request<T>) -> Result<AgentIdentity, String> {
    let certs = request.peer_certs().ok_or("no client certificate")?;
    let leaf = certs.first().ok_or("empty client certificate chain")?;
    AgentIdentity::from_certificate(leaf.as_ref()).map_err(|error| error.to_string())
}

type Outbound = mpsc::Sender<Result<CollectorMessage, Status>>;

pub(super) async fn run(
    shared: Arc<Shared>,
    identity: AgentIdentity,
    peer: Option<SocketAddr>,
    inbound: Streaming<AgentMessage>,
    outbound: Outbound,
) {
    shared.counters.sessions_started.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", tenant = %identity.tenant, agent = %identity.agent);
    let outcome =
        tracing::Instrument::instrument(session(&shared, &identity, peer, inbound, &outbound), span).await;
    shared.counters.sessions_ended.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Ok(reason) => {
            tracing::info!(tenant = %identity.tenant, agent = %identity.agent, reason, "session ended")
        }
        Err(status) => {
            tracing::warn!(tenant = %identity.tenant, agent = %identity.agent, code = ?status.code(), message = status.message(), "session closed with error");
            // The agent may already be gone; nothing to do about a failed send then.
            let _ = outbound.send(Err(status)).await;
        }
    }
}

async fn session(
    shared: &Shared,
    identity: &AgentIdentity,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<AgentMessage>,
    outbound: &Outbound,
) -> Result<&'static str, Status> {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Err(_) => return Err(StreamError::NoOpening { expected: "hello", within: HELLO_TIMEOUT }.into()),
        Ok(Err(status)) => return Err(undecodable(shared, &status).unwrap_or(status)),
        Ok(Ok(None)) => return Ok("agent closed before hello"),
        Ok(Ok(Some(AgentMessage { msg: Some(agent_message::Msg::Hello(hello)) }))) => hello,
        Ok(Ok(Some(_))) => return Err(StreamError::WrongOpening { expected: "hello" }.into()),
    };
    check_claims(identity, &hello).inspect_err(|_| {
        shared.counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
    })?;

    // Take over from any earlier session of this agent, and wait until it is done.
    let (lock, token, presence) = shared.registry.claim(identity, &shared.shutdown);
    let _guard = tokio::select! {
        guard = lock.lock_owned() => guard,
        () = token.cancelled() => return Ok("superseded before start"),
    };

    let labels = bounded_labels(&hello.labels);
    let snapshot = shared
        .store
        .hello(HelloRecord {
            identity: identity.clone(),
            labels: labels.clone(),
            address: peer.map(|peer| peer.ip()),
            stream_id: hello.stream_id.clone(),
            hostname: truncate(&hello.hostname, 255),
            os: truncate(&hello.os, 255),
            agent_version: truncate(&hello.agent_version, 64),
            boot_id: truncate(&hello.boot_id, 64),
            at: jiff::Timestamp::now(),
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot record hello");
            Status::from(StreamError::Storage)
        })?;
    tracing::info!(
        ?peer,
        hostname = %hello.hostname,
        version = %hello.agent_version,
        last_seq = snapshot.last_seq,
        new_stream = snapshot.new_stream,
        "agent connected"
    );
    presence.connected(peer.map(|peer| peer.ip()), labels.clone(), jiff::Timestamp::now());
    let outcome =
        serve(shared, identity, &hello, labels, snapshot, &presence, inbound, outbound, &token).await;
    // A superseded session leaves the presence to its successor.
    if !token.is_cancelled() || shared.shutdown.is_cancelled() {
        presence.disconnected();
    }
    outcome
}

/// The session after Hello: reports, heartbeats and the staleness timer.
#[allow(clippy::too_many_arguments)]
async fn serve(
    shared: &Shared,
    identity: &AgentIdentity,
    hello: &Hello,
    labels: std::collections::BTreeMap<String, String>,
    snapshot: crate::queue::AgentSnapshot,
    presence: &Presence,
    mut inbound: Streaming<AgentMessage>,
    outbound: &Outbound,
    token: &tokio_util::sync::CancellationToken,
) -> Result<&'static str, Status> {
    let mut last_seq = snapshot.last_seq;
    let mut rules = shared.rules.clone();
    let mut evaluator = AgentEvaluator::new(
        identity.clone(),
        labels.clone(),
        rules.borrow_and_update().clone(),
        snapshot.states,
    );
    send(outbound, CollectorMessage::ack(last_seq)).await?;
    // Before anything else: the agent sends no report until it has read this.
    send(outbound, CollectorMessage::limits(limits_message(shared))).await?;
    // Always, also when empty: an agent that ran policy checks before must drop them.
    let mut policies = shared.policies.clone();
    let effective = policies.borrow_and_update().effective(&identity.tenant, &labels);
    let mut sent_policy = send_policy(shared, outbound, effective, None).await?;
    let mut policies_open = true;

    let mut clock = tokio::time::interval(TICK);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            _ = clock.tick() => {
                tick(shared, identity, &hello.stream_id, &mut evaluator).await?;
                continue;
            }
            changed = policies.changed(), if policies_open => {
                if changed.is_err() {
                    // The policy file is not watched (or the collector is stopping).
                    policies_open = false;
                    continue;
                }
                let effective = policies.borrow_and_update().effective(&identity.tenant, &labels);
                sent_policy = send_policy(shared, outbound, effective, Some(sent_policy)).await?;
                continue;
            }
            () = token.cancelled() => {
                return Err(if shared.shutdown.is_cancelled() {
                    StreamError::ShuttingDown
                } else {
                    StreamError::Superseded("superseded by a newer session of this agent")
                }
                .into());
            }
            message = tokio::time::timeout(shared.limits.idle_timeout, inbound.message()) => message,
        };
        let message = match message {
            Err(_) => return Err(StreamError::Idle.into()),
            Ok(Err(status)) => {
                if let Some(refusal) = undecodable(shared, &status) {
                    if status.code() == tonic::Code::OutOfRange {
                        let bytes = refused::refused_bytes(status.message());
                        let refusal_alert = Refusal::oversized(bytes, shared.limits.max_message_bytes);
                        refuse(shared, identity, &hello.stream_id, &labels, &mut evaluator, &refusal_alert)
                            .await?;
                    }
                    return Err(refusal);
                }
                tracing::debug!(code = ?status.code(), message = status.message(), "inbound stream error");
                return Ok("stream error");
            }
            Ok(Ok(None)) => return Ok("agent closed the stream"),
            Ok(Ok(Some(message))) => message,
        };
        presence.heard(jiff::Timestamp::now());
        match message.msg {
            Some(agent_message::Msg::Report(report)) => {
                if rules.has_changed().unwrap_or(false) {
                    evaluator.set_rules(rules.borrow_and_update().clone());
                }
                last_seq = handle_report(
                    shared,
                    identity,
                    &hello.stream_id,
                    &labels,
                    &mut evaluator,
                    last_seq,
                    report,
                )
                .await?;
                send(outbound, CollectorMessage::ack(last_seq)).await?;
            }
            Some(agent_message::Msg::Heartbeat(_)) => {}
            Some(agent_message::Msg::Hello(_)) => {
                return Err(StreamError::protocol("hello sent twice").into());
            }
            None => return Err(StreamError::protocol("empty message").into()),
        }
    }
}

/// The `Limits` message: what this collector takes in one message.
fn limits_message(shared: &Shared) -> Limits {
    let clamp = |value: usize| u32::try_from(value).unwrap_or(u32::MAX);
    Limits {
        max_message_bytes: clamp(shared.limits.max_message_bytes),
        max_results_per_report: clamp(shared.limits.max_results_per_report),
    }
}

/// A message the codec could not take: larger than `limits.max_message_bytes`
/// (OutOfRange) or not protobuf (Internal, from prost's decode error). Counted and
/// logged; returns the status that ends the stream (the stream is unusable after a bad
/// frame), saying why: RESOURCE_EXHAUSTED with the size and the limit, or
/// INVALID_ARGUMENT. None: `status` was not one (the agent went away, a transport error).
fn undecodable(shared: &Shared, status: &Status) -> Option<Status> {
    let refusal = refusal_status(status, shared.limits.max_message_bytes)?;
    shared.counters.messages_undecodable.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(code = ?status.code(), message = %truncate(status.message(), 200), "message refused: oversized or malformed; session ended");
    Some(refusal)
}

/// The status that ends a stream whose next message the codec refused (`status`), or
/// None if `status` is not such a refusal.
fn refusal_status(status: &Status, limit: usize) -> Option<Status> {
    Some(match status.code() {
        tonic::Code::OutOfRange => {
            let size = match refused::refused_bytes(status.message()) {
                Some(bytes) => format!("{bytes} bytes > {limit}"),
                None => format!("> {limit} bytes"),
            };
            StreamError::Oversized { size }.into()
        }
        tonic::Code::Internal => StreamError::Undecodable(truncate(status.message(), 200)).into(),
        _ => return None,
    })
}

/// Fires `reports_refused` for a report that was not even decoded (nothing to ack, no
/// seq): its own commit, like a timer transition.
async fn refuse(
    shared: &Shared,
    identity: &AgentIdentity,
    stream_id: &str,
    labels: &std::collections::BTreeMap<String, String>,
    evaluator: &mut AgentEvaluator,
    refusal: &Refusal,
) -> Result<(), Status> {
    shared.counters.reports_refused.fetch_add(1, Ordering::Relaxed);
    let now = jiff::Timestamp::now();
    let Some((event, update)) = refused::transition(evaluator, identity, labels, Some(refusal), now) else {
        return Ok(());
    };
    let updates = vec![update];
    let staged = evaluator.stage(&updates);
    shared
        .store
        .commit(CommitReport {
            identity: identity.clone(),
            stream_id: Some(stream_id.to_owned()),
            seq: None,
            events: vec![event.clone()],
            updates,
            at: now,
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "reports_refused not committed");
            Status::from(StreamError::Storage)
        })?;
    log_events(shared, std::slice::from_ref(&event));
    evaluator.apply_staged(staged);
    Ok(())
}

/// Sends `effective` unless the agent already has it (`sent`); returns what the agent has.
async fn send_policy(
    shared: &Shared,
    outbound: &Outbound,
    effective: Effective,
    sent: Option<Effective>,
) -> Result<Effective, Status> {
    if sent.as_ref() == Some(&effective) {
        return Ok(effective);
    }
    let message = effective.message();
    if message.encoded_len() + 64 > shared.limits.max_message_bytes {
        tracing::error!(
            bytes = message.encoded_len(),
            max_message_bytes = shared.limits.max_message_bytes,
            policies = ?effective.policies,
            "policy not sent: larger than limits.max_message_bytes; the agent keeps its current policy"
        );
        return Ok(sent.unwrap_or_default());
    }
    send(outbound, CollectorMessage::policy(message)).await?;
    shared.counters.policies_sent.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        version = %format!("{:016x}", effective.version),
        policies = ?effective.policies,
        checks = effective.checks,
        "policy sent"
    );
    Ok(effective)
}

/// Claims in Hello are optional; one that names another tenant or agent than the
/// certificate is refused and logged (it is either a misconfiguration or an attack).
fn check_claims(identity: &AgentIdentity, hello: &Hello) -> Result<(), Status> {
    let tenant_ok = hello.tenant.is_empty() || hello.tenant == identity.tenant;
    let agent_ok = hello.agent.is_empty() || hello.agent == identity.agent;
    if tenant_ok && agent_ok {
        return Ok(());
    }
    tracing::warn!(
        claimed_tenant = %truncate(&hello.tenant, 64),
        claimed_agent = %truncate(&hello.agent, 64),
        "hello claims an identity other than the certificate's; refused"
    );
    Err(StreamError::PermissionDenied(format!(
        "identity is taken from the client certificate ({identity}); the hello claims another"
    ))
    .into())
}

/// How often a session checks its agent's checks for staleness.
const TICK: Duration = Duration::from_secs(5);

/// Clock-driven evaluation (staleness); commits what it causes, acks nothing.
async fn tick(
    shared: &Shared,
    identity: &AgentIdentity,
    stream_id: &str,
    evaluator: &mut AgentEvaluator,
) -> Result<(), Status> {
    let now = jiff::Timestamp::now();
    let evaluation = evaluator.tick(now);
    if evaluation.events.is_empty() && evaluation.updates.is_empty() {
        return Ok(());
    }
    // The store takes the updates; the evaluator keeps a compact copy until they are durable.
    let staged = evaluator.stage(&evaluation.updates);
    shared
        .store
        .commit(CommitReport {
            identity: identity.clone(),
            stream_id: Some(stream_id.to_owned()),
            seq: None,
            events: evaluation.events.clone(),
            updates: evaluation.updates,
            at: now,
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "timer transitions not committed");
            Status::from(StreamError::Storage)
        })?;
    log_events(shared, &evaluation.events);
    evaluator.apply_staged(staged);
    Ok(())
}

fn log_events(shared: &Shared, events: &[crate::alert::AlertEvent]) {
    shared.counters.events_emitted.fetch_add(events.len() as u64, Ordering::Relaxed);
    for event in events {
        tracing::info!(
            check = %event.check,
            rule = %event.rule,
            status = ?event.status,
            severity = event.severity.as_str(),
            summary = %event.summary,
            "alert event queued"
        );
    }
}

/// Processes one report; returns the seq to ack.
async fn handle_report(
    shared: &Shared,
    identity: &AgentIdentity,
    stream_id: &str,
    labels: &std::collections::BTreeMap<String, String>,
    evaluator: &mut AgentEvaluator,
    last_seq: u64,
    report: Report,
) -> Result<u64, Status> {
    let counters = &shared.counters;
    if report.seq == 0 {
        return Err(StreamError::protocol("report seq must start at 1").into());
    }
    if report.seq <= last_seq {
        // A replay after reconnect: already durable, just ack again.
        counters.reports_duplicate.fetch_add(1, Ordering::Relaxed);
        return Ok(last_seq);
    }
    let now = jiff::Timestamp::now();
    let seq = report.seq;
    let sampled_at_ms = report.sampled_at_ms;
    let (results_sent, retired_sent) = (report.results.len(), report.retired_checks.len());
    let ValidatedReport { results, retired, rejected, invalid_results, invalid_retired } =
        validate_report(report, shared.limits.max_results_per_report);
    let refusal = rejected.then(|| {
        Refusal::too_many_results(results_sent + retired_sent, shared.limits.max_results_per_report)
    });
    if rejected {
        // Acked but not evaluated: refusing to ack would make the agent resend it forever.
        counters.reports_rejected.fetch_add(1, Ordering::Relaxed);
        counters.reports_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            seq,
            results = results_sent,
            retired = retired_sent,
            "report rejected: too many results"
        );
    }
    if invalid_results > 0 {
        counters.results_invalid.fetch_add(invalid_results, Ordering::Relaxed);
        tracing::warn!(
            seq,
            invalid = invalid_results,
            "results dropped: ids, metrics or message out of bounds"
        );
    }
    if invalid_retired > 0 {
        counters.results_invalid.fetch_add(invalid_retired, Ordering::Relaxed);
        tracing::warn!(seq, invalid = invalid_retired, "retired check ids dropped: out of bounds");
    }
    let at = sample_time(sampled_at_ms, now);
    let mut evaluation = evaluator.evaluate(&results, at, now);
    if !retired.is_empty() {
        let retirement = evaluator.retire(&retired, at, now);
        tracing::info!(seq = seq, checks = ?retired, resolved = retirement.events.len(), "checks retired by the agent");
        counters.checks_retired.fetch_add(retired.len() as u64, Ordering::Relaxed);
        evaluation.events.extend(retirement.events);
        evaluation.updates.extend(retirement.updates);
    }
    if evaluation.invalid_values > 0 {
        counters.results_invalid.fetch_add(evaluation.invalid_values, Ordering::Relaxed);
    }
    // Refused: fire `reports_refused`; evaluated: resolve it. In this report's transaction.
    if let Some((event, update)) = refused::transition(evaluator, identity, labels, refusal.as_ref(), now) {
        evaluation.events.push(event);
        evaluation.updates.push(update);
    }
    // While the commit is in flight (under load: seconds, for thousands of sessions at
    // once) hold neither the decoded results nor a second copy of the updates: the store
    // takes the updates, the evaluator keeps a compact copy to apply once they are durable.
    drop(results);
    let staged = evaluator.stage(&evaluation.updates);
    let committed = shared
        .store
        .commit(CommitReport {
            identity: identity.clone(),
            stream_id: Some(stream_id.to_owned()),
            seq: Some(seq),
            events: evaluation.events.clone(),
            updates: evaluation.updates,
            at: now,
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, seq = seq, "report not committed; not acked");
            Status::from(StreamError::Storage)
        })?;
    match committed {
        Committed::Applied { gap } => {
            if gap > 0 {
                counters.seq_gaps.fetch_add(gap, Ordering::Relaxed);
                tracing::warn!(
                    seq = seq,
                    missing = gap,
                    "reports missing before this one (agent spool overflowed, or refitted to the limits?)"
                );
            }
            counters.reports_applied.fetch_add(1, Ordering::Relaxed);
            log_events(shared, &evaluation.events);
            evaluator.apply_staged(staged);
            Ok(seq)
        }
        Committed::Duplicate { last_seq } => {
            counters.reports_duplicate.fetch_add(1, Ordering::Relaxed);
            Ok(last_seq)
        }
    }
}

/// The agent's labels, within bounds (at most 32, keys and values of 1-64 bytes);
/// anything else is dropped with a log line.
fn bounded_labels(
    labels: &std::collections::HashMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let fits = |text: &str| !text.is_empty() && text.len() <= 64 && !text.contains('\0');
    let kept: std::collections::BTreeMap<String, String> = labels
        .iter()
        .filter(|(key, value)| fits(key) && fits(value))
        .take(32)
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if kept.len() != labels.len() {
        tracing::warn!(sent = labels.len(), kept = kept.len(), "agent labels out of bounds dropped");
    }
    kept
}

/// A report after the session's bounds checks: what evaluation may see.
#[derive(Debug, Default)]
pub struct ValidatedReport {
    /// Results within bounds (ids, kind, metric count and names, message size).
    pub results: Vec<CheckResult>,
    /// Retired check ids within bounds and not also reported in `results`.
    pub retired: Vec<String>,
    /// Too many results + retired ids: nothing is evaluated (the report is still acked,
    /// or the agent would resend it forever).
    pub rejected: bool,
    /// Results dropped as out of bounds.
    pub invalid_results: u64,
    /// Retired ids dropped as out of bounds.
    pub invalid_retired: u64,
}

/// The session's validation of one report, pure (no counters, no logging): the caller
/// counts and logs what was dropped. Public for the fuzz targets (`tests/fuzz`), which
/// run decode → validate → evaluate exactly as a session does.
pub fn validate_report(report: Report, max_results_per_report: usize) -> ValidatedReport {
    if report.results.len() + report.retired_checks.len() > max_results_per_report {
        return ValidatedReport { rejected: true, ..ValidatedReport::default() };
    }
    let (results, invalid): (Vec<CheckResult>, Vec<CheckResult>) =
        report.results.into_iter().partition(result_is_valid);
    // A check both reported and retired in one report is running: keep it.
    let (retired, invalid_retired): (Vec<String>, Vec<String>) = report
        .retired_checks
        .into_iter()
        .filter(|id| !results.iter().any(|result| result.check_id == *id))
        .partition(|id| !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.contains('\0'));
    ValidatedReport {
        results,
        retired,
        rejected: false,
        invalid_results: invalid.len() as u64,
        invalid_retired: invalid_retired.len() as u64,
    }
}

fn result_is_valid(result: &CheckResult) -> bool {
    let bounded = |text: &str, max: usize| !text.is_empty() && text.len() <= max && !text.contains('\0');
    bounded(&result.check_id, MAX_ID_BYTES)
        && bounded(&result.kind, MAX_KIND_BYTES)
        && result.metrics.len() <= MAX_METRICS
        && result.metrics.keys().all(|name| bounded(name, MAX_ID_BYTES))
        && result.message.len() <= MAX_MESSAGE_BYTES
}

/// The agent's sample time if plausible, else the receive time.
pub fn sample_time(sampled_at_ms: i64, now: jiff::Timestamp) -> jiff::Timestamp {
    match jiff::Timestamp::from_millisecond(sampled_at_ms) {
        Ok(at) if at <= now + MAX_CLOCK_AHEAD && at >= now - MAX_SAMPLE_AGE => at.min(now),
        _ => now,
    }
}

/// At most `max` bytes of `text`, cut on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    text[..text.floor_char_boundary(max)].to_owned()
}

async fn send(outbound: &Outbound, message: CollectorMessage) -> Result<(), Status> {
    outbound.send(Ok(message)).await.map_err(|_| StreamError::PeerGone("agent").into())
}

#[cfg(test)]
mod tests;
