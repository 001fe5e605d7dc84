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

async fn wait_for(spool: &SharedSpool, what: &str, mut done: impl FnMut(&[nightowl_proto::Report]) -> bool) {
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
    let spool: SharedSpool = Arc::new(Mutex::new(Spool::open(dir.path(), SpoolLimits::default()).unwrap()));
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
    wait_for(&spool, "web retired", |reports| reports.iter().any(|report| !report.retired_checks.is_empty()))
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
    let points: Vec<tokio::time::Instant> =
        std::iter::successors(Some(grid.next_after(interval, grid.anchor + Duration::from_secs(16))), |at| {
            Some(*at + interval)
        })
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
