//! Acceptance (issue 2, point 2): mutual TLS is required and identity comes only from
//! the client certificate. Uses a raw gRPC client so the test controls exactly what the
//! payload claims.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nightowl_proto::v1::collector_client::CollectorClient;
use nightowl_proto::{
    AgentMessage, CheckResult, CollectorMessage, Hello, ProbeStatus, Report, collector_message,
};
use nightowl_tests::{Collector, Pki, wait_for};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Opens a session with the given client identity (or none), sends `messages`, and
/// returns the acks received before the stream ended or `wait` passed — or the error.
async fn session(
    url: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    messages: Vec<AgentMessage>,
    expect_acks: usize,
) -> Result<Vec<u64>, tonic::Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
    }
    let channel =
        match Endpoint::from_shared(url.to_owned()).unwrap().tls_config(tls).unwrap().connect().await {
            Ok(channel) => channel,
            // Under TLS 1.3 a refused client certificate usually surfaces on the first RPC,
            // but a refusal at connect is a refusal too.
            Err(error) => return Err(tonic::Status::unavailable(format!("connect refused: {error}"))),
        };
    let mut client = CollectorClient::new(channel);
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for message in messages {
        sender.send(message).await.unwrap();
    }
    let mut inbound =
        client.session(tokio_stream::wrappers::ReceiverStream::new(receiver)).await?.into_inner();
    let mut acks = Vec::new();
    while acks.len() < expect_acks {
        match tokio::time::timeout(Duration::from_secs(30), inbound.message()).await {
            Err(_) => panic!("no answer from the collector within 30s"),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(CollectorMessage { msg: Some(collector_message::Msg::Ack(ack)) }))) => {
                acks.push(ack.seq)
            }
            // Sent after the hello ack: the collector's limits, the central policy (empty here).
            Ok(Ok(Some(CollectorMessage {
                msg: Some(collector_message::Msg::Limits(_) | collector_message::Msg::Policy(_)),
            }))) => {}
            Ok(Ok(Some(other))) => panic!("unexpected message {other:?}"),
        }
    }
    drop(sender);
    Ok(acks)
}

fn hello(tenant: &str, agent: &str) -> AgentMessage {
    AgentMessage::hello(Hello {
        hostname: "test-host".into(),
        os: "test".into(),
        agent_version: "0.0.0".into(),
        boot_id: "boot".into(),
        stream_id: "stream-1".into(),
        tenant: tenant.into(),
        agent: agent.into(),
        labels: Default::default(),
    })
}

fn full_disk_report(seq: u64) -> AgentMessage {
    AgentMessage::report(Report {
        seq,
        retired_checks: Vec::new(),
        sampled_at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64,
        results: vec![CheckResult {
            check_id: "disk:/data".into(),
            kind: "disk".into(),
            status: ProbeStatus::Ok as i32,
            metrics: BTreeMap::from([("used_pct".to_owned(), 99.0)]),
            message: String::new(),
            interval_ms: 10_000,
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_of_our_ca_get_in_and_identity_comes_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let (cert, key) = pki.issue("acme", "srv-01");
    let rogue = Pki::init(&dir.path().join("rogue-pki"));
    let (rogue_cert, rogue_key) = rogue.issue("acme", "srv-01");
    let mut collector = Collector::new(dir.path(), &pki);
    tokio::task::block_in_place(|| collector.start());
    let url = collector.url();

    // 1. No client certificate: refused.
    let refused = session(&url, &pki.ca(), None, vec![hello("", ""), full_disk_report(1)], 1).await;
    assert!(refused.is_err(), "a client without certificate must be refused, got {refused:?}");

    // 2. A certificate from another CA (same tenant/agent names!): refused.
    let refused = session(
        &url,
        &pki.ca(),
        Some((&rogue_cert, &rogue_key)),
        vec![hello("", ""), full_disk_report(1)],
        1,
    )
    .await;
    assert!(refused.is_err(), "a certificate of a foreign CA must be refused, got {refused:?}");

    // 3. A valid certificate whose hello claims another tenant: refused as a violation.
    let refused = session(
        &url,
        &pki.ca(),
        Some((&cert, &key)),
        vec![hello("globex", "srv-01"), full_disk_report(1)],
        1,
    )
    .await;
    let status = refused.expect_err("a hello claiming another tenant must be refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Nothing from the refused sessions reached the store.
    tokio::task::block_in_place(|| {
        assert!(collector.events().is_empty(), "refused sessions produced events: {:?}", collector.events());
        assert!(
            collector.agents().is_empty(),
            "refused sessions registered agents: {:?}",
            collector.agents()
        );
    });

    // 4. The valid certificate: accepted; the event is tagged with the certificate's
    //    tenant and agent.
    let acks = session(&url, &pki.ca(), Some((&cert, &key)), vec![hello("", ""), full_disk_report(1)], 2)
        .await
        .expect("a valid agent certificate is accepted");
    assert_eq!(acks, [0, 1], "ack of hello (nothing yet), then ack of report 1");
    tokio::task::block_in_place(|| {
        let events = wait_for("the firing event", Duration::from_secs(30), || {
            Some(collector.events()).filter(|events| !events.is_empty())
        });
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["tenant"], "acme");
        assert_eq!(events[0]["agent"], "srv-01");
        assert_eq!(events[0]["status"], "firing");
        assert!(!events.iter().any(|event| event["tenant"] == "globex"));
        let agents = collector.agents();
        assert_eq!(agents.len(), 1);
        assert_eq!(
            (agents[0]["tenant"].as_str(), agents[0]["agent"].as_str()),
            (Some("acme"), Some("srv-01"))
        );
    });

    // 5. Replaying the same report (reconnect) is harmless: acked, nothing new.
    let acks =
        session(&url, &pki.ca(), Some((&cert, &key)), vec![hello("acme", "srv-01"), full_disk_report(1)], 2)
            .await
            .expect("the honest claim matches the certificate");
    assert_eq!(acks, [1, 1], "the collector already has seq 1 and acks the replay");
    tokio::task::block_in_place(|| {
        assert_eq!(collector.events().len(), 1, "a replayed report must not emit again");
        assert_eq!(
            collector.agent("acme", "srv-01").unwrap()["reports"],
            1,
            "one report processed, the replay dropped"
        );
        collector.terminate();
    });
}

/// Writes `name.pem` (the chain, leaf first) and `name.key` into `out`.
fn write_chain(
    out: &Path,
    name: &str,
    chain: &[&rcgen::Certificate],
    key: &rcgen::KeyPair,
) -> (PathBuf, PathBuf) {
    let cert = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}.key"));
    std::fs::write(&cert, chain.iter().map(|certificate| certificate.pem()).collect::<String>()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert, key_path)
}

fn client_params(uri: &str, client_auth: bool) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    if client_auth {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    }
    params
}

/// Regression (issue 13, defect 4): a CA:TRUE certificate signed by the collector CA's key,
/// and a leaf for any tenant under it, got a session and created alerts for that tenant
/// (webpki does not enforce the root's pathlen:0). Client certificates must be issued
/// directly by the CA, for client authentication — on both services of the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_leaves_issued_directly_by_the_ca_for_clients_get_in() {
    use nightowl_collector::feed::client::{FeedTarget, SubscribeOptions, Subscription};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::init(&dir.path().join("pki"));
    let ca_dir = pki.ca().parent().unwrap().to_path_buf();
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let ca = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.ca()).unwrap(), ca_key).unwrap();

    // An intermediate CA signed by the real CA key, and leaves under it.
    let mut intermediate_params = rcgen::CertificateParams::default();
    intermediate_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    intermediate_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let intermediate_key = rcgen::KeyPair::generate().unwrap();
    let intermediate = intermediate_params.signed_by(&intermediate_key, &ca).unwrap();
    let intermediate_issuer = rcgen::Issuer::new(intermediate_params, intermediate_key);
    let out = dir.path();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let agent_leaf = client_params("spiffe://nightowl/tenant/victim/agent/srv-01", true)
        .signed_by(&leaf_key, &intermediate_issuer)
        .unwrap();
    let chained_agent = write_chain(out, "chained-agent", &[&agent_leaf, &intermediate], &leaf_key);
    let operator_leaf = client_params("spiffe://nightowl/operator/mallory", true)
        .signed_by(&leaf_key, &intermediate_issuer)
        .unwrap();
    let chained_operator = write_chain(out, "chained-operator", &[&operator_leaf, &intermediate], &leaf_key);
    // Signed directly by the CA, but not for client authentication.
    let no_eku = client_params("spiffe://nightowl/tenant/victim/agent/srv-02", false)
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let no_eku = write_chain(out, "no-eku", &[&no_eku], &leaf_key);
    // The control: the same hand-made leaf, directly issued, with clientAuth, gets in.
    let direct = client_params("spiffe://nightowl/tenant/victim/agent/srv-03", true)
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let direct = write_chain(out, "direct", &[&direct], &leaf_key);

    let mut collector = Collector::new(dir.path(), &pki);
    tokio::task::block_in_place(|| collector.start());
    let url = collector.url();
    let messages = || vec![hello("", ""), full_disk_report(1)];

    for (what, (cert, key)) in
        [("a leaf under an intermediate CA", &chained_agent), ("a leaf without clientAuth", &no_eku)]
    {
        let refused = session(&url, &pki.ca(), Some((cert, key)), messages(), 2).await;
        assert!(refused.is_err(), "{what} must be refused, got {refused:?}");
    }
    let feed = FeedTarget {
        url: url.clone(),
        ca: pki.ca(),
        cert: chained_operator.0.clone(),
        key: chained_operator.1.clone(),
        server_name: None,
    };
    let opened = Subscription::open(&feed, &SubscribeOptions::new("psa")).await;
    let refused = match opened {
        Err(error) => Err(error.to_string()),
        Ok(mut subscription) => {
            match tokio::time::timeout(Duration::from_secs(10), subscription.next()).await {
                Ok(Err(error)) => Err(error.to_string()),
                other => Ok(format!("{other:?}")),
            }
        }
    };
    assert!(
        refused.is_err(),
        "an operator leaf under an intermediate CA must be refused by the feed: {refused:?}"
    );

    let acks = session(&url, &pki.ca(), Some((&direct.0, &direct.1)), messages(), 2)
        .await
        .expect("a leaf issued directly by the CA for client auth is accepted");
    assert_eq!(acks, [0, 1]);
    tokio::task::block_in_place(|| {
        let events = wait_for("the control's firing event", Duration::from_secs(30), || {
            Some(collector.events()).filter(|events| !events.is_empty())
        });
        let agents: Vec<&str> = events.iter().filter_map(|event| event["agent"].as_str()).collect();
        assert_eq!(agents, ["srv-03"], "only the directly issued leaf may create alerts: {events:?}");
        collector.terminate();
    });
}
