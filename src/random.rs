//! Random identifiers from the operating system's CSPRNG.

const ALPHANUMERIC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `n` characters from `[0-9a-zA-Z]`, as Go's randstr produces for update
/// IDs, ephemeral service names and unit IDs.
pub fn alphanumeric(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        fill(&mut buf);
        // Rejection sampling keeps the distribution uniform (62 symbols).
        for &b in &buf {
            if out.len() < n && usize::from(b) < 62 * 4 {
                out.push(ALPHANUMERIC[usize::from(b) % 62] as char);
            }
        }
    }
    out
}

pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

fn fill(buf: &mut [u8]) {
    // The kernel RNG does not fail once the system is up; if it ever does,
    // nothing random we hand out would be safe, so stop loudly.
    getrandom::fill(buf).expect("operating system random number generator failed");
}

#[cfg(test)]
mod tests {
    #[test]
    fn alphanumeric_shape() {
        let a = super::alphanumeric(8);
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, super::alphanumeric(8));
    }
}
