use super::*;

#[test]
fn implausible_sample_times_fall_back_to_now() {
    let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
    let ms = now.as_millisecond();
    assert_eq!(sample_time(ms - 1000, now).as_millisecond(), ms - 1000);
    assert_eq!(sample_time(ms + 60_000, now), now, "slightly ahead is clamped to now");
    assert_eq!(sample_time(ms + 3_600_000, now), now, "an hour ahead is not believed");
    assert_eq!(sample_time(i64::MAX, now), now);
    assert_eq!(sample_time(0, now), now);
}

#[test]
fn results_out_of_bounds_are_invalid() {
    let good = CheckResult { check_id: "disk:/".into(), kind: "disk".into(), ..Default::default() };
    assert!(result_is_valid(&good));
    assert!(!result_is_valid(&CheckResult { check_id: String::new(), ..good.clone() }));
    assert!(!result_is_valid(&CheckResult { check_id: "x".repeat(300), ..good.clone() }));
    assert!(!result_is_valid(&CheckResult { kind: "d\0".into(), ..good.clone() }));
    let mut many = good.clone();
    many.metrics = (0..300).map(|i| (format!("m{i}"), 1.0)).collect();
    assert!(!result_is_valid(&many));
}

#[test]
fn validation_rejects_too_many_and_drops_out_of_bounds() {
    let good = CheckResult { check_id: "disk:/".into(), kind: "disk".into(), ..Default::default() };
    let bad = CheckResult { check_id: String::new(), ..good.clone() };
    let report = Report {
        seq: 1,
        results: vec![good, bad],
        retired_checks: vec!["disk:/".into(), String::new(), "disk:/old".into()],
        ..Default::default()
    };
    let validated = validate_report(report.clone(), 10);
    assert!(!validated.rejected);
    assert_eq!((validated.results.len(), validated.invalid_results), (1, 1));
    assert_eq!(validated.retired, ["disk:/old"], "a reported check is not retired");
    assert_eq!(validated.invalid_retired, 1);
    let rejected = validate_report(report, 4);
    assert!(rejected.rejected && rejected.results.is_empty() && rejected.retired.is_empty());
}

#[test]
fn a_refused_message_ends_the_stream_with_a_status_that_says_why() {
    let oversized = Status::out_of_range(
        "Error, decoded message length too large: found 9000 bytes, the limit is: 4096 bytes",
    );
    let ended = refusal_status(&oversized, 4096).unwrap();
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted);
    assert!(ended.message().contains("limits.max_message_bytes (9000 bytes > 4096)"), "{}", ended.message());
    let malformed = Status::internal("failed to decode Protobuf message: invalid wire type");
    let ended = refusal_status(&malformed, 4096).unwrap();
    assert_eq!(ended.code(), tonic::Code::InvalidArgument);
    assert!(ended.message().contains("invalid wire type"));
    assert!(refusal_status(&Status::cancelled("gone"), 4096).is_none());
}

#[test]
fn claims_must_match_the_certificate() {
    let identity = AgentIdentity { tenant: "acme".into(), agent: "srv-01".into() };
    assert!(check_claims(&identity, &Hello::default()).is_ok());
    let same = Hello { tenant: "acme".into(), agent: "srv-01".into(), ..Default::default() };
    assert!(check_claims(&identity, &same).is_ok());
    let other = Hello { tenant: "globex".into(), ..Default::default() };
    assert_eq!(check_claims(&identity, &other).unwrap_err().code(), tonic::Code::PermissionDenied);
}
