#![no_main]
//! Arbitrary bytes as the JSON body of a routing update, decoded and then
//! handed to a node as a peer's first and later messages: nothing may
//! panic, and whatever the node sends must fit a frame.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use receptor::netceptor::codec::{self, MAX_MESSAGE_LEN, MSG_ROUTE, Message};
use receptor::netceptor::node::{Output, sim};

fuzz_target!(|data: &[u8]| {
    let mut msg = vec![MSG_ROUTE];
    msg.extend_from_slice(data);
    if let Ok(Message::Routing(r)) = codec::decode(&msg) {
        let _ = codec::decode(&codec::encode_routing(&r)).expect("re-encoded update decodes");
    }
    let now = sim::start();
    let mut node = sim::node("a", 1, now);
    node.handle_conn_opened(1, sim::params(1.0), now.mono);
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
