//! Probe-level tests against real files, real processes and real restic/borg repositories.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use nightowl_proto::{CheckResult, ProbeStatus};

use super::*;

fn config(name: &str) -> BackupConfig {
    toml::from_str(&format!("name = {name:?}")).unwrap()
}

fn context(dir: &Path) -> ProbeContext {
    ProbeContext { state_dir: dir.join("state") }
}

async fn sample_one(probe: &mut BackupProbe) -> CheckResult {
    let mut results = probe.sample().await;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

fn metric(result: &CheckResult, name: &str) -> Option<f64> {
    result.metrics.get(name).copied()
}

fn now_s() -> f64 {
    unix_seconds(SystemTime::now())
}

fn assert_ok(result: &CheckResult) {
    assert_eq!(result.status, ProbeStatus::Ok as i32, "{result:?}");
}

fn assert_unknown(result: &CheckResult) {
    assert_eq!(result.status, ProbeStatus::Unknown as i32, "{result:?}");
}

fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program).arg(version_flag).output().is_ok_and(|output| output.status.success())
}

/// Runs a setup command of a test, failing loudly with its output.
fn setup(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn set_mtime(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

// ---------------------------------------------------------------- validate

#[test]
fn validate_names_the_key() {
    let ok: &[&str] = &[
        r#"path = "/backups/db-*.tar.zst"
           max_age = "26h""#,
        r#"log = "/var/log/backup.log"
           success = "^done""#,
        r#"log = "/var/log/backup.log"
           failure = "(?i)error""#,
        r#"restic_repo = "/srv/restic"
           restic_password_file = "/etc/restic.pass"
           restic_args = ["--host", "db1"]
           timeout = "2m""#,
        r#"borg_repo = "ssh://backup@nas/./db"
           borg_passphrase_file = "/etc/borg.pass""#,
        r#"command = ["/usr/local/bin/check-backup", "--job", "db"]"#,
        r#"path = "/b/*"
           settle = "0s"
           shrink_tolerance_pct = 5.0
           log = "/var/log/b.log"
           success = "ok"
           command = ["true"]"#,
    ];
    for body in ok {
        let parsed: BackupConfig = toml::from_str(&format!("name = \"db\"\n{body}")).unwrap();
        assert_eq!(parsed.validate(), Ok(()), "{body}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "set at least one of path, log, restic_repo, borg_repo, command"),
        ("max_age = \"1h\"", "set at least one of"),
        ("path = \"backups/*\"", "path: \"backups/*\" is not absolute"),
        ("path = \"\"", "path: empty"),
        ("path = \"/b/[\"", "path: invalid glob pattern"),
        ("path = \"/b/*\"\nshrink_tolerance_pct = 120.0", "shrink_tolerance_pct: 120 is out of range"),
        ("path = \"/b/*\"\nsettle = \"48h\"", "settle:"),
        ("settle = \"1m\"\ncommand = [\"true\"]", "settle: only used with path"),
        ("log = \"/var/log/b.log\"", "log: set success and/or failure"),
        ("log = \"b.log\"\nsuccess = \"ok\"", "log: \"b.log\" is not an absolute file path"),
        ("log = \"/var/log/b.log\"\nfailure = \"(unclosed\"", "failure: invalid regex"),
        ("log = \"/var/log/b.log\"\nsuccess = \"\"", "success: empty regex"),
        ("success = \"ok\"\ncommand = [\"true\"]", "success: only used with log"),
        (
            "log = \"/var/log/b.log\"\nfailure = \"error\"\nmax_age = \"1h\"",
            "max_age: no source reports successes",
        ),
        (
            "restic_password_file = \"/p\"\ncommand = [\"true\"]",
            "restic_password_file: only used with restic_repo",
        ),
        (
            "restic_args = [\"--host\", \"x\"]\ncommand = [\"true\"]",
            "restic_args: only used with restic_repo",
        ),
        ("restic_repo = \"\"", "restic_repo: empty"),
        (
            "borg_passphrase_file = \"/p\"\ncommand = [\"true\"]",
            "borg_passphrase_file: only used with borg_repo",
        ),
        ("borg_repo = \"/r\"\nborg_binary = \" \"", "borg_binary: empty"),
        ("command = []", "command: empty"),
        ("command = [\"\"]", "command: the program (first element) is empty"),
        ("command = [\"true\"]\ntimeout = \"1ms\"", "timeout:"),
        ("command = [\"true\"]\nmax_age = \"0s\"", "max_age: must be more than 0"),
    ];
    for (body, expected) in bad {
        let parsed: BackupConfig = toml::from_str(&format!("name = \"db\"\n{body}")).unwrap();
        let error = parsed.validate().unwrap_err();
        assert!(error.contains(expected), "{body}: {error}");
    }
    let bad_name: BackupConfig = toml::from_str("name = \"a b\"\ncommand = [\"true\"]").unwrap();
    assert!(bad_name.validate().unwrap_err().starts_with("name"));
    let unknown = toml::from_str::<BackupConfig>("name = \"db\"\nrestic_repository = \"/r\"").unwrap_err();
    assert!(unknown.to_string().contains("unknown field `restic_repository`"), "{unknown}");
}

// ---------------------------------------------------------------- combine

fn evidence(
    last_success: Option<f64>,
    last_result: Option<bool>,
    size: Option<u64>,
) -> Result<Evidence, String> {
    Ok(Evidence { last_success, reports_success: true, last_result, size_bytes: size, detail: "d".into() })
}

#[test]
fn combining_sources() {
    let now = 100_000.0;
    let hour = Some(Duration::from_secs(3600));
    let reports = vec![
        Report { source: "path", outcome: evidence(Some(now - 600.0), Some(true), Some(42)) },
        Report { source: "log", outcome: evidence(Some(now - 60.0), Some(true), None) },
    ];
    let result = combine("backup:db", &reports, now, hour);
    assert_ok(&result);
    // The stalest evidence counts.
    assert_eq!(metric(&result, "last_success_s"), Some(now - 600.0));
    assert_eq!(metric(&result, "age_s"), Some(600.0));
    assert_eq!(metric(&result, "stale"), Some(0.0));
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "size_bytes"), Some(42.0));
    assert_eq!(metric(&result, "sources_unknown"), Some(0.0));
    assert_eq!(result.message, "path: d; log: d");

    // One failure is a failure; one source that could not be checked does not hide it.
    let reports = vec![
        Report { source: "log", outcome: evidence(Some(now - 60.0), Some(false), None) },
        Report { source: "restic", outcome: Err("restic exited with 1: Fatal: no repo".into()) },
    ];
    let result = combine("backup:db", &reports, now, None);
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "sources_unknown"), Some(1.0));
    assert_eq!(metric(&result, "stale"), None);
    assert!(result.message.contains("restic: cannot check: restic exited with 1"), "{}", result.message);

    // A source that has seen no success yet: no last success at all, hence stale.
    let reports = vec![
        Report { source: "path", outcome: evidence(Some(now - 60.0), Some(true), None) },
        Report { source: "log", outcome: evidence(None, None, None) },
    ];
    let result = combine("backup:db", &reports, now, hour);
    assert_eq!(metric(&result, "last_success_s"), None);
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "stale"), Some(1.0));
    assert!(result.message.starts_with("stale: no success seen (max_age 1h)"), "{}", result.message);

    // …unless that source cannot report successes (a log with only a failure pattern).
    let failures_only = Evidence { reports_success: false, ..evidence(None, None, None).unwrap() };
    let reports = vec![
        Report { source: "path", outcome: evidence(Some(now - 7200.0), Some(true), None) },
        Report { source: "log", outcome: Ok(failures_only) },
    ];
    let result = combine("backup:db", &reports, now, hour);
    assert_eq!(metric(&result, "last_success_s"), Some(now - 7200.0));
    assert_eq!(metric(&result, "stale"), Some(1.0));
    assert!(result.message.starts_with("stale: last success 2h ago, max_age 1h"), "{}", result.message);

    // Nothing could be checked: UNKNOWN with every reason.
    let reports = vec![
        Report { source: "restic", outcome: Err("timed out".into()) },
        Report { source: "borg", outcome: Err("not found".into()) },
    ];
    let result = combine("backup:db", &reports, now, hour);
    assert_unknown(&result);
    assert_eq!(result.message, "restic: cannot check: timed out; borg: cannot check: not found");
    assert!(result.metrics.is_empty());
}

#[test]
fn helpers() {
    assert_eq!(human_age(59.4), "59s");
    assert_eq!(human_age(3.0 * 3600.0 + 125.0), "3h 2m");
    assert_eq!(human_age(-5.0), "0s");
    assert_eq!(human_bytes(512), "512 B");
    assert_eq!(human_bytes(1536), "1.5 KiB");
    assert_eq!(first_line("\n  \n first \nsecond", "err"), Some("first".into()));
    assert_eq!(first_line("", "err line\n"), Some("err line".into()));
    assert_eq!(first_line(" ", ""), None);
    let long = "é".repeat(MAX_LINE_BYTES);
    let capped = first_line(&long, "").unwrap();
    assert!(capped.len() <= MAX_LINE_BYTES && capped.len() >= MAX_LINE_BYTES - 1, "cut on a char boundary");
}

// ---------------------------------------------------------------- path

#[tokio::test]
async fn path_freshness_empty_and_shrunk_files() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let mut config = config("files");
    config.path = Some(format!("{}/db-*.tar", backups.display()).into());
    config.max_age = Some(HumanDuration(Duration::from_secs(26 * 3600)));
    config.settle = Some(HumanDuration(Duration::ZERO));
    config.validate().unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));

    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "stale"), Some(1.0));
    assert!(result.message.contains("no file matches"), "{}", result.message);

    // Older than max_age: stale, but not a failure.
    let old = backups.join("db-1.tar");
    std::fs::write(&old, [1u8; 100]).unwrap();
    set_mtime(&old, Duration::from_secs(30 * 3600));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "stale"), Some(1.0));
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "size_bytes"), Some(100.0));
    assert!((metric(&result, "age_s").unwrap() - 30.0 * 3600.0).abs() < 60.0);

    // A fresh, bigger file: fresh.
    let fresh = backups.join("db-2.tar");
    std::fs::write(&fresh, [1u8; 200]).unwrap();
    set_mtime(&fresh, Duration::from_secs(3600));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "stale"), Some(0.0));
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "size_bytes"), Some(200.0));
    let fresh_success = metric(&result, "last_success_s").unwrap();
    assert!((now_s() - 3600.0 - fresh_success).abs() < 60.0);

    // Smaller than the previous newest: a failure; the last success stays.
    let shrunk = backups.join("db-3.tar");
    std::fs::write(&shrunk, [1u8; 150]).unwrap();
    set_mtime(&shrunk, Duration::from_secs(1800));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "last_success_s"), Some(fresh_success));
    assert!(result.message.contains("shrank"), "{}", result.message);
    // Still a failure at the next sample.
    assert_eq!(metric(&sample_one(&mut probe).await, "last_result"), Some(0.0));

    // Empty newest file: a failure.
    let empty = backups.join("db-4.tar");
    std::fs::write(&empty, b"").unwrap();
    set_mtime(&empty, Duration::from_secs(900));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "size_bytes"), Some(0.0));
    assert!(result.message.contains("is empty"), "{}", result.message);

    // A good one again, then a restart: the previous newest is remembered, so a shrink
    // right after the restart is still caught.
    let good = backups.join("db-5.tar");
    std::fs::write(&good, [1u8; 300]).unwrap();
    set_mtime(&good, Duration::from_secs(600));
    assert_eq!(metric(&sample_one(&mut probe).await, "last_result"), Some(1.0));
    drop(probe);
    let small = backups.join("db-6.tar");
    std::fs::write(&small, [1u8; 10]).unwrap();
    set_mtime(&small, Duration::from_secs(300));
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert!(result.message.contains("shrank"), "{}", result.message);
}

#[tokio::test]
async fn path_skips_files_still_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config("settle");
    config.path = Some(format!("{}/*.dump", dir.path().display()).into());
    let done = dir.path().join("a.dump");
    std::fs::write(&done, [1u8; 50]).unwrap();
    set_mtime(&done, Duration::from_secs(7200));
    // Just created and still empty: a dump in progress, not a failure.
    std::fs::write(dir.path().join("b.dump"), b"").unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "size_bytes"), Some(50.0));
    assert!(result.message.contains("still being written"), "{}", result.message);
}

// ---------------------------------------------------------------- log

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::File::options().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

async fn changed_within(probe: &mut BackupProbe, limit: Duration) {
    if tokio::time::timeout(limit, probe.changed()).await.is_err() {
        panic!("changed() did not resolve within {limit:?}");
    }
}

#[tokio::test]
async fn log_watch_truncation_rotation_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("backup.log");
    std::fs::write(&log, "job starting\n").unwrap();
    let mut config = config("db/log");
    config.log = Some(log.clone().into());
    config.success = Some("^backup ok".into());
    config.failure = Some("(?i)error".into());
    config.max_age = Some(HumanDuration(Duration::from_secs(3600)));
    config.validate().unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));

    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), None);
    assert_eq!(metric(&result, "stale"), Some(1.0));

    append(&log, "backup ok: 12 files\n");
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    assert_eq!(metric(&result, "stale"), Some(0.0));
    let first_success = metric(&result, "last_success_s").unwrap();
    assert!((now_s() - first_success).abs() < 5.0, "{first_success}");

    // Nothing new: changed() stays pending (and being cancelled loses nothing).
    for _ in 0..3 {
        assert!(tokio::time::timeout(Duration::from_millis(100), probe.changed()).await.is_err());
    }
    append(&log, "   ERROR: disk full  \n");
    changed_within(&mut probe, Duration::from_secs(5)).await;
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "last_success_s"), Some(first_success));
    assert!(result.message.contains(": ERROR: disk full"), "{}", result.message);
    assert!(!result.message.contains("full  "), "trimmed: {}", result.message);

    // Truncated in place, then a success.
    std::fs::write(&log, "backup ok #2\n").unwrap();
    changed_within(&mut probe, Duration::from_secs(5)).await;
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);

    // Rotated: a late line in the old file is still read, then the new file from its start.
    let rotated = dir.path().join("backup.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, "error: late line in the rotated file\n");
    std::fs::write(&log, "backup ok after rotation\n").unwrap();
    changed_within(&mut probe, Duration::from_secs(5)).await;
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    let state = probe.log.as_ref().unwrap().state();
    assert_eq!(state.last_failure_line.as_deref(), Some("error: late line in the rotated file"));
    let last_success = metric(&result, "last_success_s").unwrap();

    // A restart, with the log rotated again meanwhile to an empty file: the last success
    // comes from the state file.
    drop(probe);
    assert!(dir.path().join("state/probes/backup-db%2Flog.json").is_file());
    std::fs::rename(&log, dir.path().join("backup.log.2")).unwrap();
    std::fs::write(&log, "").unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    assert!((metric(&result, "last_success_s").unwrap() - last_success).abs() < 1e-3);

    // …and the new probe watches too.
    append(&log, "ERROR after the restart\n");
    changed_within(&mut probe, Duration::from_secs(5)).await;
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(0.0));
}

#[tokio::test]
async fn log_first_start_reads_the_existing_content_and_resumes_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("job.log");
    std::fs::write(&log, "backup ok\nsomething\nERROR: yesterday failed\n").unwrap();
    set_mtime(&log, Duration::from_secs(600));
    let mut config = config("existing");
    config.log = Some(log.clone().into());
    config.success = Some("^backup ok".into());
    config.failure = Some("ERROR".into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    // The success came before a failure in the backlog: its time is unknown.
    assert_eq!(metric(&result, "last_success_s"), None);
    assert!(result.message.contains("ERROR: yesterday failed"), "{}", result.message);

    // Lines written while the agent is down are read after the restart.
    drop(probe);
    append(&log, "backup ok today\n");
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    assert!((now_s() - metric(&result, "last_success_s").unwrap()).abs() < 5.0);
}

#[tokio::test]
async fn log_in_a_missing_directory_is_unknown_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let log = logs.join("b.log");
    let mut config = config("later");
    config.log = Some(log.clone().into());
    config.success = Some("ok".into());
    config.failure = Some("failed".into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_unknown(&result);
    assert!(
        result.message.contains("b.log") && result.message.contains("cannot watch"),
        "{}",
        result.message
    );

    std::fs::create_dir(&logs).unwrap();
    std::fs::write(&log, "ok\n").unwrap();
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    // The watch was set up by that sample.
    append(&log, "ok again\n");
    changed_within(&mut probe, Duration::from_secs(5)).await;

    // The directory is removed and made again: the next sample watches it anew.
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&log, "ok\n").unwrap();
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    append(&log, "failed: the directory came back\n");
    changed_within(&mut probe, Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- command

fn command_config(argv: &[&str], timeout: Duration) -> BackupConfig {
    let mut config = config("cmd");
    config.command = Some(argv.iter().map(|arg| arg.to_string()).collect());
    config.timeout = Some(HumanDuration(timeout));
    config.validate().unwrap();
    config
}

#[tokio::test]
async fn command_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut probe =
        BackupProbe::new(&command_config(&["true"], Duration::from_secs(10)), &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0));
    let success = metric(&result, "last_success_s").unwrap();
    assert!((now_s() - success).abs() < 5.0);

    let script = ["sh", "-c", "echo 'backup db: checksum mismatch'; exit 2"];
    let mut probe = BackupProbe::new(&command_config(&script, Duration::from_secs(10)), &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert!(result.message.contains("exited 2: backup db: checksum mismatch"), "{}", result.message);

    let mut probe =
        BackupProbe::new(&command_config(&["false"], Duration::from_secs(10)), &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "last_success_s"), None);

    let started = Instant::now();
    let mut probe =
        BackupProbe::new(&command_config(&["sleep", "30"], Duration::from_millis(300)), &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_unknown(&result);
    assert!(result.message.contains("timed out"), "{}", result.message);
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut probe = BackupProbe::new(
        &command_config(&["/nonexistent/check-backup"], Duration::from_secs(5)),
        &context(dir.path()),
    );
    assert_unknown(&sample_one(&mut probe).await);
}

#[tokio::test]
async fn a_source_that_cannot_be_checked_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = command_config(&["false"], Duration::from_secs(5));
    config.restic_repo = Some(dir.path().join("no-repo").display().to_string().into());
    config.restic_binary = Some("/nonexistent/restic".into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert_eq!(metric(&result, "sources_unknown"), Some(1.0));
    assert!(
        result.message.contains("restic: cannot check: cannot run /nonexistent/restic"),
        "{}",
        result.message
    );
}

// ---------------------------------------------------------------- restic

#[tokio::test]
async fn restic_repository() {
    if !installed("restic", "version") {
        eprintln!("SKIP: restic not installed (tests/run.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let password = dir.path().join("password");
    std::fs::write(&password, "correct horse\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello backup\n").unwrap();
    std::fs::write(data.join("b.bin"), [7u8; 4096]).unwrap();
    let restic = |args: &[&str]| {
        let mut command = Command::new("restic");
        command
            .args(args)
            .arg("--no-cache")
            .env("RESTIC_REPOSITORY", &repo)
            .env("RESTIC_PASSWORD_FILE", &password);
        command
    };
    setup(&mut restic(&["init", "-q"]));

    let mut config = config("restic");
    config.restic_repo = Some(repo.display().to_string().into());
    config.restic_password_file = Some(password.clone().into());
    config.restic_args = vec!["--no-cache".to_owned()].into();
    config.max_age = Some(HumanDuration(Duration::from_secs(3600)));
    config.validate().unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));

    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert!(result.message.contains("no snapshot"), "{}", result.message);

    let before = now_s();
    setup(restic(&["backup", "-q"]).arg(&data));
    let after = now_s();
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    let last_success = metric(&result, "last_success_s").unwrap();
    assert!(before - 2.0 <= last_success && last_success <= after + 2.0, "{before} {last_success} {after}");
    assert!(metric(&result, "age_s").unwrap() < 30.0);
    assert_eq!(metric(&result, "stale"), Some(0.0));
    assert_eq!(metric(&result, "size_bytes"), Some(13.0 + 4096.0), "{}", result.message);

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not the password\n").unwrap();
    config.restic_password_file = Some(wrong.into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_unknown(&result);
    assert!(result.message.contains("wrong password"), "{}", result.message);

    config.restic_repo = Some(dir.path().join("missing").display().to_string().into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_unknown(&result);
    assert!(
        result.message.starts_with("restic: cannot check: restic exited with 1: Fatal:"),
        "{}",
        result.message
    );
}

// ---------------------------------------------------------------- borg

#[tokio::test]
async fn borg_repository() {
    if !installed("borg", "--version") {
        eprintln!("SKIP: borg not installed (tests/run.sh installs borgbackup)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello borg\n").unwrap();
    let borg = |args: &[&str]| {
        let mut command = Command::new("borg");
        command.args(args).env("BORG_PASSPHRASE", "correct horse battery");
        command
    };
    setup(borg(&["init", "-e", "repokey"]).arg(&repo));

    let mut config = config("borg");
    config.borg_repo = Some(repo.display().to_string().into());
    config.borg_passphrase_file = Some(passphrase.clone().into());
    config.max_age = Some(HumanDuration(Duration::from_secs(3600)));
    config.validate().unwrap();
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(0.0));
    assert!(result.message.contains("no archive"), "{}", result.message);

    let before = now_s();
    setup(borg(&["create"]).arg(format!("{}::first", repo.display())).arg(&data));
    let after = now_s();
    let result = sample_one(&mut probe).await;
    assert_ok(&result);
    assert_eq!(metric(&result, "last_result"), Some(1.0), "{}", result.message);
    let last_success = metric(&result, "last_success_s").unwrap();
    // borg keeps whole seconds; TZ=UTC0 makes its local time UTC.
    assert!(before - 2.0 <= last_success && last_success <= after + 2.0, "{before} {last_success} {after}");
    assert_eq!(metric(&result, "stale"), Some(0.0));
    assert!(result.message.contains("newest archive first"), "{}", result.message);

    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    config.borg_passphrase_file = Some(wrong.into());
    let mut probe = BackupProbe::new(&config, &context(dir.path()));
    let result = sample_one(&mut probe).await;
    assert_unknown(&result);
    assert!(result.message.contains("borg exited with"), "{}", result.message);
}
