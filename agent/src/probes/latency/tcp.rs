//! `tcp`: time to establish a connection (SYN → SYN-ACK as the kernel sees it); the
//! connection is closed at once. A refused or timed-out connect is a lost probe.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Reply, Schedule, Series, is_host_name, no_answer, run_series};

/// Splits a tcp `target` into host and port: `host:port`, `ip:port` or `[v6]:port`.
pub(super) fn parse_target(target: &str) -> Result<(String, u16), String> {
    let target = target.trim();
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, port) =
            rest.split_once("]:").ok_or_else(|| format!("target: {target:?}: use \"[v6 address]:port\""))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("target: {target:?}: {host:?} is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| format!("target: {target:?} needs a port: use \"host:port\""))?;
        if host.contains(':') {
            return Err(format!("target: {target:?}: write an IPv6 address in brackets, \"[v6]:port\""));
        }
        if host.parse::<IpAddr>().is_err() && !is_host_name(host) {
            return Err(format!("target: {target:?}: {host:?} is not a host name or IP address"));
        }
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host.to_owned(), port)),
        _ => Err(format!("target: {target:?}: {port:?} is not a port (1-65535)")),
    }
}

pub(super) async fn measure(address: SocketAddr, schedule: Schedule) -> Series {
    let timeout = schedule.timeout;
    let outcomes = run_series(schedule, |_seq, deadline| connect_once(address, deadline, timeout)).await;
    Series::new(outcomes).0
}

async fn connect_once(
    address: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<Reply<()>, String> {
    let started = Instant::now();
    match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            let rtt = started.elapsed();
            drop(stream);
            Ok(Reply { rtt, extra: () })
        }
        Ok(Err(error)) => Err(format!("connect: {error}")),
        Err(_) => Err(no_answer(timeout)),
    }
}
