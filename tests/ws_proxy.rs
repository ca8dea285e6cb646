//! `ws-peer` through an HTTP CONNECT proxy taken from the environment, as
//! Go's dialer does: a tiny proxy thread in this test process logs what it
//! is asked and relays bytes. Targets are named `mesh.invalid`, which only
//! the proxy resolves (to 127.0.0.1): the node never looks the name up
//! itself, and Go's rule that loopback targets skip the proxy does not
//! apply to a name.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::pki::Pki;
use common::{Node, TempDir, free_port, secs, show, wait_until};

/// How much of each tunnel's client-to-server bytes the log keeps.
const LOGGED_TUNNEL_BYTES: usize = 4096;

/// A CONNECT proxy on 127.0.0.1. It answers the first connections with the
/// refusals in its script, then opens tunnels to 127.0.0.1 at the port
/// asked for. `log` holds each request head and the start of what each
/// tunnel carried from the client.
struct TestProxy {
    port: u16,
    log: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TestProxy {
    fn start(refusals: &[&str]) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut script: Vec<String> = refusals.iter().rev().map(|s| s.to_string()).collect();
        let (log2, stop2) = (log.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let refusal = script.pop();
                let log = log2.clone();
                std::thread::spawn(move || serve(client, refusal, &log));
            }
        });
        TestProxy {
            port,
            log,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self, userinfo: &str) -> String {
        format!("http://{userinfo}127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One proxy client: its CONNECT, then a refusal or a tunnel.
fn serve(mut client: TcpStream, refusal: Option<String>, log: &Mutex<String>) {
    client.set_read_timeout(Some(secs(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    log.lock().unwrap().push_str(&head);
    if let Some(status) = refusal {
        let _ = write!(client, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let target = head.split(' ').nth(1).unwrap_or_default();
    let port = target.rsplit_once(':').map_or("", |(_, p)| p);
    let Ok(upstream) = TcpStream::connect(format!("127.0.0.1:{port}")) else {
        let _ = write!(client, "HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    let _ = write!(client, "HTTP/1.1 200 Connection established\r\n\r\n");
    client.set_read_timeout(None).unwrap();
    relay(client, upstream, log);
}

fn relay(client: TcpStream, upstream: TcpStream, log: &Mutex<String>) {
    let (mut down_from, mut down_to) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut down_from, &mut down_to);
        let _ = down_to.shutdown(Shutdown::Both);
    });
    let (mut from, mut to) = (client, upstream);
    let mut buf = [0u8; 16 * 1024];
    let mut logged = 0;
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if logged < LOGGED_TUNNEL_BYTES {
            let take = n.min(LOGGED_TUNNEL_BYTES - logged);
            log.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..take]));
            logged += take;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = down.join();
}

fn ws_listener(port: u16, extra: &str) -> String {
    format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {port}{extra}}}")
}

#[test]
fn ws_and_wss_peers_tunnel_through_the_proxy_with_its_credentials() {
    let tmp = TempDir::new("wsproxy");
    let pki = Pki::new(&tmp.path.join("pki"), "Proxy CA");
    let ca = pki.ca();
    let proxy = TestProxy::start(&[]);
    let (pa, pb) = (free_port(), free_port());
    let alpha_cert = pki.issue_for("alpha", &["alpha"], &["mesh.invalid"], &[]);
    let alpha = Node::start(
        "alpha",
        &[
            ws_listener(pa, ", path: /mesh/"),
            alpha_cert.server("srv", &ca),
            ws_listener(pb, ", tls: srv"),
        ],
    );
    // Lower-case names, and credentials in the URL.
    let http_proxy = proxy.url("user:s%40cret@");
    let _bravo = Node::start_env(
        "bravo",
        &[format!(
            "- ws-peer: {{address: \"ws://mesh.invalid:{pa}/mesh/x\", extraheader: \"X-Mesh: bravo\"}}"
        )],
        &[("http_proxy", &http_proxy), ("NO_PROXY", "example.com")],
    );
    let charlie_cert = pki.node("charlie");
    let _charlie = Node::start_env(
        "charlie",
        &[
            charlie_cert.client("cli", &ca, ""),
            format!("- ws-peer: {{address: \"wss://mesh.invalid:{pb}/\", tls: cli}}"),
        ],
        &[("HTTPS_PROXY", &proxy.url(""))],
    );
    let routed = wait_until(secs(20), || {
        alpha.route("bravo").is_some() && alpha.route("charlie").is_some()
    });
    assert!(routed, "{}\n{}", alpha.log_tail(20), proxy.log());
    for node in ["bravo", "charlie"] {
        let ping = alpha.ctl(&["ping", node, "--count", "1"]);
        assert!(ping.status.success(), "{}", show(&ping));
    }
    let log = proxy.log();
    let plain = format!("CONNECT mesh.invalid:{pa} HTTP/1.1\r\nHost: mesh.invalid:{pa}\r\n");
    assert!(log.contains(&plain), "{log}");
    // base64("user:s@cret")
    assert!(
        log.contains("Proxy-Authorization: Basic dXNlcjpzQGNyZXQ=\r\n"),
        "{log}"
    );
    let secure = format!("CONNECT mesh.invalid:{pb} HTTP/1.1\r\nHost: mesh.invalid:{pb}\r\n\r\n");
    assert!(log.contains(&secure), "{log}");
    // The plain tunnel shows the upgrade that went through it.
    let lower = log.to_ascii_lowercase();
    assert!(lower.contains("get /mesh/x http/1.1\r\n"), "{log}");
    assert!(lower.contains("x-mesh: bravo\r\n"), "{log}");
    assert!(
        lower.contains(&format!("origin: http://mesh.invalid:{pa}\r\n")),
        "{log}"
    );
}

/// This machine's host name and the address it resolves to: a name that
/// Go's loopback rule does not catch, which the node dials directly.
fn own_host_name() -> (String, String) {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host name")
        .trim()
        .to_string();
    let ip = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .unwrap_or_else(|| panic!("host name {name} does not resolve to IPv4"));
    (name, ip.ip().to_string())
}

#[test]
fn no_proxy_names_and_loopback_targets_are_dialed_directly() {
    let proxy = TestProxy::start(&[]);
    let (host, ip) = own_host_name();
    let (pa, pb) = (free_port(), free_port());
    let hub = Node::start(
        "hub",
        &[
            ws_listener(pa, ""),
            format!("- ws-listener: {{bindaddr: {ip}, port: {pb}}}"),
        ],
    );
    let env = |no_proxy: &str| {
        [
            ("HTTP_PROXY".to_string(), proxy.url("")),
            ("no_proxy".to_string(), no_proxy.to_string()),
        ]
    };
    let looped = env("");
    let looped: Vec<(&str, &str)> = looped
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _loop = Node::start_env(
        "loop",
        &[format!("- ws-peer: {{address: \"ws://127.0.0.1:{pa}/\"}}")],
        &looped,
    );
    let listed = env(&format!("other.example, {}:{pb}", host.to_uppercase()));
    let listed: Vec<(&str, &str)> = listed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _named = Node::start_env(
        "named",
        &[format!("- ws-peer: {{address: \"ws://{host}:{pb}/\"}}")],
        &listed,
    );
    let routed = wait_until(secs(20), || {
        hub.route("loop").is_some() && hub.route("named").is_some()
    });
    assert!(routed, "{}", hub.log_tail(20));
    assert_eq!(proxy.log(), "", "the proxy was used");
}

#[test]
fn a_refusing_proxy_is_logged_and_the_dialer_tries_again() {
    let proxy = TestProxy::start(&["407 Proxy Authentication Required", "502 Bad Gateway"]);
    let port = free_port();
    let hub = Node::start("hub", &[ws_listener(port, "")]);
    let spoke = Node::start_env(
        "spoke",
        &[format!(
            "- ws-peer: {{address: \"ws://mesh.invalid:{port}/\"}}"
        )],
        &[("HTTP_PROXY", &proxy.url(""))],
    );
    let refused = |status: &str| {
        format!(
            "Backend connection failed (will retry): dial mesh.invalid:{port}: proxy 127.0.0.1:{} \
             refused the tunnel: {status}",
            proxy.port
        )
    };
    for status in ["407 Proxy Authentication Required", "502 Bad Gateway"] {
        let logged = wait_until(secs(20), || spoke.log().contains(&refused(status)));
        assert!(logged, "{}", spoke.log_tail(20));
    }
    let routed = wait_until(secs(30), || hub.route("spoke").is_some());
    assert!(routed, "{}\n{}", spoke.log_tail(20), proxy.log());
    assert_eq!(proxy.log().matches("CONNECT mesh.invalid").count(), 3);
}
