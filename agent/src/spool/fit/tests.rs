use super::*;

fn result(id: &str, message_len: usize) -> CheckResult {
    CheckResult {
        check_id: id.to_owned(),
        kind: "service".into(),
        status: ProbeStatus::Ok as i32,
        metrics: [("up".to_owned(), 1.0)].into(),
        message: "m".repeat(message_len),
        interval_ms: 10_000,
    }
}

fn report(results: Vec<CheckResult>, retired: &[&str]) -> Report {
    Report {
        seq: 7,
        sampled_at_ms: 1_790_000_000_000,
        results,
        retired_checks: retired.iter().map(|id| id.to_string()).collect(),
    }
}

/// Every part within the limits with the largest seq the spool could give it.
fn assert_within(parts: &[Report], limits: ReportLimits) {
    for part in parts {
        let worst = Report { seq: u64::MAX, sampled_at_ms: i64::MIN, ..part.clone() };
        assert!(limits.fits(&worst), "a part over the limits: {} bytes", worst.encoded_len());
    }
}

fn ids(parts: &[Report]) -> Vec<String> {
    parts.iter().flat_map(|part| part.results.iter().map(|result| result.check_id.clone())).collect()
}

#[test]
fn a_report_within_the_limits_stays_one() {
    let original = report(vec![result("a", 10), result("b", 10)], &["gone"]);
    let (parts, fitted) = split(original.clone(), ReportLimits::CONSERVATIVE);
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0], Report { seq: 0, ..original });
    assert_eq!(fitted, Fitted::default());
}

#[test]
fn an_empty_report_stays_one_empty_report() {
    let (parts, _) = split(report(Vec::new(), &[]), ReportLimits::CONSERVATIVE);
    assert_eq!(parts.len(), 1);
    assert!(parts[0].results.is_empty() && parts[0].retired_checks.is_empty());
}

#[test]
fn a_large_batch_is_split_by_bytes_in_order() {
    let results: Vec<CheckResult> = (0..200).map(|i| result(&format!("service:{i:03}"), 100)).collect();
    let expected: Vec<String> = results.iter().map(|result| result.check_id.clone()).collect();
    let whole = report(results, &["service:old"]);
    let limits = ReportLimits { max_message_bytes: 4096, max_results: 10_000 };
    assert!(!limits.fits(&whole));
    let (parts, fitted) = split(whole, limits);
    assert!(parts.len() >= 5, "{} parts", parts.len());
    assert_within(&parts, limits);
    assert_eq!(ids(&parts), expected, "every result once, in order");
    assert!(parts.iter().all(|part| part.sampled_at_ms == 1_790_000_000_000 && part.seq == 0));
    // The retirement comes after the last result, in the last part.
    assert_eq!(parts.last().unwrap().retired_checks, ["service:old"]);
    assert!(parts[..parts.len() - 1].iter().all(|part| part.retired_checks.is_empty()));
    assert_eq!(fitted, Fitted::default());
}

#[test]
fn a_large_batch_is_split_by_result_count() {
    let results: Vec<CheckResult> = (0..10).map(|i| result(&format!("c:{i}"), 1)).collect();
    let limits = ReportLimits { max_message_bytes: 1 << 20, max_results: 3 };
    let (parts, _) = split(report(results, &["r:1", "r:2"]), limits);
    let counts: Vec<(usize, usize)> =
        parts.iter().map(|part| (part.results.len(), part.retired_checks.len())).collect();
    assert_eq!(counts, [(3, 0), (3, 0), (3, 0), (1, 2)], "retired ids count towards the limit");
    assert_within(&parts, limits);
}

#[test]
fn a_result_too_large_alone_is_cut_and_says_so() {
    let limits = ReportLimits { max_message_bytes: 4096, max_results: 100 };
    let mut big = result("command:big", 10_000);
    big.message.insert(0, 'é'); // a cut never splits a character
    let (parts, fitted) = split(report(vec![result("a", 10), big, result("b", 10)], &[]), limits);
    assert_within(&parts, limits);
    assert_eq!(ids(&parts), ["a", "command:big", "b"]);
    let cut = parts.iter().flat_map(|part| &part.results).find(|r| r.check_id == "command:big").unwrap();
    assert!(cut.message.starts_with("émmm"));
    assert!(cut.message.ends_with("[cut: over the collector's size limit]"));
    assert_eq!(cut.status, ProbeStatus::Ok as i32, "the probe's verdict is kept");
    assert_eq!(cut.metrics.get("up"), Some(&1.0));
    assert_eq!(fitted, Fitted { cut: 1, ..Fitted::default() });
}

#[test]
fn a_result_that_cutting_cannot_save_becomes_unknown() {
    let limits = ReportLimits { max_message_bytes: 4096, max_results: 100 };
    let mut big = result("command:metrics", 0);
    big.metrics = (0..400).map(|i| (format!("metric_{i}"), i as f64)).collect();
    let size = big.encoded_len();
    let (parts, fitted) = split(report(vec![big], &[]), limits);
    assert_within(&parts, limits);
    let replaced = &parts[0].results[0];
    assert_eq!(replaced.check_id, "command:metrics");
    assert_eq!(replaced.status, ProbeStatus::Unknown as i32);
    assert!(replaced.metrics.is_empty());
    assert_eq!(replaced.message, format!("result over the collector's size limit ({size} bytes)"));
    assert_eq!(replaced.interval_ms, 10_000, "staleness still knows the interval");
    assert_eq!(fitted, Fitted { replaced: 1, ..Fitted::default() });
}

#[test]
fn an_id_too_large_for_any_report_is_dropped() {
    let limits = ReportLimits { max_message_bytes: 4096, max_results: 100 };
    let huge_id = "x".repeat(5000);
    let (parts, fitted) = split(report(vec![result(&huge_id, 0), result("a", 1)], &[&huge_id]), limits);
    assert_eq!(ids(&parts), ["a"]);
    assert!(parts.iter().all(|part| part.retired_checks.is_empty()));
    assert_eq!(fitted.dropped, 2);
}

#[test]
fn join_undoes_split() {
    let results: Vec<CheckResult> = (0..50).map(|i| result(&format!("c:{i}"), 200)).collect();
    let whole = report(results, &["r"]);
    let (parts, _) = split(whole.clone(), ReportLimits { max_message_bytes: 4096, max_results: 7 });
    assert_eq!(join(parts), Report { seq: 0, ..whole });
}

#[test]
fn announced_limits_keep_the_floor_and_the_defaults() {
    assert_eq!(ReportLimits::announced(0, 0), ReportLimits::CONSERVATIVE);
    assert_eq!(ReportLimits::announced(10, 0).max_message_bytes, 4096);
    assert_eq!(
        ReportLimits::announced(1 << 20, 5),
        ReportLimits { max_message_bytes: 1 << 20, max_results: 5 }
    );
}

#[test]
fn fits_counts_the_agent_message_envelope() {
    // A report exactly at the limit fits; one byte more does not.
    let mut probe = report(vec![result("a", 0)], &[]);
    let envelope = message_len(probe.encoded_len()) - probe.results[0].message.len();
    probe.results[0].message = "m".repeat(4096 - envelope - 2);
    while message_len(probe.encoded_len()) < 4096 {
        probe.results[0].message.push('m');
    }
    let exact = ReportLimits { max_message_bytes: message_len(probe.encoded_len()), max_results: 1 };
    assert!(exact.fits(&probe));
    probe.results[0].message.push('m');
    assert!(!exact.fits(&probe));
    assert_eq!(
        nightowl_proto::AgentMessage::report(probe.clone()).encoded_len(),
        message_len(probe.encoded_len())
    );
}
