//! UDP backends: a line of nodes joined only by UDP, and a relay with a
//! TCP and a UDP side, driven by the real receptorctl.

mod common;

use common::{Node, free_port, listener, peer, secs, show, traceroute_hops, wait_until};

fn udp_listener(port: u16) -> String {
    format!("- udp-listener: {{bindaddr: 127.0.0.1, port: {port}}}")
}

fn udp_peer(port: u16) -> String {
    format!("- udp-peer: {{address: \"127.0.0.1:{port}\"}}")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
}

#[test]
fn a_udp_only_line_routes_pings_traces_and_runs_remote_work() {
    let (pa, pb) = (free_udp_port(), free_udp_port());
    let alpha = Node::start("alpha", &[udp_listener(pa)]);
    let _bravo = Node::start("bravo", &[udp_peer(pa), udp_listener(pb)]);
    let charlie = Node::start(
        "charlie",
        &[
            udp_peer(pb),
            "- work-command: {worktype: echo, command: cat}".to_string(),
        ],
    );
    let routed = wait_until(secs(15), || alpha.route("charlie").is_some());
    assert!(routed, "{}\n{}", alpha.status(), alpha.log_tail(20));
    let ping = alpha.ctl(&["ping", "charlie", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
    assert_eq!(
        traceroute_hops(&alpha, "charlie"),
        ["alpha", "bravo", "charlie"]
    );

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
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
    assert!(charlie.connections() == ["bravo"]);
}

#[test]
fn a_relay_joins_a_tcp_side_and_a_udp_side() {
    let (tcp_port, udp_port) = (free_port(), free_udp_port());
    let relay = Node::start("relay", &[listener(tcp_port, 1.0), udp_listener(udp_port)]);
    let left = Node::start("left", &[peer(tcp_port, 1.0)]);
    let _right = Node::start("right", &[udp_peer(udp_port)]);
    let routed = wait_until(secs(15), || left.route("right").is_some());
    assert!(routed, "{}", relay.log_tail(20));
    assert_eq!(traceroute_hops(&left, "right"), ["left", "relay", "right"]);
    let mut conns = relay.connections();
    conns.sort();
    assert_eq!(conns, ["left", "right"]);
}

#[test]
fn a_udp_session_comes_back_after_its_peer_restarts() {
    let port = free_udp_port();
    let hub = Node::start("hub", &[udp_listener(port)]);
    let mut spoke = Node::start("spoke", &[udp_peer(port)]);
    assert!(wait_until(secs(15), || hub.route("spoke").is_some()));
    spoke.kill();
    spoke.restart();
    // The restarted process speaks from a new source port: a new session,
    // accepted once the old one has gone idle (21 s), as with Go.
    let back = wait_until(secs(60), || {
        let ping = hub.ctl(&["ping", "spoke", "--count", "1"]);
        ping.status.success()
    });
    assert!(back, "{}", hub.log_tail(20));
}

#[test]
fn junk_datagrams_are_logged_and_survived() {
    let port = free_udp_port();
    let hub = Node::start("hub", &[udp_listener(port)]);
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = vec![0xffu8; 65_507];
    let datagrams: [&[u8]; 5] = [b"", b"\x01{not json", b"\x09unknown", b"\x00short", &big];
    for d in datagrams {
        junk.send_to(d, ("127.0.0.1", port)).unwrap();
    }
    let logged = wait_until(secs(10), || {
        hub.log().contains("Error decoding message from backend")
    });
    assert!(logged, "{}", hub.log_tail(20));
    let _spoke = Node::start("spoke", &[udp_peer(port)]);
    let routed = wait_until(secs(15), || hub.route("spoke").is_some());
    assert!(routed, "{}", hub.log_tail(20));
    let ping = hub.ctl(&["ping", "spoke", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
}
