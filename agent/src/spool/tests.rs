use std::collections::{HashSet, VecDeque};
use std::io::BufRead;

use nightowl_proto::ProbeStatus;
use proptest::prelude::*;

use super::*;

fn results(n: usize, width: usize) -> Vec<CheckResult> {
    (0..n)
        .map(|i| CheckResult {
            check_id: format!("disk:/{}{i}", "v".repeat(width)),
            kind: "disk".into(),
            status: ProbeStatus::Ok as i32,
            metrics: [("used_pct".to_string(), 41.5)].into_iter().collect(),
            message: String::new(),
            interval_ms: 10_000,
        })
        .collect()
}

fn big() -> SpoolLimits {
    SpoolLimits::default()
}

fn seqs(reports: &[Report]) -> Vec<u64> {
    reports.iter().map(|r| r.seq).collect()
}

fn ids_of(reports: &[Report]) -> Vec<String> {
    reports.iter().flat_map(|r| r.results.iter().map(|result| result.check_id.clone())).collect()
}

#[test]
fn an_append_over_the_report_limits_becomes_several_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    let limits = ReportLimits { max_message_bytes: 4096, max_results: 5 };
    spool.set_report_limits(limits);
    let batch = results(12, 10);
    let expected: Vec<String> = batch.iter().map(|r| r.check_id.clone()).collect();
    let appended = spool.append_report(7, batch, vec!["disk:/gone".into()], &[]).unwrap();
    assert_eq!((appended.seq, appended.reports, appended.dropped), (1, 3, 0));
    let pending = spool.pending_after(0, 100).unwrap();
    assert_eq!(seqs(&pending), [1, 2, 3]);
    assert!(pending.iter().all(|report| limits.fits(report) && report.sampled_at_ms == 7));
    assert_eq!(ids_of(&pending), expected);
    assert_eq!(pending[2].retired_checks, ["disk:/gone"], "after the last result");
    assert_eq!(spool.append(8, results(1, 0)).unwrap(), Appended::single(4, 0));
    spool.check_invariants();
    // The bound counts the parts like reports.
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), SpoolLimits { max_reports: 4, max_bytes: u64::MAX }).unwrap();
    spool.set_report_limits(limits);
    spool.append(1, results(1, 0)).unwrap();
    spool.append(1, results(1, 0)).unwrap();
    let appended = spool.append(2, results(12, 0)).unwrap();
    assert_eq!((appended.seq, appended.reports, appended.dropped), (3, 3, 1));
    assert_eq!(seqs(&spool.pending_after(0, 100).unwrap()), [2, 3, 4, 5]);
    spool.check_invariants();
}

#[test]
fn refit_rewrites_pending_reports_over_the_limits_with_new_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    spool.set_report_limits(ReportLimits { max_message_bytes: 1 << 20, max_results: 10_000 });
    spool.append(1, results(2, 0)).unwrap();
    spool.append_report(2, results(40, 60), vec!["disk:/gone".into()], &[]).unwrap();
    spool.append(3, results(1, 0)).unwrap();
    spool.ack(1).unwrap();
    let before = spool.pending_after(0, 100).unwrap();
    let order = ids_of(&before);

    // Limits that fit: nothing to do.
    assert_eq!(spool.refit().unwrap(), Refitted::default());
    assert_eq!(spool.pending_after(0, 100).unwrap(), before);

    let limits = ReportLimits { max_message_bytes: 4096, max_results: 10_000 };
    spool.set_report_limits(limits);
    let refitted = spool.refit().unwrap();
    assert_eq!((refitted.reports_before, refitted.first_seq), (2, 4));
    let after = spool.pending_after(0, 100).unwrap();
    assert_eq!(after.len() as u64, refitted.reports_after);
    assert!(after.len() > 2);
    assert_eq!(after[0].seq, 4, "no seq reused");
    assert!(after.iter().all(|report| limits.fits(report)));
    assert_eq!(ids_of(&after), order, "every result once, in order");
    let retired: Vec<(i64, &String)> =
        after.iter().flat_map(|r| r.retired_checks.iter().map(move |id| (r.sampled_at_ms, id))).collect();
    assert_eq!(retired, [(2, &"disk:/gone".to_owned())]);
    assert!(after.last().unwrap().sampled_at_ms == 3 && after.last().unwrap().retired_checks.is_empty());
    spool.check_invariants();
    // Refitted reports are acked like any; the next append follows them.
    let next = spool.append(4, results(1, 0)).unwrap();
    assert_eq!(next.seq, 4 + refitted.reports_after);
    assert_eq!(spool.ack(next.seq - 1).unwrap(), refitted.reports_after);
    assert_eq!(seqs(&spool.pending_after(0, 100).unwrap()), [next.seq]);
    spool.check_invariants();
    assert_eq!(spool.refit().unwrap(), Refitted::default());
}

#[test]
fn append_pending_ack_basics() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    let empty = spool.stats().unwrap();
    assert_eq!(empty.pending, 0);
    assert_eq!(empty.next_seq, 1);
    assert_eq!((empty.oldest_seq, empty.newest_seq), (None, None));

    for i in 0..5 {
        let a = spool.append(1_000 + i, results(2, 3)).unwrap();
        assert_eq!(a, Appended::single(i as u64 + 1, 0));
    }
    let all = spool.pending_after(0, 100).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all[2].sampled_at_ms, 1_002);
    assert_eq!(all[2].results, results(2, 3));
    assert_eq!(seqs(&spool.pending_after(2, 2).unwrap()), [3, 4]);
    assert!(spool.pending_after(5, 10).unwrap().is_empty());
    assert!(spool.pending_after(0, 0).unwrap().is_empty());

    assert_eq!(spool.ack(0).unwrap(), 0);
    assert_eq!(spool.ack(2).unwrap(), 2);
    assert_eq!(spool.ack(2).unwrap(), 0);
    assert_eq!(seqs(&spool.pending_after(0, 100).unwrap()), [3, 4, 5]);
    let s = spool.stats().unwrap();
    assert_eq!((s.pending, s.oldest_seq, s.newest_seq, s.next_seq), (3, Some(3), Some(5), 6));
    spool.check_invariants();

    // An ack beyond the newest deletes everything and keeps next_seq.
    assert_eq!(spool.ack(u64::MAX).unwrap(), 3);
    let s = spool.stats().unwrap();
    assert_eq!((s.pending, s.pending_bytes, s.next_seq), (0, 0, 6));
    assert_eq!(spool.append(0, vec![]).unwrap().seq, 6);
    spool.check_invariants();
}

#[test]
fn retired_checks_travel_in_the_report_and_count_towards_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    spool.append(1, results(1, 1)).unwrap();
    let retired = vec!["service:web".to_owned(), "latency:gw".to_owned()];
    assert_eq!(spool.append_report(2, Vec::new(), retired.clone(), &[]).unwrap().seq, 2);
    drop(spool);
    let spool = Spool::open(dir.path(), big()).unwrap();
    let pending = spool.pending_after(0, 10).unwrap();
    assert!(pending[0].retired_checks.is_empty());
    assert_eq!(pending[1].retired_checks, retired);
    assert!(pending[1].results.is_empty());
    let expected: u64 = pending.iter().map(|report| report.encoded_len() as u64).sum();
    assert_eq!(spool.stats().unwrap().pending_bytes, expected);
    spool.check_invariants();
}

fn result(check_id: &str) -> CheckResult {
    CheckResult { check_id: check_id.into(), kind: "service".into(), ..Default::default() }
}

fn ids(checks: &[&str]) -> Vec<String> {
    checks.iter().map(|check| (*check).to_owned()).collect()
}

#[test]
fn a_retirement_dropped_by_the_bound_moves_into_the_next_report() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits { max_reports: 2, max_bytes: u64::MAX };
    let mut spool = Spool::open(dir.path(), limits).unwrap();
    let retired = ids(&["service:gone", "service:web", "latency:gw"]);
    spool.append_report(1, vec![result("service:db")], retired, &[]).unwrap();
    spool.append_report(2, vec![result("service:db")], ids(&["latency:gw"]), &[]).unwrap();
    // Seq 1 is dropped; service:web came back (a result here), latency:gw is already
    // retired by seq 2 (a surviving report) but carried again: retiring twice is harmless.
    let appended = spool.append_report(3, vec![result("service:web")], ids(&["service:old"]), &[]).unwrap();
    assert_eq!(appended, Appended::single(3, 1));
    let pending = spool.pending_after(0, 10).unwrap();
    assert_eq!(seqs(&pending), [2, 3]);
    assert_eq!(pending[1].retired_checks, ["service:old", "service:gone", "latency:gw"]);
    assert_eq!(pending[1].results, [result("service:web")]);
    spool.check_invariants();

    // Carried again when the report that carries them is dropped in turn.
    spool.append(4, vec![result("service:db")]).unwrap();
    spool.append(5, vec![result("service:db")]).unwrap();
    let pending = spool.pending_after(0, 10).unwrap();
    assert_eq!(seqs(&pending), [4, 5]);
    assert_eq!(pending[0].retired_checks, ["latency:gw"], "seq 2's, carried by seq 4");
    assert_eq!(pending[1].retired_checks, ["service:old", "service:gone", "latency:gw"]);
    spool.check_invariants();
    drop(spool);
    let spool = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(spool.pending_after(0, 10).unwrap(), pending);
    assert_eq!(spool.stats().unwrap().dropped_total, 3);
}

#[test]
fn a_dropped_retirement_of_a_check_that_is_back_is_not_carried() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits { max_reports: 2, max_bytes: u64::MAX };
    let mut spool = Spool::open(dir.path(), limits).unwrap();
    let web = || UnitChange::Reported { unit: "service:web".into(), checks: ids(&["service:web"]) };
    let retire_web = UnitChange::Retired { unit: "service:web".into() };
    spool.append_report(1, vec![result("service:web")], Vec::new(), &[web()]).unwrap();
    spool.append_report(2, Vec::new(), ids(&["service:web", "service:gone"]), &[retire_web]).unwrap();
    assert!(spool.unit_checks().unwrap().is_empty());
    // web is back in seq 3, a report that survives the drop of seq 2 below.
    spool.append_report(3, vec![result("service:web")], Vec::new(), &[web()]).unwrap();
    spool.append(4, vec![result("service:db")]).unwrap();
    let pending = spool.pending_after(0, 10).unwrap();
    assert_eq!(seqs(&pending), [3, 4]);
    assert_eq!(pending[1].retired_checks, ["service:gone"], "web is back and running: not retired");
    spool.check_invariants();
}

#[test]
fn carried_retirements_count_towards_the_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let long = |i: usize| format!("service:{}{i}", "x".repeat(200));
    let first = Report { seq: 1, sampled_at_ms: 1, results: Vec::new(), retired_checks: vec![long(0)] };
    let empty = Report { seq: 2, sampled_at_ms: 1, results: Vec::new(), retired_checks: Vec::new() };
    // Room for the first report and an empty one, not for two carrying the long id.
    let limits = SpoolLimits {
        max_reports: u64::MAX,
        max_bytes: (first.encoded_len() + empty.encoded_len() + 10) as u64,
    };
    let mut spool = Spool::open(dir.path(), limits).unwrap();
    spool.append_report(1, Vec::new(), vec![long(0)], &[]).unwrap();
    spool.append_report(1, Vec::new(), Vec::new(), &[]).unwrap();
    // Seq 3 is as long as seq 1: seq 1 goes, its retirement comes in, and then seq 2 must
    // go too to make room for the longer seq 3.
    let appended = spool.append_report(1, Vec::new(), vec![long(1)], &[]).unwrap();
    assert_eq!(appended, Appended::single(3, 2));
    let pending = spool.pending_after(0, 10).unwrap();
    assert_eq!(seqs(&pending), [3]);
    assert_eq!(pending[0].retired_checks, [long(1), long(0)]);
    spool.check_invariants();
}

#[test]
fn retired_checks_decode_alone_from_a_report() {
    let report = Report {
        seq: 7,
        sampled_at_ms: 9,
        results: results(3, 4),
        retired_checks: ids(&["service:web", "disk:/home"]),
    };
    let decoded = RetiredChecks::decode(report.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.retired_checks, report.retired_checks);
}

#[test]
fn unit_checks_change_with_the_report_that_carries_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert!(spool.unit_checks().unwrap().is_empty());
    let disk = |checks: &[&str]| UnitChange::Reported { unit: "disk".into(), checks: ids(checks) };
    let web = UnitChange::Reported { unit: "service:web".into(), checks: ids(&["service:web"]) };
    spool
        .append_report(
            1,
            vec![result("disk:/"), result("service:web")],
            Vec::new(),
            &[disk(&["disk:/"]), web],
        )
        .unwrap();
    spool.append_report(2, vec![result("disk:/")], Vec::new(), &[disk(&["disk:/", "disk:/home"])]).unwrap();
    spool
        .append_report(
            3,
            Vec::new(),
            ids(&["service:web"]),
            &[UnitChange::Retired { unit: "service:web".into() }],
        )
        .unwrap();
    // Acks do not touch it: it describes the units, not the pending reports.
    spool.ack(u64::MAX).unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), big()).unwrap();
    let want: UnitChecks = [("disk".to_owned(), ids(&["disk:/", "disk:/home"]))].into_iter().collect();
    assert_eq!(spool.unit_checks().unwrap(), want);
}

/// The schema of version 1, as agents before `unit_checks` created it.
const SCHEMA_V1: &str = "
        CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL) WITHOUT ROWID;
        CREATE TABLE reports (seq INTEGER PRIMARY KEY, len INTEGER NOT NULL, body BLOB NOT NULL);";

#[test]
fn a_version_1_spool_is_migrated_with_its_pending_reports() {
    let dir = tempfile::tempdir().unwrap();
    let stream_id = "0190b6a4-7c3e-7a4b-9f7e-3f3f3f3f3f3f";
    let old: Vec<Report> = (6..=7)
        .map(|seq| Report {
            seq,
            sampled_at_ms: 1_000 + seq as i64,
            results: results(2, 3),
            retired_checks: if seq == 7 { ids(&["service:web"]) } else { Vec::new() },
        })
        .collect();
    {
        let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(SCHEMA_V1).unwrap();
        let bytes: usize = old.iter().map(|report| report.encoded_len()).sum();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES
                     ('schema_version', 1), ('stream_id', ?1), ('next_seq', 8),
                     ('dropped_total', 5), ('pending_count', 2), ('pending_bytes', ?2)",
            params![stream_id, bytes as i64],
        )
        .unwrap();
        for report in &old {
            let body = report.encode_to_vec();
            conn.execute(
                "INSERT INTO reports (seq, len, body) VALUES (?1, ?2, ?3)",
                params![report.seq as i64, body.len() as i64, body],
            )
            .unwrap();
        }
    }
    // A reader (`nightowl-agent spool`) reads version 1 without migrating it.
    let before = Spool::stats_at(dir.path()).unwrap();
    assert_eq!((before.pending, before.next_seq, before.dropped_total), (2, 8, 5));

    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(spool.stream_id(), stream_id);
    assert_eq!(spool.pending_after(0, 10).unwrap(), old);
    assert_eq!(spool.stats().unwrap(), before);
    assert!(spool.unit_checks().unwrap().is_empty());
    let version: i64 = spool
        .conn
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    spool.check_invariants();

    // It works as a version 2 spool from here, and opens again without migrating.
    let unit = UnitChange::Reported { unit: "service:db".into(), checks: ids(&["service:db"]) };
    assert_eq!(spool.append_report(1, vec![result("service:db")], Vec::new(), &[unit]).unwrap().seq, 8);
    drop(spool);
    let spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(seqs(&spool.pending_after(0, 10).unwrap()), [6, 7, 8]);
    assert_eq!(spool.unit_checks().unwrap().len(), 1);
    spool.check_invariants();
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Spool::open(dir.path(), big()).unwrap());
    let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    conn.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    assert!(matches!(Spool::open(dir.path(), big()), Err(SpoolError::Unsupported { .. })));
    assert!(matches!(Spool::stats_at(dir.path()), Err(SpoolError::Unsupported { .. })));
}

#[test]
fn seq_continues_after_reopen_and_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for _ in 0..3 {
        spool.append(1, results(1, 1)).unwrap();
    }
    drop(spool);
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(seqs(&spool.pending_after(0, 10).unwrap()), [1, 2, 3]);
    assert_eq!(spool.append(1, vec![]).unwrap().seq, 4);

    // Everything acked and deleted, then reopened: seq still moves on.
    assert_eq!(spool.ack(4).unwrap(), 4);
    drop(spool);
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(spool.stats().unwrap().next_seq, 5);
    assert_eq!(spool.append(1, vec![]).unwrap().seq, 5);
}

#[test]
fn stream_id_stable_across_reopen_and_new_per_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = Spool::open(dir.path(), big()).unwrap().stream_id().to_owned();
    let again = Spool::open(dir.path(), big()).unwrap();
    assert_eq!(again.stream_id(), first);
    assert_eq!(again.stats().unwrap().stream_id, first);
    let parsed = uuid::Uuid::parse_str(&first).unwrap();
    assert_eq!(parsed.get_version_num(), 7);

    let other = tempfile::tempdir().unwrap();
    assert_ne!(Spool::open(other.path(), big()).unwrap().stream_id(), first);
}

#[cfg(unix)]
#[test]
fn creates_missing_dir_with_mode_0700() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state/agent");
    Spool::open(&dir, big()).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(dir.join(FILE_NAME).exists());
}

#[test]
fn bound_by_count_drops_oldest_and_persists_counter() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SpoolLimits { max_reports: 3, max_bytes: u64::MAX };
    let mut spool = Spool::open(dir.path(), limits).unwrap();
    let dropped: Vec<u64> = (0..5).map(|_| spool.append(7, results(1, 2)).unwrap().dropped).collect();
    assert_eq!(dropped, [0, 0, 0, 1, 1]);
    assert_eq!(seqs(&spool.pending_after(0, 10).unwrap()), [3, 4, 5]);
    assert_eq!(spool.stats().unwrap().dropped_total, 2);
    spool.check_invariants();
    drop(spool);

    let mut spool = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(spool.stats().unwrap().dropped_total, 2);
    assert_eq!(spool.append(7, vec![]).unwrap(), Appended::single(6, 1));
    assert_eq!(spool.stats().unwrap().dropped_total, 3);
    drop(spool);

    // Limits lowered between runs: the next append catches up in one go.
    let mut spool = Spool::open(dir.path(), SpoolLimits { max_reports: 1, ..limits }).unwrap();
    assert_eq!(spool.append(7, vec![]).unwrap(), Appended::single(7, 3));
    let s = spool.stats().unwrap();
    assert_eq!((s.pending, s.oldest_seq, s.dropped_total), (1, Some(7), 6));
    spool.check_invariants();
}

#[test]
fn bound_by_bytes_drops_oldest() {
    let dir = tempfile::tempdir().unwrap();
    // Same shape and small seqs: every report encodes to the same length.
    let one = Report { seq: 1, sampled_at_ms: 9, results: results(2, 5), retired_checks: Vec::new() }
        .encoded_len() as u64;
    let limits = SpoolLimits { max_reports: u64::MAX, max_bytes: 2 * one + one / 2 };
    let mut spool = Spool::open(dir.path(), limits).unwrap();
    let dropped: Vec<u64> = (0..4).map(|_| spool.append(9, results(2, 5)).unwrap().dropped).collect();
    assert_eq!(dropped, [0, 0, 1, 1]);
    let s = spool.stats().unwrap();
    assert_eq!((s.pending, s.pending_bytes, s.dropped_total), (2, 2 * one, 2));
    assert_eq!(seqs(&spool.pending_after(0, 10).unwrap()), [3, 4]);

    // A report bigger than the whole bound pushes out everything else but is kept.
    let a = spool.append(9, results(20, 50)).unwrap();
    assert_eq!(a, Appended::single(5, 2));
    assert_eq!(seqs(&spool.pending_after(0, 10).unwrap()), [5]);
    spool.check_invariants();
    drop(spool);
    let spool = Spool::open(dir.path(), limits).unwrap();
    assert_eq!(spool.stats().unwrap().dropped_total, 4);
}

#[test]
fn corrupt_row_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    spool.append(1, results(1, 1)).unwrap();
    spool.append(2, results(1, 1)).unwrap();
    let other = Connection::open(dir.path().join(FILE_NAME)).unwrap();
    other.execute("UPDATE reports SET body = x'ffffffff' WHERE seq = 2", []).unwrap();
    assert_eq!(seqs(&spool.pending_after(0, 1).unwrap()), [1]);
    match spool.pending_after(0, 10) {
        Err(SpoolError::CorruptReport { seq: 2, .. }) => {}
        other => panic!("expected a corrupt report error, got {other:?}"),
    }
    // Acking past it still works: the agent can get past a bad row.
    assert_eq!(spool.ack(2).unwrap(), 2);
}

#[test]
fn unclean_drop_then_reopen_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), big()).unwrap();
    for i in 0..50 {
        spool.append(i, results(1, 4)).unwrap();
    }
    spool.ack(10).unwrap();
    drop(spool);
    let spool = Spool::open(dir.path(), big()).unwrap();
    let pending = spool.pending_after(0, 1000).unwrap();
    assert_eq!(seqs(&pending), (11..=50).collect::<Vec<_>>());
    spool.check_invariants();
}

const CRASH_DIR_ENV: &str = "NIGHTOWL_SPOOL_CRASH_CHILD_DIR";

/// Child half of `killed_writer_loses_nothing_it_reported`: appends until killed.
#[test]
#[ignore = "run as a child process by killed_writer_loses_nothing_it_reported"]
fn crash_child() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let mut spool = Spool::open(Path::new(&dir), big()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let a = spool.append(i, results(3, 8)).unwrap();
        writeln!(out, "APPENDED {}", a.seq).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn killed_writer_loses_nothing_it_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spool::tests::crash_child", "--ignored", "--nocapture"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut reported = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((_, seq)) = line.rsplit_once("APPENDED ") {
            reported.push(seq.trim().parse::<u64>().unwrap());
            if reported.len() == 40 {
                child.kill().unwrap(); // SIGKILL, likely mid-transaction
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(reported, (1..=40).collect::<Vec<_>>());

    let mut spool = Spool::open(dir.path(), big()).unwrap();
    spool.check_invariants();
    let pending = seqs(&spool.pending_after(0, 100_000).unwrap());
    assert!(pending.len() >= 40, "lost reports: {pending:?}");
    assert_eq!(pending, (1..=pending.len() as u64).collect::<Vec<_>>());
    let next = spool.append(0, vec![]).unwrap().seq;
    assert_eq!(next, pending.len() as u64 + 1);
}

#[test]
fn stats_at_reads_while_another_spool_writes() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Spool::stats_at(dir.path()), Err(SpoolError::NotFound { .. })));
    assert!(!dir.path().join(FILE_NAME).exists(), "stats_at must not create a spool");

    let mut spool = Spool::open(dir.path(), big()).unwrap();
    spool.append(1, results(1, 1)).unwrap();
    assert_eq!(Spool::stats_at(dir.path()).unwrap(), spool.stats().unwrap());

    let writer = std::thread::spawn(move || {
        for i in 0..200 {
            spool.append(i, results(2, 2)).unwrap();
            if i % 7 == 0 {
                spool.ack(i as u64 / 2).unwrap();
            }
        }
        spool
    });
    let mut last_next = 0;
    while !writer.is_finished() {
        let s = Spool::stats_at(dir.path()).unwrap();
        assert!(s.next_seq >= last_next);
        last_next = s.next_seq;
        match (s.oldest_seq, s.newest_seq) {
            (Some(o), Some(n)) => assert_eq!(n - o + 1, s.pending),
            _ => assert_eq!(s.pending, 0),
        }
    }
    let spool = writer.join().unwrap();
    let final_stats = spool.stats().unwrap();
    assert_eq!(final_stats.next_seq, 202);
    assert_eq!(Spool::stats_at(dir.path()).unwrap(), final_stats);

    // Also with no writer open at all (clean close removed the -wal and -shm files).
    drop(spool);
    assert_eq!(Spool::stats_at(dir.path()).unwrap(), final_stats);
}

// ---- model test ----

#[derive(Debug, Clone)]
enum Op {
    /// `retired`: (width, index) of ids shaped like `results`', so they sometimes match.
    /// `unit`: the results are that unit's latest sample (`UnitChange::Reported`).
    Append {
        n: usize,
        width: usize,
        retired: Vec<(usize, usize)>,
        unit: Option<usize>,
    },
    /// A unit removed from the config (reload, or gone across a restart): the sampler
    /// retires the checks the spool remembers for it, in a report of its own.
    RemoveUnit(usize),
    Ack(u64),
    Reopen,
    Pending {
        after: u64,
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            0..4usize,
            prop_oneof![1 => 0..2usize, 2 => 0..24usize],
            proptest::collection::vec((0..2usize, 0..3usize), 0..3),
            proptest::option::weighted(0.5, 0..UNITS.len()),
        )
            .prop_map(|(n, width, retired, unit)| Op::Append { n, width, retired, unit }),
        1 => (0..UNITS.len()).prop_map(Op::RemoveUnit),
        2 => prop_oneof![4 => 0..30u64, 1 => Just(u64::MAX)].prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        2 => (0..30u64, 0..6usize).prop_map(|(after, limit)| Op::Pending { after, limit }),
    ]
}

const UNITS: [&str; 3] = ["disk", "service:web", "backup:nightly"];

#[derive(Default)]
struct Model {
    queue: VecDeque<Report>,
    bytes: u64,
    next_seq: u64,
    dropped_total: u64,
    /// What `unit_checks` must say: unit → its last reported check ids.
    units: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl Model {
    fn append(&mut self, limits: SpoolLimits, mut report: Report, units: &[UnitChange]) -> Appended {
        // The report's unit changes first: a check they report is back (invariant 7).
        for change in units {
            match change {
                UnitChange::Reported { unit, checks } if !checks.is_empty() => {
                    self.units.insert(unit.clone(), checks.iter().cloned().collect());
                }
                UnitChange::Reported { unit, .. } | UnitChange::Retired { unit } => {
                    self.units.remove(unit);
                }
            }
        }
        let mut len = report.encoded_len() as u64;
        let mut dropped = 0;
        // Not carried: what this report retires or reports, and what a unit reports.
        let mut not_carried: HashSet<String> = report.retired_checks.iter().cloned().collect();
        not_carried.extend(report.results.iter().map(|result| result.check_id.clone()));
        not_carried.extend(self.units.values().flatten().cloned());
        while !self.queue.is_empty()
            && (self.queue.len() as u64 + 1 > limits.max_reports || self.bytes + len > limits.max_bytes)
        {
            let old = self.queue.pop_front().unwrap();
            self.bytes -= old.encoded_len() as u64;
            dropped += 1;
            for check in old.retired_checks {
                if not_carried.insert(check.clone()) {
                    report.retired_checks.push(check);
                }
            }
            len = report.encoded_len() as u64;
        }
        self.dropped_total += dropped;
        self.bytes += len;
        let seq = report.seq;
        self.queue.push_back(report);
        self.next_seq += 1;
        Appended::single(seq, dropped)
    }

    fn ack(&mut self, seq: u64) -> u64 {
        let mut deleted = 0;
        while self.queue.front().is_some_and(|r| r.seq <= seq) {
            let old = self.queue.pop_front().unwrap();
            self.bytes -= old.encoded_len() as u64;
            deleted += 1;
        }
        deleted
    }

    fn pending_after(&self, after: u64, limit: usize) -> Vec<Report> {
        self.queue.iter().filter(|r| r.seq > after).take(limit).cloned().collect()
    }

    fn unit_checks(&self) -> UnitChecks {
        self.units.iter().map(|(unit, checks)| (unit.clone(), checks.iter().cloned().collect())).collect()
    }

    fn stats(&self, stream_id: &str) -> SpoolStats {
        SpoolStats {
            stream_id: stream_id.to_owned(),
            pending: self.queue.len() as u64,
            pending_bytes: self.bytes,
            oldest_seq: self.queue.front().map(|r| r.seq),
            newest_seq: self.queue.back().map(|r| r.seq),
            next_seq: self.next_seq,
            dropped_total: self.dropped_total,
        }
    }
}

/// 64, or `PROPTEST_CASES`.
fn model_cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: model_cases(), ..ProptestConfig::default() })]

    #[test]
    fn spool_matches_model(
        max_reports in 0..6u64,
        max_bytes in prop_oneof![1 => Just(0u64), 6 => 20..400u64],
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let limits = SpoolLimits { max_reports, max_bytes };
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), limits).unwrap();
        let stream_id = spool.stream_id().to_owned();
        let mut model = Model { next_seq: 1, ..Model::default() };
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { n, width, retired, unit } => {
                    let sampled_at_ms = 1_700_000_000_000 + i as i64;
                    let retired: Vec<String> =
                        retired.iter().map(|(w, i)| format!("disk:/{}{i}", "v".repeat(*w))).collect();
                    let units: Vec<UnitChange> = unit
                        .map(|unit| UnitChange::Reported {
                            unit: UNITS[unit].into(),
                            checks: results(n, width).into_iter().map(|result| result.check_id).collect(),
                        })
                        .into_iter()
                        .collect();
                    let report = Report {
                        seq: model.next_seq,
                        sampled_at_ms,
                        results: results(n, width),
                        retired_checks: retired.clone(),
                    };
                    let want = model.append(limits, report, &units);
                    let got = spool.append_report(sampled_at_ms, results(n, width), retired, &units).unwrap();
                    prop_assert_eq!(got, want);
                }
                Op::RemoveUnit(unit) => {
                    let sampled_at_ms = 1_700_000_000_000 + i as i64;
                    // What the sampler does: retire what the spool remembers for it.
                    let retired = spool.unit_checks().unwrap().remove(UNITS[unit]).unwrap_or_default();
                    let units = [UnitChange::Retired { unit: UNITS[unit].into() }];
                    let report = Report {
                        seq: model.next_seq,
                        sampled_at_ms,
                        results: Vec::new(),
                        retired_checks: retired.clone(),
                    };
                    let want = model.append(limits, report, &units);
                    let got = spool.append_report(sampled_at_ms, Vec::new(), retired, &units).unwrap();
                    prop_assert_eq!(got, want);
                }
                Op::Ack(seq) => prop_assert_eq!(spool.ack(seq).unwrap(), model.ack(seq)),
                Op::Reopen => {
                    drop(spool);
                    spool = Spool::open(dir.path(), limits).unwrap();
                }
                Op::Pending { after, limit } => prop_assert_eq!(
                    spool.pending_after(after, limit).unwrap(),
                    model.pending_after(after, limit)
                ),
            }
            let want = model.stats(&stream_id);
            prop_assert_eq!(spool.stats().unwrap(), want.clone());
            prop_assert_eq!(Spool::stats_at(dir.path()).unwrap(), want);
            prop_assert_eq!(
                spool.pending_after(0, usize::MAX).unwrap(),
                model.pending_after(0, usize::MAX)
            );
            prop_assert_eq!(spool.unit_checks().unwrap(), model.unit_checks());
            spool.check_invariants();
        }
    }
}
