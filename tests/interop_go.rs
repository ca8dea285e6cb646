//! Go and Rust nodes in one mutual-TLS mesh: the Go node's certificate is
//! made by the Go cert tools, ours by ours, under one CA; remote work and
//! streams run both ways. Needs the Go reference daemon
//! (target/reference/receptor-go, unpacked by tests/run.sh); prints
//! "skipped: no Go reference" without it.

mod common;

use std::path::Path;
use std::process::Command;

use common::pki::{NodeCert, Pki, tls_listener, tls_peer};
use common::{CMD_TIMEOUT, Node, TempDir, free_port, go_reference, output_with_input, secs, show};

/// A certificate for `id` made and signed by the Go tools with `pki`'s CA.
fn go_cert(go: &Path, pki: &Pki, id: &str) -> NodeCert {
    let run = |args: &[String]| {
        let mut cmd = Command::new(go);
        cmd.args(args).current_dir(&pki.dir);
        let out = output_with_input(cmd, None, CMD_TIMEOUT);
        assert!(
            out.status.success(),
            "Go cert tool {args:?}: {}",
            show(&out)
        );
    };
    run(&[
        "--cert-makereq".into(),
        format!("commonname={id}"),
        "bits=2048".into(),
        format!("outreq={id}.csr"),
        format!("outkey={id}.key"),
        format!("nodeid={id}"),
        "ipaddress=127.0.0.1".into(),
    ]);
    run(&[
        "--cert-signreq".into(),
        format!("req={id}.csr"),
        "cacert=ca.crt".into(),
        "cakey=ca.key".into(),
        format!("outcert={id}.crt"),
        "verify=true".into(),
    ]);
    NodeCert {
        cert: pki.dir.join(format!("{id}.crt")),
        key: pki.dir.join(format!("{id}.key")),
    }
}

#[test]
fn go_and_rust_nodes_share_a_mutual_tls_mesh_and_run_work_both_ways() {
    let Some(go) = go_reference() else { return };
    let tmp = TempDir::new("interop-tls");
    let pki = Pki::new(&tmp.path.join("pki"), "Interop CA");
    let ca = pki.ca();
    let (rs_port, go_port) = (free_port(), free_port());
    let work = "- work-command: {worktype: echo, command: cat}".to_string();

    // gonode listens for rsnode and dials rsnode's listener too: both
    // directions of TLS handshake between the two implementations.
    let go_tls = go_cert(&go, &pki, "gonode");
    let gonode = Node::start_go(
        &go,
        "gonode",
        &[
            go_tls.server("srv", &ca),
            go_tls.client("cli", &ca, ""),
            tls_listener(go_port, "srv"),
            work.clone(),
        ],
    );
    let rs_tls = pki.node("rsnode");
    let rsnode = Node::start(
        "rsnode",
        &[
            rs_tls.server("srv", &ca),
            rs_tls.client("cli", &ca, ""),
            tls_peer(go_port, "cli"),
            work.clone(),
        ],
    );
    let routed = common::wait_until(secs(20), || rsnode.route("gonode").is_some());
    assert!(routed, "{}\n{}", rsnode.log_tail(20), gonode.log_tail(20));
    let routed = common::wait_until(secs(20), || gonode.route("rsnode").is_some());
    assert!(routed, "{}", gonode.log_tail(20));

    // A third node, ours, that Go dials over TLS.
    let dialed = pki.node("rsthird");
    let _rsthird = Node::start(
        "rsthird",
        &[
            dialed.server("srv", &ca),
            tls_listener(rs_port, "srv"),
            work,
        ],
    );
    let go_dialer = Node::start_go(
        &go,
        "godialer",
        &[
            go_cert(&go, &pki, "godialer").client("cli", &ca, ""),
            tls_peer(rs_port, "cli"),
        ],
    );
    let routed = common::wait_until(secs(20), || go_dialer.route("rsthird").is_some());
    assert!(routed, "{}", go_dialer.log_tail(20));

    let payload = b"between two implementations\n".repeat(3000);
    assert_eq!(
        rsnode.submit_echo("gonode", &payload),
        payload,
        "Rust controller, Go executor"
    );
    assert_eq!(
        gonode.submit_echo("rsnode", &payload),
        payload,
        "Go controller, Rust executor"
    );
    assert_eq!(
        go_dialer.submit_echo("rsthird", &payload),
        payload,
        "Go dialer to our listener"
    );

    let ping = rsnode.ctl(&["ping", "gonode", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
    let ping = go_dialer.ctl(&["ping", "rsthird", "--count", "1"]);
    assert!(ping.status.success(), "{}", show(&ping));
}

/// gonode listens for rsnode, rsnode listens for godialer, over the
/// backend `listen`/`dial` describe; remote work crosses both pairings.
fn mesh_both_ways(
    go: &Path,
    listen: impl Fn(u16) -> String,
    dial: impl Fn(u16) -> String,
    what: &str,
) {
    let (go_port, rs_port) = (free_port(), free_port());
    let work = "- work-command: {worktype: echo, command: cat}".to_string();
    let gonode = Node::start_go(go, "gonode", &[listen(go_port), work.clone()]);
    let rsnode = Node::start("rsnode", &[dial(go_port), listen(rs_port), work]);
    let godialer = Node::start_go(go, "godialer", &[dial(rs_port)]);
    for (node, target) in [
        (&rsnode, "gonode"),
        (&gonode, "rsnode"),
        (&godialer, "gonode"),
    ] {
        let routed = common::wait_until(secs(20), || node.route(target).is_some());
        assert!(
            routed,
            "{what}: {} -> {target}: {}",
            node.id,
            node.log_tail(20)
        );
    }
    let payload = format!("over {what} between two implementations\n").repeat(2000);
    let payload = payload.as_bytes();
    assert_eq!(
        rsnode.submit_echo("gonode", payload),
        payload,
        "Rust -> Go over {what}"
    );
    assert_eq!(
        godialer.submit_echo("rsnode", payload),
        payload,
        "Go dialer -> Rust over {what}"
    );
}

#[test]
fn go_and_rust_nodes_mesh_over_udp_both_ways() {
    let Some(go) = go_reference() else { return };
    // A TCP port number that is free is as good as any for UDP here:
    // nothing else binds UDP on these ports during the test.
    mesh_both_ways(&go, common::udp_listener, common::udp_peer, "UDP");
}

#[test]
fn go_and_rust_nodes_mesh_over_websocket_both_ways() {
    let Some(go) = go_reference() else { return };
    mesh_both_ways(
        &go,
        |p| format!("- ws-listener: {{bindaddr: 127.0.0.1, port: {p}, path: /mesh}}"),
        |p| format!("- ws-peer: {{address: \"ws://127.0.0.1:{p}/mesh\"}}"),
        "WebSocket",
    );
}
