//! Real handshakes between rustls clients and servers in memory, with
//! certificates made by the cert tools' code.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::{CertificateError, Connection, Error, PeerIncompatible, PeerMisbehaved};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::*;
use crate::certs::ca::{self, Validity};
use crate::certs::{RsaKey, SanNames};

/// One CA with leaves for nodes `foo` and `bar`, a leaf with no node ID,
/// an expired leaf, and a second CA with a leaf of its own.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn der(&self, name: &str) -> Vec<u8> {
        crate::certs::pem::load_certificate(&self.path(&format!("{name}.crt"))).unwrap()
    }
}

fn years(from: i32, to: i32) -> Validity {
    let at = |y: i32| OffsetDateTime::now_utc().replace_year(y).unwrap();
    Validity {
        not_before: at(from),
        not_after: at(to),
    }
}

fn current() -> Validity {
    let now = OffsetDateTime::now_utc();
    Validity {
        not_before: now - std::time::Duration::from_secs(3600),
        not_after: now + std::time::Duration::from_secs(86_400),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn leaf(
    dir: &Path,
    name: &str,
    names: SanNames,
    ca_name: &str,
    ca_key: &RsaKey,
    key: &RsaKey,
    v: Validity,
) {
    let req = ca::make_request(name, &names, key).unwrap();
    let req_der =
        rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(req.as_bytes()).unwrap();
    let ca_der = crate::certs::pem::load_certificate(&dir.join(ca_name)).unwrap();
    let cert = ca::sign_request(req_der.as_ref(), &ca_der, ca_key, v).unwrap();
    write(dir, &format!("{name}.crt"), &cert);
}

fn node(id: &str) -> SanNames {
    SanNames {
        dns_names: vec![format!("{id}.example.com")],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        node_ids: vec![id.to_string()],
    }
}

/// A directory for this test process under the system temp dir. A static
/// fixture is never dropped, so each run first removes the directories of
/// runs whose process is gone.
fn fixture_dir() -> PathBuf {
    let base = std::env::temp_dir();
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name
            .strip_prefix("receptor-tls-")
            .is_some_and(|pid| !Path::new("/proc").join(pid).exists());
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("receptor-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = fixture_dir();
        let (ca_key, other_key, key) = (
            RsaKey::generate(2048).unwrap(),
            RsaKey::generate(2048).unwrap(),
            RsaKey::generate(2048).unwrap(),
        );
        write(
            &dir,
            "ca.crt",
            &ca::create_ca("CA", &ca_key, years(2020, 2040)).unwrap(),
        );
        write(&dir, "ca.key", &ca_key.to_pkcs1_pem().unwrap());
        write(
            &dir,
            "other.crt",
            &ca::create_ca("Other", &other_key, years(2020, 2040)).unwrap(),
        );
        write(&dir, "leaf.key", &key.to_pkcs1_pem().unwrap());
        leaf(&dir, "foo", node("foo"), "ca.crt", &ca_key, &key, current());
        leaf(&dir, "bar", node("bar"), "ca.crt", &ca_key, &key, current());
        leaf(
            &dir,
            "plain",
            SanNames {
                dns_names: vec!["plain.example.com".into()],
                ..SanNames::default()
            },
            "ca.crt",
            &ca_key,
            &key,
            current(),
        );
        leaf(
            &dir,
            "expired",
            node("expired"),
            "ca.crt",
            &ca_key,
            &key,
            years(2000, 2001),
        );
        leaf(
            &dir,
            "stranger",
            node("foo"),
            "other.crt",
            &other_key,
            &key,
            current(),
        );
        Pki { dir }
    })
}

fn server_cfg(cert: &str) -> TlsServerCfg {
    TlsServerCfg {
        name: "srv".into(),
        cert: pki().path(&format!("{cert}.crt")),
        key: pki().path("leaf.key"),
        require_client_cert: false,
        client_cas: None,
        pinned_client_cert: vec![],
        skip_receptor_names_check: true,
        min_tls13: false,
    }
}

fn client_cfg(cert: Option<&str>) -> TlsClientCfg {
    TlsClientCfg {
        name: "cli".into(),
        cert: cert.map(|c| pki().path(&format!("{c}.crt"))),
        key: cert.map(|_| pki().path("leaf.key")),
        root_cas: Some(pki().path("ca.crt")),
        insecure_skip_verify: false,
        pinned_server_cert: vec![],
        skip_receptor_names_check: true,
        min_tls13: false,
    }
}

fn server(cfg: &TlsServerCfg) -> ServerConfig {
    ServerTls::load(cfg, "foo").unwrap().config().unwrap()
}

fn to_node(cfg: &TlsClientCfg, target: &str) -> (ClientConfig, ServerName<'static>) {
    ClientTls::load(cfg, "foo")
        .unwrap()
        .for_node(target)
        .unwrap()
}

/// Which side failed, and how.
#[derive(Debug)]
enum Failed {
    Client(Error),
    Server(Error),
}

fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    if !buf.is_empty() {
        to.read_tls(&mut &buf[..]).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake to completion or to the first error.
fn handshake(
    client: (ClientConfig, ServerName<'static>),
    server: ServerConfig,
) -> Result<(Connection, Connection), Failed> {
    let mut c =
        Connection::Client(rustls::ClientConnection::new(Arc::new(client.0), client.1).unwrap());
    let mut s = Connection::Server(rustls::ServerConnection::new(Arc::new(server)).unwrap());
    for _ in 0..10 {
        pump(&mut c, &mut s).map_err(Failed::Server)?;
        pump(&mut s, &mut c).map_err(Failed::Client)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish in 10 rounds");
}

fn client_error(r: Result<(Connection, Connection), Failed>) -> Error {
    match r {
        Err(Failed::Client(e)) => e,
        other => panic!("expected a client-side failure, got {other:?}"),
    }
}

fn server_error(r: Result<(Connection, Connection), Failed>) -> Error {
    match r {
        Err(Failed::Server(e)) => e,
        other => panic!("expected a server-side failure, got {other:?}"),
    }
}

fn other_text(e: &Error) -> String {
    assert!(
        matches!(e, Error::InvalidCertificate(CertificateError::Other(_))),
        "expected a Receptor certificate error, got {e:?}"
    );
    error_text(e)
}

#[test]
fn mesh_dial_good_chain_and_node_id() {
    let (c, s) = handshake(
        to_node(&client_cfg(None), "foo"),
        server(&server_cfg("foo")),
    )
    .unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(peer_node_ids(c.peer_certificates()).unwrap(), ["foo"]);
    assert_eq!(
        peer_node_ids(s.peer_certificates()).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn mesh_dial_refuses_wrong_ca_and_expired() {
    let mut wrong_ca = client_cfg(None);
    wrong_ca.root_cas = Some(pki().path("other.crt"));
    let e = client_error(handshake(
        to_node(&wrong_ca, "foo"),
        server(&server_cfg("foo")),
    ));
    assert_eq!(
        e,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    let e = client_error(handshake(
        to_node(&client_cfg(None), "expired"),
        server(&server_cfg("expired")),
    ));
    assert!(
        matches!(
            e,
            Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{e:?}"
    );
}

#[test]
fn mesh_dial_checks_the_target_node_id() {
    let e = client_error(handshake(
        to_node(&client_cfg(None), "bar"),
        server(&server_cfg("foo")),
    ));
    assert_eq!(
        other_text(&e),
        "x509: certificate is valid for Receptor node ID foo, not bar"
    );
    let e = client_error(handshake(
        to_node(&client_cfg(None), "foo"),
        server(&server_cfg("plain")),
    ));
    assert_eq!(
        other_text(&e),
        "x509: certificate is not valid for any Receptor node IDs, but wanted to match foo"
    );
}

#[test]
fn backend_dial_verifies_the_host_name() {
    let tls = ClientTls::load(&client_cfg(None), "foo").unwrap();
    for host in ["foo.example.com", "127.0.0.1"] {
        assert!(
            handshake(tls.for_host(host).unwrap(), server(&server_cfg("foo"))).is_ok(),
            "{host}"
        );
    }
    let e = client_error(handshake(
        tls.for_host("bar.example.com").unwrap(),
        server(&server_cfg("foo")),
    ));
    assert!(
        matches!(
            e,
            Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        ),
        "{e:?}"
    );
}

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn server_pins_match_and_mismatch() {
    let mut pinned = client_cfg(None);
    pinned.pinned_server_cert = vec![sha256_hex(&pki().der("foo"))];
    assert!(handshake(to_node(&pinned, "foo"), server(&server_cfg("foo"))).is_ok());
    let tls = ClientTls::load(&pinned, "foo").unwrap();
    assert!(
        handshake(
            tls.for_host("foo.example.com").unwrap(),
            server(&server_cfg("foo"))
        )
        .is_ok()
    );
    let e = client_error(handshake(
        to_node(&pinned, "bar"),
        server(&server_cfg("bar")),
    ));
    assert_eq!(
        other_text(&e),
        "RVF failed: presented certificate does not match any pinned fingerprint"
    );
    let e = client_error(handshake(
        tls.for_host("bar.example.com").unwrap(),
        server(&server_cfg("bar")),
    ));
    assert_eq!(
        other_text(&e),
        "RVF failed: presented certificate does not match any pinned fingerprint"
    );
}

#[test]
fn insecure_skip_verify_accepts_anything() {
    let mut cfg = client_cfg(None);
    cfg.insecure_skip_verify = true;
    cfg.root_cas = Some(pki().path("other.crt"));
    cfg.pinned_server_cert = vec![sha256_hex(b"nothing")];
    assert!(handshake(to_node(&cfg, "nobody"), server(&server_cfg("expired"))).is_ok());
    let tls = ClientTls::load(&cfg, "foo").unwrap();
    assert!(
        handshake(
            tls.for_host("x.invalid").unwrap(),
            server(&server_cfg("plain"))
        )
        .is_ok()
    );
}

fn requiring(cas: &str) -> TlsServerCfg {
    TlsServerCfg {
        require_client_cert: true,
        client_cas: Some(pki().path(cas)),
        ..server_cfg("foo")
    }
}

#[test]
fn client_certificates_required_and_verified() {
    let (_, s) = handshake(
        to_node(&client_cfg(Some("bar")), "foo"),
        server(&requiring("ca.crt")),
    )
    .unwrap();
    assert_eq!(peer_node_ids(s.peer_certificates()).unwrap(), ["bar"]);
    let e = server_error(handshake(
        to_node(&client_cfg(None), "foo"),
        server(&requiring("ca.crt")),
    ));
    assert_eq!(e, Error::NoCertificatesPresented);
    // Go's quirk: clientcas without requireclientcert still refuses a
    // client with no certificate.
    let cas_only = TlsServerCfg {
        require_client_cert: false,
        ..requiring("ca.crt")
    };
    let e = server_error(handshake(
        to_node(&client_cfg(None), "foo"),
        server(&cas_only),
    ));
    assert_eq!(e, Error::NoCertificatesPresented);
    let e = server_error(handshake(
        to_node(&client_cfg(Some("stranger")), "foo"),
        server(&requiring("ca.crt")),
    ));
    assert_eq!(
        e,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn client_pins_and_mesh_listener_node_check() {
    let mut cfg = requiring("ca.crt");
    cfg.pinned_client_cert = vec![sha256_hex(&pki().der("bar"))];
    assert!(handshake(to_node(&client_cfg(Some("bar")), "foo"), server(&cfg)).is_ok());
    let e = server_error(handshake(
        to_node(&client_cfg(Some("foo")), "foo"),
        server(&cfg),
    ));
    assert_eq!(
        other_text(&e),
        "RVF failed: presented certificate does not match any pinned fingerprint"
    );
    let tls = ServerTls::load(&requiring("ca.crt"), "foo").unwrap();
    let dialer = || to_node(&client_cfg(Some("bar")), "foo");
    assert!(handshake(dialer(), tls.config_for_node("bar").unwrap()).is_ok());
    let e = server_error(handshake(dialer(), tls.config_for_node("baz").unwrap()));
    assert_eq!(
        other_text(&e),
        "x509: certificate is valid for Receptor node ID bar, not baz"
    );
}

/// A client that speaks only TLS 1.2 and checks nothing.
fn tls12_client() -> (ClientConfig, ServerName<'static>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verify::ServerVerifier::insecure(algs)))
        .with_no_client_auth();
    (cfg, sni_for_node("foo"))
}

#[test]
fn tls12_uses_gos_suites_and_mintls13_refuses_it() {
    let (c, _) = handshake(tls12_client(), server(&server_cfg("foo"))).unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    let suite = c.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(
        suite,
        rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    );
    let strict = TlsServerCfg {
        min_tls13: true,
        ..server_cfg("foo")
    };
    let e = server_error(handshake(tls12_client(), server(&strict)));
    assert_eq!(
        e,
        Error::PeerIncompatible(PeerIncompatible::Tls12NotOfferedOrEnabled)
    );
    let mut strict_client = client_cfg(None);
    strict_client.min_tls13 = true;
    let (c, _) = handshake(to_node(&strict_client, "foo"), server(&strict)).unwrap();
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

/// A server that can only agree on X25519.
fn x25519_only_server() -> ServerConfig {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let identity = ServerTls::load(&server_cfg("foo"), "foo").unwrap().identity;
    ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Identity(identity)))
}

#[test]
fn x25519_is_not_offered_except_with_mintls13() {
    let names: Vec<_> = provider(false).kx_groups.iter().map(|g| g.name()).collect();
    assert_eq!(
        names,
        [rustls::NamedGroup::secp384r1, rustls::NamedGroup::secp256r1]
    );
    let e = server_error(handshake(
        to_node(&client_cfg(None), "foo"),
        x25519_only_server(),
    ));
    assert_eq!(
        e,
        Error::PeerIncompatible(PeerIncompatible::NoKxGroupsInCommon)
    );
    let mut modern = client_cfg(None);
    modern.min_tls13 = true;
    assert!(handshake(to_node(&modern, "foo"), x25519_only_server()).is_ok());
}

/// Go dialers send the node ID as SNI; rustls refuses one that is not a
/// DNS name. Made by editing a real ClientHello for `nodeA` into `node!`.
#[test]
fn sni_that_is_not_a_dns_name_is_refused() {
    let (cfg, _) = to_node(&client_cfg(None), "nodeA");
    let mut c = rustls::ClientConnection::new(Arc::new(cfg), sni_for_node("nodeA")).unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    let at = hello.windows(5).position(|w| w == b"nodeA").unwrap();
    hello[at + 4] = b'!';
    let mut s = rustls::ServerConnection::new(Arc::new(server(&server_cfg("foo")))).unwrap();
    s.read_tls(&mut &hello[..]).unwrap();
    let e = s.process_new_packets().unwrap_err();
    assert_eq!(
        e,
        Error::PeerMisbehaved(PeerMisbehaved::ServerNameMustContainOneHostName)
    );
    assert!(matches!(sni_for_node("node 1"), ServerName::IpAddress(_)));
    assert!(matches!(sni_for_node("node_1"), ServerName::DnsName(_)));
}

fn load_server_err(cfg: TlsServerCfg) -> String {
    ServerTls::load(&cfg, "foo").unwrap_err().to_string()
}

#[test]
fn startup_checks_use_gos_words() {
    let checked = TlsServerCfg {
        skip_receptor_names_check: false,
        ..server_cfg("bar")
    };
    assert_eq!(
        load_server_err(checked),
        format!(
            "error preparing tls server config: nodeID=foo not found in certificate name(s); \
             names found=[bar]; cfg section=srv; server cert={}",
            pki().path("bar.crt").display()
        )
    );
    assert!(
        ServerTls::load(
            &TlsServerCfg {
                skip_receptor_names_check: false,
                ..server_cfg("foo")
            },
            "foo"
        )
        .is_ok()
    );
    let missing = TlsServerCfg {
        cert: "/nonexistent/x.crt".into(),
        ..server_cfg("foo")
    };
    assert_eq!(
        load_server_err(missing),
        "error preparing tls server config: open /nonexistent/x.crt: no such file or directory"
    );
    let mismatch = TlsServerCfg {
        key: pki().path("ca.key"),
        ..server_cfg("foo")
    };
    assert_eq!(
        load_server_err(mismatch),
        "error preparing tls server config: tls: private key does not match public key"
    );
    let swapped = TlsServerCfg {
        cert: pki().path("leaf.key"),
        ..server_cfg("foo")
    };
    assert!(load_server_err(swapped).contains("PEM inputs may have been switched"));
    let bad_pin = TlsServerCfg {
        pinned_client_cert: vec!["zz".into()],
        ..server_cfg("foo")
    };
    assert_eq!(
        load_server_err(bad_pin),
        "error preparing tls server config: error decoding fingerprints: error decoding fingerprint"
    );
    let no_cas = TlsServerCfg {
        client_cas: Some("/nonexistent/ca".into()),
        ..server_cfg("foo")
    };
    assert!(
        load_server_err(no_cas).contains("error reading client CAs file: open /nonexistent/ca")
    );
    let empty_cas = TlsServerCfg {
        client_cas: Some(pki().path("leaf.key")),
        ..server_cfg("foo")
    };
    assert_eq!(
        load_server_err(empty_cas),
        "error preparing tls server config: client CAs: no root trust anchors were provided"
    );
}

#[test]
fn client_startup_checks() {
    let half = TlsClientCfg {
        key: None,
        ..client_cfg(Some("foo"))
    };
    assert_eq!(
        ClientTls::load(&half, "foo").unwrap_err().to_string(),
        "error preparing tls client config: cert and key must both be supplied or neither"
    );
    let checked = TlsClientCfg {
        skip_receptor_names_check: false,
        ..client_cfg(Some("foo"))
    };
    assert!(ClientTls::load(&checked, "foo").is_ok());
    let e = ClientTls::load(&checked, "bar").unwrap_err().to_string();
    assert!(e.starts_with("error preparing tls client config: nodeID=bar not found in certificate name(s); names found=[foo]; cfg section=cli;"), "{e}");
    let no_roots = TlsClientCfg {
        root_cas: Some("/nonexistent/ca".into()),
        ..client_cfg(None)
    };
    assert_eq!(
        ClientTls::load(&no_roots, "foo").unwrap_err().to_string(),
        "error preparing tls client config: error reading root CAs file: open /nonexistent/ca: no such file or directory"
    );
}

/// Mesh streams wrap these configs for QUIC; quinn must accept them in
/// both modes.
#[test]
fn configs_convert_for_quic() {
    use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    for min_tls13 in [false, true] {
        let client = TlsClientCfg {
            min_tls13,
            ..client_cfg(Some("bar"))
        };
        let (mut c, _) = to_node(&client, "foo");
        c.alpn_protocols = vec![b"netceptor".to_vec()];
        assert!(QuicClientConfig::try_from(c).is_ok(), "{min_tls13}");
        let srv = TlsServerCfg {
            min_tls13,
            ..requiring("ca.crt")
        };
        let mut s = ServerTls::load(&srv, "foo")
            .unwrap()
            .config_for_node("bar")
            .unwrap();
        s.alpn_protocols = vec![b"netceptor".to_vec()];
        assert!(QuicServerConfig::try_from(s).is_ok(), "{min_tls13}");
    }
}
