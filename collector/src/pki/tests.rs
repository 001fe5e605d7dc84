use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};

use super::*;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(read_cert(ca_pem)).unwrap();
    Arc::new(roots)
}

fn client_verifier(ca_pem: &Path) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap()
}

fn server_verifier(ca_pem: &Path) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap()
}

/// A CA in a fresh temporary directory.
fn new_ca() -> (tempfile::TempDir, CaDir) {
    let temp = tempfile::tempdir().unwrap();
    let files = CaDir::new(temp.path().join("ca"));
    init_ca(files.dir(), &[]).unwrap();
    (temp, files)
}

#[test]
fn ca_dir_file_names() {
    let files = CaDir::new("/etc/nightowl/ca");
    assert_eq!(files.ca_cert(), Path::new("/etc/nightowl/ca/ca.pem"));
    assert_eq!(files.ca_key(), Path::new("/etc/nightowl/ca/ca.key"));
    assert_eq!(files.collector_cert(), Path::new("/etc/nightowl/ca/collector.pem"));
    assert_eq!(files.collector_key(), Path::new("/etc/nightowl/ca/collector.key"));
}

#[test]
fn init_ca_writes_four_files_with_modes() {
    let (_temp, files) = new_ca();
    assert_eq!(mode_of(files.dir()), 0o700);
    assert_eq!(mode_of(&files.ca_key()), 0o600);
    assert_eq!(mode_of(&files.collector_key()), 0o600);
    assert_eq!(mode_of(&files.ca_cert()), 0o644);
    assert_eq!(mode_of(&files.collector_cert()), 0o644);
    let mut names: Vec<String> = fs::read_dir(files.dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ca.key", "ca.pem", "collector.key", "collector.pem"],
        "no temporary file left behind"
    );
    for key in [files.ca_key(), files.collector_key()] {
        KeyPair::from_pem(&fs::read_to_string(key).unwrap()).unwrap();
    }
}

#[test]
fn ca_certificate_is_a_constrained_ca_valid_ten_years() {
    let (_temp, files) = new_ca();
    let der = read_cert(&files.ca_cert());
    let (_, ca) = x509_parser::parse_x509_certificate(&der).unwrap();
    let constraints = ca.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = ca.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    let validity = ca.validity();
    let seconds = validity.not_after.timestamp() - validity.not_before.timestamp();
    let expected = (CA_VALIDITY + CLOCK_SKEW).as_secs() as i64;
    assert!((seconds - expected).abs() < 60, "{seconds} vs {expected}");
    assert!(validity.not_before.timestamp() < x509_parser::time::ASN1Time::now().timestamp());
}

#[test]
fn init_ca_refuses_a_second_time_and_touches_nothing() {
    let (_temp, files) = new_ca();
    let before: Vec<Vec<u8>> =
        [files.ca_cert(), files.ca_key(), files.collector_cert(), files.collector_key()]
            .iter()
            .map(|path| fs::read(path).unwrap())
            .collect();

    let error = init_ca(files.dir(), &["other.example".to_owned()]).unwrap_err();
    assert!(matches!(&error, PkiError::CaExists { dir } if dir == files.dir()));
    assert!(error.to_string().contains("refusing to replace"));

    // Only one of the two CA files present is enough to refuse.
    fs::remove_file(files.ca_cert()).unwrap();
    let error = init_ca(files.dir(), &[]).unwrap_err();
    assert!(matches!(error, PkiError::CaExists { .. }));

    assert_eq!(fs::read(files.ca_key()).unwrap(), before[1]);
    assert_eq!(fs::read(files.collector_cert()).unwrap(), before[2]);
    assert_eq!(fs::read(files.collector_key()).unwrap(), before[3]);
    assert!(!files.ca_cert().exists());
}

#[test]
fn init_ca_rejects_a_bad_name_before_writing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("ca");
    let error = init_ca(&dir, &["bad name".to_owned()]).unwrap_err();
    assert!(matches!(&error, PkiError::InvalidName { name } if name == "bad name"));
    assert!(!dir.exists());
}

#[test]
fn collector_cert_verifies_as_server_for_default_names() {
    let (_temp, files) = new_ca();
    let verifier = server_verifier(&files.ca_cert());
    let collector = read_cert(&files.collector_cert());
    for name in ["localhost", "127.0.0.1"] {
        let server_name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&collector, &[], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let other = ServerName::try_from("collector.example.net").unwrap();
    assert!(verifier.verify_server_cert(&collector, &[], &other, &[], UnixTime::now()).is_err());
    // A server certificate is not a client certificate (EKU).
    assert!(client_verifier(&files.ca_cert()).verify_client_cert(&collector, &[], UnixTime::now()).is_err());
}

#[test]
fn collector_cert_carries_the_given_names() {
    let temp = tempfile::tempdir().unwrap();
    let files = CaDir::new(temp.path());
    let names = ["collector.example.net".to_owned(), "10.1.2.3".to_owned()];
    init_ca(files.dir(), &names).unwrap();
    let verifier = server_verifier(&files.ca_cert());
    let collector = read_cert(&files.collector_cert());
    for name in ["collector.example.net", "10.1.2.3"] {
        let server_name = ServerName::try_from(name).unwrap();
        verifier
            .verify_server_cert(&collector, &[], &server_name, &[], UnixTime::now())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let localhost = ServerName::try_from("localhost").unwrap();
    assert!(verifier.verify_server_cert(&collector, &[], &localhost, &[], UnixTime::now()).is_err());
}

#[test]
fn issued_agent_cert_carries_identity_and_verifies() {
    let (temp, files) = new_ca();
    let cert_out = temp.path().join("agent/etc/agent.pem");
    let key_out = temp.path().join("agent/private/agent.key");
    issue_agent(files.dir(), "acme", "srv-01", &cert_out, &key_out).unwrap();

    assert_eq!(mode_of(&key_out), 0o600);
    assert_eq!(mode_of(&cert_out), 0o644);
    assert_eq!(mode_of(key_out.parent().unwrap()), 0o700);
    KeyPair::from_pem(&fs::read_to_string(&key_out).unwrap()).unwrap();

    let der = read_cert(&cert_out);
    let identity = AgentIdentity::from_certificate(&der).unwrap();
    assert_eq!(identity, AgentIdentity { tenant: "acme".to_owned(), agent: "srv-01".to_owned() });
    assert_eq!(identity.to_string(), "acme/srv-01");
    assert_eq!(identity.spiffe_uri(), "spiffe://nightowl/tenant/acme/agent/srv-01");

    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let common_names: Vec<&str> =
        parsed.subject().iter_common_name().map(|name| name.as_str().unwrap()).collect();
    assert_eq!(common_names, ["srv-01"]);
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);

    client_verifier(&files.ca_cert()).verify_client_cert(&der, &[], UnixTime::now()).unwrap();
    // A client certificate is not a server certificate, even for a name it lacks.
    let localhost = ServerName::try_from("localhost").unwrap();
    assert!(
        server_verifier(&files.ca_cert())
            .verify_server_cert(&der, &[], &localhost, &[], UnixTime::now())
            .is_err()
    );
}

#[test]
fn cert_of_another_ca_is_rejected() {
    let (temp, files) = new_ca();
    let other = CaDir::new(temp.path().join("other-ca"));
    init_ca(other.dir(), &[]).unwrap();
    let cert_out = temp.path().join("foreign.pem");
    let key_out = temp.path().join("foreign.key");
    issue_agent(other.dir(), "acme", "srv-01", &cert_out, &key_out).unwrap();

    let foreign = read_cert(&cert_out);
    // The identity reads fine: only the chain check stands between it and the
    // collector, which is why from_certificate runs after the TLS verifier.
    assert!(AgentIdentity::from_certificate(&foreign).is_ok());
    let error =
        client_verifier(&files.ca_cert()).verify_client_cert(&foreign, &[], UnixTime::now()).unwrap_err();
    assert!(matches!(error, rustls::Error::InvalidCertificate(_)), "{error:?}");
    client_verifier(&other.ca_cert()).verify_client_cert(&foreign, &[], UnixTime::now()).unwrap();
}

#[test]
fn serial_numbers_are_random_and_positive() {
    let (temp, files) = new_ca();
    let mut serials = Vec::new();
    for agent in ["a1", "a2"] {
        let cert_out = temp.path().join(format!("{agent}.pem"));
        let key_out = temp.path().join(format!("{agent}.key"));
        issue_agent(files.dir(), "acme", agent, &cert_out, &key_out).unwrap();
        let der = read_cert(&cert_out);
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(parsed.raw_serial().len(), 16);
        assert!(parsed.raw_serial()[0] & 0x80 == 0);
        serials.push(parsed.raw_serial().to_vec());
    }
    assert_ne!(serials[0], serials[1]);
}

#[test]
fn ca_signer_issues_the_same_identities_in_memory() {
    let (_temp, files) = new_ca();
    let signer = CaSigner::load(files.dir()).unwrap();
    let (cert_pem, key_pem) = signer.agent_pem("acme", "srv-01").unwrap();
    KeyPair::from_pem(&key_pem).unwrap();
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let identity = AgentIdentity::from_certificate(&der).unwrap();
    assert_eq!(identity, AgentIdentity { tenant: "acme".to_owned(), agent: "srv-01".to_owned() });
    client_verifier(&files.ca_cert()).verify_client_cert(&der, &[], UnixTime::now()).unwrap();

    let (operator_pem, _) = signer.operator_pem("noc", None).unwrap();
    let der = CertificateDer::from_pem_slice(operator_pem.as_bytes()).unwrap();
    assert_eq!(OperatorIdentity::from_certificate(&der).unwrap().name, "noc");
    assert!(matches!(
        signer.agent_pem("Acme", "x"),
        Err(PkiError::InvalidId(InvalidId { kind: "tenant", .. }))
    ));
    let missing = tempfile::tempdir().unwrap();
    assert!(matches!(CaSigner::load(missing.path()), Err(PkiError::CaMissing { .. })));
}

#[test]
fn issue_agent_overwrites_outputs() {
    let (temp, files) = new_ca();
    let cert_out = temp.path().join("agent.pem");
    let key_out = temp.path().join("agent.key");
    issue_agent(files.dir(), "acme", "srv-01", &cert_out, &key_out).unwrap();
    let first_key = fs::read(&key_out).unwrap();
    issue_agent(files.dir(), "acme", "srv-02", &cert_out, &key_out).unwrap();
    assert_ne!(fs::read(&key_out).unwrap(), first_key);
    let identity = AgentIdentity::from_certificate(&read_cert(&cert_out)).unwrap();
    assert_eq!(identity.agent, "srv-02");
    assert_eq!(mode_of(&key_out), 0o600);
}

#[test]
fn issue_agent_rejects_invalid_ids_naming_the_kind() {
    let (temp, files) = new_ca();
    let cert_out = temp.path().join("agent.pem");
    let key_out = temp.path().join("agent.key");
    let error = issue_agent(files.dir(), "Acme", "srv-01", &cert_out, &key_out).unwrap_err();
    assert!(
        matches!(&error, PkiError::InvalidId(InvalidId { kind: "tenant", id }) if id == "Acme"),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("invalid tenant id \"Acme\""));
    let error = issue_agent(files.dir(), "acme", "srv/01", &cert_out, &key_out).unwrap_err();
    assert!(
        matches!(&error, PkiError::InvalidId(InvalidId { kind: "agent", id }) if id == "srv/01"),
        "{error:?}"
    );
    assert!(!cert_out.exists() && !key_out.exists());
}

#[test]
fn issue_agent_without_ca_is_ca_missing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("nowhere");
    let error = issue_agent(&dir, "acme", "srv-01", &temp.path().join("a.pem"), &temp.path().join("a.key"))
        .unwrap_err();
    assert!(matches!(&error, PkiError::CaMissing { dir: missing } if *missing == dir));
    assert!(error.to_string().contains("ca init"));
}

#[test]
fn issue_agent_refuses_a_ca_key_of_another_ca() {
    let (temp, files) = new_ca();
    let other = CaDir::new(temp.path().join("other-ca"));
    init_ca(other.dir(), &[]).unwrap();
    fs::copy(other.ca_key(), files.ca_key()).unwrap();
    let error =
        issue_agent(files.dir(), "acme", "srv-01", &temp.path().join("a.pem"), &temp.path().join("a.key"))
            .unwrap_err();
    assert!(matches!(&error, PkiError::CaInvalid { path, .. } if *path == files.ca_cert()), "{error:?}");
}

#[test]
fn issue_agent_refuses_same_output_path() {
    let (temp, files) = new_ca();
    let both = temp.path().join("agent.pem");
    let error = issue_agent(files.dir(), "acme", "srv-01", &both, &both).unwrap_err();
    assert!(matches!(error, PkiError::SameOutput { .. }));
}
