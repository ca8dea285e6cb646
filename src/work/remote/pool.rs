//! Idle control connections, kept for the next short request (status,
//! cancel, release) to the same executor, so a unit's polls and release,
//! and the next unit's, do not each dial a stream and handshake again.
//! Sans-IO: the caller passes `now`; a connection is simply dropped (and
//! so closed) when it has idled past [`KEEP`] or the key holds
//! [`PER_KEY`] already.
//!
//! Every request is a whole control command on a session that stays open
//! after it, so this works the same against a Go executor, whose control
//! service also serves commands one after another on one connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long an idle connection is kept: well inside the 30 s QUIC idle
/// timeout both sides use, so a kept connection is one the executor has
/// not closed for idling.
pub const KEEP: Duration = Duration::from_secs(5);
/// Idle connections kept per executor and TLS client: enough for units
/// that poll at once, and a bound on the control sessions held open on
/// the executor.
pub const PER_KEY: usize = 4;

/// Idle items by key, each with when it was put back.
pub struct Idle<K, T> {
    by_key: HashMap<K, Vec<(T, Instant)>>,
}

impl<K: Eq + Hash, T> Default for Idle<K, T> {
    fn default() -> Self {
        Idle {
            by_key: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, T> Idle<K, T> {
    /// The most recently used item kept for `key`, if one is fresh.
    pub fn take(&mut self, key: &K, now: Instant) -> Option<T> {
        self.expire(now);
        let items = self.by_key.get_mut(key)?;
        let item = items.pop().map(|(item, _)| item);
        if items.is_empty() {
            self.by_key.remove(key);
        }
        item
    }

    /// Keeps `item` for `key`; past [`PER_KEY`] the longest idle goes.
    pub fn put(&mut self, key: K, item: T, now: Instant) {
        self.expire(now);
        let items = self.by_key.entry(key).or_default();
        items.push((item, now));
        if items.len() > PER_KEY {
            items.remove(0);
        }
    }

    /// How many items are kept, all keys together.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Drops every item idle for [`KEEP`] or more.
    fn expire(&mut self, now: Instant) {
        self.by_key.retain(|_, items| {
            items.retain(|(_, since)| now.saturating_duration_since(*since) < KEEP);
            !items.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_back_what_was_put_for_the_same_key_only() {
        let t0 = Instant::now();
        let mut idle = Idle::default();
        idle.put("n1", 1, t0);
        assert_eq!(idle.take(&"n2", t0), None);
        assert_eq!(idle.take(&"n1", t0), Some(1));
        assert_eq!(idle.take(&"n1", t0), None);
        assert_eq!(idle.len(), 0);
    }

    #[test]
    fn the_most_recently_used_comes_first() {
        let t0 = Instant::now();
        let mut idle = Idle::default();
        idle.put("n1", 1, t0);
        idle.put("n1", 2, t0 + Duration::from_millis(1));
        assert_eq!(idle.take(&"n1", t0 + Duration::from_millis(2)), Some(2));
        assert_eq!(idle.take(&"n1", t0 + Duration::from_millis(2)), Some(1));
    }

    #[test]
    fn items_idle_past_keep_are_dropped() {
        let t0 = Instant::now();
        let mut idle = Idle::default();
        idle.put("n1", 1, t0);
        idle.put("n2", 2, t0 + Duration::from_secs(3));
        assert_eq!(idle.take(&"n1", t0 + KEEP), None);
        assert_eq!(idle.len(), 1, "n2 is still fresh");
        // Putting for one key sweeps the others too.
        idle.put("n3", 3, t0 + Duration::from_secs(3) + KEEP);
        assert_eq!(idle.len(), 1);
        assert_eq!(idle.take(&"n3", t0 + Duration::from_secs(9)), Some(3));
    }

    #[test]
    fn a_full_key_drops_its_longest_idle() {
        let t0 = Instant::now();
        let mut idle = Idle::default();
        for i in 0..=PER_KEY {
            idle.put("n1", i, t0);
        }
        assert_eq!(idle.len(), PER_KEY);
        let mut left: Vec<_> = std::iter::from_fn(|| idle.take(&"n1", t0)).collect();
        left.sort_unstable();
        assert_eq!(left, (1..=PER_KEY).collect::<Vec<_>>());
    }
}
