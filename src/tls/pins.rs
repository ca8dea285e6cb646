//! Pinned certificate fingerprints (`pinnedclientcert`,
//! `pinnedservercert`): SHA-256 or SHA-512 of the peer's leaf DER, hex with
//! optional colons. Any match suffices; pins add to chain checks.

use std::fmt;

use sha2::{Digest, Sha256, Sha512};

/// Why a fingerprint list is refused; texts are Go's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    NotHex,
    BadLength,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PinError::NotHex => "error decoding fingerprint",
            PinError::BadLength => "fingerprints must be 32 or 64 bytes for sha256 or sha512",
        })
    }
}

impl std::error::Error for PinError {}

/// A set of pins; empty means "no pinning".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins(Vec<Vec<u8>>);

impl Pins {
    pub fn parse(texts: &[String]) -> Result<Self, PinError> {
        texts
            .iter()
            .map(|t| decode(t))
            .collect::<Result<_, _>>()
            .map(Pins)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `leaf_der` matches a pin (always true without pins).
    pub fn accepts(&self, leaf_der: &[u8]) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let sha256 = Sha256::digest(leaf_der);
        let sha512 = Sha512::digest(leaf_der);
        self.0
            .iter()
            .any(|pin| pin[..] == sha256[..] || pin[..] == sha512[..])
    }
}

fn decode(text: &str) -> Result<Vec<u8>, PinError> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return Err(PinError::NotHex);
    }
    let bytes = digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
                _ => Err(PinError::NotHex),
            }
        })
        .collect::<Result<Vec<u8>, _>>()?;
    match bytes.len() {
        32 | 64 => Ok(bytes),
        _ => Err(PinError::BadLength),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8], sep: &str) -> String {
        b.iter()
            .map(|x| format!("{x:02X}"))
            .collect::<Vec<_>>()
            .join(sep)
    }

    #[test]
    fn sha256_and_sha512_with_or_without_colons() {
        let der = b"not really a certificate";
        let s256 = Sha256::digest(der);
        let s512 = Sha512::digest(der);
        for text in [
            hex(&s256, ":"),
            hex(&s256, "").to_lowercase(),
            hex(&s512, ""),
        ] {
            let pins = Pins::parse(std::slice::from_ref(&text)).unwrap();
            assert!(pins.accepts(der), "{text}");
            assert!(!pins.accepts(b"other"), "{text}");
        }
        let two = Pins::parse(&[hex(&[0; 32], ""), hex(&s256, "")]).unwrap();
        assert!(two.accepts(der));
        assert!(Pins::default().accepts(der));
    }

    #[test]
    fn bad_pins_use_gos_words() {
        assert_eq!(Pins::parse(&["zz".into()]), Err(PinError::NotHex));
        assert_eq!(Pins::parse(&["abc".into()]), Err(PinError::NotHex));
        assert_eq!(Pins::parse(&["aabb".into()]), Err(PinError::BadLength));
        assert_eq!(
            PinError::BadLength.to_string(),
            "fingerprints must be 32 or 64 bytes for sha256 or sha512"
        );
    }
}
