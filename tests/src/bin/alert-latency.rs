//! Alert latency, end to end, with the real binaries (issue 6, part 2). A benchmark: it
//! prints figures and asserts nothing.
//!
//! 1. Service death → alert durable in the queue. The agent watches `--runs` processes
//!    by name (`[[service]] process = …`, the event-driven pidfd path; the service
//!    interval is 10 s, so a polled detection would take 5 s on average). Each run kills
//!    one of them (a different one each time, so flap detection never kicks in) at a
//!    random phase and measures from just before `kill` to
//!    - `emitted_at` of the `service_down` firing event (the collector's clock, taken
//!      while evaluating the report, just before the fsync'd commit), and
//!    - the moment this program sees the event in the queue (`events` table, polled
//!      every 5 ms read-only: an upper bound that includes the fsync).
//! 2. Once: agent SIGKILL → `agent_offline` event (`emitted_at`), with the default
//!    `[offline] after` (25 s).
//!
//! Run: `cargo run --release -p nightowl-tests --bin alert-latency -- [--runs N] [--skip-offline]`
//! (builds the release agent and collector first if needed; `NIGHTOWL_BIN_DIR` to reuse).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nightowl_tests::{Agent, Collector, Pki, wait_for};
use serde_json::Value;

/// Process names (comm) of the watched services: `nol-svc-NN`, exec'd through a symlink
/// to `sleep` so the kernel names the process after the link.
fn service_name(index: usize) -> String {
    format!("nol-svc-{index:02}")
}

struct Args {
    runs: usize,
    offline: bool,
}

fn parse_args() -> Args {
    let mut args = Args { runs: 30, offline: true };
    let mut input = std::env::args().skip(1);
    while let Some(arg) = input.next() {
        match arg.as_str() {
            "--runs" => {
                args.runs = input.next().and_then(|value| value.parse().ok()).expect("--runs N (1..=99)");
                assert!((1..=99).contains(&args.runs), "--runs N (1..=99)");
            }
            "--skip-offline" => args.offline = false,
            other => panic!("unknown argument {other:?}; usage: alert-latency [--runs N] [--skip-offline]"),
        }
    }
    args
}

/// Events after queue position `after`, read straight from the store (read-only, WAL).
fn events_after(db: &Path, after: i64) -> Vec<(i64, Value)> {
    let Ok(connection) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut statement) = connection.prepare("SELECT pos, body FROM events WHERE pos > ?1 ORDER BY pos")
    else {
        return Vec::new();
    };
    statement
        .query_map([after], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|(pos, body)| (pos, serde_json::from_str(&body).expect("event body is JSON")))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the queue every 5 ms (`wait_for`'s 100 ms would blur the figures) for the first
/// event after `cursor` that `wanted` accepts; returns when it was seen, and the event.
fn wait_event(
    db: &Path,
    cursor: &mut i64,
    timeout: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> (Instant, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let events = events_after(db, *cursor);
        let seen = Instant::now();
        for (pos, event) in events {
            *cursor = pos;
            if wanted(&event) {
                return (seen, event);
            }
        }
        assert!(seen < deadline, "no such event within {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn emitted_at(event: &Value) -> SystemTime {
    let text = event["emitted_at"].as_str().expect("emitted_at");
    let at: jiff::Timestamp = text.parse().expect("emitted_at is RFC 3339");
    let nanos = u64::try_from(at.as_nanosecond()).expect("emitted_at after 1970");
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn summary(label: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    println!(
        "{label:<44} n={:<3} p50={:>7.1} ms  p99={:>7.1} ms  max={:>7.1} ms  min={:>6.1} ms",
        values.len(),
        percentile(&values, 50.0),
        percentile(&values, 99.0),
        values[values.len() - 1],
        values[0],
    );
}

/// A pseudo-random delay in `0..max` (the kill's phase against the agent's timers).
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    let mixed = u64::from(nanos).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    Duration::from_micros(mixed % max.as_micros() as u64)
}

fn main() {
    let args = parse_args();
    let scratch = tempfile::tempdir().expect("scratch dir");
    let dir = scratch.path();
    let pki = Pki::init(&dir.join("pki"));
    std::fs::create_dir_all(dir.join("collector")).unwrap();
    let mut collector = Collector::new(&dir.join("collector"), &pki);
    collector.start();
    let db: PathBuf = dir.join("collector/data").join(nightowl_collector::queue::DB_FILE);

    let sleep = which_sleep();
    let links = dir.join("bin");
    std::fs::create_dir_all(&links).unwrap();
    let mut services: Vec<Child> = (0..args.runs)
        .map(|index| {
            let link = links.join(service_name(index));
            std::os::unix::fs::symlink(&sleep, &link).unwrap();
            Command::new(&link).arg("3600").stdin(Stdio::null()).spawn().expect("start a watched process")
        })
        .collect();

    let (cert, key) = pki.issue("bench", "latency");
    let mut agent = Agent::new(&dir.join("agent"), &collector, &pki, &cert, &key, "10s", &[]);
    let extra: String = (0..args.runs)
        .map(|index| format!("[[service]]\nname = \"{0}\"\nprocess = \"{0}\"\n", service_name(index)))
        .collect();
    // One small mount only: this measures the service path, not disk sampling.
    agent.rewrite_config(&[Path::new("/")], &extra);
    agent.start();
    wait_for("the agent's first report", Duration::from_secs(60), || {
        collector.agent("bench", "latency").filter(|row| row["last_seq"].as_u64() > Some(0)).map(|_| ())
    });
    // Let every probe take its first sample (all up: no events).
    std::thread::sleep(Duration::from_secs(3));
    let mut cursor = events_after(&db, 0).last().map_or(0, |(pos, _)| *pos);

    let mut to_emitted = Vec::new();
    let mut to_visible = Vec::new();
    for (index, service) in services.iter_mut().enumerate() {
        std::thread::sleep(Duration::from_millis(300) + jitter(Duration::from_millis(1000)));
        let check = format!("service:{}", service_name(index));
        let killed_at = SystemTime::now();
        let killed = Instant::now();
        service.kill().expect("kill the watched process");
        let (seen, event) = wait_event(&db, &mut cursor, Duration::from_secs(30), |event| {
            event["check"] == check.as_str() && event["status"] == "firing"
        });
        service.wait().expect("reap");
        let emitted = emitted_at(&event).duration_since(killed_at).unwrap_or_default();
        to_emitted.push(millis(emitted));
        to_visible.push(millis(seen - killed));
        eprintln!(
            "run {index:>2}: kill → emitted_at {:>6.1} ms, → visible in queue {:>6.1} ms",
            millis(emitted),
            millis(seen - killed)
        );
    }
    println!("\nalert latency, service death (process by name, pidfd), {} runs:", args.runs);
    summary("kill → event emitted_at (evaluated)", to_emitted);
    summary("kill → event visible in the queue (durable)", to_visible);

    if args.offline {
        let killed_at = SystemTime::now();
        let killed = Instant::now();
        agent.kill9();
        let (seen, event) =
            wait_event(&db, &mut cursor, Duration::from_secs(120), |event| event["rule"] == "agent_offline");
        let emitted = emitted_at(&event).duration_since(killed_at).unwrap_or_default();
        println!(
            "agent SIGKILL → agent_offline (default `after` 25 s): emitted_at {:.1} s, visible {:.1} s ({})",
            emitted.as_secs_f64(),
            (seen - killed).as_secs_f64(),
            event["summary"].as_str().unwrap_or("")
        );
    }
    collector.terminate();
}

fn which_sleep() -> PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .expect("coreutils sleep")
}
