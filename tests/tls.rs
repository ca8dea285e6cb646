//! TLS on backend links with certificates made by our own cert tools: a
//! mutual-TLS mesh driven by the real receptorctl, and every way a peer can
//! be refused while the mesh keeps working.

mod common;

use common::pki::{NodeCert, Pki, tls_listener, tls_peer};
use common::{Node, TempDir, free_port, listener, peer, secs, show, wait_until};

/// `alpha` listens (mutual TLS) on a port that `bravo` dials, and `bravo`
/// listens for `charlie`. Every link is TLS.
struct Mesh {
    _tmp: TempDir,
    pki: Pki,
    alpha_port: u16,
    alpha: Node,
    _bravo: Node,
    _charlie: Node,
}

fn tls_items(cert: &NodeCert, ca: &std::path::Path) -> [String; 2] {
    [cert.server("srv", ca), cert.client("cli", ca, "")]
}

fn mesh() -> Mesh {
    let tmp = TempDir::new("tlsmesh");
    let pki = Pki::new(&tmp.path.join("pki"), "Mesh CA");
    let ca = pki.ca();
    let (pa, pb) = (free_port(), free_port());
    let work = "- work-command: {worktype: echo, command: cat}".to_string();
    let mut items = tls_items(&pki.node("alpha"), &ca).to_vec();
    items.push(tls_listener(pa, "srv"));
    let alpha = Node::start("alpha", &items);
    let mut items = tls_items(&pki.node("bravo"), &ca).to_vec();
    items.extend([tls_peer(pa, "cli"), tls_listener(pb, "srv")]);
    let bravo = Node::start("bravo", &items);
    let mut items = tls_items(&pki.node("charlie"), &ca).to_vec();
    items.extend([tls_peer(pb, "cli"), work]);
    let charlie = Node::start("charlie", &items);
    let routed = wait_until(secs(15), || alpha.route("charlie").is_some());
    assert!(
        routed,
        "no TLS route: {}\n{}",
        alpha.status(),
        alpha.log_tail(20)
    );
    Mesh {
        _tmp: tmp,
        pki,
        alpha_port: pa,
        alpha,
        _bravo: bravo,
        _charlie: charlie,
    }
}

#[test]
fn a_mutual_tls_mesh_routes_pings_and_runs_remote_work() {
    let m = mesh();
    let status = m.alpha.ctl(&["status"]);
    assert!(status.status.success(), "{}", show(&status));
    let ping = m.alpha.ctl(&["ping", "charlie", "--count", "1"]);
    let text = String::from_utf8_lossy(&ping.stdout).into_owned();
    assert!(
        text.starts_with("Reply from charlie in "),
        "{}",
        show(&ping)
    );
    let trace = m.alpha.ctl(&["traceroute", "charlie"]);
    let hops: Vec<String> = String::from_utf8_lossy(&trace.stdout)
        .lines()
        .map(|l| l.split(' ').nth(1).unwrap_or_default().to_string())
        .collect();
    assert_eq!(hops, ["alpha", "bravo", "charlie"], "{}", show(&trace));

    // A remote unit whose only path is the two TLS links.
    let payload = b"over tls, twice\n".repeat(5000);
    let submit = m.alpha.ctl_with_input(
        &[
            "work", "submit", "echo", "--node", "charlie", "-f", "--rm", "-p", "-",
        ],
        &payload,
    );
    assert!(submit.status.success(), "{}", show(&submit));
    // With --rm, receptorctl ends with "(<unit id>, released)".
    let out = &submit.stdout;
    let (body, last) = out[..out.len() - 1].split_at(payload.len());
    assert!(body == payload, "output differs from the payload");
    let last = String::from_utf8_lossy(last);
    assert!(
        last.starts_with('(') && last.ends_with(", released)"),
        "{last:?}"
    );
}

/// Starts `intruder` with `items`, dialing alpha; asserts it never gets a
/// connection, that `why` appears in `log_of`'s log (alpha's or its own),
/// and that the mesh still routes.
fn refused(m: &Mesh, items: Vec<String>, why: &str, in_intruder_log: bool) {
    let intruder = Node::start("intruder", &items);
    let logged = wait_until(secs(15), || {
        let log = if in_intruder_log {
            intruder.log()
        } else {
            m.alpha.log()
        };
        log.contains(why)
    });
    let log_tail = if in_intruder_log {
        intruder.log_tail(15)
    } else {
        m.alpha.log_tail(15)
    };
    assert!(logged, "no {why:?} in the log:\n{log_tail}");
    // The intruder redials and may see alpha for a moment each time,
    // until alpha's refusal arrives; alpha itself never takes it in.
    assert!(
        wait_until(secs(10), || intruder.connections().is_empty()),
        "{}",
        intruder.status()
    );
    assert!(!m.alpha.connections().contains(&"intruder".to_string()));
    let ping = m.alpha.ctl(&["ping", "charlie", "--count", "1"]);
    assert!(ping.status.success(), "mesh broken: {}", show(&ping));
}

fn dial_alpha(m: &Mesh, client: String) -> Vec<String> {
    vec![client, tls_peer(m.alpha_port, "cli")]
}

#[test]
fn peers_that_fail_tls_are_refused_and_the_mesh_keeps_working() {
    let m = mesh();
    let ca = m.pki.ca();

    // A certificate from another CA.
    let other = Pki::new(&m.pki.dir.join("other"), "Other CA");
    let stranger = other.node("intruder");
    refused(
        &m,
        dial_alpha(&m, stranger.client("cli", &ca, "")),
        "TLS handshake with",
        false,
    );

    // An expired certificate.
    let old = m.pki.issue(
        "expired",
        &["intruder"],
        &[
            "notbefore=2020-01-01T00:00:00Z",
            "notafter=2021-01-01T00:00:00Z",
        ],
    );
    refused(
        &m,
        dial_alpha(&m, old.client("cli", &ca, "")),
        "TLS handshake with",
        false,
    );

    // A certificate without the node ID, and one for another node.
    let anon = m.pki.issue("anon", &[], &[]);
    let extra = "    skipreceptornamescheck: true";
    refused(
        &m,
        dial_alpha(&m, anon.client("cli", &ca, extra)),
        "rejected connection with node intruder because its TLS certificate lists no node IDs",
        false,
    );
    let bob = m.pki.node("bob");
    refused(
        &m,
        dial_alpha(&m, bob.client("cli", &ca, extra)),
        "because its TLS certificate is for node ID(s) bob",
        false,
    );

    // No client certificate where one is required. A legacy tls-client
    // section must name a cert (as in Go), so a bare rustls client tries.
    let before = m.alpha.log().matches("TLS handshake with").count();
    assert!(handshake_without_cert(m.alpha_port, &ca).is_err());
    let logged = wait_until(secs(5), || {
        m.alpha.log().matches("TLS handshake with").count() > before
    });
    assert!(logged, "{}", m.alpha.log_tail(10));

    // A plain dialer to the TLS listener.
    refused(
        &m,
        vec![peer(m.alpha_port, 1.0)],
        "TLS handshake with",
        false,
    );

    // A server pin that does not match: the intruder refuses alpha.
    let me = m.pki.node("intruder");
    let pin = format!("    pinnedservercert: [\"{}\"]", "ab".repeat(32));
    refused(
        &m,
        dial_alpha(&m, me.client("cli", &ca, &pin)),
        "presented certificate does not match any pinned fingerprint",
        true,
    );
}

/// A TLS client with no certificate of its own, trusting `ca`.
fn handshake_without_cert(port: u16, ca: &std::path::Path) -> Result<(), String> {
    use receptor::config::TlsClientCfg;
    use std::io::Read;
    let cfg = TlsClientCfg {
        name: "bare".into(),
        cert: None,
        key: None,
        root_cas: Some(ca.to_path_buf()),
        insecure_skip_verify: false,
        pinned_server_cert: vec![],
        skip_receptor_names_check: false,
        min_tls13: false,
    };
    let tls = receptor::tls::ClientTls::load(&cfg, "bare").unwrap();
    let (config, name) = tls.for_host("127.0.0.1").unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(secs(10))).unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut buf = [0u8; 64];
    // TLS 1.3 clients finish first; the server's refusal arrives after.
    loop {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        match conn.reader().read(&mut buf) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) => return Err("closed".into()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn a_plain_listener_is_not_reached_by_a_tls_dialer() {
    let tmp = TempDir::new("tlsplain");
    let pki = Pki::new(&tmp.path.join("pki"), "CA");
    let port = free_port();
    let plain = Node::start("plain", &[listener(port, 1.0)]);
    let me = pki.node("dialer");
    let dialer = Node::start(
        "dialer",
        &[me.client("cli", &pki.ca(), ""), tls_peer(port, "cli")],
    );
    let logged = wait_until(secs(15), || dialer.log().contains("TLS handshake with"));
    assert!(logged, "{}", dialer.log_tail(15));
    assert!(plain.connections().is_empty());
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// receptorctl with its own `--socket` and TLS flags in `args`.
fn ctl_tls(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(common::receptorctl());
    cmd.args(args).env_remove("RECEPTORCTL_SOCKET");
    common::output_with_input(cmd, None, common::CMD_TIMEOUT)
}

#[test]
fn tls_control_services_remote_work_secrets_and_connect() {
    let tmp = TempDir::new("tlsctl");
    let pki = Pki::new(&tmp.path.join("pki"), "Control CA");
    let ca = pki.ca();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let alpha_cert = pki.node("alpha");
    let mut items = tls_items(&alpha_cert, &ca).to_vec();
    items.push(tls_listener(pa, "srv"));
    let tcptls = format!("    tcplisten: 127.0.0.1:{pc}\n    tcptls: srv");
    let alpha = Node::start_full("alpha", "", &tcptls, &items);
    let mut items = tls_items(&pki.node("bravo"), &ca).to_vec();
    // A mesh service whose certificate names another node.
    let nobody = pki.node("nobody");
    let fake = nobody
        .server("fake", &ca)
        .replace("requireclientcert: true", "skipreceptornamescheck: true");
    items.extend([
        tls_peer(pa, "cli"),
        tls_listener(pb, "srv"),
        fake,
        format!("- tcp-client: {{service: fakesvc, address: \"127.0.0.1:{pc}\", tlsserver: fake}}"),
    ]);
    let _bravo = Node::start("bravo", &items);
    let mut items = tls_items(&pki.node("charlie"), &ca).to_vec();
    items.extend([
        tls_peer(pb, "cli"),
        "- work-command: {worktype: echo, command: cat}".to_string(),
    ]);
    let charlie = Node::start_full("charlie", "", "    tls: srv", &items);
    assert!(wait_until(secs(15), || alpha.route("charlie").is_some()));

    // receptorctl on the TLS control port, with flags and with a config file.
    let socket = format!("tls://127.0.0.1:{pc}");
    let (cert, key) = (
        alpha_cert.cert.display().to_string(),
        alpha_cert.key.display().to_string(),
    );
    let ca_text = ca.display().to_string();
    let flags = [
        "--socket",
        &socket,
        "--rootcas",
        &ca_text,
        "--cert",
        &cert,
        "--key",
        &key,
    ];
    let out = ctl_tls(&[&flags[..], &["status"]].concat());
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Node ID: alpha"));
    let cfg = tmp.path.join("ctl.yaml");
    std::fs::write(&cfg, alpha_cert.client("mine", &ca, "")).unwrap();
    let cfg_text = cfg.display().to_string();
    let out = ctl_tls(&[
        "--socket",
        &socket,
        "-c",
        &cfg_text,
        "--tls-client",
        "mine",
        "ping",
        "charlie",
        "--count",
        "1",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // Without a client certificate the port refuses.
    let out = ctl_tls(&["--socket", &socket, "--rootcas", &ca_text, "status"]);
    assert!(!out.status.success(), "{}", show(&out));

    // Remote work to charlie's TLS control service, with a secret.
    let secret = "hunter2-xyzzy-secret";
    let payload = b"tls work\n".repeat(1000);
    let param = format!("secret_token={secret}");
    let submit = alpha.ctl_with_input(
        &[
            "work",
            "submit",
            "echo",
            "--node",
            "charlie",
            "--tls-client",
            "cli",
            "--param",
            &param,
            "-f",
            "-p",
            "-",
        ],
        &payload,
    );
    assert!(submit.status.success(), "{}", show(&submit));
    assert!(submit.stdout.starts_with(&payload), "{}", show(&submit));
    let list = alpha.ctl(&["work", "list"]);
    assert!(list.status.success(), "{}", show(&list));
    for out in [&list.stdout, &submit.stdout] {
        assert!(!String::from_utf8_lossy(out).contains(secret));
    }
    for node in [&alpha, &charlie] {
        for file in files_under(&node.data_dir()) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "secret in {}",
                file.display()
            );
        }
    }
    // Secrets never travel without TLS.
    let out = alpha.ctl(&[
        "work",
        "submit",
        "echo",
        "--node",
        "charlie",
        "--param",
        &param,
        "--no-payload",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot send secrets over a non-TLS connection"),
        "{}",
        show(&out)
    );

    // connect with a TLS client reaches charlie's TLS control service.
    let mut conn = alpha.connect();
    assert_eq!(conn.cmd("connect charlie control cli"), "Connecting");
    assert_eq!(conn.line(), "Receptor Control, node charlie");
    // bravo's control service has no TLS: its throwaway certificate is
    // refused by a TLS client.
    let reply = alpha.connect().cmd("connect bravo control cli");
    assert!(
        reply.starts_with("ERROR: ") && reply.contains("certificate"),
        "{reply}"
    );
}

/// A TLS echo server on 127.0.0.1 for one client: what it reads, it sends
/// back, until the client ends its side.
fn tls_echo_server(cert: &NodeCert, ca: &std::path::Path) -> u16 {
    use receptor::config::TlsServerCfg;
    use std::io::{Read, Write};
    let cfg = TlsServerCfg {
        name: "echo".into(),
        cert: cert.cert.clone(),
        key: cert.key.clone(),
        require_client_cert: true,
        client_cas: Some(ca.to_path_buf()),
        pinned_client_cert: vec![],
        skip_receptor_names_check: true,
        min_tls13: false,
    };
    let config = std::sync::Arc::new(
        receptor::tls::ServerTls::load(&cfg, "")
            .unwrap()
            .config()
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = receptor::tls::io::TlsStream::establish(conn.into(), tcp).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => tls.write_all(&buf[..n]).unwrap(),
            }
        }
        tls.close_notify();
        let _ = tls.socket().shutdown(std::net::Shutdown::Write);
    });
    port
}

/// A TLS client with `cert` (no node-ID check) trusting `ca`.
fn tls_client_to(
    port: u16,
    cert: &NodeCert,
    ca: &std::path::Path,
) -> receptor::tls::io::TlsStream<std::net::TcpStream> {
    use receptor::config::TlsClientCfg;
    let cfg = TlsClientCfg {
        name: "user".into(),
        cert: Some(cert.cert.clone()),
        key: Some(cert.key.clone()),
        root_cas: Some(ca.to_path_buf()),
        insecure_skip_verify: false,
        pinned_server_cert: vec![],
        skip_receptor_names_check: true,
        min_tls13: false,
    };
    let (config, name) = receptor::tls::ClientTls::load(&cfg, "")
        .unwrap()
        .for_host("127.0.0.1")
        .unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(secs(20))).unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    receptor::tls::io::TlsStream::establish(conn.into(), tcp).unwrap()
}

#[test]
fn tcp_proxies_with_tls_on_both_sides() {
    use std::io::{Read, Write};
    let tmp = TempDir::new("tlsproxy");
    let pki = Pki::new(&tmp.path.join("pki"), "Proxy CA");
    let ca = pki.ca();
    let echo_port = tls_echo_server(&pki.issue("echo", &[], &[]), &ca);
    let (pa, proxy_port) = (free_port(), free_port());
    // alpha: local TLS clients in, TLS to the mesh service; charlie: the
    // TLS mesh service, TLS out to the echo server.
    let mut items = tls_items(&pki.node("alpha"), &ca).to_vec();
    items.extend([
        tls_listener(pa, "srv"),
        format!(
            "- tcp-server: {{port: {proxy_port}, bindaddr: 127.0.0.1, remotenode: charlie, \
             remoteservice: echosvc, tlsserver: srv, tlsclient: cli}}"
        ),
    ]);
    let alpha = Node::start("alpha", &items);
    let mut items = tls_items(&pki.node("charlie"), &ca).to_vec();
    items.extend([
        tls_peer(pa, "cli"),
        format!(
            "- tcp-client: {{service: echosvc, address: \"127.0.0.1:{echo_port}\", \
             tlsserver: srv, tlsclient: cli}}"
        ),
    ]);
    let _charlie = Node::start("charlie", &items);
    let advertised = wait_until(secs(15), || {
        alpha.status()["Advertisements"]
            .as_array()
            .is_some_and(|ads| {
                ads.iter()
                    .any(|a| a["Service"] == "echosvc" && a["ConnType"] == 2)
            })
    });
    assert!(advertised, "{}", alpha.status());

    let user = pki.issue("user", &[], &[]);
    let mut client = tls_client_to(proxy_port, &user, &ca);
    let data = b"through two TLS proxies and a TLS mesh\n".repeat(2000);
    client.write_all(&data).unwrap();
    client.close_notify();
    client.socket().shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert!(
        back == data,
        "echo differs: {} of {} bytes",
        back.len(),
        data.len()
    );
}

#[test]
fn bad_tls_sections_stop_startup_with_gos_messages() {
    let tmp = TempDir::new("tlsbad");
    let pki = Pki::new(&tmp.path.join("pki"), "CA");
    let other = pki.node("someoneelse");
    let port = free_port();
    let missing = NodeCert {
        cert: tmp.path.join("nope.crt"),
        key: other.key.clone(),
    };
    let swapped = NodeCert {
        cert: other.cert.clone(),
        key: pki.node("third").key,
    };
    let cases = [
        (
            other.server("srv", &pki.ca()),
            "nodeID=lonely not found in certificate name(s)",
        ),
        (
            missing.server("srv", &pki.ca()),
            "no such file or directory",
        ),
        (
            swapped.server("srv", &pki.ca()),
            "private key does not match public key",
        ),
        (tls_listener(port, "nosuch"), "unknown TLS config nosuch"),
    ];
    for (item, want) in cases {
        let config = tmp.path.join("bad.yaml");
        let yaml = format!(
            "- node: {{id: lonely}}\n{item}\n{}\n",
            tls_listener(port, "srv")
        );
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = std::process::Command::new(common::RECEPTOR);
        cmd.arg("-c").arg(&config).current_dir(&tmp.path);
        let out = common::output_within(cmd, secs(20));
        assert_eq!(out.status.code(), Some(1), "{item}: {}", show(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(want), "{item}: {}", show(&out));
        assert!(!common::port_in_use(port), "{item}: left a listener");
    }
}
