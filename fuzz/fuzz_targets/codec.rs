#![no_main]
//! Arbitrary bytes as a backend stream and as single messages: decoding
//! must never panic, and whatever decodes must re-encode.

use libfuzzer_sys::fuzz_target;
use receptor::netceptor::codec::{self, FrameReader, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(Message::Routing(r)) = codec::decode(data) {
        let _ = codec::decode(&codec::encode_routing(&r)).expect("re-encoded update decodes");
    }
    let mut frames = FrameReader::default();
    frames.push(data);
    while let Some(msg) = frames.next_frame() {
        let _ = codec::decode(&msg);
    }
});
