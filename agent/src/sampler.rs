//! Runs the probe units and turns their results into spooled reports.
//!
//! - Every unit is its own task on its own interval, jittered by ±10 % so probes of many
//!   agents (and of one agent) do not fire in lockstep; a slow probe delays nobody else.
//! - A unit also samples at once when its probe's [`Probe::changed`] hook fires (a
//!   watched process exited, a log line matched).
//! - The reporter batches results arriving within [`BATCH_WINDOW`] into one report (the
//!   latest result per check wins) and appends it to the spool, then wakes the session.
//! - [`Sampler::apply`] takes a new unit list (config reload): units whose config is
//!   unchanged keep running with their state (fill-rate history, log position…), changed
//!   ones restart, removed ones stop, new ones start.
//!
//! [`Probe::changed`]: crate::probes::Probe::changed

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use nightowl_proto::CheckResult;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::probes::{AnyProbe, ProbeContext, ProbeUnit};
use crate::session::{SharedSpool, now_ms, with_spool};

/// Results arriving within this window go into one report.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);

struct Running {
    unit: ProbeUnit,
    stop: CancellationToken,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub unchanged: usize,
}

pub struct Sampler {
    running: HashMap<String, Running>,
    context: ProbeContext,
    results: mpsc::Sender<Vec<CheckResult>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Sampler {
    /// Creates the sampler and its reporter task; no unit runs until [`Sampler::apply`].
    pub fn new(
        context: ProbeContext,
        spool: SharedSpool,
        new_report: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Self {
        let (results, receiver) = mpsc::channel(256);
        let tasks = TaskTracker::new();
        tasks.spawn(report_loop(receiver, spool, new_report, shutdown.clone()));
        Self { running: HashMap::new(), context, results, tasks, shutdown }
    }

    /// Makes `units` the running set.
    pub fn apply(&mut self, units: &[ProbeUnit]) -> Applied {
        let mut applied = Applied::default();
        let wanted: HashMap<&str, &ProbeUnit> = units.iter().map(|unit| (unit.key.as_str(), unit)).collect();
        self.running.retain(|key, running| {
            if wanted.contains_key(key.as_str()) {
                return true;
            }
            running.stop.cancel();
            applied.stopped.push(key.clone());
            false
        });
        for unit in units {
            match self.running.get(&unit.key) {
                Some(running) if running.unit == *unit => applied.unchanged += 1,
                Some(running) => {
                    running.stop.cancel();
                    applied.restarted.push(unit.key.clone());
                    self.start(unit);
                }
                None => {
                    applied.started.push(unit.key.clone());
                    self.start(unit);
                }
            }
        }
        applied
    }

    fn start(&mut self, unit: &ProbeUnit) {
        let stop = self.shutdown.child_token();
        let probe = unit.spec.build(&self.context);
        self.tasks.spawn(run_unit(
            unit.key.clone(),
            probe,
            unit.interval,
            self.results.clone(),
            stop.clone(),
        ));
        self.running.insert(unit.key.clone(), Running { unit: unit.clone(), stop });
    }

    /// Waits until every unit and the reporter have stopped (after shutdown).
    pub async fn stopped(self) {
        drop(self.results);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// `interval` × a random factor in [0.9, 1.1].
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

async fn run_unit(
    key: String,
    mut probe: AnyProbe,
    interval: Duration,
    results: mpsc::Sender<Vec<CheckResult>>,
    stop: CancellationToken,
) {
    // Spread the first samples a little, but take them soon: a fresh agent should
    // report within a second or two.
    let mut next =
        tokio::time::Instant::now() + interval.min(Duration::from_secs(1)).mul_f64(fastrand::f64() * 0.5);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(next) => next = tokio::time::Instant::now() + jittered(interval),
            () = probe.changed() => tracing::debug!(unit = %key, "change signalled; sampling now"),
        }
        let mut batch = tokio::select! {
            () = stop.cancelled() => return,
            batch = probe.sample() => batch,
        };
        // The collector detects a silent check by its interval.
        let interval_ms = u32::try_from(interval.as_millis()).unwrap_or(u32::MAX);
        for result in &mut batch {
            result.interval_ms = interval_ms;
        }
        if batch.is_empty() {
            continue;
        }
        if results.send(batch).await.is_err() {
            return;
        }
    }
}

/// Batches results into reports and appends them to the spool.
async fn report_loop(
    mut receiver: mpsc::Receiver<Vec<CheckResult>>,
    spool: SharedSpool,
    new_report: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            first = receiver.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut latest: Vec<CheckResult> = first;
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            for result in more {
                match latest.iter_mut().find(|known| known.check_id == result.check_id) {
                    Some(known) => *known = result,
                    None => latest.push(result),
                }
            }
        }
        let sampled_at_ms = now_ms();
        let count = latest.len();
        match with_spool(&spool, move |spool| spool.append(sampled_at_ms, latest)).await {
            Ok(appended) => {
                tracing::debug!(seq = appended.seq, results = count, "report spooled");
                new_report.notify_one();
            }
            Err(error) => tracing::error!(%error, results = count, "cannot spool report; results lost"),
        }
    }
}

/// Samples every unit once, concurrently (for `nightowl-agent check`); results in unit order.
pub async fn sample_once(units: &[ProbeUnit], context: &ProbeContext) -> Vec<(ProbeUnit, Vec<CheckResult>)> {
    let mut set = tokio::task::JoinSet::new();
    for (index, unit) in units.iter().enumerate() {
        let mut probe = unit.spec.build(context);
        set.spawn(async move { (index, probe.sample().await) });
    }
    let mut sampled: Vec<(usize, Vec<CheckResult>)> = Vec::with_capacity(units.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(done) => sampled.push(done),
            Err(error) => tracing::error!(%error, "a probe task failed"),
        }
    }
    sampled.sort_by_key(|(index, _)| *index);
    sampled.into_iter().map(|(index, results)| (units[index].clone(), results)).collect()
}
