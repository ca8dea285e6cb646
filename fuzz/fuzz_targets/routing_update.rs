#![no_main]
//! Arbitrary bytes as the JSON body of a routing update, decoded and then
//! handed to a node as a peer's first and later messages: nothing may
//! panic, and whatever the node sends must fit a frame.

use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use receptor::netceptor::codec::{self, MAX_MESSAGE_LEN, MSG_ROUTE, Message};
use receptor::netceptor::node::{BackendParams, Node, Now, Output};
use receptor::random::IdGen;

fuzz_target!(|data: &[u8]| {
    let mut msg = vec![MSG_ROUTE];
    msg.extend_from_slice(data);
    if let Ok(Message::Routing(r)) = codec::decode(&msg) {
        let _ = codec::decode(&codec::encode_routing(&r)).expect("re-encoded update decodes");
    }
    let now = Now {
        mono: Instant::now(),
        wall: SystemTime::UNIX_EPOCH,
    };
    let mut node = Node::new(
        "a",
        1,
        Duration::from_secs(21),
        IdGen::from_seed(1),
        now.mono,
    );
    let params = BackendParams {
        cost: 1.0,
        node_cost: Default::default(),
        allowed_peers: None,
        cert_node_ids: None,
    };
    node.handle_conn_opened(1, params, now.mono);
    node.handle_message(1, msg.clone(), now);
    node.handle_message(1, msg, now);
    node.handle_timeout(now.after(Duration::from_secs(1)));
    while let Some(out) = node.poll_output() {
        if let Output::Send { msg, .. } = out {
            assert!(
                msg.len() <= MAX_MESSAGE_LEN,
                "node sent {} bytes",
                msg.len()
            );
        }
    }
});
