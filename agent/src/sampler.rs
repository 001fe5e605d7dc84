//! Runs the probe units and turns their results into spooled reports.
//!
//! - Every unit is its own task on its own interval; a slow probe delays nobody else. The
//!   units of one agent sample on one [`Grid`]: a unit samples at the agent's random
//!   phase modulo its interval, so units with the same interval sample together (one
//!   report per cycle, one shared process scan) and the agents of a fleet do not sample
//!   in lockstep (each picks its phase at start). A unit's first sample comes at once
//!   (within half a second), then it joins the grid.
//! - A unit also samples at once when its probe's [`Probe::changed`] hook fires (a
//!   watched process exited, a log line matched).
//! - A probe that panics does not end its unit: the unit catches the panic, reports every
//!   check it last reported (or its key, before a first sample) as UNKNOWN with
//!   "probe panicked: <message>", logs it at `error`, counts it
//!   ([`Supervisor::caught_panics`]) and builds the probe anew after a
//!   [`RestartBackoff`]. A panic in a probe's blocking call reaches the probe as an error
//!   (tokio's `JoinError`) and becomes its UNKNOWN result like any other failure.
//! - The reporter batches results arriving within [`BATCH_WINDOW`] into one report (the
//!   latest result per check wins) and appends it to the spool, then wakes the session.
//! - [`Sampler::apply`] takes a new unit list (config reload): units whose config is
//!   unchanged keep running with their state (fill-rate history, log position…), changed
//!   ones restart, removed ones stop, new ones start.
//! - A removed unit *retires* its checks: as it stops, it sends the check ids of its last
//!   sample through the same channel as its results, so the retirement comes after every
//!   result it produced. The reporter adds the ids the spool remembers for the unit (a
//!   unit removed before its first sample in this run: from before the restart) and, if
//!   there are none, the unit's key (the check id of every listed family). It puts them in
//!   the report's `retired_checks` (never together with a result of the same check), and
//!   the collector forgets those checks instead of taking their silence for a problem
//!   (`no_data`). A unit stopped by shutdown retires nothing; a unit whose config changed
//!   (same key, restarted) is not removed and retires nothing either.
//! - The spool remembers the check ids each unit reported last (`unit_checks`, see
//!   [`crate::spool`]). The reporter keeps a copy and, when a unit's set differs from it,
//!   writes the new set in the transaction of the report carrying those results (not on
//!   every sample); a retired unit's row goes in the transaction of the report retiring
//!   it. So a unit removed from the config while the agent was stopped is still retired:
//!   the first [`Sampler::apply`] after a start sends the remembered units it does not
//!   run down the same path as a removal, before any unit starts, and they go into the
//!   first report.
//!
//! [`Probe::changed`]: crate::probes::Probe::changed

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::probes::{Probe, ProbeContext, ProbeUnit};
use crate::spool::{SharedSpool, now_ms, with_spool};
use crate::spool::{UnitChange, UnitChecks};
use crate::supervise::{CatchUnwind, RestartBackoff, Supervisor, panic_message};

/// Results arriving within this window go into one report.
pub const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// Longest panic message put in a result (the rest is cut at a character boundary).
const MAX_PANIC_MESSAGE_BYTES: usize = 512;

struct Running {
    /// Shared with the unit's task, which builds its probe from it (again after a panic).
    unit: Arc<ProbeUnit>,
    stop: CancellationToken,
    /// Set before `stop` when the unit is removed (not restarted, not shut down): it then
    /// reports its checks as retired.
    retire: Arc<AtomicBool>,
}

/// What units send the reporter.
#[derive(Debug)]
enum Sampled {
    /// One sample of the unit `unit`.
    Results { unit: String, results: Vec<CheckResult> },
    /// Units removed (by a reload, or from the config while the agent was stopped), each
    /// with the check ids it reported last (possibly none).
    Retired(Vec<(String, Vec<String>)>),
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
    supervisor: Supervisor,
    shutdown: CancellationToken,
    grid: Grid,
    /// What the spool remembered of the units at start ([`Spool::unit_checks`]), until the
    /// first [`Sampler::apply`] retires those it does not run.
    ///
    /// [`Spool::unit_checks`]: crate::spool::Spool::unit_checks
    remembered: Option<UnitChecks>,
    /// The same, kept: the check ids a unit reports UNKNOWN if its probe panics before
    /// its first sample in this run.
    known: UnitChecks,
}

impl Sampler {
    /// Creates the sampler and its reporter task; no unit runs until [`Sampler::apply`].
    /// `remembered` is what the spool remembers of the units ([`Spool::unit_checks`], read
    /// at start). The reporter and the units run under `supervisor`: the reporter as a
    /// critical task (without it nothing reaches the spool), each unit supervising its
    /// probe itself.
    ///
    /// [`Spool::unit_checks`]: crate::spool::Spool::unit_checks
    pub fn new(
        context: ProbeContext,
        spool: SharedSpool,
        remembered: UnitChecks,
        new_report: Arc<Notify>,
        shutdown: CancellationToken,
        supervisor: Supervisor,
    ) -> Self {
        let (results, receiver) = mpsc::channel(256);
        let reporter = report_loop(receiver, spool, remembered.clone(), new_report, shutdown.clone());
        supervisor.critical("reporter", shutdown.clone(), reporter);
        Self {
            running: HashMap::new(),
            context,
            results,
            supervisor,
            shutdown,
            grid: Grid::random(),
            known: remembered.clone(),
            remembered: Some(remembered),
        }
    }

    /// Makes `units` the running set. The first call also retires the units the spool
    /// remembers that are not in `units` (removed while the agent was stopped).
    pub fn apply(&mut self, units: &[ProbeUnit]) -> Applied {
        let mut applied = Applied::default();
        let wanted: HashMap<&str, &ProbeUnit> = units.iter().map(|unit| (unit.key.as_str(), unit)).collect();
        if let Some(remembered) = self.remembered.take() {
            let gone: Vec<(String, Vec<String>)> =
                remembered.into_iter().filter(|(unit, _)| !wanted.contains_key(unit.as_str())).collect();
            if !gone.is_empty() {
                let keys: Vec<&str> = gone.iter().map(|(unit, _)| unit.as_str()).collect();
                tracing::info!(units = ?keys, "units removed while the agent was stopped; their checks are retired");
                self.retire_at_start(gone);
            }
        }
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
                // A unit whose task ended anyway (see `start`) is started again.
                Some(running) if *running.unit == *unit && !running.stop.is_cancelled() => {
                    applied.unchanged += 1
                }
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

    /// Sends the retirement of units removed while the agent was stopped, ahead of any
    /// result: no unit runs yet, so the channel has room and it opens the first report.
    fn retire_at_start(&self, gone: Vec<(String, Vec<String>)>) {
        match self.results.try_send(Sampled::Retired(gone)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(retired)) => {
                // Cannot happen at the first apply (no unit has sent anything yet); sent
                // from a task rather than lost if it ever does.
                let results = self.results.clone();
                self.supervisor.task("retirement at start", async move {
                    if results.send(retired).await.is_err() {
                        tracing::debug!("reporter gone; retirement not reported");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("reporter gone; retirement not reported");
            }
        }
    }

    fn start(&mut self, unit: &ProbeUnit) {
        let stop = self.shutdown.child_token();
        let retire = Arc::new(AtomicBool::new(false));
        let run = UnitRun {
            key: unit.key.clone(),
            kind: unit.spec.family(),
            interval: unit.interval,
            grid: self.grid,
            results: self.results.clone(),
            stop: stop.clone(),
            retire: retire.clone(),
            supervisor: self.supervisor.clone(),
            reported: self.known.get(&unit.key).cloned().unwrap_or_default(),
        };
        let (shared, context) = (Arc::new(unit.clone()), self.context.clone());
        let build = {
            let unit = shared.clone();
            move || unit.spec.build(&context)
        };
        // However the task ends, its `stop` is cancelled: a unit whose task ended without
        // being stopped (a panic outside its probe) counts as stopped, and the next apply
        // starts it again instead of keeping a dead unit in the running set.
        let ended = stop.clone().drop_guard();
        let task = run_unit(run, build);
        self.supervisor.task(format!("unit {}", unit.key), async move {
            let _ended = ended;
            task.await;
        });
        self.running.insert(unit.key.clone(), Running { unit: shared, stop, retire });
    }

    /// Waits until every unit and the reporter have stopped (after shutdown), and any
    /// other task of the supervisor.
    pub async fn stopped(self) {
        drop(self.results);
        self.supervisor.wait().await;
    }
}

/// When units sample: for a unit of interval `I`, at `anchor + (offset mod I) + k × I`.
///
/// One grid per agent, so that its units line up: every unit of the same interval samples
/// at the same instants (and units of interval 2I at every other one of them). Units that
/// each added their own jitter to every interval drifted apart for good (a random walk of
/// their phases): after a few minutes each sampled alone, so an agent spooled and sent a
/// report per unit per cycle and its process checks stopped sharing a scan (reports per
/// cycle before and after: docs/performance-log.md).
/// `offset` is random per agent (below an hour, uniform enough for any interval that
/// divides an hour), so a fleet started at one moment still spreads its reports over the
/// whole interval. The grid does not drift: a late wake-up delays that sample only.
#[derive(Debug, Clone, Copy)]
struct Grid {
    anchor: tokio::time::Instant,
    offset: Duration,
}

impl Grid {
    fn random() -> Self {
        let offset = Duration::from_nanos(fastrand::u64(..3_600_000_000_000));
        Self { anchor: tokio::time::Instant::now(), offset }
    }

    /// The first instant of the grid of `interval` strictly after `after`.
    fn next_after(&self, interval: Duration, after: tokio::time::Instant) -> tokio::time::Instant {
        let period = interval.as_nanos().max(1);
        let phase = self.offset.as_nanos() % period;
        let since = after.saturating_duration_since(self.anchor).as_nanos();
        // Points are anchor + phase + k × period (k may be −1: phase < period); the first
        // one past `after` has k = ⌊(since + period − phase) / period⌋.
        let next = phase + (since + period - phase) / period * period;
        self.anchor + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
    }
}

/// One unit's task: everything but the probe, which [`run_unit`] builds.
struct UnitRun {
    key: String,
    /// The family (`disk`, `service`…): the kind of the results a panic reports.
    kind: &'static str,
    interval: Duration,
    grid: Grid,
    results: mpsc::Sender<Sampled>,
    stop: CancellationToken,
    /// Set before `stop` when the unit is removed: it then reports its checks as retired.
    retire: Arc<AtomicBool>,
    supervisor: Supervisor,
    /// The check ids of the last sample sent: what the unit retires when it is removed
    /// and reports UNKNOWN when its probe panics. Seeded with what the spool remembers.
    reported: Vec<String>,
}

/// How a unit's sampling ended (other than by a panic).
enum UnitEnd {
    Stopped,
    ReporterGone,
}

/// Runs a unit until it is stopped: builds its probe with `build` and samples it; when
/// the probe panics, reports that (see the module doc) and builds it anew after a
/// backoff. A stopped unit that was removed retires its checks.
async fn run_unit<P: Probe>(mut unit: UnitRun, mut build: impl FnMut() -> P + Send) {
    let mut backoff = RestartBackoff::default();
    let ended = loop {
        let began = tokio::time::Instant::now();
        let mut reported = std::mem::take(&mut unit.reported);
        let caught = CatchUnwind(pin!(sample_unit(&unit, &mut build, &mut reported))).await;
        unit.reported = reported;
        let payload = match caught {
            Ok(ended) => break ended,
            Err(payload) => payload,
        };
        let message = panic_message(payload.as_ref());
        let delay = backoff.after(began.elapsed());
        let panics = unit.supervisor.count_caught_panic();
        tracing::error!(
            unit = %unit.key,
            panic = %message,
            restart_in = ?delay,
            panics,
            "probe panicked; its checks are reported UNKNOWN and the probe is started again"
        );
        let batch = panicked_results(&unit, &message);
        let ids: Vec<String> = batch.iter().map(|result| result.check_id.clone()).collect();
        tokio::select! {
            biased;
            () = unit.stop.cancelled() => break UnitEnd::Stopped,
            sent = unit.results.send(Sampled::Results { unit: unit.key.clone(), results: batch }) => match sent {
                Ok(()) => unit.reported = ids,
                Err(_) => break UnitEnd::ReporterGone,
            },
        }
        tokio::select! {
            () = unit.stop.cancelled() => break UnitEnd::Stopped,
            () = tokio::time::sleep(delay) => {}
        }
    };
    if matches!(ended, UnitEnd::ReporterGone) || !unit.retire.load(Ordering::Acquire) {
        return;
    }
    let UnitRun { key, results, reported, .. } = unit;
    // Empty when removed before its first sample in this run: the reporter knows more.
    tracing::debug!(unit = %key, checks = ?reported, "unit removed; its checks are retired");
    if results.send(Sampled::Retired(vec![(key.clone(), reported)])).await.is_err() {
        // Only at shutdown: the reporter has stopped and no report will be written.
        tracing::debug!(unit = %key, "reporter gone; retirement not reported");
    }
}

/// What a panic reports: every check of the unit's last sample (its key before the
/// first) UNKNOWN, naming the panic.
fn panicked_results(unit: &UnitRun, message: &str) -> Vec<CheckResult> {
    let ids = if unit.reported.is_empty() { std::slice::from_ref(&unit.key) } else { &unit.reported[..] };
    ids.iter().map(|id| panicked_result(id, unit.kind, message, unit.interval)).collect()
}

/// Check `id` UNKNOWN with "probe panicked: <message>".
fn panicked_result(id: &str, kind: &str, message: &str, interval: Duration) -> CheckResult {
    let text = format!("probe panicked: {message}");
    CheckResult {
        check_id: id.to_owned(),
        kind: kind.to_owned(),
        status: ProbeStatus::Unknown as i32,
        metrics: BTreeMap::new(),
        message: text[..text.floor_char_boundary(MAX_PANIC_MESSAGE_BYTES)].to_owned(),
        interval_ms: interval_ms(interval),
    }
}

/// The interval results carry: the collector detects a silent check by it.
fn interval_ms(interval: Duration) -> u32 {
    u32::try_from(interval.as_millis()).unwrap_or(u32::MAX)
}

/// Builds the probe and samples it on the grid and on its events until the unit stops;
/// keeps `reported` to the check ids of the last sample sent.
async fn sample_unit<P: Probe>(
    unit: &UnitRun,
    build: &mut impl FnMut() -> P,
    reported: &mut Vec<String>,
) -> UnitEnd {
    let mut probe = build();
    let interval = unit.interval;
    // Spread the first samples a little, but take them soon: a fresh agent should
    // report within a second or two. Then the grid, not less than half an interval on.
    let first = interval.min(Duration::from_secs(1)).mul_f64(fastrand::f64() * 0.5);
    let mut next = tokio::time::Instant::now() + first;
    let mut joined = false;
    loop {
        let timed = tokio::select! {
            () = unit.stop.cancelled() => return UnitEnd::Stopped,
            () = tokio::time::sleep_until(next) => true,
            () = probe.changed() => {
                tracing::debug!(unit = %unit.key, "change signalled; sampling now");
                false
            }
        };
        let mut batch = tokio::select! {
            () = unit.stop.cancelled() => return UnitEnd::Stopped,
            batch = probe.sample() => batch,
        };
        if timed {
            // The next point after this sample: points a slow sample overran are skipped,
            // not caught up. An event's sample leaves the schedule as it was.
            let after = tokio::time::Instant::now();
            next = unit.grid.next_after(interval, if joined { after } else { after + interval / 2 });
            joined = true;
        }
        for result in &mut batch {
            result.interval_ms = interval_ms(interval);
        }
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<String> = batch.iter().map(|result| result.check_id.clone()).collect();
        // Stop wins over a send waiting for room: nothing of this unit may follow its
        // retirement.
        tokio::select! {
            biased;
            () = unit.stop.cancelled() => return UnitEnd::Stopped,
            sent = unit.results.send(Sampled::Results { unit: unit.key.clone(), results: batch }) => match sent {
                Ok(()) => *reported = ids,
                Err(_) => return UnitEnd::ReporterGone,
            },
        }
    }
}

/// One report in the making: the latest result per check, the retired checks, and what
/// the units it heard from reported.
#[derive(Debug, Default)]
struct Batch {
    latest: Vec<CheckResult>,
    retired: Vec<String>,
    /// Per unit: the check ids of its latest sample (sorted), or `None` once retired.
    units: BTreeMap<String, Option<Vec<String>>>,
}

impl Batch {
    /// Adds what a unit sent, in channel order: a result un-retires its check (the unit
    /// came back within the window), a retirement drops the check's pending result.
    /// `remembered` is what the spool remembers of the units (their ids are retired too).
    fn add(&mut self, sampled: Sampled, remembered: &UnitChecks) {
        match sampled {
            Sampled::Results { unit, results } => {
                let mut checks: Vec<String> = results.iter().map(|result| result.check_id.clone()).collect();
                checks.sort_unstable();
                checks.dedup();
                self.units.insert(unit, Some(checks));
                for result in results {
                    self.retired.retain(|id| *id != result.check_id);
                    match self.latest.iter_mut().find(|known| known.check_id == result.check_id) {
                        Some(known) => *known = result,
                        None => self.latest.push(result),
                    }
                }
            }
            Sampled::Retired(units) => {
                for (unit, mut ids) in units {
                    for id in remembered.get(&unit).into_iter().flatten() {
                        if !ids.contains(id) {
                            ids.push(id.clone());
                        }
                    }
                    if ids.is_empty() {
                        // Never reported as far as anyone knows: a listed check's id is its key.
                        ids.push(unit.clone());
                    }
                    self.latest.retain(|result| !ids.contains(&result.check_id));
                    for id in ids {
                        if !self.retired.contains(&id) {
                            self.retired.push(id);
                        }
                    }
                    self.units.insert(unit, None);
                }
            }
        }
    }

    /// What this batch changes in what the spool remembers of the units: only units whose
    /// set of check ids differs, and removed units it remembers.
    fn unit_changes(&self, remembered: &UnitChecks) -> Vec<UnitChange> {
        self.units
            .iter()
            .filter_map(|(unit, checks)| match checks {
                Some(checks) if remembered.get(unit) != Some(checks) => {
                    Some(UnitChange::Reported { unit: unit.clone(), checks: checks.clone() })
                }
                None if remembered.contains_key(unit) => Some(UnitChange::Retired { unit: unit.clone() }),
                _ => None,
            })
            .collect()
    }
}

/// Applies changes the spool committed to the reporter's copy.
fn remember(remembered: &mut UnitChecks, changes: Vec<UnitChange>) {
    for change in changes {
        match change {
            UnitChange::Reported { unit, checks } => {
                remembered.insert(unit, checks);
            }
            UnitChange::Retired { unit } => {
                remembered.remove(&unit);
            }
        }
    }
}

/// Batches results into reports and appends them to the spool, with the changes to what
/// it remembers of the units (`remembered`, kept equal to the committed `unit_checks`).
async fn report_loop(
    mut receiver: mpsc::Receiver<Sampled>,
    spool: SharedSpool,
    mut remembered: UnitChecks,
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
        batch.add(first, &remembered);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(more)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            batch.add(more, &remembered);
        }
        let changes = batch.unit_changes(&remembered);
        let Batch { latest, retired, .. } = batch;
        if latest.is_empty() && retired.is_empty() {
            continue;
        }
        let sampled_at_ms = now_ms();
        let (count, retired_count) = (latest.len(), retired.len());
        let appending = move |spool: &mut crate::spool::Spool| {
            let appended = spool.append_report(sampled_at_ms, latest, retired, &changes)?;
            Ok((appended, changes))
        };
        match with_spool(&spool, appending).await {
            Ok((appended, committed)) => {
                tracing::debug!(
                    seq = appended.seq,
                    reports = appended.reports,
                    results = count,
                    retired = retired_count,
                    units_changed = committed.len(),
                    "report spooled"
                );
                remember(&mut remembered, committed);
                new_report.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, results = count, retired = retired_count, "cannot spool report; results lost")
            }
        }
    }
}

/// Samples every unit once, concurrently (for `nightowl-agent check`); results in unit
/// order. A probe that panics gives its unit's key UNKNOWN, naming the panic.
pub async fn sample_once(units: &[ProbeUnit], context: &ProbeContext) -> Vec<(ProbeUnit, Vec<CheckResult>)> {
    let mut set = tokio::task::JoinSet::new();
    let mut index_of = HashMap::with_capacity(units.len());
    for (index, unit) in units.iter().enumerate() {
        let (spec, context) = (unit.spec.clone(), context.clone());
        let task = set.spawn(async move { (index, spec.build(&context).sample().await) });
        index_of.insert(task.id(), index);
    }
    let mut sampled: Vec<(usize, Vec<CheckResult>)> = Vec::with_capacity(units.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(done) => sampled.push(done),
            Err(error) => {
                let Some(&index) = index_of.get(&error.id()) else { continue };
                let unit = &units[index];
                let message = if error.is_panic() {
                    panic_message(error.into_panic().as_ref())
                } else {
                    error.to_string()
                };
                tracing::error!(unit = %unit.key, panic = %message, "probe panicked");
                sampled.push((
                    index,
                    vec![panicked_result(&unit.key, unit.spec.family(), &message, unit.interval)],
                ));
            }
        }
    }
    sampled.sort_by_key(|(index, _)| *index);
    sampled.into_iter().map(|(index, results)| (units[index].clone(), results)).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::Config;
    use crate::probes::ProbeSpec;
    use crate::spool::{Spool, SpoolLimits};

    fn result(id: &str) -> CheckResult {
        CheckResult { check_id: id.into(), kind: "service".into(), ..Default::default() }
    }

    fn sample(unit: &str, ids: &[&str]) -> Sampled {
        Sampled::Results { unit: unit.into(), results: ids.iter().map(|id| result(id)).collect() }
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn a_batch_never_reports_and_retires_one_check() {
        let remembered = UnitChecks::new();
        let mut batch = Batch::default();
        batch.add(sample("service:a", &["service:a"]), &remembered);
        batch.add(sample("service:b", &["service:b"]), &remembered);
        batch.add(Sampled::Retired(vec![("service:a".into(), strings(&["service:a"]))]), &remembered);
        let ids: Vec<&str> = batch.latest.iter().map(|result| result.check_id.as_str()).collect();
        assert_eq!((ids, batch.retired.clone()), (vec!["service:b"], vec!["service:a".to_owned()]));
        // Back within the window (removed, then added again): running, not retired.
        batch.add(sample("service:a", &["service:a"]), &remembered);
        assert!(batch.retired.is_empty());
        assert_eq!(batch.latest.len(), 2);
    }

    #[test]
    fn a_batch_changes_only_the_units_whose_checks_changed() {
        let remembered: UnitChecks = [
            ("disk".to_owned(), strings(&["disk:/"])),
            ("host".to_owned(), strings(&["host"])),
            ("service:web".to_owned(), strings(&["service:web"])),
        ]
        .into_iter()
        .collect();
        let mut batch = Batch::default();
        batch.add(sample("host", &["host"]), &remembered);
        batch.add(sample("disk", &["disk:/home", "disk:/"]), &remembered);
        batch.add(sample("service:db", &["service:db"]), &remembered);
        // Removed before its first sample in this run: the remembered ids are retired.
        batch.add(Sampled::Retired(vec![("service:web".into(), Vec::new())]), &remembered);
        // Never reported and not remembered: its key.
        batch.add(Sampled::Retired(vec![("service:new".into(), Vec::new())]), &remembered);
        assert_eq!(batch.retired, ["service:web", "service:new"]);
        assert_eq!(
            batch.unit_changes(&remembered),
            [
                UnitChange::Reported { unit: "disk".into(), checks: strings(&["disk:/", "disk:/home"]) },
                UnitChange::Reported { unit: "service:db".into(), checks: strings(&["service:db"]) },
                UnitChange::Retired { unit: "service:web".into() },
            ]
        );
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
        let mut sampler = Sampler::new(
            context,
            spool.clone(),
            UnitChecks::new(),
            Arc::new(Notify::new()),
            shutdown.clone(),
            Supervisor::new(),
        );
        let both = "[[service]]\nname = \"web\"\nport = 1\ninterval = \"100ms\"\n\
                    [[service]]\nname = \"db\"\nport = 2\ninterval = \"100ms\"\n";
        sampler.apply(&units(both));
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
        // Forgotten in the retiring report's transaction: a restart does not retire it again.
        let remembered = spool.lock().unwrap().unit_checks().unwrap();
        assert_eq!(remembered.keys().collect::<Vec<_>>(), ["service:db"]);

        // Shutdown retires nothing.
        shutdown.cancel();
        sampler.stopped().await;
        let after = reports(&spool);
        assert_eq!(after.iter().filter(|report| !report.retired_checks.is_empty()).count(), 1);
    }

    fn reported(reports: &[nightowl_proto::Report], id: &str) -> bool {
        reports.iter().any(|report| report.results.iter().any(|result| result.check_id == id))
    }

    fn retirements(reports: &[nightowl_proto::Report]) -> Vec<(u64, Vec<String>)> {
        reports
            .iter()
            .filter(|report| !report.retired_checks.is_empty())
            .map(|report| (report.seq, report.retired_checks.clone()))
            .collect()
    }

    /// Opens the spool in `dir` as the agent does at start, runs a sampler on `config`
    /// until `running` holds for the spooled reports, then shuts it down.
    async fn run_agent(
        dir: &Path,
        config: &str,
        what: &str,
        running: impl FnMut(&[nightowl_proto::Report]) -> bool,
    ) -> SharedSpool {
        let spool = Spool::open(dir, SpoolLimits::default()).unwrap();
        let remembered = spool.unit_checks().unwrap();
        let spool: SharedSpool = Arc::new(Mutex::new(spool));
        let shutdown = CancellationToken::new();
        let context = ProbeContext { state_dir: dir.to_path_buf() };
        let mut sampler = Sampler::new(
            context,
            spool.clone(),
            remembered,
            Arc::new(Notify::new()),
            shutdown.clone(),
            Supervisor::new(),
        );
        sampler.apply(&units(config));
        wait_for(&spool, what, running).await;
        shutdown.cancel();
        sampler.stopped().await;
        spool
    }

    #[tokio::test]
    async fn a_unit_removed_while_the_agent_was_stopped_is_retired_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let both = "[[service]]\nname = \"web\"\nport = 1\ninterval = \"100ms\"\n\
                    [[service]]\nname = \"db\"\nport = 2\ninterval = \"100ms\"\n";
        // db's config changes too while the agent is stopped: restarted, not removed.
        let db_only = "[[service]]\nname = \"db\"\nport = 3\ninterval = \"100ms\"\n";

        // First run: both units report; the spool remembers them. Shutdown retires nothing.
        let spool = run_agent(dir.path(), both, "both checks reported", |reports| {
            reported(reports, "service:web") && reported(reports, "service:db")
        })
        .await;
        let remembered = spool.lock().unwrap().unit_checks().unwrap();
        let both_units: UnitChecks = [
            ("service:db".to_owned(), strings(&["service:db"])),
            ("service:web".to_owned(), strings(&["service:web"])),
        ]
        .into_iter()
        .collect();
        assert_eq!(remembered, both_units);
        assert!(retirements(&reports(&spool)).is_empty(), "shutdown retires nothing");
        let first_seq = spool.lock().unwrap().stats().unwrap().next_seq;
        drop(spool);

        // Started again with db only: web's checks are retired, in the first report.
        let spool = run_agent(dir.path(), db_only, "web retired and db reporting after it", |reports| {
            let at = reports.iter().position(|report| !report.retired_checks.is_empty());
            at.is_some_and(|at| reported(&reports[at..], "service:db"))
        })
        .await;
        let all = reports(&spool);
        assert_eq!(retirements(&all), [(first_seq, strings(&["service:web"]))], "in the first report, once");
        let restarted = all.iter().position(|report| report.seq == first_seq).unwrap();
        assert!(!reported(&all[restarted..], "service:web"), "nothing of web after its retirement");
        let db_unit: UnitChecks = [("service:db".to_owned(), strings(&["service:db"]))].into_iter().collect();
        assert_eq!(spool.lock().unwrap().unit_checks().unwrap(), db_unit);
        let second_seq = spool.lock().unwrap().stats().unwrap().next_seq;
        drop(spool);

        // Same config again: nothing more is retired.
        let spool = run_agent(dir.path(), db_only, "db reporting after the second restart", |reports| {
            reports.iter().any(|report| {
                report.seq >= second_seq + 2 && report.results.iter().any(|r| r.check_id == "service:db")
            })
        })
        .await;
        assert_eq!(retirements(&reports(&spool)), [(first_seq, strings(&["service:web"]))]);
        assert_eq!(spool.lock().unwrap().unit_checks().unwrap(), db_unit);
    }

    #[test]
    fn the_grid_is_the_first_point_strictly_after() {
        let anchor = tokio::time::Instant::now();
        let grid = Grid { anchor, offset: Duration::from_millis(3_723) };
        let at = |ms: u64| anchor + Duration::from_millis(ms);
        let ten = Duration::from_secs(10);
        // Phase 3.723 s for 10 s; 723 ms for 1 s (and for 3 s: 3,723 mod 3,000).
        assert_eq!(grid.next_after(ten, anchor), at(3_723));
        assert_eq!(grid.next_after(ten, at(3_722)), at(3_723));
        assert_eq!(grid.next_after(ten, at(3_723)), at(13_723), "strictly after");
        assert_eq!(grid.next_after(ten, at(58_000)), at(63_723), "missed points are skipped");
        assert_eq!(grid.next_after(Duration::from_secs(1), at(5_000)), at(5_723));
        assert_eq!(grid.next_after(Duration::from_secs(3), anchor), at(723));
        // Interval 20 s lands on every other point of 10 s: 13.723 or 23.723 … here 23.723.
        let twenty = grid.next_after(Duration::from_secs(20), at(4_000));
        assert_eq!(twenty, at(23_723));
        assert_eq!(grid.next_after(ten, at(13_723)), twenty);
        // An offset of a whole number of periods is phase 0.
        let whole = Grid { anchor, offset: Duration::from_secs(3_590) };
        assert_eq!(whole.next_after(ten, at(1)), at(10_000));
    }

    /// What units sent the reporter until `until`, with when it arrived (paused time:
    /// exact instants).
    async fn arrivals(
        mut receiver: mpsc::Receiver<Sampled>,
        until: tokio::time::Instant,
    ) -> Vec<(String, tokio::time::Instant)> {
        let mut seen = Vec::new();
        while let Ok(sampled) = tokio::time::timeout_at(until, receiver.recv()).await {
            match sampled.unwrap() {
                Sampled::Results { unit, .. } => seen.push((unit, tokio::time::Instant::now())),
                Sampled::Retired(_) => panic!("nothing is retired here"),
            }
        }
        seen
    }

    /// Units sample on the agent's grid: those of one interval together, every cycle, so
    /// that a cycle is one report; a unit of twice the interval on every other point. With
    /// a jitter per unit and per cycle (before), their phases drifted apart for good.
    #[tokio::test(start_paused = true)]
    async fn units_of_one_agent_sample_together_on_its_grid() {
        let (results, receiver) = mpsc::channel(64);
        let context = ProbeContext { state_dir: std::env::temp_dir() };
        let grid = Grid::random();
        let stop = CancellationToken::new();
        let interval = Duration::from_secs(10);
        for (key, every) in [("a", interval), ("b", interval), ("c", interval), ("slow", interval * 2)] {
            let context = context.clone();
            let build = move || ProbeSpec::Host(Default::default()).build(&context);
            tokio::spawn(run_unit(unit_run(key, every, grid, results.clone(), stop.clone()), build));
        }
        let seen = arrivals(receiver, grid.anchor + Duration::from_secs(300)).await;
        stop.cancel();
        let of = |unit: &str| -> Vec<tokio::time::Instant> {
            seen.iter().filter(|(key, _)| key == unit).map(|(_, at)| *at).collect()
        };
        let (a, b, c, slow) = (of("a"), of("b"), of("c"), of("slow"));
        for unit in [&a, &b, &c, &slow] {
            // The first sample at once, within half a second; the next not before half an
            // interval (a unit joins the grid at the first point after that).
            assert!(unit[0] <= grid.anchor + Duration::from_millis(500), "first sample within 0.5 s");
            assert!(unit[1] - unit[0] >= interval / 2, "no second sample right after the first: {unit:?}");
        }
        // Once all have joined (by 0.5 + 5 + 10 s), every point of the grid, the same for
        // all three, not drifting. tokio's timers have millisecond resolution: a point
        // fires within 1 ms after it.
        let joined = |unit: &[tokio::time::Instant]| -> Vec<tokio::time::Instant> {
            unit.iter().copied().filter(|at| *at > grid.anchor + Duration::from_secs(16)).collect()
        };
        let points: Vec<tokio::time::Instant> = std::iter::successors(
            Some(grid.next_after(interval, grid.anchor + Duration::from_secs(16))),
            |at| Some(*at + interval),
        )
        .take_while(|at| *at < grid.anchor + Duration::from_secs(300))
        .collect();
        let a = joined(&a);
        assert_eq!(a.len(), points.len(), "a: {a:?} points: {points:?}");
        let on = |at: &tokio::time::Instant, point: &tokio::time::Instant| {
            *at >= *point && *at - *point < Duration::from_millis(1)
        };
        assert!(a.iter().zip(&points).all(|(at, point)| on(at, point)), "a on the grid: {a:?} {points:?}");
        assert_eq!((joined(&b), joined(&c)), (a.clone(), a.clone()), "b and c with a");
        // The 20 s unit: on every other point of the 10 s grid.
        let slow = joined(&slow);
        assert!(slow.len() >= 13, "20 s over 284 s: {slow:?}");
        assert!(slow.iter().all(|at| a.contains(at)), "20 s on the 10 s grid: {slow:?}");
        assert!(slow.windows(2).all(|pair| pair[1] - pair[0] == interval * 2));
    }

    /// Every unit is a task whose future lives as long as the unit; the probes' own
    /// futures are boxed per sample (`AnyProbe::sample`), or each unit would be as large
    /// as the largest probe's future (figures in docs/performance.md).
    #[test]
    fn a_unit_task_does_not_hold_the_largest_probe_future() {
        let (results, _receiver) = mpsc::channel(1);
        let context = crate::probes::ProbeContext { state_dir: std::env::temp_dir() };
        let build = move || ProbeSpec::Host(Default::default()).build(&context);
        let run = unit_run("host", Duration::from_secs(1), Grid::random(), results, CancellationToken::new());
        let unit = run_unit(run, build);
        let size = std::mem::size_of_val(&unit);
        assert!(size <= 4096, "a unit task's future is {size} bytes");
    }

    fn unit_run(
        key: &str,
        interval: Duration,
        grid: Grid,
        results: mpsc::Sender<Sampled>,
        stop: CancellationToken,
    ) -> UnitRun {
        UnitRun {
            key: key.into(),
            kind: "service",
            interval,
            grid,
            results,
            stop,
            retire: Arc::default(),
            supervisor: Supervisor::new(),
            reported: Vec::new(),
        }
    }

    /// A probe that panics on the samples numbered in `panics_on` (counted across the
    /// probes built, as the unit builds a new one after each panic).
    struct Flaky {
        samples: Arc<AtomicUsize>,
        panics_on: &'static [usize],
    }

    impl Probe for Flaky {
        async fn sample(&mut self) -> Vec<CheckResult> {
            let sample = self.samples.fetch_add(1, Ordering::SeqCst);
            if self.panics_on.contains(&sample) {
                panic!("sample {sample} went wrong");
            }
            vec![CheckResult { status: ProbeStatus::Ok as i32, ..result("service:flaky") }]
        }
    }

    /// A probe that panics does not end its unit (before, the task died with it: the unit
    /// stayed "running", nothing said why its checks fell silent, and a reload never
    /// restarted it). Its checks are reported UNKNOWN naming the panic, and the probe is
    /// built anew and samples again after the backoff (1 s, then 2 s).
    #[tokio::test(start_paused = true)]
    async fn a_probe_that_panics_is_reported_unknown_and_restarted() {
        let (results, mut receiver) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let run = unit_run("service:flaky", Duration::from_secs(10), Grid::random(), results, stop.clone());
        let supervisor = run.supervisor.clone();
        let (samples, builds) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (counted, built) = (samples.clone(), builds.clone());
        let build = move || {
            built.fetch_add(1, Ordering::SeqCst);
            Flaky { samples: counted.clone(), panics_on: &[0, 2] }
        };
        tokio::spawn(run_unit(run, build));
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let sampled = tokio::time::timeout(Duration::from_secs(60), receiver.recv()).await;
            let Some(Sampled::Results { unit, results }) = sampled.expect("the unit samples again") else {
                panic!("results expected");
            };
            assert_eq!(unit, "service:flaky");
            let [result] = &results[..] else { panic!("one result per sample: {results:?}") };
            seen.push((result.status(), result.message.clone(), tokio::time::Instant::now()));
        }
        let statuses: Vec<(ProbeStatus, &str)> =
            seen.iter().map(|(status, message, _)| (*status, message.as_str())).collect();
        assert_eq!(
            statuses,
            [
                // Before any sample: the unit's key (a listed check's id).
                (ProbeStatus::Unknown, "probe panicked: sample 0 went wrong"),
                (ProbeStatus::Ok, ""),
                (ProbeStatus::Unknown, "probe panicked: sample 2 went wrong"),
                (ProbeStatus::Ok, ""),
            ]
        );
        assert!(seen[1].2 - seen[0].2 >= Duration::from_secs(1), "restarted after the backoff: {seen:?}");
        assert!(seen[3].2 - seen[2].2 >= Duration::from_secs(2), "the backoff doubles: {seen:?}");
        assert_eq!((builds.load(Ordering::SeqCst), supervisor.caught_panics()), (3, 2));
        stop.cancel();
    }
}
