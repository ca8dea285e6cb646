//! Custom rustls verifiers: Go's `ReceptorVerifyFunc` in rustls terms.
//!
//! Each rejects with `CertificateError::Other(PeerCertError)` for the
//! Receptor-specific checks, so the handshake error names what failed.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError};
use rustls::{RootCertStore, SignatureScheme};

use super::pins::Pins;
use crate::certs::san::{self, SanError};

/// A Receptor-specific reason to refuse a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCertError {
    /// No pin matches the leaf.
    PinMismatch,
    /// The leaf does not list the node ID wanted (Go's
    /// `ReceptorCertNameError`).
    WrongNode { found: Vec<String>, wanted: String },
    /// The leaf's subjectAltName does not parse.
    Names(SanError),
}

impl fmt::Display for PeerCertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerCertError::PinMismatch => f.write_str(
                "RVF failed: presented certificate does not match any pinned fingerprint",
            ),
            PeerCertError::WrongNode { found, wanted } if found.is_empty() => write!(
                f,
                "x509: certificate is not valid for any Receptor node IDs, but wanted to match {wanted}"
            ),
            PeerCertError::WrongNode { found, wanted } => {
                let plural = if found.len() > 1 { "s" } else { "" };
                write!(
                    f,
                    "x509: certificate is valid for Receptor node ID{plural} {}, not {wanted}",
                    found.join(", ")
                )
            }
            PeerCertError::Names(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for PeerCertError {}

impl From<PeerCertError> for Error {
    fn from(e: PeerCertError) -> Self {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

fn check_pins(pins: &Pins, leaf: &CertificateDer<'_>) -> Result<(), Error> {
    if pins.accepts(leaf) {
        Ok(())
    } else {
        Err(PeerCertError::PinMismatch.into())
    }
}

/// Succeeds when the leaf lists `wanted` among its Receptor node IDs.
pub fn check_node_id(leaf: &[u8], wanted: &str) -> Result<(), PeerCertError> {
    let found = san::cert_node_ids(leaf).map_err(PeerCertError::Names)?;
    if found.iter().any(|id| id == wanted) {
        return Ok(());
    }
    Err(PeerCertError::WrongNode {
        found,
        wanted: wanted.to_string(),
    })
}

/// Handshake signature checks shared by every verifier here.
#[derive(Debug)]
struct Signatures(WebPkiSupportedAlgorithms);

impl Signatures {
    fn tls12(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(m, c, d, &self.0)
    }

    fn tls13(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(m, c, d, &self.0)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// How a client checks the server it dialed.
#[derive(Debug)]
enum ServerCheck {
    /// A backend: normal hostname verification (`WebPkiServerVerifier`).
    Host(Arc<WebPkiServerVerifier>),
    /// A mesh service: the chain, EKU serverAuth, and this node ID in the
    /// leaf instead of a hostname.
    Node {
        roots: Arc<RootCertStore>,
        node: String,
    },
    /// `insecureskipverify`: no certificate check at all (handshake
    /// signatures are still checked, as in Go).
    Nothing,
}

/// Where a verifier leaves the words of its refusal, for a dialer whose
/// transport (QUIC) reports only an alert: `take` gives them once.
#[derive(Debug, Clone, Default)]
pub struct Refusal(Arc<std::sync::Mutex<Option<String>>>);

impl Refusal {
    fn record(&self, e: &Error) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(super::error_text(e));
    }

    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A client's verifier of server certificates.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    check: ServerCheck,
    pins: Pins,
    sigs: Signatures,
    refusal: Refusal,
}

impl ServerVerifier {
    pub(crate) fn host(
        inner: Arc<WebPkiServerVerifier>,
        pins: Pins,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        Self::new(ServerCheck::Host(inner), pins, algs)
    }

    pub(crate) fn node(
        roots: Arc<RootCertStore>,
        node: &str,
        pins: Pins,
        algs: WebPkiSupportedAlgorithms,
    ) -> Self {
        let node = node.to_string();
        Self::new(ServerCheck::Node { roots, node }, pins, algs)
    }

    pub(crate) fn insecure(algs: WebPkiSupportedAlgorithms) -> Self {
        Self::new(ServerCheck::Nothing, Pins::default(), algs)
    }

    fn new(check: ServerCheck, pins: Pins, algs: WebPkiSupportedAlgorithms) -> Self {
        ServerVerifier {
            check,
            pins,
            sigs: Signatures(algs),
            refusal: Refusal::default(),
        }
    }

    /// The slot this verifier's refusals go to.
    pub(crate) fn refusal(&self) -> Refusal {
        self.refusal.clone()
    }

    fn check_server(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<(), Error> {
        match &self.check {
            ServerCheck::Nothing => return Ok(()),
            ServerCheck::Host(inner) => {
                inner.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )?;
                check_pins(&self.pins, end_entity)?;
            }
            // Go checks pins first here, then the chain, then the node ID.
            ServerCheck::Node { roots, node } => {
                check_pins(&self.pins, end_entity)?;
                let cert = ParsedCertificate::try_from(end_entity)?;
                verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    roots,
                    intermediates,
                    now,
                    self.sigs.0.all,
                )?;
                check_node_id(end_entity, node)?;
            }
        }
        Ok(())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.check_server(end_entity, intermediates, server_name, ocsp_response, now)
            .inspect_err(|e| self.refusal.record(e))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.sigs.tls12(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.sigs.tls13(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.sigs.schemes()
    }
}

/// A server's verifier of client certificates: the chain to `clientcas`
/// with EKU clientAuth (rustls' WebPKI verifier), then pins, then, for
/// mesh listeners, the dialing node's ID in the leaf.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    pins: Pins,
    node: Option<String>,
}

impl ClientVerifier {
    pub(crate) fn new(inner: Arc<dyn ClientCertVerifier>, pins: Pins, node: Option<&str>) -> Self {
        ClientVerifier {
            inner,
            pins,
            node: node.map(str::to_string),
        }
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    /// Always: Go's verify hook refuses a handshake without a client
    /// certificate even when `clientcas` alone asks for "verify if given".
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_pins(&self.pins, end_entity)?;
        if let Some(node) = &self.node {
            check_node_id(end_entity, node)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_error_texts_are_gos() {
        let wrong = |found: &[&str]| PeerCertError::WrongNode {
            found: found.iter().map(|s| s.to_string()).collect(),
            wanted: "c".into(),
        };
        assert_eq!(
            wrong(&["a", "b"]).to_string(),
            "x509: certificate is valid for Receptor node IDs a, b, not c"
        );
        assert_eq!(
            wrong(&["a"]).to_string(),
            "x509: certificate is valid for Receptor node ID a, not c"
        );
        assert_eq!(
            wrong(&[]).to_string(),
            "x509: certificate is not valid for any Receptor node IDs, but wanted to match c"
        );
    }
}
