//! UDP backends: a line of nodes joined only by UDP, and a relay with a
//! TCP and a UDP side, and a mesh whose UDP links lose datagrams, driven
//! by the real receptorctl.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    Gen, Node, free_port, free_udp_port, listener, peer, route, secs, show, traceroute_hops,
    udp_listener, udp_peer, wait_until,
};
use sha2::{Digest, Sha256};

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
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
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

// ---------------------------------------------------------------------------
// A lossy path: a relay between a udp-peer and a udp-listener that drops a
// share of the datagrams, chosen by a seeded generator.
// ---------------------------------------------------------------------------

/// Datagrams a relay forwarded and dropped, both directions together.
#[derive(Default)]
struct RelayCounts {
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// One direction of a relay: what it reads from, what it sends to, and
/// which datagrams it drops.
struct Pump {
    loss_pct: u64,
    /// Splitmix64 ([`Gen`]): a seed names one pattern of losses (the n-th
    /// datagram of a direction is dropped or not, whatever the timing).
    rng: Gen,
    counts: Arc<RelayCounts>,
    stop: Arc<AtomicBool>,
}

impl Pump {
    /// Moves datagrams from `recv` to `send` until `stop`; `recv` returns
    /// `None` on a timeout (or a refusal while the far end is not up).
    fn run(
        mut self,
        mut recv: impl FnMut(&mut [u8]) -> Option<usize>,
        mut send: impl FnMut(&[u8]),
    ) {
        let mut buf = vec![0u8; 65_536];
        while !self.stop.load(Ordering::Relaxed) {
            let Some(n) = recv(&mut buf) else { continue };
            if self.rng.next_u64() % 100 < self.loss_pct {
                self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
                send(&buf[..n]);
            }
        }
    }
}

/// A UDP relay on 127.0.0.1: a udp-peer sends to `port`, the relay passes
/// each datagram on to the listener from a socket of its own and the
/// replies back to the peer, dropping `loss_pct` % in each direction.
/// Dropping the relay stops and joins its two threads.
struct LossyRelay {
    port: u16,
    counts: Arc<RelayCounts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LossyRelay {
    fn start(listener_port: u16, loss_pct: u64, seed: u64) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind relay front");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind relay back");
        back.connect(("127.0.0.1", listener_port))
            .expect("connect relay back");
        // Read timeouts only so that the threads notice `stop`.
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("relay read timeout");
        }
        let port = front.local_addr().expect("relay address").port();
        let (front, back) = (Arc::new(front), Arc::new(back));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let counts = Arc::new(RelayCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pump = |seed| Pump {
            loss_pct,
            rng: Gen::new(seed),
            counts: counts.clone(),
            stop: stop.clone(),
        };
        let up = {
            let (front, back, peer, pump) = (front.clone(), back.clone(), peer.clone(), pump(seed));
            std::thread::spawn(move || {
                let recv = |buf: &mut [u8]| {
                    let (n, from) = front.recv_from(buf).ok()?;
                    *peer.lock().unwrap() = Some(from);
                    Some(n)
                };
                pump.run(recv, |d| drop(back.send(d)));
            })
        };
        let down = {
            let pump = pump(seed ^ 0xd0d0);
            std::thread::spawn(move || {
                let send = |d: &[u8]| {
                    if let Some(to) = *peer.lock().unwrap() {
                        let _ = front.send_to(d, to);
                    }
                };
                pump.run(|buf| back.recv(buf).ok(), send);
            })
        };
        LossyRelay {
            port,
            counts,
            stop,
            threads: vec![up, down],
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.counts.forwarded.load(Ordering::Relaxed),
            self.counts.dropped.load(Ordering::Relaxed),
        )
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP echo server on 127.0.0.1 that echoes each connection until EOF,
/// then shuts down its write side. Returns its port.
fn tcp_echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let port = l.local_addr().expect("echo address").port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone echo socket");
                let _ = std::io::copy(&mut &conn, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// Sends `data` through 127.0.0.1:`port` (a tcp-server proxy), half-closes,
/// and returns everything read back until EOF.
fn echo_through(port: u16, data: Arc<Vec<u8>>) -> std::io::Result<Vec<u8>> {
    let conn = TcpStream::connect(("127.0.0.1", port))?;
    // Generous, only so that a stall fails the test instead of hanging it.
    conn.set_read_timeout(Some(secs(120)))?;
    conn.set_write_timeout(Some(secs(120)))?;
    let mut w = conn.try_clone()?;
    let writer = std::thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    let read = (&conn).read_to_end(&mut got);
    writer.join().expect("writer thread")?;
    read.map(|_| got)
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn streams_and_remote_work_arrive_whole_over_lossy_udp_links() {
    const LOSS_PCT: u64 = 5;
    let echo = tcp_echo_server();
    let (pb1, pb2, proxy) = (free_udp_port(), free_udp_port(), free_port());
    let bravo = Node::start("bravo", &[udp_listener(pb1), udp_listener(pb2)]);
    let relay_ab = LossyRelay::start(pb1, LOSS_PCT, 0x5eed_00ab);
    let relay_bc = LossyRelay::start(pb2, LOSS_PCT, 0x5eed_00bc);
    let alpha = Node::start(
        "alpha",
        &[
            udp_peer(relay_ab.port),
            format!(
                "- tcp-server: {{port: {proxy}, bindaddr: 127.0.0.1, \
                 remotenode: charlie, remoteservice: echo}}"
            ),
        ],
    );
    let charlie = Node::start(
        "charlie",
        &[
            udp_peer(relay_bc.port),
            format!("- tcp-client: {{service: echo, address: \"127.0.0.1:{echo}\"}}"),
            "- work-command: {worktype: cat, command: cat}".to_string(),
        ],
    );
    let converged = wait_until(secs(60), || {
        [&alpha, &bravo, &charlie].iter().all(|n| {
            let st = n.status();
            ["alpha", "bravo", "charlie"]
                .iter()
                .all(|id| *id == n.id || route(&st, id).is_some())
        })
    });
    assert!(converged, "{}\n{}", alpha.status(), alpha.log_tail(20));
    assert_eq!(
        traceroute_hops(&alpha, "charlie"),
        ["alpha", "bravo", "charlie"]
    );

    let data = Arc::new(Gen::bytes(0x5eed_0010, 10 << 20));
    let echoed = echo_through(proxy, data.clone()).unwrap_or_else(|e| {
        panic!(
            "echo over the lossy mesh failed: {e}\n{}\n{}",
            alpha.log_tail(20),
            charlie.log_tail(20)
        )
    });
    assert_eq!(echoed.len(), data.len(), "echoed length");
    assert_eq!(sha256(&echoed), sha256(&data), "echoed bytes");

    let payload = Gen::bytes(0x5eed_0020, 1 << 20);
    let out = alpha.ctl_with_input(
        &[
            "work", "submit", "cat", "--node", "charlie", "-f", "-p", "-",
        ],
        &payload,
    );
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), payload.len(), "work unit stdout length");
    assert_eq!(sha256(&out.stdout), sha256(&payload), "work unit stdout");

    for relay in [&relay_ab, &relay_bc] {
        let (forwarded, dropped) = relay.counts();
        eprintln!(
            "relay on {}: {forwarded} forwarded, {dropped} dropped",
            relay.port
        );
        assert!(
            dropped > 0,
            "the relay dropped nothing ({forwarded} forwarded)"
        );
    }
}
