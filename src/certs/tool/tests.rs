use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::certs::san;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("receptor-certs-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()
}

fn run_with(cfg: &CertToolCfg, answer: &str) -> (Result<(), CertError>, String) {
    let mut out = Vec::new();
    let r = run(cfg, now(), &mut answer.as_bytes(), &mut out);
    (r, String::from_utf8(out).unwrap())
}

fn ok(cfg: &CertToolCfg) {
    let (r, _) = run_with(cfg, "");
    r.unwrap();
}

fn init(dir: &TempDir, bits: i64) -> CertToolCfg {
    CertToolCfg::Init(CertInitCfg {
        common_name: "Test CA".into(),
        bits,
        not_before: None,
        not_after: None,
        out_cert: dir.path("ca.crt"),
        out_key: dir.path("ca.key"),
    })
}

fn makereq(dir: &TempDir, out_key: Option<&str>, in_key: Option<&str>, bits: i64) -> CertToolCfg {
    CertToolCfg::MakeReq(CertMakeReqCfg {
        common_name: "foo".into(),
        bits,
        dns_names: vec!["foo.example.com".into()],
        ip_addresses: vec!["127.0.0.1".into(), "::1".into()],
        node_ids: vec!["foo".into()],
        out_req: dir.path("foo.csr"),
        in_key: in_key.map(|k| dir.path(k)),
        out_key: out_key.map(|k| dir.path(k)),
    })
}

fn signreq(dir: &TempDir, verify: bool) -> CertToolCfg {
    CertToolCfg::SignReq(CertSignReqCfg {
        req: dir.path("foo.csr"),
        ca_cert: dir.path("ca.crt"),
        ca_key: dir.path("ca.key"),
        not_before: None,
        not_after: None,
        out_cert: dir.path("foo.crt"),
        verify,
    })
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn init_makes_a_ten_year_ca() {
    let dir = TempDir::new();
    std::fs::write(dir.path("ca.key"), "old").unwrap();
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&init(&dir, 1024));
    assert_eq!(mode(&dir.path("ca.crt")), 0o600);
    assert_eq!(mode(&dir.path("ca.key")), 0o600);
    assert!(text(&dir.path("ca.key")).starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    let der = pem::load_certificate(&dir.path("ca.crt")).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=Test CA");
    assert!(cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_cert_sign() && !ku.key_encipherment());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert_eq!(
        cert.validity().not_before.timestamp(),
        now().unix_timestamp()
    );
    let ten_years = add_years(now(), 10).unix_timestamp();
    assert_eq!(cert.validity().not_after.timestamp(), ten_years);
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );
}

#[test]
fn serials_do_not_collide() {
    let dir = TempDir::new();
    ok(&init(&dir, 1024));
    let first = pem::load_certificate(&dir.path("ca.crt")).unwrap();
    ok(&init(&dir, 1024));
    let second = pem::load_certificate(&dir.path("ca.crt")).unwrap();
    let serial = |der: &[u8]| {
        X509Certificate::from_der(der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&first), serial(&second));
}

#[test]
fn makereq_key_rules_use_gos_words() {
    let dir = TempDir::new();
    let err = |cfg: CertToolCfg| run_with(&cfg, "").0.unwrap_err().to_string();
    assert_eq!(
        err(makereq(&dir, None, None, 0)),
        "must provide either InKey or OutKey"
    );
    assert_eq!(
        err(makereq(&dir, Some("k"), Some("k"), 0)),
        "cannot use both InKey and OutKey"
    );
    assert_eq!(
        err(makereq(&dir, None, Some("k"), 2048)),
        "cannot specify key bits when reading an already-existing key"
    );
    assert_eq!(
        err(makereq(&dir, Some("k"), None, 0)),
        "must specify key bits when creating a new key"
    );
    assert_eq!(
        err(makereq(&dir, None, Some("none"), 0)),
        format!(
            "open {}: no such file or directory",
            dir.path("none").display()
        )
    );
    ok(&init(&dir, 1024));
    assert_eq!(
        err(makereq(&dir, None, Some("ca.crt"), 0)),
        format!("no private keys in file {}", dir.path("ca.crt").display())
    );
    let mut bad_ip = makereq(&dir, Some("k"), None, 1024);
    if let CertToolCfg::MakeReq(c) = &mut bad_ip {
        c.ip_addresses.push("bad".into());
    }
    assert_eq!(err(bad_ip), "invalid IP address: bad");
}

#[test]
fn makereq_with_new_and_existing_key() {
    let dir = TempDir::new();
    ok(&makereq(&dir, Some("foo.key"), None, 1024));
    assert_eq!(mode(&dir.path("foo.csr")), 0o600);
    assert_eq!(mode(&dir.path("foo.key")), 0o600);
    let first = ca::summarize_request(&pem::load_request(&dir.path("foo.csr")).unwrap()).unwrap();
    assert_eq!(first.key_algorithm, "RSA (1024 bits)");
    ok(&makereq(&dir, None, Some("foo.key"), 0));
    let again = ca::summarize_request(&pem::load_request(&dir.path("foo.csr")).unwrap()).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        again.describe(),
        "Requested certificate:\n  Subject: CN=foo\n  Encryption Algorithm: RSA (1024 bits)\n  \
         Signature Algorithm: SHA256-RSA\n  Names:\n    DNS Name: foo.example.com\n    \
         IP Address: 127.0.0.1\n    IP Address: ::1\n    Receptor Node ID: foo\n"
    );
}

fn ca_and_request(dir: &TempDir) {
    ok(&init(dir, 1024));
    ok(&makereq(dir, Some("foo.key"), None, 1024));
}

#[test]
fn signreq_copies_the_san_and_signs_for_a_year() {
    let dir = TempDir::new();
    ca_and_request(&dir);
    ok(&signreq(&dir, true));
    assert_eq!(mode(&dir.path("foo.crt")), 0o600);
    let der = pem::load_certificate(&dir.path("foo.crt")).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.issuer().to_string(), "CN=Test CA");
    assert_eq!(cert.subject().to_string(), "CN=foo");
    assert!(!cert.is_ca());
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert_eq!(
        cert.validity().not_after.timestamp(),
        add_years(now(), 1).unix_timestamp()
    );
    assert_eq!(san::cert_node_ids(&der).unwrap(), ["foo"]);
    let cert_san = cert
        .extensions()
        .iter()
        .find(|e| san::is_san(e))
        .unwrap()
        .value;
    let req_der = pem::load_request(&dir.path("foo.csr")).unwrap();
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&req_der).unwrap();
    let req_san = san::requested_extensions(&req)
        .into_iter()
        .find(|e| san::is_san(e))
        .unwrap()
        .value;
    assert_eq!(cert_san, req_san);
}

#[test]
fn signreq_prompt_answers() {
    let dir = TempDir::new();
    ca_and_request(&dir);
    for (answer, good) in [
        ("yes\n", true),
        ("Y", true),
        ("no\n", false),
        ("\n", false),
        ("yes please\n", false),
    ] {
        let _ = std::fs::remove_file(dir.path("foo.crt"));
        let (r, out) = run_with(&signreq(&dir, false), answer);
        assert!(
            out.starts_with("Requested certificate:\n  Subject: CN=foo\n"),
            "{out}"
        );
        assert!(out.ends_with("    Receptor Node ID: foo\nSign certificate (yes/no)? "));
        assert_eq!(r.is_ok(), good, "{answer:?}");
        assert_eq!(dir.path("foo.crt").exists(), good);
        if !good {
            assert_eq!(r.unwrap_err().to_string(), "user declined");
        }
    }
    let (r, _) = run_with(&signreq(&dir, false), "");
    assert!(matches!(r, Err(CertError::NoAnswer)));
}

#[test]
fn signreq_refuses_bad_inputs() {
    let dir = TempDir::new();
    ca_and_request(&dir);
    let err = |cfg: CertToolCfg| run_with(&cfg, "").0.unwrap_err().to_string();
    let mut swapped = signreq(&dir, true);
    if let CertToolCfg::SignReq(c) = &mut swapped {
        std::mem::swap(&mut c.req, &mut c.ca_cert);
    }
    assert_eq!(
        err(swapped),
        "certificate file does not contain certificate data"
    );
    let mut key_as_cert = signreq(&dir, true);
    if let CertToolCfg::SignReq(c) = &mut key_as_cert {
        c.ca_key = c.ca_cert.clone();
    }
    assert_eq!(
        err(key_as_cert),
        "private key file does not contain private key data"
    );
    let mut other_key = signreq(&dir, true);
    if let CertToolCfg::SignReq(c) = &mut other_key {
        c.ca_key = dir.path("foo.key");
    }
    assert_eq!(
        err(other_key),
        "CA private key does not match the CA certificate"
    );
    let nameless = CertToolCfg::MakeReq(CertMakeReqCfg {
        common_name: "n".into(),
        bits: 0,
        dns_names: vec![],
        ip_addresses: vec![],
        node_ids: vec![],
        out_req: dir.path("foo.csr"),
        in_key: Some(dir.path("foo.key")),
        out_key: None,
    });
    ok(&nameless);
    assert_eq!(
        err(signreq(&dir, true)),
        "cannot sign: no names found in certificate"
    );
}

#[test]
fn validity_dates() {
    let v = validity(
        &Some("2020-01-01T00:00:00Z".into()),
        &Some("2021-01-01T00:00:00+02:00".into()),
        now(),
        1,
    )
    .unwrap();
    assert_eq!(v.not_before.unix_timestamp(), 1_577_836_800);
    assert_eq!(v.not_after.unix_timestamp(), 1_609_452_000);
    for bad in ["2020-13-01T00:00:00Z", "2020-02-30T00:00:00Z", "2020-01-01"] {
        assert!(
            validity(&None, &Some(bad.into()), now(), 1).is_err(),
            "{bad}"
        );
    }
    let e = validity(&Some("bad".into()), &None, now(), 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        "notbefore: \"bad\" is not an RFC3339 date/time (like 2006-01-02T15:04:05Z)"
    );
    let leap = OffsetDateTime::from_unix_timestamp(951_782_400).unwrap(); // 2000-02-29
    let later = add_years(leap, 1);
    assert_eq!(
        (later.year(), u8::from(later.month()), later.day()),
        (2001, 3, 1)
    );
}
