//! Tests against real processes, sockets and (absent) systemd — no mocks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nightowl_proto::{CheckResult, ProbeStatus};

use super::*;
use crate::probes::ProbeSpec;

fn context(dir: &tempfile::TempDir) -> ProbeContext {
    ProbeContext { state_dir: dir.path().to_path_buf() }
}

fn config(name: &str) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        interval: None,
        process: None,
        process_match: None,
        port: None,
        host: None,
        timeout: None,
        systemd: None,
        windows: None,
    }
}

fn metric(result: &CheckResult, key: &str) -> Option<f64> {
    result.metrics.get(key).copied()
}

async fn sample_one(probe: &mut ServiceProbe) -> CheckResult {
    let mut results = probe.sample().await;
    assert_eq!(results.len(), 1, "one result per sample");
    results.remove(0)
}

/// Samples until `done` holds (a spawned process needs a moment to exec), at most 5 s.
async fn sample_until(probe: &mut ServiceProbe, done: impl Fn(&CheckResult) -> bool) -> CheckResult {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let result = sample_one(probe).await;
        if done(&result) || Instant::now() > deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `sleep 300` whose executable is a symlink called `name` (so the kernel's process
/// name is `name` cut to 15 bytes and argv[0] ends with `name`).
fn spawn_named_sleep(dir: &Path, name: &str) -> Child {
    let link: PathBuf = dir.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink("/usr/bin/sleep", &link).unwrap();
    }
    Command::new(&link).arg("300").spawn().unwrap()
}

/// Kills `child` from another thread after `delay`; returns when it was killed.
fn kill_later(mut child: Child, delay: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let killed_at = Instant::now();
        child.kill().unwrap();
        child.wait().unwrap();
        killed_at
    })
}

/// Start → running; kill → `changed` at once → not running; start again → a restart.
async fn exit_seen_at_once_and_restart_counted(polling: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Longer than 15 bytes: Linux truncates the process name; argv[0] must decide.
    let name = format!("nightowl-exit-{}-{}", if polling { "poll" } else { "fd" }, std::process::id());
    let mut check = config("worker");
    check.process = Some(name.clone());
    check.validate().unwrap();
    let mut probe = ServiceProbe::new(&check, &context(&dir));
    if polling {
        let Watch::Process(watch) = probe.watch else { panic!("a process watch") };
        probe.watch = Watch::Process(Box::new(watch.polling_only()));
    }

    let before = sample_one(&mut probe).await;
    assert_eq!(before.status, ProbeStatus::Ok as i32);
    assert_eq!(metric(&before, "running"), Some(0.0), "{before:?}");
    assert_eq!(metric(&before, "pid"), None);

    let child = spawn_named_sleep(dir.path(), &name);
    let pid = child.id();
    let up = sample_until(&mut probe, |result| metric(result, "running") == Some(1.0)).await;
    assert_eq!(up.check_id, "service:worker");
    assert_eq!(up.kind, "service");
    assert_eq!(metric(&up, "running"), Some(1.0), "{up:?}");
    assert_eq!(metric(&up, "up"), Some(1.0), "the default service_down rule's metric");
    assert_eq!(metric(&up, "count"), Some(1.0));
    assert_eq!(metric(&up, "pid"), Some(f64::from(pid)));
    assert_eq!(metric(&up, "restarts"), Some(0.0));
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = metric(&up, "started_at_s").unwrap();
    assert!((now_s - started).abs() < 10.0, "started_at_s {started} vs now {now_s}");

    // Nothing exits: no spurious change.
    assert!(tokio::time::timeout(Duration::from_millis(400), probe.changed()).await.is_err());

    let killer = kill_later(child, Duration::from_millis(300));
    tokio::time::timeout(Duration::from_secs(5), probe.changed()).await.expect("changed() after the exit");
    let resolved_at = Instant::now();
    let killed_at = killer.join().unwrap();
    assert!(resolved_at >= killed_at, "changed() resolved before the kill");
    let latency = resolved_at - killed_at;
    println!("kill -> changed() latency ({}): {latency:?}", if polling { "polling" } else { "pidfd" });
    assert!(latency < Duration::from_secs(2), "exit seen after {latency:?}");

    let down = sample_one(&mut probe).await;
    assert_eq!(down.status, ProbeStatus::Ok as i32, "down is a metric, not an unknown");
    assert_eq!(metric(&down, "running"), Some(0.0), "{down:?}");
    assert_eq!(metric(&down, "up"), Some(0.0));
    assert_eq!(metric(&down, "count"), Some(0.0));
    assert_eq!(metric(&down, "restarts"), Some(0.0));
    // Nothing watched now: changed() stays pending.
    assert!(tokio::time::timeout(Duration::from_millis(300), probe.changed()).await.is_err());

    let mut again = spawn_named_sleep(dir.path(), &name);
    let back = sample_until(&mut probe, |result| metric(result, "running") == Some(1.0)).await;
    assert_eq!(metric(&back, "running"), Some(1.0), "{back:?}");
    assert_eq!(metric(&back, "pid"), Some(f64::from(again.id())));
    assert_eq!(metric(&back, "restarts"), Some(1.0), "{back:?}");
    again.kill().unwrap();
    again.wait().unwrap();
}

#[tokio::test]
async fn process_exit_is_seen_at_once_through_a_pidfd() {
    exit_seen_at_once_and_restart_counted(false).await;
}

#[tokio::test]
async fn process_exit_is_seen_at_once_by_polling() {
    exit_seen_at_once_and_restart_counted(true).await;
}

#[tokio::test]
async fn cmdline_regex_matches_a_long_name() {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().unwrap();
    let name = format!("nightowl-test-worker-{}", std::process::id());
    let mut children: Vec<Child> =
        (0..2).map(|_| Command::new("/usr/bin/sleep").arg0(&name).arg("300").spawn().unwrap()).collect();
    let lowest = children.iter().map(Child::id).min().unwrap();

    let mut check = config("worker");
    check.process = Some(format!("^{} 300$", regex_lite::escape(&name)));
    check.process_match = Some(ProcessMatch::Cmdline);
    check.validate().unwrap();
    let mut probe = ServiceProbe::new(&check, &context(&dir));
    let result = sample_until(&mut probe, |result| metric(result, "count") == Some(2.0)).await;
    assert_eq!(metric(&result, "running"), Some(1.0), "{result:?}");
    assert_eq!(metric(&result, "count"), Some(2.0), "{result:?}");
    assert_eq!(metric(&result, "pid"), Some(f64::from(lowest)));
    assert!(result.message.contains("2 processes"), "{}", result.message);

    // By name the kernel calls them "sleep"; the long argv[0] alone does not match.
    let mut by_name = config("by-name");
    by_name.process = Some(name.clone());
    let result = sample_one(&mut ServiceProbe::new(&by_name, &context(&dir))).await;
    assert_eq!(metric(&result, "running"), Some(0.0), "{result:?}");

    // The agent never matches itself, even when the regex fits its own command line.
    let mut itself = config("itself");
    itself.process = Some(regex_lite::escape(&std::env::args().next().unwrap()));
    itself.process_match = Some(ProcessMatch::Cmdline);
    let result = sample_one(&mut ServiceProbe::new(&itself, &context(&dir))).await;
    assert_ne!(metric(&result, "pid"), Some(f64::from(std::process::id())), "{result:?}");

    for child in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "running"), Some(0.0), "{result:?}");
}

#[tokio::test]
async fn port_listening_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut check = config("db-port");
    check.port = Some(port);
    check.validate().unwrap();
    let mut probe = ServiceProbe::new(&check, &context(&dir));

    let up = sample_one(&mut probe).await;
    assert_eq!(up.status, ProbeStatus::Ok as i32);
    assert_eq!(metric(&up, "listening"), Some(1.0), "{up:?}");
    assert_eq!(metric(&up, "up"), Some(1.0));
    assert!(metric(&up, "connect_ms").is_some_and(|ms| (0.0..2000.0).contains(&ms)), "{up:?}");

    drop(listener);
    let down = sample_one(&mut probe).await;
    assert_eq!(down.status, ProbeStatus::Ok as i32, "closed is a metric, not an unknown");
    assert_eq!(metric(&down, "listening"), Some(0.0), "{down:?}");
    assert_eq!(metric(&down, "up"), Some(0.0));
    assert_eq!(metric(&down, "connect_ms"), None);
    assert!(down.message.contains(&format!("127.0.0.1:{port}")), "{}", down.message);

    let mut unresolvable = config("nowhere");
    unresolvable.port = Some(80);
    unresolvable.host = Some("nightowl-test.invalid".into());
    unresolvable.timeout = Some(HumanDuration(Duration::from_secs(1)));
    let result = sample_one(&mut ServiceProbe::new(&unresolvable, &context(&dir))).await;
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
}

#[tokio::test]
async fn systemd_absent_or_unreachable_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut check = config("web");
    check.systemd = Some("-.mount".into());
    check.validate().unwrap();
    let mut probe = ServiceProbe::new(&check, &context(&dir));
    let result = sample_one(&mut probe).await;
    if Path::new("/run/systemd/system").exists() {
        // A systemd host: the root mount is always active.
        assert_eq!(result.status, ProbeStatus::Ok as i32, "{result:?}");
        assert_eq!(metric(&result, "active"), Some(1.0), "{result:?}");
        assert!(result.message.contains("ActiveState=active"), "{}", result.message);
    } else {
        assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
        assert!(result.message.contains("systemd is not running on this host"), "{}", result.message);
        assert!(result.message.contains("process ="), "{}", result.message);
        assert!(result.metrics.is_empty());
        // No connection, nothing to wait for.
        assert!(tokio::time::timeout(Duration::from_millis(200), probe.changed()).await.is_err());
    }

    // A bus that is not there: UNKNOWN naming the failed step, no panic, no loop.
    let mut unreachable = ServiceProbe::new(&check, &context(&dir));
    unreachable.watch = Watch::Systemd(Box::new(systemd::SystemdWatch::at_address(
        "nginx",
        &format!("unix:path={}", dir.path().join("no-bus").display()),
    )));
    let result = sample_one(&mut unreachable).await;
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
    assert!(result.message.contains("not reachable over D-Bus"), "{}", result.message);
    assert!(tokio::time::timeout(Duration::from_millis(200), unreachable.changed()).await.is_err());
}

#[tokio::test]
async fn windows_service_elsewhere_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut check = config("spooler");
    check.windows = Some("Spooler".into());
    check.validate().unwrap();
    let result = sample_one(&mut ServiceProbe::new(&check, &context(&dir))).await;
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
    assert!(result.message.contains("only on Windows"), "{}", result.message);
}

#[test]
fn validate_names_the_field() {
    let with = |edit: &dyn Fn(&mut ServiceConfig)| {
        let mut check = config("svc");
        edit(&mut check);
        check
    };
    let cases: Vec<(ServiceConfig, &str)> = vec![
        (with(&|_| {}), "set exactly one of process, port, systemd, windows (found none)"),
        (
            with(&|c| {
                c.process = Some("a".into());
                c.port = Some(1);
            }),
            "found process and port",
        ),
        (
            with(&|c| {
                c.systemd = Some("a".into());
                c.windows = Some("b".into());
            }),
            "found systemd and windows",
        ),
        (
            with(&|c| {
                c.name = "has space".into();
                c.port = Some(1);
            }),
            "name",
        ),
        (with(&|c| c.process = Some(String::new())), "process: empty"),
        (with(&|c| c.process = Some("/usr/bin/x".into())), "process: \"/usr/bin/x\" is not a process name"),
        (
            with(&|c| {
                c.process = Some("(unclosed".into());
                c.process_match = Some(ProcessMatch::Cmdline);
            }),
            "process: invalid regex",
        ),
        (
            with(&|c| {
                c.process = Some(String::new());
                c.process_match = Some(ProcessMatch::Cmdline);
            }),
            "process: empty regex",
        ),
        (
            with(&|c| {
                c.port = Some(80);
                c.process_match = Some(ProcessMatch::Cmdline);
            }),
            "match: only applies to process",
        ),
        (with(&|c| c.port = Some(0)), "port: 0 is not a port"),
        (
            with(&|c| {
                c.process = Some("x".into());
                c.host = Some("h".into());
            }),
            "host: only applies to port",
        ),
        (
            with(&|c| {
                c.port = Some(1);
                c.host = Some("two words".into());
            }),
            "host:",
        ),
        (
            with(&|c| {
                c.systemd = Some("x".into());
                c.timeout = Some(HumanDuration(Duration::from_secs(1)));
            }),
            "timeout: only applies to port",
        ),
        (
            with(&|c| {
                c.port = Some(1);
                c.timeout = Some(HumanDuration(Duration::ZERO));
            }),
            "timeout: must be more than 0",
        ),
        (
            with(&|c| {
                c.port = Some(1);
                c.timeout = Some(HumanDuration(Duration::from_secs(61)));
            }),
            "timeout: at most",
        ),
        (
            with(&|c| c.systemd = Some("nginx service".into())),
            "systemd: \"nginx service\" is not a unit name",
        ),
        (with(&|c| c.systemd = Some(String::new())), "systemd:"),
        (with(&|c| c.windows = Some("a\\b".into())), "windows:"),
        (with(&|c| c.windows = Some(String::new())), "windows:"),
    ];
    for (check, expected) in cases {
        let error = check.validate().expect_err(expected);
        assert!(error.contains(expected), "{check:?}: {error:?} lacks {expected:?}");
    }
    for good in [
        with(&|c| c.process = Some("postgres".into())),
        with(&|c| {
            c.process = Some("worker\\.py".into());
            c.process_match = Some(ProcessMatch::Cmdline);
        }),
        with(&|c| {
            c.port = Some(5432);
            c.host = Some("db.local".into());
            c.timeout = Some(HumanDuration(Duration::from_secs(5)));
        }),
        with(&|c| c.systemd = Some("nginx".into())),
        with(&|c| c.systemd = Some("getty@tty1.service".into())),
        with(&|c| c.windows = Some("Spooler".into())),
    ] {
        assert_eq!(good.validate(), Ok(()), "{good:?}");
    }
}

#[test]
fn toml_keys() {
    let check: ServiceConfig =
        toml::from_str("name = \"w\"\nprocess = \"^python3 worker\"\nmatch = \"cmdline\"\ninterval = \"5s\"")
            .unwrap();
    assert_eq!(check.process_match, Some(ProcessMatch::Cmdline));
    assert_eq!(check.interval, Some(HumanDuration(Duration::from_secs(5))));
    let check: ServiceConfig =
        toml::from_str("name = \"p\"\nport = 5432\nhost = \"::1\"\ntimeout = \"500ms\"").unwrap();
    assert_eq!(check.port, Some(5432));
    assert_eq!(check.timeout, Some(HumanDuration(Duration::from_millis(500))));
    for bad in [
        "name = \"x\"\nprocess = \"a\"\nmatch = \"exe\"",
        "name = \"x\"\nport = 70000",
        "name = \"x\"\nunit = \"nginx\"",
    ] {
        assert!(toml::from_str::<ServiceConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn unit_names_get_a_suffix() {
    assert_eq!(systemd::unit_name("nginx"), "nginx.service");
    assert_eq!(systemd::unit_name("nginx.service"), "nginx.service");
    assert_eq!(systemd::unit_name("-.mount"), "-.mount");
    assert_eq!(systemd::unit_name("backup.timer"), "backup.timer");
}

/// The scheduler's path: `ProbeSpec::build` → `AnyProbe::sample` / `AnyProbe::changed`.
#[tokio::test]
async fn dispatch_through_the_probe_spec() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("nightowl-spec-{}", std::process::id());
    let child = spawn_named_sleep(dir.path(), &name);
    let mut check = config("spec");
    check.process = Some(name);
    let spec = ProbeSpec::Service(check);
    assert_eq!(spec.family(), "service");
    let mut probe = spec.build(&context(&dir));

    let deadline = Instant::now() + Duration::from_secs(5);
    let up = loop {
        let results = probe.sample().await;
        assert_eq!(results.len(), 1);
        if metric(&results[0], "running") == Some(1.0) || Instant::now() > deadline {
            break results.into_iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(up.check_id, "service:spec");
    assert_eq!(metric(&up, "running"), Some(1.0), "{up:?}");

    let killer = kill_later(child, Duration::from_millis(200));
    tokio::time::timeout(Duration::from_secs(5), probe.changed()).await.expect("changed() after the exit");
    let latency = Instant::now() - killer.join().unwrap();
    println!("kill -> AnyProbe::changed() latency: {latency:?}");
    let down = probe.sample().await;
    assert_eq!(metric(&down[0], "running"), Some(0.0), "{down:?}");
}

/// Against a real systemd manager on the bus at `NIGHTOWL_TEST_SYSTEMD_BUS`, whose unit
/// `NIGHTOWL_TEST_SYSTEMD_UNIT` runs a long `sleep`; `systemctl --user` must reach the
/// same manager. On a host without systemd as PID 1 (which `systemd --user` refuses),
/// a user manager can run in a private mount namespace:
///
/// ```sh
/// export XDG_RUNTIME_DIR=/tmp/sd/run XDG_CONFIG_HOME=/tmp/sd/config
/// mkdir -p -m 700 $XDG_RUNTIME_DIR $XDG_CONFIG_HOME/systemd/user
/// printf '[Service]\nExecStart=/usr/bin/sleep 300\n' > $XDG_CONFIG_HOME/systemd/user/nightowl-test.service
/// env -u DBUS_SESSION_BUS_ADDRESS setsid unshare -m --propagation private sh -c \
///   'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec systemd --user' &
/// busctl --user list >/dev/null   # starts the user bus; systemd then joins it
/// NIGHTOWL_TEST_SYSTEMD_BUS=unix:path=$XDG_RUNTIME_DIR/bus NIGHTOWL_TEST_SYSTEMD_UNIT=nightowl-test.service \
///   cargo test -p nightowl-agent --lib systemd_unit_stop
/// ```
/// Without them it says SKIP and why (a container has no systemd manager to drive).
#[tokio::test]
async fn systemd_unit_stop_is_signalled() {
    let (Ok(address), Ok(unit)) =
        (std::env::var("NIGHTOWL_TEST_SYSTEMD_BUS"), std::env::var("NIGHTOWL_TEST_SYSTEMD_UNIT"))
    else {
        eprintln!(
            "SKIP: systemd_unit_stop_is_signalled needs a systemd manager: set \
             NIGHTOWL_TEST_SYSTEMD_BUS and NIGHTOWL_TEST_SYSTEMD_UNIT (see the test's doc)"
        );
        return;
    };
    let systemctl = |verb: &str| {
        let status = Command::new("systemctl").args(["--user", verb, &unit]).status().unwrap();
        assert!(status.success(), "systemctl --user {verb} {unit}");
    };
    systemctl("start");
    let dir = tempfile::tempdir().unwrap();
    let mut check = config("unit");
    check.systemd = Some(unit.clone());
    let mut probe = ServiceProbe::new(&check, &context(&dir));
    probe.watch = Watch::Systemd(Box::new(systemd::SystemdWatch::at_address(&unit, &address)));

    let up = sample_one(&mut probe).await;
    assert_eq!(up.status, ProbeStatus::Ok as i32, "{up:?}");
    assert_eq!(metric(&up, "active"), Some(1.0), "{up:?}");
    assert_eq!(metric(&up, "up"), Some(1.0));
    assert!(up.message.contains("ActiveState=active SubState=running"), "{}", up.message);
    assert!(metric(&up, "n_restarts").is_some(), "{up:?}");
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(metric(&up, "active_since_s").is_some_and(|since| since > 1e9 && since <= now_s + 1.0), "{up:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), probe.changed()).await.is_err(),
        "no change yet"
    );

    let stopper = {
        let unit = unit.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let stopped_at = Instant::now();
            let status = Command::new("systemctl").args(["--user", "stop", &unit]).status().unwrap();
            assert!(status.success());
            stopped_at
        })
    };
    tokio::time::timeout(Duration::from_secs(5), probe.changed())
        .await
        .expect("PropertiesChanged after stop");
    let latency = Instant::now() - stopper.join().unwrap();
    println!("systemctl stop -> changed() latency: {latency:?}");
    let mut down = sample_one(&mut probe).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&down, "active") != Some(0.0) || down.message.contains("deactivating") {
        assert!(Instant::now() < deadline, "{down:?}");
        let _ = tokio::time::timeout(Duration::from_millis(500), probe.changed()).await;
        down = sample_one(&mut probe).await;
    }
    assert_eq!(down.status, ProbeStatus::Ok as i32, "{down:?}");
    assert!(down.message.contains("ActiveState=inactive"), "{}", down.message);
    assert_eq!(metric(&down, "up"), Some(0.0));
    assert_eq!(metric(&down, "active_since_s"), None);

    // A unit that does not exist.
    let mut missing = ServiceProbe::new(&check, &context(&dir));
    missing.watch =
        Watch::Systemd(Box::new(systemd::SystemdWatch::at_address("nightowl-no-such-unit", &address)));
    let result = sample_one(&mut missing).await;
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
    assert!(result.message.contains("not found"), "{}", result.message);
}
