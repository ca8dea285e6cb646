//! Node firewall rules in a real 3-node line `alpha - bravo - charlie`,
//! checked with the real receptorctl (run via tests/run.sh).

mod common;

use std::process::{Command, Output};

use common::{Node, TempDir, free_port, listener, output_within, peer, secs, show, wait_until};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// alpha - bravo - charlie, with `rules` (a YAML flow list) on `on`.
fn line(on: &str, rules: &str) -> [Node; 3] {
    let (p1, p2) = (free_port(), free_port());
    let keys = |id: &str| {
        if id == on {
            format!("    firewallrules: {rules}")
        } else {
            String::new()
        }
    };
    let alpha = Node::start_with("alpha", &keys("alpha"), &[peer(p1, 1.0)]);
    let bravo = Node::start_with(
        "bravo",
        &keys("bravo"),
        &[listener(p1, 1.0), listener(p2, 1.0)],
    );
    let charlie = Node::start_with("charlie", &keys("charlie"), &[peer(p2, 1.0)]);
    let nodes = [alpha, bravo, charlie];
    for n in &nodes {
        let others: Vec<&str> = ["alpha", "bravo", "charlie"]
            .into_iter()
            .filter(|o| *o != n.id)
            .collect();
        let routed = wait_until(secs(10), || others.iter().all(|o| n.route(o).is_some()));
        assert!(routed, "{} never learned its routes: {}", n.id, n.status());
    }
    nodes
}

fn ping(from: &Node, to: &str) -> Output {
    from.ctl(&["ping", to, "--count", "1"])
}

fn assert_reply(out: &Output, to: &str) {
    assert!(out.status.success(), "{}", show(out));
    assert!(
        stdout(out).starts_with(&format!("Reply from {to} in ")),
        "{}",
        show(out)
    );
}

/// receptorctl prints Go's problem text on stderr and exits 2.
fn assert_blocked(out: &Output) {
    assert_eq!(out.status.code(), Some(2), "{}", show(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.lines().any(|l| l == "ERROR: blocked by firewall"),
        "{}",
        show(out)
    );
}

#[test]
fn reject_tells_the_sender_and_other_traffic_flows() {
    let [alpha, bravo, charlie] = line("charlie", "[{action: reject, fromnode: alpha}]");
    assert_blocked(&ping(&alpha, "charlie"));
    assert_reply(&ping(&bravo, "charlie"), "charlie");
    assert_reply(&ping(&alpha, "bravo"), "bravo");
    // The routing and ads between them are not data messages: untouched.
    assert!(charlie.route("alpha").is_some());
}

#[test]
fn drop_is_silent_and_the_ping_times_out() {
    let rules = "[{action: drop, fromnode: alpha, toservice: ping}]";
    let [alpha, bravo, _charlie] = line("charlie", rules);
    assert_reply(&ping(&bravo, "charlie"), "charlie");
    // Raw control protocol: the reply is Go's timeout object after 10 s.
    let reply = alpha.connect().cmd("ping charlie");
    assert_eq!(reply, r#"{"Error":"timeout","Success":false}"#);
}

#[test]
fn a_relay_rule_blocks_forwarded_traffic_only() {
    let rules = "[{action: accept, fromnode: bravo}, {action: accept, tonode: bravo}, \
                 {action: reject}]";
    let [alpha, _bravo, charlie] = line("bravo", rules);
    assert_blocked(&ping(&alpha, "charlie"));
    assert_blocked(&ping(&charlie, "alpha"));
    assert_reply(&ping(&alpha, "bravo"), "bravo");
    assert_reply(&ping(&charlie, "bravo"), "bravo");
}

#[test]
fn regex_rules_match_whole_names() {
    // `/(?i)ALPH/` would match "alpha" if it were not anchored.
    let rules = "[{action: reject, fromnode: '/(?i)ALPH/'}, \
                 {action: reject, fromnode: '/(?i)BRAV.*/', toservice: '/p(i|o)ng/'}]";
    let [alpha, bravo, _charlie] = line("charlie", rules);
    assert_reply(&ping(&alpha, "charlie"), "charlie");
    assert_blocked(&ping(&bravo, "charlie"));
}

#[test]
fn bad_rules_are_refused_at_startup() {
    let tmp = TempDir::new("fwbad");
    let port = free_port();
    let cases = [
        (
            "[{action: reject, fromnode: '/(unclosed/'}]",
            "node: firewall rule #1: fromnode: invalid regular expression \"/(unclosed/\"",
        ),
        (
            "[{action: drop}, {action: reject, tonode: '/abc'}]",
            "node: firewall rule #2: tonode: regular expression \"/abc\" must be non-empty",
        ),
        (
            "[{action: reject, frumnode: x}]",
            "node: firewall rule #1: unknown key \"frumnode\"",
        ),
        (
            "[{action: deny}]",
            "node: firewall rule #1: unknown action \"deny\"",
        ),
    ];
    for (rules, want) in cases {
        let config = tmp.path.join("bad.yaml");
        let yaml = format!(
            "- node:\n    id: fw\n    firewallrules: {rules}\n- tcp-listener:\n    port: {port}\n"
        );
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = Command::new(common::RECEPTOR);
        cmd.arg("-c").arg(&config).current_dir(&tmp.path);
        let out = output_within(cmd, secs(20));
        assert_eq!(out.status.code(), Some(1), "{rules}: {}", show(&out));
        assert!(stdout(&out).contains(want), "{rules}: {}", show(&out));
        assert!(!common::port_in_use(port), "{rules}: left a listener");
    }
}
