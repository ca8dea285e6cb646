//! Stream and proxy tests: tcp/unix/udp proxies carried over the mesh,
//! large and concurrent transfers, a relay dying mid-transfer, and the
//! control service reached through `connect` (run via tests/run.sh).

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    CMD_TIMEOUT, Gen, Node, TempDir, free_port, listener, output_within, peer, receptorctl, route,
    secs, show, wait_until,
};
use serde_json::{Value, json};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Data: a deterministic byte generator and a running FNV-1a checksum
// ---------------------------------------------------------------------------

/// Running 64-bit FNV-1a.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// FNV-1a of the first `len` bytes of the generator stream for `seed`.
fn fnv_of_prefix(seed: u64, len: u64) -> Fnv {
    let mut g = Gen::new(seed);
    let mut h = Fnv::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        g.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h
}

// ---------------------------------------------------------------------------
// Local servers the proxies connect to
// ---------------------------------------------------------------------------

/// Copies everything from `r` to `w`, then half-closes `w` via `close_w`.
fn echo_conn(mut r: impl Read, mut w: impl Write, close_w: impl FnOnce()) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
    let _ = w.flush();
    close_w();
}

/// A TCP echo server on 127.0.0.1 (one thread per connection, echoes until
/// EOF, then finishes writing and shuts down its write side). Returns its port.
fn tcp_echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let port = l.local_addr().expect("local_addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let w = conn.try_clone().expect("clone");
                let closer = conn.try_clone().expect("clone");
                echo_conn(conn, w, move || {
                    let _ = closer.shutdown(Shutdown::Write);
                });
            });
        }
    });
    port
}

/// A Unix-socket echo server at `path`, same behaviour as [`tcp_echo_server`].
fn unix_echo_server(path: &Path) {
    let l = UnixListener::bind(path).expect("bind unix echo server");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let w = conn.try_clone().expect("clone");
                let closer = conn.try_clone().expect("clone");
                echo_conn(conn, w, move || {
                    let _ = closer.shutdown(Shutdown::Write);
                });
            });
        }
    });
}

/// A UDP echo server on 127.0.0.1: each datagram goes back to its sender.
fn udp_echo_server() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp echo");
    let port = s.local_addr().expect("local_addr").port();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// What a sink connection received.
#[derive(Debug)]
struct SinkReport {
    len: u64,
    hash: Fnv,
    /// True if the stream ended with a clean EOF, false on a read error.
    clean_eof: bool,
}

/// A TCP sink on 127.0.0.1: per connection it counts and checksums every
/// byte until EOF, then (on a clean EOF) writes `"<len> <fnv hex>\n"` back and
/// closes. Each connection's result is also sent on the returned channel.
fn tcp_sink_server() -> (u16, mpsc::Receiver<SinkReport>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let port = l.local_addr().expect("local_addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let (mut len, mut hash) = (0u64, Fnv::new());
                let clean_eof = loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            len += n as u64;
                            hash.update(&buf[..n]);
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break false,
                    }
                };
                if clean_eof {
                    let _ = conn.write_all(format!("{len} {:016x}\n", hash.0).as_bytes());
                    let _ = conn.shutdown(Shutdown::Both);
                }
                let _ = tx.send(SinkReport {
                    len,
                    hash,
                    clean_eof,
                });
            });
        }
    });
    (port, rx)
}

// ---------------------------------------------------------------------------
// Mesh helpers
// ---------------------------------------------------------------------------

/// YAML item: tcp-client serving mesh `service`, dialing 127.0.0.1:`port`.
fn tcp_client(service: &str, port: u16) -> String {
    format!("- tcp-client: {{service: {service}, address: \"127.0.0.1:{port}\"}}")
}

/// YAML item: tcp-server on 127.0.0.1:`port` carrying to `node`:`service`.
fn tcp_server(port: u16, node: &str, service: &str) -> String {
    format!(
        "- tcp-server: {{port: {port}, bindaddr: 127.0.0.1, remotenode: {node}, \
         remoteservice: {service}}}"
    )
}

/// The advertisement of `service` by `node` in a status object, if any.
fn find_ad(status: &Value, node: &str, service: &str) -> Option<Value> {
    status["Advertisements"]
        .as_array()?
        .iter()
        .find(|a| a["NodeID"] == node && a["Service"] == service)
        .cloned()
}

/// Waits until `from` has a route to `node` and sees its `service` ad.
fn wait_for_service(from: &Node, node: &str, service: &str) {
    let ok = wait_until(secs(30), || {
        let st = from.status();
        route(&st, node).is_some() && find_ad(&st, node, service).is_some()
    });
    assert!(
        ok,
        "{} never saw {node}:{service}: {}\n{}",
        from.id,
        from.status(),
        from.log_tail(30)
    );
}

/// Connects to 127.0.0.1:`port`, retrying while it is refused (the proxy may
/// still be binding).
fn connect_tcp(port: u16) -> TcpStream {
    let mut last = None;
    let ok = wait_until(secs(10), || match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => {
            last = Some(Ok(s));
            true
        }
        Err(e) => {
            last = Some(Err(e));
            false
        }
    });
    match last {
        Some(Ok(s)) if ok => s,
        other => panic!("cannot connect to 127.0.0.1:{port}: {other:?}"),
    }
}

/// Writes the generator stream for `seed` (`len` bytes) to `w` in 64 KiB
/// chunks, then half-closes. Returns the bytes written.
fn send_stream(mut w: TcpStream, seed: u64, len: usize) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut g = Gen::new(seed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            g.fill(&mut buf);
            let n = left.min(buf.len());
            w.write_all(&buf[..n]).expect("write to proxy");
            left -= n;
        }
        w.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
        len as u64
    })
}

/// Reads `r` until EOF, returning (length, FNV-1a).
fn read_hash(mut r: impl Read) -> std::io::Result<(u64, Fnv)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut len, mut hash) = (0u64, Fnv::new());
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((len, hash)),
            Ok(n) => {
                len += n as u64;
                hash.update(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn tcp_proxy_100_mib_echo_over_two_hops() {
    const LEN: usize = 100 * MIB;
    const SEED: u64 = 0x5eed_0001;
    let echo = tcp_echo_server();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = Node::start("s1a", &[listener(pa, 1.0), tcp_client("echo", echo)]);
    let _b = Node::start("s1b", &[peer(pa, 1.0), listener(pb, 1.0)]);
    let c = Node::start("s1c", &[peer(pb, 1.0), tcp_server(pc, "s1a", "echo")]);
    wait_for_service(&c, "s1a", "echo");

    let started = Instant::now();
    let conn = connect_tcp(pc);
    conn.set_read_timeout(Some(secs(60))).expect("timeout");
    conn.set_write_timeout(Some(secs(60))).expect("timeout");
    let writer = send_stream(conn.try_clone().expect("clone"), SEED, LEN);
    let got = read_hash(&conn);
    let sent = writer.join().expect("writer thread");
    let elapsed = started.elapsed();
    eprintln!(
        "tcp_proxy_100_mib_echo_over_two_hops: {} MiB echoed in {elapsed:?}",
        LEN / MIB
    );
    let (len, hash) = got.unwrap_or_else(|e| {
        panic!(
            "reading the echo failed: {e}\n{}\n{}",
            a.log_tail(20),
            c.log_tail(20)
        )
    });
    assert_eq!(sent, LEN as u64);
    assert_eq!(len, LEN as u64, "echo length");
    assert_eq!(hash, fnv_of_prefix(SEED, LEN as u64), "echo checksum");
}

#[test]
fn transfer_survives_or_fails_cleanly_when_a_relay_dies() {
    const CHUNK: usize = 256 * 1024;
    const CHUNKS: usize = 160; // 40 MiB
    const KILL_AFTER: usize = 40; // 10 MiB in
    const SEED: u64 = 0x5eed_0002;
    let (sink, reports) = tcp_sink_server();
    let (pa, pb, pt) = (free_port(), free_port(), free_port());
    let mut relay_a = Node::start("s2relayA", &[listener(pa, 1.0)]);
    let _relay_b = Node::start("s2relayB", &[listener(pb, 2.0)]);
    let controller = Node::start(
        "s2ctl",
        &[
            peer(pa, 1.0),
            peer(pb, 2.0),
            tcp_server(pt, "s2exec", "sink"),
        ],
    );
    let executor = Node::start(
        "s2exec",
        &[peer(pa, 1.0), peer(pb, 2.0), tcp_client("sink", sink)],
    );
    wait_for_service(&controller, "s2exec", "sink");
    let routed = wait_until(secs(30), || {
        let (c, e) = (controller.status(), executor.status());
        route(&c, "s2exec").as_deref() == Some("s2relayA")
            && route(&e, "s2ctl").as_deref() == Some("s2relayA")
            && c["KnownConnectionCosts"]["s2exec"]["s2relayB"].is_number()
    });
    assert!(
        routed,
        "diamond did not settle: {}\n{}",
        controller.status(),
        executor.status()
    );

    let mut conn = connect_tcp(pt);
    conn.set_read_timeout(Some(secs(60))).expect("timeout");
    conn.set_write_timeout(Some(secs(60))).expect("timeout");
    let mut g = Gen::new(SEED);
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    let mut write_error = None;
    let started = Instant::now();
    for i in 0..CHUNKS {
        if i == KILL_AFTER {
            relay_a.kill();
            eprintln!("killed s2relayA after {written} bytes");
        }
        g.fill(&mut buf);
        match conn.write_all(&buf) {
            Ok(()) => written += CHUNK as u64,
            Err(e) => {
                write_error = Some(e);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A stall (timeout) is neither completing nor failing cleanly.
    if let Some(e) = &write_error {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "write stalled after {written} bytes: {e}\n{}\n{}",
            controller.log_tail(30),
            executor.log_tail(30)
        );
    }
    let mut summary = String::new();
    let read_result = if write_error.is_none() {
        let _ = conn.shutdown(Shutdown::Write);
        conn.read_to_string(&mut summary)
    } else {
        Ok(0)
    };
    if let Err(e) = &read_result {
        assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "waiting for the sink's summary stalled: {e}\n{}\n{}",
            controller.log_tail(30),
            executor.log_tail(30)
        );
    }
    let elapsed = started.elapsed();
    drop(conn);

    let total = (CHUNK * CHUNKS) as u64;
    let full = format!("{total} {:016x}\n", fnv_of_prefix(SEED, total).0);
    let report = reports.recv_timeout(secs(60)).unwrap_or_else(|_| {
        panic!(
            "the sink's connection never ended after the client finished\n{}\n{}",
            controller.log_tail(30),
            executor.log_tail(30)
        )
    });
    // Whatever happened, the sink only ever saw a prefix of the data.
    assert!(
        report.len <= written,
        "sink got {} bytes but the client wrote only {written}",
        report.len
    );
    assert_eq!(
        report.hash,
        fnv_of_prefix(SEED, report.len),
        "sink data is not a prefix of what was sent (corruption), {report:?}"
    );
    if write_error.is_none() && !summary.is_empty() {
        // The client was told the transfer finished: it must be complete.
        assert_eq!(summary, full, "sink summary (silent truncation/corruption)");
        assert!(report.clean_eof && report.len == total, "{report:?}");
        let rerouted = wait_until(secs(30), || {
            controller.route("s2exec").as_deref() == Some("s2relayB")
        });
        assert!(rerouted, "no reroute: {}", controller.status());
        eprintln!(
            "relay death outcome: COMPLETED, {total} bytes byte-exact at the sink in {elapsed:?}"
        );
    } else {
        eprintln!(
            "relay death outcome: FAILED visibly to the client (write error: {write_error:?}, \
             read: {read_result:?}); client wrote {written} bytes, sink got {} bytes \
             (clean EOF at sink: {}), prefix intact; after {elapsed:?}",
            report.len, report.clean_eof
        );
    }
}

#[test]
fn control_service_over_the_mesh_via_connect() {
    let (p1, p2) = (free_port(), free_port());
    let first = Node::start("s3first", &[listener(p1, 1.0)]);
    let _mid = Node::start("s3mid", &[peer(p1, 1.0), listener(p2, 1.0)]);
    let last = Node::start("s3last", &[peer(p2, 1.0)]);
    wait_for_service(&first, "s3last", "control");
    let ok = wait_until(secs(30), || last.route("s3first").is_some());
    assert!(ok, "s3last has no route back: {}", last.status());

    // Raw control socket: connect, remote greeting, commands on the remote node.
    let mut conn = first.connect();
    conn.send(b"connect s3last control \n");
    assert_eq!(conn.line(), "Connecting");
    assert_eq!(conn.line(), "Receptor Control, node s3last");
    assert_eq!(
        conn.cmd(r#"{"command":"status","requested_fields":["NodeID"]}"#),
        r#"{"NodeID":"s3last"}"#
    );
    let ping = conn.cmd("ping s3first");
    let ping: Value = serde_json::from_str(&ping).unwrap_or_else(|e| panic!("{ping:?}: {e}"));
    assert_eq!(ping["Success"], true, "{ping}");
    assert_eq!(ping["From"], "s3first", "{ping}");
    // EOF from us ends the remote session, which closes the bridge.
    conn.half_close();
    conn.set_read_timeout(secs(10));
    assert_eq!(conn.read_to_end(), b"", "nothing after the ping reply");

    // A service nobody listens on: an ERROR line, quickly.
    let mut conn = first.connect();
    let t = Instant::now();
    conn.send(b"connect s3last nosvc \n");
    let reply = conn.line();
    assert!(reply.starts_with("ERROR: "), "{reply:?}");
    assert!(t.elapsed() < secs(5), "{reply:?} took {:?}", t.elapsed());

    // The real `receptorctl connect` needs a TTY on stdin: run it under a pty.
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PTY_CONNECT)
        .arg(receptorctl())
        .arg(&first.socket)
        .arg("s3last");
    let out = output_within(cmd, CMD_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(r#"{"NodeID":"s3last"}"#),
        "receptorctl connect under a pty: {}",
        show(&out)
    );
    eprintln!(
        "receptorctl connect printed the remote greeting: {}; stdout {text:?}",
        text.contains("Receptor Control, node s3last")
    );

    // An unknown node fails at once (like `ping nosuchnode`), not after
    // the 15 s dial timeout.
    let mut conn = first.connect();
    let t = Instant::now();
    conn.send(b"connect nosuchnode control \n");
    let reply = conn.line();
    let elapsed = t.elapsed();
    assert_eq!(
        reply, "ERROR: no route to node",
        "connect to an unknown node (after {elapsed:?})"
    );
    assert!(elapsed < secs(5), "{reply:?} took {elapsed:?}");
}

/// Runs `receptorctl --socket SOCK connect NODE control` with a pty as its
/// stdin, types a status request, waits for the reply, then sends ^D (EOF).
/// Prints receptorctl's stdout; exits with its exit code.
const PTY_CONNECT: &str = r#"
import os, pty, select, subprocess, sys, time
rc, sock, node = sys.argv[1:4]
master, slave = pty.openpty()
p = subprocess.Popen([rc, "--socket", sock, "connect", node, "control"],
                     stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
os.close(slave)
os.write(master, b'{"command":"status","requested_fields":["NodeID"]}\n')
out = b""
deadline = time.time() + 20
while time.time() < deadline and b'"NodeID"' not in out:
    r, _, _ = select.select([p.stdout], [], [], 0.5)
    if r:
        d = os.read(p.stdout.fileno(), 4096)
        if not d:
            break
        out += d
os.write(master, b"\x04")
try:
    p.wait(timeout=10)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
out += p.stdout.read()
sys.stdout.buffer.write(out)
sys.stderr.buffer.write(p.stderr.read())
sys.exit(p.returncode if p.returncode >= 0 else 99)
"#;

#[test]
fn two_hundred_concurrent_streams_three_hops() {
    const CONNS: usize = 200;
    const LEN: usize = 64 * 1024;
    let echo = tcp_echo_server();
    let (p0, p1, p2, pt) = (free_port(), free_port(), free_port(), free_port());
    let n0 = Node::start("s4n0", &[listener(p0, 1.0), tcp_client("echo", echo)]);
    let _n1 = Node::start("s4n1", &[peer(p0, 1.0), listener(p1, 1.0)]);
    let _n2 = Node::start("s4n2", &[peer(p1, 1.0), listener(p2, 1.0)]);
    let n3 = Node::start("s4n3", &[peer(p2, 1.0), tcp_server(pt, "s4n0", "echo")]);
    wait_for_service(&n3, "s4n0", "echo");
    // Make sure the listener is up before the burst.
    drop(connect_tcp(pt));

    let started = Instant::now();
    let barrier = Arc::new(Barrier::new(CONNS));
    let clients: Vec<JoinHandle<Result<Vec<u8>, String>>> = (0..CONNS)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let conn = TcpStream::connect(("127.0.0.1", pt)).map_err(|e| e.to_string())?;
                conn.set_read_timeout(Some(secs(60))).expect("timeout");
                conn.set_write_timeout(Some(secs(60))).expect("timeout");
                let writer = send_stream(conn.try_clone().expect("clone"), 1000 + i as u64, LEN);
                let mut got = Vec::new();
                let read = (&conn).read_to_end(&mut got);
                writer.join().map_err(|_| "writer panicked".to_string())?;
                read.map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
                Ok(got)
            })
        })
        .collect();
    let mut bad = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        match c.join() {
            Ok(Ok(got)) if got == Gen::bytes(1000 + i as u64, LEN) => {}
            Ok(Ok(got)) => bad.push(format!("#{i}: wrong echo ({} bytes)", got.len())),
            Ok(Err(e)) => bad.push(format!("#{i}: {e}")),
            Err(_) => bad.push(format!("#{i}: client thread panicked")),
        }
    }
    eprintln!(
        "two_hundred_concurrent_streams_three_hops: {CONNS} echoes in {:?}",
        started.elapsed()
    );
    assert!(
        bad.is_empty(),
        "{} of {CONNS} streams failed: {:?}\n{}\n{}",
        bad.len(),
        &bad[..bad.len().min(10)],
        n0.log_tail(20),
        n3.log_tail(20)
    );
}

#[test]
fn unix_socket_proxy_round_trip() {
    let dir = TempDir::new("s5");
    let echo_path = dir.path.join("echo.sock");
    let proxy_path = dir.path.join("proxy.sock");
    unix_echo_server(&echo_path);
    let pa = free_port();
    let a = Node::start(
        "s5a",
        &[
            listener(pa, 1.0),
            format!("- unix-socket-client: {{service: usock, filename: {echo_path:?}}}"),
        ],
    );
    let b = Node::start(
        "s5b",
        &[
            peer(pa, 1.0),
            format!(
                "- unix-socket-server: {{filename: {proxy_path:?}, permissions: 0600, \
                 remotenode: s5a, remoteservice: usock}}"
            ),
        ],
    );
    wait_for_service(&b, "s5a", "usock");
    let ad = find_ad(&b.status(), "s5a", "usock").expect("usock ad");
    assert_eq!(ad["ConnType"], 1, "{ad}");
    assert!(
        wait_until(secs(10), || proxy_path.exists()),
        "no {proxy_path:?}"
    );

    let data = Gen::bytes(0x5eed_0005, 256 * 1024);
    let conn = UnixStream::connect(&proxy_path).expect("connect proxy socket");
    conn.set_read_timeout(Some(secs(30))).expect("timeout");
    let mut w = conn.try_clone().expect("clone");
    let to_send = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&to_send).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
    });
    let mut got = Vec::new();
    let read = (&conn).read_to_end(&mut got);
    writer.join().expect("writer");
    read.unwrap_or_else(|e| {
        panic!(
            "read after {} bytes: {e}\n{}\n{}",
            got.len(),
            a.log_tail(20),
            b.log_tail(20)
        )
    });
    assert_eq!(got.len(), data.len(), "echo length");
    assert!(got == data, "echo differs");
}

#[test]
fn udp_proxy_round_trip() {
    let echo = udp_echo_server();
    let (pa, pu) = (free_port(), free_port());
    let a = Node::start(
        "s6a",
        &[
            listener(pa, 1.0),
            format!("- udp-client: {{service: uecho, address: \"127.0.0.1:{echo}\"}}"),
        ],
    );
    let b = Node::start(
        "s6b",
        &[
            peer(pa, 1.0),
            format!(
                "- udp-server: {{port: {pu}, bindaddr: 127.0.0.1, remotenode: s6a, \
                 remoteservice: uecho}}"
            ),
        ],
    );
    wait_for_service(&b, "s6a", "uecho");

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(secs(15))).expect("timeout");
    let sent: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("datagram {i:02} {}", "x".repeat(i * 50)).into_bytes())
        .collect();
    for d in &sent {
        sock.send_to(d, ("127.0.0.1", pu)).expect("send_to");
    }
    let mut want: HashSet<Vec<u8>> = sent.into_iter().collect();
    let mut buf = vec![0u8; 65536];
    while !want.is_empty() {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from.port(), pu, "reply from {from}");
                assert!(
                    want.remove(&buf[..n]),
                    "unexpected datagram {:?}",
                    String::from_utf8_lossy(&buf[..n])
                );
            }
            Err(e) => panic!(
                "{} datagrams never echoed ({e})\n{}\n{}",
                want.len(),
                a.log_tail(20),
                b.log_tail(20)
            ),
        }
    }
}

#[test]
fn tcp_client_dial_failure_closes_stream_promptly() {
    let closed = free_port(); // nothing listens here
    let (pa, pt) = (free_port(), free_port());
    let a = Node::start("s7a", &[listener(pa, 1.0), tcp_client("dead", closed)]);
    let b = Node::start("s7b", &[peer(pa, 1.0), tcp_server(pt, "s7a", "dead")]);
    wait_for_service(&b, "s7a", "dead");

    let mut conn = connect_tcp(pt);
    conn.set_read_timeout(Some(secs(5))).expect("timeout");
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let r = conn.read(&mut buf);
    let elapsed = t.elapsed();
    match r {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes from a dead service"),
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
            panic!(
                "stream still open after {elapsed:?} though the dial failed\n{}\n{}",
                a.log_tail(20),
                b.log_tail(20)
            )
        }
        Err(e) => eprintln!("dial failure seen as {e} after {elapsed:?}"),
    }
    assert!(elapsed < secs(5), "took {elapsed:?}");
}

#[test]
fn proxy_advertisements_in_status() {
    let (tcp_port, udp_port) = (free_port(), udp_echo_server());
    let (pa, pb) = (free_port(), free_port());
    let _a = Node::start(
        "s8a",
        &[
            listener(pa, 1.0),
            tcp_client("tproxy", tcp_port),
            format!("- udp-client: {{service: uproxy, address: \"127.0.0.1:{udp_port}\"}}"),
        ],
    );
    let _b = Node::start("s8b", &[peer(pa, 1.0), listener(pb, 1.0)]);
    let c = Node::start("s8c", &[peer(pb, 1.0)]);
    wait_for_service(&c, "s8a", "tproxy");
    wait_for_service(&c, "s8a", "uproxy");

    let st = c.ctl_status();
    let tcp = find_ad(&st, "s8a", "tproxy").expect("tproxy ad");
    assert_eq!(tcp["ConnType"], 1, "{tcp}");
    assert_eq!(
        tcp["Tags"],
        json!({"type": "TCP Proxy", "address": format!("127.0.0.1:{tcp_port}")}),
        "{tcp}"
    );
    let udp = find_ad(&st, "s8a", "uproxy").expect("uproxy ad");
    assert_eq!(udp["ConnType"], 0, "{udp}");
    assert_eq!(
        udp["Tags"],
        json!({"type": "UDP Proxy", "address": format!("127.0.0.1:{udp_port}")}),
        "{udp}"
    );

    // The text status renders them too (ConnType names, Python dict tags).
    let out = c.ctl(&["status"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |svc: &str| {
        text.lines()
            .find(|l| l.starts_with("s8a ") && l.contains(&format!(" {svc} ")))
            .unwrap_or_else(|| panic!("no {svc} row in\n{text}"))
            .to_string()
    };
    let (trow, urow) = (row("tproxy"), row("uproxy"));
    assert!(trow.contains(" Stream "), "{trow}");
    assert!(trow.contains("'type': 'TCP Proxy'"), "{trow}");
    assert!(urow.contains(" Datagram "), "{urow}");
    assert!(urow.contains("'type': 'UDP Proxy'"), "{urow}");
}
