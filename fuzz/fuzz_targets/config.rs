#![no_main]
//! Arbitrary command lines must give a config or a clear error.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split('\0').map(str::to_string).collect();
    let _ = receptor::config::parse_args(&args);
});
