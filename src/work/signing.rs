//! Work signing and verification (docs/work.md §8): the controller signs
//! each request it sends for a remote unit with `SignWork` as a compact
//! JWS, and an executor whose work type has `verifysignature` checks it.
//!
//! The token is what Go's jwt-go v4.5 writes for `RegisteredClaims`:
//!
//! * header `{"alg":"RS512","typ":"JWT"}` (Go marshals the header map with
//!   its keys sorted);
//! * claims `{"aud":["<executor node ID>"],"exp":<unix seconds>}` (the
//!   struct's field order, empty fields omitted, a single audience still
//!   an array, whole seconds);
//! * segments in base64url without padding; the signature is RSA PKCS#1
//!   v1.5 over SHA-512 of `header.claims`.
//!
//! Verification follows jwt-go's `ParseWithClaims` step by step, so a
//! refusal reads as Go's does: malformed input first, then the time claims
//! (`exp`, `iat`, `nbf`, the last failing one named), then the signature
//! (whose failure is named over a time failure), then the audience.
//!
//! [`sign_token`] and [`verify_token`] are pure, with `now` passed in.
//! [`Signer`] and [`Verifier`] read the key files again on every use, as
//! Go does, so a replaced key takes effect without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pss::Pss;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::certs::pem;

/// What a `work-signing` section without `tokenexpiration` means. (Go
/// dereferences a nil duration there and crashes at startup.)
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The header every token we sign carries, already encoded.
const HEADER: &str = r#"{"alg":"RS512","typ":"JWT"}"#;

/// Why a token could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// No `work-signing` section.
    NoKey,
    /// The key file could not be read or holds no single RSA private key.
    KeyFile(String),
    /// The RSA operation itself failed.
    Crypto(String),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::NoKey => f.write_str(NO_SIGNING_KEY),
            SignError::KeyFile(e) => write!(f, "{SIGNING_KEY_FILE}{e}"),
            SignError::Crypto(e) => f.write_str(e),
        }
    }
}

/// Why a request's signature was refused. `Display` is Go's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// A signature was sent for a type that does not verify them.
    NotExpected,
    /// A signature was required and none was sent.
    Empty,
    /// A signature was required but no `work-verification` key is set.
    NoKey,
    /// The public key file could not be read or holds no RSA public key.
    KeyFile(String),
    /// The token is malformed, expired, not yet valid or wrongly signed:
    /// jwt-go's own text.
    Invalid(String),
    /// The token was made for another node.
    Audience,
}

const NO_SIGNING_KEY: &str = "cannot sign work: signing key is empty";
const SIGNING_KEY_FILE: &str = "could not load signing key file: ";
const NOT_EXPECTED: &str = "work type did not expect a signature";
const COULD_NOT_VERIFY: &str = "could not verify signature: ";
const EMPTY: &str = "signature is empty";
const NO_VERIFYING_KEY: &str = "verifying key not specified";
const VERIFYING_KEY_FILE: &str = "could not load verifying key file: ";
const AUDIENCE: &str = "token audience did not match node ID";

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::NotExpected => f.write_str(NOT_EXPECTED),
            VerifyError::Empty => write!(f, "{COULD_NOT_VERIFY}{EMPTY}"),
            VerifyError::NoKey => write!(f, "{COULD_NOT_VERIFY}{NO_VERIFYING_KEY}"),
            VerifyError::KeyFile(e) => write!(f, "{VERIFYING_KEY_FILE}{e}"),
            VerifyError::Invalid(e) => write!(f, "{COULD_NOT_VERIFY}{e}"),
            VerifyError::Audience => f.write_str(AUDIENCE),
        }
    }
}

impl SignError {
    /// The variant that printed `text`, if any (a peer's `ERROR:` reply).
    pub fn from_text(text: &str) -> Option<SignError> {
        if text == NO_SIGNING_KEY {
            return Some(SignError::NoKey);
        }
        let e = text.strip_prefix(SIGNING_KEY_FILE)?;
        Some(SignError::KeyFile(e.to_string()))
    }
}

impl VerifyError {
    /// The variant that printed `text`, if any (a peer's `ERROR:` reply).
    pub fn from_text(text: &str) -> Option<VerifyError> {
        match text {
            NOT_EXPECTED => return Some(VerifyError::NotExpected),
            AUDIENCE => return Some(VerifyError::Audience),
            _ => {}
        }
        if let Some(e) = text.strip_prefix(VERIFYING_KEY_FILE) {
            return Some(VerifyError::KeyFile(e.to_string()));
        }
        let e = text.strip_prefix(COULD_NOT_VERIFY)?;
        Some(match e {
            EMPTY => VerifyError::Empty,
            NO_VERIFYING_KEY => VerifyError::NoKey,
            other => VerifyError::Invalid(other.to_string()),
        })
    }
}

/// Seconds since the epoch, negative before it.
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs_f64().ceil() as u64).unwrap_or(i64::MAX),
    }
}

/// The token for `audience` (the executor's node ID), valid until
/// `expires` (cut to whole seconds, as jwt-go does).
pub fn sign_token(
    key: &RsaPrivateKey,
    audience: &str,
    expires: SystemTime,
) -> Result<String, SignError> {
    let claims = serde_json::json!({"aud": [audience], "exp": unix_secs(expires)});
    // serde_json writes object keys sorted; "aud" < "exp" is also the
    // order of Go's struct fields.
    let signing_input = format!(
        "{}.{}",
        base64url::encode(HEADER.as_bytes()),
        base64url::encode(claims.to_string().as_bytes())
    );
    let hashed = Sha512::digest(signing_input.as_bytes());
    let sig = key
        .sign(Pkcs1v15Sign::new::<Sha512>(), &hashed)
        .map_err(|e| SignError::Crypto(e.to_string()))?;
    Ok(format!("{signing_input}.{}", base64url::encode(&sig)))
}

/// Checks `token` as Go's executor does: signed by `key`, within its time
/// claims at `now`, and made for `node_id`.
pub fn verify_token(
    token: &str,
    key: &RsaPublicKey,
    node_id: &str,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let claims = parse_and_check(token, key, now).map_err(VerifyError::Invalid)?;
    if audience_matches(&claims.audience, node_id) {
        Ok(())
    } else {
        Err(VerifyError::Audience)
    }
}

/// The registered claims verification looks at. Times are nanoseconds
/// since the epoch.
#[derive(Debug, Default, PartialEq)]
struct Claims {
    audience: Vec<String>,
    expires_at: Option<i128>,
    not_before: Option<i128>,
    issued_at: Option<i128>,
}

/// The signing methods jwt-go registers, as far as an RSA key goes.
enum Method {
    Pkcs1(Hash),
    Pss(Hash),
    /// HMAC and EdDSA refuse an RSA key before looking at the signature.
    WrongKeyType,
    /// ECDSA decodes the signature first, then refuses the key.
    WrongKeyTypeAfterDecode,
    /// `none` is refused whatever the key.
    None,
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

fn method(alg: &str) -> Option<Method> {
    Some(match alg {
        "RS256" => Method::Pkcs1(Hash::Sha256),
        "RS384" => Method::Pkcs1(Hash::Sha384),
        "RS512" => Method::Pkcs1(Hash::Sha512),
        "PS256" => Method::Pss(Hash::Sha256),
        "PS384" => Method::Pss(Hash::Sha384),
        "PS512" => Method::Pss(Hash::Sha512),
        "HS256" | "HS384" | "HS512" | "EdDSA" => Method::WrongKeyType,
        "ES256" | "ES384" | "ES512" => Method::WrongKeyTypeAfterDecode,
        "none" => Method::None,
        _ => return None,
    })
}

const KEY_OF_INVALID_TYPE: &str = "key is of invalid type";
const RSA_VERIFICATION: &str = "crypto/rsa: verification error";

/// jwt-go's `ParseWithClaims` with an RSA public key; the error is its
/// text.
fn parse_and_check(token: &str, key: &RsaPublicKey, now: SystemTime) -> Result<Claims, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("token contains an invalid number of segments".into());
    };
    let header_bytes = base64url::decode(header).map_err(|e| {
        if token.to_lowercase().starts_with("bearer ") {
            "tokenstring should not contain 'bearer '".to_string()
        } else {
            e
        }
    })?;
    let header = match serde_json::from_slice::<Value>(&header_bytes) {
        Ok(Value::Object(map)) => Some(map),
        Ok(Value::Null) => None,
        Ok(other) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                json_kind(&other)
            ));
        }
        Err(e) => return Err(json_syntax(&e)),
    };
    let claims = parse_claims(&base64url::decode(payload)?)?;
    let alg = header.as_ref().and_then(|h| h.get("alg"));
    let method = match alg {
        Some(Value::String(alg)) => {
            method(alg).ok_or_else(|| "signing method (alg) is unavailable.".to_string())?
        }
        _ => return Err("signing method (alg) is unspecified.".into()),
    };
    let mut failure = time_failure(&claims, now);
    if let Err(e) = check_signature(&method, header_of(token), signature, key) {
        failure = Some(e);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(claims),
    }
}

/// `header.claims`, the signed part of a three-segment token.
fn header_of(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(signed, _)| signed)
}

fn check_signature(
    method: &Method,
    signed: &str,
    signature: &str,
    key: &RsaPublicKey,
) -> Result<(), String> {
    let (hash, pss) = match method {
        Method::Pkcs1(h) => (*h, false),
        Method::Pss(h) => (*h, true),
        Method::WrongKeyType => return Err(KEY_OF_INVALID_TYPE.into()),
        Method::WrongKeyTypeAfterDecode => {
            base64url::decode(signature)?;
            return Err(KEY_OF_INVALID_TYPE.into());
        }
        Method::None => return Err("'none' signature type is not allowed".into()),
    };
    let sig = base64url::decode(signature)?;
    let input = signed.as_bytes();
    let result = match (hash, pss) {
        (Hash::Sha256, false) => {
            key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input), &sig)
        }
        (Hash::Sha384, false) => {
            key.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input), &sig)
        }
        (Hash::Sha512, false) => {
            key.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input), &sig)
        }
        // Go verifies PSS with any salt length; this checks the one Go
        // and every common signer use, the hash's length.
        (Hash::Sha256, true) => key.verify(Pss::new::<Sha256>(), &Sha256::digest(input), &sig),
        (Hash::Sha384, true) => key.verify(Pss::new::<Sha384>(), &Sha384::digest(input), &sig),
        (Hash::Sha512, true) => key.verify(Pss::new::<Sha512>(), &Sha512::digest(input), &sig),
    };
    result.map_err(|_| RSA_VERIFICATION.to_string())
}

/// jwt-go's `RegisteredClaims.Valid`: each failing check overwrites the
/// message, so `nbf` wins over `iat` over `exp`.
fn time_failure(claims: &Claims, now: SystemTime) -> Option<String> {
    let now_ns = system_time_nanos(now);
    let mut failure = None;
    if let Some(exp) = claims.expires_at.filter(|exp| now_ns >= *exp) {
        let late = u64::try_from(now_ns - exp).unwrap_or(u64::MAX);
        failure = Some(format!(
            "token is expired by {}",
            crate::gotime::duration_string(Duration::from_nanos(late))
        ));
    }
    if claims.issued_at.is_some_and(|iat| now_ns < iat) {
        failure = Some("token used before issued".into());
    }
    if claims.not_before.is_some_and(|nbf| now_ns < nbf) {
        failure = Some("token is not valid yet".into());
    }
    failure
}

fn system_time_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// jwt-go's `verifyAud` with `required`: some entry equals our ID, and
/// not every entry is empty.
fn audience_matches(audience: &[String], node_id: &str) -> bool {
    audience.iter().any(|a| a == node_id) && audience.iter().any(|a| !a.is_empty())
}

/// Decodes the claims as Go's `json.Decoder` fills `RegisteredClaims`:
/// the first JSON value only, keys matched without regard to case, the
/// last one wins, unknown keys ignored, `null` leaves a claim unset.
fn parse_claims(bytes: &[u8]) -> Result<Claims, String> {
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let value = match values.next() {
        Some(Ok(v)) => v,
        Some(Err(e)) => return Err(json_syntax(&e)),
        None => return Err("EOF".into()),
    };
    let obj: Map<String, Value> = match value {
        Value::Object(obj) => obj,
        Value::Null => return Ok(Claims::default()),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type jwt.RegisteredClaims",
                json_kind(&other)
            ));
        }
    };
    let mut claims = Claims::default();
    for (key, value) in &obj {
        let name = key.to_lowercase();
        match name.as_str() {
            "aud" => claims.audience = audience(value)?,
            "exp" => claims.expires_at = numeric_date(value)?,
            "nbf" => claims.not_before = numeric_date(value)?,
            "iat" => claims.issued_at = numeric_date(value)?,
            "iss" | "sub" | "jti" => match value {
                Value::String(_) | Value::Null => {}
                other => {
                    return Err(format!(
                        "json: cannot unmarshal {} into Go struct field RegisteredClaims.{name} of type string",
                        json_kind(other)
                    ));
                }
            },
            _ => {}
        }
    }
    Ok(claims)
}

/// `ClaimStrings`: one string or an array of strings.
fn audience(value: &Value) -> Result<Vec<String>, String> {
    let unsupported = |v: &Value| format!("json: unsupported type: {}", go_type(v));
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| unsupported(v)))
            .collect(),
        other => Err(unsupported(other)),
    }
}

/// `NumericDate`: a number of seconds (a numeric string also passes Go's
/// `json.Number`), cut to whole seconds; nanoseconds since the epoch.
fn numeric_date(value: &Value) -> Result<Option<i128>, String> {
    let seconds = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let n: Option<serde_json::Number> = serde_json::from_str(s).ok();
            match n {
                Some(n) => n.as_f64(),
                None => {
                    return Err(format!(
                        "could not parse NumericData: json: invalid number literal, trying to unmarshal {:?} into Number",
                        format!("{s:?}")
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "could not parse NumericData: json: cannot unmarshal {} into Go value of type json.Number",
                json_kind(other)
            ));
        }
    };
    let seconds = seconds.filter(|f| f.is_finite()).ok_or_else(|| {
        "could not convert json number value to float: value out of range".to_string()
    })?;
    Ok(Some(seconds.floor() as i128 * 1_000_000_000))
}

/// How Go's `UnmarshalTypeError` names a JSON value.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type `interface{}` decoding gives a JSON value.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// A JSON syntax error. Go's wording differs per case; ours says where.
fn json_syntax(e: &serde_json::Error) -> String {
    format!("invalid JSON: {e}")
}

/// Base64url without padding, as Go's `base64.RawURLEncoding`: decoding
/// skips CR and LF and accepts non-zero trailing bits; `=` is invalid.
mod base64url {
    use crate::base64::{Form, URL as ALPHABET};

    pub fn encode(bytes: &[u8]) -> String {
        crate::base64::encode(bytes, Form::UrlRaw)
    }

    fn value(c: u8) -> Option<u32> {
        ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
    }

    /// The bytes, or Go's `illegal base64 data at input byte N`.
    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let illegal = |at: usize| format!("illegal base64 data at input byte {at}");
        let mut out = Vec::with_capacity(text.len() * 3 / 4);
        let (mut acc, mut bits, mut count, mut last) = (0u32, 0u32, 0usize, 0usize);
        for (i, &c) in text.as_bytes().iter().enumerate() {
            if c == b'\r' || c == b'\n' {
                continue;
            }
            let v = value(c).ok_or_else(|| illegal(i))?;
            acc = (acc << 6) | v;
            bits += 6;
            count += 1;
            last = i;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        if count % 4 == 1 {
            return Err(illegal(last));
        }
        Ok(out)
    }
}

/// `work-signing`: the private key file and how long a token lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_file: PathBuf,
    pub lifetime: Duration,
}

impl Signer {
    /// A token for `audience`, valid for the lifetime from `now`; the key
    /// file is read again.
    pub fn sign(&self, audience: &str, now: SystemTime) -> Result<String, SignError> {
        let key = load_private(&self.key_file).map_err(SignError::KeyFile)?;
        sign_token(&key, audience, now + self.lifetime)
    }
}

/// `work-verification`: the public key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub key_file: PathBuf,
}

impl Verifier {
    /// Checks `token` for this node; the key file is read again.
    pub fn verify(&self, token: &str, node_id: &str, now: SystemTime) -> Result<(), VerifyError> {
        let key = load_public(&self.key_file).map_err(VerifyError::KeyFile)?;
        verify_token(token, &key, node_id, now)
    }
}

fn load_private(path: &Path) -> Result<RsaPrivateKey, String> {
    pem::load_private_key(path)
        .map(|k| k.rsa().clone())
        .map_err(|e| e.to_string())
}

fn load_public(path: &Path) -> Result<RsaPublicKey, String> {
    pem::load_public_key(path).map_err(|e| e.to_string())
}

/// The node's signing and verification keys, either of which may be
/// absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub signer: Option<Signer>,
    pub verifier: Option<Verifier>,
}

impl Keys {
    /// The keys the config names, each file checked once at startup: Go's
    /// `<file> does not exist`, or why the key in it is unusable (Go would
    /// only find out at the first submit).
    pub fn load(
        signing: Option<(&Path, Option<Duration>)>,
        verification: Option<&Path>,
    ) -> Result<Keys, String> {
        let exists = |what: &str, path: &Path| {
            if path.exists() {
                Ok(())
            } else {
                Err(format!("{what}: {} does not exist", path.display()))
            }
        };
        let signer = match signing {
            None => None,
            Some((path, lifetime)) => {
                exists("work-signing", path)?;
                load_private(path).map_err(|e| format!("work-signing: {SIGNING_KEY_FILE}{e}"))?;
                Some(Signer {
                    key_file: path.to_path_buf(),
                    lifetime: lifetime.unwrap_or(DEFAULT_LIFETIME),
                })
            }
        };
        let verifier = match verification {
            None => None,
            Some(path) => {
                exists("work-verification", path)?;
                load_public(path)
                    .map_err(|e| format!("work-verification: {VERIFYING_KEY_FILE}{e}"))?;
                Some(Verifier {
                    key_file: path.to_path_buf(),
                })
            }
        };
        Ok(Keys { signer, verifier })
    }

    /// A token for a request to `node`.
    pub fn sign(&self, node: &str, now: SystemTime) -> Result<String, SignError> {
        self.signer
            .as_ref()
            .ok_or(SignError::NoKey)?
            .sign(node, now)
    }

    /// Go's `processSignature`: `expected` says whether the work type (or
    /// the remote unit) wants signed requests; Unix-socket callers are
    /// never checked.
    pub fn check(
        &self,
        expected: bool,
        signature: &str,
        from_unix: bool,
        node_id: &str,
        now: SystemTime,
    ) -> Result<(), VerifyError> {
        if !expected {
            return match signature {
                "" => Ok(()),
                _ => Err(VerifyError::NotExpected),
            };
        }
        if from_unix {
            return Ok(());
        }
        if signature.is_empty() {
            return Err(VerifyError::Empty);
        }
        self.verifier
            .as_ref()
            .ok_or(VerifyError::NoKey)?
            .verify(signature, node_id, now)
    }
}

#[cfg(test)]
mod tests;
