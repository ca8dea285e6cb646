//! PEM files as the Go tools read and write them: one item per file for
//! certificates, requests and keys, written with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rsa::RsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rustls::pki_types::pem::{PemObject, SectionKind};

use super::{CertError, RsaKey};

/// One decoded PEM block.
pub enum PemItem {
    Certificate(Vec<u8>),
    Request(Vec<u8>),
    RsaKey(Box<RsaKey>),
    /// A `PUBLIC KEY` (PKIX) block holding an RSA key.
    RsaPublicKey(Box<RsaPublicKey>),
    /// A private or public key of another algorithm.
    OtherKey,
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Every block in a PEM file.
pub fn load(path: &Path) -> Result<Vec<PemItem>, CertError> {
    let bytes = read(path)?;
    let mut items = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, der) = section.map_err(|_| bad("failed to decode PEM block"))?;
        items.push(match kind {
            SectionKind::Certificate => PemItem::Certificate(der),
            SectionKind::Csr => PemItem::Request(der),
            SectionKind::RsaPrivateKey => PemItem::RsaKey(Box::new(RsaKey::from_pkcs1_der(&der)?)),
            SectionKind::PrivateKey => match RsaKey::from_pkcs8_der(&der)? {
                Some(key) => PemItem::RsaKey(Box::new(key)),
                None => PemItem::OtherKey,
            },
            SectionKind::PublicKey => match RsaPublicKey::from_public_key_der(&der) {
                Ok(key) => PemItem::RsaPublicKey(Box::new(key)),
                Err(rsa::pkcs8::spki::Error::OidUnknown { .. }) => PemItem::OtherKey,
                Err(e) => return Err(bad(e.to_string())),
            },
            SectionKind::EcPrivateKey => PemItem::OtherKey,
            other => return Err(bad(format!("unknown block type {other:?}"))),
        });
    }
    Ok(items)
}

fn bad(msg: impl Into<String>) -> CertError {
    CertError::BadInput(msg.into())
}

/// The single item of a file, checked by `pick`; the messages are Go's.
fn single<T>(
    path: &Path,
    what: &str,
    data: &str,
    pick: impl FnOnce(PemItem) -> Option<T>,
) -> Result<T, CertError> {
    let mut items = load(path)?;
    if items.len() != 1 {
        return Err(bad(format!("{what} file should contain exactly one item")));
    }
    pick(items.remove(0)).ok_or_else(|| bad(format!("{what} file does not contain {data} data")))
}

/// A file holding exactly one certificate (DER returned).
pub fn load_certificate(path: &Path) -> Result<Vec<u8>, CertError> {
    single(path, "certificate", "certificate", |item| match item {
        PemItem::Certificate(der) => Some(der),
        _ => None,
    })
}

/// A file holding exactly one certificate request (DER returned).
pub fn load_request(path: &Path) -> Result<Vec<u8>, CertError> {
    single(
        path,
        "certificate request",
        "certificate request",
        |item| match item {
            PemItem::Request(der) => Some(der),
            _ => None,
        },
    )
}

/// A file holding exactly one RSA private key.
pub fn load_private_key(path: &Path) -> Result<RsaKey, CertError> {
    single(path, "private key", "private key", |item| match item {
        PemItem::RsaKey(key) => Some(*key),
        _ => None,
    })
}

/// A file holding exactly one RSA public key (`PUBLIC KEY`, PKIX).
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey, CertError> {
    single(path, "public key", "public key", |item| match item {
        PemItem::RsaPublicKey(key) => Some(*key),
        _ => None,
    })
}

/// Writes `text` to `path`, readable by the owner only: created 0600, and
/// an existing file is set to 0600 too (Go leaves its mode alone, which
/// can leave a key world-readable).
pub fn write_private(path: &Path, text: &str) -> Result<(), CertError> {
    let fail = |source| CertError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}
