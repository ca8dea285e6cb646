//! TLS for backends, the control service and mesh streams, built from the
//! `tls-server` / `tls-client` sections with Go's parameters (spec §6).
//!
//! Apart from [`io`] (blocking adapters that run a rustls connection over
//! a socket shared by two threads), this module only turns configuration
//! into rustls `ServerConfig` / `ClientConfig` objects and checks
//! certificates; the callers own sockets and QUIC.
//!
//! # How callers use it
//!
//! * At startup, for every section: [`ServerTls::load`] /
//!   [`ClientTls::load`] with the node's own ID. Errors are Go's texts
//!   (`error preparing tls server config: ...`); print them and exit.
//! * A listener (tcp/ws backend, control service `tls`/`tcptls`,
//!   tcp-server/unix-socket-client proxies): [`ServerTls::config`].
//! * A mesh-service listener (the QUIC listener of a service with a TLS
//!   server config) on each incoming connection:
//!   [`ServerTls::config_for_node`] with the dialing node's ID (the source
//!   node of the stream), which Go checks only with `requireclientcert`.
//!   Set `alpn_protocols = [b"netceptor"]` before wrapping it for QUIC.
//! * A backend dialer (tcp-peer, ws-peer, tcp-client proxy):
//!   [`ClientTls::for_host`] with the DNS host (or IP) of the address.
//! * A mesh dialer (`connect`, tcp-server, unix-socket-server, remote
//!   work): [`ClientTls::for_node`] with the target node ID; the returned
//!   `ServerName` goes to rustls (it is the node ID when that is a valid
//!   DNS name, as Go sends it, else an IP placeholder so no SNI is sent).
//! * Backends that must match the node ID a peer claims in its handshake
//!   against its certificate: [`peer_node_ids`] on the connection's
//!   `peer_certificates()`.
//! * Logging a failed handshake: [`error_text`] gives Go's wording.
//!
//! # Differences from Go, and rustls limits
//!
//! * TLS 1.2 suites: Go's list has TLS_RSA_WITH_AES_256_GCM_SHA384
//!   (static RSA key exchange), which rustls does not implement; the other
//!   three are offered.
//! * Curves: the ring provider has no P-521, so the base config offers
//!   P-384 and P-256 (a Go peer asking for P-521 gets a HelloRetryRequest).
//!   `mintls13` uses the provider's defaults, X25519 included, as Go does.
//! * A rustls server rejects a ClientHello whose SNI is not a valid DNS
//!   name (IP literals are ignored): Go dialers send the node ID as SNI, so
//!   a node ID such as `node 1` cannot dial a Rust TLS listener.
//! * ring refuses RSA keys under 2048 bits for signing, so such a key in
//!   `key` fails at startup (Go accepts it).
//! * Pins on a mesh listener with `requireclientcert` are checked; Go
//!   drops them there.

mod files;
pub mod io;
pub mod pins;
mod sections;
mod verify;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::certs::san::{self, SanError};
use crate::config::{TlsClientCfg, TlsServerCfg};
use pins::{PinError, Pins};
pub use sections::{Sections, UnknownTls};
pub use verify::{PeerCertError, Refusal, check_node_id};

/// What went wrong preparing one TLS section.
#[derive(Debug)]
pub enum SetupError {
    File(PathBuf, std::io::Error),
    NoCertPem,
    SwappedPem,
    NoKeyPem,
    CertInsteadOfKey,
    BadKey(String),
    KeyMismatch,
    /// The node's own ID is not in its certificate.
    NodeIdNotFound {
        node: String,
        found: Vec<String>,
        section: String,
        cert: PathBuf,
    },
    Names(SanError),
    ClientCas(PathBuf, std::io::Error),
    RootCas(PathBuf, std::io::Error),
    Pins(PinError),
    CertWithoutKey,
    /// rustls refused the assembled configuration.
    Rustls(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = |p: &PathBuf, e: &std::io::Error| {
            format!("open {}: {}", p.display(), crate::certs::io_text(e))
        };
        match self {
            SetupError::File(p, e) => f.write_str(&open(p, e)),
            SetupError::NoCertPem => f.write_str("tls: failed to find any PEM data in certificate input"),
            SetupError::SwappedPem => f.write_str(
                "tls: failed to find certificate PEM data in certificate input, but did find a private key; \
                 PEM inputs may have been switched",
            ),
            SetupError::NoKeyPem => f.write_str("tls: failed to find any PEM data in key input"),
            SetupError::CertInsteadOfKey => {
                f.write_str("tls: found a certificate rather than a key in the PEM for the private key")
            }
            SetupError::BadKey(e) => write!(f, "tls: failed to parse private key: {e}"),
            SetupError::KeyMismatch => f.write_str("tls: private key does not match public key"),
            SetupError::NodeIdNotFound { node, found, section, cert } => write!(
                f,
                "nodeID={node} not found in certificate name(s); names found=[{}]; cfg section={section}; server cert={}",
                found.join(" "),
                cert.display()
            ),
            SetupError::Names(e) => e.fmt(f),
            SetupError::ClientCas(p, e) => write!(f, "error reading client CAs file: {}", open(p, e)),
            SetupError::RootCas(p, e) => write!(f, "error reading root CAs file: {}", open(p, e)),
            SetupError::Pins(e) => write!(f, "error decoding fingerprints: {e}"),
            SetupError::CertWithoutKey => f.write_str("cert and key must both be supplied or neither"),
            SetupError::Rustls(e) => f.write_str(e),
        }
    }
}

/// A [`SetupError`] with the side it happened on, displayed as Go does.
#[derive(Debug)]
pub struct TlsError {
    pub server: bool,
    pub kind: SetupError,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = if self.server { "server" } else { "client" };
        write!(f, "error preparing tls {side} config: {}", self.kind)
    }
}

impl std::error::Error for TlsError {}

fn server_err(kind: SetupError) -> TlsError {
    TlsError { server: true, kind }
}

fn client_err(kind: SetupError) -> TlsError {
    TlsError {
        server: false,
        kind,
    }
}

fn rustls_err(e: impl fmt::Display) -> SetupError {
    SetupError::Rustls(e.to_string())
}

/// Go's base parameters (`mintls13: false`): TLS 1.3 with its default
/// suites, TLS 1.2 with Go's ECDHE suites, curves P-384 and P-256 only.
/// With `mintls13`, TLS 1.3 only and the provider's defaults.
pub fn provider(min_tls13: bool) -> Arc<CryptoProvider> {
    let mut p = ring::default_provider();
    if !min_tls13 {
        use ring::cipher_suite as cs;
        p.cipher_suites = vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        p.kx_groups = vec![ring::kx_group::SECP384R1, ring::kx_group::SECP256R1];
    }
    Arc::new(p)
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_13: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(min_tls13: bool) -> &'static [&'static SupportedProtocolVersion] {
    if min_tls13 { TLS13_ONLY } else { TLS12_AND_13 }
}

/// The startup check: the leaf in `cert` lists this node's ID.
fn check_own_id(
    chain: &[CertificateDer<'_>],
    node: &str,
    section: &str,
    cert: &std::path::Path,
) -> Result<(), SetupError> {
    let leaf = chain.first().ok_or(SetupError::NoCertPem)?;
    let found = san::cert_node_ids(leaf).map_err(SetupError::Names)?;
    if found.iter().any(|id| id == node) {
        return Ok(());
    }
    Err(SetupError::NodeIdNotFound {
        node: node.to_string(),
        found,
        section: section.to_string(),
        cert: cert.to_path_buf(),
    })
}

/// Always presents the one configured certificate.
#[derive(Debug)]
struct Identity(Arc<CertifiedKey>);

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Where a server's client-certificate anchors come from.
#[derive(Debug)]
enum ClientRoots {
    /// `clientcas`; their names go to clients as hints, as in Go.
    Cas(Arc<RootCertStore>),
    /// The system store (Go's fallback for `requireclientcert` alone);
    /// no hints, as Go sends none then.
    System(Arc<RootCertStore>),
}

/// A loaded `tls-server` section.
#[derive(Debug)]
pub struct ServerTls {
    pub name: String,
    /// `skipreceptornamescheck`: also whether backend peers must claim a
    /// node ID their certificate lists.
    pub skip_names_check: bool,
    identity: Arc<CertifiedKey>,
    /// Set when clients must show a certificate (`requireclientcert` or
    /// `clientcas`): the CAs to verify it against.
    client_roots: Option<ClientRoots>,
    require_client_cert: bool,
    pins: Pins,
    min_tls13: bool,
}

impl ServerTls {
    /// Reads and checks the files, in Go's order: key pair, own node ID
    /// (unless `skipreceptornamescheck`), client CAs, pins.
    pub fn load(cfg: &TlsServerCfg, node_id: &str) -> Result<Self, TlsError> {
        let provider = provider(cfg.min_tls13);
        let identity = files::load_identity(&cfg.cert, &cfg.key, &provider).map_err(server_err)?;
        if !cfg.skip_receptor_names_check {
            check_own_id(&identity.cert, node_id, &cfg.name, &cfg.cert).map_err(server_err)?;
        }
        let cas = match &cfg.client_cas {
            Some(path) => Some(
                files::load_roots(path)
                    .map_err(|e| server_err(SetupError::ClientCas(path.clone(), e)))?,
            ),
            None => None,
        };
        let pins =
            Pins::parse(&cfg.pinned_client_cert).map_err(|e| server_err(SetupError::Pins(e)))?;
        // Go verifies a required client certificate against the system
        // roots when no clientcas are given.
        let client_roots = match (cas, cfg.require_client_cert) {
            (Some(cas), _) => Some(ClientRoots::Cas(Arc::new(cas))),
            (None, true) => Some(ClientRoots::System(Arc::new(files::system_roots()))),
            (None, false) => None,
        };
        let tls = ServerTls {
            name: cfg.name.clone(),
            skip_names_check: cfg.skip_receptor_names_check,
            identity,
            client_roots,
            require_client_cert: cfg.require_client_cert,
            pins,
            min_tls13: cfg.min_tls13,
        };
        // Fail at startup, not on the first client, when the CA file holds
        // no usable certificate (Go would start and refuse every client).
        tls.build(None)?;
        Ok(tls)
    }

    /// For backends, the control service and local proxies.
    pub fn config(&self) -> Result<ServerConfig, TlsError> {
        self.build(None)
    }

    /// For a mesh-service listener accepting a stream from `client_node`:
    /// with `requireclientcert`, the client's leaf must list that node ID.
    pub fn config_for_node(&self, client_node: &str) -> Result<ServerConfig, TlsError> {
        self.build(self.require_client_cert.then_some(client_node))
    }

    fn build(&self, client_node: Option<&str>) -> Result<ServerConfig, TlsError> {
        let provider = provider(self.min_tls13);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions(self.min_tls13))
            .map_err(|e| server_err(rustls_err(e)))?;
        let builder = match &self.client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let inner = match roots {
                    ClientRoots::Cas(r) => {
                        WebPkiClientVerifier::builder_with_provider(r.clone(), provider)
                    }
                    ClientRoots::System(r) => {
                        WebPkiClientVerifier::builder_with_provider(r.clone(), provider)
                            .clear_root_hint_subjects()
                    }
                }
                .build()
                .map_err(|e| server_err(rustls_err(format!("client CAs: {e}"))))?;
                let verifier = verify::ClientVerifier::new(inner, self.pins.clone(), client_node);
                builder.with_client_cert_verifier(Arc::new(verifier))
            }
        };
        Ok(builder.with_cert_resolver(Arc::new(Identity(self.identity.clone()))))
    }
}

/// A loaded `tls-client` section.
#[derive(Debug)]
pub struct ClientTls {
    pub name: String,
    /// `skipreceptornamescheck`: also whether the backend listener we dial
    /// must claim a node ID its certificate lists.
    pub skip_names_check: bool,
    identity: Option<Arc<CertifiedKey>>,
    /// `rootcas`, else the system trust store.
    roots: Arc<RootCertStore>,
    insecure_skip_verify: bool,
    pins: Pins,
    min_tls13: bool,
}

impl ClientTls {
    /// Reads and checks the files, in Go's order: key pair and own node ID
    /// (when a cert is given), root CAs, pins.
    pub fn load(cfg: &TlsClientCfg, node_id: &str) -> Result<Self, TlsError> {
        let provider = provider(cfg.min_tls13);
        let identity = match (&cfg.cert, &cfg.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let identity = files::load_identity(cert, key, &provider).map_err(client_err)?;
                if !cfg.skip_receptor_names_check {
                    check_own_id(&identity.cert, node_id, &cfg.name, cert).map_err(client_err)?;
                }
                Some(identity)
            }
            _ => return Err(client_err(SetupError::CertWithoutKey)),
        };
        let roots = match &cfg.root_cas {
            Some(path) => files::load_roots(path)
                .map_err(|e| client_err(SetupError::RootCas(path.clone(), e)))?,
            None => files::system_roots(),
        };
        let pins =
            Pins::parse(&cfg.pinned_server_cert).map_err(|e| client_err(SetupError::Pins(e)))?;
        Ok(ClientTls {
            name: cfg.name.clone(),
            skip_names_check: cfg.skip_receptor_names_check,
            identity,
            roots: Arc::new(roots),
            insecure_skip_verify: cfg.insecure_skip_verify,
            pins,
            min_tls13: cfg.min_tls13,
        })
    }

    /// For dialing a backend or TCP service at `host` (DNS name or IP):
    /// normal certificate and hostname verification, plus pins.
    pub fn for_host(&self, host: &str) -> Result<(ClientConfig, ServerName<'static>), TlsError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| client_err(rustls_err(format!("invalid server name {host:?}"))))?;
        let provider = provider(self.min_tls13);
        let algs = provider.signature_verification_algorithms;
        let verifier = if self.insecure_skip_verify {
            verify::ServerVerifier::insecure(algs)
        } else {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                self.roots.clone(),
                provider,
            )
            .build()
            .map_err(|e| client_err(rustls_err(format!("root CAs: {e}"))))?;
            verify::ServerVerifier::host(inner, self.pins.clone(), algs)
        };
        Ok((self.build(verifier)?, name))
    }

    /// For dialing a mesh service on `node`: the chain to the root CAs with
    /// EKU serverAuth, pins, and `node` in the server leaf's node IDs.
    pub fn for_node(&self, node: &str) -> Result<(ClientConfig, ServerName<'static>), TlsError> {
        self.for_node_reporting(node)
            .map(|(config, name, _)| (config, name))
    }

    /// As [`ClientTls::for_node`], with the slot where a refusal of the
    /// server's certificate leaves Go's words for it (QUIC reports only an
    /// alert).
    pub fn for_node_reporting(
        &self,
        node: &str,
    ) -> Result<(ClientConfig, ServerName<'static>, Refusal), TlsError> {
        let algs = provider(self.min_tls13).signature_verification_algorithms;
        let verifier = if self.insecure_skip_verify {
            verify::ServerVerifier::insecure(algs)
        } else {
            verify::ServerVerifier::node(self.roots.clone(), node, self.pins.clone(), algs)
        };
        let refusal = verifier.refusal();
        Ok((self.build(verifier)?, sni_for_node(node), refusal))
    }

    fn build(&self, verifier: verify::ServerVerifier) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider(self.min_tls13))
            .with_protocol_versions(versions(self.min_tls13))
            .map_err(|e| client_err(rustls_err(e)))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        Ok(match &self.identity {
            Some(id) => builder.with_client_cert_resolver(Arc::new(Identity(id.clone()))),
            None => builder.with_no_client_auth(),
        })
    }
}

/// The name to hand rustls when dialing `node`: the node ID itself when it
/// is a valid DNS name (so it goes out as SNI, as Go's dialer sends it),
/// else an IP placeholder, for which rustls sends no SNI. Verification
/// ignores it either way.
pub fn sni_for_node(node: &str) -> ServerName<'static> {
    match ServerName::try_from(node.to_string()) {
        Ok(name @ ServerName::DnsName(_)) => name,
        _ => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into()),
    }
}

/// The Receptor node IDs in the leaf of a peer's certificate chain (as
/// from `Connection::peer_certificates()`), so a backend can check the
/// node ID a peer claims. No chain yields no IDs.
pub fn peer_node_ids(chain: Option<&[CertificateDer<'_>]>) -> Result<Vec<String>, SanError> {
    match chain.and_then(|c| c.first()) {
        Some(leaf) => san::cert_node_ids(leaf),
        None => Ok(Vec::new()),
    }
}

/// A handshake error for a log line or a control reply. rustls shows a
/// verifier's own error with `Debug`; this gives Receptor's messages (Go's
/// words, e.g. `x509: certificate is valid for Receptor node ID a, not b`)
/// as they are, and any other error as rustls displays it.
pub fn error_text(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Other(other)) => other
            .0
            .downcast_ref::<PeerCertError>()
            .map_or_else(|| e.to_string(), PeerCertError::to_string),
        // Go's crypto/x509 words for the common chain failures.
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "x509: certificate signed by unknown authority".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "x509: certificate has expired or is not yet valid".into()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
