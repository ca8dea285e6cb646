//! RSA keys for the cert tools: generation, PKCS#1 PEM, and signing for
//! rcgen (ring cannot sign with keys under 2048 bits; Go's tools can, so
//! the tools sign with the `rsa` crate instead).

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs1v15::SigningKey as Pkcs1v15Key;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, rand_core::OsRng};

use super::CertError;

/// What `bits=0` means, as in Go.
pub const DEFAULT_BITS: usize = 2048;
/// Below this, prime generation cannot succeed (Go fails the same way).
const MIN_BITS: usize = 512;
/// Above this, generation would run for many minutes.
const MAX_BITS: usize = 16384;

/// An RSA private key with its PKCS#1 public key, ready to sign.
pub struct RsaKey {
    key: RsaPrivateKey,
    public_der: Vec<u8>,
}

impl RsaKey {
    /// A new key of `bits` bits (0 = 2048).
    pub fn generate(bits: i64) -> Result<Self, CertError> {
        let bits = match usize::try_from(bits) {
            Ok(0) => DEFAULT_BITS,
            Ok(b) if (MIN_BITS..=MAX_BITS).contains(&b) => b,
            _ => {
                return Err(CertError::Param(format!(
                    "bits must be 0 (meaning {DEFAULT_BITS}) or between {MIN_BITS} and {MAX_BITS}, not {bits}"
                )));
            }
        };
        let key = RsaPrivateKey::new(&mut OsRng, bits).map_err(crypto)?;
        Self::from_key(key)
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self, CertError> {
        let public_der = key.to_public_key().to_pkcs1_der().map_err(crypto)?;
        Ok(RsaKey {
            key,
            public_der: public_der.into_vec(),
        })
    }

    /// A key from the DER of a PEM `RSA PRIVATE KEY` block.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self, CertError> {
        Self::from_key(RsaPrivateKey::from_pkcs1_der(der).map_err(crypto)?)
    }

    /// A key from the DER of a PEM `PRIVATE KEY` block; `None` when it is
    /// a valid key of another algorithm.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Option<Self>, CertError> {
        match RsaPrivateKey::from_pkcs8_der(der) {
            Ok(key) => Self::from_key(key).map(Some),
            Err(rsa::pkcs8::Error::PublicKey(_)) => Ok(None),
            Err(e) => Err(crypto(e)),
        }
    }

    /// The key as an `RSA PRIVATE KEY` PEM block with LF line endings.
    pub fn to_pkcs1_pem(&self) -> Result<String, CertError> {
        let pem = self
            .key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(crypto)?;
        Ok(pem.to_string())
    }

    /// The private key itself, for signers other than rcgen's.
    pub fn rsa(&self) -> &RsaPrivateKey {
        &self.key
    }

    /// The modulus length in bits.
    pub fn bits(&self) -> usize {
        self.key.size() * 8
    }
}

fn crypto(e: impl std::fmt::Display) -> CertError {
    CertError::Crypto(e.to_string())
}

impl rcgen::PublicKeyData for RsaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for RsaKey {
    /// SHA256-RSA (PKCS#1 v1.5), the only algorithm Go's tools use.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer = Pkcs1v15Key::<Sha256>::new(self.key.clone());
        let sig = signer
            .try_sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)?;
        Ok(sig.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_rules() {
        assert!(matches!(RsaKey::generate(-1), Err(CertError::Param(_))));
        assert!(matches!(RsaKey::generate(100), Err(CertError::Param(_))));
        let key = RsaKey::generate(1024).unwrap();
        assert_eq!(key.bits(), 1024);
        let pem = key.to_pkcs1_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    }
}
