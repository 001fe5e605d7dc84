//! Regression (issue 13, defect 5): one report larger than the collector's
//! `limits.max_message_bytes` wedged a real agent for good — the collector closed the
//! session, the agent reconnected and resent the same seq forever, nothing behind it was
//! delivered and nothing alerted. Now the collector says its limits after the Hello Ack,
//! the agent builds its reports within them, and a report the collector still cannot
//! take ends the stream with a status that says why and raises `reports_refused`.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use nightowl_proto::{CheckResult, ProbeStatus, collector_message};
use nightowl_tests::drill::client::{self, Credentials, Session};
use nightowl_tests::{Agent, Collector, Pki, wait_for};
use serde_json::Value;

const MAX_MESSAGE_BYTES: usize = 4096;

/// A process for services to watch: `sleep` with an argument no other process has.
struct Victim(Child);

impl Victim {
    fn start(arg: &str) -> Victim {
        Victim(Command::new("sleep").arg(arg).spawn().expect("spawn sleep"))
    }

    /// A `[[service]]` watching it.
    fn service(name: &str, arg: &str) -> String {
        let pattern = format!("sleep {}", arg.replace('.', "\\\\."));
        format!("[[service]]\nname = \"{name}\"\nprocess = \"{pattern}\"\nmatch = \"cmdline\"\n")
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.kill();
    }
}

fn firing(events: &[Value], rule: &str, check: &str) -> Option<Value> {
    events
        .iter()
        .find(|event| event["rule"] == rule && event["check"] == check && event["status"] == "firing")
        .cloned()
}

#[test]
fn an_agent_whose_full_report_is_over_the_limit_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "many-checks");
    let tables = format!("[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n");
    let mut collector = Collector::with_config(dir.path(), &pki, "", &tables);
    collector.start();

    // 60 services that are up, with long names, and one that will die: one sample of
    // all of them is several times the collector's limit.
    let _keeper = Victim::start("3600.4214");
    let mut victim = Victim::start("3600.4213");
    let mut services = String::new();
    for index in 0..60 {
        services.push_str(&Victim::service(&format!("filler-{index:02}-{}", "x".repeat(50)), "3600.4214"));
    }
    services.push_str(&Victim::service("victim", "3600.4213"));
    let mut agent =
        Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "2s", &[Path::new("/")]);
    agent.rewrite_config(&[Path::new("/")], &services);
    agent.start();

    // Delivered: the collector has the agent's reports, several per sample.
    let row = wait_for("the agent's reports at the collector", Duration::from_secs(60), || {
        collector.agent("acme", "many-checks").filter(|row| row["last_seq"].as_u64() >= Some(6))
    });
    eprintln!("agent row: {row}");

    // A service that dies behind the first report is reported.
    victim.kill();
    let down = wait_for("service_down for the victim", Duration::from_secs(60), || {
        firing(&collector.events(), "service_down", "service:victim")
    });
    eprintln!("service_down: {down}");
    // Every result was evaluated as sent: the fillers are up.
    let down: Vec<Value> =
        collector.events().into_iter().filter(|event| event["rule"] == "service_down").collect();
    assert_eq!(down.len(), 1, "only the victim is down: {down:?}");

    // It did not loop on one seq: one session, never refused, nothing refused.
    let log = agent.log_text();
    assert_eq!(log.matches("session established").count(), 1, "the agent reconnected:\n{log}");
    assert!(!log.contains("collector session lost"), "the session broke:\n{log}");
    assert!(firing(&collector.events(), "reports_refused", "agent:reports").is_none());
    let spool = agent.spool();
    assert!(spool["pending"].as_u64() < Some(64), "the spool drains: {spool}");
    agent.terminate();
    collector.terminate();
}

/// The agent spooled reports under the collector's default limits while the collector
/// was down; it comes back with a smaller `max_message_bytes`. The agent refits what it
/// spooled (new seqs) instead of sending reports the collector cannot take.
#[test]
fn reports_spooled_under_larger_limits_are_refitted_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "spooled");
    let mut collector = Collector::new(dir.path(), &pki);
    collector.start();
    let _keeper = Victim::start("3600.4216");
    let mut victim = Victim::start("3600.4215");
    let mut services = String::new();
    for index in 0..60 {
        services.push_str(&Victim::service(&format!("filler-{index:02}-{}", "x".repeat(50)), "3600.4216"));
    }
    services.push_str(&Victim::service("victim", "3600.4215"));
    let mut agent =
        Agent::new(&dir.path().join("agent"), &collector, &pki, &cert, &key, "1s", &[Path::new("/")]);
    agent.rewrite_config(&[Path::new("/")], &services);
    agent.start();
    wait_for("the first reports", Duration::from_secs(60), || {
        collector.agent("acme", "spooled").filter(|row| row["last_seq"].as_u64() >= Some(2))
    });

    // The collector goes away; the agent spools full-size reports, the victim dies.
    collector.terminate();
    victim.kill();
    let spooled = wait_for("reports spooled during the outage", Duration::from_secs(60), || {
        Some(agent.spool()).filter(|spool| spool["pending"].as_u64() >= Some(4))
    });
    let newest = spooled["newest_seq"].as_u64().unwrap();
    let mut config = std::fs::read_to_string(&collector.config).unwrap();
    config.push_str(&format!("[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n"));
    std::fs::write(&collector.config, config).unwrap();
    collector.start();

    let down = wait_for("service_down for the victim", Duration::from_secs(60), || {
        firing(&collector.events(), "service_down", "service:victim")
    });
    eprintln!("service_down after the outage: {down}");
    // Everything spooled during the outage is delivered (refitted: under new seqs).
    let row = wait_for("the outage's reports delivered", Duration::from_secs(60), || {
        collector.agent("acme", "spooled").filter(|row| row["last_seq"].as_u64() > Some(newest))
    });
    assert!(row["seq_gaps"].as_u64() >= Some(1), "the refit skips the old seqs: {row}");
    let log = collector.log_text();
    assert!(!log.contains("message refused"), "the collector refused a report:\n{log}");
    assert!(
        agent.log_text().contains("pending reports over the collector's limits"),
        "the agent refitted its spool:\n{}",
        agent.log_text()
    );
    assert!(firing(&collector.events(), "reports_refused", "agent:reports").is_none());
    agent.terminate();
    collector.terminate();
}

fn result(id: &str, message: String) -> CheckResult {
    CheckResult {
        check_id: id.to_owned(),
        kind: "service".into(),
        status: ProbeStatus::Ok as i32,
        metrics: [("up".to_owned(), 1.0)].into(),
        message,
        interval_ms: 10_000,
    }
}

fn refused_events(collector: &Collector) -> Vec<(String, String)> {
    collector
        .events()
        .into_iter()
        .filter(|event| event["rule"] == "reports_refused")
        .map(|event| {
            (event["status"].as_str().unwrap().to_owned(), event["summary"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[test]
fn a_report_the_collector_cannot_take_is_refused_with_a_status_and_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "raw-01");
    let tables = format!("[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\nmax_results_per_report = 5\n");
    let mut collector = Collector::with_config(dir.path(), &pki, "", &tables);
    collector.start();
    let credentials = Credentials { ca: pki.ca(), cert, key };
    let url = collector.url();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let channel = client::channel(&url, &credentials).await.unwrap();
        let mut session = Session::open(channel, "raw-01").await.unwrap();
        // Right after the Hello Ack: the limits.
        let limits = session.inbound.message().await.unwrap().unwrap();
        let Some(collector_message::Msg::Limits(limits)) = limits.msg else {
            panic!("the message after the hello ack is not Limits: {limits:?}")
        };
        assert_eq!((limits.max_message_bytes, limits.max_results_per_report), (4096, 5));

        // Too many results: acked (it cannot be resent forever), and alerted.
        let many = (0..6).map(|index| result(&format!("service:s{index}"), String::new())).collect();
        session.send_and_ack(client::report(1, client::now_ms(), many), 1).await.unwrap();
        // An ordinary report: evaluated, the alert resolves.
        session
            .send_and_ack(client::report(2, client::now_ms(), vec![result("service:s0", String::new())]), 2)
            .await
            .unwrap();
        // Over max_message_bytes: the stream ends with RESOURCE_EXHAUSTED saying why.
        let big = vec![result("service:big", "m".repeat(2 * MAX_MESSAGE_BYTES))];
        session.sender.send(client::report(3, client::now_ms(), big)).await.unwrap();
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(20), session.inbound.message()).await {
                Err(_) => panic!("the collector did not end the stream"),
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => panic!("the stream ended OK, not with an error status"),
                Ok(Err(status)) => break status,
            }
        };
        assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
        assert!(ended.message().contains("bytes > 4096"), "{ended:?}");
    });

    let events = wait_for("the second reports_refused", Duration::from_secs(30), || {
        Some(refused_events(&collector)).filter(|events| events.len() >= 3)
    });
    assert_eq!(
        events[0],
        ("firing".into(), "Agent raw-01: reports refused: too many results (6 > 5)".into())
    );
    assert_eq!(events[1], ("resolved".into(), "Agent raw-01: reports accepted again".into()));
    assert_eq!(events[2].0, "firing");
    assert!(
        events[2].1.starts_with("Agent raw-01: reports refused: over the size limit (")
            && events[2].1.ends_with(" bytes > 4096)"),
        "{events:?}"
    );
    collector.terminate();
}
