//! The `[disk]` table: which mounts to watch, the fill-rate window, the interval.

use std::collections::HashMap;
use std::path::{Component, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::mounts::normalize;
use crate::duration::HumanDuration;

/// Default `window` of the fill-rate history.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Bounds of `window`.
const MIN_WINDOW: Duration = Duration::from_secs(10);
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

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
