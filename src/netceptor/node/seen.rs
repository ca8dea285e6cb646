//! The routing update IDs a node has seen, so that it floods each update
//! once however many peers send it.
//!
//! Two generations of IDs: new IDs go into the current one, and when it
//! holds half of [`SEEN_UPDATES_CAP`] (or at the sweep, every
//! [`super::SEEN_UPDATE_EXPIRY`]) the previous generation is forgotten and
//! the current one takes its place (a sweep does nothing if the cap did
//! so since the last one). An ID is therefore remembered for at least one
//! sweep interval, or for the next `SEEN_UPDATES_CAP / 2 - 1` new IDs,
//! whichever ends first, at a constant cost per ID. (Before, a full
//! table was sorted by time to forget its older half: in a 5,000-node
//! mesh every node crossed the cap while reconverging and sorted 65,536
//! entries each time.)

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

/// Routing update IDs remembered at most, both generations together.
pub(super) const SEEN_UPDATES_CAP: usize = 65_536;

#[derive(Default)]
pub(super) struct SeenUpdates {
    current: HashSet<SeenKey>,
    previous: HashSet<SeenKey>,
    /// This node's key for hashing long update IDs.
    keys: RandomState,
    /// Whether the cap rotated the generations since the last sweep:
    /// then `previous` is younger than a sweep interval, and kept.
    rotated: bool,
}

impl SeenUpdates {
    /// Remembers `id`; whether it was new.
    pub fn first_sight(&mut self, id: &str) -> bool {
        let key = SeenKey::of(id, &self.keys);
        if self.previous.contains(&key) || !self.current.insert(key) {
            return false;
        }
        if self.current.len() >= SEEN_UPDATES_CAP / 2 {
            self.rotate();
            self.rotated = true;
        }
        true
    }

    /// Forgets the IDs seen before the previous sweep, unless the cap has
    /// already made room since then.
    pub fn sweep(&mut self) {
        if !std::mem::take(&mut self.rotated) {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    #[cfg(test)]
    pub fn contains(&self, id: &str) -> bool {
        let key = SeenKey::of(id, &self.keys);
        self.current.contains(&key) || self.previous.contains(&key)
    }
}

/// A routing update's ID as a fixed-size key of the seen-update table (a
/// node remembers thousands): IDs of up to 15 bytes (Go's and ours have 8)
/// are held exactly, inline, instead of in a `String` of their own; longer
/// ones, which only odd peers send, by a 120-bit hash, so they can be
/// taken for one another but never for a short one. The hash is keyed
/// per node (`keys`), so a peer cannot work out colliding IDs offline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeenKey([u8; 16]);

impl SeenKey {
    fn of(id: &str, keys: &RandomState) -> SeenKey {
        let id = id.as_bytes();
        let mut key = [0; 16];
        match id.len() {
            len if len < key.len() => {
                key[0] = len as u8;
                key[1..=len].copy_from_slice(id);
            }
            _ => {
                key[0] = u8::MAX;
                let hash = |seed: u64| keys.hash_one((seed, id)).to_le_bytes();
                key[1..9].copy_from_slice(&hash(1));
                key[9..].copy_from_slice(&hash(2)[..7]);
            }
        }
        SeenKey(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once() {
        let mut seen = SeenUpdates::default();
        assert!(seen.first_sight("abcdefgh"));
        assert!(!seen.first_sight("abcdefgh"));
        assert!(seen.first_sight("abcdefgi"));
    }

    #[test]
    fn a_sweep_forgets_what_came_before_the_previous_one() {
        let mut seen = SeenUpdates::default();
        seen.first_sight("old");
        seen.sweep();
        seen.first_sight("newer");
        assert!(
            seen.contains("old"),
            "remembered for one sweep interval at least"
        );
        seen.sweep();
        assert!(!seen.contains("old"));
        assert!(seen.contains("newer"));
        assert!(seen.first_sight("old"));
    }

    #[test]
    fn a_sweep_right_after_the_cap_made_room_keeps_the_ids_before_it() {
        let mut seen = SeenUpdates::default();
        for i in 0..SEEN_UPDATES_CAP / 2 {
            seen.first_sight(&format!("u{i}"));
        }
        let last = format!("u{}", SEEN_UPDATES_CAP / 2 - 1);
        seen.sweep();
        assert!(seen.contains(&last), "forgotten moments after it came");
        seen.sweep();
        assert!(!seen.contains(&last));
    }

    #[test]
    fn the_table_stays_within_its_cap_and_keeps_the_newest_half() {
        let mut seen = SeenUpdates::default();
        let total = SEEN_UPDATES_CAP * 2 + 10;
        for i in 0..total {
            assert!(seen.first_sight(&format!("u{i}")));
            assert!(seen.len() <= SEEN_UPDATES_CAP);
        }
        for i in total - SEEN_UPDATES_CAP / 2..total {
            assert!(seen.contains(&format!("u{i}")), "u{i} forgotten");
        }
        assert!(!seen.contains("u0"));
    }

    #[test]
    fn seen_keys_tell_update_ids_apart() {
        let long = "a".repeat(15);
        let ids = ["", "a", "a\0", "abcdefgh", "abcdefgi", &long[..14], &long];
        let k = RandomState::new();
        let keys: std::collections::HashSet<SeenKey> =
            ids.iter().map(|id| SeenKey::of(id, &k)).collect();
        assert_eq!(keys.len(), ids.len());
        let (x, y) = ("x".repeat(40), format!("{}y", "x".repeat(39)));
        assert_ne!(SeenKey::of(&x, &k), SeenKey::of(&y, &k));
        assert_eq!(SeenKey::of(&x, &k), SeenKey::of(&x.clone(), &k));
        // Long IDs hash with the node's own key: another node's differs.
        assert_ne!(SeenKey::of(&x, &k), SeenKey::of(&x, &RandomState::new()));
        assert_eq!(
            SeenKey::of("ab", &k),
            SeenKey::of("ab", &RandomState::new())
        );
    }
}
