//! The collector's small certificate authority: `ca init`, `ca issue`, `ca issue-operator`.
//!
//! `mod.rs` has the commands and the CA's rules, `signer.rs` builds and signs
//! certificates, `files.rs` reads and writes the CA directory crash-safely. Who a peer
//! is, read from its certificate, is `crate::identity`.
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
//! `AgentIdentity::from_certificate`). The subject common name is set to the agent id
//! for humans reading the certificate and is never trusted. Tenant and agent ids follow
//! `identity::validate_id`, so an id can never contain `/` and a URI has one reading only.
//!
//! `ca issue` makes the agent's key pair on the collector host; the operator carries the
//! key to the endpoint. There is no enrollment (a CSR, where the key never leaves the
//! endpoint) and no revocation yet. Whoever can read `ca.key` can mint any identity of
//! any tenant: keep `DIR` on the collector host, readable by the collector's user only.
//!
//! # Keys and validity
//!
//! All keys are ECDSA P-256, signatures ECDSA with SHA-256. Serial numbers are 128 random
//! bits. Certificates are valid from [`CLOCK_SKEW`] in the past (a freshly issued
//! certificate must not be refused by a peer whose clock is a little behind) until:
//! CA 10 years, collector certificate 2 years, agent certificate 1 year.

mod files;
mod signer;

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

use crate::identity::{AgentIdentity, InvalidId, OperatorIdentity, validate_id};
pub use files::CaDir;
use files::{
    CERT_FILE_MODE, KEY_FILE_MODE, PRIVATE_DIR_MODE, PUBLIC_DIR_MODE, create_dir, create_parent_dir, load_ca,
    write_file_atomic,
};
pub use signer::CaSigner;
use signer::{ca_params, client_certificate, collector_subject_alt_names, leaf_params};

/// How far in the past certificates start to be valid, for peers whose clock is behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Validity of the CA certificate: 10 years.
pub const CA_VALIDITY: Duration = DAY.saturating_mul(3653);

/// Validity of the collector's server certificate: 2 years.
pub const COLLECTOR_VALIDITY: Duration = DAY.saturating_mul(731);

/// Validity of an agent's client certificate: 1 year.
pub const AGENT_VALIDITY: Duration = DAY.saturating_mul(365);

/// Errors of `ca init` and `ca issue`.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A tenant or agent id does not follow [`validate_id`].
    #[error(transparent)]
    InvalidId(#[from] InvalidId),

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

#[cfg(test)]
mod tests;
