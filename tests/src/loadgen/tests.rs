use super::*;

#[test]
fn url_host_handles_names_ips_and_ipv6() {
    assert_eq!(url_host("https://127.0.0.1:7443").as_deref(), Some("127.0.0.1"));
    assert_eq!(url_host("https://collector.example:7443/x").as_deref(), Some("collector.example"));
    assert_eq!(url_host("https://[::1]:7443").as_deref(), Some("::1"));
    assert_eq!(url_host("http://127.0.0.1:7443"), None);
}
