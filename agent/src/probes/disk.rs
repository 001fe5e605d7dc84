//! Disk probe: capacity and inodes of each watched mount.
//!
//! One result per mount, check id `disk:<mount point>`, kind `disk`. Metrics:
//! `total_bytes`, `used_bytes`, `free_bytes` (available to unprivileged users),
//! `used_pct` (like `df`: used / (used + available) × 100, so the root-reserved blocks
//! count as neither), and — when the filesystem reports inodes — `inodes_used_pct` and
//! `inodes_free`.
//!
//! Linux: mounts come from `/proc/self/mountinfo` (the agent's mount namespace), sizes
//! from `statvfs(2)`. Other systems: sysinfo's disk list (no inode metrics).
//!
//! Which mounts (see [`DiskConfig`]): by default every real mount — pseudo filesystems,
//! tmpfs under `/run` and `/dev`, anything under `/proc` and `/sys`, container-runtime
//! internals (e.g. overlays under `/var/lib/docker/`), read-only images (squashfs) and
//! zero-sized filesystems are skipped; one result per mount point (the last mount on a
//! path, the one that is visible) and one per filesystem subtree (a bind mount of the
//! same device and root is reported once). With `include`, exactly the named mount points,
//! whatever their type; a named path that is not mounted is UNKNOWN — the "backup disk
//! not plugged in" case.
//!
//! Fill rate and time to full: [`DiskProbe`] keeps, per mount, the recent (time,
//! `used_bytes`) points of the last `window` (default 10 minutes, at most
//! [`MAX_POINTS`] points; when more arrive, every other point of the older half is
//! dropped, so the history still spans the window but favours recent samples) and adds
//! - `fill_rate_bps`: the least-squares slope of `used_bytes` over the window, in bytes
//!   per second, on the monotonic clock (negative when the disk empties), once the
//!   history holds at least 3 points spanning at least 2 s;
//! - `time_to_full_s`: `free_bytes / fill_rate_bps`, only when the rate is positive.
//!
//! A mount that is not reported OK (unmounted, hung) loses its history. When
//! `used_bytes` drops by more than 1 % of the filesystem's size between two samples
//! (a big file deleted, logs rotated), the history restarts from the new point: the
//! old fill no longer predicts anything, and a fresh fill is forecast after three
//! samples instead of being averaged against the drop for a whole window.
//!
//! `statvfs` blocks forever on a dead NFS/CIFS server. Each call runs on its own thread
//! and all of a sample's calls run concurrently against one deadline (5 s); a call that
//! misses it is reported UNKNOWN and left behind. A plain thread rather than tokio's
//! blocking pool, because a runtime waits for its blocking tasks at shutdown: a hung
//! call would hang the agent's exit. A mount whose previous call is still hung gets no
//! new thread until that call returns, so a dead server costs one stuck thread, not one
//! per sample.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ok_result, unknown_result};
use crate::duration::HumanDuration;

const KIND: &str = "disk";

/// How long one sample waits for the filesystems to answer.
const STAT_TIMEOUT: Duration = Duration::from_secs(5);

/// statvfs needs next to no stack; keep each (possibly stuck) thread small.
const STAT_THREAD_STACK: usize = 128 * 1024;

/// Default `window` of the fill-rate history.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Bounds of `window`.
const MIN_WINDOW: Duration = Duration::from_secs(10);
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most points kept per mount.
pub const MAX_POINTS: usize = 120;

/// A fill rate needs at least this many points …
const MIN_POINTS: usize = 3;
/// … spanning at least this long.
const MIN_SPAN: Duration = Duration::from_secs(2);

/// A drop of `used_bytes` by more than this fraction of the size restarts the history.
const RESET_DROP_FRACTION: f64 = 0.01;

/// Disk probe settings.
///
/// ```toml
/// [disk]
/// include = ["/", "/mnt/backup"]   # optional: only these mount points
/// exclude = ["/boot/efi"]          # optional
/// window = "10m"                   # optional: fill-rate history
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Mount points to watch. Empty (default): every real mount — pseudo filesystems
    /// (proc, sysfs, cgroup, devtmpfs, …), tmpfs under /run and /dev, container-runtime
    /// internals, squashfs images and zero-sized filesystems are skipped. When set, exactly
    /// these mount points are watched, in this order, whatever their filesystem type; a
    /// listed path that is not currently a mount point is reported UNKNOWN (e.g. a backup
    /// disk that is not plugged in). Absolute paths, as `mount` shows them.
    #[serde(default)]
    pub include: Vec<PathBuf>,
    /// Mount points never to watch, in both modes. Absolute paths, exact match (a
    /// mount below an excluded path is still watched).
    #[serde(default)]
    pub exclude: Vec<PathBuf>,
    /// How far back `fill_rate_bps` and `time_to_full_s` look; default 10m, between 10s
    /// and 7 days. It should hold several samples (3 × interval at the very least): a
    /// longer window forecasts more steadily, a shorter one reacts faster.
    #[serde(default)]
    pub window: Option<HumanDuration>,
    /// How often to sample; default: `[agent] interval`.
    #[serde(default)]
    pub interval: Option<HumanDuration>,
}

impl DiskConfig {
    /// Checks the paths (absolute, no `..`, no duplicates) and the window. The error
    /// names the entry, e.g. `include[2]: "data" is not an absolute path; …`.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(HumanDuration(window)) = self.window
            && !(MIN_WINDOW..=MAX_WINDOW).contains(&window)
        {
            return Err(format!(
                "window: {} is out of range; use between 10s and 7days (e.g. \"10m\")",
                humantime::format_duration(window)
            ));
        }
        for (key, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            let mut seen: HashMap<PathBuf, usize> = HashMap::new();
            for (i, path) in list.iter().enumerate() {
                if path.as_os_str().is_empty() {
                    return Err(format!(
                        "{key}[{i}]: empty path; write the mount point in full, e.g. \"/mnt/backup\""
                    ));
                }
                if !path.is_absolute() {
                    return Err(format!(
                        "{key}[{i}]: {path:?} is not an absolute path; write the mount point \
                         in full, e.g. \"/mnt/backup\""
                    ));
                }
                if path.components().any(|c| c == Component::ParentDir) {
                    return Err(format!(
                        "{key}[{i}]: {path:?} contains \"..\"; write the mount point as `mount` \
                         shows it"
                    ));
                }
                if let Some(first) = seen.insert(normalize(path), i) {
                    return Err(format!(
                        "{key}[{i}]: {path:?} is already listed as {key}[{first}]; remove one"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The fill-rate window.
    pub fn window(&self) -> Duration {
        self.window.map_or(DEFAULT_WINDOW, |HumanDuration(window)| window)
    }
}

/// The disk probe: samples the configured mounts on every call and forecasts their
/// filling from the recent samples.
pub struct DiskProbe {
    config: DiskConfig,
    /// By check id; only mounts reported OK in the last sample.
    histories: HashMap<String, FillHistory>,
}

impl DiskProbe {
    pub fn new(config: &DiskConfig) -> Self {
        Self { config: config.clone(), histories: HashMap::new() }
    }

    /// Records the OK results' usage taken at `at` and adds `fill_rate_bps` and
    /// `time_to_full_s` where the history allows; forgets mounts not reported OK.
    fn add_forecasts(&mut self, results: &mut [CheckResult], at: Instant) {
        let window = self.config.window();
        let mut reported: HashSet<&str> = HashSet::with_capacity(results.len());
        for result in results.iter_mut().filter(|result| result.status == ProbeStatus::Ok as i32) {
            let metric = |name: &str| result.metrics.get(name).copied();
            let (Some(used), Some(free), Some(total)) =
                (metric("used_bytes"), metric("free_bytes"), metric("total_bytes"))
            else {
                continue;
            };
            let history = self.histories.entry(result.check_id.clone()).or_default();
            history.record(at, used, total, window);
            if let Some(rate) = history.rate() {
                result.metrics.insert("fill_rate_bps".to_owned(), rate);
                if rate > 0.0 {
                    result.metrics.insert("time_to_full_s".to_owned(), free / rate);
                }
            }
            reported.insert(&result.check_id);
        }
        self.histories.retain(|check_id, _| reported.contains(check_id.as_str()));
    }
}

impl super::Probe for DiskProbe {
    async fn sample(&mut self) -> Vec<CheckResult> {
        // The statvfs calls start right away; a hung one does not delay the others.
        let at = Instant::now();
        let mut results = sample(&self.config).await;
        self.add_forecasts(&mut results, at);
        results
    }
}

/// Recent `(time, used bytes)` points of one mount, oldest first.
#[derive(Debug, Default)]
struct FillHistory {
    points: VecDeque<(Instant, f64)>,
}

impl FillHistory {
    /// Adds a point; drops what is older than `window`, and thins the older half when
    /// over [`MAX_POINTS`]. Restarts on a large drop of `used` (see the module doc).
    fn record(&mut self, at: Instant, used: f64, total: f64, window: Duration) {
        if let Some(&(last_at, last_used)) = self.points.back()
            && (last_used - used > total * RESET_DROP_FRACTION || at < last_at)
        {
            self.points.clear();
        }
        self.points.push_back((at, used));
        while self.points.front().is_some_and(|&(first_at, _)| at.duration_since(first_at) > window) {
            self.points.pop_front();
        }
        if self.points.len() > MAX_POINTS {
            let older_half = self.points.len() / 2;
            let mut index = 0;
            // Keeps the oldest point (the window's reach) and every other one after it.
            self.points.retain(|_| {
                let keep = index >= older_half || index % 2 == 0;
                index += 1;
                keep
            });
        }
    }

    /// Bytes per second: the least-squares slope of used bytes over time, once there are
    /// at least [`MIN_POINTS`] points spanning [`MIN_SPAN`].
    fn rate(&self) -> Option<f64> {
        let &(first_at, first_used) = self.points.front()?;
        let &(last_at, _) = self.points.back()?;
        if self.points.len() < MIN_POINTS || last_at.duration_since(first_at) < MIN_SPAN {
            return None;
        }
        // Relative to the first point, so the sums stay small and precise.
        let xy: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|&(at, used)| (at.duration_since(first_at).as_secs_f64(), used - first_used))
            .collect();
        let count = xy.len() as f64;
        let mean_x = xy.iter().map(|&(x, _)| x).sum::<f64>() / count;
        let mean_y = xy.iter().map(|&(_, y)| y).sum::<f64>() / count;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for &(x, y) in &xy {
            covariance += (x - mean_x) * (y - mean_y);
            variance += (x - mean_x) * (x - mean_x);
        }
        let slope = covariance / variance;
        (variance > 0.0 && slope.is_finite()).then_some(slope)
    }
}

/// Samples the configured mounts once: one result per mount, in mount-table order (or
/// `include` order). Never blocks longer than about 5 s, whatever the filesystems do.
#[cfg(target_os = "linux")]
pub async fn sample(config: &DiskConfig) -> Vec<CheckResult> {
    match linux::read_mounts() {
        Ok(mounts) => sample_mounts(config, &mounts, linux::statvfs_usage, STAT_TIMEOUT).await,
        Err(e) => all_unknown(config, format!("cannot read {}: {e}", linux::MOUNTINFO)),
    }
}

/// Samples the configured mounts once: one result per mount, in mount-table order (or
/// `include` order). Never blocks longer than about 5 s, whatever the filesystems do.
#[cfg(not(target_os = "linux"))]
pub async fn sample(config: &DiskConfig) -> Vec<CheckResult> {
    sample_sysinfo(config, STAT_TIMEOUT).await
}

/// One entry of the mount table.
#[derive(Debug, Clone, PartialEq)]
struct Mount {
    mount_point: PathBuf,
    fs_type: String,
    /// `major:minor` of the filesystem; empty when unknown (then no bind-mount dedup).
    dev: String,
    /// The mount's root within its filesystem: `/` unless a subtree was bind-mounted.
    root: PathBuf,
}

/// Capacity of one filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Usage {
    total: u64,
    /// total − free (free including the root-reserved blocks).
    used: u64,
    /// Available to unprivileged users.
    avail: u64,
    /// (inodes total, inodes free), when the filesystem has inodes.
    inodes: Option<(u64, u64)>,
}

impl Usage {
    /// From `statvfs` fields (block counts in units of `frsize`).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn from_blocks(frsize: u64, blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64) -> Self {
        let total = blocks.saturating_mul(frsize);
        let free = bfree.min(blocks).saturating_mul(frsize);
        Usage {
            total,
            used: total - free,
            avail: bavail.min(bfree).saturating_mul(frsize),
            inodes: (files > 0).then_some((files, ffree.min(files))),
        }
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let mut m = HashMap::with_capacity(6);
        m.insert("total_bytes".to_owned(), self.total as f64);
        m.insert("used_bytes".to_owned(), self.used as f64);
        m.insert("free_bytes".to_owned(), self.avail as f64);
        let usable = self.used as f64 + self.avail as f64;
        let used_pct = if usable > 0.0 { self.used as f64 / usable * 100.0 } else { 0.0 };
        m.insert("used_pct".to_owned(), used_pct);
        if let Some((files, ffree)) = self.inodes {
            let used = (files - ffree) as f64;
            m.insert("inodes_used_pct".to_owned(), used / files as f64 * 100.0);
            m.insert("inodes_free".to_owned(), ffree as f64);
        }
        m
    }
}

/// A mount point to report on.
#[derive(Debug, PartialEq)]
struct Target {
    /// The subject of the check id.
    path: PathBuf,
    /// Index into the mount table; `None`: named in `include` but not mounted.
    mount: Option<usize>,
    /// Named in `include` (reported even when zero-sized).
    named: bool,
}

/// Filesystem types that never hold user data (or, like squashfs, are read-only images
/// that are always 100% full).
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "binder",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fdescfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.snapfuse",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfsd",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Mounts strictly below these belong to container runtimes (container root overlays,
/// per-pod volumes): they come and go with containers. The directory itself (often a
/// dedicated disk) is kept.
const CONTAINER_AREAS: &[&str] = &[
    "/var/lib/docker",
    "/var/lib/containers",
    "/var/lib/kubelet",
    "/run/containerd",
    "/run/docker",
    "/run/k3s",
];

fn is_pseudo(m: &Mount) -> bool {
    let p = m.mount_point.as_path();
    let under = |dirs: &[&str]| dirs.iter().any(|d| p.starts_with(d));
    PSEUDO_FS.contains(&m.fs_type.as_str())
        || under(&["/proc", "/sys"])
        || (m.fs_type == "tmpfs" && under(&["/run", "/dev"]))
        || CONTAINER_AREAS.iter().any(|d| p.starts_with(d) && p != Path::new(d))
}

/// `/data/` and `/data/.` → `/data`.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

/// Picks the mounts to report, in order.
fn select(mounts: &[Mount], config: &DiskConfig) -> Vec<Target> {
    let excluded = |p: &Path| config.exclude.iter().any(|e| e.as_path() == p);
    // The last mount on a path hides the earlier ones.
    let mut last: HashMap<&Path, usize> = HashMap::with_capacity(mounts.len());
    for (i, m) in mounts.iter().enumerate() {
        last.insert(&m.mount_point, i);
    }
    if config.include.is_empty() {
        let mut seen_fs: HashSet<(&str, &Path)> = HashSet::new();
        mounts
            .iter()
            .enumerate()
            .filter(|&(i, m)| last[m.mount_point.as_path()] == i)
            .filter(|(_, m)| !is_pseudo(m))
            .filter(|(_, m)| m.dev.is_empty() || seen_fs.insert((&m.dev, &m.root)))
            .filter(|(_, m)| !excluded(&m.mount_point))
            .map(|(i, m)| Target { path: m.mount_point.clone(), mount: Some(i), named: false })
            .collect()
    } else {
        config
            .include
            .iter()
            .filter(|p| !excluded(p))
            .map(|p| {
                let path = normalize(p);
                Target { mount: last.get(path.as_path()).copied(), path, named: true }
            })
            .collect()
    }
}

/// UNKNOWN for everything the config asks for (the mount table itself is unreadable).
fn all_unknown(config: &DiskConfig, reason: String) -> Vec<CheckResult> {
    if config.include.is_empty() {
        return vec![unknown_result(KIND.to_owned(), KIND, reason)];
    }
    select(&[], config).into_iter().map(|t| unknown_result(check_id(&t.path), KIND, reason.clone())).collect()
}

fn check_id(path: &Path) -> String {
    format!("{KIND}:{}", path.display())
}

fn not_mounted(path: &Path) -> String {
    format!("{} is not a mount point (is the disk unmounted?)", path.display())
}

/// Stats every selected mount concurrently, each on its own thread, against one
/// deadline `timeout` from now.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
async fn sample_mounts(
    config: &DiskConfig,
    mounts: &[Mount],
    stat: fn(&Path) -> io::Result<Usage>,
    timeout: Duration,
) -> Vec<CheckResult> {
    let targets = select(mounts, config);
    let pending: Vec<Option<Pending<Usage>>> = targets
        .iter()
        .map(|t| {
            t.mount.map(|i| {
                let path = mounts[i].mount_point.clone();
                start_blocking(&mounts[i].mount_point, "statvfs", timeout, move || stat(&path))
            })
        })
        .collect();
    let deadline = Instant::now() + timeout;
    let mut results = Vec::with_capacity(targets.len());
    for (target, pending) in targets.iter().zip(pending) {
        let id = check_id(&target.path);
        let Some(pending) = pending else {
            results.push(unknown_result(id, KIND, not_mounted(&target.path)));
            continue;
        };
        match pending.wait(deadline).await {
            Ok(usage) if usage.total == 0 && !target.named => {}
            Ok(usage) => results.push(ok_result(id, KIND, usage.metrics(), String::new())),
            Err(reason) => results.push(unknown_result(id, KIND, reason)),
        }
    }
    results
}

/// The portable path (every OS but Linux): sysinfo's disk list, fetched on a thread
/// with a timeout. Compiled everywhere so that it is type-checked and tested on Linux.
#[cfg_attr(target_os = "linux", allow(dead_code))]
async fn sample_sysinfo(config: &DiskConfig, timeout: Duration) -> Vec<CheckResult> {
    let listed = start_blocking(Path::new("<sysinfo disks>"), "listing disks", timeout, list_sysinfo_disks)
        .wait(Instant::now() + timeout)
        .await;
    let (mounts, usages): (Vec<Mount>, Vec<Usage>) = match listed {
        Ok(listed) => listed.into_iter().unzip(),
        Err(reason) => return all_unknown(config, reason),
    };
    select(&mounts, config)
        .into_iter()
        .filter_map(|t| {
            let id = check_id(&t.path);
            match t.mount.map(|i| usages[i]) {
                None => Some(unknown_result(id, KIND, not_mounted(&t.path))),
                Some(usage) if usage.total == 0 && !t.named => None,
                Some(usage) => Some(ok_result(id, KIND, usage.metrics(), String::new())),
            }
        })
        .collect()
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
fn list_sysinfo_disks() -> io::Result<Vec<(Mount, Usage)>> {
    let refresh = sysinfo::DiskRefreshKind::nothing().with_storage();
    let disks = sysinfo::Disks::new_with_refreshed_list_specifics(refresh).map_err(io::Error::other)?;
    Ok(disks
        .iter()
        .map(|d| {
            let total = d.total_space();
            let avail = d.available_space().min(total);
            let mount = Mount {
                mount_point: d.mount_point().to_path_buf(),
                fs_type: d.file_system().to_string_lossy().into_owned(),
                dev: String::new(),
                root: PathBuf::new(),
            };
            (mount, Usage { total, used: total - avail, avail, inodes: None })
        })
        .collect())
}

/// Blocking calls that outlived their timeout, by key, each with the flag its thread
/// sets once the call returns. While a key's call is still hung, no new thread is
/// started for it.
static HUNG: Mutex<BTreeMap<PathBuf, Arc<AtomicBool>>> = Mutex::new(BTreeMap::new());

/// A blocking call running on its own thread (or one that could not be started).
struct Pending<T> {
    key: PathBuf,
    what: &'static str,
    timeout: Duration,
    state: Result<(oneshot::Receiver<io::Result<T>>, Arc<AtomicBool>), String>,
}

/// Runs `call` on a new thread, unless the previous call for `key` is still hung.
fn start_blocking<T, F>(key: &Path, what: &'static str, timeout: Duration, call: F) -> Pending<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let mut pending = Pending { key: key.to_path_buf(), what, timeout, state: Err(String::new()) };
    {
        let mut hung = HUNG.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = hung.get(key) {
            if !done.load(Ordering::Acquire) {
                pending.state = Err(format!(
                    "{what} timed out after {timeout:?} and has not returned since; \
                     not retried until it does"
                ));
                return pending;
            }
            hung.remove(key);
        }
    }
    let (tx, rx) = oneshot::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done_in_thread = Arc::clone(&done);
    let spawned = std::thread::Builder::new()
        .name("nightowl-statvfs".to_owned())
        .stack_size(STAT_THREAD_STACK)
        .spawn(move || {
            // A panic is the call's error, reported as the mount's UNKNOWN: without this
            // the sample would only learn that the thread ended without a result.
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|payload| {
                    Err(io::Error::other(format!(
                        "panicked: {}",
                        crate::supervise::panic_message(payload.as_ref())
                    )))
                });
            done_in_thread.store(true, Ordering::Release);
            // The receiver is gone when the sample gave up on us: nothing to do.
            let _ = tx.send(result);
        });
    pending.state = match spawned {
        Ok(_detached) => Ok((rx, done)),
        Err(e) => Err(format!("cannot start a thread for {what}: {e}")),
    };
    pending
}

impl<T> Pending<T> {
    /// The call's result, or why there is none by `deadline`.
    async fn wait(self, deadline: Instant) -> Result<T, String> {
        let (rx, done) = self.state?;
        let what = self.what;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(e))) => Err(format!("{what} failed: {e}")),
            Ok(Err(_)) => Err(format!("{what} ended without a result")),
            Err(_elapsed) => {
                HUNG.lock().unwrap_or_else(PoisonError::into_inner).insert(self.key, done);
                Err(format!("{what} timed out after {:?}", self.timeout))
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;
    use std::io;
    use std::os::unix::ffi::OsStringExt;
    use std::path::{Path, PathBuf};

    use super::{Mount, Usage};

    pub(super) const MOUNTINFO: &str = "/proc/self/mountinfo";

    pub(super) fn read_mounts() -> io::Result<Vec<Mount>> {
        Ok(parse_mountinfo(&std::fs::read(MOUNTINFO)?))
    }

    /// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
    pub(super) fn parse_mountinfo(data: &[u8]) -> Vec<Mount> {
        data.split(|&b| b == b'\n').filter_map(parse_line).collect()
    }

    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
    /// id, parent id, major:minor, root, mount point, options, optional fields, `-`,
    /// fs type, source, super options.
    fn parse_line(line: &[u8]) -> Option<Mount> {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let sep = 6 + fields.iter().skip(6).position(|f| *f == b"-")?;
        let fs_type = fields.get(sep + 1)?;
        Some(Mount {
            mount_point: unescape_path(fields[4]),
            fs_type: String::from_utf8_lossy(&unescape(fs_type)).into_owned(),
            dev: String::from_utf8_lossy(fields[2]).into_owned(),
            root: unescape_path(fields[3]),
        })
    }

    fn unescape_path(field: &[u8]) -> PathBuf {
        PathBuf::from(OsString::from_vec(unescape(field)))
    }

    /// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline,
    /// `\134` backslash); anything else is kept as is.
    pub(super) fn unescape(field: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            if field[i] == b'\\'
                && let Some(digits) = field.get(i + 1..i + 4)
                && digits.iter().all(|d| (b'0'..=b'7').contains(d))
                && digits[0] <= b'3'
            {
                out.push(digits.iter().fold(0u8, |acc, d| (acc << 3) | (d - b'0')));
                i += 4;
            } else {
                out.push(field[i]);
                i += 1;
            }
        }
        out
    }

    pub(super) fn statvfs_usage(path: &Path) -> io::Result<Usage> {
        let s = rustix::fs::statvfs(path)?;
        let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
        Ok(Usage::from_blocks(frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nightowl_proto::ProbeStatus;

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    fn find<'a>(results: &'a [CheckResult], id: &str) -> Option<&'a CheckResult> {
        results.iter().find(|r| r.check_id == id)
    }

    #[test]
    fn validate_names_the_offending_entry() {
        let ok = DiskConfig {
            include: paths(&["/", "/mnt/backup/"]),
            exclude: paths(&["/boot"]),
            window: Some(HumanDuration(Duration::from_secs(3600))),
            interval: None,
        };
        assert_eq!(ok.validate(), Ok(()));

        for (seconds, text) in [(5, "5s"), (8 * 24 * 3600, "8days")] {
            let window =
                DiskConfig { window: Some(HumanDuration(Duration::from_secs(seconds))), ..ok.clone() };
            let err = window.validate().unwrap_err();
            assert!(err.starts_with(&format!("window: {text} is out of range")), "{err}");
        }

        let relative = DiskConfig { include: paths(&["data"]), ..Default::default() };
        let err = relative.validate().unwrap_err();
        assert!(err.starts_with("include[0]: \"data\" is not an absolute path"), "{err}");

        let bad_exclude = DiskConfig { exclude: paths(&["/ok", ""]), ..Default::default() };
        assert!(bad_exclude.validate().unwrap_err().starts_with("exclude[1]: empty path"));

        let dotdot = DiskConfig { include: paths(&["/a", "/b", "/mnt/../data"]), ..Default::default() };
        assert!(dotdot.validate().unwrap_err().starts_with("include[2]: "));

        let dup = DiskConfig { include: paths(&["/data", "/srv", "/data/"]), ..Default::default() };
        let err = dup.validate().unwrap_err();
        assert!(err.starts_with("include[2]: ") && err.contains("include[0]"), "{err}");
    }

    #[test]
    fn config_deserializes_and_rejects_unknown_fields() {
        #[derive(Debug, Deserialize)]
        struct Wrapper {
            disk: DiskConfig,
        }
        let w: Wrapper = toml::from_str("[disk]\ninclude = [\"/data\"]\n").unwrap();
        assert_eq!(w.disk.include, paths(&["/data"]));
        assert!(w.disk.exclude.is_empty());
        assert_eq!(w.disk.window(), DEFAULT_WINDOW);
        let w: Wrapper = toml::from_str("[disk]\nwindow = \"30m\"\n").unwrap();
        assert_eq!(w.disk.window(), Duration::from_secs(1800));
        let err = toml::from_str::<Wrapper>("[disk]\nincludes = [\"/data\"]\n").unwrap_err();
        assert!(err.to_string().contains("includes"), "{err}");
    }

    #[test]
    fn usage_is_computed_like_df() {
        // 1000 blocks of 4 KiB, 100 free of which 50 available to users.
        let u = Usage::from_blocks(4096, 1000, 100, 50, 200, 50);
        let m = u.metrics();
        assert_eq!(m["total_bytes"], 4096.0 * 1000.0);
        assert_eq!(m["used_bytes"], 4096.0 * 900.0);
        assert_eq!(m["free_bytes"], 4096.0 * 50.0);
        assert!((m["used_pct"] - 900.0 / 950.0 * 100.0).abs() < 1e-9);
        assert_eq!(m["inodes_used_pct"], 75.0);
        assert_eq!(m["inodes_free"], 50.0);

        // No inodes (e.g. btrfs reports 0), empty filesystem.
        let m = Usage::from_blocks(4096, 0, 0, 0, 0, 0).metrics();
        assert_eq!(m["used_pct"], 0.0);
        assert!(!m.contains_key("inodes_used_pct") && !m.contains_key("inodes_free"));
    }

    fn mount(mount_point: &str, fs_type: &str, dev: &str, root: &str) -> Mount {
        Mount { mount_point: mount_point.into(), fs_type: fs_type.into(), dev: dev.into(), root: root.into() }
    }

    fn selected(mounts: &[Mount], config: &DiskConfig) -> Vec<String> {
        select(mounts, config).iter().map(|t| t.path.display().to_string()).collect()
    }

    #[test]
    fn default_selection_skips_pseudo_hidden_and_repeated_mounts() {
        let mounts = [
            mount("/", "ext4", "8:1", "/"),
            mount("/proc", "proc", "0:21", "/"),
            mount("/sys", "sysfs", "0:22", "/"),
            mount("/sys/fs/cgroup", "cgroup2", "0:26", "/"),
            mount("/sys/fs/cgroup/x", "tmpfs", "0:99", "/"),
            mount("/dev", "devtmpfs", "0:5", "/"),
            mount("/dev/shm", "tmpfs", "0:23", "/"),
            mount("/run", "tmpfs", "0:24", "/"),
            mount("/run/user/1000", "tmpfs", "0:40", "/"),
            mount("/run/media/ann/USB", "vfat", "8:33", "/"),
            mount("/tmp", "tmpfs", "0:30", "/"),
            mount("/snap/core/1", "squashfs", "7:0", "/"),
            mount("/proc/sys/fs/binfmt_misc", "binfmt_misc", "0:50", "/"),
            mount("/mnt/usb", "ext4", "8:17", "/"),
            mount("/mnt/usb", "xfs", "8:49", "/"), // over-mount: this one is visible
            mount("/srv/same", "ext4", "8:1", "/"), // bind of the whole root fs: repeat
            mount("/srv/sub", "ext4", "8:1", "/home/shared"), // bind of a subtree: kept
            mount("/srv/sub2", "ext4", "8:1", "/home/shared"), // same subtree again
            mount("/var/lib/docker", "ext4", "8:65", "/"),
            mount("/var/lib/docker/overlay2/abc/merged", "overlay", "0:60", "/"),
            mount("/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/rootfs", "overlay", "0:61", "/"),
            mount("/home", "btrfs", "0:35", "/@home"),
        ];
        let got = selected(&mounts, &DiskConfig::default());
        assert_eq!(
            got,
            ["/", "/run/media/ann/USB", "/tmp", "/mnt/usb", "/srv/sub", "/var/lib/docker", "/home",]
        );
        let usb = select(&mounts, &DiskConfig::default())[3].mount.unwrap();
        assert_eq!(mounts[usb].fs_type, "xfs");

        let excluding = DiskConfig { exclude: paths(&["/tmp", "/home/"]), ..Default::default() };
        assert_eq!(
            selected(&mounts, &excluding),
            ["/", "/run/media/ann/USB", "/mnt/usb", "/srv/sub", "/var/lib/docker"]
        );
    }

    #[test]
    fn include_selects_exactly_the_named_paths_in_order() {
        let mounts = [
            mount("/", "ext4", "8:1", "/"),
            mount("/run/lock", "tmpfs", "0:25", "/"),
            mount("/data", "xfs", "8:17", "/"),
        ];
        let config = DiskConfig {
            include: paths(&["/data/", "/run/lock", "/mnt/backup", "/"]),
            exclude: paths(&["/"]),
            window: None,
            interval: None,
        };
        let targets = select(&mounts, &config);
        assert_eq!(
            targets,
            [
                Target { path: "/data".into(), mount: Some(2), named: true },
                Target { path: "/run/lock".into(), mount: Some(1), named: true },
                Target { path: "/mnt/backup".into(), mount: None, named: true },
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn mountinfo_parsing_decodes_escapes_and_optional_fields() {
        let text = concat!(
            "22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw\n",
            "27 1 254:0 / / rw,relatime shared:1 master:3 - ext4 /dev/vda rw,discard\n",
            "28 27 8:17 / /mnt/my\\040disk rw - ext4 /dev/sdb1 rw\n",
            "29 27 8:17 /sub\\011dir /srv/back\\134slash rw - ext4 /dev/sdb1 rw\n",
            "30 27 0:40 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=1024k\n",
            "31 30 0:41 / /run/user/1000 rw - tmpfs tmpfs rw\n",
            "garbage line without separator\n",
            "32 27 0:42 / /odd\\9 rw - ext4 /dev/x rw\n",
            "\n",
        );
        let mounts = linux::parse_mountinfo(text.as_bytes());
        assert_eq!(
            mounts,
            [
                mount("/proc", "proc", "0:21", "/"),
                mount("/", "ext4", "254:0", "/"),
                mount("/mnt/my disk", "ext4", "8:17", "/"),
                mount("/srv/back\\slash", "ext4", "8:17", "/sub\tdir"),
                mount("/tmp", "tmpfs", "0:40", "/"),
                mount("/run/user/1000", "tmpfs", "0:41", "/"),
                mount("/odd\\9", "ext4", "0:42", "/"),
            ]
        );
        assert_eq!(
            selected(&mounts, &DiskConfig::default()),
            ["/", "/mnt/my disk", "/srv/back\\slash", "/tmp", "/odd\\9"]
        );
        assert_eq!(linux::unescape(b"a\\012b\\"), b"a\nb\\");
    }

    /// statvfs stand-in: hangs on `/nightowl-test/hang` (for longer than the test's
    /// timeout), a fixed 50% full filesystem otherwise.
    fn fake_stat(path: &Path) -> io::Result<Usage> {
        if path == Path::new("/nightowl-test/hang") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(Usage::from_blocks(1024, 100, 50, 50, 0, 0))
    }

    #[tokio::test]
    async fn a_hung_filesystem_does_not_block_the_others_and_is_not_piled_on() {
        let mounts = [
            mount("/nightowl-test/hang", "nfs", "0:70", "/"),
            mount("/nightowl-test/ok", "ext4", "8:1", "/"),
        ];
        let config = DiskConfig::default();
        let timeout = Duration::from_millis(300);

        let started = std::time::Instant::now();
        let results = sample_mounts(&config, &mounts, fake_stat, timeout).await;
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[0].check_id, "disk:/nightowl-test/hang");
        assert_eq!(results[0].status, ProbeStatus::Unknown as i32);
        assert_eq!(results[0].message, "statvfs timed out after 300ms");
        assert_eq!(results[1].status, ProbeStatus::Ok as i32);
        assert_eq!(results[1].metrics["used_pct"], 50.0);

        // Still hung: reported at once, without a new thread.
        let started = std::time::Instant::now();
        let results = sample_mounts(&config, &mounts, fake_stat, timeout).await;
        assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
        assert_eq!(results[0].status, ProbeStatus::Unknown as i32);
        assert!(results[0].message.contains("has not returned since"), "{results:?}");

        // Once the call returns, the mount is sampled again.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let results = sample_mounts(&config, &mounts, fake_stat, Duration::from_secs(5)).await;
        assert_eq!(results[0].status, ProbeStatus::Ok as i32, "{results:?}");
    }

    #[tokio::test]
    async fn a_panic_on_a_deadline_thread_is_that_mount_s_unknown() {
        let mounts = [mount("/nightowl-test/broken", "ext4", "8:2", "/")];
        let broken: fn(&Path) -> io::Result<Usage> = |_| panic!("statvfs stand-in broke");
        let results = sample_mounts(&DiskConfig::default(), &mounts, broken, Duration::from_secs(5)).await;
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0].status, ProbeStatus::Unknown as i32);
        assert_eq!(results[0].message, "statvfs failed: panicked: statvfs stand-in broke");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn default_selection_on_this_machine_has_root_and_no_pseudo_fs() {
        let results = sample(&DiskConfig::default()).await;
        let root = find(&results, "disk:/").unwrap_or_else(|| panic!("no disk:/ in {results:?}"));
        assert_eq!(root.status, ProbeStatus::Ok as i32, "{root:?}");
        assert!(root.metrics["total_bytes"] > 0.0);
        for key in ["used_bytes", "free_bytes", "used_pct"] {
            assert!(root.metrics.contains_key(key), "{key} missing: {root:?}");
        }
        for r in &results {
            assert_eq!(r.kind, "disk");
            let path = r.check_id.strip_prefix("disk:").unwrap();
            assert!(!path.starts_with("/proc") && !path.starts_with("/sys"), "{r:?}");
            assert!(!path.starts_with("/dev/"), "{r:?}");
            if r.status == ProbeStatus::Ok as i32 {
                assert!(r.metrics["total_bytes"] > 0.0, "{r:?}");
                assert!((0.0..=100.0).contains(&r.metrics["used_pct"]), "{r:?}");
            }
        }
        let mut ids: Vec<_> = results.iter().map(|r| &r.check_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), results.len(), "duplicate check ids: {results:?}");
    }

    #[tokio::test]
    async fn sysinfo_path_runs_here_too() {
        let results = sample_sysinfo(&DiskConfig::default(), STAT_TIMEOUT).await;
        for r in &results {
            assert_eq!(r.kind, "disk");
            assert_eq!(r.status, ProbeStatus::Ok as i32, "{r:?}");
            assert!(r.metrics["total_bytes"] > 0.0, "{r:?}");
            assert!((0.0..=100.0).contains(&r.metrics["used_pct"]), "{r:?}");
        }
        let named = DiskConfig { include: paths(&["/nightowl-test/absent"]), ..Default::default() };
        let results = sample_sysinfo(&named, STAT_TIMEOUT).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].status, ProbeStatus::Unknown as i32);
    }

    #[tokio::test]
    async fn an_included_path_that_is_not_a_mount_point_is_unknown() {
        // A real directory on the root filesystem: statvfs would happily answer for "/",
        // which is exactly the mistake to avoid when the backup disk is unplugged.
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backup");
        std::fs::create_dir(&backup).unwrap();
        let config = DiskConfig { include: vec![backup.clone()], ..Default::default() };
        let results = sample(&config).await;
        assert_eq!(results.len(), 1, "{results:?}");
        let r = &results[0];
        assert_eq!(r.check_id, format!("disk:{}", backup.display()));
        assert_eq!(r.status, ProbeStatus::Unknown as i32);
        assert_eq!(r.message, format!("{} is not a mount point (is the disk unmounted?)", backup.display()));
        assert!(r.metrics.is_empty());
    }

    /// A tmpfs mounted for the test, unmounted on drop (even when the test panics).
    #[cfg(target_os = "linux")]
    struct TmpfsMount {
        dir: tempfile::TempDir,
    }

    #[cfg(target_os = "linux")]
    impl TmpfsMount {
        /// `None` (after a loud SKIP line) when this environment may not mount.
        fn new(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output();
            match out {
                Ok(out) if out.status.success() => Some(Self { dir }),
                Ok(out) => {
                    eprintln!(
                        "SKIP: cannot mount a tmpfs here (not root?): {} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    None
                }
                Err(e) => {
                    eprintln!("SKIP: cannot run mount(8): {e}");
                    None
                }
            }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for TmpfsMount {
        fn drop(&mut self) {
            let ok =
                std::process::Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_real_tmpfs_is_measured() {
        let Some(tmpfs) = TmpfsMount::new("16m") else {
            return;
        };
        let path = tmpfs.path().to_path_buf();
        let id = format!("disk:{}", path.display());
        const MIB: f64 = 1024.0 * 1024.0;

        let config = DiskConfig { include: vec![path.clone()], ..Default::default() };
        let before = sample(&config).await;
        assert_eq!(before.len(), 1, "{before:?}");
        let before = &before[0];
        assert_eq!(before.check_id, id);
        assert_eq!(before.status, ProbeStatus::Ok as i32, "{before:?}");
        assert!((before.metrics["total_bytes"] - 16.0 * MIB).abs() < 0.5 * MIB, "{before:?}");
        assert!(before.metrics["used_pct"] < 3.0, "{before:?}");
        assert!(before.metrics["inodes_free"] > 0.0, "{before:?}");

        std::fs::write(path.join("fill"), vec![0xa5u8; 8 * 1024 * 1024]).unwrap();
        let after = sample(&config).await;
        let after = &after[0];
        assert_eq!(after.status, ProbeStatus::Ok as i32, "{after:?}");
        assert!((after.metrics["used_pct"] - 50.0).abs() <= 3.0, "{after:?}");
        let dropped = before.metrics["free_bytes"] - after.metrics["free_bytes"];
        assert!((dropped - 8.0 * MIB).abs() < 0.5 * MIB, "free dropped by {dropped}");
        assert!(after.metrics["inodes_used_pct"] > before.metrics["inodes_used_pct"]);

        // A tmpfs outside /run and /dev is a real mount in the default selection too,
        // and `exclude` removes it.
        let all = sample(&DiskConfig::default()).await;
        assert!(find(&all, &id).is_some(), "{id} not in {all:?}");
        let excluding = DiskConfig { exclude: vec![path.clone()], ..Default::default() };
        assert!(find(&sample(&excluding).await, &id).is_none());
    }

    /// A history fed with `used(t)` at the given times (seconds after a start).
    fn history_of(times: &[f64], used: impl Fn(f64) -> f64, total: f64, window: Duration) -> FillHistory {
        let start = Instant::now();
        let mut history = FillHistory::default();
        for &t in times {
            history.record(start + Duration::from_secs_f64(t), used(t), total, window);
        }
        history
    }

    const TIB: f64 = 1024.0 * 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn fill_rate_is_the_least_squares_slope() {
        let times: Vec<f64> = (0..10).map(|i| f64::from(i) * 10.0).collect();
        let history = history_of(&times, |t| 5e9 + 500.0 * t, TIB, DEFAULT_WINDOW);
        assert!((history.rate().unwrap() - 500.0).abs() < 1e-6);

        // Noise around the line does not move the slope much; irregular spacing is fine.
        let times = [0.0, 3.0, 11.0, 12.0, 30.0, 31.5, 47.0];
        let wobble = |t: f64| if (t as i64) % 2 == 0 { 300.0 } else { -300.0 };
        let history = history_of(&times, |t| 5e9 + 1000.0 * t + wobble(t), TIB, DEFAULT_WINDOW);
        assert!((history.rate().unwrap() - 1000.0).abs() < 50.0, "{:?}", history.rate());

        // Emptying slowly: negative.
        let history = history_of(&times, |t| 5e9 - 200.0 * t, TIB, DEFAULT_WINDOW);
        assert!((history.rate().unwrap() + 200.0).abs() < 1e-6);

        // Flat: zero.
        assert_eq!(history_of(&times, |_| 5e9, TIB, DEFAULT_WINDOW).rate(), Some(0.0));
    }

    #[test]
    fn no_fill_rate_before_three_points_over_two_seconds() {
        let line = |t: f64| 1e6 + 1e3 * t;
        assert_eq!(history_of(&[], line, TIB, DEFAULT_WINDOW).rate(), None);
        assert_eq!(history_of(&[0.0], line, TIB, DEFAULT_WINDOW).rate(), None);
        assert_eq!(history_of(&[0.0, 10.0], line, TIB, DEFAULT_WINDOW).rate(), None);
        assert_eq!(history_of(&[0.0, 0.5, 1.0, 1.5], line, TIB, DEFAULT_WINDOW).rate(), None);
        assert!(history_of(&[0.0, 1.0, 2.0], line, TIB, DEFAULT_WINDOW).rate().is_some());
    }

    #[test]
    fn the_window_slides_and_the_points_stay_bounded() {
        // Filled fast for the first 1000 s, then slowly: a 60 s window sees only the
        // slow part.
        let used = |t: f64| if t < 1000.0 { 1e5 * t } else { 1e8 + 10.0 * (t - 1000.0) };
        let times: Vec<f64> = (0..1100).map(f64::from).collect();
        let history = history_of(&times, used, TIB, Duration::from_secs(60));
        assert!((history.rate().unwrap() - 10.0).abs() < 1e-6, "{:?}", history.rate());
        assert_eq!(history.points.len(), 61);

        // Many samples in a long window: at most MAX_POINTS, still reaching back about
        // the whole window, and the newest points kept at full resolution.
        let window = Duration::from_secs(3600);
        let times: Vec<f64> = (0..10_000).map(f64::from).collect();
        let history = history_of(&times, |t| 7.0 * t, TIB, window);
        assert!(history.points.len() <= MAX_POINTS, "{}", history.points.len());
        let (first, last) = (history.points.front().unwrap().0, history.points.back().unwrap().0);
        let reach = last.duration_since(first);
        assert!(reach > window / 2 && reach <= window, "{reach:?}");
        let newest: Vec<f64> = history.points.iter().rev().take(10).map(|&(_, used)| used).collect();
        assert!(newest.windows(2).all(|pair| pair[0] - pair[1] == 7.0), "{newest:?}");
        assert!((history.rate().unwrap() - 7.0).abs() < 1e-6);
    }

    #[test]
    fn a_large_drop_restarts_the_history() {
        // 1 GiB filesystem filling at 1 MiB/s; at t = 10 s 300 MiB are deleted.
        const MIB: f64 = 1024.0 * 1024.0;
        let used = |t: f64| if t < 10.0 { 400.0 * MIB + MIB * t } else { 110.0 * MIB + MIB * (t - 10.0) };
        let total = 1024.0 * MIB;
        let history = history_of(&[0.0, 2.0, 4.0, 6.0, 8.0, 10.0], used, total, DEFAULT_WINDOW);
        assert_eq!(history.points.len(), 1);
        assert_eq!(history.rate(), None);
        let history = history_of(&[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0], used, total, DEFAULT_WINDOW);
        assert!((history.rate().unwrap() - MIB).abs() < 1.0, "{:?}", history.rate());

        // A small drop (0.5 % of the size) is just part of the slope.
        let small = |t: f64| if t < 10.0 { 400.0 * MIB + MIB * t } else { 405.0 * MIB };
        let history = history_of(&[0.0, 4.0, 8.0, 10.0, 12.0], small, total, DEFAULT_WINDOW);
        assert_eq!(history.points.len(), 5);
    }

    fn disk_result(check_id: &str, used: f64, total: f64) -> CheckResult {
        let usage =
            Usage { total: total as u64, used: used as u64, avail: (total - used) as u64, inodes: None };
        ok_result(check_id.to_owned(), KIND, usage.metrics(), String::new())
    }

    #[test]
    fn the_probe_forecasts_per_mount_and_forgets_vanished_mounts() {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let mut probe = DiskProbe::new(&DiskConfig::default());
        let start = Instant::now();
        let mut last = Vec::new();
        for step in 0..4u32 {
            let t = f64::from(step) * 10.0;
            let mut results = vec![
                disk_result("disk:/", 10.0 * GIB + 1e6 * t, 100.0 * GIB),
                disk_result("disk:/srv", 50.0 * GIB - 1e3 * t, 100.0 * GIB),
                unknown_result("disk:/nfs".to_owned(), KIND, "statvfs timed out after 5s".to_owned()),
            ];
            probe.add_forecasts(&mut results, start + Duration::from_secs_f64(t));
            let has_rate = results[0].metrics.contains_key("fill_rate_bps");
            assert_eq!(has_rate, step >= 2, "step {step}: {results:?}");
            last = results;
        }
        let root = &last[0].metrics;
        assert!((root["fill_rate_bps"] - 1e6).abs() < 1e-3, "{root:?}");
        let expected = root["free_bytes"] / 1e6;
        assert!((root["time_to_full_s"] - expected).abs() < 1e-3, "{root:?}");
        let srv = &last[1].metrics;
        assert!((srv["fill_rate_bps"] + 1e3).abs() < 1e-6, "{srv:?}");
        assert!(!srv.contains_key("time_to_full_s"), "emptying: no time to full");
        assert!(last[2].metrics.is_empty());
        assert_eq!(probe.histories.len(), 2);

        // /srv vanishes (or turns UNKNOWN): its history goes; when it is back, it
        // starts over.
        let mut results = vec![disk_result("disk:/", 10.0 * GIB, 100.0 * GIB)];
        probe.add_forecasts(&mut results, start + Duration::from_secs(40));
        assert!(!probe.histories.contains_key("disk:/srv"));
        let mut results = vec![
            unknown_result("disk:/".to_owned(), KIND, "not a mount point".to_owned()),
            disk_result("disk:/srv", 50.0 * GIB, 100.0 * GIB),
        ];
        probe.add_forecasts(&mut results, start + Duration::from_secs(50));
        assert_eq!(probe.histories.len(), 1);
        assert_eq!(probe.histories["disk:/srv"].points.len(), 1);
        assert!(!results[1].metrics.contains_key("fill_rate_bps"));
    }

    /// Fills a real 64 MiB tmpfs at 16 MiB/s (4 MiB every 250 ms) while the probe
    /// samples it every 250 ms, and checks the forecast against the truth.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_filling_tmpfs_is_forecast() {
        use super::super::Probe;

        let Some(tmpfs) = TmpfsMount::new("64m") else {
            return;
        };
        const MIB: usize = 1024 * 1024;
        const STEP: Duration = Duration::from_millis(250);
        let true_rate = (4 * MIB) as f64 / STEP.as_secs_f64();
        let id = format!("disk:{}", tmpfs.path().display());
        let mut probe =
            DiskProbe::new(&DiskConfig { include: vec![tmpfs.path().to_path_buf()], ..Default::default() });
        let chunk = vec![0x5au8; 4 * MIB];
        let start = Instant::now();
        let mut last = None;
        for step in 0..13u32 {
            tokio::time::sleep_until(start + STEP * step).await;
            std::fs::write(tmpfs.path().join(format!("fill-{step}")), &chunk).unwrap();
            let results = probe.sample().await;
            let result = find(&results, &id).unwrap_or_else(|| panic!("{id} missing: {results:?}")).clone();
            assert_eq!(result.status, ProbeStatus::Ok as i32, "{result:?}");
            // 3 points spanning 2 s are needed: from about the 9th sample (t = 2 s) on.
            let has_rate = result.metrics.contains_key("fill_rate_bps");
            assert!(has_rate || step <= 8, "step {step}: {result:?}");
            assert!(!has_rate || step >= 8, "step {step}: {result:?}");
            last = Some(result);
        }
        let metrics = last.unwrap().metrics;
        let rate = metrics["fill_rate_bps"];
        let rate_error = (rate - true_rate).abs() / true_rate;
        let true_time_to_full = metrics["free_bytes"] / true_rate;
        let time_error = (metrics["time_to_full_s"] - true_time_to_full).abs() / true_time_to_full;
        eprintln!(
            "fill rate {rate:.0} B/s vs {true_rate:.0} B/s ({:.2} % off); time to full {:.3} s vs {:.3} s \
             ({:.2} % off)",
            rate_error * 100.0,
            metrics["time_to_full_s"],
            true_time_to_full,
            time_error * 100.0
        );
        assert!(rate_error < 0.2, "{metrics:?}");
        assert!(time_error < 0.2, "{metrics:?}");
    }
}
