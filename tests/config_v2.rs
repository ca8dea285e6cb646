//! Nodes started from v2 configuration files (`--config-v2 --config FILE`),
//! driven through the real receptorctl (run via tests/run.sh).

mod common;

use std::path::Path;

use common::{Node, connection_ids, free_port, go_reference, secs, show, wait_until};

fn listener_sections(port: u16) -> String {
    format!("tcp-listeners:\n  - port: {port}\n    bindaddr: 127.0.0.1\n")
}

/// A dialer with a `cat` work type called `echo`.
fn executor_sections(port: u16) -> String {
    format!(
        "tcp-peers:\n  - address: 127.0.0.1:{port}\n\
         work-commands:\n  - worktype: echo\n    command: cat\n"
    )
}

/// Waits until `receptorctl status` on each node lists the other as connected.
fn wait_connected(a: &Node, b: &Node) {
    let sees = |from: &Node, to: &Node| connection_ids(&from.ctl_status()).contains(&to.id);
    let ok = wait_until(secs(30), || sees(a, b) && sees(b, a));
    assert!(
        ok,
        "{} and {} did not connect\n{}\n{}",
        a.id,
        b.id,
        a.log_tail(20),
        b.log_tail(20)
    );
}

fn two_nodes_connect_and_run_work(listener_binary: &Path) {
    let port = free_port();
    let relay = Node::start_v2_with(listener_binary, "v2relay", &listener_sections(port));
    let executor = Node::start_v2("v2exec", &executor_sections(port));
    wait_connected(&relay, &executor);
    let payload = b"hello from a v2 config\n";
    assert_eq!(relay.submit_echo("v2exec", payload), payload);
    let units = executor.ctl(&["work", "list"]);
    assert!(units.status.success(), "{}", show(&units));
    let list: serde_json::Value = serde_json::from_slice(&units.stdout).expect("work list JSON");
    let states: Vec<&str> = list
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|u| u["StateName"].as_str())
        .collect();
    assert_eq!(states, ["Succeeded"], "{list}");
}

#[test]
fn two_nodes_from_v2_files_connect_and_run_work() {
    two_nodes_connect_and_run_work(Path::new(common::RECEPTOR));
}

/// The same files on the Go daemon: our v2 format is the one Go reads.
#[test]
fn a_go_node_from_the_same_v2_file_joins() {
    let Some(go) = go_reference() else { return };
    two_nodes_connect_and_run_work(&go);
}

#[test]
fn a_v2_file_reloads_its_backends() {
    let (p1, p2) = (free_port(), free_port());
    let _one = Node::start_v2("v2one", &listener_sections(p1));
    let _two = Node::start_v2("v2two", &listener_sections(p2));
    let dialer = Node::start_v2(
        "v2dialer",
        &format!("tcp-peers:\n  - address: 127.0.0.1:{p1}\n"),
    );
    assert!(wait_until(secs(15), || connection_ids(&dialer.status()) == ["v2one"]));
    // The same header, the peer moved to the other listener.
    let text = dialer.config_head().to_string();
    dialer.set_config(&format!("{text}tcp-peers:\n  - address: 127.0.0.1:{p2}\n"));
    let out = dialer.ctl(&["reload"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        wait_until(secs(15), || connection_ids(&dialer.status()) == ["v2two"]),
        "{}",
        dialer.log_tail(20)
    );
}
