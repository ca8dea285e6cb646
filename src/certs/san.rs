//! The subjectAltName extension with Receptor node IDs (spec §5.1).
//!
//! A node ID is an `otherName` GeneralName with type-id
//! 1.3.6.1.4.1.2312.19.1 and value `[0] EXPLICIT UTF8String`. The cert
//! tools write it, and the TLS code reads it to check which node a peer is.
//! Written in the order Go writes: DNS names, then IP addresses, then node
//! IDs. Unlike Go, long IDs get correct DER lengths.

use std::fmt;
use std::net::IpAddr;

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, ParsedCriAttribute, X509Certificate, X509Extension};

use super::der::{DerError, Reader, tlv};

/// The subjectAltName extension's OID, as rcgen takes it.
pub const SUBJECT_ALT_NAME_OID: &[u64] = &[2, 5, 29, 17];
/// The Receptor node-ID otherName type-id.
pub const NODE_ID_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 2312, 19, 1];
/// [`NODE_ID_OID`] as DER content octets.
const NODE_ID_OID_DER: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x92, 0x08, 0x13, 0x01];

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
/// Context-specific, constructed, \[0\]: `otherName`, and its explicit value.
const CTX0: u8 = 0xA0;
/// Context-specific \[2\] (`dNSName`, IA5String implicit).
const DNS: u8 = 0x82;
/// Context-specific \[7\] (`iPAddress`, OCTET STRING implicit).
const IP: u8 = 0x87;

/// The names in a subjectAltName extension that Receptor cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanNames {
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub node_ids: Vec<String>,
}

impl SanNames {
    pub fn is_empty(&self) -> bool {
        self.dns_names.is_empty() && self.ip_addresses.is_empty() && self.node_ids.is_empty()
    }
}

/// Why names could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanError {
    /// The certificate or request itself does not parse.
    BadCertificate(String),
    /// The extension value is not valid DER.
    Der(DerError),
    /// A node-ID otherName whose value is not an ASN.1 string.
    NotAString,
    /// A string whose bytes do not fit its ASN.1 type.
    BadString,
    /// A DNS name is not ASCII (IA5String).
    BadDnsName(String),
    /// An IP address entry is neither 4 nor 16 bytes.
    BadIpAddress,
}

impl fmt::Display for SanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SanError::BadCertificate(e) => write!(f, "x509: {e}"),
            SanError::Der(e) => write!(f, "subjectAltName: {e}"),
            SanError::NotAString => f.write_str("subjectAltName: Receptor node ID is not a string"),
            SanError::BadString => f.write_str("subjectAltName: invalid string encoding"),
            SanError::BadDnsName(n) => write!(f, "invalid DNS name {n:?}: must be ASCII"),
            SanError::BadIpAddress => {
                f.write_str("subjectAltName: IP address is not 4 or 16 bytes")
            }
        }
    }
}

impl std::error::Error for SanError {}

impl From<DerError> for SanError {
    fn from(e: DerError) -> Self {
        SanError::Der(e)
    }
}

/// The DER value (inside the extension's OCTET STRING) of a subjectAltName
/// holding these names. An empty list still makes an (empty) extension, as
/// Go's tools do.
pub fn encode(names: &SanNames) -> Result<Vec<u8>, SanError> {
    let mut general_names = Vec::new();
    for name in &names.dns_names {
        if !name.is_ascii() {
            return Err(SanError::BadDnsName(name.clone()));
        }
        general_names.extend(tlv(DNS, name.as_bytes()));
    }
    for ip in &names.ip_addresses {
        general_names.extend(tlv(IP, &ip_bytes(ip)));
    }
    for id in &names.node_ids {
        general_names.extend(node_id_general_name(id));
    }
    Ok(tlv(SEQUENCE, &general_names))
}

/// IPv4 (also IPv4-mapped IPv6) as 4 bytes, like Go's `To4`, else 16.
fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets().to_vec(),
        },
    }
}

fn node_id_general_name(id: &str) -> Vec<u8> {
    let mut body = tlv(OID, NODE_ID_OID_DER);
    body.extend(tlv(CTX0, &tlv(UTF8_STRING, id.as_bytes())));
    tlv(CTX0, &body)
}

/// Reads the names from a subjectAltName extension value. Other kinds of
/// GeneralName, and otherNames of other types, are skipped.
pub fn decode(value: &[u8]) -> Result<SanNames, SanError> {
    let mut outer = Reader::new(value);
    let mut items = Reader::new(outer.expect(SEQUENCE)?);
    if !outer.is_empty() {
        return Err(DerError::BadHeader.into());
    }
    let mut names = SanNames::default();
    while !items.is_empty() {
        match items.read()? {
            (DNS, bytes) => names.dns_names.push(ascii(bytes)?),
            (IP, bytes) => names.ip_addresses.push(ip_from(bytes)?),
            (CTX0, body) => {
                if let Some(id) = other_name_node_id(body)? {
                    names.node_ids.push(id);
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

fn ascii(bytes: &[u8]) -> Result<String, SanError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SanError::BadString)?;
    if !text.is_ascii() {
        return Err(SanError::BadString);
    }
    Ok(text.to_string())
}

fn ip_from(bytes: &[u8]) -> Result<IpAddr, SanError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    let v6 = <[u8; 16]>::try_from(bytes).map_err(|_| SanError::BadIpAddress)?;
    Ok(IpAddr::from(v6))
}

/// The node ID in an otherName's body (type-id, then `[0]` value), or
/// `None` when the otherName is of another type.
fn other_name_node_id(body: &[u8]) -> Result<Option<String>, SanError> {
    let mut r = Reader::new(body);
    if r.expect(OID)? != NODE_ID_OID_DER {
        return Ok(None);
    }
    let mut value = Reader::new(r.expect(CTX0)?);
    let (tag, bytes) = value.read()?;
    if !value.is_empty() || !r.is_empty() {
        return Err(DerError::BadHeader.into());
    }
    asn1_string(tag, bytes).map(Some)
}

const UTF8_STRING: u8 = 0x0C;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const GENERAL_STRING: u8 = 0x1B;
const BMP_STRING: u8 = 0x1E;

/// Any of the string types Go's `asn1` package reads into a `string`.
fn asn1_string(tag: u8, bytes: &[u8]) -> Result<String, SanError> {
    match tag {
        UTF8_STRING => String::from_utf8(bytes.to_vec()).map_err(|_| SanError::BadString),
        NUMERIC_STRING | PRINTABLE_STRING | IA5_STRING => ascii(bytes),
        // Teletex and GeneralString carry no reliable charset; Latin-1 is
        // what they hold in practice.
        T61_STRING | GENERAL_STRING => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
        BMP_STRING => bmp(bytes),
        _ => Err(SanError::NotAString),
    }
}

fn bmp(bytes: &[u8]) -> Result<String, SanError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(SanError::BadString);
    }
    let units = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| SanError::BadString)
}

/// The names in every subjectAltName extension among `extensions`.
fn names_in(extensions: &[X509Extension<'_>]) -> Result<SanNames, SanError> {
    let mut all = SanNames::default();
    for ext in extensions.iter().filter(|e| is_san(e)) {
        let names = decode(ext.value)?;
        all.dns_names.extend(names.dns_names);
        all.ip_addresses.extend(names.ip_addresses);
        all.node_ids.extend(names.node_ids);
    }
    Ok(all)
}

pub(crate) fn is_san(ext: &X509Extension<'_>) -> bool {
    ext.oid == x509_parser::oid_registry::OID_X509_EXT_SUBJECT_ALT_NAME
}

/// The names in a DER certificate.
pub fn cert_names(cert_der: &[u8]) -> Result<SanNames, SanError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| SanError::BadCertificate(e.to_string()))?;
    names_in(cert.extensions())
}

/// The Receptor node IDs in a DER certificate, in the order written.
pub fn cert_node_ids(cert_der: &[u8]) -> Result<Vec<String>, SanError> {
    cert_names(cert_der).map(|n| n.node_ids)
}

/// The extensions a certificate request asks for.
pub(crate) fn requested_extensions<'a>(
    req: &'a X509CertificationRequest<'_>,
) -> Vec<&'a X509Extension<'a>> {
    req.certification_request_info
        .iter_attributes()
        .filter_map(|a| match a.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(r) => Some(r.extensions.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The names in a parsed certificate request.
pub fn request_names(req: &X509CertificationRequest<'_>) -> Result<SanNames, SanError> {
    let exts: Vec<X509Extension<'_>> = requested_extensions(req).into_iter().cloned().collect();
    names_in(&exts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[&str]) -> SanNames {
        SanNames {
            node_ids: ids.iter().map(|s| s.to_string()).collect(),
            ..SanNames::default()
        }
    }

    /// The vector from spec §5.1.
    #[test]
    fn node_id_foo_vector() {
        let der = encode(&ids(&["foo"])).unwrap();
        let want = [
            0x30, 0x14, 0xA0, 0x12, 0x06, 0x09, 0x2B, 0x06, 0x01, 0x04, 0x01, 0x92, 0x08, 0x13,
            0x01, 0xA0, 0x05, 0x0C, 0x03, 0x66, 0x6F, 0x6F,
        ];
        assert_eq!(der, want);
        assert_eq!(decode(&der), Ok(ids(&["foo"])));
    }

    /// What Go's tool writes for dnsname, two IPs and a node ID (taken from
    /// a CSR made by the Go reference binary).
    #[test]
    fn go_order_and_ip_forms() {
        let names = SanNames {
            dns_names: vec!["foo.example.com".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            node_ids: vec!["foo".into()],
        };
        let go = "303D820F666F6F2E6578616D706C652E636F6D87047F000001871000000000000000000000\
                  000000000001A01206092B0601040192081301A0050C03666F6F";
        let der = encode(&names).unwrap();
        assert_eq!(hex(&der), go);
        assert_eq!(decode(&der), Ok(names));
        let mapped = SanNames {
            ip_addresses: vec!["::ffff:10.1.2.3".parse().unwrap()],
            ..SanNames::default()
        };
        assert_eq!(
            encode(&mapped).unwrap(),
            [0x30, 0x06, 0x87, 0x04, 10, 1, 2, 3]
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02X}")).collect()
    }

    #[test]
    fn empty_and_long_ids() {
        assert_eq!(encode(&SanNames::default()).unwrap(), [0x30, 0x00]);
        // Go's encoder corrupts otherNames of 128 bytes or more.
        let long = "n".repeat(300);
        let der = encode(&ids(&[&long, "b"])).unwrap();
        assert_eq!(decode(&der), Ok(ids(&[&long, "b"])));
    }

    #[test]
    fn any_string_type_inside_the_value() {
        for (tag, bytes, want) in [
            (PRINTABLE_STRING, &b"node1"[..], "node1"),
            (IA5_STRING, b"n-2", "n-2"),
            (BMP_STRING, &[0, b'h', 0, b'i'], "hi"),
            (T61_STRING, &[b'a', 0xE9], "a\u{e9}"),
        ] {
            let mut body = tlv(OID, NODE_ID_OID_DER);
            body.extend(tlv(CTX0, &tlv(tag, bytes)));
            let der = tlv(SEQUENCE, &tlv(CTX0, &body));
            assert_eq!(decode(&der), Ok(ids(&[want])), "{tag:#x}");
        }
        let mut body = tlv(OID, NODE_ID_OID_DER);
        body.extend(tlv(CTX0, &tlv(0x02, &[1])));
        assert_eq!(
            decode(&tlv(SEQUENCE, &tlv(CTX0, &body))),
            Err(SanError::NotAString)
        );
    }

    #[test]
    fn other_types_are_skipped_and_junk_rejected() {
        // An otherName of another type-id, an email ([1]) and a URI ([6]).
        let mut other = tlv(OID, &[0x2B, 0x06, 0x01]);
        other.extend(tlv(CTX0, &tlv(UTF8_STRING, b"x")));
        let mut items = tlv(CTX0, &other);
        items.extend(tlv(0x81, b"a@b"));
        items.extend(tlv(0x86, b"http://x"));
        assert_eq!(decode(&tlv(SEQUENCE, &items)), Ok(SanNames::default()));
        let good = encode(&ids(&["foo"])).unwrap();
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "{cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
        assert!(
            encode(&SanNames {
                dns_names: vec!["é.com".into()],
                ..SanNames::default()
            })
            .is_err()
        );
    }

    /// Peers send these bytes: no mutation of a valid value may panic.
    #[test]
    fn mutated_values_never_panic() {
        let names = SanNames {
            dns_names: vec!["a.example".into()],
            ip_addresses: vec!["::1".parse().unwrap()],
            node_ids: vec!["node".repeat(40)],
        };
        let good = encode(&names).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            // xorshift: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.clone();
            let at = (state as usize) % bytes.len();
            bytes[at] = (state >> 32) as u8;
            bytes.truncate(bytes.len() - (state >> 40) as usize % 3);
            let _ = decode(&bytes);
        }
    }
}
