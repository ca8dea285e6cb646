//! Building the CA certificate, certificate requests and signed
//! certificates in memory, with the parameters of Go's tools (spec §5).
//! Nothing here touches files or clocks: validity comes in.

use std::fmt::Write as _;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use x509_parser::public_key::PublicKey;

use super::san::{self, SUBJECT_ALT_NAME_OID, SanNames};
use super::{CertError, RsaKey};

/// A certificate's validity period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The CA certificate (PEM) for `key`: subject CN only, CA with
/// basicConstraints, KeyUsage digitalSignature|keyCertSign, EKU clientAuth
/// and serverAuth, self-signed SHA256-RSA.
pub fn create_ca(common_name: &str, key: &RsaKey, validity: Validity) -> Result<String, CertError> {
    let mut params = base_params(common_name, validity)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    let cert = params.self_signed(key).map_err(crypto)?;
    Ok(cert.pem())
}

fn base_params(common_name: &str, validity: Validity) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_only(common_name)?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

fn common_name_only(common_name: &str) -> Result<DistinguishedName, CertError> {
    if common_name.is_empty() {
        return Err(CertError::Param("must provide CommonName".into()));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    Ok(dn)
}

/// 16 random bytes, positive. Go uses the current second, so two
/// certificates made in the same second by one CA collide.
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(crypto)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn crypto(e: impl std::fmt::Display) -> CertError {
    CertError::Crypto(e.to_string())
}

/// A certificate request (PEM) for `key`: subject CN only, SHA256-RSA,
/// with a subjectAltName extension (always present, maybe empty) holding
/// `names` in Go's order.
pub fn make_request(
    common_name: &str,
    names: &SanNames,
    key: &RsaKey,
) -> Result<String, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_only(common_name)?;
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        SUBJECT_ALT_NAME_OID,
        san::encode(names)?,
    )];
    let req = params.serialize_request(key).map_err(crypto)?;
    req.pem().map_err(crypto)
}

/// What a request asks for, as `--cert-signreq` shows it before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    /// Go's `pkix.Name.String()` form, e.g. `CN=foo`.
    pub subject: String,
    /// `RSA (2048 bits)`, `ECDSA`, `Ed25519`, or the OID.
    pub key_algorithm: String,
    /// `SHA256-RSA` and the like, or the OID.
    pub signature_algorithm: String,
    pub names: SanNames,
}

fn parse_request(der: &[u8]) -> Result<X509CertificationRequest<'_>, CertError> {
    match X509CertificationRequest::from_der(der) {
        Ok(([], req)) => Ok(req),
        Ok(_) => Err(CertError::BadInput(
            "x509: trailing data after certificate request".into(),
        )),
        Err(e) => Err(CertError::BadInput(format!(
            "x509: malformed certificate request: {e}"
        ))),
    }
}

/// Reads a request's subject, algorithms and names.
pub fn summarize_request(der: &[u8]) -> Result<RequestSummary, CertError> {
    let req = parse_request(der)?;
    let info = &req.certification_request_info;
    Ok(RequestSummary {
        subject: go_name(&info.subject),
        key_algorithm: key_algorithm(&info.subject_pki),
        signature_algorithm: signature_algorithm(&req.signature_algorithm.algorithm.to_id_string()),
        names: san::request_names(&req)?,
    })
}

impl RequestSummary {
    /// The lines Go prints before asking `Sign certificate (yes/no)? `.
    pub fn describe(&self) -> String {
        let mut out = String::from("Requested certificate:\n");
        let _ = writeln!(out, "  Subject: {}", self.subject);
        let _ = writeln!(out, "  Encryption Algorithm: {}", self.key_algorithm);
        let _ = writeln!(out, "  Signature Algorithm: {}", self.signature_algorithm);
        out.push_str("  Names:\n");
        for name in &self.names.dns_names {
            let _ = writeln!(out, "    DNS Name: {name}");
        }
        for ip in &self.names.ip_addresses {
            let _ = writeln!(out, "    IP Address: {}", ip.to_canonical());
        }
        for id in &self.names.node_ids {
            let _ = writeln!(out, "    Receptor Node ID: {id}");
        }
        out
    }
}

fn key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let modulus = rsa.modulus.iter().skip_while(|b| **b == 0).count();
            format!("RSA ({} bits)", modulus * 8)
        }
        Ok(PublicKey::EC(_)) => "ECDSA".into(),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".into(),
        _ => spki.algorithm.algorithm.to_id_string(),
    }
}

fn signature_algorithm(oid: &str) -> String {
    match oid {
        "1.2.840.113549.1.1.5" => "SHA1-RSA",
        "1.2.840.113549.1.1.11" => "SHA256-RSA",
        "1.2.840.113549.1.1.12" => "SHA384-RSA",
        "1.2.840.113549.1.1.13" => "SHA512-RSA",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.2.840.10045.4.3.2" => "ECDSA-SHA256",
        "1.2.840.10045.4.3.3" => "ECDSA-SHA384",
        "1.2.840.10045.4.3.4" => "ECDSA-SHA512",
        "1.3.101.112" => "Ed25519",
        other => other,
    }
    .to_string()
}

/// A name as Go's `pkix.Name.String()` shows it: RDNs last to first,
/// short type names, RFC 4514 escapes.
fn go_name(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let value = atv.as_str().map(escape_rfc4514);
                    match (short_type(&oid), value) {
                        (Some(t), Ok(v)) => format!("{t}={v}"),
                        _ => format!("{oid}=#{}", hex(atv.attr_value().data)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn short_type(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.17" => "POSTALCODE",
        _ => return None,
    })
}

fn escape_rfc4514(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs a request with the CA: validity as given, KeyUsage
/// digitalSignature, EKU clientAuth and serverAuth, issuer = the CA's
/// subject, and the request's subjectAltName copied byte for byte (so
/// node IDs survive whatever their encoding). Returns the PEM.
pub fn sign_request(
    req_der: &[u8],
    ca_der: &[u8],
    ca_key: &RsaKey,
    validity: Validity,
) -> Result<String, CertError> {
    let req = parse_request(req_der)?;
    if san::request_names(&req)?.is_empty() {
        return Err(CertError::BadInput(
            "cannot sign: no names found in certificate".into(),
        ));
    }
    check_ca_key(ca_der, ca_key)?;
    let info = &req.certification_request_info;
    let public_key = SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| CertError::BadInput(format!("unsupported public key in request: {e}")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = copy_name(&info.subject)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.serial_number = Some(random_serial()?);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.use_authority_key_identifier_extension = true;
    if let Some(ext) = san::requested_extensions(&req)
        .into_iter()
        .find(|e| san::is_san(e))
    {
        let mut copy = CustomExtension::from_oid_content(SUBJECT_ALT_NAME_OID, ext.value.to_vec());
        copy.set_criticality(ext.critical);
        params.custom_extensions.push(copy);
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der.into(), ca_key)
        .map_err(|e| CertError::BadInput(format!("CA certificate: {e}")))?;
    let cert = params.signed_by(&public_key, &issuer).map_err(crypto)?;
    Ok(cert.pem())
}

/// Go's x509 refuses to sign when the CA key does not verify its own
/// output; comparing public keys gives the same answer earlier.
fn check_ca_key(ca_der: &[u8], ca_key: &RsaKey) -> Result<(), CertError> {
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| CertError::BadInput(format!("x509: malformed CA certificate: {e}")))?;
    if ca.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(ca_key) {
        return Err(CertError::BadInput(
            "CA private key does not match the CA certificate".into(),
        ));
    }
    Ok(())
}

/// The request's subject in rcgen's terms, keeping each value's string
/// type so the issued certificate names the subject as asked.
fn copy_name(name: &X509Name<'_>) -> Result<DistinguishedName, CertError> {
    let bad = || CertError::BadInput("x509: unsupported subject name in request".into());
    let mut dn = DistinguishedName::new();
    for atv in name.iter_attributes() {
        let oid: Vec<u64> = atv.attr_type().iter().ok_or_else(bad)?.collect();
        let data = atv.attr_value().data;
        let text = || std::str::from_utf8(data).map_err(|_| bad());
        let value = match atv.attr_value().header.tag() {
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(|_| bad())?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|_| bad())?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().map_err(|_| bad())?),
            Tag::BmpString => DnValue::BmpString(
                rcgen::string::BmpString::from_utf16be(data.to_vec()).map_err(|_| bad())?,
            ),
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            _ => return Err(bad()),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}
