//! How many clients the control service's socket and TCP listeners serve
//! at once. Each client has a thread; without a bound, idle clients alone
//! could take every thread the process may have.
//!
//! A new client takes a slot. When none is free, the client that has
//! waited longest for its next command (idle for at least
//! [`MIN_IDLE`]) is disconnected to make room, so idle clients can never
//! starve new ones; if every client is busy (a `work results` or
//! `connect` stream, which may be long and silent), the new one is
//! refused with an `ERROR:` line and a rate-limited log line.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use log::warn;

use crate::ratelog::{self, RateLog};
use crate::services::Socket;

/// A client is only disconnected for a newcomer after idling this long,
/// so one that has just connected gets to send its command.
pub const MIN_IDLE: Duration = Duration::from_secs(1);

type Closer = Box<dyn Fn() + Send>;

struct Client {
    /// Since when the client has been waiting for a command; `None` while
    /// one runs.
    idle_since: Option<Instant>,
    close: Closer,
}

#[derive(Default)]
struct State {
    next_id: u64,
    clients: HashMap<u64, Client>,
    refused: RateLog,
    evicted: RateLog,
}

/// The slots of one control service, shared by its listeners.
pub struct Slots {
    max: usize,
    state: Mutex<State>,
}

/// A client's slot; dropping it frees the slot.
pub struct Permit {
    slots: Arc<Slots>,
    id: u64,
}

/// Why a client was not admitted: the line to send it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clients holding a slot.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A slot for a client on `sock`, making room if an idle client can
    /// give one up.
    pub fn admit<S: Socket>(self: &Arc<Self>, sock: &S, now: Instant) -> Result<Permit, Refused> {
        let close: Closer = match sock.try_clone() {
            Ok(s) => Box::new(move || {
                let _ = s.shutdown(Shutdown::Both);
            }),
            Err(_) => Box::new(|| {}),
        };
        self.admit_with(close, now)
    }

    fn admit_with(self: &Arc<Self>, close: Closer, now: Instant) -> Result<Permit, Refused> {
        let mut st = self.lock();
        if st.clients.len() >= self.max {
            let oldest = st
                .clients
                .iter()
                .filter_map(|(id, c)| Some((*id, c.idle_since?)))
                .filter(|(_, since)| now.duration_since(*since) >= MIN_IDLE)
                .min_by_key(|(_, since)| *since);
            match oldest {
                Some((id, _)) => {
                    if let Some(c) = st.clients.remove(&id) {
                        (c.close)();
                    }
                    if let Some(held) = st.evicted.allow(now) {
                        warn!(
                            "Control service: {} clients connected (maxclients); closed the longest idle one for a new client{}",
                            self.max,
                            ratelog::suffix(held)
                        );
                    }
                }
                None => {
                    if let Some(held) = st.refused.allow(now) {
                        warn!(
                            "Control service: refused a client: {} clients are busy (maxclients){}",
                            self.max,
                            ratelog::suffix(held)
                        );
                    }
                    return Err(Refused(format!(
                        "ERROR: too many control service clients ({}); try again later\n",
                        self.max
                    )));
                }
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        st.clients.insert(
            id,
            Client {
                idle_since: Some(now),
                close,
            },
        );
        Ok(Permit {
            slots: self.clone(),
            id,
        })
    }
}

impl Permit {
    /// The client now waits for its next command (`true`) or runs one.
    pub fn set_idle(&self, idle: bool, now: Instant) {
        if let Some(c) = self.slots.lock().clients.get_mut(&self.id) {
            c.idle_since = idle.then_some(now);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.lock().clients.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Closer) {
        let closed = Arc::new(AtomicUsize::new(0));
        let c = closed.clone();
        (closed, move || {
            let c = c.clone();
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn idle_clients_make_room_and_busy_ones_do_not() {
        let t0 = Instant::now();
        let slots = Slots::new(2);
        let (closed, closer) = counter();
        let a = slots.admit_with(closer(), t0).unwrap();
        let b = slots.admit_with(closer(), t0).unwrap();
        b.set_idle(false, t0);
        // Full, and `a` has not idled long enough yet.
        let early = slots.admit_with(closer(), t0 + Duration::from_millis(500));
        let Err(Refused(line)) = early else {
            panic!("admitted while full")
        };
        assert!(line.starts_with("ERROR: too many control service clients (2)"));
        // Later `a` gives up its slot; `b` is busy and keeps its own.
        let c = slots.admit_with(closer(), t0 + MIN_IDLE).unwrap();
        assert_eq!(closed.load(Ordering::SeqCst), 1);
        assert_eq!(slots.len(), 2);
        // The evicted session ending does not free someone else's slot.
        drop(a);
        assert_eq!(slots.len(), 2);
        c.set_idle(false, t0 + MIN_IDLE);
        assert!(slots.admit_with(closer(), t0 + MIN_IDLE * 5).is_err());
        drop(b);
        assert!(slots.admit_with(closer(), t0 + MIN_IDLE * 5).is_ok());
        drop(c);
    }
}
