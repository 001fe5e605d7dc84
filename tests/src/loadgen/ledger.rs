//! The ledger: what each simulated agent sent and what the collector acked, and the
//! drills' accounting against the collector's durable state.
//!
//! One JSON object per session and line ([`LedgerRow`]). [`verify`] takes the ledger,
//! `nightowl-collector agents list --json` and `alerts tail` output and checks:
//! - every acked report is durable: `acked <= last_seq` (and `last_seq <= sent`: the
//!   collector cannot have a report that was never sent);
//! - each crossing check's `disk_used_pct` events are exactly the transitions of reports
//!   `1..=last_seq` (see `workload`): firing, resolved, firing, ... — none lost, none
//!   twice; other checks of ours have no such event; no event id appears twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::workload;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub tenant: String,
    pub agent: String,
    /// Highest seq made (sampled).
    pub generated: u64,
    /// Highest seq sent at least once.
    pub sent: u64,
    /// Highest seq covered by an Ack.
    pub acked: u64,
    /// How many checks (from `disk:/c0`) cross thresholds.
    pub crossing: u32,
    pub results: u32,
}

/// The accounting's findings; [`Verdict::pass`] when nothing is wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub agents: u64,
    pub reports_acked: u64,
    pub transitions_expected: u64,
    pub transitions_found: u64,
    /// Agents whose collector `last_seq` is below what was acked (acked data lost).
    pub acked_lost: u64,
    /// Agents missing from `agents list` although reports were acked.
    pub agents_missing: u64,
    /// Agents whose `last_seq` exceeds what was ever sent.
    pub beyond_sent: u64,
    /// Checks whose transition sequence differs from the expected one.
    pub bad_sequences: u64,
    /// Events of non-crossing checks of ours, for our rule.
    pub unexpected_events: u64,
    pub duplicate_ids: u64,
    /// The first few problems, for people.
    pub examples: Vec<String>,
}

impl Verdict {
    pub fn pass(&self) -> bool {
        self.acked_lost == 0
            && self.agents_missing == 0
            && self.beyond_sent == 0
            && self.bad_sequences == 0
            && self.unexpected_events == 0
            && self.duplicate_ids == 0
    }

    fn note(&mut self, problem: String) {
        if self.examples.len() < 10 {
            self.examples.push(problem);
        }
    }
}

/// Checks the ledger against the collector's agents and events (see the module doc).
pub fn verify(ledger: &[LedgerRow], agents: &[Value], events: &[Value]) -> Verdict {
    let mut verdict = Verdict::default();
    let last_seqs: HashMap<(&str, &str), u64> = agents
        .iter()
        .filter_map(|row| {
            Some(((row["tenant"].as_str()?, row["agent"].as_str()?), row["last_seq"].as_u64()?))
        })
        .collect();
    let mut ids = HashSet::new();
    // (tenant, agent, check) -> statuses in queue order.
    let mut transitions: HashMap<(&str, &str, &str), Vec<&str>> = HashMap::new();
    for event in events {
        if let Some(id) = event["id"].as_str()
            && !ids.insert(id)
        {
            verdict.duplicate_ids += 1;
            verdict.note(format!("event id {id} twice"));
        }
        if event["rule"] != workload::RULE {
            continue;
        }
        let (Some(tenant), Some(agent), Some(check), Some(status)) = (
            event["tenant"].as_str(),
            event["agent"].as_str(),
            event["check"].as_str(),
            event["status"].as_str(),
        ) else {
            continue;
        };
        transitions.entry((tenant, agent, check)).or_default().push(status);
    }
    let ours: BTreeMap<(&str, &str), &LedgerRow> =
        ledger.iter().map(|row| ((row.tenant.as_str(), row.agent.as_str()), row)).collect();
    for ((tenant, agent), row) in &ours {
        verdict.agents += 1;
        verdict.reports_acked += row.acked;
        let last_seq = match last_seqs.get(&(*tenant, *agent)) {
            Some(last_seq) => *last_seq,
            None if row.acked == 0 => 0,
            None => {
                verdict.agents_missing += 1;
                verdict.note(format!("{tenant}/{agent}: acked {} but unknown to the collector", row.acked));
                continue;
            }
        };
        if last_seq < row.acked {
            verdict.acked_lost += 1;
            verdict.note(format!("{tenant}/{agent}: acked {} but last_seq {last_seq}", row.acked));
        }
        if last_seq > row.sent {
            verdict.beyond_sent += 1;
            verdict.note(format!("{tenant}/{agent}: last_seq {last_seq} but sent only {}", row.sent));
        }
        for index in 0..row.results {
            let check = workload::check_id(index);
            let found = transitions.get(&(*tenant, *agent, check.as_str())).map_or(&[][..], Vec::as_slice);
            verdict.transitions_found += found.len() as u64;
            if index >= row.crossing {
                if !found.is_empty() {
                    verdict.unexpected_events += found.len() as u64;
                    verdict.note(format!("{tenant}/{agent} {check}: {} events, expected none", found.len()));
                }
                continue;
            }
            let expected: Vec<&str> =
                (1..=last_seq).map(|seq| if workload::fires(seq) { "firing" } else { "resolved" }).collect();
            verdict.transitions_expected += expected.len() as u64;
            if found != expected.as_slice() {
                verdict.bad_sequences += 1;
                verdict.note(format!(
                    "{tenant}/{agent} {check}: {} transitions {:?}.. expected {} (last_seq {last_seq})",
                    found.len(),
                    &found[..found.len().min(6)],
                    expected.len()
                ));
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests;
