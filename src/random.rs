//! Random identifiers: from the operating system's CSPRNG, or from a
//! seeded generator that sans-IO cores own so tests can replay them.

const ALPHANUMERIC: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `n` characters from `[0-9a-zA-Z]`, as Go's randstr produces for update
/// IDs, ephemeral service names and unit IDs.
pub fn alphanumeric(n: usize) -> String {
    alphanumeric_from(n, fill)
}

pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

fn alphanumeric_from(n: usize, mut source: impl FnMut(&mut [u8])) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        source(&mut buf);
        // Rejection sampling keeps the distribution uniform (62 symbols).
        for &b in &buf {
            if out.len() < n && usize::from(b) < 62 * 4 {
                out.push(ALPHANUMERIC[usize::from(b) % 62] as char);
            }
        }
    }
    out
}

fn fill(buf: &mut [u8]) {
    // The kernel RNG does not fail once the system is up; if it ever does,
    // nothing random we hand out would be safe, so stop loudly.
    getrandom::fill(buf).expect("operating system random number generator failed");
}

/// One step of SplitMix64 over `state`: a seed names one exact sequence.
/// It seeds [`IdGen`], and simulations and tests draw replayable
/// topologies, losses and payloads from it.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded xoshiro256** generator for identifiers that need to be unique,
/// not secret (Go draws the same ones from `math/rand`): routing update IDs
/// and ephemeral service names. The shell seeds it from the OS; tests seed
/// it with a constant.
#[derive(Debug, Clone)]
pub struct IdGen {
    s: [u64; 4],
}

impl IdGen {
    pub fn from_seed(seed: u64) -> IdGen {
        // SplitMix64 spreads one word over the state, never all zero.
        let mut x = seed;
        let mut next = || splitmix64(&mut x);
        IdGen {
            s: [next(), next(), next(), next()],
        }
    }

    /// Seeded from the operating system.
    pub fn from_os() -> IdGen {
        IdGen::from_seed(u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    pub fn alphanumeric(&mut self, n: usize) -> String {
        alphanumeric_from(n, |buf| {
            for chunk in buf.chunks_mut(8) {
                let word = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::IdGen;

    #[test]
    fn alphanumeric_shape() {
        let a = super::alphanumeric(8);
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, super::alphanumeric(8));
    }

    #[test]
    fn seeded_ids_replay_and_differ_by_seed() {
        let (mut a, mut b) = (IdGen::from_seed(7), IdGen::from_seed(7));
        let first: Vec<String> = (0..4).map(|_| a.alphanumeric(8)).collect();
        let again: Vec<String> = (0..4).map(|_| b.alphanumeric(8)).collect();
        assert_eq!(first, again);
        assert_ne!(first[0], first[1]);
        assert_ne!(first[0], IdGen::from_seed(8).alphanumeric(8));
        assert!(
            first
                .iter()
                .all(|s| s.len() == 8 && s.bytes().all(|c| c.is_ascii_alphanumeric()))
        );
    }
}
