//! Who a peer is, taken ONLY from its certificate: agents
//! (`spiffe://nightowl/tenant/<tenant>/agent/<agent>`) and feed operators
//! (`spiffe://nightowl[/tenant/<tenant>]/operator/<name>`), and the grammar of ids.
//! The certificates themselves are made by `crate::pki`; the TLS verifier that accepts
//! them is `crate::ingest` (`client_cert.rs`).

use std::fmt;

use x509_parser::extensions::GeneralName;

/// The SPIFFE trust domain of every nightowl identity.
pub const TRUST_DOMAIN: &str = "nightowl";

/// Longest tenant or agent id, in bytes (= characters: ids are ASCII).
const MAX_ID_LEN: usize = 63;

/// An id that does not follow [`validate_id`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} id {id:?}: use 1-63 characters of a-z, 0-9, '.', '_', '-', \
     starting with a letter or digit"
)]
pub struct InvalidId {
    /// What the id names: "tenant", "agent", "operator", "consumer", "sink name".
    pub kind: &'static str,
    pub id: String,
}

/// Checks a tenant or agent id: `[a-z0-9][a-z0-9._-]{0,62}`.
///
/// `kind` ("tenant" or "agent") names the id in the error message. Ids are path segments
/// of the SPIFFE URI, label values in logs and file names on operators' disks: the grammar
/// keeps them free of `/`, spaces, upper case (no two spellings of one id) and `..`.
pub fn validate_id(kind: &'static str, id: &str) -> Result<(), InvalidId> {
    let bytes = id.as_bytes();
    let first_ok = bytes.first().is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .skip(1)
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'.' | b'_' | b'-'));
    if first_ok && rest_ok && bytes.len() <= MAX_ID_LEN {
        Ok(())
    } else {
        Err(InvalidId { kind, id: id.to_owned() })
    }
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
    InvalidId { uri: String, source: InvalidId },
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

#[cfg(test)]
mod tests;
