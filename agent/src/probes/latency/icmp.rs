//! `icmp`: echo request → echo reply, with surge-ping.
//!
//! One socket per sample. It is an unprivileged ping socket (`SOCK_DGRAM`,
//! `IPPROTO_ICMP`) when the kernel allows it for the agent's group
//! (`net.ipv4.ping_group_range`), else a raw socket (root or CAP_NET_RAW); surge-ping
//! tries them in that order. The kernel sets the echo identifier of a ping socket and
//! hands it only its own replies; on a raw socket the identifier is random per sample.

use std::io;
use std::net::IpAddr;

use surge_ping::{Client, Config, ICMP, PingIdentifier, PingSequence, SurgeError};

use super::{Reply, Schedule, Series, is_host_name, no_answer, run_series};

/// Echo payload size, as `ping` sends by default.
const PAYLOAD: [u8; 56] = [0; 56];

/// Checks an icmp `target`: a host name or an IP address, no port.
pub(super) fn parse_target(target: &str) -> Result<String, String> {
    let host = target.trim();
    if host.parse::<IpAddr>().is_ok() || is_host_name(host) {
        return Ok(host.to_owned());
    }
    Err(format!("target: {target:?} is not a host name or IP address (icmp takes no port or URL)"))
}

pub(super) async fn measure(ip: IpAddr, schedule: Schedule) -> Result<Series, String> {
    let kind = if ip.is_ipv4() { ICMP::V4 } else { ICMP::V6 };
    // The default hint is DGRAM; surge-ping falls back to RAW when that is refused.
    let client = Client::new(&Config::builder().kind(kind).build()).map_err(|error| socket_error(&error))?;
    let socket_kind = if client.get_socket().get_type() == socket2::Type::DGRAM {
        "ping (dgram) socket"
    } else {
        "raw socket"
    };
    let ident = PingIdentifier(fastrand::u16(..));
    let timeout = schedule.timeout;
    let outcomes = run_series(schedule, |seq, deadline| {
        let client = client.clone();
        async move {
            let mut pinger = client.pinger(ip, ident).await;
            pinger.timeout(timeout);
            match tokio::time::timeout_at(deadline, pinger.ping(PingSequence(seq), &PAYLOAD)).await {
                Ok(Ok((_packet, rtt))) => Ok(Reply { rtt, extra: () }),
                Ok(Err(SurgeError::Timeout { .. })) | Err(_) => Err(no_answer(timeout)),
                Ok(Err(error)) => Err(error.to_string()),
            }
        }
    })
    .await;
    let (mut series, _) = Series::new(outcomes);
    series.loss_context = Some(format!("icmp via {socket_kind}"));
    Ok(series)
}

fn socket_error(error: &io::Error) -> String {
    match error.kind() {
        // surge-ping's own text for this case spans several lines; say it in one.
        io::ErrorKind::PermissionDenied => "icmp: cannot open an ICMP socket: a ping (dgram) socket is not \
             allowed for the agent's group (sysctl net.ipv4.ping_group_range) and a raw socket needs root \
             or CAP_NET_RAW"
            .to_owned(),
        _ => format!("icmp: cannot open an ICMP socket (tried dgram, then raw): {error}"),
    }
}
