//! Live reload: `receptorctl reload` and SIGHUP re-read the config file and
//! apply backend changes, leave everything else (and running work) alone,
//! and refuse a bad file without changing anything.

// Tests start processes of their own; the reaper rule (clippy.toml) is
// the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{
    Node, free_port, free_udp_port, listener, peer, secs, show, udp_listener, udp_peer, wait_until,
};

/// `receptorctl reload`: its exit code and what it printed.
fn reload(node: &Node) -> (i32, String) {
    let out = node.ctl(&["reload"]);
    (out.status.code().unwrap_or(-1), show(&out))
}

fn reload_ok(node: &Node) {
    let (code, text) = reload(node);
    assert_eq!(code, 0, "{text}\n{}", node.log_tail(20));
    assert!(text.contains("Reload successful"), "{text}");
}

fn sorted_connections(node: &Node) -> Vec<String> {
    let mut c = node.connections();
    c.sort();
    c
}

#[test]
fn a_reload_adds_removes_and_changes_backends() {
    let (pb, pc) = (free_port(), free_port());
    // b and c are relays to d; a reaches d through them.
    let b = Node::start("b", &[listener(pb, 1.0)]);
    let _c = Node::start("c", &[listener(pc, 1.0)]);
    let _d = Node::start("d", &[peer(pb, 1.0), peer(pc, 1.0)]);
    let a = Node::start("a", &[peer(pb, 1.0)]);
    assert!(wait_until(secs(15), || a.route("d").as_deref() == Some("b")));

    // Added: a peer to c.
    a.set_items(&[peer(pb, 1.0), peer(pc, 1.0)]);
    reload_ok(&a);
    assert!(
        wait_until(secs(15), || sorted_connections(&a) == ["b", "c"]),
        "{}",
        a.log_tail(20)
    );

    // Changed: a-b costs 4 (both ends must agree, so b's listener gives a
    // that cost and keeps 1 for d). The route to d moves to c.
    let b_items = [format!(
        "- tcp-listener: {{bindaddr: 127.0.0.1, port: {pb}, cost: 1.0, nodecost: {{a: 4.0}}}}"
    )];
    b.set_items(&b_items);
    reload_ok(&b);
    a.set_items(&[peer(pb, 4.0), peer(pc, 1.0)]);
    reload_ok(&a);
    let via_c = || {
        let st = a.status();
        common::route(&st, "d").as_deref() == Some("c")
            && st["Connections"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x["NodeID"] == "b" && x["Cost"] == 4.0))
    };
    assert!(wait_until(secs(15), via_c), "{}", a.status());

    // Removed: the peer to c. The route to d goes back through b.
    a.set_items(&[peer(pb, 4.0)]);
    reload_ok(&a);
    assert!(
        wait_until(secs(15), || sorted_connections(&a) == ["b"]
            && a.route("d").as_deref() == Some("b")),
        "{}",
        a.status()
    );
    assert!(wait_until(secs(15), || a.route("c").as_deref() == Some("b")));
    assert!(a.log().contains("Reloaded the configuration"));
}

#[test]
fn a_removed_listener_stops_listening_and_a_changed_one_listens_anew() {
    let (p1, p2) = (free_port(), free_port());
    let hub = Node::start("hub", &[listener(p1, 1.0)]);
    let spoke = Node::start("spoke", &[peer(p1, 1.0)]);
    assert!(wait_until(secs(15), || hub.connections() == ["spoke"]));
    // The listener moves to another port: the old one closes (with its
    // session), the new one accepts.
    hub.set_items(&[listener(p2, 1.0)]);
    reload_ok(&hub);
    assert!(
        wait_until(secs(15), || !common::port_in_use(p1)),
        "old port still open"
    );
    assert!(wait_until(secs(15), || hub.connections().is_empty()));
    spoke.set_items(&[peer(p2, 1.0)]);
    reload_ok(&spoke);
    assert!(
        wait_until(secs(15), || hub.connections() == ["spoke"]),
        "{}",
        hub.log_tail(20)
    );
    // The same listener again on the first port: it binds at once.
    hub.set_items(&[listener(p2, 1.0), listener(p1, 1.0)]);
    reload_ok(&hub);
    assert!(common::port_in_use(p1));
}

#[test]
fn a_unit_running_during_a_reload_finishes_byte_exact() {
    let (pb, pu, pu2) = (free_port(), free_udp_port(), free_udp_port());
    let _worker = Node::start(
        "worker",
        &[
            listener(pb, 1.0),
            // Output in two halves with a pause between, so the reload
            // falls in the middle of the stream.
            "- work-command: {worktype: slowseq, command: sh, \
             params: \"-c 'seq 1 150000; sleep 3; seq 150001 300000'\"}"
                .to_string(),
        ],
    );
    let boss = Node::start("boss", &[peer(pb, 1.0), udp_listener(pu)]);
    assert!(wait_until(secs(15), || boss.route("worker").is_some()));
    let submit = boss.ctl(&["work", "submit", "slowseq", "--node", "worker", "-n"]);
    assert!(submit.status.success(), "{}", show(&submit));
    let text = String::from_utf8_lossy(&submit.stdout).to_string();
    let unit = text
        .lines()
        .find_map(|l| l.strip_prefix("Unit ID: "))
        .unwrap_or_else(|| panic!("no unit ID in {text}"))
        .trim()
        .to_string();
    // Reload twice while it runs: a backend changed, one added.
    std::thread::sleep(secs(1));
    boss.set_items(&[peer(pb, 1.0), udp_listener(pu2)]);
    reload_ok(&boss);
    let added = free_port();
    boss.set_items(&[peer(pb, 1.0), udp_listener(pu2), listener(added, 1.0)]);
    reload_ok(&boss);
    // Both reloads took effect: the UDP listener moved, the TCP one is up.
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", pu)).is_ok(),
        "old UDP port still bound"
    );
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", pu2)).is_err(),
        "new UDP port not bound"
    );
    assert!(common::port_in_use(added), "added listener not listening");
    let results = boss.ctl(&["work", "results", &unit]);
    assert!(results.status.success(), "{}", show(&results));
    let want: String = (1..=300_000).map(|i| format!("{i}\n")).collect();
    assert!(
        results.stdout == want.as_bytes(),
        "results differ: {} bytes, want {}",
        results.stdout.len(),
        want.len()
    );
    // The link to the worker was never touched.
    assert!(
        !boss.log().contains("Stopping backend tcp-peer"),
        "{}",
        boss.log_tail(30)
    );
}

#[test]
fn a_bad_file_changes_nothing() {
    let pb = free_port();
    let _b = Node::start("bb", &[listener(pb, 1.0)]);
    let items = [
        peer(pb, 1.0),
        "- work-command: {worktype: echo, command: cat}".to_string(),
    ];
    let a = Node::start("aa", &items);
    assert!(wait_until(secs(15), || a.connections() == ["bb"]));
    let good = a.status();

    // Does not parse: exit 4, and the peer (dropped in the bad file) stays.
    a.set_config(&format!("{}\n- tcp-peer: [unclosed", a.config_head()));
    let (code, text) = reload(&a);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains("ERRORCODE") || text.contains("Error"),
        "{text}"
    );
    // An unknown key is a parse error too.
    a.set_items(&["- tcp-peer: {address: \"127.0.0.1:1\", colour: blue}".to_string()]);
    assert_eq!(reload(&a).0, 4);

    // A changed work type cannot be reloaded: exit 3, in Go's words.
    a.set_items(&[
        peer(pb, 1.0),
        "- work-command: {worktype: echo, command: tac}".to_string(),
    ]);
    let (code, text) = reload(&a);
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("a non-reloadable config action 'work-command' was modified or added"),
        "{text}"
    );
    // Removed, with a backend change beside it: still refused, and the
    // backend change is not applied either.
    let refused_port = free_port();
    a.set_items(&[listener(refused_port, 1.0)]);
    let (code, text) = reload(&a);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("'work-command' was removed"), "{text}");
    assert!(
        !common::port_in_use(refused_port),
        "the refused listener was started"
    );
    // The dropped peer's link would close within moments if it had been applied.
    std::thread::sleep(secs(2));

    assert_eq!(a.connections(), ["bb"]);
    assert_eq!(a.status()["Connections"], good["Connections"]);
    let ping = a.ctl(&["ping", "bb", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
    assert!(a.log().contains("Reload not successful"));
}

#[test]
fn sighup_reloads_and_survives_a_bad_file() {
    let pb = free_port();
    let _b = Node::start("hb", &[listener(pb, 1.0)]);
    let a = Node::start("ha", &[listener(free_port(), 1.0)]);
    a.set_items(&[peer(pb, 1.0)]);
    a.signal(libc::SIGHUP);
    assert!(
        wait_until(secs(15), || a.connections() == ["hb"]),
        "{}",
        a.log_tail(20)
    );
    a.set_config("- this is: [not yaml");
    a.signal(libc::SIGHUP);
    assert!(wait_until(secs(10), || a
        .log()
        .contains("Reload not successful")));
    assert_eq!(a.connections(), ["hb"]);
}

#[test]
fn log_level_follows_a_reload() {
    let pb = free_port();
    let _b = Node::start("lb", &[listener(pb, 1.0)]);
    let a = Node::start("la", &[peer(pb, 1.0)]);
    assert!(wait_until(secs(15), || a.connections() == ["lb"]));
    let quiet = a
        .config_head()
        .replace("- log-level: debug", "- log-level: error");
    a.set_config(&format!("{quiet}{}\n", peer(pb, 1.0)));
    reload_ok(&a);
    let before = a.log().len();
    // Pings log at debug level when the level allows it.
    for _ in 0..3 {
        assert!(a.ctl(&["ping", "lb", "--count", "1"]).status.success());
    }
    let quiet_part = a.log()[before..].to_string();
    assert!(
        !quiet_part.contains("DEBUG") && !quiet_part.contains("INFO"),
        "{quiet_part}"
    );
    a.set_items(&[peer(pb, 1.0)]);
    reload_ok(&a);
    let before = a.log().len();
    assert!(a.ctl(&["ping", "lb", "--count", "1"]).status.success());
    assert!(
        wait_until(secs(5), || a.log()[before..].contains("DEBUG")),
        "{}",
        a.log_tail(10)
    );
}

#[test]
fn without_a_config_file_reload_says_so() {
    let dir = common::TempDir::new("nofile");
    let socket = dir.path.join("ctl.sock");
    let mut child = std::process::Command::new(common::RECEPTOR)
        .args(["--node", "id=nofile"])
        .arg(format!("datadir={}", dir.path.join("data").display()))
        .args(["--local-only", "--control-service"])
        .arg(format!("filename={}", socket.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn receptor");
    assert!(wait_until(secs(15), || socket.exists()));
    let mut cmd = std::process::Command::new(common::receptorctl());
    cmd.arg("--socket").arg(&socket).arg("reload");
    let out = common::output_within(cmd, common::CMD_TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(
        show(&out).contains("no configuration file was provided"),
        "{}",
        show(&out)
    );
}

#[test]
fn websocket_and_udp_backends_come_and_go_with_a_reload() {
    let (pw, pu) = (free_port(), free_udp_port());
    let ws_listener = format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {pw}, path: /mesh}}");
    let hub = Node::start("whub", &[ws_listener.clone(), udp_listener(pu)]);
    let _ws = Node::start(
        "wspoke",
        &[format!(
            "- ws-peer: {{address: \"ws://127.0.0.1:{pw}/mesh\"}}"
        )],
    );
    let _udp = Node::start("uspoke", &[udp_peer(pu)]);
    assert!(wait_until(secs(15), || sorted_connections(&hub)
        == ["uspoke", "wspoke"]));
    // Both listeners removed: their sessions end and their ports close.
    hub.set_items(&[]);
    reload_ok(&hub);
    assert!(
        wait_until(secs(15), || hub.connections().is_empty()),
        "{}",
        hub.status()
    );
    assert!(!common::port_in_use(pw), "the WebSocket port is still open");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", pu)).is_ok(),
        "the UDP port is still bound"
    );
    // Back again: the peers redial on their own.
    hub.set_items(&[ws_listener, udp_listener(pu)]);
    reload_ok(&hub);
    assert!(
        wait_until(secs(15), || sorted_connections(&hub)
            == ["uspoke", "wspoke"]),
        "{}",
        hub.log_tail(20)
    );
}

#[test]
fn a_backend_that_cannot_start_is_reported_and_the_rest_applies() {
    let pb = free_port();
    let _b = Node::start("sb", &[listener(pb, 1.0)]);
    let a = Node::start("sa", &[listener(free_port(), 1.0)]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    a.set_items(&[listener(port, 1.0), peer(pb, 1.0)]);
    let (code, text) = reload(&a);
    assert_eq!(code, 4, "{text}");
    assert!(
        text.contains(&format!("tcp-listener 127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        wait_until(secs(15), || a.connections() == ["sb"]),
        "{}",
        a.log_tail(20)
    );
    // Once the port is free, the next reload starts the listener.
    drop(taken);
    reload_ok(&a);
    assert!(common::port_in_use(port));
}
