//! `port = …`: is something accepting TCP connections on `host:port`?
//!
//! A sample resolves `host` (an address needs no lookup), connects within `timeout` and
//! closes at once. Refused or unanswered is a successful sample with `listening = 0`;
//! a host name that does not resolve is UNKNOWN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nightowl_proto::CheckResult;

use super::KIND;
use crate::probes::{ok_result, unknown_result};

/// The metrics of a port nobody answers on.
fn down() -> HashMap<String, f64> {
    HashMap::from([("up".to_owned(), 0.0), ("listening".to_owned(), 0.0)])
}

pub(super) struct PortWatch {
    host: String,
    port: u16,
    timeout: Duration,
}

impl PortWatch {
    pub(super) fn new(host: String, port: u16, timeout: Duration) -> Self {
        Self { host, port, timeout }
    }

    pub(super) async fn sample(&self, check_id: String) -> CheckResult {
        let target = format!("{}:{}", self.host, self.port);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let addresses: Vec<SocketAddr> =
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((self.host.as_str(), self.port)))
                .await
            {
                Ok(Ok(addresses)) => addresses.collect(),
                Ok(Err(error)) => {
                    return unknown_result(
                        check_id,
                        KIND,
                        format!("cannot resolve {:?}: {error}", self.host),
                    );
                }
                Err(_) => {
                    return unknown_result(
                        check_id,
                        KIND,
                        format!("cannot resolve {:?} within {:?}", self.host, self.timeout),
                    );
                }
            };
        if addresses.is_empty() {
            return unknown_result(check_id, KIND, format!("{:?} resolves to no address", self.host));
        }
        let started = Instant::now();
        let connected =
            tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(&addresses[..])).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (metrics, message) = match connected {
            Ok(Ok(stream)) => {
                drop(stream);
                (
                    HashMap::from([
                        ("up".to_owned(), 1.0),
                        ("listening".to_owned(), 1.0),
                        ("connect_ms".to_owned(), elapsed_ms),
                    ]),
                    format!("{target} accepted a connection in {elapsed_ms:.1} ms"),
                )
            }
            Ok(Err(error)) => (down(), format!("{target}: {error}")),
            Err(_) => (down(), format!("{target}: no answer within {:?}", self.timeout)),
        };
        ok_result(check_id, KIND, metrics, message)
    }
}
