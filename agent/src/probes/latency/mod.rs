//! Latency probe: round-trip time, jitter and loss towards one target.
//!
//! One result per `[[latency]]` entry, check id `latency:<name>`, kind `latency`. A
//! sample is a series of `count` probes started `spacing` apart (like `ping -i`: a probe
//! does not wait for the previous one's answer), each given `timeout` to answer. The
//! probe's time is measured per method:
//!
//! | method | one probe | time measured |
//! |--------|-----------|---------------|
//! | `icmp` | ICMP echo request | request sent → echo reply |
//! | `tcp`  | TCP connect, then close | connect → established |
//! | `http` | new connection, `GET`, ≤ 16 KiB of body | connect start → response headers (includes TCP and TLS handshakes) |
//! | `dns`  | one UDP query (A or AAAA) to `server` | query sent → matching response |
//!
//! Metrics: `sent`, `received`, `loss_pct`; when anything was received `rtt_min_ms`,
//! `rtt_avg_ms`, `rtt_max_ms`, `rtt_p95_ms` (nearest rank) and `jitter_ms` (mean absolute
//! difference of consecutive round-trip times, in probe order). `http` adds `status_code`
//! (of the last response; redirects are not followed) and, for `https`, `tls_expiry_days`
//! (days until the server certificate's notAfter, negative once expired — also reported
//! when the certificate fails verification). `dns` adds `answers` (records of the asked
//! type in the last response).
//!
//! A probe that gets no answer (timeout, refused, TLS failure) is lost. Even a sample
//! where every probe is lost is OK with `loss_pct` = 100 and the reason in the message:
//! judging is the collector's business. UNKNOWN means the check cannot work at all: the
//! target's name does not resolve, no ICMP socket may be opened, the trust roots cannot
//! be loaded.
//!
//! Bounds: the target is resolved once per sample (at most `timeout`), then the last
//! probe starts after (count − 1) × spacing and ends within `timeout`; validation caps
//! count × (timeout + spacing) at 5 minutes. All I/O is async; name resolution and
//! loading the system trust roots run on tokio's blocking pool (both finish on their
//! own: the resolver has its own timeouts).
//!
//! # Layout
//! - `mod.rs`: config, validation, the series scheduler and the statistics.
//! - `icmp`, `tcp`, `http`, `dns`: one probe of each method.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nightowl_proto::CheckResult;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Probe, ProbeContext, ok_result, unknown_result};
use crate::duration::HumanDuration;

mod dns;
mod http;
mod icmp;
mod tcp;

const KIND: &str = "latency";

const DEFAULT_COUNT: u32 = 5;
const MAX_COUNT: u32 = 100;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_SPACING: Duration = Duration::from_millis(200);
const MAX_SPACING: Duration = Duration::from_secs(60);
/// Upper bound of count × (timeout + spacing): one sample must not run for ages.
const MAX_SAMPLE_TIME: Duration = Duration::from_secs(300);

/// One `[[latency]]` entry.
///
/// ```toml
/// [[latency]]
/// name = "gateway"
/// method = "icmp"              # icmp | tcp | http | dns
/// target = "192.168.1.1"       # icmp: host or IP; tcp: "host:port"; http: URL; dns: the name to resolve
/// count = 5                    # probes per sample (1-100)
/// timeout = "2s"               # per probe
/// spacing = "200ms"            # between the starts of two probes
///
/// [[latency]]
/// name = "resolver"
/// method = "dns"
/// target = "intranet.example.com"
/// server = "192.168.1.53"      # ip[:port] of the DNS server to ask
/// record = "A"                 # A (default) or AAAA
///
/// [[latency]]
/// name = "portal"
/// method = "http"
/// target = "https://portal.example.com/health"
/// ca = "/etc/nightowl/portal-ca.pem"   # optional: trusted besides the system roots
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Check name: the check id is `latency:<name>`.
    pub name: String,
    /// How to probe: `icmp` (echo; unprivileged ping sockets where
    /// `net.ipv4.ping_group_range` allows the agent's group, raw sockets as root or with
    /// CAP_NET_RAW), `tcp` (connect time), `http` (time to response headers, http:// or
    /// https://) or `dns` (resolution time against `server`).
    pub method: LatencyMethod,
    /// What to probe. icmp: a host name or IP address; tcp: `host:port` (`[v6]:port`);
    /// http: an `http://` or `https://` URL; dns: the name to resolve.
    pub target: String,
    /// dns only: the server to ask, `ip` or `ip:port` (default port 53). An address, not a
    /// name: resolving the resolver would need DNS.
    #[serde(default)]
    pub server: Option<String>,
    /// dns only: the record type to ask for, `A` (default) or `AAAA`.
    #[serde(default)]
    pub record: Option<DnsRecord>,
    /// Probes per sample, 1-100 (default 5).
    #[serde(default = "default_count")]
    pub count: u32,
    /// How long one probe waits for its answer, 10ms-60s (default 2s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Time between the starts of two probes, at most 60s (default 200ms).
    #[serde(default)]
    pub spacing: Option<HumanDuration>,
    /// https only: a PEM file of CA certificates trusted besides the system's roots
    /// (absolute path). Read with the system roots at the first sample and kept: a
    /// changed file takes effect when the check is restarted (agent restart, or an edit
    /// of this entry).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

fn default_count() -> u32 {
    DEFAULT_COUNT
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyMethod {
    Icmp,
    Tcp,
    Http,
    Dns,
}

impl LatencyMethod {
    fn label(self) -> &'static str {
        match self {
            LatencyMethod::Icmp => "icmp",
            LatencyMethod::Tcp => "tcp",
            LatencyMethod::Http => "http",
            LatencyMethod::Dns => "dns",
        }
    }
}

/// The DNS record type a `dns` check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DnsRecord {
    #[serde(alias = "a")]
    A,
    #[serde(alias = "aaaa")]
    AAAA,
}

impl LatencyConfig {
    /// Checks the entry; the error names the key, e.g. `target: "gw" needs a port: …`.
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name)?;
        self.plan().map(|_| ())
    }

    /// The validated, typed form of the entry.
    fn plan(&self) -> Result<Plan, String> {
        let method = self.method.label();
        let target = match self.method {
            LatencyMethod::Icmp => Target::Icmp(icmp::parse_target(&self.target)?),
            LatencyMethod::Tcp => {
                let (host, port) = tcp::parse_target(&self.target)?;
                Target::Tcp { host, port }
            }
            LatencyMethod::Http => Target::Http(Arc::new(http::parse_target(&self.target)?)),
            LatencyMethod::Dns => {
                let server = self.server.as_deref().ok_or("server: required for method = \"dns\"")?;
                Target::Dns(Arc::new(dns::parse_query(&self.target, server, self.record)?))
            }
        };
        if self.method != LatencyMethod::Dns {
            if self.server.is_some() {
                return Err(format!("server: only used with method = \"dns\", not \"{method}\""));
            }
            if self.record.is_some() {
                return Err(format!("record: only used with method = \"dns\", not \"{method}\""));
            }
        }
        if let Some(ca) = &self.ca {
            if !matches!(&target, Target::Http(url) if url.is_https()) {
                return Err("ca: only used with method = \"http\" and an https:// target".into());
            }
            if !ca.is_absolute() {
                return Err(format!("ca: {:?} is not an absolute path", ca.display().to_string()));
            }
        }
        if self.count == 0 || self.count > MAX_COUNT {
            return Err(format!("count: {} is out of range: use 1-{MAX_COUNT}", self.count));
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |HumanDuration(timeout)| timeout);
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
            return Err(format!("timeout: {} is out of range: use 10ms-60s", format_duration(timeout)));
        }
        let spacing = self.spacing.map_or(DEFAULT_SPACING, |HumanDuration(spacing)| spacing);
        if spacing > MAX_SPACING {
            return Err(format!("spacing: {} is too long: at most 60s", format_duration(spacing)));
        }
        let worst = (timeout + spacing) * self.count;
        if worst > MAX_SAMPLE_TIME {
            return Err(format!(
                "count: a sample could take count × (timeout + spacing) = {}, more than 5m: \
                 lower count, timeout or spacing",
                format_duration(worst)
            ));
        }
        Ok(Plan { target, schedule: Schedule { count: self.count, timeout, spacing }, ca: self.ca.clone() })
    }
}

/// A validated entry.
#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    schedule: Schedule,
    ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Target {
    /// A host name or an IP address.
    Icmp(String),
    Tcp {
        host: String,
        port: u16,
    },
    Http(Arc<http::HttpTarget>),
    Dns(Arc<dns::DnsQuery>),
}

/// How the probes of one sample are spread.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Schedule {
    count: u32,
    timeout: Duration,
    spacing: Duration,
}

pub struct LatencyProbe {
    check_id: String,
    plan: Result<Plan, String>,
    /// https: the TLS client, built on the first sample (loading the system roots is
    /// file I/O) and kept.
    tls: Option<Arc<http::TlsClient>>,
}

impl LatencyProbe {
    pub fn new(config: &LatencyConfig, _context: &ProbeContext) -> Self {
        Self { check_id: format!("{KIND}:{}", config.name), plan: config.plan(), tls: None }
    }

    async fn measure(&mut self) -> Result<Series, String> {
        let plan = self.plan.as_ref().map_err(Clone::clone)?;
        let schedule = plan.schedule;
        match &plan.target {
            Target::Icmp(host) => {
                let ip = resolve(host, 0, schedule.timeout).await?.ip();
                icmp::measure(ip, schedule).await
            }
            Target::Tcp { host, port } => {
                let address = resolve(host, *port, schedule.timeout).await?;
                Ok(tcp::measure(address, schedule).await)
            }
            Target::Http(target) => {
                let tls = match (target.is_https(), &self.tls) {
                    (false, _) => None,
                    (true, Some(tls)) => Some(tls.clone()),
                    (true, None) => {
                        let tls = Arc::new(http::TlsClient::load(plan.ca.clone()).await?);
                        self.tls = Some(tls.clone());
                        Some(tls)
                    }
                };
                let address = resolve(target.host(), target.port(), schedule.timeout).await?;
                Ok(http::measure(target.clone(), address, tls, schedule).await)
            }
            Target::Dns(query) => Ok(dns::measure(query.clone(), schedule).await),
        }
    }
}

impl Probe for LatencyProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        let result = match self.measure().await {
            Ok(series) => {
                let message = series.message();
                ok_result(self.check_id.clone(), KIND, series.metrics(), message)
            }
            Err(reason) => unknown_result(self.check_id.clone(), KIND, reason),
        };
        vec![result]
    }
}

/// Resolves `host` (a name or an IP literal) once per sample, within `timeout`.
async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(mut addresses)) => {
            addresses.next().ok_or_else(|| format!("target: {host:?} resolves to no address"))
        }
        Ok(Err(error)) => Err(format!("target: cannot resolve {host:?}: {error}")),
        Err(_) => {
            Err(format!("target: cannot resolve {host:?}: no answer within {}", format_duration(timeout)))
        }
    }
}

/// One probe's answer: its round-trip time and what the method learnt besides.
struct Reply<X> {
    rtt: Duration,
    extra: X,
}

/// The answers of one series, in probe order, and why the others were lost.
struct Outcomes<X> {
    sent: u32,
    replies: Vec<Reply<X>>,
    errors: Vec<String>,
}

/// Runs `count` probes, the n-th starting at n × spacing; `attempt(seq, deadline)` must
/// answer by `deadline` (slot start + timeout) — a probe still running a little after
/// it is dropped and counted lost. The probes run as tasks of a `JoinSet`, so dropping
/// this future (shutdown) aborts them all.
async fn run_series<X, F, Fut>(schedule: Schedule, mut attempt: F) -> Outcomes<X>
where
    X: Send + 'static,
    F: FnMut(u16, Instant) -> Fut,
    Fut: Future<Output = Result<Reply<X>, String>> + Send + 'static,
{
    /// Slack for a probe that enforces the deadline itself to report its own error.
    const BACKSTOP: Duration = Duration::from_millis(100);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..schedule.count {
        let slot = start + schedule.spacing * seq;
        let deadline = slot + schedule.timeout;
        // count <= MAX_COUNT, so the sequence number fits.
        let seq = u16::try_from(seq).unwrap_or(u16::MAX);
        let probe = attempt(seq, deadline);
        let timeout = schedule.timeout;
        tasks.spawn(async move {
            tokio::time::sleep_until(slot).await;
            let outcome = tokio::time::timeout_at(deadline + BACKSTOP, probe)
                .await
                .unwrap_or_else(|_| Err(no_answer(timeout)));
            (seq, outcome)
        });
    }
    let mut done: Vec<(u16, Result<Reply<X>, String>)> = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(outcome) => done.push(outcome),
            // A panicking probe is a bug; count it lost rather than lose the sample.
            Err(error) => done.push((u16::MAX, Err(format!("probe task failed: {error}")))),
        }
    }
    done.sort_by_key(|(seq, _)| *seq);
    let mut outcomes = Outcomes { sent: schedule.count, replies: Vec::new(), errors: Vec::new() };
    for (_, outcome) in done {
        match outcome {
            Ok(reply) => outcomes.replies.push(reply),
            Err(error) => outcomes.errors.push(error),
        }
    }
    outcomes
}

fn no_answer(timeout: Duration) -> String {
    format!("no answer within {}", format_duration(timeout))
}

fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A sample's measurements, ready to become metrics and a message.
struct Series {
    sent: u32,
    /// Round-trip times of the answered probes, in probe order.
    rtts: Vec<Duration>,
    errors: Vec<String>,
    /// Method-specific metrics (`status_code`, `answers`, …).
    extra: HashMap<String, f64>,
    /// Said in the message whenever it is not empty (e.g. the DNS response code).
    note: Option<String>,
    /// Said with the loss (e.g. which ICMP socket kind was used).
    loss_context: Option<String>,
}

impl Series {
    fn new<X>(outcomes: Outcomes<X>) -> (Series, Vec<X>) {
        let mut rtts = Vec::with_capacity(outcomes.replies.len());
        let mut extras = Vec::with_capacity(outcomes.replies.len());
        for reply in outcomes.replies {
            rtts.push(reply.rtt);
            extras.push(reply.extra);
        }
        let series = Series {
            sent: outcomes.sent,
            rtts,
            errors: outcomes.errors,
            extra: HashMap::new(),
            note: None,
            loss_context: None,
        };
        (series, extras)
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let mut metrics = self.extra.clone();
        let received = self.rtts.len();
        metrics.insert("sent".into(), f64::from(self.sent));
        metrics.insert("received".into(), received as f64);
        metrics.insert("loss_pct".into(), loss_pct(self.sent, received));
        let rtts_ms: Vec<f64> = self.rtts.iter().map(|rtt| rtt.as_secs_f64() * 1000.0).collect();
        if let Some(stats) = RttStats::of(&rtts_ms) {
            metrics.insert("rtt_min_ms".into(), stats.min);
            metrics.insert("rtt_avg_ms".into(), stats.avg);
            metrics.insert("rtt_max_ms".into(), stats.max);
            metrics.insert("rtt_p95_ms".into(), stats.p95);
            metrics.insert("jitter_ms".into(), stats.jitter);
        }
        metrics
    }

    fn message(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let lost = (self.sent as usize).saturating_sub(self.rtts.len());
        if lost > 0 {
            let what = if lost == self.sent as usize {
                format!("all {} probes lost", self.sent)
            } else {
                format!("{lost} of {} probes lost", self.sent)
            };
            let mut text = match most_common(&self.errors) {
                Some(error) => format!("{what}: {error}"),
                None => what,
            };
            if let Some(context) = &self.loss_context {
                text.push_str(&format!(" ({context})"));
            }
            parts.push(text);
        }
        if let Some(note) = &self.note {
            parts.push(note.clone());
        }
        parts.join("; ")
    }
}

fn loss_pct(sent: u32, received: usize) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    let lost = f64::from(sent) - received as f64;
    (lost / f64::from(sent) * 100.0).max(0.0)
}

/// The most frequent error text (the first seen among equals).
fn most_common(errors: &[String]) -> Option<&str> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for error in errors {
        match counts.iter_mut().find(|(text, _)| *text == error.as_str()) {
            Some((_, count)) => *count += 1,
            None => counts.push((error, 1)),
        }
    }
    let best = counts.iter().map(|(_, count)| *count).max()?;
    counts.into_iter().find(|(_, count)| *count == best).map(|(text, _)| text)
}

/// Summary of round-trip times in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RttStats {
    min: f64,
    avg: f64,
    max: f64,
    p95: f64,
    jitter: f64,
}

impl RttStats {
    /// None when nothing was received. `rtts_ms` in probe order (jitter depends on it).
    fn of(rtts_ms: &[f64]) -> Option<RttStats> {
        if rtts_ms.is_empty() {
            return None;
        }
        let mut sorted = rtts_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(RttStats {
            min: sorted[0],
            avg: rtts_ms.iter().sum::<f64>() / rtts_ms.len() as f64,
            max: sorted[sorted.len() - 1],
            p95: percentile(&sorted, 95.0),
            jitter: jitter(rtts_ms),
        })
    }
}

/// Nearest-rank percentile of ascending `sorted` (not empty): the smallest value with
/// at least `pct` % of the values at or below it.
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Mean absolute difference of consecutive values (RFC 3550's idea without its
/// smoothing); 0 with fewer than two values.
fn jitter(rtts_ms: &[f64]) -> f64 {
    if rtts_ms.len() < 2 {
        return 0.0;
    }
    let total: f64 = rtts_ms.windows(2).map(|pair| (pair[1] - pair[0]).abs()).sum();
    total / (rtts_ms.len() - 1) as f64
}

/// A host name as written in a target: letters, digits, '-', '_' and '.'; 1-253
/// characters, no empty label.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

#[cfg(test)]
mod tests;
