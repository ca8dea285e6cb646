//! Hostile peers and clients (the hardening issue): a raw TCP peer that
//! speaks the backend framing by hand forges node IDs, floods fake nodes
//! and advertisements, and opens hundreds of connections; the node must
//! keep routing for its real peers, stay within a memory bound, and log
//! what it refused. Also: oversized config files, a datadir that is a
//! file, bad names in submit and connect, and the control client limit.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// One backend frame: 2-byte little-endian length, then the message.
fn frame(msg: &[u8]) -> Vec<u8> {
    assert!(msg.len() <= 65535, "test frame too long: {}", msg.len());
    let mut out = (msg.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

fn routing(node: &str, forwarding: &str, id: &str, seq: u64, conns: Value) -> Vec<u8> {
    let body = json!({
        "NodeID": node,
        "UpdateID": id,
        "UpdateEpoch": 1,
        "UpdateSequence": seq,
        "Connections": conns,
        "ForwardingNode": forwarding,
        "SuspectedDuplicate": 0,
    });
    let mut msg = vec![1u8];
    msg.extend(serde_json::to_vec(&body).unwrap());
    frame(&msg)
}

fn ad(node: &str, service: &str) -> Vec<u8> {
    let body = json!({
        "NodeID": node,
        "Service": service,
        "Time": "2026-01-01T00:00:00Z",
        "ConnType": 1,
        "Tags": {"type": "x"},
        "WorkCommands": null,
        "Cancel": false,
    });
    let mut msg = vec![2u8];
    msg.extend(serde_json::to_vec(&body).unwrap());
    frame(&msg)
}

/// A peer that speaks the backend protocol by hand; what the node sends
/// it is read and thrown away on a thread of its own, so the node's link
/// drains.
struct RawPeer {
    s: TcpStream,
    id: String,
    seq: u64,
    /// Advertisements the node has sent us.
    ads: Arc<AtomicUsize>,
}

impl RawPeer {
    fn connect(port: u16, id: &str) -> RawPeer {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to listener");
        let r = s.try_clone().unwrap();
        let ads = Arc::new(AtomicUsize::new(0));
        let counted = ads.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, r);
            let mut len = [0u8; 2];
            let mut msg = vec![0u8; 65536];
            while r.read_exact(&mut len).is_ok() {
                let n = u16::from_le_bytes(len) as usize;
                if r.read_exact(&mut msg[..n]).is_err() {
                    break;
                }
                if n > 0 && msg[0] == 2 {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        RawPeer {
            s,
            id: id.to_string(),
            seq: 0,
            ads,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> bool {
        self.s.write_all(bytes).is_ok()
    }

    /// The initial message, as `node` forwarded by `forwarding`.
    fn hello_as(&mut self, node: &str, forwarding: &str) -> bool {
        self.seq += 1;
        let m = routing(
            node,
            forwarding,
            &format!("h{}", self.seq),
            self.seq,
            json!({}),
        );
        self.send(&m)
    }

    /// Our update listing `target` (the node under test), which makes us
    /// a full peer and keeps the link from going idle.
    fn update_listing(&mut self, target: &str) -> bool {
        self.seq += 1;
        let id = format!("{}-{}", self.id, self.seq);
        let m = routing(&self.id, &self.id, &id, self.seq, json!({ target: 1 }));
        self.send(&m)
    }
}

/// VmRSS and VmHWM of a process, in MB.
fn memory_mb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Node `a` listening, node `b` peered to it, both routed.
fn pair(tag: &str) -> (Node, Node, u16) {
    let port = free_port();
    let a = Node::start(&format!("{tag}a"), &[listener(port, 1.0)]);
    let b = Node::start(&format!("{tag}b"), &[peer(port, 1.0)]);
    assert!(
        wait_until(secs(15), || a.route(&b.id).is_some()
            && b.route(&a.id).is_some()),
        "pair never routed\n{}",
        a.log_tail(30)
    );
    (a, b, port)
}

fn routed_both_ways(a: &Node, b: &Node) -> bool {
    a.route(&b.id).as_deref() == Some(b.id.as_str())
        && b.route(&a.id).as_deref() == Some(a.id.as_str())
        && a.connections().contains(&b.id)
}

#[test]
fn regression_forged_peer_ids_cannot_cut_a_node_off() {
    let (a, b, port) = pair("fid");
    let huge = "x".repeat(65_000);
    let cases: [(&str, &str); 6] = [
        ("m1", &huge),
        (&huge, "m2"),
        ("localhost", "localhost"),
        ("LocalHost", "LocalHost"),
        ("", ""),
        ("../../x", "../../x"),
    ];
    // Each keeps trying (as a forged peer would) for longer than the idle
    // timeout of the real link (21 s).
    let mut attackers: Vec<RawPeer> = Vec::new();
    let until = Instant::now() + secs(25);
    while Instant::now() < until {
        attackers.retain(|p| p.s.peer_addr().is_ok());
        for (node, fwd) in cases {
            let mut p = RawPeer::connect(port, "forged");
            p.hello_as(node, fwd);
            attackers.push(p);
        }
        std::thread::sleep(Duration::from_secs(1));
        assert!(routed_both_ways(&a, &b), "{}", a.log_tail(30));
    }
    let log = a.log();
    assert!(!log.contains("Cannot send message"), "{}", a.log_tail(30));
    for line in [
        "because its node ID is 65000 bytes long (at most 253)",
        "because the NodeID \"xxxxxxxx",
        "because its node ID is reserved (it means the local node)",
        "because its node ID is empty",
        "because its node ID contains a control character or '/'",
    ] {
        assert!(log.contains(line), "log lacks {line:?}\n{}", a.log_tail(30));
    }
    // No 65 KB lines: long names are cut short in the log.
    assert!(log.lines().all(|l| l.len() < 2000));
    let status = a.status();
    let known = status["KnownConnectionCosts"].as_object().unwrap();
    assert!(
        known
            .keys()
            .all(|k| k.len() <= 253 && !k.is_empty() && k != "localhost")
    );
    let (rss, hwm) = memory_mb(a.daemon_pid().unwrap());
    eprintln!("forged ids: RSS {rss} MB, peak {hwm} MB");
    assert!(hwm < 100, "VmHWM {hwm} MB");
}

#[test]
fn floods_of_fake_nodes_and_ads_are_bounded_and_real_routes_keep_working() {
    let (a, b, port) = pair("fl");
    let pid = a.daemon_pid().unwrap();
    let mut m = RawPeer::connect(port, "mallory");
    m.hello_as("mallory", "mallory");
    std::thread::sleep(Duration::from_millis(500));
    m.update_listing(&a.id);
    assert!(wait_until(secs(10), || a
        .connections()
        .contains(&"mallory".to_string())));

    // 100,000 made-up nodes, then 100,000 advertisements.
    let mut batch = Vec::new();
    for i in 0..100_000u32 {
        let conns = json!({ "mallory": 1 });
        batch.extend(routing(
            &format!("fake{i}"),
            "mallory",
            &format!("f{i}"),
            1,
            conns,
        ));
        if batch.len() > 1 << 20 {
            assert!(m.send(&batch), "node closed the flooding link");
            batch.clear();
        }
    }
    for i in 0..100_000u32 {
        batch.extend(ad(&format!("adnode{i}"), "svc"));
        if batch.len() > 1 << 20 {
            assert!(m.send(&batch), "node closed the flooding link");
            batch.clear();
        }
    }
    m.send(&batch);
    m.update_listing(&a.id);
    // a has taken what it will take once its table stops growing.
    let count = |v: &Value, key: &str| v[key].as_object().map_or(0, |o| o.len());
    let mut last = (0, 0);
    assert!(wait_until(secs(60), || {
        let st = a.status();
        let now = (
            count(&st, "KnownConnectionCosts"),
            st["Advertisements"].as_array().map_or(0, Vec::len),
        );
        let settled = now == last && now.0 > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(500));
        settled
    }));
    let (nodes, ads) = last;
    assert!(nodes <= 10_000 + 10, "{nodes} nodes kept");
    assert!(ads <= 20_000 + 10, "{ads} ads kept");
    assert!(routed_both_ways(&a, &b), "{}", a.log_tail(30));
    let st_b = b.status();
    assert!(count(&st_b, "KnownConnectionCosts") <= 10_000 + 10);

    let (rss_flood, _) = memory_mb(pid);
    eprintln!("flood: RSS {rss_flood} MB after the floods");
    // 500 new peers, each handed the known ads as its link drains, and
    // each replaying some of them.
    let mut peers = Vec::new();
    for i in 0..500u32 {
        let mut p = RawPeer::connect(port, &format!("r{i}"));
        p.hello_as(&p.id.clone(), &p.id.clone());
        peers.push(p);
    }
    std::thread::sleep(Duration::from_millis(500));
    for (i, p) in peers.iter_mut().enumerate() {
        p.update_listing(&a.id);
        let mut replay = Vec::new();
        for j in 0..200 {
            replay.extend(ad(&format!("adnode{}", i * 200 + j), "svc"));
        }
        p.send(&replay);
    }
    std::thread::sleep(Duration::from_secs(10));
    let (rss_with, hwm) = memory_mb(pid);
    assert!(routed_both_ways(&a, &b), "{}", a.log_tail(30));
    // Every new peer is handed every ad a knows, as its link drains (the
    // last few, once the others have gone: all 500 would be 1.7 GB).
    let mut last: Vec<RawPeer> = peers.drain(495..).collect();
    drop(peers);
    let mut ticks = 0;
    let all_handed = wait_until(secs(90), || {
        ticks += 1;
        if ticks % 100 == 0 {
            // Keep the links from going idle (21 s).
            for p in last.iter_mut() {
                p.update_listing(&a.id);
            }
        }
        last.iter().all(|p| p.ads.load(Ordering::Relaxed) >= ads)
    });
    let least = last.iter().map(|p| p.ads.load(Ordering::Relaxed)).min();
    assert!(all_handed, "a new peer got only {least:?} of {ads} ads");
    drop(last);
    std::thread::sleep(Duration::from_secs(5));
    let (rss_after, _) = memory_mb(pid);
    eprintln!(
        "flood: {nodes} nodes, {ads} ads; RSS {rss_with} MB with 500 peers (peak {hwm} MB), {rss_after} MB after"
    );
    // Measured (debug build): 60-90 MB after the floods, 130-230 MB with
    // the 500 peers, about as much after they left (freed heap is not
    // handed back to the OS); before the bounds, 1.0 GB. The bound leaves
    // room for a busy machine.
    assert!(hwm < 300, "VmHWM {hwm} MB");
    assert!(rss_after < 300, "VmRSS {rss_after} MB after the peers left");
    assert!(routed_both_ways(&a, &b), "{}", a.log_tail(30));

    let log = a.log();
    // The "(n more like this not shown)" suffix appears only when a line of
    // the same kind comes after the 10 s window, which this flood may not
    // produce: the rate limiter's unit tests pin it, the log size below
    // proves the limit.
    for line in [
        "nodes are known already (node maxnodes)",
        "advertisements are known already (node maxadvertisements)",
        "Known Connections: ",
    ] {
        assert!(log.contains(line), "log lacks {line:?}\n{}", a.log_tail(30));
    }
    // The table is summarised, not dumped, on every recompute.
    let rows = log.lines().filter(|l| l.contains("   fake")).count();
    assert!(rows < 200, "{rows} table rows logged");
    let mb = log.len() / (1 << 20);
    eprintln!("flood: log of node a is {mb} MB (debug level)");
    assert!(mb < 64, "log is {mb} MB");
}

/// Runs receptor with `yaml` as its config file and returns its output.
fn run_config(dir: &TempDir, yaml: &str) -> (std::process::Output, Duration) {
    let path = dir.path.join("receptor.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(RECEPTOR);
    cmd.arg("-c").arg(&path).current_dir(&dir.path);
    let t0 = Instant::now();
    let out = output_within(cmd, secs(30));
    (out, t0.elapsed())
}

#[test]
fn a_50mb_config_file_is_refused_before_parsing() {
    let dir = TempDir::new("bigcfg");
    let mut yaml = String::from("- node:\n    id: big\n- tcp-listener:\n    port: 1\n");
    let item = "- log-level: info\n";
    while yaml.len() < 50 << 20 {
        yaml.push_str(item);
    }
    let (out, took) = run_config(&dir, &yaml);
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(err.contains("file is larger than 1048576 bytes"), "{err}");
    assert!(took < secs(5), "took {took:?}");
}

#[test]
fn a_datadir_that_is_a_file_fails_at_startup() {
    let dir = TempDir::new("ddfile");
    let file = dir.path.join("notadir");
    std::fs::write(&file, "x").unwrap();
    let port = free_port();
    let yaml = format!(
        "- node:\n    id: dd\n    datadir: {file:?}\n- tcp-listener:\n    port: {port}\n    bindaddr: 127.0.0.1\n"
    );
    let (out, took) = run_config(&dir, &yaml);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let line = format!("node: datadir {}", file.display());
    assert!(text.contains(&line), "{text}");
    // One log line (and the usual `Error:` of a failed start), nothing else.
    let logged = text.lines().filter(|l| l.starts_with("ERROR")).count();
    assert_eq!(logged, 1, "{text}");
    assert!(!text.contains("Initialization complete"), "{text}");
    assert!(took < secs(10));
}

#[test]
fn bad_names_in_submit_and_connect_fail_at_once() {
    let port = free_port();
    let n = Node::start("names", &[listener(port, 1.0)]);
    let long = "x".repeat(1 << 20);
    for (node, why) in [
        ("", "is empty"),
        (long.as_str(), "is 1048576 bytes long (at most 253)"),
        ("../../x", "contains a control character or '/'"),
    ] {
        let req =
            json!({"command": "work", "subcommand": "submit", "node": node, "worktype": "echo"});
        let mut c = n.connect();
        let t0 = Instant::now();
        let reply = c.cmd(&req.to_string());
        assert!(
            reply.starts_with("ERROR: invalid node name: node "),
            "{reply:.200}"
        );
        assert!(reply.contains(why), "{reply:.200}");
        assert!(reply.len() < 300, "reply is {} bytes", reply.len());
        assert!(t0.elapsed() < secs(2));
    }
    // No unit was made for any of them.
    let units = std::fs::read_dir(n.units_dir()).map_or(0, |d| d.count());
    assert_eq!(units, 0);

    let t0 = Instant::now();
    let reply = n.connect().cmd("connect localhost 123456789");
    assert_eq!(
        reply,
        "ERROR: service name 123456789 is 9 bytes long (at most 8)"
    );
    let reply = n
        .connect()
        .cmd(&format!("connect {} control", "y".repeat(300)));
    assert!(reply.contains("is 300 bytes long (at most 253)"), "{reply}");
    assert!(t0.elapsed() < secs(2), "took {:?}", t0.elapsed());
    // receptorctl sees the same at once.
    let t0 = Instant::now();
    let out = n.ctl(&[
        "work",
        "submit",
        "--node",
        "../../x",
        "--no-payload",
        "echo",
    ]);
    assert!(!out.status.success());
    assert!(show(&out).contains("invalid node name"), "{}", show(&out));
    assert!(t0.elapsed() < secs(10));
}

fn tcp_client(port: u16) -> (BufReader<TcpStream>, TcpStream) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    let _ = r.read_line(&mut l);
    l
}

#[test]
fn control_clients_are_bounded_and_idle_ones_make_room() {
    let port = free_port();
    let ctl_port = free_port();
    let n = Node::start(
        "clients",
        &[
            listener(port, 1.0),
            format!(
                "- control-service:\n    service: ctl2\n    tcplisten: 127.0.0.1:{ctl_port}\n    maxclients: 8"
            ),
        ],
    );
    let pid = n.daemon_pid().unwrap();
    let base = threads(pid);
    // 2,000 idle clients: at most 8 are served at a time.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", ctl_port)) {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let t = threads(pid);
    eprintln!(
        "control clients: {} connected, {t} threads (base {base})",
        idle.len()
    );
    assert!(t <= base + 10, "{t} threads (base {base})");
    // A new client is still served: the longest idle one made room.
    let (mut r, mut w) = tcp_client(ctl_port);
    assert!(read_line(&mut r).starts_with("Receptor Control, node clients"));
    w.write_all(b"status\n").unwrap();
    assert!(read_line(&mut r).starts_with('{'));
    drop((r, w));
    drop(idle);

    // Busy clients (bridged to the node's own control service, as
    // `receptorctl connect` is) keep their slots...
    std::thread::sleep(Duration::from_millis(500));
    let mut busy = Vec::new();
    for _ in 0..8 {
        let (mut r, mut w) = tcp_client(ctl_port);
        assert!(read_line(&mut r).starts_with("Receptor Control"));
        w.write_all(b"connect localhost control\n").unwrap();
        assert_eq!(read_line(&mut r), "Connecting\n");
        busy.push((r, w));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // ...so a ninth is refused with a clear line.
    let (mut r, _w) = tcp_client(ctl_port);
    let line = read_line(&mut r);
    assert_eq!(
        line,
        "ERROR: too many control service clients (8); try again later\n"
    );
    // The bridged sessions still work.
    for (r, w) in busy.iter_mut() {
        assert!(read_line(r).starts_with("Receptor Control, node clients"));
        w.write_all(b"status\n").unwrap();
        assert!(read_line(r).starts_with('{'));
    }
    // The Unix socket has its own budget and still answers.
    assert!(n.status()["NodeID"] == "clients");
    let log = n.log();
    assert!(log.contains("closed the longest idle one for a new client"));
    assert!(log.contains("Control service: refused a client: 8 clients are busy (maxclients)"));
}

#[test]
fn floods_of_junk_frames_cannot_fill_the_log() {
    let (a, b, port) = pair("junk");
    let mut m = RawPeer::connect(port, "junker");
    m.hello_as("junker", "junker");
    std::thread::sleep(Duration::from_millis(500));
    m.update_listing(&a.id);
    assert!(wait_until(secs(10), || a
        .connections()
        .contains(&"junker".to_string())));
    let mut batch = Vec::new();
    for i in 0..50_000u64 {
        // A data message between two hashes nobody has...
        let mut data = vec![0u8, 30, 0, 0];
        data.extend(i.to_be_bytes());
        data.extend((!i).to_be_bytes());
        data.extend([0u8; 16]);
        batch.extend(frame(&data));
        // ...and a frame that does not decode.
        batch.extend(frame(b"\x01{"));
    }
    assert!(m.send(&batch), "node closed the link");
    m.update_listing(&a.id);
    std::thread::sleep(Duration::from_secs(3));
    assert!(routed_both_ways(&a, &b), "{}", a.log_tail(30));
    let log = a.log();
    let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
    let (unknown, undecodable) = (count("hash not found"), count("Error decoding message"));
    eprintln!("junk: {unknown} hash lines, {undecodable} decode lines for 50,000 frames each");
    assert!((1..=30).contains(&unknown), "{unknown} lines");
    assert!((1..=30).contains(&undecodable), "{undecodable} lines");
}

/// A raw WebSocket client to 127.0.0.1:`port`, upgraded.
fn ws_raw(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to ws-listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "upgrade reply cut short");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame: `first` is FIN/RSV/opcode, `len` the length the
/// header claims (which may be more than `payload` holds).
fn ws_frame(first: u8, len: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match len {
        0..=125 => f.push(0x80 | len as u8),
        126..=65_535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
    }
    f.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    f.extend_from_slice(payload);
    f
}

/// Garbage datagrams and broken WebSocket streams at a node with a UDP
/// and a WebSocket peer: each bad WebSocket connection is closed with a
/// logged error, the junk datagrams are logged and dropped, and the two
/// real links stay up and carry pings throughout.
#[test]
fn udp_and_websocket_garbage_leaves_the_other_links_serving() {
    let udp_port = common::free_udp_port();
    let ws_port = free_port();
    let hub = Node::start(
        "hub",
        &[
            common::udp_listener(udp_port),
            format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {ws_port}}}"),
        ],
    );
    let _u = Node::start("u", &[common::udp_peer(udp_port)]);
    let _w = Node::start(
        "w",
        &[format!(
            "- ws-peer: {{address: \"ws://127.0.0.1:{ws_port}/\"}}"
        )],
    );
    let up = wait_until(secs(15), || {
        hub.route("u").is_some() && hub.route("w").is_some()
    });
    assert!(up, "{}", hub.log_tail(20));

    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = vec![0x01u8; 65_507];
    for d in [&b""[..], b"\x01{", b"\xff\xff", b"\x03\x00\x00", &big] {
        junk.send_to(d, ("127.0.0.1", udp_port)).unwrap();
    }
    let bad_streams: [(&str, Vec<u8>); 6] = [
        ("text that is not UTF-8", ws_frame(0x81, 2, b"\xff\xfe")),
        ("a reserved opcode", ws_frame(0x83, 1, b"x")),
        ("a reserved bit", ws_frame(0xc2, 1, b"x")),
        ("a 2^62-byte frame header", ws_frame(0x82, 1 << 62, b"")),
        (
            "an oversized message",
            ws_frame(0x82, 70_000, &vec![0; 70_000]),
        ),
        ("an unmasked frame", vec![0x82, 1, 0]),
    ];
    for (what, bytes) in bad_streams {
        let before = hub.log().matches("Backend receiving error").count();
        let mut s = ws_raw(ws_port);
        // A write may fail once the node has closed on what it read so far.
        let _ = s.write_all(&bytes);
        let mut rest = Vec::new();
        assert!(
            s.read_to_end(&mut rest).is_ok(),
            "{what}: the link stayed open"
        );
        let logged = wait_until(secs(10), || {
            hub.log().matches("Backend receiving error").count() > before
        });
        assert!(logged, "{what}: nothing logged\n{}", hub.log_tail(10));
    }
    let decoded = wait_until(secs(10), || {
        hub.log().contains("Error decoding message from backend")
    });
    assert!(decoded, "{}", hub.log_tail(20));

    let mut conns = hub.connections();
    conns.sort();
    assert_eq!(conns, ["u", "w"]);
    for peer in ["u", "w"] {
        let ping = hub.ctl(&["ping", peer, "--count", "1"]);
        assert!(ping.status.success(), "{peer}: {}", show(&ping));
    }
    assert!(!hub.log().contains("panicked"), "{}", hub.log_tail(20));
}
