use proptest::prelude::*;
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, KeyPair, SanType};

use super::*;

/// A self-signed certificate whose subject alternative names are `uris` (URI SANs),
/// for identities that `issue_agent` would never produce.
fn crafted_cert(uris: &[&str]) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.subject_alt_names =
        uris.iter().map(|uri| SanType::URI(Ia5String::try_from(*uri).unwrap())).collect();
    params.subject_alt_names.push(SanType::DnsName(Ia5String::try_from("srv-01.acme.example").unwrap()));
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn validate_id_table() {
    let long_ok = "a".repeat(63);
    let too_long = "a".repeat(64);
    let cases: &[(&str, bool)] = &[
        ("acme", true),
        ("srv-01", true),
        ("0", true),
        ("9lives", true),
        ("web.prod_eu-1", true),
        (long_ok.as_str(), true),
        ("", false),
        (too_long.as_str(), false),
        ("Acme", false),
        ("SRV01", false),
        ("-srv", false),
        (".hidden", false),
        ("_x", false),
        ("..", false),
        ("a/b", false),
        ("srv 01", false),
        ("srv\n01", false),
        ("café", false),
        ("ｓrv", false),
        ("a:b", false),
        ("a%2fb", false),
    ];
    for (id, expected) in cases {
        assert_eq!(validate_id("agent", id).is_ok(), *expected, "validate_id({id:?})");
    }
}

#[test]
fn invalid_id_message_names_kind_and_fix() {
    let error = validate_id("agent", "Srv 01").unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid agent id \"Srv 01\": use 1-63 characters of a-z, 0-9, '.', '_', '-', \
         starting with a letter or digit"
    );
}

#[test]
fn from_certificate_rejects_foreign_shapes() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "NoUriSan"),
        (&["spiffe://example.org/tenant/acme/agent/srv-01"], "WrongTrustDomain"),
        (&["spiffe://nightowl.evil/tenant/acme/agent/srv-01"], "WrongTrustDomain"),
        (&["spiffe://nightowl:443/tenant/acme/agent/srv-01"], "WrongTrustDomain"),
        (&["https://nightowl/tenant/acme/agent/srv-01"], "NotSpiffe"),
        (&["SPIFFE://nightowl/tenant/acme/agent/srv-01"], "NotSpiffe"),
        (&["spiffe://nightowl"], "MalformedPath"),
        (&["spiffe://nightowl/tenant/acme"], "MalformedPath"),
        (&["spiffe://nightowl/agent/srv-01/tenant/acme"], "MalformedPath"),
        (&["spiffe://nightowl/tenant/acme/agent/srv-01/"], "MalformedPath"),
        (&["spiffe://nightowl/tenant/acme/agent/srv-01/extra"], "MalformedPath"),
        (&["spiffe://nightowl//tenant/acme/agent/srv-01"], "MalformedPath"),
        (&["spiffe://nightowl/tenant/ACME/agent/srv-01"], "InvalidId"),
        (&["spiffe://nightowl/tenant/acme/agent/.."], "InvalidId"),
        (&["spiffe://nightowl/tenant//agent/srv-01"], "InvalidId"),
        (&["spiffe://nightowl/tenant/acme/agent/srv-01?x=1"], "InvalidId"),
        (
            &["spiffe://nightowl/tenant/acme/agent/srv-01", "spiffe://nightowl/tenant/other/agent/srv-01"],
            "SeveralUriSans",
        ),
        (&["spiffe://nightowl/tenant/acme/agent/srv-01", "https://acme.example"], "SeveralUriSans"),
    ];
    for (uris, expected) in cases {
        let error = AgentIdentity::from_certificate(&crafted_cert(uris)).unwrap_err();
        let variant = format!("{error:?}");
        assert!(variant.starts_with(expected), "{uris:?}: expected {expected}, got {variant}");
    }
}

#[test]
fn from_certificate_invalid_id_names_the_kind() {
    let der = crafted_cert(&["spiffe://nightowl/tenant/acme/agent/Srv01"]);
    let error = AgentIdentity::from_certificate(&der).unwrap_err();
    assert!(
        matches!(
            &error,
            IdentityError::InvalidId { source: InvalidId { kind: "agent", id }, .. }
                if id == "Srv01"
        ),
        "{error:?}"
    );
}

#[test]
fn from_certificate_accepts_a_crafted_valid_uri() {
    let der = crafted_cert(&["spiffe://nightowl/tenant/t.1/agent/a_2"]);
    let identity = AgentIdentity::from_certificate(&der).unwrap();
    assert_eq!(identity.to_string(), "t.1/a_2");
}

#[test]
fn from_certificate_rejects_garbage() {
    for der in [&b""[..], b"not a certificate", &[0x30, 0x03, 0x02, 0x01, 0x01]] {
        assert!(matches!(AgentIdentity::from_certificate(der), Err(IdentityError::Unparsable { .. })));
    }
    let mut trailing = crafted_cert(&["spiffe://nightowl/tenant/acme/agent/srv-01"]);
    trailing.push(0);
    assert!(matches!(AgentIdentity::from_certificate(&trailing), Err(IdentityError::Unparsable { .. })));
}

proptest! {
    #[test]
    fn ids_of_the_grammar_are_valid_and_round_trip(
        tenant in "[a-z0-9][a-z0-9._-]{0,62}",
        agent in "[a-z0-9][a-z0-9._-]{0,62}",
    ) {
        prop_assert!(validate_id("tenant", &tenant).is_ok());
        prop_assert!(validate_id("agent", &agent).is_ok());
        let identity = AgentIdentity { tenant, agent };
        let parsed = AgentIdentity::from_spiffe_uri(&identity.spiffe_uri()).unwrap();
        prop_assert_eq!(parsed, identity);
    }

    #[test]
    fn any_accepted_id_is_of_the_grammar(id in "\\PC{0,70}") {
        if validate_id("agent", &id).is_ok() {
            prop_assert!(!id.is_empty() && id.len() <= 63);
            prop_assert!(id.bytes().all(|byte| byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || matches!(byte, b'.' | b'_' | b'-')));
            prop_assert!(!id.starts_with(['.', '_', '-']));
        }
    }
}
