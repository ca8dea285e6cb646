#![no_main]
//! Arbitrary control-service lines must parse or fail cleanly.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = receptor::control::command::parse(&line);
});
