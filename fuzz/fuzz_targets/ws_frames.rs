#![no_main]
//! Arbitrary bytes as what a WebSocket peer sends, read with the backends'
//! limits from either side: reading must never panic, every data message
//! goes to the codec, and anything within a message's size that we frame
//! reads back unchanged.

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use receptor::backends::ws::{self, Incoming};
use receptor::netceptor::codec::{self, MAX_MESSAGE_LEN};
use tungstenite::WebSocket;
use tungstenite::protocol::Role;

/// The peer's bytes to read; what we answer (pongs, closes) is dropped.
struct Replay<'a>(&'a [u8]);

impl Read for Replay<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Replay<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn messages(bytes: &[u8], role: Role) -> Vec<Vec<u8>> {
    let mut ws = WebSocket::from_raw_socket(Replay(bytes), role, Some(ws::ws_config()));
    let mut got = Vec::new();
    loop {
        match ws::incoming(ws.read()) {
            Incoming::Data(m) => got.push(m),
            Incoming::Control => {}
            Incoming::End | Incoming::Gone(_) | Incoming::Refused(_) => return got,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for role in [Role::Server, Role::Client] {
        for msg in messages(data, role) {
            assert!(msg.len() <= MAX_MESSAGE_LEN, "an oversized message got through");
            let _ = codec::decode(&msg);
        }
    }
    let msg = &data[..data.len().min(MAX_MESSAGE_LEN)];
    let (mut from_server, mut from_client) = (Vec::new(), Vec::new());
    ws::server_frame(&mut from_server, msg).expect("a message within the limit frames");
    ws::client_frame(&mut from_client, msg).expect("a message within the limit frames");
    assert_eq!(messages(&from_server, Role::Client), [msg]);
    assert_eq!(messages(&from_client, Role::Server), [msg]);
});
