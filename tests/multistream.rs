//! Between two of our nodes, a controller's remote units share one QUIC
//! connection to the executor's control service, each request a stream
//! on it; against a Go executor every request keeps a connection of its
//! own, as Go's stream listener expects. Each endpoint logs one debug line
//! per connection it sets up, saying whether it carries many streams.

mod common;

use common::{Node, free_port, go_reference, listener, peer, secs, show, wait_until};

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

/// A controller peered to `executor`'s listener on `port`, once it has
/// a route there.
fn controller_of(executor: &Node, port: u16) -> Node {
    let controller = Node::start("controller", &[peer(port, 1.0)]);
    let routed = wait_until(secs(30), || controller.route(&executor.id).is_some());
    assert!(routed, "no route: {}", controller.log_tail(20));
    controller
}

#[test]
fn remote_units_between_our_nodes_share_one_control_connection() {
    let port = free_port();
    let executor = Node::start("executor", &[listener(port, 1.0), ECHO.into()]);
    let controller = controller_of(&executor, port);
    run_units(&controller, "executor");
    let accepted = connection_lines(&executor, "from controller:");
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert!(
        accepted[0].ends_with("carries many streams"),
        "{accepted:#?}"
    );
    let dialed = connection_lines(&controller, "to executor:control");
    assert_eq!(dialed.len(), 1, "{dialed:#?}");
    assert!(dialed[0].ends_with("carries many streams"), "{dialed:#?}");
    // Each unit's results stream brought its final status along.
    assert_eq!(trailer_lines(&controller), 7, "{}", controller.log_tail(40));
}

/// How many results streams ended with their unit's status.
fn trailer_lines(controller: &Node) -> usize {
    let log = controller.log();
    log.lines()
        .filter(|l| l.contains("Results stream ended with the unit's status"))
        .count()
}

#[test]
fn remote_units_on_a_go_executor_keep_one_connection_per_request() {
    let Some(go) = go_reference() else { return };
    let port = free_port();
    let executor = Node::start_go(&go, "goexec", &[listener(port, 1.0), ECHO.into()]);
    let controller = controller_of(&executor, port);
    run_units(&controller, "goexec");
    let dialed = connection_lines(&controller, "to goexec:control");
    // Each unit at least submits and fetches its results.
    assert!(dialed.len() >= 2 * 7, "{dialed:#?}");
    assert!(
        dialed.iter().all(|l| l.ends_with("carries one stream")),
        "{dialed:#?}"
    );
    // A Go executor streams plain output; status is asked for.
    assert_eq!(trailer_lines(&controller), 0);
}

/// What a refused submit sends as its stdin: a submit of its own, which
/// would leave a second unit on the executor if the executor read it as
/// commands.
const SMUGGLED: &[u8] =
    b"{\"command\":\"work\",\"subcommand\":\"submit\",\"node\":\"localhost\",\"worktype\":\"echo\"}\nsmuggled\n";

/// Submits a unit of an unknown type to `executor` with [`SMUGGLED`] as
/// stdin, then a good one, and checks that the executor refused the
/// first (the submitter hears why) and holds only the second.
fn refused_submit_runs_none_of_its_stdin(controller: &Node, executor: &Node) {
    let out = controller.ctl_with_input(
        &["work", "submit", "nope", "--node", &executor.id, "-p", "-"],
        SMUGGLED,
    );
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown work type nope"), "{}", show(&out));
    assert_eq!(controller.submit_echo(&executor.id, b"good\n"), b"good\n");
    let line = executor.connect().cmd("work list");
    let units: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("work list {line:?}: {e}"));
    assert_eq!(units.len(), 1, "the refused submit's stdin ran: {line}");
}

/// Between our nodes the request and its stdin go out together, before
/// any reply; a refusal still reaches the submitter, and the executor
/// ends the session instead of reading that stdin as commands.
#[test]
fn a_refused_pipelined_submit_reports_the_refusal_and_runs_none_of_its_stdin() {
    let port = free_port();
    let executor = Node::start("executor", &[listener(port, 1.0), ECHO.into()]);
    let controller = controller_of(&executor, port);
    refused_submit_runs_none_of_its_stdin(&controller, &executor);
}

/// A Go executor keeps reading commands after refusing a submit, so it
/// must get the request alone and the stdin only after the "created"
/// line: nothing is pipelined to it.
#[test]
fn a_submit_to_a_go_executor_is_not_pipelined() {
    let Some(go) = go_reference() else { return };
    let port = free_port();
    let executor = Node::start_go(&go, "goexec", &[listener(port, 1.0), ECHO.into()]);
    let controller = controller_of(&executor, port);
    refused_submit_runs_none_of_its_stdin(&controller, &executor);
}
