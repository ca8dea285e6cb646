//! WebSocket backends: a line of nodes joined only by WebSocket (one link
//! plain under a path prefix with an extra header, one wss with a test CA),
//! and a relay with TCP, UDP and WebSocket sides.

mod common;

use common::pki::Pki;
use common::{
    Node, TempDir, free_port, listener, peer, route, secs, show, traceroute_hops, wait_until,
};

#[test]
fn a_websocket_only_line_with_a_path_prefix_and_wss() {
    let tmp = TempDir::new("wsline");
    let pki = Pki::new(&tmp.path.join("pki"), "WS CA");
    let ca = pki.ca();
    let (pa, pb) = (free_port(), free_port());
    let alpha = Node::start(
        "alpha",
        &[format!(
            "- ws-listener: {{bindaddr: 127.0.0.1, port: {pa}, path: /mesh/}}"
        )],
    );
    let bravo_cert = pki.node("bravo");
    let _bravo = Node::start(
        "bravo",
        &[
            format!(
                "- ws-peer: {{address: \"ws://127.0.0.1:{pa}/mesh/x\", extraheader: \"X-Mesh:bravo\"}}"
            ),
            bravo_cert
                .server("srv", &ca)
                .replace("requireclientcert: true", "requireclientcert: false"),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {pb}, tls: srv}}"),
        ],
    );
    let charlie_cert = pki.node("charlie");
    let charlie = Node::start(
        "charlie",
        &[
            charlie_cert.client("cli", &ca, ""),
            format!("- ws-peer: {{address: \"wss://127.0.0.1:{pb}/\", tls: cli}}"),
            "- work-command: {worktype: echo, command: cat}".to_string(),
        ],
    );
    let routed = wait_until(secs(15), || alpha.route("charlie").is_some());
    assert!(routed, "{}\n{}", alpha.status(), charlie.log_tail(20));
    let ping = alpha.ctl(&["ping", "charlie", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
    assert_eq!(
        traceroute_hops(&alpha, "charlie"),
        ["alpha", "bravo", "charlie"]
    );
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let out = alpha.ctl_with_input(
        &[
            "work", "submit", "echo", "--node", "charlie", "-f", "-p", "-",
        ],
        &payload,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        out.stdout == payload,
        "output differs ({} bytes)",
        out.stdout.len()
    );
}

#[test]
fn a_relay_with_tcp_udp_and_websocket_sides() {
    let (tcp_port, udp_port, ws_port) = (free_port(), free_port(), free_port());
    let relay = Node::start(
        "relay",
        &[
            listener(tcp_port, 1.0),
            common::udp_listener(udp_port),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {ws_port}}}"),
        ],
    );
    let t = Node::start("t", &[peer(tcp_port, 1.0)]);
    let _u = Node::start("u", &[common::udp_peer(udp_port)]);
    let _w = Node::start(
        "w",
        &[format!(
            "- ws-peer: {{address: \"ws://127.0.0.1:{ws_port}/\"}}"
        )],
    );
    let all = wait_until(secs(15), || {
        t.route("u").is_some() && t.route("w").is_some()
    });
    assert!(all, "{}", relay.log_tail(20));
    assert_eq!(traceroute_hops(&t, "w"), ["t", "relay", "w"]);
    let mut conns = relay.connections();
    conns.sort();
    assert_eq!(conns, ["t", "u", "w"]);
}

#[test]
fn the_wrong_path_or_a_foreign_origin_is_refused() {
    use std::io::{Read, Write};
    let port = free_port();
    let node = Node::start(
        "strict",
        &[format!(
            "- ws-listener: {{bindaddr: 127.0.0.1, port: {port}, path: /mesh}}"
        )],
    );
    let status_of = |path: &str, origin: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(secs(5))).unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{origin}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 12];
        let _ = s.read(&mut buf);
        String::from_utf8_lossy(&buf[9..12]).into_owned()
    };
    assert_eq!(status_of("/mesh", ""), "101");
    assert_eq!(status_of("/other", ""), "404");
    assert_eq!(status_of("/mesh", "Origin: http://elsewhere\r\n"), "403");
    assert!(node.connections().is_empty());
}

#[test]
fn junk_and_oversized_websocket_messages_close_only_that_link() {
    use std::io::{Read, Write};
    let port = free_port();
    let hub = Node::start(
        "hub",
        &[format!(
            "- ws-listener: {{bindaddr: 127.0.0.1, port: {port}}}"
        )],
    );
    // A raw client: upgrade, then a junk text message and an oversized one.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"101");
    let masked = |opcode: u8, payload: &[u8]| {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65_536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    };
    s.write_all(&masked(1, b"\x01{junk")).unwrap();
    s.write_all(&masked(2, &vec![0u8; 70_000])).unwrap();
    let logged = wait_until(secs(10), || {
        hub.log().contains("Error decoding message from backend")
    });
    assert!(logged, "{}", hub.log_tail(20));
    // The oversized message ends that connection: the server closes it.
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest).is_ok();
    assert!(closed, "the link stayed open");
    // The listener still serves real peers.
    let _w = Node::start(
        "w",
        &[format!(
            "- ws-peer: {{address: \"ws://127.0.0.1:{port}/\"}}"
        )],
    );
    let routed = wait_until(secs(15), || hub.route("w").is_some());
    assert!(routed, "{}", hub.log_tail(20));
}

/// A wss ws-listener that requires client certificates, and what it makes
/// of dialers whose certificates do or do not name the node they claim to
/// be; then a dialer refusing a listener whose certificate is for another
/// node. As with TCP's TLS, `skipreceptornamescheck` turns each check off.
#[test]
fn wss_links_check_certificate_node_ids_both_ways() {
    let tmp = TempDir::new("wssids");
    let pki = Pki::new(&tmp.path.join("pki"), "WSS CA");
    let ca = pki.ca();
    let (strict, lax) = (free_port(), free_port());
    let alpha_cert = pki.node("alpha");
    let alpha = Node::start(
        "alpha",
        &[
            alpha_cert.server("srv", &ca),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {strict}, tls: srv}}"),
            alpha_cert.server("lax", &ca).replace(
                "requireclientcert",
                "skipreceptornamescheck: true\n    requireclientcert",
            ),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {lax}, tls: lax}}"),
        ],
    );
    let wss_peer =
        |port: u16| format!("- ws-peer: {{address: \"wss://127.0.0.1:{port}/\", tls: cli}}");
    let skip = "    skipreceptornamescheck: true";
    // "mallory" shows bob's certificate.
    let bob = pki.node("bob");
    let mallory = Node::start("mallory", &[bob.client("cli", &ca, skip), wss_peer(strict)]);
    let why =
        "rejected connection with node mallory because its TLS certificate is for node ID(s) bob";
    let logged = wait_until(secs(15), || alpha.log().contains(why));
    assert!(logged, "{}", alpha.log_tail(20));
    assert!(alpha.route("mallory").is_none());
    drop(mallory);
    // Its own certificate gets bravo in.
    let bravo_cert = pki.node("bravo");
    let _bravo = Node::start(
        "bravo",
        &[bravo_cert.client("cli", &ca, ""), wss_peer(strict)],
    );
    assert!(
        wait_until(secs(15), || alpha.route("bravo").is_some()),
        "{}",
        alpha.log_tail(20)
    );
    // The lax listener lets a borrowed certificate through.
    let _trudy = Node::start("trudy", &[bob.client("cli", &ca, skip), wss_peer(lax)]);
    assert!(
        wait_until(secs(15), || alpha.route("trudy").is_some()),
        "{}",
        alpha.log_tail(20)
    );

    // A listener "zulu" showing yankee's certificate, which charlie checks
    // and a lax dialer does not.
    let zport = free_port();
    let yankee = pki.node("yankee");
    let zulu = Node::start(
        "zulu",
        &[
            yankee
                .server("srv", &ca)
                .replace("requireclientcert: true", "skipreceptornamescheck: true"),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {zport}, tls: srv}}"),
        ],
    );
    let charlie = Node::start(
        "charlie",
        &[pki.node("charlie").client("cli", &ca, ""), wss_peer(zport)],
    );
    let why =
        "rejected connection with node zulu because its TLS certificate is for node ID(s) yankee";
    let logged = wait_until(secs(15), || charlie.log().contains(why));
    assert!(logged, "{}", charlie.log_tail(20));
    assert!(charlie.route("zulu").is_none());
    let delta = Node::start(
        "delta",
        &[pki.node("delta").client("cli", &ca, skip), wss_peer(zport)],
    );
    assert!(
        wait_until(secs(15), || delta.route("zulu").is_some()),
        "{}",
        zulu.log_tail(20)
    );
}

/// The cost a status object shows for the connection to `node`.
fn connection_cost(status: &serde_json::Value, node: &str) -> Option<f64> {
    status["Connections"]
        .as_array()?
        .iter()
        .find(|c| c["NodeID"] == node)
        .and_then(|c| c["Cost"].as_f64())
}

/// `cost`, `nodecost` and `allowedpeers` on UDP and WebSocket listeners and
/// peers, as on TCP: listed peers get in at the agreed cost, others are
/// refused with the router's reason.
#[test]
fn udp_and_websocket_links_apply_costs_and_allowed_peers() {
    let (pw, pu) = (free_port(), free_port());
    let hub = Node::start(
        "hub",
        &[
            format!(
                "- ws-listener: {{bindaddr: 127.0.0.1, port: {pw}, cost: 2.0, \
                 nodecost: {{wgood: 3.5}}, allowedpeers: [wgood]}}"
            ),
            format!(
                "- udp-listener: {{bindaddr: 127.0.0.1, port: {pu}, cost: 2.5, allowedpeers: [ugood]}}"
            ),
        ],
    );
    let ws_peer =
        |cost: f64| format!("- ws-peer: {{address: \"ws://127.0.0.1:{pw}/\", cost: {cost:?}}}");
    let udp_peer = format!("- udp-peer: {{address: \"127.0.0.1:{pu}\", cost: 2.5}}");
    let _wgood = Node::start("wgood", &[ws_peer(3.5)]);
    let _ugood = Node::start("ugood", std::slice::from_ref(&udp_peer));
    let _wbad = Node::start("wbad", &[ws_peer(2.0)]);
    let _ubad = Node::start("ubad", &[udp_peer]);
    for bad in ["wbad", "ubad"] {
        let why = format!(
            "hub: rejected connection with node {bad} because it is not in the allowed peers list"
        );
        let logged = wait_until(secs(15), || hub.log().contains(&why));
        assert!(logged, "{}", hub.log_tail(20));
    }
    let both = wait_until(secs(15), || hub.connections() == ["ugood", "wgood"]);
    assert!(both, "{}", hub.status());
    let st = hub.status();
    assert_eq!(connection_cost(&st, "wgood"), Some(3.5), "{st}");
    assert_eq!(connection_cost(&st, "ugood"), Some(2.5), "{st}");
    assert_eq!(route(&st, "wbad"), None, "{st}");
}
