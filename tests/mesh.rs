//! Multi-node tests: real receptor processes on 127.0.0.1 driven through the
//! real receptorctl 1.6.9 client (run via tests/run.sh).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{
    Node, TempDir, connection_ids, free_port, is_go_duration, listener, output_within, peer,
    port_in_use, route, secs, show, wait_until,
};
use serde_json::Value;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sorted NodeIDs of the `control` advertisements in a status object.
fn control_ad_nodes(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["Advertisements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["Service"] == "control")
        .filter_map(|a| a["NodeID"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The node IDs of a `receptorctl traceroute` output, checking each line
/// is `<n>: <node> in <go duration>` with n counting from 0.
fn traceroute_hops(out: &Output) -> Vec<String> {
    let text = stdout(out);
    let mut hops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let prefix = format!("{n}: ");
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let (node, dur) = rest
            .split_once(" in ")
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(is_go_duration(dur), "bad duration in {line:?}");
        hops.push(node.to_string());
    }
    hops
}

/// Runs `receptorctl traceroute <dest>` on `from` until the hops equal `want`
/// (routing may still be settling) or `timeout` passes; asserts the last run.
fn assert_traceroute(from: &Node, dest: &str, want: &[&str], timeout: std::time::Duration) {
    let mut last = None;
    wait_until(timeout, || {
        let out = from.ctl(&["traceroute", dest]);
        // stderr always has receptorctl's version-mismatch warning; hop errors say ERROR.
        let ok = out.status.success()
            && !String::from_utf8_lossy(&out.stderr).contains("ERROR")
            && traceroute_hops(&out) == want;
        last = Some(out);
        ok
    });
    let out = last.expect("traceroute ran");
    assert!(out.status.success(), "traceroute {dest}: {}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ERROR"),
        "traceroute {dest}: {}",
        show(&out)
    );
    assert_eq!(
        traceroute_hops(&out),
        want,
        "traceroute {dest} from {}: {}",
        from.id,
        show(&out)
    );
}

// ---------------------------------------------------------------------------
// receptorctl status text layout, compared with the Go capture
// ---------------------------------------------------------------------------

/// Blank-line separated blocks of lines.
fn sections(text: &str) -> Vec<Vec<&str>> {
    let mut out = vec![Vec::new()];
    for line in text.lines() {
        if line.is_empty() {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("section").push(line);
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Start offsets of a table header's columns (a column starts after 2+ spaces).
fn header_columns(header: &str) -> Vec<usize> {
    let b = header.as_bytes();
    let mut cols = vec![0];
    for i in 2..b.len() {
        if b[i] != b' ' && b[i - 1] == b' ' && b[i - 2] == b' ' {
            cols.push(i);
        }
    }
    cols
}

/// True if every column of `row` starts exactly at the header's offsets.
fn row_fits(row: &str, cols: &[usize]) -> bool {
    let b = row.as_bytes();
    cols.iter()
        .all(|&c| c < b.len() && b[c] != b' ' && (c == 0 || b[c - 1] == b' '))
}

/// Checks our `receptorctl status` text against Go's capture: same label
/// lines, identical table headers (so identical widths) and every row
/// aligned to the header columns.
fn assert_status_layout_matches_go(ours: &str) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/control-transcripts.json"
    );
    let vectors: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors")).expect("JSON");
    let go = vectors["cli"]["status"]["stdout"]
        .as_str()
        .expect("cli.status.stdout");
    let (go_s, our_s) = (sections(go), sections(ours));
    // Go's capture has a 6th "Work Types" block (its nodes had a work-command).
    assert_eq!(go_s.len(), 6, "Go capture layout");
    assert_eq!(our_s.len(), 5, "status blocks:\n{ours}");
    let labels = |s: &[&str]| -> Vec<String> {
        s.iter()
            .map(|l| l.split_once(": ").map_or("", |(k, _)| k).to_string())
            .collect()
    };
    assert_eq!(labels(&our_s[0]), labels(&go_s[0]), "header block:\n{ours}");
    for (ours_block, go_block) in our_s[1..].iter().zip(&go_s[1..5]) {
        assert_eq!(ours_block[0], go_block[0], "table header differs:\n{ours}");
        let cols = header_columns(go_block[0]);
        for row in &go_block[1..] {
            assert!(row_fits(row, &cols), "checker rejects Go row {row:?}");
        }
        for row in &ours_block[1..] {
            assert!(
                row_fits(row, &cols),
                "row {row:?} misaligned with {:?}",
                go_block[0]
            );
        }
    }
}

/// `id` padded as receptorctl pads the first column (width 12 + a space).
fn col(id: &str) -> String {
    format!("{id:<12} ")
}

#[test]
fn three_node_line_status_ping_traceroute_version() {
    // controller01 listens; relayer01 dials it and listens; executor01 dials relayer01.
    let (pc, pr) = (free_port(), free_port());
    let controller = Node::start("controller01", &[listener(pc, 1.0)]);
    let relayer = Node::start("relayer01", &[peer(pc, 1.0), listener(pr, 1.0)]);
    let executor = Node::start("executor01", &[peer(pr, 1.0)]);
    let all = ["controller01", "executor01", "relayer01"];

    let converged = wait_until(secs(30), || {
        let st = controller.status();
        route(&st, "executor01").as_deref() == Some("relayer01")
            && route(&st, "relayer01").as_deref() == Some("relayer01")
            && control_ad_nodes(&st) == all
            && st["KnownConnectionCosts"]
                .as_object()
                .is_some_and(|m| m.len() == 3)
    });
    assert!(
        converged,
        "mesh did not converge: {}\n{}\n{}",
        controller.status(),
        relayer.log_tail(20),
        executor.log_tail(20)
    );

    // status (text)
    let out = controller.ctl(&["status"]);
    assert!(out.status.success(), "status: {}", show(&out));
    let text = stdout(&out);
    assert_status_layout_matches_go(&text);
    let s = sections(&text);
    assert_eq!(s[0][0], "Node ID: controller01");
    assert!(s[0][1].starts_with("Version: "), "{text}");
    for (i, label) in [(2, "System CPU Count: "), (3, "System Memory MiB: ")] {
        let n = s[0][i]
            .strip_prefix(label)
            .unwrap_or_else(|| panic!("{text}"));
        assert!(n.parse::<u64>().is_ok_and(|n| n > 0), "{label}{n}");
    }
    assert_eq!(
        s[1],
        ["Connection   Cost".to_string(), col("relayer01") + "1"]
    );
    assert_eq!(
        s[2],
        [
            "Known Node   Known Connections".to_string(),
            col("controller01") + "relayer01: 1 ",
            col("executor01") + "relayer01: 1 ",
            col("relayer01") + "controller01: 1 executor01: 1 ",
        ]
    );
    assert_eq!(
        s[3],
        [
            "Route        Via".to_string(),
            col("executor01") + "relayer01",
            col("relayer01") + "relayer01",
        ]
    );
    assert_eq!(
        s[4][0],
        "Node         Service   Type       Last Seen             Tags"
    );
    let mut ad_nodes = Vec::new();
    for row in &s[4][1..] {
        let (node, rest) = row.split_at(13);
        let rest = rest
            .strip_prefix("control   Stream     ")
            .unwrap_or_else(|| panic!("{row:?}"));
        let (seen, tags) = rest.split_at(19);
        let shape: String = seen
            .chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99 99:99:99", "Last Seen in {row:?}");
        assert_eq!(tags, "   {'type': 'Control Service'}", "{row:?}");
        ad_nodes.push(node.trim_end().to_string());
    }
    ad_nodes.sort();
    assert_eq!(ad_nodes, all, "{text}");

    // ping through the relay
    let out = controller.ctl(&["ping", "executor01", "--count", "3", "--delay", "0.2"]);
    assert_eq!(out.status.code(), Some(0), "ping: {}", show(&out));
    let replies: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(replies.len(), 3, "{}", show(&out));
    for line in &replies {
        let dur = line
            .strip_prefix("Reply from executor01 in ")
            .unwrap_or_else(|| panic!("bad ping line {line:?}"));
        assert!(is_go_duration(dur), "{line:?}");
    }

    // ping to an unknown node: error on stderr, exit 2
    let out = controller.ctl(&["ping", "nosuchnode", "--count", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(stdout(&out), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l == "ERROR: no route to node"),
        "{}",
        show(&out)
    );

    // traceroute
    let out = controller.ctl(&["traceroute", "executor01"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        traceroute_hops(&out),
        ["controller01", "relayer01", "executor01"]
    );

    // version
    let out = controller.ctl(&["version"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "receptorctl  1.6.9");
    let version = lines[1]
        .strip_prefix("receptor     v")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!version.is_empty());
    assert_eq!(
        Value::from(format!("v{version}")),
        controller.status()["Version"]
    );
}

#[test]
fn diamond_reroutes_around_a_dead_relay_and_back() {
    // controller -(1)- relayA -(1)- executor ; controller -(2)- relayB -(2)- executor
    let (pa, pb) = (free_port(), free_port());
    let mut relay_a = Node::start("relayA", &[listener(pa, 1.0)]);
    let _relay_b = Node::start("relayB", &[listener(pb, 2.0)]);
    let controller = Node::start("controller", &[peer(pa, 1.0), peer(pb, 2.0)]);
    let _executor = Node::start("executor", &[peer(pa, 1.0), peer(pb, 2.0)]);

    let via = || route(&controller.ctl_status(), "executor");
    assert!(
        wait_until(secs(20), || via().as_deref() == Some("relayA")),
        "initial route to executor should be via relayA: {}",
        controller.ctl_status()
    );

    relay_a.kill();
    let rerouted = wait_until(secs(10), || {
        let st = controller.ctl_status();
        route(&st, "executor").as_deref() == Some("relayB") && route(&st, "relayA").is_none()
    });
    assert!(
        rerouted,
        "no reroute via relayB within 10 s: {}",
        controller.ctl_status()
    );
    let mut last = None;
    let pinged = wait_until(secs(10), || {
        let out = controller.ctl(&["ping", "executor", "--count", "1"]);
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    assert!(
        pinged,
        "ping executor via relayB failed: {}",
        show(&last.expect("ran"))
    );
    assert_traceroute(
        &controller,
        "executor",
        &["controller", "relayB", "executor"],
        secs(5),
    );

    relay_a.restart();
    assert!(
        wait_until(secs(40), || via().as_deref() == Some("relayA")),
        "route did not return via relayA within 40 s: {}\n{}",
        controller.ctl_status(),
        controller.log_tail(30)
    );
    assert_traceroute(
        &controller,
        "executor",
        &["controller", "relayA", "executor"],
        secs(5),
    );
}

#[test]
fn ten_node_traceroute_follows_shortest_path() {
    // Line n0-n1-n2-n3-n4-n5 plus a longer detour n1-a1-a2-a3-a4-n4.
    let line = ["n0", "n1", "n2", "n3", "n4", "n5"];
    let detour = ["a1", "a2", "a3", "a4"];
    let ids: Vec<&str> = line.iter().chain(&detour).copied().collect();
    let ports: Vec<u16> = ids.iter().map(|_| free_port()).collect();
    let port = |id: &str| ports[ids.iter().position(|x| *x == id).expect("known id")];
    // Each node listens; it dials the neighbours that were started before it.
    let dials = |id: &str| -> Vec<&str> {
        match id {
            "n0" => vec![],
            "a1" => vec!["n1"],
            "a4" => vec!["a3", "n4"],
            _ => {
                let i = ids.iter().position(|x| *x == id).expect("known id");
                vec![ids[i - 1]]
            }
        }
    };
    let mut nodes = Vec::new();
    for id in &ids {
        let mut items = vec![listener(port(id), 1.0)];
        items.extend(dials(id).into_iter().map(|d| peer(port(d), 1.0)));
        nodes.push(Node::start(id, &items));
    }
    let n0 = &nodes[0];

    let converged = wait_until(secs(30), || {
        let st = n0.status();
        let table = st["RoutingTable"].as_object().cloned().unwrap_or_default();
        let edges: usize = st["KnownConnectionCosts"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(Value::as_object)
                    .map(|p| p.len())
                    .sum()
            })
            .unwrap_or(0);
        table.len() == 9 && table.values().all(|v| v == "n1") && edges == 2 * 10
    });
    assert!(converged, "10-node mesh did not converge: {}", n0.status());

    assert_traceroute(n0, "n5", &line, secs(15));
    assert_traceroute(n0, "a3", &["n0", "n1", "a1", "a2", "a3"], secs(15));

    // Without n2 the only way to n5 is the detour.
    nodes[2].kill();
    let long_way = ["n0", "n1", "a1", "a2", "a3", "a4", "n4", "n5"];
    assert_traceroute(&nodes[0], "n5", &long_way, secs(15));
}

#[test]
fn duplicate_node_id_is_rejected() {
    let p = free_port();
    let hub = Node::start("hub", &[listener(p, 1.0)]);
    let x1 = Node::start("x", &[peer(p, 1.0)]);
    assert!(
        wait_until(secs(15), || hub.connections() == ["x"]),
        "first x did not connect: {}",
        hub.status()
    );

    let _x2 = Node::start("x", &[peer(p, 1.0)]);
    let want = "rejected connection with node x because it connected using a node ID we are \
                already connected to";
    assert!(
        wait_until(secs(15), || hub.log().contains(want)),
        "hub never logged {want:?}\n{}",
        hub.log_tail(30)
    );
    let st = hub.ctl_status();
    assert_eq!(
        connection_ids(&st),
        ["x"],
        "hub must keep exactly one connection to x: {st}"
    );
    assert_eq!(route(&st, "x").as_deref(), Some("x"));
    assert_eq!(
        x1.connections(),
        ["hub"],
        "the first x keeps its connection"
    );
}

#[test]
fn cost_disagreement_is_rejected() {
    let p = free_port();
    let l = Node::start("costlisten", &[listener(p, 1.0)]);
    let d = Node::start("costdial", &[peer(p, 2.0)]);
    let want = "because we disagree about the connection cost";
    assert!(
        wait_until(secs(15), || l.log().contains(want)
            || d.log().contains(want)),
        "no cost rejection logged\n{}\n{}",
        l.log_tail(20),
        d.log_tail(20)
    );
    // Connections drop at once; routing tables follow within ~100 ms.
    let idle = || {
        let (ls, ds) = (l.status(), d.status());
        connection_ids(&ls).is_empty()
            && connection_ids(&ds).is_empty()
            && route(&ls, "costdial").is_none()
            && route(&ds, "costlisten").is_none()
    };
    assert!(
        wait_until(secs(3), idle),
        "connection still up: {} / {}",
        l.status(),
        d.status()
    );
    // The dialer tries again (with growing waits) and is refused each time.
    let rejections = || l.log().matches(want).count() + d.log().matches(want).count();
    assert!(
        wait_until(secs(15), || rejections() >= 2),
        "no second rejection\n{}\n{}",
        l.log_tail(20),
        d.log_tail(20)
    );
}

#[test]
fn allowed_peers_admits_only_listed_nodes() {
    let p = free_port();
    let gate = Node::start(
        "gate",
        &[format!(
            "- tcp-listener: {{bindaddr: 127.0.0.1, port: {p}, allowedpeers: [alice]}}"
        )],
    );
    let bob = Node::start("bob", &[peer(p, 1.0)]);
    let _alice = Node::start("alice", &[peer(p, 1.0)]);
    let want =
        "gate: rejected connection with node bob because it is not in the allowed peers list";
    assert!(
        wait_until(secs(15), || gate.log().contains(want)),
        "gate never logged {want:?}\n{}",
        gate.log_tail(30)
    );
    assert!(
        wait_until(secs(15), || gate.connections() == ["alice"]),
        "alice was not admitted: {}",
        gate.status()
    );
    let st = gate.ctl_status();
    assert_eq!(connection_ids(&st), ["alice"], "{st}");
    assert_eq!(route(&st, "bob"), None, "{st}");
    assert!(bob.connections().is_empty(), "bob: {}", bob.status());
}

// ---------------------------------------------------------------------------
// Command line and config errors
// ---------------------------------------------------------------------------

fn receptor(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::RECEPTOR);
    cmd.args(args).current_dir(dir);
    output_within(cmd, secs(20))
}

/// Asserts a startup failure: exit 1, exactly one stdout line `Error: ...`
/// mentioning every word of `names`, and nothing left listening.
fn assert_config_error(out: &Output, names: &[&str], port: u16, socket: &Path, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", show(out));
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: want one stdout line: {}",
        show(out)
    );
    assert!(lines[0].starts_with("Error: "), "{what}: {}", show(out));
    for name in names {
        assert!(
            lines[0].contains(name),
            "{what}: error should name {name:?}: {}",
            lines[0]
        );
    }
    assert!(!port_in_use(port), "{what}: port {port} is listening");
    assert!(!socket.exists(), "{what}: control socket was created");
}

#[test]
fn bad_config_exits_1_with_one_error_line() {
    let tmp = TempDir::new("badcfg");
    let sock = tmp.path.join("ctl.sock");
    let yaml_cases: [(&str, &[&str], &str); 6] = [
        ("- bogus-section: {}", &["bogus-section"], "unknown section"),
        (
            "- tcp-peer: {address: \"127.0.0.1:1\", frobnicate: 1}",
            &["frobnicate"],
            "unknown key",
        ),
        (
            "- tcp-peer: {address: \"127.0.0.1:1\", cost: cheap}",
            &["cost"],
            "wrong type (float)",
        ),
        (
            "- tcp-peer: {address: \"127.0.0.1:1\", redial: maybe}",
            &["redial"],
            "wrong type (bool)",
        ),
        (
            "- tcp-peer: {address: [1, 2]}",
            &["address"],
            "wrong type (list)",
        ),
        (
            "- tcp-peer: {cost: 2.0}",
            &["address"],
            "missing required field",
        ),
    ];
    for (bad, names, what) in yaml_cases {
        let port = free_port();
        let config = tmp.path.join("bad.yaml");
        let yaml = format!(
            "- node: {{id: bad, datadir: {:?}}}\n{}\n- control-service: {{filename: {:?}}}\n{bad}\n",
            tmp.path.join("data"),
            listener(port, 1.0),
            sock,
        );
        std::fs::write(&config, yaml).expect("write config");
        let out = receptor(&tmp.path, &["-c", config.to_str().expect("utf-8 path")]);
        assert_config_error(&out, names, port, &sock, &format!("YAML {what}: {bad}"));
    }

    let cli_cases: [(&[&str], &[&str], &str); 4] = [
        (&["--bogus-section"], &["bogus-section"], "unknown section"),
        (
            &["--tcp-peer", "address=127.0.0.1:1", "frobnicate=1"],
            &["frobnicate"],
            "unknown key",
        ),
        (
            &["--tcp-peer", "address=127.0.0.1:1", "cost=cheap"],
            &["cost"],
            "wrong type",
        ),
        (
            &["--tcp-peer", "cost=2.0"],
            &["address"],
            "missing required field",
        ),
    ];
    for (bad, names, what) in cli_cases {
        let port = free_port();
        let (port_s, sock_s) = (
            format!("port={port}"),
            format!("filename={}", sock.display()),
        );
        let mut args = vec!["--node", "id=bad", "--tcp-listener", "bindaddr=127.0.0.1"];
        args.extend([port_s.as_str(), "--control-service", sock_s.as_str()]);
        args.extend(bad);
        let out = receptor(&tmp.path, &args);
        assert_config_error(&out, names, port, &sock, &format!("CLI {what}: {bad:?}"));
    }
}

#[test]
fn help_lists_every_section_and_version_exits_0() {
    let tmp = TempDir::new("help");
    let out = receptor(&tmp.path, &["--help"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let help = stdout(&out);
    let sections = [
        "help",
        "config",
        "bash-completion",
        "node",
        "log-level",
        "trace",
        "local-only",
        "version",
        "tls-server",
        "tls-client",
        "tcp-listener",
        "tcp-peer",
        "udp-listener",
        "udp-peer",
        "ws-listener",
        "ws-peer",
        "control-service",
        "work-command",
        "work-kubernetes",
        "work-python",
        "work-signing",
        "work-verification",
        "tcp-server",
        "tcp-client",
        "udp-server",
        "udp-client",
        "unix-socket-server",
        "unix-socket-client",
        "command-service",
        "ip-router",
        "cert-init",
        "cert-makereq",
        "cert-signreq",
    ];
    for s in sections {
        let listed = help.lines().any(|l| {
            l.trim_start()
                .strip_prefix(&format!("--{s}"))
                .is_some_and(|rest| rest.starts_with(':') || rest.starts_with(' '))
        });
        assert!(listed, "--help does not list --{s}:\n{help}");
    }

    let out = receptor(&tmp.path, &["--version"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{}", show(&out));
    assert!(!text.trim().is_empty());
}

/// SIGTERM stops the daemon cleanly: exit status 0, a log line, the
/// control socket removed (Go dies at once with status 143), and its peer
/// sees the link end at once rather than after an idle timeout.
#[test]
fn sigterm_stops_cleanly() {
    let port = free_port();
    let mut node = Node::start("stopper", &[listener(port, 1.0)]);
    let peer_node = Node::start("watcher", &[peer(port, 1.0)]);
    assert!(wait_until(secs(10), || peer_node.connections() == ["stopper"]));
    let socket = node.socket.clone();
    assert!(socket.exists());
    let status = node
        .terminate()
        .expect("node stopped within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", node.log_tail(20));
    assert!(
        node.log().contains("Received signal 15, shutting down"),
        "{}",
        node.log_tail(20)
    );
    assert!(!socket.exists(), "control socket left behind");
    assert!(
        wait_until(secs(5), || peer_node.connections().is_empty()),
        "{}",
        peer_node.log_tail(20)
    );
}

/// A peer that sends malformed frames gets them logged and ignored; the
/// node keeps serving, and the same connection can still identify itself.
#[test]
fn malformed_frames_are_logged_and_survived() {
    use std::io::Write;
    let port = free_port();
    let node = Node::start("sturdy", &[listener(port, 1.0)]);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let frame = |msg: &[u8]| {
        let mut f = (msg.len() as u16).to_le_bytes().to_vec();
        f.extend_from_slice(msg);
        f
    };
    let garbage: [&[u8]; 6] = [
        b"",                 // empty message (panics the Go daemon)
        b"\x00short",        // data message shorter than its header
        b"\x01{\"NodeID\":", // truncated JSON
        b"\x02[1,2,3]",      // an ad that is not an object
        b"\x09whatever",     // unknown type
        &[0xff; 300],        // noise
    ];
    for g in garbage {
        sock.write_all(&frame(g)).expect("write garbage");
    }
    let hello = r#"{"NodeID":"raw","UpdateID":"abcdefgh","UpdateEpoch":1,"UpdateSequence":1,"Connections":{},"ForwardingNode":"raw","SuspectedDuplicate":0}"#;
    let hello = [b"\x01".as_slice(), hello.as_bytes()].concat();
    sock.write_all(&frame(&hello)).expect("write update");
    assert!(
        wait_until(secs(10), || node.connections() == ["raw"]),
        "the peer was not accepted after its garbage\n{}",
        node.log_tail(30)
    );
    let log = node.log();
    assert!(
        log.contains("Error decoding message from backend: empty message"),
        "{}",
        node.log_tail(30)
    );
    assert!(
        log.contains("data message too short"),
        "{}",
        node.log_tail(30)
    );
    assert!(
        log.contains("malformed routing update"),
        "{}",
        node.log_tail(30)
    );
    assert_eq!(node.status()["NodeID"], "sturdy");
}

/// `tcplisten` serves the same protocol on TCP; receptorctl reaches it with
/// `--socket tcp://host:port` (and `tcp:host:port`).
#[test]
fn control_service_over_tcp() {
    let port = free_port();
    let node = Node::start(
        "tcpctl",
        &[
            "- local-only".to_string(),
            format!("- control-service:\n    service: ctl2\n    tcplisten: 127.0.0.1:{port}"),
        ],
    );
    for socket in [
        format!("tcp://127.0.0.1:{port}"),
        format!("tcp:127.0.0.1:{port}"),
    ] {
        let mut cmd = std::process::Command::new(common::receptorctl());
        cmd.args(["--socket", &socket, "status"]);
        let out = common::output_within(cmd, secs(30));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", common::show(&out));
        assert!(text.starts_with("Node ID: tcpctl\n"), "{text}");
    }
    let mut cmd = std::process::Command::new(common::receptorctl());
    cmd.args([
        "--socket",
        &format!("tcp://127.0.0.1:{port}"),
        "ping",
        "tcpctl",
        "--count",
        "1",
    ]);
    let out = common::output_within(cmd, secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Reply from tcpctl in "),
        "{}",
        common::show(&out)
    );
    drop(node);
}
