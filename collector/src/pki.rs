//! The collector's small certificate authority, and the identity of a peer.
//!
//! # Files
//!
//! `nightowl-collector ca init --dir DIR` creates `DIR` (mode 0700) and writes:
//!
//! | file            | content                                   | mode |
//! |-----------------|-------------------------------------------|------|
//! | `ca.pem`        | the self-signed CA certificate            | 0644 |
//! | `ca.key`        | the CA private key (PKCS#8 PEM)           | 0600 |
//! | `collector.pem` | the collector's server certificate        | 0644 |
//! | `collector.key` | the collector's private key (PKCS#8 PEM)  | 0600 |
//!
//! `nightowl-collector ca issue --dir DIR --tenant T --agent A --cert-out F --key-out F`
//! writes one agent's client certificate (0644) and private key (0600) where it is told.
//! Every file is written to a temporary file in the same directory, fsync'd, then renamed
//! over its final name, so a crash never leaves a half-written key or certificate.
//! `ca init` refuses to run when `ca.pem` or `ca.key` already exists: replacing a CA
//! silently would lock every enrolled agent out. `ca issue` does overwrite its outputs
//! (that is how an agent certificate is renewed).
//!
//! # Trust model
//!
//! `ca.pem` is the only trust anchor, in both directions: agents authenticate the
//! collector with it (the collector certificate carries EKU serverAuth and the DNS names
//! and IP addresses given to `ca init`, `localhost` and `127.0.0.1` by default), and the
//! collector authenticates agents with it (agent certificates carry EKU clientAuth). The
//! CA has a path length of 0: it signs leaves only, never an intermediate CA.
//!
//! Who an agent is comes ONLY from its certificate, from its single URI subject
//! alternative name `spiffe://nightowl/tenant/<tenant>/agent/<agent>` (see
//! [`AgentIdentity::from_certificate`]). The subject common name is set to the agent id
//! for humans reading the certificate and is never trusted. Tenant and agent ids follow
//! [`validate_id`], so an id can never contain `/` and a URI has one reading only.
//!
//! `ca issue` makes the agent's key pair on the collector host; the operator carries the
//! key to the endpoint. (Enrollment with a CSR, where the key never leaves the endpoint,
//! and revocation are separate modules.) Whoever can read `ca.key` can mint any identity
//! of any tenant: keep `DIR` on the collector host, readable by the collector's user only.
//!
//! # Keys and validity
//!
//! All keys are ECDSA P-256, signatures ECDSA with SHA-256. Serial numbers are 128 random
//! bits. Certificates are valid from [`CLOCK_SKEW`] in the past (a freshly issued
//! certificate must not be refused by a peer whose clock is a little behind) until:
//! CA 10 years, collector certificate 2 years, agent certificate 1 year.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName};
use x509_parser::extensions::GeneralName;

/// The SPIFFE trust domain of every nightowl identity.
pub const TRUST_DOMAIN: &str = "nightowl";

/// How far in the past certificates start to be valid, for peers whose clock is behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Validity of the CA certificate: 10 years.
pub const CA_VALIDITY: Duration = DAY.saturating_mul(3653);
/// Validity of the collector's server certificate: 2 years.
pub const COLLECTOR_VALIDITY: Duration = DAY.saturating_mul(731);
/// Validity of an agent's client certificate: 1 year.
pub const AGENT_VALIDITY: Duration = DAY.saturating_mul(365);

/// Names in the collector certificate when `ca init` is given none.
const DEFAULT_COLLECTOR_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Longest tenant or agent id, in bytes (= characters: ids are ASCII).
const MAX_ID_LEN: usize = 63;

const KEY_FILE_MODE: u32 = 0o600;
const CERT_FILE_MODE: u32 = 0o644;
const PRIVATE_DIR_MODE: u32 = 0o700;
const PUBLIC_DIR_MODE: u32 = 0o755;

/// Errors of `ca init` and `ca issue`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A tenant or agent id does not follow [`validate_id`].
    #[error(
        "invalid {kind} id {id:?}: use 1-63 characters of a-z, 0-9, '.', '_', '-', \
         starting with a letter or digit"
    )]
    InvalidId { kind: &'static str, id: String },

    /// A `--name` of `ca init` is neither an IP address nor a valid DNS name.
    #[error(
        "invalid collector name {name:?}: give a DNS name (e.g. collector.example.net) \
         or an IP address"
    )]
    InvalidName { name: String },

    /// `ca init` found a CA in the directory.
    #[error(
        "a CA already exists in {}: refusing to replace it (every enrolled agent trusts it); \
         use another --dir, or delete ca.pem and ca.key first if you really mean to",
        dir.display()
    )]
    CaExists { dir: PathBuf },

    /// `ca issue` found no CA in the directory.
    #[error(
        "no CA in {}: run `nightowl-collector ca init --dir {}` first, or pass the right --dir",
        dir.display(),
        dir.display()
    )]
    CaMissing { dir: PathBuf },

    /// `ca.pem` or `ca.key` cannot be used.
    #[error("unusable CA file {}: {reason}; restore it from your backup", path.display())]
    CaInvalid { path: PathBuf, reason: String },

    /// `ca issue` was given the same path for the certificate and the key.
    #[error("--cert-out and --key-out are both {}: give two different files", path.display())]
    SameOutput { path: PathBuf },

    /// Reading or writing a file or directory failed.
    #[error("{}: {source} (check that the path exists and its permissions)", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Key generation, signing or randomness failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Checks a tenant or agent id: `[a-z0-9][a-z0-9._-]{0,62}`.
///
/// `kind` ("tenant" or "agent") names the id in the error message. Ids are path segments
/// of the SPIFFE URI, label values in logs and file names on operators' disks: the grammar
/// keeps them free of `/`, spaces, upper case (no two spellings of one id) and `..`.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), PkiError> {
    let bytes = id.as_bytes();
    let first_ok = bytes.first().is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .skip(1)
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && bytes.len() <= MAX_ID_LEN {
        Ok(())
    } else {
        Err(PkiError::InvalidId { kind, id: id.to_owned() })
    }
}

/// File names inside a CA directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/ca.pem`: the CA certificate, the trust anchor of agents and collector.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `DIR/ca.key`: the CA private key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `DIR/collector.pem`: the collector's server certificate.
    pub fn collector_cert(&self) -> PathBuf {
        self.dir.join("collector.pem")
    }

    /// `DIR/collector.key`: the collector's private key.
    pub fn collector_key(&self) -> PathBuf {
        self.dir.join("collector.key")
    }
}

/// `nightowl-collector ca init --dir DIR [--name HOST]...`.
///
/// Creates `dir` (0700) if missing and writes `ca.pem`, `ca.key`, `collector.pem` and
/// `collector.key`. The collector certificate is a server certificate for `names`, each
/// an IP address if it parses as one, else a DNS name; no names means `localhost` and
/// `127.0.0.1`. Refuses with [`PkiError::CaExists`] if `ca.pem` or `ca.key` exists, and
/// then touches nothing.
pub fn init_ca(dir: &Path, names: &[String]) -> Result<(), PkiError> {
    let files = CaDir::new(dir);
    if files.ca_cert().exists() || files.ca_key().exists() {
        return Err(PkiError::CaExists { dir: dir.to_path_buf() });
    }
    // Everything that can fail on input or crypto happens before the first write.
    let collector_names = collector_subject_alt_names(names)?;

    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let collector_key = KeyPair::generate()?;
    let mut collector_params = leaf_params(COLLECTOR_VALIDITY)?;
    collector_params.distinguished_name.push(DnType::CommonName, "nightowl collector");
    collector_params.subject_alt_names = collector_names;
    collector_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let collector_cert = collector_params.signed_by(&collector_key, &issuer)?;

    create_dir(dir, PRIVATE_DIR_MODE)?;
    // ca.pem goes last: a crash part-way leaves no ca.pem, so the CA is not half there
    // unless ca.key was written, in which case `ca init` refuses and says why.
    write_file_atomic(&files.collector_key(), collector_key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_file_atomic(&files.collector_cert(), collector_cert.pem().as_bytes(), CERT_FILE_MODE)?;
    write_file_atomic(&files.ca_key(), ca_key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_file_atomic(&files.ca_cert(), ca_cert.pem().as_bytes(), CERT_FILE_MODE)
}

/// `nightowl-collector ca issue --dir DIR --tenant T --agent A --cert-out F --key-out F`.
///
/// Validates both ids, loads the CA from `dir` ([`PkiError::CaMissing`] if absent) and
/// issues a client certificate (EKU clientAuth, CN = agent id) whose only identity is
/// the URI SAN `spiffe://nightowl/tenant/<T>/agent/<A>`. The key is written 0600 and the
/// certificate 0644, replacing existing files; missing parent directories are created.
pub fn issue_agent(
    dir: &Path,
    tenant: &str,
    agent: &str,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), PkiError> {
    validate_id("tenant", tenant)?;
    validate_id("agent", agent)?;
    let identity = AgentIdentity { tenant: tenant.to_owned(), agent: agent.to_owned() };
    issue_client(dir, &identity.spiffe_uri(), agent, cert_out, key_out)
}

/// `nightowl-collector ca issue-operator --dir DIR --name N [--tenant T] ...`: a client
/// certificate for a feed subscriber (PSA connector, paging bridge, `alerts tail`).
/// Without a tenant it reads every tenant's events; with one, only that tenant's.
pub fn issue_operator(
    dir: &Path,
    name: &str,
    tenant: Option<&str>,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), PkiError> {
    validate_id("operator", name)?;
    if let Some(tenant) = tenant {
        validate_id("tenant", tenant)?;
    }
    let identity = OperatorIdentity { name: name.to_owned(), tenant: tenant.map(str::to_owned) };
    issue_client(dir, &identity.spiffe_uri(), name, cert_out, key_out)
}

/// Issues a client certificate (EKU clientAuth) whose only identity is the URI SAN `uri`.
fn issue_client(
    dir: &Path,
    uri: &str,
    common_name: &str,
    cert_out: &Path,
    key_out: &Path,
) -> Result<(), PkiError> {
    if cert_out == key_out {
        return Err(PkiError::SameOutput { path: cert_out.to_path_buf() });
    }
    let (ca_cert_der, ca_key) = load_ca(&CaDir::new(dir))?;
    let issuer = Issuer::from_ca_cert_der(&ca_cert_der, ca_key)?;

    let (client_cert, client_key) = client_certificate(&issuer, uri, common_name)?;

    // The key's directory first, so that it is created private when both share one.
    create_parent_dir(key_out, PRIVATE_DIR_MODE)?;
    create_parent_dir(cert_out, PUBLIC_DIR_MODE)?;
    write_file_atomic(key_out, client_key.serialize_pem().as_bytes(), KEY_FILE_MODE)?;
    write_file_atomic(cert_out, client_cert.pem().as_bytes(), CERT_FILE_MODE)
}

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
fn client_certificate(
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

/// A feed subscriber, taken ONLY from its certificate: `spiffe://nightowl/operator/<name>`
/// (every tenant) or `spiffe://nightowl/tenant/<tenant>/operator/<name>` (one tenant).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperatorIdentity {
    pub name: String,
    /// None: every tenant.
    pub tenant: Option<String>,
}

impl OperatorIdentity {
    /// Reads the identity of a DER leaf certificate the TLS verifier has accepted.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let uri = single_uri_san(der)?;
        let (_, path) = spiffe_path(&uri)?;
        let segments: Vec<&str> = path.split('/').collect();
        let (tenant, name) = match segments.as_slice() {
            ["operator", name] => (None, *name),
            ["tenant", tenant, "operator", name] => (Some(*tenant), *name),
            _ => return Err(IdentityError::MalformedPath { uri: uri.clone() }),
        };
        let invalid = |source| IdentityError::InvalidId { uri: uri.clone(), source };
        validate_id("operator", name).map_err(invalid)?;
        if let Some(tenant) = tenant {
            validate_id("tenant", tenant).map_err(invalid)?;
        }
        Ok(Self { name: name.to_owned(), tenant: tenant.map(str::to_owned) })
    }

    pub fn spiffe_uri(&self) -> String {
        match &self.tenant {
            None => format!("spiffe://{TRUST_DOMAIN}/operator/{}", self.name),
            Some(tenant) => format!("spiffe://{TRUST_DOMAIN}/tenant/{tenant}/operator/{}", self.name),
        }
    }
}

impl fmt::Display for OperatorIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.tenant {
            None => write!(formatter, "operator {} (all tenants)", self.name),
            Some(tenant) => write!(formatter, "operator {} (tenant {tenant})", self.name),
        }
    }
}

/// The one URI subject alternative name of a DER certificate.
fn single_uri_san(der: &[u8]) -> Result<String, IdentityError> {
    let (remainder, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|error| IdentityError::Unparsable { reason: error.to_string() })?;
    if !remainder.is_empty() {
        return Err(IdentityError::Unparsable {
            reason: format!("{} bytes after the certificate", remainder.len()),
        });
    }
    let san = certificate
        .subject_alternative_name()
        .map_err(|error| IdentityError::Unparsable { reason: error.to_string() })?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|extension| extension.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(IdentityError::NoUriSan),
        [uri] => Ok((*uri).to_owned()),
        several => Err(IdentityError::SeveralUriSans { count: several.len() }),
    }
}

/// Splits `spiffe://nightowl/<path>` into (trust domain, path); anything else is refused.
fn spiffe_path(uri: &str) -> Result<(&str, &str), IdentityError> {
    let Some(after_scheme) = uri.strip_prefix("spiffe://") else {
        return Err(IdentityError::NotSpiffe { uri: uri.to_owned() });
    };
    let (trust_domain, path) = after_scheme.split_once('/').unwrap_or((after_scheme, ""));
    if trust_domain != TRUST_DOMAIN {
        return Err(IdentityError::WrongTrustDomain { uri: uri.to_owned() });
    }
    Ok((trust_domain, path))
}

/// Who a peer is, taken ONLY from its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub tenant: String,
    pub agent: String,
}

/// Why a certificate does not carry a nightowl agent identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("peer certificate cannot be parsed: {reason}")]
    Unparsable { reason: String },

    #[error(
        "peer certificate has no URI subject alternative name: \
         it was not issued by `nightowl-collector ca issue`"
    )]
    NoUriSan,

    #[error(
        "peer certificate has {count} URI subject alternative names: \
         a nightowl identity has exactly one"
    )]
    SeveralUriSans { count: usize },

    #[error("peer certificate URI {uri:?} is not a spiffe:// URI")]
    NotSpiffe { uri: String },

    #[error("peer certificate URI {uri:?} is not in the trust domain \"nightowl\"")]
    WrongTrustDomain { uri: String },

    #[error(
        "peer certificate URI {uri:?} is not a nightowl identity of the expected kind: \
         spiffe://nightowl/tenant/<tenant>/agent/<agent> for agents, \
         spiffe://nightowl[/tenant/<tenant>]/operator/<name> for feed operators"
    )]
    MalformedPath { uri: String },

    #[error("peer certificate URI {uri:?}: {source}")]
    InvalidId { uri: String, source: PkiError },
}

impl AgentIdentity {
    /// Reads the identity of a DER leaf certificate.
    ///
    /// The certificate must have exactly one URI subject alternative name (as a SPIFFE
    /// X509-SVID does), of the form `spiffe://nightowl/tenant/<T>/agent/<A>` with both ids
    /// valid for [`validate_id`]. Other names (DNS, IP, CN) are ignored.
    ///
    /// This does NOT verify the certificate: call it only on a leaf that the TLS verifier
    /// has accepted against `ca.pem`.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        Self::from_spiffe_uri(&single_uri_san(der)?)
    }

    /// `spiffe://nightowl/tenant/<tenant>/agent/<agent>`.
    pub fn spiffe_uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/tenant/{}/agent/{}", self.tenant, self.agent)
    }

    /// The inverse of [`Self::spiffe_uri`]; anything else is refused.
    fn from_spiffe_uri(uri: &str) -> Result<Self, IdentityError> {
        let (_, path) = spiffe_path(uri)?;
        let segments: Vec<&str> = path.split('/').collect();
        let ["tenant", tenant, "agent", agent] = segments.as_slice() else {
            return Err(IdentityError::MalformedPath { uri: uri.to_owned() });
        };
        let invalid = |source| IdentityError::InvalidId { uri: uri.to_owned(), source };
        validate_id("tenant", tenant).map_err(invalid)?;
        validate_id("agent", agent).map_err(invalid)?;
        Ok(Self { tenant: (*tenant).to_owned(), agent: (*agent).to_owned() })
    }
}

impl fmt::Display for AgentIdentity {
    /// `tenant/agent`, e.g. `acme/srv-01`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.tenant, self.agent)
    }
}

fn ca_params() -> Result<CertificateParams, PkiError> {
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
fn leaf_params(validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity_and_serial(&mut params, validity)?;
    Ok(params)
}

fn set_validity_and_serial(params: &mut CertificateParams, validity: Duration) -> Result<(), PkiError> {
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

fn random_bytes<const N: usize>() -> Result<[u8; N], PkiError> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| rcgen::Error::RingUnspecified)?;
    Ok(bytes)
}

/// `--name` values to subject alternative names: IP address if it parses, else DNS name.
fn collector_subject_alt_names(names: &[String]) -> Result<Vec<SanType>, PkiError> {
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

/// Reads `ca.pem` (as DER) and `ca.key`, and checks that they belong together.
fn load_ca(files: &CaDir) -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let read = |path: PathBuf| match fs::read_to_string(&path) {
        Ok(text) => Ok((path, text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            Err(PkiError::CaMissing { dir: files.dir().to_path_buf() })
        }
        Err(source) => Err(PkiError::Io { path, source }),
    };
    let (cert_path, cert_pem) = read(files.ca_cert())?;
    let (key_path, key_pem) = read(files.ca_key())?;

    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|error| {
        PkiError::CaInvalid { path: cert_path.clone(), reason: format!("no PEM certificate: {error}") }
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|error| PkiError::CaInvalid {
        path: key_path,
        reason: format!("no usable private key: {error}"),
    })?;

    let (_, certificate) = x509_parser::parse_x509_certificate(&cert_der)
        .map_err(|error| PkiError::CaInvalid { path: cert_path.clone(), reason: error.to_string() })?;
    if !certificate.is_ca() {
        return Err(PkiError::CaInvalid { path: cert_path, reason: "not a CA certificate".to_owned() });
    }
    // Signing with a key that is not the certificate's would issue certificates that no
    // peer accepts; say so now rather than at the first handshake.
    if certificate.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::CaInvalid {
            path: cert_path,
            reason: "the certificate does not match ca.key".to_owned(),
        });
    }
    Ok((cert_der, key))
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder.create(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })
}

fn create_parent_dir(file: &Path, mode: u32) -> Result<(), PkiError> {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => create_dir(parent, mode),
        _ => Ok(()),
    }
}

/// Writes `contents` to `path` with exactly `mode` (whatever the umask), all or nothing:
/// temporary file in the same directory, fsync, rename, fsync of the directory.
fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { path, source }
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| PkiError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let suffix: String = random_bytes::<8>()?.iter().map(|byte| format!("{byte:02x}")).collect();
    let temporary = parent.join(format!(".{}.{suffix}.tmp", file_name.to_string_lossy()));

    let written = write_new_file(&temporary, contents, mode)
        .and_then(|()| fs::rename(&temporary, path))
        .map_err(io_error(path));
    if written.is_err() {
        // Best effort: the error that matters is the one already in `written`.
        let _ = fs::remove_file(&temporary);
        return written;
    }
    sync_dir(parent).map_err(io_error(parent))
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // Created 0600 at most, so a key is never readable by others, not even briefly;
        // then set to exactly `mode`, which the umask could have narrowed.
        options.mode(mode & KEY_FILE_MODE);
        let mut file = options.open(path)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use proptest::prelude::*;
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
        assert!(
            client_verifier(&files.ca_cert()).verify_client_cert(&collector, &[], UnixTime::now()).is_err()
        );
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
        assert!(matches!(signer.agent_pem("Acme", "x"), Err(PkiError::InvalidId { kind: "tenant", .. })));
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
        assert!(matches!(&error, PkiError::InvalidId { kind: "tenant", id } if id == "Acme"), "{error:?}");
        assert!(error.to_string().starts_with("invalid tenant id \"Acme\""));
        let error = issue_agent(files.dir(), "acme", "srv/01", &cert_out, &key_out).unwrap_err();
        assert!(matches!(&error, PkiError::InvalidId { kind: "agent", id } if id == "srv/01"), "{error:?}");
        assert!(!cert_out.exists() && !key_out.exists());
    }

    #[test]
    fn issue_agent_without_ca_is_ca_missing() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("nowhere");
        let error =
            issue_agent(&dir, "acme", "srv-01", &temp.path().join("a.pem"), &temp.path().join("a.key"))
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
        let error = issue_agent(
            files.dir(),
            "acme",
            "srv-01",
            &temp.path().join("a.pem"),
            &temp.path().join("a.key"),
        )
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
                &[
                    "spiffe://nightowl/tenant/acme/agent/srv-01",
                    "spiffe://nightowl/tenant/other/agent/srv-01",
                ],
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
                IdentityError::InvalidId { source: PkiError::InvalidId { kind: "agent", id }, .. }
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
}
