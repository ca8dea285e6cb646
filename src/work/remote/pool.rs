//! Idle control connections, kept for the next short request (status,
//! cancel, release) to the same executor, so a unit's polls and release,
//! and the next unit's, do not each dial a stream and handshake again.
//! Sans-IO: the caller passes `now`; a connection is simply dropped (and
//! so closed) when it has idled past [`KEEP`] or the key holds
//! [`PER_KEY`] already. The pool has no timer of its own: a kept item is
//! parked ([`Park`]), and the stream driver, which has one, closes a
//! connection whose streams all wait here once they have waited its
//! linger time (5 s, a second past [`KEEP`]); the next use of such an
//! item fails on the link and is replaced by a dial.
//!
//! Every request is a whole control command on a session that stays open
//! after it, so this works the same against a Go executor, whose control
//! service also serves commands one after another on one connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use log::debug;

use super::client::ClientError;

/// How long an idle connection is kept: well inside the 30 s QUIC idle
/// timeout both sides use, so a kept connection is one the executor has
/// not closed for idling; and a second inside the 5 s linger after which
/// the stream driver closes a connection whose streams all wait parked
/// here, so a session taken just before it expires is not one whose
/// connection is closing under it.
pub const KEEP: Duration = Duration::from_secs(4);
/// Idle connections kept per executor and TLS client: enough for units
/// that poll at once, and a bound on the control sessions held open on
/// the executor.
pub const PER_KEY: usize = 4;

/// What a kept item tells its connection when it goes into the pool
/// (`true`) and comes out again (`false`).
pub trait Park {
    fn park(&self, parked: bool);
}

/// What the pool asks of a session before keeping it.
pub trait Session {
    /// Whether the executor still serves the session after refusing a
    /// command. Go's control service does; ours ends a session on a
    /// many-stream connection after any error, since a pipelined submit's
    /// stdin may follow the refused line.
    fn open_after_refusal(&self) -> bool;
}

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

impl<K: Eq + Hash, T: Park> Idle<K, T> {
    /// The most recently used item kept for `key`, if one is fresh.
    pub fn take(&mut self, key: &K, now: Instant) -> Option<T> {
        self.expire(now);
        let items = self.by_key.get_mut(key)?;
        let item = items.pop().map(|(item, _)| item);
        if items.is_empty() {
            self.by_key.remove(key);
        }
        item.inspect(|i| i.park(false))
    }

    /// Keeps `item` for `key`; past [`PER_KEY`] the longest idle goes.
    pub fn put(&mut self, key: K, item: T, now: Instant) {
        self.expire(now);
        item.park(true);
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

    /// Drops every item idle for [`KEEP`] or more, under every key (their
    /// connections may already have closed, being parked). It is cheap:
    /// one key per executor and TLS client, each with at most
    /// [`PER_KEY`] items.
    fn expire(&mut self, now: Instant) {
        self.by_key.retain(|_, items| {
            items.retain(|(_, since)| now.saturating_duration_since(*since) < KEEP);
            !items.is_empty()
        });
    }
}

/// Runs `call` on `kept` if there is one, else on a connection from
/// `dial`. A kept connection that fails on the link (the executor closed
/// it meanwhile) is replaced by a dialed one once, so it costs a dial and
/// never a failed step; a dialed one is not retried. Returns the reply and
/// the connection to keep: one whose session answered as the protocol
/// says, and so waits for the next command.
pub fn run_kept<C: Session, T>(
    kept: Option<C>,
    dial: impl FnOnce() -> Result<C, ClientError>,
    call: impl Fn(&mut C) -> Result<T, ClientError>,
) -> (Result<T, ClientError>, Option<C>) {
    if let Some(mut conn) = kept {
        match call(&mut conn) {
            Err(ClientError::Link(e)) => debug!("Kept control connection failed: {e}"),
            reply => return keep_if_answered(reply, conn),
        }
    }
    match dial() {
        Ok(mut conn) => {
            let reply = call(&mut conn);
            keep_if_answered(reply, conn)
        }
        Err(e) => (Err(e), None),
    }
}

fn keep_if_answered<C: Session, T>(
    reply: Result<T, ClientError>,
    conn: C,
) -> (Result<T, ClientError>, Option<C>) {
    let answered = match reply {
        Ok(_) => true,
        Err(ClientError::Refused(_)) => conn.open_after_refusal(),
        Err(_) => false,
    };
    (reply, answered.then_some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::WorkError;
    use std::cell::Cell;

    /// A connection that answers `replies` in turn, counting its calls.
    struct Fake {
        name: &'static str,
        replies: Vec<Result<u32, ClientError>>,
        open_after_refusal: bool,
    }

    fn fake(name: &'static str, mut replies: Vec<Result<u32, ClientError>>) -> Fake {
        replies.reverse();
        Fake {
            name,
            replies,
            open_after_refusal: true,
        }
    }

    impl Session for Fake {
        fn open_after_refusal(&self) -> bool {
            self.open_after_refusal
        }
    }

    fn link() -> ClientError {
        ClientError::Link("connection closed".into())
    }

    fn call(calls: &Cell<u32>) -> impl Fn(&mut Fake) -> Result<u32, ClientError> + '_ {
        move |c: &mut Fake| {
            calls.set(calls.get() + 1);
            c.replies.pop().unwrap_or_else(|| Err(link()))
        }
    }

    #[test]
    fn a_kept_connection_that_fails_is_replaced_by_a_dialed_one_once() {
        let calls = Cell::new(0);
        let kept = fake("kept", vec![Err(link())]);
        let (reply, keep) = run_kept(Some(kept), || Ok(fake("new", vec![Ok(7)])), call(&calls));
        assert_eq!(reply.ok(), Some(7));
        assert_eq!(keep.map(|c| c.name), Some("new"));
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_working_kept_connection_is_used_and_kept_without_a_dial() {
        let calls = Cell::new(0);
        let kept = fake("kept", vec![Ok(1)]);
        let dial = || -> Result<Fake, ClientError> { panic!("no dial wanted") };
        let (reply, keep) = run_kept(Some(kept), dial, call(&calls));
        assert_eq!(reply.ok(), Some(1));
        assert_eq!(keep.map(|c| c.name), Some("kept"));
    }

    #[test]
    fn a_dialed_connection_that_fails_is_neither_retried_nor_kept() {
        let calls = Cell::new(0);
        let (reply, keep) = run_kept(None, || Ok(fake("new", vec![Err(link())])), call(&calls));
        assert!(matches!(reply, Err(ClientError::Link(_))));
        assert!(keep.is_none());
        assert_eq!(calls.get(), 1);
        let (reply, keep) = run_kept(None, || Err::<Fake, _>(link()), call(&calls));
        assert!(matches!(reply, Err(ClientError::Link(_))));
        assert!(keep.is_none());
        assert_eq!(calls.get(), 1, "nothing to call without a connection");
    }

    #[test]
    fn a_refusal_drops_a_session_its_executor_ends_after_errors() {
        let calls = Cell::new(0);
        let refused = Err(ClientError::Refused(WorkError::UnknownUnit("x".into())));
        let mut ours = fake("ours", vec![refused]);
        ours.open_after_refusal = false;
        let (reply, keep) = run_kept(Some(ours), || panic!(), call(&calls));
        assert!(matches!(reply, Err(ClientError::Refused(_))));
        assert!(keep.is_none());
    }

    #[test]
    fn a_refusal_keeps_the_connection_and_a_garbled_reply_drops_it() {
        let calls = Cell::new(0);
        let refused = Err(ClientError::Refused(WorkError::UnknownUnit("x".into())));
        let (reply, keep) = run_kept(Some(fake("kept", vec![refused])), || panic!(), call(&calls));
        assert!(matches!(reply, Err(ClientError::Refused(_))));
        assert_eq!(keep.map(|c| c.name), Some("kept"));
        let garbled = Err(ClientError::Unexpected("?".into()));
        let (reply, keep) = run_kept(Some(fake("kept", vec![garbled])), || panic!(), call(&calls));
        assert!(matches!(reply, Err(ClientError::Unexpected(_))));
        assert!(keep.is_none());
    }

    /// Plain numbers stand for items whose parking these tests ignore.
    impl Park for i32 {
        fn park(&self, _: bool) {}
    }

    impl Park for usize {
        fn park(&self, _: bool) {}
    }

    /// An item that records whether it is parked.
    struct Parkable(Cell<bool>);

    impl Park for Parkable {
        fn park(&self, parked: bool) {
            self.0.set(parked);
        }
    }

    #[test]
    fn items_are_parked_while_kept_and_unparked_when_taken() {
        let t0 = Instant::now();
        let mut idle = Idle::default();
        idle.put("n1", Parkable(Cell::new(false)), t0);
        let kept = idle.by_key.get("n1").and_then(|items| items.first());
        assert!(kept.is_some_and(|(item, _)| item.0.get()));
        let taken = idle.take(&"n1", t0).expect("kept");
        assert!(!taken.0.get());
    }

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
