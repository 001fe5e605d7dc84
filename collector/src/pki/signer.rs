//! Certificate building and signing: the CA, the collector's server certificate and
//! client (agent, operator) certificates.

use super::*;

/// Names in the collector certificate when `ca init` is given none.
pub(super) const DEFAULT_COLLECTOR_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA loaded once, to issue many client certificates in memory (the load generator
/// issues thousands; [`issue_agent`] reloads and re-checks the CA and fsyncs two files
/// per certificate). Same certificates as `ca issue` / `ca issue-operator`, returned as
/// PEM `(certificate, private key)` instead of written to files.
pub struct CaSigner {
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CaSigner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("CaSigner").finish_non_exhaustive()
    }
}

impl CaSigner {
    /// Loads and checks the CA in `dir` ([`PkiError::CaMissing`] if absent).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let (ca_cert_der, ca_key) = load_ca(&CaDir::new(dir))?;
        Ok(Self { issuer: Issuer::from_ca_cert_der(&ca_cert_der, ca_key)? })
    }

    /// An agent certificate for `tenant`/`agent` (ids checked by [`validate_id`]).
    pub fn agent_pem(&self, tenant: &str, agent: &str) -> Result<(String, String), PkiError> {
        validate_id("tenant", tenant)?;
        validate_id("agent", agent)?;
        let identity = AgentIdentity { tenant: tenant.to_owned(), agent: agent.to_owned() };
        self.client_pem(&identity.spiffe_uri(), agent)
    }

    /// An operator certificate for the alert feed (every tenant when `tenant` is None).
    pub fn operator_pem(&self, name: &str, tenant: Option<&str>) -> Result<(String, String), PkiError> {
        validate_id("operator", name)?;
        if let Some(tenant) = tenant {
            validate_id("tenant", tenant)?;
        }
        let identity = OperatorIdentity { name: name.to_owned(), tenant: tenant.map(str::to_owned) };
        self.client_pem(&identity.spiffe_uri(), name)
    }

    fn client_pem(&self, uri: &str, common_name: &str) -> Result<(String, String), PkiError> {
        let (cert, key) = client_certificate(&self.issuer, uri, common_name)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A client certificate (EKU clientAuth) whose only identity is the URI SAN `uri`.
pub(super) fn client_certificate(
    issuer: &Issuer<'_, KeyPair>,
    uri: &str,
    common_name: &str,
) -> Result<(rcgen::Certificate, KeyPair), PkiError> {
    let client_key = KeyPair::generate()?;
    let mut params = leaf_params(AGENT_VALIDITY)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri)?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, issuer)?;
    Ok((client_cert, client_key))
}

pub(super) fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "nightowl");
    params.distinguished_name.push(DnType::CommonName, "nightowl CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity_and_serial(&mut params, CA_VALIDITY)?;
    Ok(params)
}

/// Parameters shared by the collector and agent certificates; the caller adds the
/// subject, the names and the extended key usage.
pub(super) fn leaf_params(validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity_and_serial(&mut params, validity)?;
    Ok(params)
}

pub(super) fn set_validity_and_serial(
    params: &mut CertificateParams,
    validity: Duration,
) -> Result<(), PkiError> {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + validity).into();
    let mut serial = random_bytes::<16>()?;
    // A positive INTEGER of exactly 16 octets: clear the sign bit, keep the top octet
    // non-zero so the DER encoding is not shortened.
    serial[0] = (serial[0] & 0x7f).max(1);
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| rcgen::Error::RingUnspecified)?;
    Ok(bytes)
}

/// `--name` values to subject alternative names: IP address if it parses, else DNS name.
pub(super) fn collector_subject_alt_names(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    let names: Vec<&str> = if names.is_empty() {
        DEFAULT_COLLECTOR_NAMES.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut subject_alt_names: Vec<SanType> = Vec::with_capacity(names.len());
    for name in names {
        let invalid = || PkiError::InvalidName { name: name.to_owned() };
        let san = match name.parse::<IpAddr>() {
            Ok(address) => SanType::IpAddress(address),
            Err(_) => {
                // The same check a TLS client applies to the name it connects to.
                DnsName::try_from(name).map_err(|_| invalid())?;
                SanType::DnsName(Ia5String::try_from(name).map_err(|_| invalid())?)
            }
        };
        if !subject_alt_names.contains(&san) {
            subject_alt_names.push(san);
        }
    }
    Ok(subject_alt_names)
}
