use super::*;

#[test]
fn crossing_checks_add_up_to_the_fraction() {
    for (sessions, results, crossing) in
        [(100u32, 10u32, 0.01), (1000, 100, 0.01), (7, 3, 0.5), (10, 10, 1.0)]
    {
        let total: u32 = (0..sessions).map(|session| crossing_checks(session, results, crossing)).sum();
        let expected = (crossing * f64::from(results) * f64::from(sessions)).floor() as u32;
        assert_eq!(total, expected, "{sessions} x {results} at {crossing}");
        assert!((0..sessions).all(|session| crossing_checks(session, results, crossing) <= results));
    }
    assert_eq!(crossing_checks(3, 10, 0.0), 0);
}

#[test]
fn crossing_checks_alternate_and_others_stay_low() {
    let odd = report(1, 1000, 4, 2, 1000);
    let even = report(2, 2000, 4, 2, 1000);
    let values = |report: &Report| -> Vec<f64> {
        report.results.iter().map(|result| result.metrics["used_pct"]).collect()
    };
    assert_eq!(values(&odd), [HIGH, HIGH, LOW, LOW]);
    assert_eq!(values(&even), [LOW, LOW, LOW, LOW]);
    assert!(fires(1) && !fires(2));
    assert_eq!(check_index(&check_id(17)), Some(17));
    assert_eq!(check_index("disk:/var"), None);
    assert_eq!(agent_id("lg-", 7), "lg-00007");
}

#[test]
fn pre_encoded_reports_are_the_reports() {
    use nightowl_proto::AgentMessage;
    let encoded = EncodedReports::new(50, 3, 1000);
    for (seq, sampled_at_ms) in [(1u64, 1_700_000_000_123i64), (2, 1_700_000_001_456), (4_000_001, 0)] {
        let bytes = encoded.agent_message(seq, sampled_at_ms);
        let expected = AgentMessage::report(report(seq, sampled_at_ms, 50, 3, 1000));
        assert_eq!(AgentMessage::decode(bytes.clone()).expect("decodes"), expected, "seq {seq}");
        assert_eq!(bytes.as_ref(), expected.encode_to_vec().as_slice(), "seq {seq}: same bytes");
    }
}
