#![no_main]
//! Arbitrary bytes as what a WebSocket peer sends, read with the backends'
//! limits from either side: reading must never panic, every data message
//! goes to the codec, and anything within a message's size that we frame
//! reads back unchanged (`receptor::backends::ws::replay::check`, which
//! the unit tests also run on pseudo-random input).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| receptor::backends::ws::replay::check(data));
