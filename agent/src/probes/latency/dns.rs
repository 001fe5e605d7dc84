//! `dns`: one UDP query per probe to `server`, for `target`'s A or AAAA records, with
//! recursion desired. hickory-proto builds and parses the messages; the socket is ours
//! (a resolver library would cache, retry and fall back, all of which hide the latency
//! we want to see). Each probe has its own socket (its own source port) and id; a
//! datagram that is not the response to that id is ignored. Any response is an answer,
//! whatever its code: NXDOMAIN or SERVFAIL are reported in the message, with
//! `answers` = 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{DnsRecord, Reply, Schedule, Series, no_answer, run_series};

/// Room for a plain (non-EDNS) UDP response, with margin for servers that send more.
const RESPONSE_BUFFER: usize = 4096;

/// What a `dns` check asks, and whom.
#[derive(Debug)]
pub(crate) struct DnsQuery {
    name: Name,
    record: RecordType,
    server: SocketAddr,
}

pub(super) fn parse_query(target: &str, server: &str, record: Option<DnsRecord>) -> Result<DnsQuery, String> {
    let text = target.trim();
    let mut name =
        Name::from_utf8(text).map_err(|error| format!("target: {target:?} is not a DNS name: {error}"))?;
    if name.is_root() || text.is_empty() {
        return Err(format!("target: {target:?}: name the host to resolve"));
    }
    // Absolute: no search domains are appended (we are not the system resolver).
    name.set_fqdn(true);
    let server = parse_server(server)?;
    let record = match record.unwrap_or(DnsRecord::A) {
        DnsRecord::A => RecordType::A,
        DnsRecord::AAAA => RecordType::AAAA,
    };
    Ok(DnsQuery { name, record, server })
}

/// `ip`, `ip:port`, `[v6]:port` or a bare IPv6 address; the port defaults to 53.
fn parse_server(server: &str) -> Result<SocketAddr, String> {
    let text = server.trim();
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "server: {server:?} is not an IP address or ip:port (a name cannot be used: resolving it would need DNS)"
    ))
}

/// What one response said.
struct Answer {
    answers: usize,
    code: ResponseCode,
}

pub(super) async fn measure(query: Arc<DnsQuery>, schedule: Schedule) -> Series {
    let timeout = schedule.timeout;
    let outcomes = run_series(schedule, |_seq, deadline| {
        let query = query.clone();
        async move {
            match tokio::time::timeout_at(deadline, query_once(&query)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(no_answer(timeout)),
            }
        }
    })
    .await;
    let (mut series, answers) = Series::new(outcomes);
    if let Some(last) = answers.last() {
        series.extra.insert("answers".into(), last.answers as f64);
        if last.code != ResponseCode::NoError {
            series.note = Some(format!("the server answered {:?} ({})", last.code, last.code));
        }
    }
    series
}

async fn query_once(query: &DnsQuery) -> Result<Reply<Answer>, String> {
    let local: SocketAddr = match query.server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(|error| format!("udp socket: {error}"))?;
    // Connected: the kernel drops datagrams from anyone else, and reports an ICMP port
    // unreachable as "connection refused".
    socket.connect(query.server).await.map_err(|error| format!("udp socket: {error}"))?;
    let id = fastrand::u16(..);
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(query.name.clone(), query.record));
    let bytes = message.to_vec().map_err(|error| format!("dns: cannot encode the query: {error}"))?;
    let started = Instant::now();
    socket.send(&bytes).await.map_err(|error| format!("send: {error}"))?;
    let mut buffer = vec![0u8; RESPONSE_BUFFER];
    loop {
        let length = socket.recv(&mut buffer).await.map_err(|error| format!("receive: {error}"))?;
        let rtt = started.elapsed();
        let Ok(response) = Message::from_vec(&buffer[..length]) else { continue };
        if response.metadata.id != id || response.metadata.message_type != MessageType::Response {
            continue;
        }
        let answers = response.answers.iter().filter(|record| record.record_type() == query.record).count();
        return Ok(Reply { rtt, extra: Answer { answers, code: response.metadata.response_code } });
    }
}
