use nightowl_proto::ProbeStatus;
use serde::Deserialize;

use super::mounts::Target;
use super::*;
use crate::duration::HumanDuration;

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
        let window = DiskConfig { window: Some(HumanDuration(Duration::from_secs(seconds))), ..ok.clone() };
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
    assert_eq!(got, ["/", "/run/media/ann/USB", "/tmp", "/mnt/usb", "/srv/sub", "/var/lib/docker", "/home",]);
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
    let mounts =
        [mount("/nightowl-test/hang", "nfs", "0:70", "/"), mount("/nightowl-test/ok", "ext4", "8:1", "/")];
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
    let usage = Usage { total: total as u64, used: used as u64, avail: (total - used) as u64, inodes: None };
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
