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
//! The jobs live apart: [`config`] (the `[disk]` table), [`mounts`] (the mount table and
//! which of its mounts to watch), [`deadline`] (each `statvfs` on its own thread against
//! one deadline: a hung network mount is that mount's UNKNOWN, never a hung agent) and
//! [`forecast`] (fill rate and time to full).

mod config;
mod deadline;
mod forecast;
mod mounts;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nightowl_proto::CheckResult;
use tokio::time::Instant;

use super::{ok_result, unknown_result};
use deadline::{Pending, start_blocking};
use forecast::FillHistory;
#[cfg(target_os = "linux")]
use mounts::linux;
use mounts::{Mount, select};

pub use config::{DEFAULT_WINDOW, DiskConfig};
pub use forecast::MAX_POINTS;

const KIND: &str = "disk";

/// How long one sample waits for the filesystems to answer.
const STAT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Samples the configured mounts once: one result per mount, in mount-table order (or
/// `include` order). Never blocks longer than about 5 s, whatever the filesystems do.
#[cfg(target_os = "linux")]
pub async fn sample(config: &DiskConfig) -> Vec<CheckResult> {
    match linux::read_mounts() {
        Ok(mounts) => sample_mounts(config, &mounts, statvfs_usage, STAT_TIMEOUT).await,
        Err(e) => all_unknown(config, format!("cannot read {}: {e}", linux::MOUNTINFO)),
    }
}

/// Samples the configured mounts once: one result per mount, in mount-table order (or
/// `include` order). Never blocks longer than about 5 s, whatever the filesystems do.
#[cfg(not(target_os = "linux"))]
pub async fn sample(config: &DiskConfig) -> Vec<CheckResult> {
    sample_sysinfo(config, STAT_TIMEOUT).await
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

#[cfg(target_os = "linux")]
fn statvfs_usage(path: &Path) -> io::Result<Usage> {
    let s = rustix::fs::statvfs(path)?;
    let frsize = if s.f_frsize > 0 { s.f_frsize } else { s.f_bsize };
    Ok(Usage::from_blocks(frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree))
}
