//! Between two of our nodes, a controller's remote units share one QUIC
//! connection to the executor's control service, each request a stream
//! on it; against a Go executor every request keeps a connection of its
//! own, as Go's stream listener expects. Each endpoint logs one debug line
//! per connection it sets up, saying whether it carries many streams.

mod common;

use common::{Node, free_port, go_reference, listener, peer, secs, wait_until};

const ECHO: &str = "- work-command: {worktype: echo, command: cat}";

/// Runs three units one after another, then four at once, from
/// `controller` on `executor`, checking each one's output.
fn run_units(controller: &Node, executor: &str) {
    for i in 0..3 {
        let payload = format!("unit {i} in turn\n").into_bytes();
        assert_eq!(controller.submit_echo(executor, &payload), payload);
    }
    std::thread::scope(|s| {
        let units: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let payload = format!("unit {i} at once\n").repeat(100).into_bytes();
                    assert_eq!(controller.submit_echo(executor, &payload), payload);
                })
            })
            .collect();
        for u in units {
            u.join().expect("unit thread");
        }
    });
}

/// The log lines of `node` about stream connections `what` (e.g. `from
/// controller:control`, without the service: `from controller:`).
fn connection_lines(node: &Node, what: &str) -> Vec<String> {
    let marker = format!("Stream connection {what}");
    node.log()
        .lines()
        .filter(|l| l.contains(&marker))
        .map(str::to_string)
        .collect()
}

fn two_nodes(executor: Node, port: u16) -> (Node, Node) {
    let controller = Node::start("controller", &[peer(port, 1.0)]);
    let routed = wait_until(secs(30), || controller.route(&executor.id).is_some());
    assert!(routed, "no route: {}", controller.log_tail(20));
    (controller, executor)
}

#[test]
fn remote_units_between_our_nodes_share_one_control_connection() {
    let port = free_port();
    let executor = Node::start("executor", &[listener(port, 1.0), ECHO.into()]);
    let (controller, executor) = two_nodes(executor, port);
    run_units(&controller, "executor");
    let accepted = connection_lines(&executor, "from controller:");
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert!(
        accepted[0].ends_with("carries many streams"),
        "{accepted:#?}"
    );
    let dialed = connection_lines(&controller, "to executor:control");
    assert_eq!(dialed.len(), 1, "{dialed:#?}");
}

#[test]
fn remote_units_on_a_go_executor_keep_one_connection_per_request() {
    let Some(go) = go_reference() else { return };
    let port = free_port();
    let executor = Node::start_go(&go, "goexec", &[listener(port, 1.0), ECHO.into()]);
    let (controller, _executor) = two_nodes(executor, port);
    run_units(&controller, "goexec");
    let dialed = connection_lines(&controller, "to goexec:control");
    // Each unit at least submits and fetches its results.
    assert!(dialed.len() >= 2 * 7, "{dialed:#?}");
    assert!(
        dialed.iter().all(|l| l.ends_with("carries one stream")),
        "{dialed:#?}"
    );
}
