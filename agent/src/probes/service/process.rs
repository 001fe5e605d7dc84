//! `process = …`: matching processes in the process table, and counting restarts.
//!
//! A sample scans the whole table once (sysinfo, in a blocking thread, reading only the
//! name and status, plus the command line when matching on it) and hands the matching
//! pids to the exit watch ([`super::exits`]), which sees them go away between samples.
//! Processes are identified by (pid, start time) so a recycled pid is a new process.
//!
//! Name scans are shared: every `process = …` check of an agent samples at the same
//! moment of its interval, and reading `/proc` for every process was most of the agent's
//! CPU per cycle (docs/performance.md), so a name scan younger than
//! [`SHARED_SCAN_MAX_AGE`] is reused. A sample that follows an observed exit always scans
//! afresh (the shared one may predate the exit) and shares that scan in turn.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nightowl_proto::CheckResult;
use regex_lite::Regex;
use sysinfo::{Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

use super::exits::ExitWatch;
use super::{KIND, ProcessMatch};
use crate::probes::{ok_result, unknown_result};

/// Linux keeps the first 15 bytes of a process name (`TASK_COMM_LEN` − 1).
const COMM_LEN: usize = 15;
/// Caps what a configured regex may compile to.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A `process` name: non-empty, no '/', no NUL.
pub(super) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty; give the process name, e.g. \"postgres\"".into());
    }
    if name.contains('/') || name.contains('\0') {
        return Err(format!(
            "{name:?} is not a process name; to match a path use match = \"cmdline\" with a regex"
        ));
    }
    Ok(())
}

/// Compiles a `match = "cmdline"` pattern.
pub(super) fn compile_cmdline(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return Err("empty regex; it would match every process".into());
    }
    regex_lite::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| format!("invalid regex {pattern:?}: {error}"))
}

/// What a process must look like to count.
#[derive(Debug)]
enum Matcher {
    Name(String),
    Cmdline(Regex),
}

impl Matcher {
    fn describe(&self) -> String {
        match self {
            Matcher::Name(name) => format!("named {name:?}"),
            Matcher::Cmdline(regex) => format!("with a command line matching {:?}", regex.as_str()),
        }
    }

    /// What the scan must read for each process.
    fn refresh_kind(&self) -> ProcessRefreshKind {
        let minimal = ProcessRefreshKind::nothing().without_tasks();
        match self {
            Matcher::Name(_) => minimal,
            Matcher::Cmdline(_) => minimal.with_cmd(UpdateKind::Always),
        }
    }

    fn matches(&self, process: &Process) -> bool {
        match self {
            Matcher::Name(wanted) => {
                name_is(process.name(), wanted)
                    || (wanted.len() > COMM_LEN
                        && (process
                            .exe()
                            .and_then(|exe| exe.file_name())
                            .is_some_and(|file| name_is(file, wanted))
                            || process
                                .cmd()
                                .first()
                                .and_then(|argv0| std::path::Path::new(argv0).file_name())
                                .is_some_and(|file| name_is(file, wanted))))
            }
            Matcher::Cmdline(regex) => {
                let words: Vec<_> = process.cmd().iter().map(|word| word.to_string_lossy()).collect();
                !words.is_empty() && regex.is_match(&words.join(" "))
            }
        }
    }
}

/// True when a process whose name (as the scan read it) is the truncated form of a long
/// wanted name may match on its full name: its exe and argv must be read to decide.
fn needs_details(wanted: &str, name: &OsStr) -> bool {
    wanted.len() > COMM_LEN && name.as_encoded_bytes() == &wanted.as_bytes()[..COMM_LEN]
}

/// `name` equals `wanted`; on Windows case-insensitively and with or without ".exe".
fn name_is(name: &OsStr, wanted: &str) -> bool {
    if cfg!(windows) {
        let name = name.to_string_lossy().to_lowercase();
        let wanted = wanted.to_lowercase();
        name == wanted || name.strip_suffix(".exe") == Some(wanted.as_str())
    } else {
        name == wanted
    }
}

/// One matching process: (pid, start time in unix seconds).
type Instance = (u32, u64);

/// How old a shared name scan may be and still be used by another check.
pub(super) const SHARED_SCAN_MAX_AGE: Duration = Duration::from_millis(500);

/// What a name match needs of one process, copied out of sysinfo's table during the
/// scan: the shared scan keeps these few dozen bytes per process between samples, not
/// sysinfo's whole table, which held a good part of the agent's heap for good
/// (figures in docs/performance.md).
#[derive(Debug)]
struct Named {
    pid: u32,
    start: u64,
    name: Box<OsStr>,
}

/// The latest name-only scan of the process table and when it was taken.
static SHARED_NAME_SCAN: Mutex<Option<(Instant, Arc<[Named]>)>> = Mutex::new(None);

/// Reads the whole process table with `kind`.
fn read_table(kind: ProcessRefreshKind) -> Result<System, String> {
    let mut system = System::new().map_err(|error| format!("cannot read the process table: {error}"))?;
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
    Ok(system)
}

/// A process that can count: a process (not a thread), alive, not the agent itself.
fn usable(process: &Process) -> bool {
    process.thread_kind().is_none()
        && !matches!(process.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
        && process.pid().as_u32() != std::process::id()
}

/// A name-only scan: the shared one if it is recent and `fresh` is not asked for,
/// else a new one that becomes the shared one. Concurrent callers wait for one scan.
fn shared_name_table(fresh: bool) -> Result<Arc<[Named]>, String> {
    let mut shared = SHARED_NAME_SCAN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !fresh
        && let Some((taken, table)) = shared.as_ref()
        && taken.elapsed() <= SHARED_SCAN_MAX_AGE
    {
        return Ok(Arc::clone(table));
    }
    let system = read_table(ProcessRefreshKind::nothing().without_tasks())?;
    let table: Arc<[Named]> = system
        .processes()
        .values()
        .filter(|process| usable(process))
        .map(|process| Named {
            pid: process.pid().as_u32(),
            start: process.start_time(),
            name: process.name().into(),
        })
        .collect();
    drop(system);
    *shared = Some((Instant::now(), Arc::clone(&table)));
    Ok(table)
}

/// Scans the process table (blocking: run it off the runtime). `fresh`: do not reuse a
/// shared scan (this sample follows an exit the shared scan may predate).
fn scan(matcher: &Matcher, fresh: bool) -> Result<Vec<Instance>, String> {
    let mut found: Vec<Instance> = match matcher {
        Matcher::Name(wanted) => {
            let table = shared_name_table(fresh)?;
            // Long names: read exe and argv of the few processes whose truncated name fits.
            let candidates: Vec<sysinfo::Pid> = table
                .iter()
                .filter(|process| needs_details(wanted, &process.name))
                .map(|process| sysinfo::Pid::from_u32(process.pid))
                .collect();
            let mut details: Option<System> = None;
            if !candidates.is_empty() {
                let mut detailed =
                    System::new().map_err(|error| format!("cannot read the process table: {error}"))?;
                detailed.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&candidates),
                    true,
                    ProcessRefreshKind::nothing()
                        .without_tasks()
                        .with_exe(UpdateKind::Always)
                        .with_cmd(UpdateKind::Always),
                );
                details = Some(detailed);
            }
            table
                .iter()
                .filter(|process| {
                    let pid = sysinfo::Pid::from_u32(process.pid);
                    match details.as_ref() {
                        // A candidate that exited meanwhile is gone from `details`: no match.
                        Some(details) if candidates.contains(&pid) => {
                            details.process(pid).is_some_and(|detailed| matcher.matches(detailed))
                        }
                        _ => name_is(&process.name, wanted),
                    }
                })
                .map(|process| (process.pid, process.start))
                .collect()
        }
        Matcher::Cmdline(_) => read_table(matcher.refresh_kind())?
            .processes()
            .values()
            .filter(|process| usable(process) && matcher.matches(process))
            .map(|process| (process.pid().as_u32(), process.start_time()))
            .collect(),
    };
    found.sort_unstable();
    Ok(found)
}

/// Counts restarts: a matching process went away and a new one appeared.
#[derive(Debug, Default)]
struct Restarts {
    /// The matches of the previous sample; None before the first.
    last: Option<BTreeSet<Instance>>,
    /// A match went away since the last counted restart.
    lost: bool,
    count: u64,
}

impl Restarts {
    fn observe(&mut self, now: &BTreeSet<Instance>) {
        if let Some(last) = &self.last {
            if last.iter().any(|instance| !now.contains(instance)) {
                self.lost = true;
            }
            if self.lost && now.iter().any(|instance| !last.contains(instance)) {
                self.count += 1;
                self.lost = false;
            }
        }
        self.last = Some(now.clone());
    }
}

pub(super) struct ProcessWatch {
    matcher: Arc<Matcher>,
    restarts: Restarts,
    exits: ExitWatch,
    /// An exit was observed since the last sample: the next one scans afresh.
    exited: bool,
}

impl ProcessWatch {
    pub(super) fn new(pattern: &str, how: ProcessMatch) -> Result<Self, String> {
        let matcher = match how {
            ProcessMatch::Name => {
                validate_name(pattern)?;
                Matcher::Name(pattern.to_owned())
            }
            ProcessMatch::Cmdline => Matcher::Cmdline(compile_cmdline(pattern)?),
        };
        Ok(Self {
            matcher: Arc::new(matcher),
            restarts: Restarts::default(),
            exits: ExitWatch::new(),
            exited: false,
        })
    }

    /// Watches exits by polling even where pidfds work (to test that path).
    #[cfg(all(test, target_os = "linux"))]
    pub(super) fn polling_only(mut self) -> Self {
        self.exits = ExitWatch::polling_only();
        self
    }

    pub(super) async fn sample(&mut self, check_id: String) -> CheckResult {
        let matcher = Arc::clone(&self.matcher);
        let fresh = std::mem::take(&mut self.exited);
        let scanned = crate::blocking::spawn("process scan", move || scan(&matcher, fresh)).await;
        let found = match scanned {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => return unknown_result(check_id, KIND, why),
            Err(error) => return unknown_result(check_id, KIND, format!("process scan failed: {error}")),
        };
        let instances: BTreeSet<Instance> = found.iter().copied().collect();
        self.restarts.observe(&instances);
        self.exits.watch(&found);

        let running = if found.is_empty() { 0.0 } else { 1.0 };
        let mut metrics = BTreeMap::from([
            ("up", running),
            ("running", running),
            ("count", found.len() as f64),
            ("restarts", self.restarts.count as f64),
        ]);
        let message = match found.first() {
            Some((lowest_pid, _)) => {
                metrics.insert("pid", f64::from(*lowest_pid));
                if let Some(oldest) = found.iter().map(|(_, started)| *started).min() {
                    metrics.insert("started_at_s", oldest as f64);
                }
                format!(
                    "{} process{} {} (lowest pid {lowest_pid})",
                    found.len(),
                    if found.len() == 1 { "" } else { "es" },
                    self.matcher.describe()
                )
            }
            None => format!("no process {}", self.matcher.describe()),
        };
        let metrics = metrics.into_iter().map(|(key, value)| (key.to_owned(), value));
        ok_result(check_id, KIND, metrics, message)
    }

    /// Resolves when a process seen by the last sample has exited.
    pub(super) async fn changed(&mut self) {
        self.exits.exited().await;
        self.exited = true;
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// The shared scan must never hide an exit: a sample after an exit scans afresh,
    /// and the scan it shares from then on no longer lists the process.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fresh_scan_after_an_exit_is_what_later_samples_share() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("nol-shr-{}", std::process::id() % 100_000);
        let link = dir.path().join(&name);
        std::os::unix::fs::symlink("/usr/bin/sleep", &link).unwrap();
        let mut child = std::process::Command::new(&link).arg("300").spawn().unwrap();
        let matcher = Matcher::Name(name.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while scan(&matcher, true).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "{name} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Shared within its age: a second check's sample reuses it and sees the process.
        assert_eq!(scan(&matcher, false).unwrap().len(), 1);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(scan(&matcher, true).unwrap().is_empty(), "a fresh scan lists an exited process");
        assert!(scan(&matcher, false).unwrap().is_empty(), "the shared scan predates the exit");
    }

    #[test]
    fn restarts_count_a_loss_followed_by_a_new_process() {
        let mut restarts = Restarts::default();
        let set = |items: &[Instance]| items.iter().copied().collect::<BTreeSet<_>>();
        restarts.observe(&set(&[(10, 1)]));
        assert_eq!(restarts.count, 0, "the first sample is no restart");
        restarts.observe(&set(&[(10, 1), (11, 2)]));
        assert_eq!(restarts.count, 0, "a new worker is no restart");
        restarts.observe(&set(&[]));
        restarts.observe(&set(&[(12, 3)]));
        assert_eq!(restarts.count, 1, "gone, then back");
        restarts.observe(&set(&[(13, 4)]));
        assert_eq!(restarts.count, 2, "replaced between two samples");
        restarts.observe(&set(&[(13, 9)]));
        assert_eq!(restarts.count, 3, "a recycled pid is a new process");
        restarts.observe(&set(&[(13, 9)]));
        assert_eq!(restarts.count, 3);
    }
}
