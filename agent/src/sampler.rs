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
mod tests;
