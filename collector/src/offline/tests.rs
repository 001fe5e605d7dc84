use super::*;

#[tokio::test]
async fn probe_tells_refused_accepted_and_silent_apart() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        spare.local_addr().unwrap().port()
    };
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let accepted = probe(localhost, &[open], Duration::from_secs(2)).await;
    assert_eq!(accepted, Reach::Answered { address: localhost, port: open, refused: false });
    let refused = probe(localhost, &[closed], Duration::from_secs(2)).await;
    assert_eq!(refused, Reach::Answered { address: localhost, port: closed, refused: true });
    assert!(refused.describe().contains("is reachable"));
    assert_eq!(probe(localhost, &[], Duration::from_secs(1)).await, Reach::Silent { address: localhost });
    assert!(Reach::Silent { address: localhost }.describe().contains("unreachable"));
}

#[test]
fn severity_follows_the_role_label() {
    let role = |value: &str| BTreeMap::from([("role".to_owned(), value.to_owned())]);
    assert_eq!(severity_for(&role("server")), Severity::P1);
    assert_eq!(severity_for(&role("workstation")), Severity::P4);
    assert_eq!(severity_for(&BTreeMap::new()), Severity::P2);
}
