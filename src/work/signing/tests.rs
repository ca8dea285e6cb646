use std::sync::OnceLock;

use rsa::rand_core::OsRng;

use super::*;

/// Two keys, made once: ours and a stranger's.
fn keys() -> &'static (RsaPrivateKey, RsaPrivateKey) {
    static KEYS: OnceLock<(RsaPrivateKey, RsaPrivateKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            RsaPrivateKey::new(&mut OsRng, 1024).unwrap(),
            RsaPrivateKey::new(&mut OsRng, 1024).unwrap(),
        )
    })
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn public() -> RsaPublicKey {
    keys().0.to_public_key()
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_string).collect()
}

fn text(segment: &str) -> String {
    String::from_utf8(base64url::decode(segment).unwrap()).unwrap()
}

/// A token with our header and `claims`, signed by `key` with RS512.
fn forge(key: &RsaPrivateKey, header: &str, claims: &str) -> String {
    let input = format!(
        "{}.{}",
        base64url::encode(header.as_bytes()),
        base64url::encode(claims.as_bytes())
    );
    let sig = key
        .sign(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(input.as_bytes()),
        )
        .unwrap();
    format!("{input}.{}", base64url::encode(&sig))
}

#[test]
fn token_bytes_are_what_jwt_go_writes() {
    let token = sign_token(&keys().0, "exec", at(1_700_000_000)).unwrap();
    let s = segments(&token);
    assert_eq!(s.len(), 3);
    // base64url of {"alg":"RS512","typ":"JWT"}, the header every Go token has.
    assert_eq!(s[0], "eyJhbGciOiJSUzUxMiIsInR5cCI6IkpXVCJ9");
    assert_eq!(text(&s[1]), r#"{"aud":["exec"],"exp":1700000000}"#);
    assert_eq!(s[1], "eyJhdWQiOlsiZXhlYyJdLCJleHAiOjE3MDAwMDAwMDB9");
    assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
    // A 1024-bit key gives a 128-byte signature: 171 characters unpadded.
    assert_eq!(s[2].len(), 171);
    // PKCS#1 v1.5 is deterministic.
    assert_eq!(
        sign_token(&keys().0, "exec", at(1_700_000_000)).unwrap(),
        token
    );
    // Sub-second expiry times are cut to the second.
    let later = at(1_700_000_000) + Duration::from_millis(999);
    assert_eq!(sign_token(&keys().0, "exec", later).unwrap(), token);
}

#[test]
fn a_fresh_token_verifies_for_its_node_only() {
    let token = sign_token(&keys().0, "exec", at(1000)).unwrap();
    assert_eq!(verify_token(&token, &public(), "exec", at(999)), Ok(()));
    assert_eq!(
        verify_token(&token, &public(), "other", at(999)),
        Err(VerifyError::Audience)
    );
    assert_eq!(
        VerifyError::Audience.to_string(),
        "token audience did not match node ID"
    );
}

#[test]
fn expiry_is_exclusive_and_says_by_how_much() {
    let token = sign_token(&keys().0, "exec", at(1000)).unwrap();
    let err = |now| {
        verify_token(&token, &public(), "exec", now)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(at(1000)),
        "could not verify signature: token is expired by 0s"
    );
    assert_eq!(
        err(at(1065) + Duration::from_millis(250)),
        "could not verify signature: token is expired by 1m5.25s"
    );
}

#[test]
fn another_key_or_any_changed_byte_is_refused() {
    let stranger = sign_token(&keys().1, "exec", at(1000)).unwrap();
    let refused = "could not verify signature: crypto/rsa: verification error";
    assert_eq!(
        verify_token(&stranger, &public(), "exec", at(1))
            .unwrap_err()
            .to_string(),
        refused
    );
    let token = sign_token(&keys().0, "exec", at(1000)).unwrap();
    // Claims rewritten for another node, signature kept.
    let s = segments(&token);
    let retargeted = format!(
        "{}.{}.{}",
        s[0],
        base64url::encode(br#"{"aud":["evil"],"exp":1000}"#),
        s[2]
    );
    assert_eq!(
        verify_token(&retargeted, &public(), "evil", at(1))
            .unwrap_err()
            .to_string(),
        refused
    );
    // Every single-character change is refused, but in the last one,
    // whose two low bits carry nothing (Go ignores them too).
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for i in 0..token.len() - 1 {
        let mut bytes = token.clone().into_bytes();
        if bytes[i] == b'.' {
            continue;
        }
        bytes[i] = if bytes[i] == alphabet[0] {
            alphabet[1]
        } else {
            alphabet[0]
        };
        let tampered = String::from_utf8(bytes).unwrap();
        assert!(
            verify_token(&tampered, &public(), "exec", at(1)).is_err(),
            "changed byte {i} still verifies"
        );
    }
}

#[test]
fn a_bad_signature_is_named_over_an_expiry() {
    let stranger = sign_token(&keys().1, "exec", at(1000)).unwrap();
    assert_eq!(
        verify_token(&stranger, &public(), "exec", at(5000)),
        Err(VerifyError::Invalid(RSA_VERIFICATION.into()))
    );
}

#[test]
fn malformed_tokens_get_jwt_go_texts() {
    let err = |t: &str| match verify_token(t, &public(), "exec", at(1)) {
        Err(VerifyError::Invalid(e)) => e,
        other => panic!("{t}: {other:?}"),
    };
    assert_eq!(err("abc"), "token contains an invalid number of segments");
    assert_eq!(
        err("a.b.c.d"),
        "token contains an invalid number of segments"
    );
    assert_eq!(err("e=.e.e"), "illegal base64 data at input byte 1");
    assert_eq!(
        err("Bearer x.y.z"),
        "tokenstring should not contain 'bearer '"
    );
    let header = |h: &str| format!("{}.e30.", base64url::encode(h.as_bytes()));
    assert_eq!(err(&header("{}")), "signing method (alg) is unspecified.");
    assert_eq!(
        err(&header(r#"{"alg":"XX1"}"#)),
        "signing method (alg) is unavailable."
    );
    assert_eq!(
        err(&header(r#"{"alg":"none"}"#)),
        "'none' signature type is not allowed"
    );
    assert_eq!(err(&header(r#"{"alg":"HS256"}"#)), "key is of invalid type");
    assert_eq!(
        err(&header("[1]")),
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    );
    let claims = |c: &str| forge(&keys().0, HEADER, c);
    assert_eq!(
        err(&claims(r#"{"aud":7}"#)),
        "json: unsupported type: float64"
    );
    assert_eq!(
        err(&claims(r#"{"exp":true}"#)),
        "could not parse NumericData: json: cannot unmarshal bool into Go value of type json.Number"
    );
}

#[test]
fn claims_are_read_as_go_reads_them() {
    let ok = |c: &str, now| verify_token(&forge(&keys().0, HEADER, c), &public(), "exec", now);
    // A single audience string, keys in any case, unknown keys, no exp.
    assert_eq!(ok(r#"{"AUD":"exec","foo":1}"#, at(1)), Ok(()));
    // Numeric strings pass json.Number; fractions are cut.
    assert_eq!(ok(r#"{"aud":["x","exec"],"exp":"10.9"}"#, at(9)), Ok(()));
    assert!(ok(r#"{"aud":["exec"],"exp":10.9}"#, at(10)).is_err());
    // No audience, or only empty ones, never matches.
    assert_eq!(ok(r#"{"exp":10}"#, at(1)), Err(VerifyError::Audience));
    assert_eq!(ok(r#"{"aud":[""]}"#, at(1)), Err(VerifyError::Audience));
    // nbf and iat, and which message wins.
    let early = |c: &str| ok(c, at(5)).unwrap_err().to_string();
    assert_eq!(
        early(r#"{"aud":"exec","nbf":6}"#),
        "could not verify signature: token is not valid yet"
    );
    assert_eq!(
        early(r#"{"aud":"exec","iat":6,"exp":1}"#),
        "could not verify signature: token used before issued"
    );
    assert_eq!(ok(r#"{"aud":"exec","iat":5,"nbf":5}"#, at(5)), Ok(()));
}

#[test]
fn other_rsa_algorithms_verify_too() {
    let input = |alg: &str| {
        format!(
            "{}.{}",
            base64url::encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes()),
            base64url::encode(br#"{"aud":["exec"]}"#)
        )
    };
    let rs256 = input("RS256");
    let sig = keys()
        .0
        .sign(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(rs256.as_bytes()),
        )
        .unwrap();
    let token = format!("{rs256}.{}", base64url::encode(&sig));
    assert_eq!(verify_token(&token, &public(), "exec", at(1)), Ok(()));
    let ps256 = input("PS256");
    let sig = keys()
        .0
        .sign_with_rng(
            &mut OsRng,
            Pss::new::<Sha256>(),
            &Sha256::digest(ps256.as_bytes()),
        )
        .unwrap();
    let token = format!("{ps256}.{}", base64url::encode(&sig));
    assert_eq!(verify_token(&token, &public(), "exec", at(1)), Ok(()));
}

#[test]
fn base64url_round_trips_and_follows_go() {
    for n in 0..20u8 {
        let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
        let text = base64url::encode(&bytes);
        assert_eq!(base64url::decode(&text).unwrap(), bytes, "{text}");
    }
    assert_eq!(base64url::encode(b"\xfb\xff"), "-_8");
    assert_eq!(base64url::decode("-_8\r\n").unwrap(), b"\xfb\xff");
    assert_eq!(
        base64url::decode("abcde").unwrap_err(),
        "illegal base64 data at input byte 4"
    );
    assert!(base64url::decode("ab+/").is_err());
}

#[test]
fn process_signature_rules() {
    let keys = Keys::default();
    let check = |expected, sig: &str, unix| keys.check(expected, sig, unix, "n", at(1));
    assert_eq!(check(false, "", false), Ok(()));
    assert_eq!(check(false, "x", true), Err(VerifyError::NotExpected));
    assert_eq!(check(true, "", true), Ok(()));
    assert_eq!(check(true, "anything", true), Ok(()));
    assert_eq!(check(true, "", false), Err(VerifyError::Empty));
    assert_eq!(check(true, "x", false), Err(VerifyError::NoKey));
    assert_eq!(
        VerifyError::Empty.to_string(),
        "could not verify signature: signature is empty"
    );
    assert_eq!(
        VerifyError::NoKey.to_string(),
        "could not verify signature: verifying key not specified"
    );
    assert_eq!(
        keys.sign("n", at(1)).unwrap_err().to_string(),
        "cannot sign work: signing key is empty"
    );
}

#[test]
fn errors_read_back_from_their_text() {
    for e in [
        VerifyError::NotExpected,
        VerifyError::Empty,
        VerifyError::NoKey,
        VerifyError::KeyFile("open /k: no such file or directory".into()),
        VerifyError::Invalid("token is expired by 1s".into()),
        VerifyError::Audience,
    ] {
        assert_eq!(VerifyError::from_text(&e.to_string()), Some(e));
    }
    for e in [SignError::NoKey, SignError::KeyFile("x".into())] {
        assert_eq!(SignError::from_text(&e.to_string()), Some(e));
    }
    assert_eq!(VerifyError::from_text("unknown work type x"), None);
}

#[test]
fn key_files_in_every_format_go_reads() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let dir = std::env::temp_dir().join(format!("receptor-signing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, _) = keys();
    let pkcs1 = dir.join("pkcs1.pem");
    let pkcs8 = dir.join("pkcs8.pem");
    let public = dir.join("public.pem");
    std::fs::write(&pkcs1, key.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    std::fs::write(&pkcs8, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(&public, &public_pem).unwrap();
    let verify = Keys::load(None, Some(&public)).unwrap();
    for private in [&pkcs1, &pkcs8] {
        let keys = Keys::load(Some((private, None)), None).unwrap();
        assert_eq!(keys.signer.as_ref().unwrap().lifetime, DEFAULT_LIFETIME);
        let token = keys.sign("exec", SystemTime::now()).unwrap();
        assert_eq!(
            verify.check(true, &token, false, "exec", SystemTime::now()),
            Ok(())
        );
    }
    // What Go says about files it cannot use.
    let missing = dir.join("missing.pem");
    assert_eq!(
        Keys::load(None, Some(&missing)).unwrap_err(),
        format!("work-verification: {} does not exist", missing.display())
    );
    let two = dir.join("two.pem");
    std::fs::write(&two, format!("{public_pem}{public_pem}")).unwrap();
    assert!(
        Keys::load(None, Some(&two))
            .unwrap_err()
            .ends_with("public key file should contain exactly one item")
    );
    assert!(
        Keys::load(None, Some(&pkcs1))
            .unwrap_err()
            .ends_with("public key file does not contain public key data")
    );
    assert!(
        Keys::load(Some((&public, None)), None)
            .unwrap_err()
            .ends_with("private key file does not contain private key data")
    );
    // A key replaced on disk is read again at the next use.
    let signer = Signer {
        key_file: dir.join("later.pem"),
        lifetime: DEFAULT_LIFETIME,
    };
    assert!(matches!(
        signer.sign("exec", SystemTime::now()),
        Err(SignError::KeyFile(e)) if e.contains("no such file")
    ));
    std::fs::copy(&pkcs8, &signer.key_file).unwrap();
    assert!(signer.sign("exec", SystemTime::now()).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every prefix of a valid token, and every prefix with junk after it, is
/// refused without a panic (the fuzz target `jwt` goes further).
#[test]
fn every_prefix_is_refused_cleanly() {
    let token = sign_token(&keys().0, "exec", at(1000)).unwrap();
    for i in 0..token.len() {
        assert!(
            verify_token(&token[..i], &public(), "exec", at(1)).is_err(),
            "{i}"
        );
        let junk = format!("{}\u{e9}.=.", &token[..i]);
        assert!(
            verify_token(&junk, &public(), "exec", at(1)).is_err(),
            "{i}"
        );
    }
    assert_eq!(verify_token(&token, &public(), "exec", at(1)), Ok(()));
}
