//! `SharedConns` on stand-in connections: a fake driver thread per
//! connection answers requests for more streams as the test says, so each
//! case is about the table and its flights, not QUIC.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Sender, select, unbounded};
use quinn_proto::{ConnectionHandle, Dir, Side, StreamId};

use super::super::pipe::{DriverCmd, Pipe, StreamAt};
use super::super::shared::{MAX_KEPT, SharedConns, key};
use super::super::{DialError, Stream};

const TIMEOUT: Duration = Duration::from_secs(15);
/// Requests that race for one executor.
const RACERS: usize = 8;

/// What a fake connection answers when asked for another stream.
#[derive(Clone, Copy)]
enum Mode {
    Open,
    /// It carries all the streams the peer allows.
    Full,
    /// The connection is gone: the driver drops the request unanswered.
    Gone,
    /// The driver is busy: it keeps the request and answers none.
    Busy,
}

/// A stand-in for an endpoint thread and its one connection. Dropping it
/// ends the thread.
struct FakeConn {
    streams: Maker,
    mode: Arc<Mutex<Mode>>,
    opened: Arc<AtomicUsize>,
    _stop: Sender<()>,
}

/// Requests a busy fake driver holds unanswered.
type Held = Vec<crate::reply::Replier<Result<Stream, DialError>>>;

/// Makes the handles of a fake connection's streams.
#[derive(Clone)]
struct Maker {
    ch: ConnectionHandle,
    cmds: Sender<DriverCmd>,
    many: bool,
}

impl Maker {
    fn stream(&self) -> Stream {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let index = NEXT.fetch_add(1, Ordering::Relaxed) as u64;
        let at = StreamAt {
            conn: self.ch,
            id: StreamId::new(Side::Client, Dir::Bi, index),
            many: self.many,
        };
        let peer = ("b".to_string(), "control".to_string());
        Stream::new(Arc::new(Pipe::default()), at, self.cmds.clone(), peer)
    }
}

impl FakeConn {
    fn start(many: bool) -> FakeConn {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let ch = ConnectionHandle(NEXT.fetch_add(1, Ordering::Relaxed));
        let (cmds, rx) = unbounded();
        let (stop, stopped) = unbounded::<()>();
        let fake = FakeConn {
            streams: Maker { ch, cmds, many },
            mode: Arc::new(Mutex::new(Mode::Open)),
            opened: Arc::new(AtomicUsize::new(0)),
            _stop: stop,
        };
        let (streams, mode, opened) =
            (fake.streams.clone(), fake.mode.clone(), fake.opened.clone());
        thread::spawn(move || {
            let mut held: Held = Vec::new();
            loop {
                select! {
                    recv(rx) -> cmd => match cmd {
                        Ok(DriverCmd::Open(_, reply)) => {
                            match *mode.lock().unwrap() {
                                Mode::Open => {
                                    opened.fetch_add(1, Ordering::SeqCst);
                                    let _ = reply.send(Ok(streams.stream()));
                                }
                                Mode::Full => drop(reply.send(Err(DialError::Full))),
                                Mode::Gone => {}
                                Mode::Busy => held.push(reply),
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    },
                    recv(stopped) -> _ => return,
                }
            }
        });
        fake
    }

    /// A stream on this connection, as a dial hands it out.
    fn stream(&self) -> Stream {
        self.streams.stream()
    }

    fn carries(&self, s: &Stream) -> bool {
        self.stream().opener().is_some_and(|o| o.carries(s))
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

fn control_key() -> (String, String, String) {
    key("b", "control", None)
}

/// Dials `conn` for the key, counting in `dials`.
fn dial_to(shared: &SharedConns, conn: &FakeConn, dials: &AtomicUsize) -> Stream {
    let dial = |_| {
        dials.fetch_add(1, Ordering::SeqCst);
        Ok(conn.stream())
    };
    shared.dial_key(control_key(), None, TIMEOUT, dial).unwrap()
}

/// `RACERS` requests for the key at once, as the monitors of one
/// executor's units after their shared connection failed: each tries the
/// kept connection, then dials with `dial`. The first to dial waits in
/// it until all the others wait for its flight.
fn race(
    shared: &SharedConns,
    dial: impl Fn() -> Result<Stream, DialError> + Sync,
) -> (Vec<Result<Stream, DialError>>, usize) {
    let dials = AtomicUsize::new(0);
    let results = thread::scope(|s| {
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                s.spawn(|| {
                    if let Some(s) = shared.reuse_key(&control_key(), None, TIMEOUT) {
                        return Ok(s);
                    }
                    shared.dial_key(control_key(), None, TIMEOUT, |_| {
                        if dials.fetch_add(1, Ordering::SeqCst) == 0 {
                            shared.await_waiters(&control_key(), RACERS - 1);
                        }
                        dial()
                    })
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    (results, dials.into_inner())
}

#[test]
fn requests_racing_after_the_shared_connection_died_make_one_connection() {
    let shared = SharedConns::default();
    let dead = FakeConn::start(true);
    let _first = dial_to(&shared, &dead, &AtomicUsize::new(0));
    dead.set(Mode::Gone);
    let fresh = FakeConn::start(true);
    let (results, dials) = race(&shared, || Ok(fresh.stream()));
    assert_eq!(dials, 1);
    for r in &results {
        assert!(fresh.carries(r.as_ref().expect("a stream")));
    }
    assert_eq!(fresh.opened.load(Ordering::SeqCst), RACERS - 1);
}

#[test]
fn requests_that_waited_for_a_failed_dial_get_its_error() {
    let shared = SharedConns::default();
    let (results, dials) = race(&shared, || Err(DialError::NoRoute));
    assert_eq!(dials, 1);
    let texts: Vec<_> = results
        .into_iter()
        .map(|r| r.expect_err("no stream").to_string())
        .collect();
    assert_eq!(texts, vec!["no route to node"; RACERS]);
}

#[test]
fn requests_that_waited_for_a_one_stream_peer_dial_their_own() {
    let shared = SharedConns::default();
    let go_end = FakeConn::start(false);
    let (results, dials) = race(&shared, || Ok(go_end.stream()));
    assert_eq!(dials, RACERS, "each stream needs its own connection");
    assert!(results.iter().all(Result::is_ok));
    assert!(shared.reuse_key(&control_key(), None, TIMEOUT).is_none());
}

#[test]
fn a_kept_connection_serves_its_own_key_only() {
    let shared = SharedConns::default();
    let conn = FakeConn::start(true);
    let dials = AtomicUsize::new(0);
    dial_to(&shared, &conn, &dials);
    let again = shared.reuse_key(&control_key(), None, TIMEOUT);
    assert!(conn.carries(&again.expect("reused")));
    let other_tls = ("b".into(), "control".into(), "client1".into());
    assert!(shared.reuse_key(&other_tls, None, TIMEOUT).is_none());
    assert!(
        shared
            .reuse_key(&key("c", "control", None), None, TIMEOUT)
            .is_none()
    );
    assert!(
        shared
            .reuse_key(&key("b", "echo", None), None, TIMEOUT)
            .is_none()
    );
    assert_eq!(dials.into_inner(), 1);
}

/// A reload makes new TLS clients under the same names: a connection
/// dialed with the old client is not handed to the new one.
#[test]
fn a_kept_connection_serves_its_own_tls_client_only() {
    let load = || {
        let cfg = crate::config::TlsClientCfg {
            name: "client1".into(),
            cert: None,
            key: None,
            root_cas: None,
            insecure_skip_verify: true,
            pinned_server_cert: vec![],
            skip_receptor_names_check: true,
            min_tls13: false,
        };
        Arc::new(crate::tls::ClientTls::load(&cfg, "a").unwrap())
    };
    let (before, after) = (load(), load());
    let shared = SharedConns::default();
    let conn = FakeConn::start(true);
    let tls_key = (
        "b".to_string(),
        "control".to_string(),
        "client1".to_string(),
    );
    shared
        .dial_key(tls_key.clone(), Some(&before), TIMEOUT, |_| {
            Ok(conn.stream())
        })
        .unwrap();
    assert!(shared.reuse_key(&tls_key, Some(&after), TIMEOUT).is_none());
    assert!(shared.reuse_key(&tls_key, None, TIMEOUT).is_none());
    let again = shared.reuse_key(&tls_key, Some(&before), TIMEOUT);
    assert!(again.is_some_and(|s| conn.carries(&s)));
}

#[test]
fn a_full_connection_is_kept_beside_the_one_dialed_for_more() {
    let shared = SharedConns::default();
    let (first, second) = (FakeConn::start(true), FakeConn::start(true));
    let dials = AtomicUsize::new(0);
    dial_to(&shared, &first, &dials);
    first.set(Mode::Full);
    assert!(shared.reuse_key(&control_key(), None, TIMEOUT).is_none());
    dial_to(&shared, &second, &dials);
    let on_second = shared.reuse_key(&control_key(), None, TIMEOUT);
    assert!(second.carries(&on_second.expect("a stream")));
    // Once the first has room again and the second is full, the first
    // carries the next stream: it was kept.
    first.set(Mode::Open);
    second.set(Mode::Full);
    let on_first = shared.reuse_key(&control_key(), None, TIMEOUT);
    assert!(first.carries(&on_first.expect("a stream")));
    assert_eq!(dials.into_inner(), 2);
}

#[test]
fn a_closed_connection_is_dropped_and_the_next_request_dials() {
    let shared = SharedConns::default();
    let (closed, next) = (FakeConn::start(true), FakeConn::start(true));
    let dials = AtomicUsize::new(0);
    dial_to(&shared, &closed, &dials);
    closed.set(Mode::Gone);
    assert!(shared.reuse_key(&control_key(), None, TIMEOUT).is_none());
    // Dropped: even with room again, it is not asked any more.
    closed.set(Mode::Open);
    assert!(shared.reuse_key(&control_key(), None, TIMEOUT).is_none());
    assert_eq!(closed.opened.load(Ordering::SeqCst), 0);
    let stream = dial_to(&shared, &next, &dials);
    assert!(next.carries(&stream));
    assert_eq!(dials.into_inner(), 2);
}

/// A waiter whose time ran out as its flight landed asks the kept
/// connection with next to no time; a driver that does not answer that
/// fast says nothing about the connection, which stays kept.
#[test]
fn a_driver_too_slow_for_the_time_left_keeps_its_connection() {
    let shared = SharedConns::default();
    let conn = FakeConn::start(true);
    let dials = AtomicUsize::new(0);
    dial_to(&shared, &conn, &dials);
    conn.set(Mode::Busy);
    let short = Duration::from_millis(1);
    assert!(shared.reuse_key(&control_key(), None, short).is_none());
    conn.set(Mode::Open);
    let again = shared.reuse_key(&control_key(), None, TIMEOUT);
    assert!(again.is_some_and(|s| conn.carries(&s)));
    assert_eq!(dials.into_inner(), 1);
}

#[test]
fn a_forgotten_connection_is_not_used_again() {
    let shared = SharedConns::default();
    let conn = FakeConn::start(true);
    let stream = dial_to(&shared, &conn, &AtomicUsize::new(0));
    shared.forget(&stream);
    assert!(shared.reuse_key(&control_key(), None, TIMEOUT).is_none());
    assert_eq!(conn.opened.load(Ordering::SeqCst), 0);
}

#[test]
fn past_max_kept_the_oldest_connection_goes() {
    let shared = SharedConns::default();
    let conns: Vec<FakeConn> = (0..=MAX_KEPT).map(|_| FakeConn::start(true)).collect();
    let node_key = |i: usize| key(&format!("n{i}"), "control", None);
    for (i, c) in conns.iter().enumerate() {
        let dialed = shared.dial_key(node_key(i), None, TIMEOUT, |_| Ok(c.stream()));
        dialed.unwrap();
    }
    assert!(shared.reuse_key(&node_key(0), None, TIMEOUT).is_none());
    for i in [1, MAX_KEPT] {
        let s = shared.reuse_key(&node_key(i), None, TIMEOUT);
        assert!(conns[i].carries(&s.expect("still kept")), "n{i}");
    }
}
