//! The mount table and the choice of mounts to watch: pseudo filesystems, hidden and
//! repeated mounts, `include` and `exclude` (see the probe's doc).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::DiskConfig;

/// One entry of the mount table.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Mount {
    pub(super) mount_point: PathBuf,
    pub(super) fs_type: String,
    /// `major:minor` of the filesystem; empty when unknown (then no bind-mount dedup).
    pub(super) dev: String,
    /// The mount's root within its filesystem: `/` unless a subtree was bind-mounted.
    pub(super) root: PathBuf,
}

/// A mount point to report on.
#[derive(Debug, PartialEq)]
pub(super) struct Target {
    /// The subject of the check id.
    pub(super) path: PathBuf,
    /// Index into the mount table; `None`: named in `include` but not mounted.
    pub(super) mount: Option<usize>,
    /// Named in `include` (reported even when zero-sized).
    pub(super) named: bool,
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
pub(super) fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

/// Picks the mounts to report, in order.
pub(super) fn select(mounts: &[Mount], config: &DiskConfig) -> Vec<Target> {
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

#[cfg(target_os = "linux")]
pub(super) mod linux {
    use std::ffi::OsString;
    use std::io;
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;

    use super::Mount;

    pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

    pub(crate) fn read_mounts() -> io::Result<Vec<Mount>> {
        Ok(parse_mountinfo(&std::fs::read(MOUNTINFO)?))
    }

    /// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
    pub(crate) fn parse_mountinfo(data: &[u8]) -> Vec<Mount> {
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
    pub(crate) fn unescape(field: &[u8]) -> Vec<u8> {
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
}
