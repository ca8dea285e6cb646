//! TLS between our rustls configs and the Go reference node over real
//! 127.0.0.1 sockets: a Go `tcp-peer` dials our TLS server, and we dial a
//! Go `tcp-listener` with client certificates required on both sides.
//! Skipped (with a printed line) when target/reference/receptor-go is absent.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{TempDir, free_port, go_reference, secs, wait_until};
use receptor::certs::ca::{self, Validity};
use receptor::certs::{RsaKey, SanNames};
use receptor::config::{TlsClientCfg, TlsServerCfg};
use receptor::tls::{ClientTls, ServerTls, error_text, peer_node_ids};
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

/// A CA and leaves for nodes `rs` and `gonode` (both valid for 127.0.0.1).
fn pki(dir: &Path) {
    let now = OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now - Duration::from_secs(3600),
        not_after: now + Duration::from_secs(86_400),
    };
    let ca_key = RsaKey::generate(2048).unwrap();
    let ca_pem = ca::create_ca("CA", &ca_key, validity).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
    for id in ["rs", "gonode"] {
        let key = RsaKey::generate(2048).unwrap();
        let names = SanNames {
            dns_names: vec![],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            node_ids: vec![id.to_string()],
        };
        let req = ca::make_request(id, &names, &key).unwrap();
        let req = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(req.as_bytes())
            .unwrap();
        let cert = ca::sign_request(req.as_ref(), &ca_der, &ca_key, validity).unwrap();
        std::fs::write(dir.join(format!("{id}.crt")), cert).unwrap();
        std::fs::write(dir.join(format!("{id}.key")), key.to_pkcs1_pem().unwrap()).unwrap();
    }
}

/// The Go node, killed on drop.
struct GoNode(Child);

impl GoNode {
    fn start(go: &Path, dir: &Path, args: &[String]) -> GoNode {
        let log = std::fs::File::create(dir.join("go.log")).unwrap();
        let child = Command::new(go)
            .args([
                "--node",
                "id=gonode",
                &format!("datadir={}", dir.join("data").display()),
            ])
            .args(["--log-level", "debug"])
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        GoNode(child)
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn go_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("go.log")).unwrap_or_default()
}

fn timeouts(stream: &TcpStream) {
    stream.set_read_timeout(Some(secs(10))).unwrap();
    stream.set_write_timeout(Some(secs(10))).unwrap();
}

#[test]
fn go_dialer_handshakes_with_our_server() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("tls-go-in");
    let dir = tmp.path.as_path();
    pki(dir);
    let server = TlsServerCfg {
        name: "srv".into(),
        cert: dir.join("rs.crt"),
        key: dir.join("rs.key"),
        require_client_cert: true,
        client_cas: Some(dir.join("ca.crt")),
        pinned_client_cert: vec![],
        skip_receptor_names_check: false,
        min_tls13: false,
    };
    let config = Arc::new(ServerTls::load(&server, "rs").unwrap().config().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _go = GoNode::start(
        &go,
        dir,
        &[
            "--tls-client".into(),
            "name=cli".into(),
            "cert=gonode.crt".into(),
            "key=gonode.key".into(),
            "rootcas=ca.crt".into(),
            "--tcp-peer".into(),
            format!("address=127.0.0.1:{port}"),
            "tls=cli".into(),
        ],
    );
    let (mut tcp, _) = listener.accept().unwrap();
    timeouts(&tcp);
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            panic!("handshake with Go failed: {e}\n{}", go_log(dir));
        }
    }
    assert_eq!(peer_node_ids(conn.peer_certificates()).unwrap(), ["gonode"]);
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    // Go asks for P-521 first; ring has none, so a retry settles on P-384.
    assert_eq!(
        conn.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::secp384r1)
    );
}

fn our_client(dir: &Path, with_cert: bool) -> ClientTls {
    let client = TlsClientCfg {
        name: "cli".into(),
        cert: with_cert.then(|| dir.join("rs.crt")),
        key: with_cert.then(|| dir.join("rs.key")),
        root_cas: Some(dir.join("ca.crt")),
        insecure_skip_verify: false,
        pinned_server_cert: vec![],
        skip_receptor_names_check: false,
        min_tls13: false,
    };
    ClientTls::load(&client, "rs").unwrap()
}

/// Dials the Go listener, runs the handshake and reads the first bytes
/// Go sends (its connection message): that Go sends them shows it accepted
/// our client certificate. Returns the server's node IDs, or the client's
/// error text.
fn dial(
    port: u16,
    client: (rustls::ClientConfig, rustls::pki_types::ServerName<'static>),
) -> Result<Vec<String>, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    timeouts(&tcp);
    let mut conn = rustls::ClientConnection::new(Arc::new(client.0), client.1).unwrap();
    let text = |e: std::io::Error| match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => error_text(tls),
        None => e.to_string(),
    };
    let mut buf = [0u8; 64];
    loop {
        conn.complete_io(&mut tcp).map_err(text)?;
        match conn.reader().read(&mut buf) {
            Ok(n) if n > 0 => break,
            Ok(_) => return Err("Go closed the connection".into()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(text(e)),
        }
    }
    Ok(peer_node_ids(conn.peer_certificates()).unwrap())
}

#[test]
fn we_dial_a_go_listener() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("tls-go-out");
    let dir = tmp.path.as_path();
    pki(dir);
    let port = free_port();
    let _go = GoNode::start(
        &go,
        dir,
        &[
            "--tls-server".into(),
            "name=srv".into(),
            "cert=gonode.crt".into(),
            "key=gonode.key".into(),
            "requireclientcert=true".into(),
            "clientcas=ca.crt".into(),
            "--tcp-listener".into(),
            format!("port={port}"),
            "bindaddr=127.0.0.1".into(),
            "tls=srv".into(),
        ],
    );
    assert!(
        wait_until(secs(15), || TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "Go listener did not start:\n{}",
        go_log(dir)
    );
    let client = our_client(dir, true);
    assert_eq!(
        dial(port, client.for_host("127.0.0.1").unwrap()),
        Ok(vec!["gonode".to_string()])
    );
    assert_eq!(
        dial(port, client.for_node("gonode").unwrap()),
        Ok(vec!["gonode".to_string()])
    );
    let wrong = dial(port, client.for_node("other").unwrap()).unwrap_err();
    assert_eq!(
        wrong,
        "x509: certificate is valid for Receptor node ID gonode, not other"
    );
    // Go requires our certificate: without one, it never talks to us.
    let anonymous = our_client(dir, false).for_host("127.0.0.1").unwrap();
    assert!(dial(port, anonymous).is_err());
}
