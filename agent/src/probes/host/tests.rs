use super::*;
use nightowl_proto::ProbeStatus;

fn context(dir: &tempfile::TempDir) -> ProbeContext {
    ProbeContext { state_dir: dir.path().to_path_buf() }
}

#[test]
fn host_sample_has_all_metrics_in_sane_ranges() {
    let state = tempfile::tempdir().unwrap();
    let mut probe = HostProbe::new(&HostConfig::default(), &context(&state));
    std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
    for _ in 0..2 {
        let r = probe.sample_now();
        assert_eq!(r.check_id, "host");
        assert_eq!(r.kind, "host");
        assert_eq!(r.status, ProbeStatus::Ok as i32, "{r:?}");
        assert!(r.message.is_empty(), "{r:?}");
        let keys = [
            "cpu_pct",
            "mem_used_pct",
            "swap_used_pct",
            "load1",
            "load5",
            "load15",
            "uptime_s",
            "boot_time_s",
            "rebooted",
        ];
        for key in keys {
            let v = *r.metrics.get(key).unwrap_or_else(|| panic!("{key} missing: {r:?}"));
            assert!(v.is_finite(), "{key} = {v}");
            if key.ends_with("_pct") {
                assert!((0.0..=100.0).contains(&v), "{key} = {v}");
            } else {
                assert!(v >= 0.0, "{key} = {v}");
            }
        }
        assert!(r.metrics["uptime_s"] > 0.0, "{r:?}");
        assert!(r.metrics["mem_used_pct"] > 0.0, "{r:?}");
        assert_eq!(r.metrics["rebooted"], 0.0, "no previous state: no reboot known");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let booted = now - r.metrics["uptime_s"];
        assert!((r.metrics["boot_time_s"] - booted).abs() < 5.0, "{r:?} vs {booted}");
        assert_eq!(r.metrics.len(), 9, "{r:?}");
    }
}

#[test]
fn a_reboot_since_the_last_run_is_reported_once() {
    let state = tempfile::tempdir().unwrap();
    let state_file = context(&state).probe_state_dir().join(BOOT_STATE_FILE);
    let this_boot = current_boot().expect("this boot can be identified");

    // The previous run recorded another boot.
    let other = match &this_boot {
        BootIdentity::Id(_) => BootIdentity::Id("00000000-0000-4000-8000-000000000000".to_owned()),
        BootIdentity::Time(seconds) => BootIdentity::Time(seconds - 3600),
    };
    std::fs::create_dir_all(state_file.parent().unwrap()).unwrap();
    std::fs::write(&state_file, other.to_line()).unwrap();
    let mut probe = HostProbe::new(&HostConfig::default(), &context(&state));
    let rebooted = |probe: &mut HostProbe| {
        let r = probe.sample_now();
        assert_eq!(r.status, ProbeStatus::Ok as i32, "{r:?}");
        r.metrics["rebooted"]
    };
    assert_eq!(rebooted(&mut probe), 1.0);
    assert_eq!(rebooted(&mut probe), 0.0);
    assert_eq!(rebooted(&mut probe), 0.0);
    assert_eq!(std::fs::read_to_string(&state_file).unwrap(), this_boot.to_line());

    // The agent restarts within the same boot: nothing to report.
    let mut probe = HostProbe::new(&HostConfig::default(), &context(&state));
    assert_eq!(rebooted(&mut probe), 0.0);

    // An unreadable state file is rewritten and reports nothing.
    std::fs::write(&state_file, "garbage").unwrap();
    let mut probe = HostProbe::new(&HostConfig::default(), &context(&state));
    assert_eq!(rebooted(&mut probe), 0.0);
    assert_eq!(std::fs::read_to_string(&state_file).unwrap(), this_boot.to_line());
}

#[test]
fn boot_identities_parse_and_compare() {
    let id = |text: &str| BootIdentity::Id(text.to_owned());
    for identity in [id("f0e59899-b5d2-4763-946c-6b78456b9b88"), BootIdentity::Time(1_700_000_000)] {
        assert_eq!(BootIdentity::parse(&identity.to_line()), Some(identity.clone()));
    }
    for bad in ["", "boot_id", "boot_id  ", "boot_time soon", "uptime 5", "f0e59899"] {
        assert_eq!(BootIdentity::parse(bad), None, "{bad:?}");
    }
    assert_eq!(id("a").same_boot(&id("a")), Some(true));
    assert_eq!(id("a").same_boot(&id("b")), Some(false));
    // Boot times wobble by a second or two where they are computed from the uptime.
    assert_eq!(BootIdentity::Time(1000).same_boot(&BootIdentity::Time(1003)), Some(true));
    assert_eq!(BootIdentity::Time(1000).same_boot(&BootIdentity::Time(1100)), Some(false));
    assert_eq!(id("a").same_boot(&BootIdentity::Time(1000)), None);

    // Compared sources differ (e.g. the boot id became unreadable): no verdict.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("boot");
    std::fs::write(&file, id("a").to_line()).unwrap();
    let mut detector = RebootDetector::new(file.clone(), Some(BootIdentity::Time(1000)));
    assert_eq!(detector.take(), Some(false));
    // This boot cannot be identified: no metric, the file is left alone.
    let mut detector = RebootDetector::new(file.clone(), None);
    assert_eq!(detector.take(), None);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), BootIdentity::Time(1000).to_line());
}

#[test]
fn ratio_pct_handles_zero_and_clamps() {
    assert_eq!(ratio_pct(1, 0), None);
    assert_eq!(ratio_pct(1, 4), Some(25.0));
    assert_eq!(ratio_pct(5, 4), Some(100.0));
    assert_eq!(pct_clamp(f64::NAN), 0.0);
}
