//! `nightowl-agent check` with the real binary: `[[command]]` plugins (a script with
//! perfdata, a real Nagios plugin, a hanging one), the disk `window` key, and the host
//! probe's reboot detection through the state directory.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nightowl_tests::{agent_bin, run};

const CHECK_DUMMY: &str = "/usr/lib/nagios/plugins/check_dummy";

/// The output line of `check_id` (`  <id>  <status>  <metrics>  (<message>)`), not the
/// family's heading.
fn line<'a>(output: &'a str, check_id: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.starts_with("  ") && line.split_whitespace().next() == Some(check_id))
        .unwrap_or_else(|| panic!("no {check_id} in:\n{output}"))
}

fn check(config: &Path) -> String {
    let output = run(Command::new(agent_bin()).arg("check").arg("--config").arg(config));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "check failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn check_runs_plugins_and_reports_a_reboot_without_recording_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check_db");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"CRITICAL - db down | conns=0;5;10;0 'rt time'=1500ms;;\"\nexit 2\n",
    )
    .unwrap();
    let mut config = format!(
        "[agent]\nstate_dir = \"state\"\n\
         [disk]\nwindow = \"5m\"\n\
         [[command]]\nname = \"db\"\ncommand = [\"/bin/sh\", \"{}\"]\n\
         [[command]]\nname = \"hang\"\ncommand = [\"/bin/sleep\", \"30\"]\ntimeout = \"300ms\"\n",
        script.display()
    );
    let dummy = Path::new(CHECK_DUMMY).exists();
    if dummy {
        config.push_str(&format!(
            "[[command]]\nname = \"dummy\"\ncommand = [\"{CHECK_DUMMY}\", \"1\", \"meh\"]\n"
        ));
    } else {
        eprintln!("SKIP: {CHECK_DUMMY} is missing (tests/run.sh installs monitoring-plugins-basic)");
    }
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).unwrap();

    // The previous run recorded another boot.
    let probes = dir.path().join("state/probes");
    std::fs::create_dir_all(&probes).unwrap();
    let other_boot = if Path::new("/proc/sys/kernel/random/boot_id").exists() {
        "boot_id 00000000-0000-4000-8000-000000000000\n"
    } else {
        "boot_time 1000000000\n"
    };
    std::fs::write(probes.join("host-boot"), other_boot).unwrap();

    // Built (once) before the clock starts.
    let _ = agent_bin();
    let started = Instant::now();
    let output = check(&config_path);
    assert!(started.elapsed() < Duration::from_secs(20), "the hanging plugin held check up: {output}");

    let db = line(&output, "command:db");
    assert!(db.contains(" critical "), "{db}");
    for metric in ["conns=0 ", "conns_warn=5 ", "conns_crit=10 ", "rt_time=1.50 ", "exit_code=2 "] {
        assert!(db.contains(metric), "{metric} in {db}");
    }
    assert!(db.ends_with("(CRITICAL - db down)"), "{db}");

    let hang = line(&output, "command:hang");
    assert!(hang.contains(" unknown ") && hang.contains("(timed out after 300ms"), "{hang}");

    if dummy {
        let dummy = line(&output, "command:dummy");
        assert!(dummy.contains(" warning ") && dummy.ends_with("(WARNING: meh)"), "{dummy}");
    }

    let host = line(&output, "host");
    assert!(host.contains(" rebooted=1 ") && host.contains(" boot_time_s="), "{host}");
    // `check` does not record what it saw: the running agent must still report the
    // reboot, so a second `check` sees it too and the state file is untouched.
    let output = check(&config_path);
    let host = line(&output, "host");
    assert!(host.contains(" rebooted=1 "), "{host}");
    assert_eq!(std::fs::read_to_string(probes.join("host-boot")).unwrap(), other_boot);
}
