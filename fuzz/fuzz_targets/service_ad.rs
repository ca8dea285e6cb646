#![no_main]
//! Arbitrary bytes as the JSON body of a service advertisement, decoded
//! and then handed to a node from an established peer: nothing may panic,
//! and the node keeps at most one stored ad per input.

use libfuzzer_sys::fuzz_target;
use receptor::netceptor::codec::{self, MSG_SERVICE_AD, Message, RoutingUpdate};
use receptor::netceptor::node::sim;

fuzz_target!(|data: &[u8]| {
    let mut msg = vec![MSG_SERVICE_AD];
    msg.extend_from_slice(data);
    if let Ok(Message::ServiceAd(ad)) = codec::decode(&msg) {
        let _ = codec::decode(&codec::encode_service_ad(&ad)).expect("re-encoded ad decodes");
    }
    let now = sim::start();
    let mut node = sim::node("a", 1, now);
    node.handle_conn_opened(1, sim::params(1.0), now.mono);
    let hello = RoutingUpdate {
        node_id: "p".into(),
        update_id: "hello123".into(),
        update_epoch: 1,
        update_sequence: 1,
        connections: Default::default(),
        forwarding_node: "p".into(),
        suspected_duplicate: 0,
    };
    node.handle_message(1, codec::encode_routing(&hello), now);
    node.handle_message(1, msg, now);
    let st = node.status(now.wall);
    assert!(st.advertisements.len() <= 1);
    while node.poll_output().is_some() {}
});
