//! Dialed connections that carry many streams, kept so the next dial to
//! the same service on the same node, with the same TLS client, opens a
//! stream on them instead of a new connection and handshake. A connection
//! whose dialer found a Go end carries one stream and is never kept.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::pipe::Opener;
use super::{DialError, Stream, dial_offering};
use crate::netceptor::Netceptor;
use crate::tls::ClientTls;

/// (node, service, TLS client name).
type Key = (String, String, String);

/// Kept connections at most: far more executors than a controller talks
/// to at once.
const MAX_KEPT: usize = 256;

/// A kept connection, what it reaches and the TLS client it was dialed
/// with.
struct Kept {
    key: Key,
    opener: Opener,
    tls: Option<Arc<ClientTls>>,
}

/// Kept many-stream connections by target and TLS client. Each goes away
/// by itself ([`conn::LINGER`](super::conn::LINGER) after its last stream,
/// or when it fails); its entry is dropped at the next use.
/// Executors are few, so a list will do.
#[derive(Default)]
pub struct SharedConns(Mutex<Vec<Kept>>);

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
        // instead wait out the peer's silence.
        if !net.has_route(node) {
            return None;
        }
        let key = key(node, service, tls);
        let opener = (self.lock().iter())
            .find(|k| k.key == key && same_tls(k.tls.as_ref(), tls))?
            .opener
            .clone();
        let stream = opener.open(timeout);
        if stream.is_none() {
            self.lock().retain(|k| k.opener != opener);
        }
        stream
    }

    /// Dials as [`dial_tls`](super::dial_tls) does, offering many streams,
    /// and keeps the connection if the peer agreed.
    pub fn dial(
        &self,
        net: &Netceptor,
        (node, service): (&str, &str),
        tls: Option<(&str, &Arc<ClientTls>)>,
        timeout: Duration,
    ) -> Result<Stream, DialError> {
        let client = tls.map(|t| &**t.1);
        let stream = dial_offering(net, (node, service), timeout, client, true)?;
        if let Some(opener) = stream.opener() {
            let key = key(node, service, tls);
            let mut kept = self.lock();
            kept.retain(|k| k.key != key);
            kept.push(Kept {
                key,
                opener,
                tls: tls.map(|t| t.1.clone()),
            });
            // An entry is otherwise dropped only when its key is used again:
            // a controller talking to ever new executors must not keep them
            // all. The oldest goes; its connection still ends by itself.
            if kept.len() > MAX_KEPT {
                kept.remove(0);
            }
        }
        Ok(stream)
    }

    /// `stream`'s peer stopped answering: its connection, if kept, is
    /// not used again.
    pub fn forget(&self, stream: &Stream) {
        self.lock().retain(|k| !k.opener.carries(stream));
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(node: &str, service: &str, tls: Option<(&str, &Arc<ClientTls>)>) -> Key {
    let name = tls.map_or("", |t| t.0);
    (node.to_string(), service.to_string(), name.to_string())
}

/// A reload makes new TLS clients: connections dialed with an old one are
/// not used for the new.
fn same_tls(kept: Option<&Arc<ClientTls>>, wanted: Option<(&str, &Arc<ClientTls>)>) -> bool {
    match (kept, wanted) {
        (None, None) => true,
        (Some(a), Some((_, b))) => Arc::ptr_eq(a, b),
        _ => false,
    }
}
