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
//! - A removed unit *retires* its checks: as it stops, it sends the check ids of its last
//!   sample (before that sample: its key, which is the check id of every listed family)
//!   through the same channel as its results, so the retirement comes after every result
//!   it produced. The reporter puts them in the report's `retired_checks` (never together
//!   with a result of the same check), and the collector forgets those checks instead of
//!   taking their silence for a problem (`no_data`). A unit stopped by shutdown retires
//!   nothing.
//!
//! [`Probe::changed`]: crate::probes::Probe::changed

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set before `stop` when the unit is removed (not restarted, not shut down): it then
    /// reports its checks as retired.
    retire: Arc<AtomicBool>,
}

/// What units send the reporter.
#[derive(Debug)]
enum Sampled {
    Results(Vec<CheckResult>),
    /// Check ids a removed unit no longer reports.
    Retired(Vec<String>),
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
    results: mpsc::Sender<Sampled>,
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
            running.retire.store(true, Ordering::Release);
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
        let retire = Arc::new(AtomicBool::new(false));
        let probe = unit.spec.build(&self.context);
        self.tasks.spawn(run_unit(
            unit.key.clone(),
            probe,
            unit.interval,
            self.results.clone(),
            stop.clone(),
            retire.clone(),
        ));
        self.running.insert(unit.key.clone(), Running { unit: unit.clone(), stop, retire });
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
    results: mpsc::Sender<Sampled>,
    stop: CancellationToken,
    retire: Arc<AtomicBool>,
) {
    // Spread the first samples a little, but take them soon: a fresh agent should
    // report within a second or two.
    let mut next =
        tokio::time::Instant::now() + interval.min(Duration::from_secs(1)).mul_f64(fastrand::f64() * 0.5);
    // The check ids of the last sample: what this unit retires when it is removed.
    let mut reported: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => next = tokio::time::Instant::now() + jittered(interval),
            () = probe.changed() => tracing::debug!(unit = %key, "change signalled; sampling now"),
        }
        let mut batch = tokio::select! {
            () = stop.cancelled() => break,
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
        let ids: Vec<String> = batch.iter().map(|result| result.check_id.clone()).collect();
        // Stop wins over a send waiting for room: nothing of this unit may follow its
        // retirement.
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            sent = results.send(Sampled::Results(batch)) => match sent {
                Ok(()) => reported = ids,
                Err(_) => return,
            },
        }
    }
    if !retire.load(Ordering::Acquire) {
        return;
    }
    if reported.is_empty() {
        // Removed before its first sample in this run: a listed check's id is its key
        // (the agent may have reported it before a restart).
        reported.push(key.clone());
    }
    tracing::debug!(unit = %key, checks = ?reported, "unit removed; its checks are retired");
    if results.send(Sampled::Retired(reported)).await.is_err() {
        // Only at shutdown: the reporter has stopped and no report will be written.
        tracing::debug!(unit = %key, "reporter gone; retirement not reported");
    }
}

/// One report in the making: the latest result per check, and the retired checks.
#[derive(Debug, Default)]
struct Batch {
    latest: Vec<CheckResult>,
    retired: Vec<String>,
}

impl Batch {
    /// Adds what a unit sent, in channel order: a result un-retires its check (the unit
    /// came back within the window), a retirement drops the check's pending result.
    fn add(&mut self, sampled: Sampled) {
        match sampled {
            Sampled::Results(results) => {
                for result in results {
                    self.retired.retain(|id| *id != result.check_id);
                    match self.latest.iter_mut().find(|known| known.check_id == result.check_id) {
                        Some(known) => *known = result,
                        None => self.latest.push(result),
                    }
                }
            }
            Sampled::Retired(ids) => {
                self.latest.retain(|result| !ids.contains(&result.check_id));
                for id in ids {
                    if !self.retired.contains(&id) {
                        self.retired.push(id);
                    }
                }
            }
        }
    }
}

/// Batches results into reports and appends them to the spool.
async fn report_loop(
    mut receiver: mpsc::Receiver<Sampled>,
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
        let mut batch = Batch::default();
        batch.add(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            batch.add(more);
        }
        let Batch { latest, retired } = batch;
        if latest.is_empty() && retired.is_empty() {
            continue;
        }
        let sampled_at_ms = now_ms();
        let (count, retired_count) = (latest.len(), retired.len());
        match with_spool(&spool, move |spool| spool.append_report(sampled_at_ms, latest, retired)).await {
            Ok(appended) => {
                tracing::debug!(
                    seq = appended.seq,
                    results = count,
                    retired = retired_count,
                    "report spooled"
                );
                new_report.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, results = count, retired = retired_count, "cannot spool report; results lost")
            }
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::config::Config;
    use crate::spool::{Spool, SpoolLimits};

    fn result(id: &str) -> CheckResult {
        CheckResult { check_id: id.into(), kind: "service".into(), ..Default::default() }
    }

    #[test]
    fn a_batch_never_reports_and_retires_one_check() {
        let mut batch = Batch::default();
        batch.add(Sampled::Results(vec![result("service:a"), result("service:b")]));
        batch.add(Sampled::Retired(vec!["service:a".into()]));
        let ids: Vec<&str> = batch.latest.iter().map(|result| result.check_id.as_str()).collect();
        assert_eq!((ids, batch.retired.clone()), (vec!["service:b"], vec!["service:a".to_owned()]));
        // Back within the window (removed, then added again): running, not retired.
        batch.add(Sampled::Results(vec![result("service:a")]));
        assert!(batch.retired.is_empty());
        assert_eq!(batch.latest.len(), 2);
    }

    fn units(text: &str) -> Vec<ProbeUnit> {
        let config = Config::parse(text, "agent.toml", Path::new("/")).unwrap();
        config.units.into_iter().filter(|unit| unit.key.starts_with("service:")).collect()
    }

    /// Every report spooled so far, oldest first.
    fn reports(spool: &SharedSpool) -> Vec<nightowl_proto::Report> {
        spool.lock().unwrap().pending_after(0, usize::MAX).unwrap()
    }

    async fn wait_for(
        spool: &SharedSpool,
        what: &str,
        mut done: impl FnMut(&[nightowl_proto::Report]) -> bool,
    ) {
        for _ in 0..200 {
            if done(&reports(spool)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}: {:?}", reports(spool));
    }

    #[tokio::test]
    async fn a_removed_unit_retires_its_checks_after_its_last_result() {
        let dir = tempfile::tempdir().unwrap();
        let spool: SharedSpool =
            Arc::new(Mutex::new(Spool::open(dir.path(), SpoolLimits::default()).unwrap()));
        let shutdown = CancellationToken::new();
        let context = ProbeContext { state_dir: dir.path().to_path_buf() };
        let mut sampler = Sampler::new(context, spool.clone(), Arc::new(Notify::new()), shutdown.clone());
        let both = "[[service]]\nname = \"web\"\nport = 1\ninterval = \"100ms\"\n\
                    [[service]]\nname = \"db\"\nport = 2\ninterval = \"100ms\"\n";
        sampler.apply(&units(both));
        let reported = |reports: &[nightowl_proto::Report], id: &str| {
            reports.iter().any(|report| report.results.iter().any(|result| result.check_id == id))
        };
        wait_for(&spool, "both checks reported", |reports| {
            reported(reports, "service:web") && reported(reports, "service:db")
        })
        .await;

        // Remove web; a restart of db (changed config) retires nothing.
        let applied = sampler.apply(&units("[[service]]\nname = \"db\"\nport = 3\ninterval = \"100ms\"\n"));
        assert_eq!(
            (applied.stopped, applied.restarted),
            (vec!["service:web".to_owned()], vec!["service:db".to_owned()])
        );
        wait_for(&spool, "web retired", |reports| {
            reports.iter().any(|report| !report.retired_checks.is_empty())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let all = reports(&spool);
        let retired_at = all.iter().position(|report| !report.retired_checks.is_empty()).unwrap();
        assert_eq!(all[retired_at].retired_checks, ["service:web"]);
        assert_eq!(all.iter().filter(|report| !report.retired_checks.is_empty()).count(), 1, "retired once");
        assert!(!reported(&all[retired_at..], "service:web"), "nothing of web after its retirement");
        assert!(reported(&all[retired_at + 1..], "service:db"), "db keeps reporting");

        // Shutdown retires nothing.
        shutdown.cancel();
        sampler.stopped().await;
        let after = reports(&spool);
        assert_eq!(after.iter().filter(|report| !report.retired_checks.is_empty()).count(), 1);
    }

    /// Every unit is a task whose future lives as long as the unit; the probes' own
    /// futures are boxed per sample (`AnyProbe::sample`), or each unit would be as large
    /// as the largest probe's future (18,112 bytes when this was written; 808 boxed).
    #[test]
    fn a_unit_task_does_not_hold_the_largest_probe_future() {
        let (results, _receiver) = mpsc::channel(1);
        let context = crate::probes::ProbeContext { state_dir: std::env::temp_dir() };
        let probe = AnyProbe::Host(Box::new(crate::probes::host::HostProbe::new(&context)));
        let unit = run_unit(
            "host".into(),
            probe,
            Duration::from_secs(1),
            results,
            CancellationToken::new(),
            Arc::default(),
        );
        let size = std::mem::size_of_val(&unit);
        assert!(size <= 4096, "a unit task's future is {size} bytes");
    }
}
