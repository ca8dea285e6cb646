#![no_main]
//! Arbitrary work signatures must be refused (or, by a miracle, accepted)
//! cleanly: never a panic, whatever the segments hold.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use rsa::{RsaPrivateKey, RsaPublicKey, rand_core::OsRng};

fn key() -> &'static RsaPublicKey {
    static KEY: OnceLock<RsaPublicKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 1024).unwrap().to_public_key())
}

fuzz_target!(|data: &[u8]| {
    let token = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let _ = receptor::work::signing::verify_token(&token, key(), "node", now);
    let _ = receptor::work::signing::verify_token(&token, key(), "node", SystemTime::now());
});
