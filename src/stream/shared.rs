//! Dialed connections that carry many streams, kept so the next dial to
//! the same service on the same node, with the same TLS client, opens a
//! stream on them instead of a new connection and handshake. A connection
//! whose dialer found a Go end carries one stream and is never kept.
//!
//! Dials are single-flight per key: when the units of one executor lose
//! their shared connection together, the first to dial again leads and
//! the others wait for its connection instead of each dialing their own.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::debug;

use super::pipe::Opener;
use super::{DialError, Stream, dial_offering};
use crate::netceptor::Netceptor;
use crate::tls::ClientTls;

/// (node, service, TLS client name).
type Key = (String, String, String);

/// Kept connections at most: far more executors than a controller talks
/// to at once.
pub(super) const MAX_KEPT: usize = 256;

/// A kept connection, what it reaches and the TLS client it was dialed
/// with.
struct Kept {
    key: Key,
    opener: Opener,
    tls: Option<Arc<ClientTls>>,
}

/// A dial under way for a key, and the requests waiting for it.
struct Flight {
    key: Key,
    tls: Option<Arc<ClientTls>>,
    landing: Arc<Landing>,
}

/// How a flight ended, for the requests that waited.
#[derive(Clone)]
enum Landed {
    /// Its connection is kept: open a stream on it.
    Kept,
    /// Its peer carries one stream per connection: dial your own.
    OneStream,
    /// It failed; the error's text.
    Failed(String),
}

#[derive(Default)]
struct Landing {
    /// The outcome once landed, and how many requests wait for it.
    state: Mutex<(Option<Landed>, usize)>,
    cond: Condvar,
}

impl Landing {
    fn lock(&self) -> MutexGuard<'_, (Option<Landed>, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn land(&self, how: Landed) {
        self.lock().0 = Some(how);
        self.cond.notify_all();
    }

    /// The outcome, or `None` if the flight has not landed by `deadline`.
    fn wait(&self, deadline: Instant) -> Option<Landed> {
        let mut st = self.lock();
        st.1 += 1;
        // The leader's test hook waits for waiters on the same condvar.
        self.cond.notify_all();
        while st.0.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .cond
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.1 -= 1;
        st.0.clone()
    }
}

/// What a request that found no kept connection does.
enum Turn {
    /// Dial, and land this flight for the others.
    Lead(Arc<Landing>),
    /// Wait for the flight under way.
    Wait(Arc<Landing>),
}

#[derive(Default)]
struct Table {
    kept: Vec<Kept>,
    flights: Vec<Flight>,
}

/// Kept many-stream connections by target and TLS client; a key has
/// more than one when a connection was full as a dial needed a stream.
/// Each goes away by itself ([`conn::LINGER`](super::conn::LINGER) after
/// its last stream ended or was parked, or when it fails); its entry is
/// dropped at the next use. Executors are few, so lists will do.
#[derive(Default)]
pub struct SharedConns(Mutex<Table>);

impl SharedConns {
    /// A stream on a kept connection to `service` on `node` dialed with
    /// the TLS client `tls` (its name and section), if one is up.
    pub fn reuse(
        &self,
        net: &Netceptor,
        (node, service): (&str, &str),
        tls: Option<(&str, &Arc<ClientTls>)>,
        timeout: Duration,
    ) -> Option<Stream> {
        // Without a route a dial fails at once; a kept connection would
        // instead wait out the peer's silence. The router answers while
        // the driver opens the stream (which sends nothing before its
        // first use).
        let route = net.ask_route(node);
        let stream = self.reuse_key(&key(node, service, tls), tls.map(|t| t.1), timeout);
        route.reachable().then_some(stream).flatten()
    }

    /// Dials as [`dial_tls`](super::dial_tls) does, offering many streams,
    /// and keeps the connection if the peer agreed. If another request is
    /// dialing the same key, waits for its connection instead, at most
    /// `timeout`.
    pub fn dial(
        &self,
        net: &Netceptor,
        (node, service): (&str, &str),
        tls: Option<(&str, &Arc<ClientTls>)>,
        timeout: Duration,
    ) -> Result<Stream, DialError> {
        let client = tls.map(|t| &**t.1);
        let dial = |left| dial_offering(net, (node, service), left, client, true);
        self.dial_key(key(node, service, tls), tls.map(|t| t.1), timeout, dial)
    }

    /// `stream`'s peer stopped answering: its connection, if kept, is
    /// not used again.
    pub fn forget(&self, stream: &Stream) {
        self.lock().kept.retain(|k| !k.opener.carries(stream));
    }

    /// [`SharedConns::reuse`] for `key`.
    pub(super) fn reuse_key(
        &self,
        key: &Key,
        tls: Option<&Arc<ClientTls>>,
        timeout: Duration,
    ) -> Option<Stream> {
        // The newest first: the older ones were full when it was dialed.
        let openers: Vec<Opener> = (self.lock().kept.iter().rev())
            .filter(|k| k.key == *key && same_tls(k.tls.as_ref(), tls))
            .map(|k| k.opener.clone())
            .collect();
        for opener in openers {
            match opener.open(timeout) {
                Ok(stream) => return Some(stream),
                // Kept: its streams end and make room again. A driver slower
                // to answer than the time left (a waiter's last moments)
                // says nothing about the connection either.
                Err(DialError::Full | DialError::Timeout) => {}
                Err(e) => {
                    debug!("Kept stream connection not used again: {e}");
                    self.lock().kept.retain(|k| k.opener != opener);
                }
            }
        }
        None
    }

    /// [`SharedConns::dial`] for `key`, with `dial` making the connection
    /// within the time it is given.
    pub(super) fn dial_key(
        &self,
        key: Key,
        tls: Option<&Arc<ClientTls>>,
        timeout: Duration,
        dial: impl FnOnce(Duration) -> Result<Stream, DialError>,
    ) -> Result<Stream, DialError> {
        let deadline = Instant::now() + timeout;
        let landing = match self.turn(&key, tls) {
            Turn::Lead(landing) => return self.lead(key, tls, landing, || dial(timeout)),
            Turn::Wait(landing) => landing,
        };
        let landed = landing.wait(deadline);
        // What is left of this request's own timeout, all it may spend.
        let left = deadline.saturating_duration_since(Instant::now());
        match landed {
            None => return Err(DialError::Timeout),
            Some(Landed::Failed(why)) => return Err(DialError::Joined(why)),
            _ if left.is_zero() => return Err(DialError::Timeout),
            Some(Landed::Kept) => {
                if let Some(s) = self.reuse_key(&key, tls, left) {
                    return Ok(s);
                }
            }
            Some(Landed::OneStream) => {}
        }
        // The flight's connection is already full, or gone, or carries
        // one stream.
        let stream = dial(left)?;
        self.keep(key, tls, &stream);
        Ok(stream)
    }

    /// Joins the flight under way for `key`, or starts one.
    fn turn(&self, key: &Key, tls: Option<&Arc<ClientTls>>) -> Turn {
        let mut table = self.lock();
        let under_way =
            (table.flights.iter()).find(|f| f.key == *key && same_tls(f.tls.as_ref(), tls));
        if let Some(f) = under_way {
            return Turn::Wait(f.landing.clone());
        }
        let landing = Arc::new(Landing::default());
        table.flights.push(Flight {
            key: key.clone(),
            tls: tls.cloned(),
            landing: landing.clone(),
        });
        Turn::Lead(landing)
    }

    fn lead(
        &self,
        key: Key,
        tls: Option<&Arc<ClientTls>>,
        landing: Arc<Landing>,
        dial: impl FnOnce() -> Result<Stream, DialError>,
    ) -> Result<Stream, DialError> {
        let result = dial();
        let how = match &result {
            Ok(s) if s.carries_many() => Landed::Kept,
            Ok(_) => Landed::OneStream,
            Err(e) => Landed::Failed(e.to_string()),
        };
        if let Ok(s) = &result {
            self.keep(key, tls, s);
        }
        self.lock()
            .flights
            .retain(|f| !Arc::ptr_eq(&f.landing, &landing));
        let waited = landing.lock().1;
        if waited > 0 {
            debug!("{waited} stream dials waited for one connection");
        }
        landing.land(how);
        result
    }

    /// Keeps `stream`'s connection for `key` if it carries many streams.
    fn keep(&self, key: Key, tls: Option<&Arc<ClientTls>>, stream: &Stream) {
        let Some(opener) = stream.opener() else {
            return;
        };
        let mut table = self.lock();
        table.kept.push(Kept {
            key,
            opener,
            tls: tls.cloned(),
        });
        // An entry is otherwise dropped only when its key is used again:
        // a controller talking to ever new executors must not keep them
        // all. The oldest goes; its connection still ends by itself.
        if table.kept.len() > MAX_KEPT {
            table.kept.remove(0);
        }
    }

    /// Blocks until `n` requests wait for the flight of `key`; panics
    /// after a minute, so a regression fails its test instead of hanging.
    #[cfg(test)]
    pub(super) fn await_waiters(&self, key: &Key, n: usize) {
        let landing = (self.lock().flights.iter())
            .find(|f| f.key == *key)
            .map(|f| f.landing.clone())
            .expect("a flight under way");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut st = landing.lock();
        while st.1 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{} of {n} waiters after a minute", st.1);
            st = (landing.cond.wait_timeout(st, left))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) fn key(node: &str, service: &str, tls: Option<(&str, &Arc<ClientTls>)>) -> Key {
    let name = tls.map_or("", |t| t.0);
    (node.to_string(), service.to_string(), name.to_string())
}

/// A reload makes new TLS clients: connections dialed with an old one are
/// not used for the new.
fn same_tls(kept: Option<&Arc<ClientTls>>, wanted: Option<&Arc<ClientTls>>) -> bool {
    match (kept, wanted) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}
