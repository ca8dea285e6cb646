//! The node driven through the in-memory simulator (`sim`).

use super::seen::SEEN_UPDATES_CAP;
use super::sim::{Sim, node, params, start, topology};
use super::*;
use crate::netceptor::codec::{self, DataHeader};
use crate::netceptor::hash::node_hash;

#[test]
fn line_of_three_learns_routes_both_ways() {
    let mut sim = Sim::new(&["controller", "relayer", "executor"]);
    sim.connect("controller", "relayer", 1.0);
    sim.connect("executor", "relayer", 1.0);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.route("controller", "executor").as_deref(),
        Some("relayer")
    );
    assert_eq!(
        sim.route("executor", "controller").as_deref(),
        Some("relayer")
    );
    assert_eq!(
        sim.route("relayer", "executor").as_deref(),
        Some("executor")
    );
    let st = sim.nodes[0].status(start().wall);
    assert_eq!(st.connections, vec![("relayer".to_string(), 1.0)]);
    assert_eq!(st.known_connection_costs.len(), 3);
}

#[test]
fn diamond_reroutes_when_cheap_relay_dies_and_back_when_it_returns() {
    let mut sim = Sim::new(&["ctl", "ra", "rb", "ex"]);
    sim.connect("ctl", "ra", 1.0);
    sim.connect("ra", "ex", 1.0);
    sim.connect("ctl", "rb", 2.0);
    sim.connect("rb", "ex", 2.0);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.route("ctl", "ex").as_deref(), Some("ra"));
    sim.kill("ra");
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.route("ctl", "ex").as_deref(), Some("rb"));
    assert_eq!(sim.route("ctl", "ra"), None);
    sim.connect("ctl", "ra", 1.0);
    sim.connect("ra", "ex", 1.0);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.route("ctl", "ex").as_deref(), Some("ra"));
}

#[test]
fn ring_of_six_routes_both_directions() {
    let names = ["n0", "n1", "n2", "n3", "n4", "n5"];
    let mut sim = Sim::new(&names);
    for i in 0..6 {
        sim.connect(names[i], names[(i + 1) % 6], 1.0);
    }
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.route("n0", "n2").as_deref(), Some("n1"));
    assert_eq!(sim.route("n0", "n4").as_deref(), Some("n5"));
    assert!(sim.route("n0", "n3").is_some());
}

#[test]
fn ping_across_three_hops_and_hop_budget() {
    let mut sim = Sim::new(&["a", "b", "c", "d"]);
    sim.connect("a", "b", 1.0);
    sim.connect("b", "c", 1.0);
    sim.connect("c", "d", 1.0);
    sim.run_for(Duration::from_secs(2));
    let svc = sim.service("a", "probe");
    sim.send("a", svc, "d", "ping", &[], MAX_FORWARDING_HOPS)
        .unwrap();
    let (i, out) = sim.delivered.pop().unwrap();
    assert_eq!(i, 0);
    let Output::Deliver {
        from_node,
        from_service,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (from_node.as_str(), from_service.as_bytes()),
        ("d", &b"ping"[..])
    );

    // Traceroute-style probe: hop budget 1 expires at b.
    sim.send("a", svc, "d", "ping", &[], 1).unwrap();
    let (_, out) = sim.delivered.pop().unwrap();
    let Output::Unreachable {
        message,
        received_from,
        ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(message.problem, PROBLEM_EXPIRED);
    assert_eq!(received_from, "b");

    // Hop budget 0 expires on the sender itself.
    sim.send("a", svc, "d", "ping", &[], 0).unwrap();
    let (_, out) = sim.delivered.pop().unwrap();
    assert!(matches!(out, Output::Unreachable { ref received_from, .. } if received_from == "a"));
}

#[test]
fn unknown_service_and_unknown_node() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.connect("a", "b", 1.0);
    sim.run_for(Duration::from_secs(2));
    let svc = sim.service("a", "probe");
    sim.send("a", svc, "b", "nosvc", b"x", 30).unwrap();
    let (_, out) = sim.delivered.pop().unwrap();
    let Output::Unreachable { message, .. } = out else {
        panic!()
    };
    assert_eq!(message.problem, PROBLEM_SERVICE_UNKNOWN);
    assert_eq!(message.to_service, "nosvc");
    assert_eq!(
        sim.send("a", svc, "zz", "ping", b"", 30),
        Err(SendError::NoRoute)
    );
    // Out of hops, an unknown node is not refused: the sender hears it
    // expired, as from a known one.
    assert_eq!(sim.send("a", svc, "zz", "ping", b"", 0), Ok(()));
    assert!(matches!(
        sim.delivered.pop(),
        Some((0, Output::Unreachable { message, .. })) if message.problem == PROBLEM_EXPIRED
    ));
    assert_eq!(
        sim.send("a", svc, "a", "nosvc", b"", 30),
        Err(SendError::ServiceUnknown)
    );
    assert_eq!(sim.send("a", svc, "localhost", "probe", b"hi", 30), Ok(()));
    assert!(
        matches!(sim.delivered.pop(), Some((0, Output::Deliver { payload, .. })) if payload[..] == b"hi"[..])
    );
}

#[test]
fn duplicate_node_id_is_rejected() {
    let mut sim = Sim::new(&["hub", "x", "x"]);
    // Two distinct processes that both call themselves "x".
    let (hub, x1, x2) = (0, 1, 2);
    sim.connect_idx(hub, params(1.0), x1, params(1.0));
    sim.pump();
    sim.connect_idx(hub, params(1.0), x2, params(1.0));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.closed_with.iter().any(|(i, e)| *i == hub
        && e == "hub: rejected connection with node x because it connected using a node ID we are already connected to"));
    assert_eq!(sim.nodes[hub].peers.len(), 1);
}

#[test]
fn own_id_and_allowed_peers_and_cost_mismatch_rejections() {
    let mut sim = Sim::new(&["a", "a2"]);
    sim.nodes[1].id = "a".into();
    sim.connect_idx(0, params(1.0), 1, params(1.0));
    sim.pump();
    // The peer named "a" (idx 1) is refused by "a" for using its ID.
    let mut sim2 = Sim::new(&["a", "b"]);
    let mut restricted = params(1.0);
    restricted.allowed_peers = Some(vec!["c".into()]);
    sim2.connect_with("a", restricted, "b", params(1.0));
    sim2.run_for(Duration::from_secs(1));
    assert!(
        sim2.closed_with
            .iter()
            .any(|(_, e)| e.ends_with("because it is not in the allowed peers list"))
    );
    assert!(
        sim.closed_with
            .iter()
            .any(|(_, e)| e.ends_with("because it tried to connect using our own node ID"))
    );

    let mut sim3 = Sim::new(&["listener", "dialer"]);
    sim3.connect_with("listener", params(1.0), "dialer", params(2.0));
    sim3.run_for(Duration::from_secs(2));
    assert!(
        sim3.closed_with
            .iter()
            .any(|(_, e)| e.ends_with("because we disagree about the connection cost"))
    );
    assert!(sim3.nodes.iter().all(|n| n.peers.is_empty()));
}

#[test]
fn a_peer_must_claim_a_node_id_its_certificate_lists() {
    let with_ids = |ids: &[&str]| BackendParams {
        cert_node_ids: Some(ids.iter().map(|s| s.to_string()).collect()),
        ..params(1.0)
    };
    let mut sim = Sim::new(&["a", "mallory"]);
    sim.connect_with("a", with_ids(&["bob", "b2"]), "mallory", params(1.0));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.closed_with.iter().any(|(_, e)| e
        == "a: rejected connection with node mallory because its TLS certificate is for node ID(s) bob, b2"));
    assert!(sim.nodes[0].peers.is_empty());

    let mut sim = Sim::new(&["a", "anon"]);
    sim.connect_with("a", with_ids(&[]), "anon", params(1.0));
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.closed_with
            .iter()
            .any(|(_, e)| e.ends_with("its TLS certificate lists no node IDs"))
    );

    let mut sim = Sim::new(&["a", "bob"]);
    sim.connect_with("a", with_ids(&["bob"]), "bob", params(1.0));
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.route("a", "bob").as_deref(), Some("bob"));
}

#[test]
fn nodecost_overrides_listener_cost_for_that_peer() {
    let mut sim = Sim::new(&["listener", "dialer"]);
    let mut lp = params(1.0);
    lp.node_cost.insert("dialer".into(), 2.5);
    sim.connect_with("listener", lp, "dialer", params(2.5));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.closed_with.is_empty(), "{:?}", sim.closed_with);
    assert_eq!(
        sim.nodes[0].status(start().wall).connections,
        vec![("dialer".into(), 2.5)]
    );
}

#[test]
fn silent_peer_gets_eleven_initial_messages_then_is_dropped() {
    let mut t = start();
    let mut node = node("a", 1, t);
    node.handle_conn_opened(7, params(1.0), t.mono);
    let mut sends = 0;
    let mut closed = false;
    for _ in 0..20 {
        node.handle_timeout(t);
        while let Some(out) = node.poll_output() {
            match out {
                Output::Send { conn: 7, .. } => sends += 1,
                Output::Close { conn: 7, .. } => closed = true,
                _ => {}
            }
        }
        t = t.after(Duration::from_secs(1));
    }
    assert_eq!(sends, 11);
    assert!(closed);
}

#[test]
fn idle_connection_times_out() {
    let mut sim = Sim::new(&["a", "b"]);
    sim.connect("a", "b", 1.0);
    sim.run_for(Duration::from_secs(2));
    // b stops talking: drop its outputs from now on by unlinking b->a only.
    let b = sim.idx("b");
    let key = *sim.links.keys().find(|(n, _)| *n == b).unwrap();
    let a_side = sim.links.remove(&key).unwrap();
    sim.run_for(Duration::from_secs(30));
    assert!(sim.nodes[0].peers.is_empty());
    assert!(!sim.links.contains_key(&a_side));
}

#[test]
fn advertisements_reach_other_nodes_and_cancel() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.connect("a", "b", 1.0);
    sim.connect("b", "c", 1.0);
    sim.run_for(Duration::from_secs(1));
    let now = sim.now.mono;
    let tags = BTreeMap::from([("type".to_string(), "Control Service".to_string())]);
    sim.nodes[0].add_work_command(WorkCommand {
        work_type: "echo".into(),
        secure: false,
    });
    let svc = sim.nodes[0]
        .bind("control", Some(Advertise { conn_type: 1, tags }), now)
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    let st = sim.nodes[2].status(start().wall);
    let ad = st
        .advertisements
        .iter()
        .find(|a| a.node_id == "a")
        .expect("ad reached c");
    assert_eq!(ad.service, "control");
    assert_eq!(ad.work_commands.as_ref().unwrap()[0].work_type, "echo");
    // A node joining later learns it when it connects, not a minute later.
    let mut late = Sim::new(&["a", "d"]);
    late.nodes[0] = std::mem::replace(&mut sim.nodes[0], node("z", 9, start()));
    late.connect("a", "d", 1.0);
    late.run_for(Duration::from_secs(1));
    assert!(
        late.nodes[1]
            .status(start().wall)
            .advertisements
            .iter()
            .any(|a| a.node_id == "a")
    );
    // Cancel removes it.
    late.nodes[0].unbind(svc, late.now.wall);
    late.run_for(Duration::from_secs(1));
    assert!(
        !late.nodes[1]
            .status(start().wall)
            .advertisements
            .iter()
            .any(|a| a.node_id == "a")
    );
}

#[test]
fn the_later_of_two_processes_with_one_id_shuts_down() {
    // Two processes named "dup" join through different relays.
    let mut sim = Sim::new(&["dup", "r1", "r2", "dup"]);
    sim.nodes[3].epoch = sim.nodes[0].epoch + 10;
    sim.connect_idx(0, params(1.0), 1, params(1.0));
    sim.connect_idx(1, params(1.0), 2, params(1.0));
    sim.connect_idx(2, params(1.0), 3, params(1.0));
    sim.run_for(Duration::from_secs(2));
    assert!(sim.shutdowns.contains(&3) && !sim.shutdowns.contains(&0));
}

#[test]
fn garbage_frames_do_not_disturb_the_node() {
    let now = start();
    let mut node = node("a", 1, now);
    node.handle_conn_opened(1, params(1.0), now.mono);
    for junk in [
        &b""[..],
        b"\x00",
        b"\x01{",
        b"\x02null",
        b"\x07abc",
        &[0u8; 40],
    ] {
        node.handle_message(1, junk.to_vec(), now);
    }
    while let Some(out) = node.poll_output() {
        assert!(matches!(out, Output::Send { .. }), "{out:?}");
    }
}

#[test]
fn a_restarted_node_learns_distant_routes_at_once() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    sim.connect("a", "b", 1.0);
    sim.connect("b", "c", 1.0);
    sim.run_for(Duration::from_secs(2));
    sim.kill("c");
    sim.run_for(Duration::from_secs(1));
    sim.connect("b", "c", 1.0);
    // Well before anyone's 10 s periodic update.
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.route("c", "a").as_deref(), Some("b"));
    assert_eq!(sim.route("a", "c").as_deref(), Some("b"));
}

#[test]
fn a_forged_ping_from_ping_gets_no_answer() {
    let now = start();
    let mut node = node("target", 1, now);
    node.handle_conn_opened(1, params(1.0), now.mono);
    let mut update = node.make_update(0);
    update.node_id = "peer".into();
    update.forwarding_node = "peer".into();
    node.handle_message(1, codec::encode_routing(&update), now);
    while node.poll_output().is_some() {}
    let ping = ServiceName::new("ping").unwrap();
    for from in ["target", "peer"] {
        let h = DataHeader {
            hops_to_live: 30,
            from_node: node_hash(from),
            to_node: node_hash("target"),
            from_service: ping,
            to_service: ping,
        };
        // Used to recurse until the stack overflowed (from = target) or
        // start an endless echo with the peer.
        node.handle_message(1, h.encode(&[]), now);
        assert!(node.poll_output().is_none());
    }
}

#[test]
fn updates_with_invalid_costs_are_ignored() {
    let mut sim = Sim::new(&["a", "m"]);
    sim.connect("a", "m", 1.0);
    sim.run_for(Duration::from_secs(1));
    let mut bad = sim.nodes[1].make_update(0);
    bad.node_id = "z".into();
    bad.update_id = "forged01".into();
    bad.connections = BTreeMap::from([("m".to_string(), -5.0)]);
    let msg = codec::encode_routing(&bad);
    let conn = *sim.nodes[0].peers.get("m").unwrap();
    sim.nodes[0].handle_message(conn, msg, sim.now);
    sim.run_for(Duration::from_secs(1));
    assert!(!sim.nodes[0].graph.cost_table().contains_key("z"));
    assert_eq!(sim.route("a", "m").as_deref(), Some("m"));
}

#[test]
fn a_cancel_does_not_circle_a_loop_forever() {
    // A - B, and a loop B - C - D - B that A is not part of.
    let mut sim = Sim::new(&["a", "b", "c", "d"]);
    sim.connect("a", "b", 1.0);
    sim.connect("b", "c", 1.0);
    sim.connect("c", "d", 1.0);
    sim.connect("d", "b", 1.0);
    sim.run_for(Duration::from_secs(1));
    let now = sim.now.mono;
    let tags = BTreeMap::from([("type".to_string(), "x".to_string())]);
    let svc = sim.nodes[0]
        .bind("svc", Some(Advertise { conn_type: 1, tags }), now)
        .unwrap();
    sim.run_for(Duration::from_secs(1));
    sim.nodes[0].unbind(svc, sim.now.wall);
    // pump() would never return if the cancel kept circulating.
    sim.run_for(Duration::from_secs(1));
    for n in &sim.nodes[1..] {
        assert!(
            !n.status(start().wall)
                .advertisements
                .iter()
                .any(|a| a.service == "svc")
        );
    }
}

#[test]
fn a_forgotten_update_id_sent_again_changes_nothing() {
    let now = start().mono;
    let mut node = node("a", 1, start());
    let mut ru = node.make_update(0);
    ru.node_id = "far".into();
    ru.forwarding_node = "far".into();
    let send = |node: &mut Node, ru: &codec::RoutingUpdate, i: u64| {
        let raw = codec::encode_routing(ru).into();
        node.handle_routing_update(ru.clone(), raw, 0, now + Duration::from_micros(i));
    };
    let first = ru.clone();
    for i in 0..(SEEN_UPDATES_CAP as u64 + 10) {
        ru.update_id = format!("u{i}");
        ru.update_sequence = i + 1;
        send(&mut node, &ru, i);
    }
    let latest = |node: &Node| {
        let far = node.graph.id("far").expect("far is known");
        node.known.get(far).expect("far's update").sequence
    };
    let newest = latest(&node);
    assert_eq!(newest, SEEN_UPDATES_CAP as u64 + 10);
    // The first update's ID is forgotten by now; its sequence is old, so
    // it is refused as stale all the same.
    let mut again = first;
    again.update_id = "u0".into();
    again.update_sequence = 1;
    assert!(!node.seen_updates.contains("u0"));
    send(&mut node, &again, SEEN_UPDATES_CAP as u64 + 10);
    assert_eq!(latest(&node), newest);
}

mod firewall {
    use super::*;
    use crate::netceptor::firewall::{Action, Firewall, RuleSpec};

    fn rule(
        action: Action,
        from_node: &str,
        to_node: &str,
        to_service: &str,
    ) -> (Action, RuleSpec) {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let spec = RuleSpec {
            from_node: opt(from_node),
            to_node: opt(to_node),
            to_service: opt(to_service),
            ..RuleSpec::default()
        };
        (action, spec)
    }

    fn line_with_rules(on: &str, rules: &[(Action, RuleSpec)]) -> Sim {
        let mut sim = Sim::new(&["a", "b", "c"]);
        sim.connect("a", "b", 1.0);
        sim.connect("b", "c", 1.0);
        let i = sim.idx(on);
        let fw = Firewall::new(rules.iter().map(|(a, s)| (*a, s))).unwrap();
        sim.nodes[i].set_firewall(fw);
        sim.run_for(Duration::from_secs(2));
        sim
    }

    /// Pings `to` from a fresh service on `from`; what came back, if anything.
    fn ping(sim: &mut Sim, from: &str, to: &str) -> Option<Output> {
        sim.delivered.clear();
        let svc = sim.service(from, &format!("p{}", sim.next_conn));
        sim.next_conn += 1;
        sim.send(from, svc, to, "ping", &[], MAX_FORWARDING_HOPS)
            .unwrap();
        sim.delivered.pop().map(|(_, out)| out)
    }

    fn blocked_by(out: Option<Output>) -> Option<String> {
        match out {
            Some(Output::Unreachable {
                message,
                received_from,
                ..
            }) if message.problem == PROBLEM_BLOCKED => Some(received_from),
            other => panic!("expected a firewall unreachable, got {other:?}"),
        }
    }

    fn answered(out: Option<Output>) -> bool {
        matches!(out, Some(Output::Deliver { .. }))
    }

    #[test]
    fn reject_answers_the_sender_and_other_traffic_flows() {
        let mut sim = line_with_rules("c", &[rule(Action::Reject, "a", "", "")]);
        assert_eq!(blocked_by(ping(&mut sim, "a", "c")).as_deref(), Some("c"));
        assert!(answered(ping(&mut sim, "b", "c")));
        // c's own ping reaches a, but a's reply comes from a: refused at c,
        // whose unreachable back to a's `ping` service is not delivered.
        assert_eq!(ping(&mut sim, "c", "a"), None);
    }

    #[test]
    fn drop_is_silent() {
        let mut sim = line_with_rules("c", &[rule(Action::Drop, "a", "c", "ping")]);
        assert_eq!(ping(&mut sim, "a", "c"), None);
        assert!(answered(ping(&mut sim, "b", "c")));
    }

    #[test]
    fn a_relay_rule_blocks_forwarded_traffic_only() {
        let rules = [
            rule(Action::Accept, "b", "", ""),
            rule(Action::Accept, "", "b", ""),
            rule(Action::Reject, "", "", ""),
        ];
        let mut sim = line_with_rules("b", &rules);
        assert_eq!(blocked_by(ping(&mut sim, "a", "c")).as_deref(), Some("b"));
        assert!(answered(ping(&mut sim, "a", "b")));
        assert!(answered(ping(&mut sim, "c", "b")));
    }

    #[test]
    fn regex_rules_and_locally_originated_messages() {
        let rules = [rule(Action::Reject, "", "/[bc]/", "/p.*/")];
        let mut sim = line_with_rules("a", &rules);
        // The probe's own ping to b is originated here and refused here.
        assert_eq!(blocked_by(ping(&mut sim, "a", "b")).as_deref(), Some("a"));
        assert!(answered(ping(&mut sim, "b", "c")));
    }
}

/// One peer (or a few) trying to cut a node off or make it grow.
mod hostile {
    use super::*;
    use crate::netceptor::codec::{RoutingUpdate, ServiceAdvertisement};
    use crate::netceptor::names::MAX_NODE_ID_LEN;

    /// An initial connect message claiming to be `id`.
    fn hello(id: &str) -> Vec<u8> {
        codec::encode_routing(&RoutingUpdate {
            node_id: id.into(),
            update_id: "hello123".into(),
            update_epoch: 1,
            update_sequence: 1,
            connections: BTreeMap::new(),
            forwarding_node: id.into(),
            suspected_duplicate: 0,
        })
    }

    /// The largest message `node` sends (its own routing updates).
    fn sends_fit(node: &mut Node) -> bool {
        let mut ok = true;
        while let Some(out) = node.poll_output() {
            if let Output::Send { msg, .. } = out {
                ok &= msg.len() <= codec::MAX_MESSAGE_LEN;
            }
        }
        ok
    }

    #[test]
    fn regression_a_65kb_node_id_cannot_cut_a_node_off() {
        let mut sim = Sim::new(&["a", "b"]);
        sim.connect("a", "b", 1.0);
        sim.run_for(Duration::from_secs(1));
        let now = sim.now;
        let a = &mut sim.nodes[0];
        for (conn, id) in [
            (900, "x".repeat(65_000)),
            (901, "localhost".into()),
            (902, String::new()),
            (903, "../../x".into()),
        ] {
            a.handle_conn_opened(conn, params(1.0), now.mono);
            a.handle_message(conn, hello(&id), now);
        }
        assert!(sends_fit(&mut sim.nodes[0]));
        assert_eq!(sim.nodes[0].peers.len(), 1);
        // b keeps hearing from a well past the idle timeout.
        sim.run_for(Duration::from_secs(60));
        assert_eq!(sim.route("b", "a").as_deref(), Some("a"));
        assert_eq!(sim.route("a", "b").as_deref(), Some("b"));
    }

    #[test]
    fn a_peer_that_would_overflow_our_update_is_refused() {
        let now = start();
        let mut a = node("a", 1, now);
        let mut refused = None;
        for i in 0..400u64 {
            let id = format!("{i:0>253}");
            a.handle_conn_opened(i, params(1.0), now.mono);
            a.handle_message(i, hello(&id), now);
            while let Some(out) = a.poll_output() {
                if let Output::Close { error: Some(e), .. } = out {
                    refused.get_or_insert((i, e));
                }
            }
        }
        let (i, e) = refused.expect("some peer is refused");
        assert!(e.contains("our routing update would be"), "{e}");
        assert!(i > 200, "refused only when full: {i}");
        let update = codec::encode_routing(&a.make_update(u64::MAX));
        assert!(update.len() <= codec::MAX_MESSAGE_LEN);
    }

    #[test]
    fn updates_naming_bad_nodes_are_dropped_whole() {
        let mut sim = Sim::new(&["a", "m"]);
        sim.connect("a", "m", 1.0);
        sim.run_for(Duration::from_secs(1));
        let conn = *sim.nodes[0].peers.get("m").unwrap();
        for (i, bad) in ["", "localhost", &"y".repeat(MAX_NODE_ID_LEN + 1)]
            .into_iter()
            .enumerate()
        {
            let mut ru = sim.nodes[1].make_update(0);
            ru.node_id = format!("z{i}");
            ru.update_id = format!("forged0{i}");
            ru.connections = BTreeMap::from([("m".to_string(), 1.0), (bad.to_string(), 1.0)]);
            let msg = codec::encode_routing(&ru);
            sim.nodes[0].handle_message(conn, msg, sim.now);
        }
        sim.run_for(Duration::from_secs(1));
        assert!(
            sim.nodes[0]
                .graph
                .cost_table()
                .keys()
                .all(|k| k == "a" || k == "m")
        );
        assert_eq!(sim.route("a", "m").as_deref(), Some("m"));
    }

    fn limits(nodes: usize, connections: usize, ads: usize) -> Limits {
        Limits {
            max_nodes: nodes,
            max_connections: connections,
            max_ads: ads,
        }
    }

    /// Routing updates for `n` made-up nodes, each listing mallory.
    fn fake_nodes(from: usize, n: usize) -> Vec<Vec<u8>> {
        (from..from + n)
            .map(|i| {
                codec::encode_routing(&RoutingUpdate {
                    node_id: format!("fake{i}"),
                    update_id: format!("fu{i}"),
                    update_epoch: 1,
                    update_sequence: 1,
                    connections: BTreeMap::from([("m".to_string(), 1.0)]),
                    forwarding_node: "m".into(),
                    suspected_duplicate: 0,
                })
            })
            .collect()
    }

    #[test]
    fn a_flood_of_fake_nodes_stops_at_the_limit_and_real_routes_work() {
        let mut sim = Sim::new(&["a", "m", "b", "late"]);
        sim.nodes[0].set_limits(limits(50, 1000, 100));
        sim.connect("a", "b", 1.0);
        sim.connect("a", "m", 1.0);
        sim.run_for(Duration::from_secs(1));
        let conn = *sim.nodes[0].peers.get("m").unwrap();
        for msg in fake_nodes(0, 5000) {
            sim.nodes[0].handle_message(conn, msg, sim.now);
        }
        sim.run_for(Duration::from_secs(1));
        let a = &sim.nodes[0];
        assert!(a.known.len() <= 50, "{}", a.known.len());
        assert!(a.graph.len() <= 51 && a.names.len() <= 51);
        // b learnt at most what a accepted.
        assert!(sim.nodes[2].known.len() <= 51);
        assert_eq!(sim.route("a", "b").as_deref(), Some("b"));
        // A real peer joining during the flood is still routed.
        sim.connect("a", "late", 1.0);
        for msg in fake_nodes(5000, 100) {
            sim.nodes[0].handle_message(conn, msg, sim.now);
        }
        sim.run_for(Duration::from_secs(2));
        assert_eq!(sim.route("a", "late").as_deref(), Some("late"));
        assert_eq!(sim.route("late", "b").as_deref(), Some("a"));
    }

    #[test]
    fn an_update_goes_on_as_we_encode_it_however_its_sender_spaced_it() {
        let mut sim = Sim::new(&["a", "m", "b"]);
        sim.connect("a", "b", 1.0);
        sim.connect("a", "m", 1.0);
        sim.run_for(Duration::from_secs(1));
        let (from_m, to_b) = (sim.nodes[0].peers["m"], sim.nodes[0].peers["b"]);
        for (i, spaced) in [false, true].into_iter().enumerate() {
            let mut ru = sim.nodes[1].make_update(0);
            ru.node_id = format!("far{i}");
            ru.update_id = format!("far{i}");
            ru.forwarding_node = "m".into();
            let mut msg = codec::encode_routing(&ru);
            if spaced {
                msg = String::from_utf8(msg).unwrap().replace(',', ", ").into();
            }
            sim.nodes[0].handle_message(from_m, msg, sim.now);
            ru.forwarding_node = "a".into();
            let want = bytes::Bytes::from(codec::encode_routing(&ru));
            let sent = std::iter::from_fn(|| sim.nodes[0].poll_output())
                .find(|out| matches!(out, Output::Send { msg, .. } if msg[0] == codec::MSG_ROUTE));
            assert_eq!(
                sent,
                Some(Output::Send {
                    conn: to_b,
                    msg: want
                }),
                "spaced: {spaced}"
            );
        }
    }

    #[test]
    fn connections_in_the_cost_table_are_bounded_and_counted() {
        let mut sim = Sim::new(&["a", "m", "b"]);
        sim.nodes[0].set_limits(limits(100, 300, 100));
        sim.connect("a", "b", 1.0);
        sim.connect("a", "m", 1.0);
        sim.run_for(Duration::from_secs(1));
        let conn = *sim.nodes[0].peers.get("m").unwrap();
        for i in 0..50 {
            let mut ru = sim.nodes[1].make_update(0);
            ru.node_id = format!("wide{i}");
            ru.update_id = format!("wide{i}");
            ru.forwarding_node = "m".into();
            ru.connections = (0..20).map(|j| (format!("n{j}"), 1.0)).collect();
            sim.nodes[0].handle_message(conn, codec::encode_routing(&ru), sim.now);
        }
        sim.run_for(Duration::from_secs(1));
        let a = &sim.nodes[0];
        let counted: usize = a.graph.cost_table().values().map(BTreeMap::len).sum();
        assert_eq!(a.graph.edges(), counted);
        assert!(counted <= 300, "{counted}");
        assert_eq!(sim.route("a", "b").as_deref(), Some("b"));
        // Losing a peer keeps the count right.
        sim.kill("b");
        sim.run_for(Duration::from_secs(1));
        let a = &sim.nodes[0];
        assert_eq!(
            a.graph.edges(),
            a.graph
                .cost_table()
                .values()
                .map(BTreeMap::len)
                .sum::<usize>()
        );
    }

    fn ad(node: &str, service: &str) -> Vec<u8> {
        codec::encode_service_ad(&ServiceAdvertisement {
            node_id: node.into(),
            service: service.into(),
            time: "2026-01-01T00:00:00Z".into(),
            conn_type: 1,
            tags: None,
            work_commands: None,
            cancel: false,
        })
    }

    fn ads_sent(node: &mut Node, conn: ConnId) -> usize {
        let mut n = 0;
        while let Some(out) = node.poll_output() {
            if let Output::Send { conn: c, msg } = out
                && c == conn
                && msg[0] == codec::MSG_SERVICE_AD
            {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn ads_are_bounded_and_bad_ones_dropped() {
        let mut sim = Sim::new(&["a", "m", "b"]);
        sim.nodes[0].set_limits(limits(100, 1000, 500));
        sim.connect("a", "b", 1.0);
        sim.connect("a", "m", 1.0);
        sim.run_for(Duration::from_secs(1));
        let conn = *sim.nodes[0].peers.get("m").unwrap();
        for i in 0..2000 {
            sim.nodes[0].handle_message(conn, ad(&format!("f{i}"), "svc"), sim.now);
        }
        for (node, svc) in [
            ("", "svc"),
            ("localhost", "svc"),
            ("f", ""),
            ("f", "123456789"),
        ] {
            sim.nodes[0].handle_message(conn, ad(node, svc), sim.now);
        }
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.nodes[0].ads.len(), 500);
        assert!(sim.nodes[2].ads.len() <= 500);
        assert_eq!(sim.route("a", "b").as_deref(), Some("b"));
    }

    #[test]
    fn a_new_peer_gets_known_ads_paced_by_its_link() {
        use super::super::share::SHARE_BACKLOG;
        let now = start();
        let mut a = node("a", 1, now);
        a.handle_conn_opened(1, params(1.0), now.mono);
        a.handle_message(1, hello("m"), now);
        let one = ad("f0000", "svc").len() + 2;
        for i in 0..2000 {
            a.handle_message(1, ad(&format!("f{i:04}"), "svc"), now);
        }
        while a.poll_output().is_some() {}
        // A new peer gets about one link's worth at once...
        a.handle_conn_opened(2, params(1.0), now.mono);
        a.handle_message(2, hello("n"), now);
        let first = ads_sent(&mut a, 2);
        assert!(first > 0 && first <= SHARE_BACKLOG / one + 1, "{first}");
        // ...nothing more while its link is backed up...
        let mut t = now;
        for _ in 0..10 {
            t = t.after(Duration::from_millis(100));
            a.handle_link_backlog(2, SHARE_BACKLOG);
            a.handle_timeout(t);
            assert_eq!(ads_sent(&mut a, 2), 0);
        }
        // ...then only what tops the link up...
        t = t.after(Duration::from_millis(100));
        a.handle_link_backlog(2, SHARE_BACKLOG - 10 * one);
        a.handle_timeout(t);
        assert_eq!(ads_sent(&mut a, 2), 10);
        // ...and the rest as it drains.
        let mut total = first + 10;
        for _ in 0..100 {
            t = t.after(Duration::from_millis(100));
            a.handle_link_backlog(2, 0);
            a.handle_timeout(t);
            total += ads_sent(&mut a, 2);
        }
        assert_eq!(total, 2000);
        assert_eq!(a.conns_catching_up().count(), 0);
    }

    #[test]
    fn many_new_peers_share_one_round_budget() {
        use super::super::share::{SHARE_BACKLOG, SHARE_ROUND};
        let now = start();
        let mut a = node("a", 1, now);
        a.handle_conn_opened(1, params(1.0), now.mono);
        a.handle_message(1, hello("m"), now);
        for i in 0..5000 {
            a.handle_message(1, ad(&format!("f{i:04}"), "svc"), now);
        }
        while a.poll_output().is_some() {}
        for c in 2..202 {
            a.handle_conn_opened(c, params(1.0), now.mono);
            a.handle_message(c, hello(&format!("n{c}")), now);
        }
        while a.poll_output().is_some() {}
        let mut t = now;
        let mut first_served = Vec::new();
        for _ in 0..5 {
            t = t.after(Duration::from_millis(100));
            for c in 2..202 {
                a.handle_link_backlog(c, 0);
            }
            a.handle_timeout(t);
            let mut bytes = 0;
            let mut first = None;
            while let Some(out) = a.poll_output() {
                if let Output::Send { conn, msg } = out
                    && msg[0] == codec::MSG_SERVICE_AD
                {
                    bytes += msg.len() + 2;
                    first.get_or_insert(conn);
                }
            }
            assert!(bytes <= SHARE_ROUND + SHARE_BACKLOG, "{bytes} in one round");
            assert!(bytes > SHARE_ROUND / 2, "{bytes} in one round");
            first_served.push(first);
        }
        // Peers take turns at the front.
        first_served.dedup();
        assert!(first_served.len() > 1, "{first_served:?}");
    }
}

#[test]
fn retiring_a_backend_closes_its_links_and_refuses_its_late_ones() {
    let mut sim = Sim::new(&["a", "b", "c"]);
    let from = |id| BackendParams {
        backend: BackendId(id),
        ..params(1.0)
    };
    sim.connect_with("a", from(7), "b", params(1.0));
    sim.connect_with("a", from(8), "c", params(1.0));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.route("a", "b").as_deref(), Some("b"));
    let now = sim.now.mono;
    sim.nodes[0].handle_backend_retired(BackendId(7), now);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.route("a", "b"), None);
    assert_eq!(sim.route("b", "a"), None);
    // The other backend's link is untouched.
    assert_eq!(sim.route("a", "c").as_deref(), Some("c"));
    // A session the removed backend was still setting up closes at once.
    sim.connect_with("a", from(7), "b", params(1.0));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.route("a", "b"), None);
    assert!(sim.closed_with.is_empty(), "{:?}", sim.closed_with);
}

/// The benchmark's scenario (benches/mesh_sim.rs) at a small size: every
/// node routes to every other, the rest again once the busiest node dies,
/// and all again once it is back.
fn converges_and_survives_the_busiest_node(links: &[(usize, usize)], n: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("node{i}")).collect();
    let mut sim = Sim::new(&names);
    sim.connect_all(links);
    let limit = Duration::from_secs(30);
    assert!(sim.run_until(limit, |s| s.converged(&[])).is_some());
    let hub = topology::busiest(n, links);
    sim.kill_idx(hub);
    assert!(sim.run_until(limit, |s| s.converged(&[hub])).is_some());
    let other = (hub + 1) % n;
    assert_eq!(sim.nodes[other].routes.len(), n - 2);
    // It restarts and its links come back.
    sim.connect_all(&topology::links_of(hub, links));
    assert!(sim.run_until(limit, |s| s.converged(&[])).is_some());
}

#[test]
fn a_random_mesh_of_30_converges_without_its_hub_and_with_it_back() {
    let links = topology::random(30, 7);
    assert!(links.len() >= 45, "{} links", links.len());
    converges_and_survives_the_busiest_node(&links, 30);
}

#[test]
fn a_hub_and_spoke_mesh_of_30_converges_without_its_busiest_hop_node_and_with_it_back() {
    let links = topology::hub_and_spoke(30);
    assert_eq!(topology::busiest(30, &links), 3, "a hop node");
    converges_and_survives_the_busiest_node(&links, 30);
}

#[test]
fn a_newcomer_learns_the_mesh_from_its_peer_and_only_changed_nodes_flood() {
    let mut names: Vec<String> = (0..10).map(|i| format!("node{i}")).collect();
    names.push("late".into());
    let mut sim = Sim::new(&names);
    let ring: Vec<_> = (0..10).map(|i| (i, (i + 1) % 10)).collect();
    sim.connect_all(&ring);
    let limit = Duration::from_secs(5);
    assert!(sim.run_until(limit, |s| s.converged(&[10])).is_some());
    let before: Vec<u64> = sim.nodes.iter().map(|n| n.sequence).collect();
    sim.connect_idx(10, params(1.0), 0, params(1.0));
    // Well before anyone's periodic update (10 s).
    assert!(sim.run_until(limit, |s| s.converged(&[])).is_some());
    sim.run_for(Duration::from_secs(1));
    let flooded: Vec<usize> = (0..11)
        .filter(|&i| sim.nodes[i].sequence != before[i])
        .collect();
    assert_eq!(flooded, [0, 10], "only the ends of the new link flood");
}

#[test]
fn a_new_peer_is_handed_known_updates_as_their_origin_sent_them() {
    let mut sim = Sim::new(&["m", "a", "n"]);
    sim.connect("m", "a", 1.0);
    sim.run_for(Duration::from_secs(1));
    let m_seq = sim.nodes[0].sequence;
    let (a, n) = (1, 2);
    let conn_a = sim.next_conn;
    sim.connect_idx(a, params(1.0), n, params(1.0));
    // n's hello reaches a by hand, so what a sends back can be read.
    let Some(Output::Send { msg: hello, .. }) = sim.nodes[n].poll_output() else {
        panic!("n sends a hello")
    };
    let now = sim.now;
    sim.nodes[a].handle_message(conn_a, hello.to_vec(), now);
    let mut updates = Vec::new();
    while let Some(out) = sim.nodes[a].poll_output() {
        if let Output::Send { conn, msg } = out
            && let Ok(codec::Message::Routing(ru)) = codec::decode(&msg)
        {
            assert_eq!(conn, conn_a);
            updates.push(ru);
        }
    }
    let m = updates
        .iter()
        .find(|ru| ru.node_id == "m")
        .expect("m's update");
    assert_eq!(m.forwarding_node, "a");
    assert_eq!((m.update_epoch, m.update_sequence), (1000, m_seq));
    assert!(updates.iter().all(|ru| ru.node_id != "n"));
}

#[test]
fn a_restarted_node_relearns_a_mesh_larger_than_one_chunk_at_once() {
    let n = 60;
    let links = topology::hub_and_spoke(n);
    // Long IDs make the 59 other updates several chunks (SHARE_BACKLOG).
    let names: Vec<String> = (0..n).map(|i| format!("{i:0>240}")).collect();
    let mut sim = Sim::new(&names);
    sim.connect_all(&links);
    let limit = Duration::from_secs(5);
    assert!(sim.run_until(limit, |s| s.converged(&[])).is_some());
    // An execution node, linked to two hop nodes.
    let leaf = n - 1;
    sim.kill_idx(leaf);
    let back: Vec<_> = links
        .iter()
        .copied()
        .filter(|&(a, b)| a == leaf || b == leaf)
        .collect();
    sim.connect_all(&back);
    // Everything must reach it before anyone's periodic update (10 s)
    // could fill the gaps.
    assert!(sim.run_until(limit, |s| s.converged(&[])).is_some());
}

#[test]
fn a_drained_burst_of_outputs_gives_its_memory_back() {
    let now = start();
    let mut a = node("a", 1, now);
    // A new peer of a node that knows a thousand nodes is handed them at once.
    for conn in 0..1000 {
        a.outputs.push_back(Output::Close { conn, error: None });
    }
    let mut drained = 0;
    while a.poll_output().is_some() {
        drained += 1;
    }
    assert_eq!(drained, 1000);
    assert!(
        a.outputs.capacity() <= OUTPUTS_KEPT,
        "{}",
        a.outputs.capacity()
    );
}

/// An update forwarded by `m` in which `node` lists `connections`.
fn via_m(node: &str, epoch: u64, seq: u64, connections: &[(&str, f64)]) -> Vec<u8> {
    codec::encode_routing(&codec::RoutingUpdate {
        node_id: node.into(),
        update_id: format!("{node}{seq:07}"),
        update_epoch: epoch,
        update_sequence: seq,
        connections: connections
            .iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect(),
        forwarding_node: "m".into(),
        suspected_duplicate: 0,
    })
}

#[test]
fn a_new_peer_is_handed_the_bytes_we_flooded() {
    let mut sim = Sim::new(&["m", "a", "b", "n"]);
    sim.connect("m", "a", 1.0);
    sim.connect("a", "b", 1.0);
    sim.run_for(Duration::from_secs(1));
    let (a, n) = (1, 3);
    let to_m = *sim.nodes[a].peers.get("m").unwrap();
    let to_b = *sim.nodes[a].peers.get("b").unwrap();
    // m says it links to x, and x that it links to m and y.
    let (epoch, seq) = (sim.nodes[0].epoch, sim.nodes[0].sequence + 1);
    let m = via_m("m", epoch, seq, &[("a", 1.0), ("x", 1.0)]);
    sim.nodes[a].handle_message(to_m, m, sim.now);
    let x = via_m("x", 7, 1, &[("m", 1.0), ("y", 2.5)]);
    sim.nodes[a].handle_message(to_m, x, sim.now);
    let flooded = std::iter::from_fn(|| sim.nodes[a].poll_output())
        .filter_map(|out| match out {
            Output::Send { conn, msg } if conn == to_b => Some(msg),
            _ => None,
        })
        .last()
        .expect("a floods x's update on to b");
    sim.run_for(Duration::from_secs(1));
    let to_n = sim.next_conn;
    sim.connect_idx(a, params(1.0), n, params(1.0));
    let Some(Output::Send { msg: hello, .. }) = sim.nodes[n].poll_output() else {
        panic!("n sends a hello")
    };
    let now = sim.now;
    sim.nodes[a].handle_message(to_n, hello.to_vec(), now);
    let shared: Vec<bytes::Bytes> = std::iter::from_fn(|| sim.nodes[a].poll_output())
        .filter_map(|out| match out {
            Output::Send { conn, msg } if conn == to_n => Some(msg),
            _ => None,
        })
        .collect();
    assert!(shared.contains(&flooded), "x's update, byte for byte");
}

#[test]
fn a_peer_listing_ever_new_names_does_not_grow_the_name_table() {
    let mut sim = Sim::new(&["m", "a"]);
    sim.connect("m", "a", 1.0);
    sim.run_for(Duration::from_secs(1));
    let to_m = *sim.nodes[1].peers.get("m").unwrap();
    for seq in 1..=1000 {
        let name = format!("random{seq}");
        let x = via_m("x", 7, seq, &[("m", 1.0), (&name, 1.0)]);
        sim.nodes[1].handle_message(to_m, x, sim.now);
        sim.pump();
    }
    let names: Vec<&str> = sim.nodes[1]
        .graph
        .names_from(None)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "m", "random1000", "x"]);
}

#[test]
fn a_flood_hands_every_peer_the_same_buffer() {
    let mut sim = Sim::new(&["hub", "a", "b", "c"]);
    for peer in ["a", "b", "c"] {
        sim.connect("hub", peer, 1.0);
    }
    sim.run_for(Duration::from_secs(1));
    let hub = sim.idx("hub");
    sim.nodes[hub].flood_own_update(0);
    let sent: Vec<bytes::Bytes> = std::iter::from_fn(|| sim.nodes[hub].poll_output())
        .filter_map(|out| match out {
            Output::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 3, "one per peer");
    assert!(sent.iter().all(|m| m.as_ptr() == sent[0].as_ptr()));
}

#[test]
fn an_output_stays_small_while_thousands_queue() {
    // A mass start of a large mesh queues millions of outputs at once.
    assert!(std::mem::size_of::<Output>() <= 96);
}

#[test]
fn a_stored_update_shares_its_list_with_the_cost_table() {
    let mut sim = Sim::new(&["a", "b", "c", "d"]);
    sim.connect_all(&[(0, 1), (1, 2), (2, 3), (3, 0)]);
    sim.run_for(Duration::from_secs(2));
    let a = &sim.nodes[0];
    let mut shared = 0;
    for (id, seq) in a.known.iter() {
        let update = seq.update.as_ref().expect("every node's update is kept");
        let reported = update
            .connections
            .iter()
            .map(|&(to, c)| (a.graph.name(to).to_string(), c))
            .collect();
        let entry = a.graph.entry_if(id, &reported).expect("entry as reported");
        assert!(std::sync::Arc::ptr_eq(&entry, &update.connections));
        shared += 1;
    }
    assert_eq!(shared, 3);
}
