//! # nightowl-loadgen: many simulated agents in one process
//!
//! Opens N concurrent sessions to a collector, each with its own mTLS certificate
//! (issued in memory from the collector's CA: [`nightowl_collector::pki::CaSigner`]) and
//! its own HTTP/2 connection, as real agents have. Each sends a report of R results every
//! interval ([`workload`]: a fraction of the results flips across the `disk_used_pct`
//! thresholds so that real alert transitions happen), and measures:
//! - acks: report sent → Ack covering it (the collector acks once durable);
//! - sample → alert: the report's `sampled_at_ms` → the alert event arriving on the
//!   alert feed (`Feed/Subscribe` with an operator certificate), i.e. durable in the
//!   queue and delivered, matched by (agent, check, status);
//! - sessions up, reconnects and the time until all are back after a loss
//!   (`recoveries_ms`), errors by kind.
//!
//! Optionally it writes a ledger ([`ledger`]) of what each session sent and got acked,
//! which the drills check against the collector's durable state.
//!
//! ## Layout
//! - `mod.rs`: [`Config`], [`run`], the shared counters and the progress monitor;
//! - `session.rs`: one simulated agent (protocol, window, replay, backoff);
//! - `workload.rs`: what is sent (deterministic per session and seq);
//! - `feed.rs`: the alert-feed watcher for sample → alert latency;
//! - `stats.rs`: percentiles and the [`Summary`];
//! - `ledger.rs`: the ledger and the drills' accounting ([`ledger::verify`]).

mod feed;
pub mod ledger;
mod session;
pub mod stats;
pub mod workload;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use stats::Summary;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://127.0.0.1:7443`
    pub collector: String,
    /// TLS name to verify; default: the URL's host.
    pub server_name: Option<String>,
    /// The collector's CA directory (`ca init --dir`): `ca.pem` and `ca.key`.
    pub pki: PathBuf,
    pub tenant: String,
    /// Agent ids are `<prefix><index, 5 digits>`.
    pub agent_prefix: String,
    pub sessions: u32,
    pub results: u32,
    pub interval: Duration,
    /// How long reports are generated (from the start of the first session).
    pub duration: Duration,
    /// After `duration`: how long to wait for the last acks and alerts.
    pub drain: Duration,
    /// Fraction of results that cross thresholds (0..=1).
    pub crossing: f64,
    /// Sessions started per second.
    pub ramp: u32,
    pub heartbeat: Duration,
    pub feed: FeedMode,
    /// Print a progress line to stderr every second.
    pub progress: bool,
}

/// How to watch the alert feed for the sample → alert latency.
#[derive(Debug, Clone)]
pub enum FeedMode {
    /// Do not subscribe (no sample → alert figures).
    Off,
    /// Issue an all-tenants operator certificate from the CA.
    Issue,
    /// Use this operator certificate and key.
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("certificates: {0}")]
    Pki(#[from] nightowl_collector::pki::PkiError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid collector url {0:?}: expected https://host:port")]
    Url(String),
    #[error("alert feed: {0}")]
    Feed(#[from] nightowl_collector::feed::client::FeedClientError),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// A transition a report should cause: (firing, the report's `sampled_at_ms`).
type Transition = (bool, i64);

/// State shared by every session, the monitor and the feed watcher.
pub(crate) struct Shared {
    config: Config,
    ca_pem: Vec<u8>,
    server_name: String,
    run_id: String,
    stop_generating: Instant,
    hard_stop: Instant,
    up: AtomicU32,
    up_peak: AtomicU32,
    reports_generated: AtomicU64,
    reports_acked: AtomicU64,
    reconnects: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// (session, check) → the transitions its reports should cause, oldest first:
    /// (firing, sampled_at_ms). A check's events arrive in report order, so each event
    /// takes the oldest one (exact as long as nothing is lost or emitted twice).
    expected: Mutex<HashMap<(u32, u32), VecDeque<Transition>>>,
    alerts_expected: AtomicU64,
    /// Encoded reports by number of crossing checks: sessions with the same number send
    /// the same results, so they share the bytes.
    encoded: Mutex<HashMap<u32, workload::EncodedReports>>,
}

impl Shared {
    fn count_error(&self, kind: &str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    /// The encoded reports of a session with `crossing` crossing checks.
    fn encoded_reports(&self, crossing: u32) -> workload::EncodedReports {
        let mut encoded = self.encoded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let config = &self.config;
        encoded
            .entry(crossing)
            .or_insert_with(|| {
                workload::EncodedReports::new(config.results, crossing, config.interval.as_millis() as u32)
            })
            .clone()
    }

    fn expect_transitions(&self, session: u32, crossing: u32, firing: bool, sampled_at_ms: i64) {
        let mut expected = self.expected.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for check in 0..crossing {
            expected.entry((session, check)).or_default().push_back((firing, sampled_at_ms));
        }
        self.alerts_expected.fetch_add(u64::from(crossing), Ordering::Relaxed);
    }

    /// Counts a session up until the guard drops.
    fn session_up(&self) -> UpGuard<'_> {
        let now = self.up.fetch_add(1, Ordering::Relaxed) + 1;
        self.up_peak.fetch_max(now, Ordering::Relaxed);
        UpGuard { up: &self.up }
    }
}

struct UpGuard<'a> {
    up: &'a AtomicU32,
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        self.up.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Raises the soft open-files limit to the hard one (one socket per session); returns
/// (soft, hard) after the change.
pub fn raise_fd_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            eprintln!("loadgen: cannot raise the open-files limit: {error}");
        }
    }
    let after = getrlimit(Resource::Nofile);
    (after.current, after.maximum)
}

/// Runs the load until every session is done; returns the summary and the ledger.
pub async fn run(config: Config) -> Result<(Summary, Vec<ledger::LedgerRow>), LoadgenError> {
    if config.sessions == 0 || config.results == 0 || config.interval.is_zero() || config.ramp == 0 {
        return Err(LoadgenError::Invalid("sessions, results, interval and ramp must be positive".into()));
    }
    if !(0.0..=1.0).contains(&config.crossing) {
        return Err(LoadgenError::Invalid("crossing must be between 0 and 1".into()));
    }
    let (soft, _) = raise_fd_limit();
    if let Some(soft) = soft
        && soft < u64::from(config.sessions) + 64
    {
        eprintln!("loadgen: WARNING: open-files limit {soft} is below {} sessions", config.sessions);
    }
    let host = url_host(&config.collector).ok_or_else(|| LoadgenError::Url(config.collector.clone()))?;
    let server_name = config.server_name.clone().unwrap_or(host);
    let ca_path = config.pki.join("ca.pem");
    let ca_pem = std::fs::read(&ca_path).map_err(|source| LoadgenError::Read { path: ca_path, source })?;

    let issue_started = std::time::Instant::now();
    let identities = issue_certificates(&config)?;
    let cert_issue_ms = issue_started.elapsed().as_millis() as u64;

    let run_id = format!("{}", session::now_ms());
    let feed_dir =
        tempfile::tempdir().map_err(|source| LoadgenError::Read { path: "tempdir".into(), source })?;
    let feed_target = feed::target(&config, &server_name, &feed_dir)?;
    let feed = match &feed_target {
        Some(target) => Some(feed::subscribe(target, &run_id).await?),
        None => None,
    };

    let start = Instant::now();
    let shared = Arc::new(Shared {
        ca_pem,
        server_name,
        run_id,
        stop_generating: start + config.duration,
        hard_stop: start + config.duration + config.drain,
        up: AtomicU32::new(0),
        up_peak: AtomicU32::new(0),
        reports_generated: AtomicU64::new(0),
        reports_acked: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        expected: Mutex::new(HashMap::new()),
        alerts_expected: AtomicU64::new(0),
        encoded: Mutex::new(HashMap::new()),
        config: config.clone(),
    });
    let done = tokio_util::sync::CancellationToken::new();
    let feed_task =
        feed.map(|subscription| tokio::spawn(feed::watch(subscription, shared.clone(), done.clone())));
    let monitor = tokio::spawn(monitor(shared.clone(), start, done.clone()));

    let mut sessions = tokio::task::JoinSet::new();
    let ramp_step = Duration::from_secs(1) / config.ramp;
    for (index, (cert, key)) in identities.into_iter().enumerate() {
        sessions.spawn(session::run(shared.clone(), index as u32, cert, key));
        if index + 1 < config.sessions as usize {
            tokio::time::sleep_until(start + ramp_step * (index as u32 + 1)).await;
        }
    }
    let mut ack_micros = Vec::new();
    let mut ledger = Vec::with_capacity(config.sessions as usize);
    let (mut generated, mut acked) = (0u64, 0u64);
    while let Some(joined) = sessions.join_next().await {
        match joined {
            Ok(outcome) => {
                ack_micros.extend(outcome.ack_micros);
                generated += outcome.reports_generated;
                acked += outcome.reports_acked;
                ledger.extend(outcome.row);
            }
            Err(error) => {
                eprintln!("loadgen: a session task failed: {error}");
                shared.count_error("panic");
            }
        }
    }
    // Alerts of the last reports may still be on their way.
    let alerts_wait = Instant::now() + Duration::from_secs(5).min(config.drain);
    let outstanding = || {
        shared.expected.lock().map(|expected| expected.values().map(VecDeque::len).sum()).unwrap_or(0usize)
    };
    while outstanding() > 0 && feed_task.is_some() && Instant::now() < alerts_wait {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.cancel();
    let alerts = match feed_task {
        Some(task) => task.await.unwrap_or_default(),
        None => feed::Seen::default(),
    };
    let progress = monitor.await.unwrap_or_default();
    ledger.sort_by(|left, right| left.agent.cmp(&right.agent));

    let (cpu, rss) = stats::own_usage();
    let (window_reports, window_s) = progress.steady.unwrap_or((acked, config.duration.as_secs_f64()));
    let reports_per_s = if window_s > 0.0 { window_reports as f64 / window_s } else { 0.0 };
    let summary = Summary {
        sessions: config.sessions,
        results_per_report: config.results,
        interval_ms: config.interval.as_millis() as u64,
        duration_s: config.duration.as_secs_f64(),
        cert_issue_ms,
        sessions_up: ledger.iter().filter(|row| row.acked > 0 || row.sent > 0).count() as u32,
        sessions_up_peak: shared.up_peak.load(Ordering::Relaxed),
        all_up_after_ms: progress.all_up_after_ms,
        reports_generated: generated,
        reports_acked: acked,
        results_acked: acked * u64::from(config.results),
        reports_per_s,
        results_per_s: reports_per_s * f64::from(config.results),
        ack_latency: stats::Percentiles::from_micros(ack_micros),
        sample_to_alert: stats::Percentiles::from_micros(alerts.latency_micros),
        alerts_expected: shared.alerts_expected.load(Ordering::Relaxed),
        alerts_seen: alerts.matched,
        alerts_unmatched: alerts.unmatched,
        errors: {
            let mut errors = shared.errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            if alerts.errors > 0 {
                errors.insert("feed".into(), alerts.errors);
            }
            errors
        },
        reconnects: shared.reconnects.load(Ordering::Relaxed),
        recoveries_ms: progress.recoveries_ms,
        loadgen_cpu_s: cpu,
        loadgen_peak_rss_mib: rss,
    };
    drop(feed_dir);
    Ok((summary, ledger))
}

/// Every session's (certificate, key) PEM, issued on all cores from one loaded CA.
fn issue_certificates(config: &Config) -> Result<Vec<(String, String)>, LoadgenError> {
    let signer = nightowl_collector::pki::CaSigner::load(&config.pki)?;
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as u32;
    let chunk = config.sessions.div_ceil(threads);
    let results: Vec<Result<Vec<(String, String)>, LoadgenError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let signer = &signer;
                scope.spawn(move || {
                    let from = thread * chunk;
                    let to = (from + chunk).min(config.sessions);
                    (from..to)
                        .map(|index| {
                            signer
                                .agent_pem(&config.tenant, &workload::agent_id(&config.agent_prefix, index))
                                .map_err(LoadgenError::from)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("certificate thread")).collect()
    });
    let mut identities = Vec::with_capacity(config.sessions as usize);
    for part in results {
        identities.extend(part?);
    }
    Ok(identities)
}

/// The host of `https://host:port/...` (brackets of an IPv6 literal removed).
fn url_host(url: &str) -> Option<String> {
    let authority = url.strip_prefix("https://")?.split(['/', '?']).next()?;
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(name, _)| name),
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[derive(Debug, Default)]
struct Progress {
    all_up_after_ms: Option<u64>,
    recoveries_ms: Vec<u64>,
    /// (reports acked, seconds) from all sessions up to the end of generation.
    steady: Option<(u64, f64)>,
}

/// Watches the up count every 100 ms: when all sessions first came up, each loss and
/// recovery, the steady window; prints progress every second when asked.
async fn monitor(shared: Arc<Shared>, start: Instant, done: tokio_util::sync::CancellationToken) -> Progress {
    let total = shared.config.sessions;
    let mut progress = Progress::default();
    let mut steady_from: Option<(Instant, u64)> = None;
    let mut outage_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut last_print = start;
    let mut last_acked = 0u64;
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let up = shared.up.load(Ordering::Relaxed);
        let acked = shared.reports_acked.load(Ordering::Relaxed);
        if up == total && progress.all_up_after_ms.is_none() {
            progress.all_up_after_ms = Some(now.duration_since(start).as_millis() as u64);
            steady_from = Some((now, acked));
        }
        if progress.all_up_after_ms.is_some() && now < shared.stop_generating {
            match (outage_since, up == total) {
                (None, false) => outage_since = Some(now),
                (Some(since), true) => {
                    progress.recoveries_ms.push(now.duration_since(since).as_millis() as u64);
                    outage_since = None;
                }
                _ => {}
            }
        }
        if let Some((from, acked_then)) = steady_from
            && progress.steady.is_none()
            && now >= shared.stop_generating
        {
            progress.steady = Some((acked - acked_then, now.duration_since(from).as_secs_f64()));
        }
        if shared.config.progress && now.duration_since(last_print) >= Duration::from_secs(1) {
            let rate = (acked - last_acked) as f64 / now.duration_since(last_print).as_secs_f64();
            let errors: u64 = shared.errors.lock().map(|errors| errors.values().sum()).unwrap_or_default();
            eprintln!(
                "loadgen: t={:>5.1}s up={up}/{total} acked={acked} reports/s={rate:.0} errors={errors}",
                now.duration_since(start).as_secs_f64()
            );
            last_print = now;
            last_acked = acked;
        }
    }
    if let Some(since) = outage_since {
        // Never all back before the end: count it as lasting until now.
        progress.recoveries_ms.push(Instant::now().duration_since(since).as_millis() as u64);
    }
    progress
}

#[cfg(test)]
mod tests;
