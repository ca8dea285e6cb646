//! Node-name hashing: data headers carry a 64-bit HighwayHash of each node ID
//! instead of the name (docs/wire.md §3).

use highway::{HighwayHash, HighwayHasher, Key};

/// HighwayHash-64 with the all-zero key, as the Go daemon computes it.
pub fn node_hash(name: &str) -> u64 {
    HighwayHasher::new(Key([0; 4])).hash64(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_vectors() {
        let vectors = [
            ("", 0x7035da75b9d54469u64),
            ("localhost", 0x99c4380a442ae062),
            ("node1", 0x61052d2b582eb15e),
            ("node2", 0x51bcc6e14eb3fee1),
            ("foo", 0xef7a78b67f92bdf7),
            ("bar", 0x14ef88ca522894d1),
            ("controller", 0xbac03aa9a8a96ddc),
            ("executor", 0x0c39a5ac53051d46),
        ];
        for (name, want) in vectors {
            assert_eq!(node_hash(name), want, "hash of {name:?}");
        }
    }
}
