//! The `agent:policy` result.

use nightowl_proto::ProbeStatus;

use super::*;

#[test]
fn the_status_result_says_what_runs_or_why_not() {
    let mut status = PolicyStatus {
        version: 42,
        names: vec!["acme-servers".into()],
        checks: 2,
        conflicts: 1,
        refused: None,
    };
    let ok = status.result();
    assert_eq!((ok.check_id.as_str(), ok.kind.as_str()), ("agent:policy", "agent"));
    assert_eq!(ok.status(), ProbeStatus::Ok);
    assert_eq!(ok.metrics["version"], 42.0);
    assert_eq!(ok.metrics["checks"], 2.0);
    assert_eq!(ok.metrics["conflicts"], 1.0);
    assert!(ok.message.contains("000000000000002a (acme-servers)"), "{}", ok.message);
    status.refused = Some("policy 000000000000002b refused: [[command]] is not allowed in a policy".into());
    let refused = status.result();
    assert_eq!(refused.status(), ProbeStatus::Unknown);
    assert!(
        refused.message.starts_with("policy 000000000000002b refused: [[command]]"),
        "{}",
        refused.message
    );
    assert!(refused.message.contains("still running: policy 000000000000002a"), "{}", refused.message);
    assert!(PolicyStatus::default().result().message.contains("no central policy"));
}
