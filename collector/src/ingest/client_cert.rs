//! Which client certificates may open a connection: ONLY those issued directly by the
//! configured CA, for client authentication.
//!
//! rustls' `WebPkiClientVerifier` builds a path through any intermediates the client
//! sends and does not enforce the root's `pathLenConstraint` (ours says 0). So a
//! CA:TRUE certificate signed by the CA key, and any leaf under it, would pass — for
//! any tenant. The CA signs leaves only (`pki`), so a chain is exactly one certificate:
//! [`DirectlyIssued`] refuses every intermediate that is not one of the configured CA
//! certificates themselves (a client may send the CA along; that adds nothing), hands
//! webpki the leaf alone, and requires the leaf to say what it is for: extended key
//! usage `clientAuth` present (webpki accepts a certificate without the extension for
//! any purpose) and, where key usage is present, `digitalSignature`. webpki itself
//! refuses a CA:TRUE certificate used as the leaf.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A client-certificate verifier around webpki's that accepts direct leaves only.
#[derive(Debug)]
pub struct DirectlyIssued {
    inner: Arc<dyn ClientCertVerifier>,
    ca_certs: Vec<CertificateDer<'static>>,
}

impl DirectlyIssued {
    /// `inner` verifies signature, validity and the path to `ca_certs` (the roots it was
    /// built with).
    pub fn new(inner: Arc<dyn ClientCertVerifier>, ca_certs: Vec<CertificateDer<'static>>) -> Self {
        Self { inner, ca_certs }
    }
}

/// Why a leaf is not one the CA issues for clients (`None`: it is).
fn leaf_refusal(der: &[u8]) -> Option<&'static str> {
    let Ok((_, certificate)) = X509Certificate::from_der(der) else {
        return Some("client certificate cannot be parsed");
    };
    match certificate.extended_key_usage() {
        Ok(Some(eku)) if eku.value.client_auth => {}
        Ok(Some(_)) => return Some("client certificate is not for client authentication (EKU)"),
        Ok(None) => return Some("client certificate has no extended key usage (clientAuth required)"),
        Err(_) => return Some("client certificate has a malformed extended key usage"),
    }
    match certificate.key_usage() {
        Ok(Some(usage)) if !usage.value.digital_signature() => {
            Some("client certificate key usage lacks digitalSignature")
        }
        Ok(_) => None,
        Err(_) => Some("client certificate has a malformed key usage"),
    }
}

impl ClientCertVerifier for DirectlyIssued {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if intermediates.iter().any(|sent| !self.ca_certs.iter().any(|ca| ca.as_ref() == sent.as_ref())) {
            return Err(refused("client certificate is not issued directly by the collector's CA"));
        }
        if let Some(reason) = leaf_refusal(end_entity.as_ref()) {
            return Err(refused(reason));
        }
        self.inner.verify_client_cert(end_entity, &[], now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The handshake error for a refused client certificate (logged with its reason).
fn refused(reason: &'static str) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(Refused(reason)))))
}

#[derive(Debug)]
struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.0)
    }
}

impl std::error::Error for Refused {}
