use serde_json::json;

use super::*;

fn row(agent: &str, sent: u64, acked: u64) -> LedgerRow {
    LedgerRow {
        tenant: "t".into(),
        agent: agent.into(),
        generated: sent,
        sent,
        acked,
        crossing: 1,
        results: 2,
    }
}

fn event(id: &str, agent: &str, check: &str, status: &str) -> Value {
    json!({"id": id, "tenant": "t", "agent": agent, "check": check, "status": status, "rule": "disk_used_pct"})
}

fn agent(agent: &str, last_seq: u64) -> Value {
    json!({"tenant": "t", "agent": agent, "last_seq": last_seq})
}

#[test]
fn exact_alternation_up_to_last_seq_passes() {
    let ledger = [row("a", 3, 2)];
    // The collector committed seq 3 but its ack was lost (collector killed): fine.
    let events = [
        event("1", "a", "disk:/c0", "firing"),
        event("2", "a", "disk:/c0", "resolved"),
        event("3", "a", "disk:/c0", "firing"),
    ];
    let verdict = verify(&ledger, &[agent("a", 3)], &events);
    assert!(verdict.pass(), "{verdict:?}");
    assert_eq!(verdict.transitions_expected, 3);
}

#[test]
fn lost_duplicated_or_stray_transitions_fail() {
    let ledger = [row("a", 2, 2)];
    let lost = verify(&ledger, &[agent("a", 2)], &[event("1", "a", "disk:/c0", "firing")]);
    assert_eq!(lost.bad_sequences, 1);
    let twice = [
        event("1", "a", "disk:/c0", "firing"),
        event("2", "a", "disk:/c0", "firing"),
        event("3", "a", "disk:/c0", "resolved"),
    ];
    assert_eq!(verify(&ledger, &[agent("a", 2)], &twice).bad_sequences, 1);
    let same_id = [event("1", "a", "disk:/c0", "firing"), event("1", "a", "disk:/c0", "resolved")];
    assert_eq!(verify(&ledger, &[agent("a", 2)], &same_id).duplicate_ids, 1);
    let stray = [
        event("1", "a", "disk:/c0", "firing"),
        event("2", "a", "disk:/c0", "resolved"),
        event("3", "a", "disk:/c1", "firing"),
    ];
    assert_eq!(verify(&ledger, &[agent("a", 2)], &stray).unexpected_events, 1);
}

#[test]
fn acked_but_not_durable_fails() {
    let ledger = [row("a", 5, 4)];
    let events = [event("1", "a", "disk:/c0", "firing"), event("2", "a", "disk:/c0", "resolved")];
    let verdict = verify(&ledger, &[agent("a", 2)], &events);
    assert_eq!(verdict.acked_lost, 1);
    assert!(!verdict.pass());
    assert_eq!(verify(&ledger, &[], &[]).agents_missing, 1);
    assert_eq!(verify(&[row("a", 1, 1)], &[agent("a", 2)], &events).beyond_sent, 1);
}
