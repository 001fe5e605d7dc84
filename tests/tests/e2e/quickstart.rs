//! The README's first command: `./deploy/quickstart.sh` builds (here: uses the shared
//! release build), makes a dev PKI, starts a collector and an agent, prints alert events
//! as JSON lines, and stops everything cleanly on Ctrl-C. With `--demo` it fills a tmpfs
//! past 95 % and frees it, so a firing and a resolved event must appear.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nightowl_tests::{bin_dir, run, workspace_root};

#[test]
fn quickstart_demo_prints_firing_and_resolved_and_stops_on_ctrl_c() {
    if run(Command::new("id").arg("-u")).stdout != b"0\n" {
        eprintln!("SKIP: quickstart --demo mounts a tmpfs and needs root");
        return;
    }
    let dev = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_root().join("deploy/quickstart.sh"))
        .arg("--demo")
        .env("NIGHTOWL_BIN_DIR", bin_dir())
        .env("NIGHTOWL_DEV_DIR", dev.path())
        // Port 0: the collector picks a free one and the script reads it from listen.addr.
        .env("NIGHTOWL_PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, like a terminal's foreground job: Ctrl-C goes to all of it.
        .process_group(0)
        .spawn()
        .expect("start quickstart.sh");
    let pgid = child.id();
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let stderr_text = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let mut statuses = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while statuses.len() < 2 && Instant::now() < deadline {
        let Ok(line) = received.recv_timeout(Duration::from_secs(1)) else { continue };
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("quickstart printed non-JSON {line:?}: {error}"));
        if event["check"].as_str().is_some_and(|check| check.ends_with("/demo-disk")) {
            assert_eq!(event["tenant"], "dev");
            statuses.push(event["status"].as_str().unwrap().to_owned());
        }
    }
    // Ctrl-C: SIGINT to the whole process group.
    run(Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]));
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            run(Command::new("kill").args(["-KILL", "--", &format!("-{pgid}")]));
            panic!("quickstart did not stop within 30 s of Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr_text = stderr_text.join().unwrap();
    assert_eq!(statuses, ["firing", "resolved"], "stderr:\n{stderr_text}");
    assert!(status.code().is_some(), "quickstart ended by a signal instead of cleaning up: {status:?}");
    assert!(stderr_text.contains("quickstart: stopped"), "stderr:\n{stderr_text}");
    // Nothing left behind: no daemon of this dev dir, no demo mount.
    let left = run(Command::new("pgrep").arg("-f").arg(dev.path()));
    assert!(left.stdout.is_empty(), "processes left running: {}", String::from_utf8_lossy(&left.stdout));
    let mounted = run(Command::new("mountpoint").arg("-q").arg(dev.path().join("demo-disk")));
    assert!(!mounted.status.success(), "the demo tmpfs is still mounted");
}
