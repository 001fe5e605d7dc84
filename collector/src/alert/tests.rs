use super::*;

#[test]
fn fingerprint_is_stable_and_field_separated() {
    let a = fingerprint("acme", "srv-01", "disk:/var", "disk_used_pct");
    assert_eq!(a, fingerprint("acme", "srv-01", "disk:/var", "disk_used_pct"));
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    // Moving a character across a field boundary must change the fingerprint.
    assert_ne!(a, fingerprint("acme", "srv-01d", "isk:/var", "disk_used_pct"));
    assert_ne!(a, fingerprint("globex", "srv-01", "disk:/var", "disk_used_pct"));
}

#[test]
fn event_json_has_the_contract_shape() {
    let at: jiff::Timestamp = "2026-11-24T02:12:00Z".parse().unwrap();
    let event = AlertEvent {
        id: new_event_id(),
        fingerprint: fingerprint("acme", "srv-01", "disk:/var", "disk_used_pct"),
        status: Status::Firing,
        severity: Severity::P2,
        tenant: "acme".into(),
        agent: "srv-01".into(),
        check: "disk:/var".into(),
        kind: "disk".into(),
        rule: "disk_used_pct".into(),
        summary: "Disk /var 96.2% used (critical at 95%)".into(),
        value: 96.2,
        threshold: 95.0,
        started_at: at,
        resolved_at: None,
        emitted_at: at,
        labels: BTreeMap::new(),
        runbook: None,
        remediation: None,
        flapping: false,
    };
    let json: serde_json::Value = serde_json::to_value(&event).unwrap();
    let object = json.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "agent",
            "check",
            "emitted_at",
            "fingerprint",
            "id",
            "kind",
            "labels",
            "remediation",
            "resolved_at",
            "rule",
            "runbook",
            "severity",
            "started_at",
            "status",
            "summary",
            "tenant",
            "threshold",
            "value"
        ]
    );
    assert_eq!(json["status"], "firing");
    assert_eq!(json["severity"], "P2");
    assert_eq!(json["started_at"], "2026-11-24T02:12:00Z");
    assert!(json["resolved_at"].is_null());
    assert!(json["runbook"].is_null());
    let back: AlertEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}
