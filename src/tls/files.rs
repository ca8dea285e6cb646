//! Reading the certificate, key and CA files a TLS section names, with
//! the messages Go's `tls.X509KeyPair` and friends give.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::SetupError;

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::File(path.to_path_buf(), e))
}

fn sections(bytes: &[u8]) -> Vec<(SectionKind, Vec<u8>)> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .collect()
}

fn is_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey
    )
}

/// Every certificate in a PEM file, leaf first.
pub(crate) fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let blocks = sections(&read(path)?);
    let chain: Vec<CertificateDer<'static>> = blocks
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    match (chain.is_empty(), blocks.iter().any(|(k, _)| is_key(*k))) {
        (false, _) => Ok(chain),
        (true, true) => Err(SetupError::SwappedPem),
        (true, false) => Err(SetupError::NoCertPem),
    }
}

/// The private key in a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, SetupError> {
    let blocks = sections(&read(path)?);
    let key = blocks.iter().find(|(kind, _)| is_key(*kind));
    match key {
        Some((kind, der)) => {
            PrivateKeyDer::from_pem(*kind, der.clone()).ok_or(SetupError::NoKeyPem)
        }
        None if blocks.iter().any(|(k, _)| *k == SectionKind::Certificate) => {
            Err(SetupError::CertInsteadOfKey)
        }
        None => Err(SetupError::NoKeyPem),
    }
}

/// The chain and key, checked to belong together.
pub(crate) fn load_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, SetupError> {
    let chain = load_chain(cert)?;
    let key = load_key(key)?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| SetupError::BadKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(SetupError::KeyMismatch)
        }
        _ => Ok(Arc::new(certified)),
    }
}

/// The CA certificates in a bundle; like Go, entries that do not parse are
/// skipped.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, std::io::Error> {
    let bytes = std::fs::read(path)?;
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok);
    roots.add_parsable_certificates(certs);
    Ok(roots)
}

/// The bundles Go's crypto/x509 looks for on Linux, in its order.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system trust store: `$SSL_CERT_FILE`, else the first bundle found.
/// Empty when there is none (verification then fails as "unknown issuer").
pub(crate) fn system_roots() -> RootCertStore {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for path in candidates {
        if let Ok(roots) = load_roots(&path) {
            return roots;
        }
    }
    RootCertStore::empty()
}
