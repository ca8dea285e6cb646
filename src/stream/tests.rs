//! Protocol behaviour runs on the virtual-clock simulator in `sim`; the
//! blocking handle's own timeouts run over real endpoint threads joined
//! by in-memory channels.

mod shared;
mod sim;

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use quinn_proto::{ConnectionError, VarInt};

use super::conn::{self, ACCEPT_STREAM_TIMEOUT};
use super::*;
use crate::netceptor::Delivery;
use crate::netceptor::codec::ServiceName;
use sim::{BarePeer, Faults, LATENCY, Side, Sim};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A dialer and a listener with one stream set up between them.
struct Connected {
    sim: Sim<Side, Side>,
    client: Stream,
    server: Stream,
    /// Kept so the listener stays open.
    _accepted: Receiver<Stream>,
}

fn connect(faults: Faults, seed: u64) -> Connected {
    connect_to(Side::listener(tls::IDLE_TIMEOUT), faults, seed)
}

/// As [`connect`], to `listener`, with a dialer that offers many streams.
fn connect_to(listener: (Side, Receiver<Stream>), faults: Faults, seed: u64) -> Connected {
    connect_offering(listener, true, faults, seed)
}

fn connect_offering(
    (listener, accepted): (Side, Receiver<Stream>),
    many: bool,
    faults: Faults,
    seed: u64,
) -> Connected {
    let now = Instant::now();
    let (dialer, connected) = Side::dialer(tls::IDLE_TIMEOUT, DIAL_TIMEOUT, now, many);
    let mut sim = Sim::new(dialer, listener, now, faults, seed);
    let client = dial_answer(&mut sim, &connected).expect("dialed");
    sim.run_until("the listener accepts", |_| !accepted.is_empty());
    let server = accepted.try_recv().unwrap();
    Connected {
        sim,
        client,
        server,
        _accepted: accepted,
    }
}

fn dial_answer(
    sim: &mut Sim<Side, Side>,
    connected: &Receiver<Result<Stream, DialError>>,
) -> Result<Stream, DialError> {
    sim.run_until("the dial is answered", |_| !connected.is_empty());
    connected.try_recv().unwrap()
}

/// Reads what has arrived, never blocking; true at end of stream.
fn read_ready(s: &Stream, into: &mut Vec<u8>) -> bool {
    s.set_read_timeout(Some(Duration::ZERO));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            // The handle's own zero timeout: nothing more yet.
            Err(e) if e.to_string() == "read timed out" => return false,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Writes what the pipe takes now, never blocking; returns how much.
fn write_ready(s: &Stream, data: &[u8]) -> usize {
    s.set_write_timeout(Some(Duration::ZERO));
    match (&*s).write(data) {
        Ok(n) => n,
        Err(e) if e.kind() == ErrorKind::TimedOut => 0,
        Err(e) => panic!("write failed: {e}"),
    }
}

/// One direction of a stream: writes what the pipe takes, half-closes
/// once all is written, and collects what the far end reads.
struct Flow {
    data: Vec<u8>,
    sent: usize,
    got: Vec<u8>,
    eof: bool,
}

impl Flow {
    fn new(data: Vec<u8>) -> Flow {
        Flow {
            data,
            sent: 0,
            got: Vec::new(),
            eof: false,
        }
    }

    /// Moves what it can without blocking; true once the reader saw EOF.
    fn pump(&mut self, from: &Stream, to: &Stream) -> bool {
        if self.sent < self.data.len() {
            self.sent += write_ready(from, &self.data[self.sent..]);
            if self.sent == self.data.len() {
                from.shutdown_write();
            }
        }
        self.eof = self.eof || read_ready(to, &mut self.got);
        self.eof
    }

    fn check(&self, who: &str) {
        assert!(self.got == self.data, "{who} got {} bytes", self.got.len());
    }
}

fn exchange_both_ways(c: &mut Connected, len: usize) {
    let mut up = Flow::new(pattern(len, 1));
    let mut down = Flow::new(pattern(len, 2));
    let (client, server) = (&c.client, &c.server);
    c.sim.run_until("both sides read everything", |_| {
        let up_done = up.pump(client, server);
        down.pump(server, client) && up_done
    });
    up.check("server");
    down.check("client");
}

#[test]
fn one_mebibyte_each_way_on_a_clean_link() {
    let mut c = connect(Faults::default(), 1);
    assert_eq!(c.server.peer_node(), "a");
    assert_eq!(c.client.peer_service(), "echo");
    exchange_both_ways(&mut c, 1 << 20);
}

#[test]
fn one_mebibyte_each_way_despite_loss_duplicates_and_reordering() {
    let faults = Faults {
        loss: 17,
        duplicate: 13,
        reorder: 7,
        cut: false,
    };
    for seed in 1..=3 {
        let mut c = connect(faults, seed);
        exchange_both_ways(&mut c, 1 << 20);
    }
}

#[test]
fn half_close_is_seen_by_the_peer_and_the_reply_still_flows() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect(Faults::default(), 1);
    (&client).write_all(b"question").unwrap();
    client.shutdown_write();
    let mut asked = Vec::new();
    sim.run_until("the question arrives", |_| read_ready(&server, &mut asked));
    assert_eq!(asked, b"question");
    assert!(
        (&client).write_all(b"more").is_err(),
        "no writes after shutdown"
    );
    (&server).write_all(b"answer").unwrap();
    drop(server);
    let mut answer = Vec::new();
    sim.run_until("the answer arrives", |_| read_ready(&client, &mut answer));
    assert_eq!(answer, b"answer");
}

#[test]
fn idle_timeout_fires_after_thirty_silent_seconds() {
    let mut c = connect(Faults::default(), 1);
    c.sim.faults.cut = true;
    let cut_at = c.sim.elapsed();
    let (client, server) = (&c.client, &c.server);
    c.sim.run_until("both sides time out", |_| {
        client.peer_gone() && server.peer_gone()
    });
    let silent = c.sim.elapsed() - cut_at;
    assert!(
        silent >= tls::IDLE_TIMEOUT && silent < tls::IDLE_TIMEOUT + Duration::from_secs(5),
        "{silent:?}"
    );
    for s in [client, server] {
        let err = (&*s).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        assert_eq!(err.to_string(), "timeout: no recent network activity");
    }
}

#[test]
fn keep_alives_hold_a_quiet_connection_open() {
    let mut c = connect(Faults::default(), 1);
    c.sim.run_for(10 * tls::IDLE_TIMEOUT);
    assert!(!c.client.peer_gone() && !c.server.peer_gone());
    exchange_both_ways(&mut c, 1000);
}

#[test]
fn a_slow_reader_gets_everything_after_the_writer_is_gone() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect_to(Side::go_listener(tls::IDLE_TIMEOUT), Faults::default(), 1);
    let data = pattern(4 << 20, 7);
    let mut sent = 0;
    sim.run_until("the writer has written all", |_| {
        sent += write_ready(&server, &data[sent..]);
        sent == data.len()
    });
    drop(server);
    // More than the pipe holds is now buffered in QUIC; the writer's side
    // closes the connection once its data is acknowledged, and both ends
    // forget it.
    sim.run_until_idle();
    let mut got = Vec::new();
    assert!(read_ready(&client, &mut got), "no end of stream");
    assert!(got == data, "got {} bytes", got.len());
}

#[test]
fn a_slow_reader_gets_everything_after_the_writer_is_gone_from_a_shared_connection() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect(Faults::default(), 1);
    let data = pattern(4 << 20, 7);
    let mut sent = 0;
    sim.run_until("the writer has written all", |_| {
        sent += write_ready(&server, &data[sent..]);
        sent == data.len()
    });
    drop(server);
    // Only the stream ends; what it buffered waits for the reader.
    sim.run_for(2 * conn::LINGER);
    let mut got = Vec::new();
    sim.run_until("the reader has read all", |_| read_ready(&client, &mut got));
    assert!(got == data, "got {} bytes", got.len());
}

#[test]
fn dial_to_a_silent_service_times_out() {
    for many in [true, false] {
        let now = Instant::now();
        let (dialer, connected) = Side::dialer(tls::IDLE_TIMEOUT, DIAL_TIMEOUT, now, many);
        let (listener, _accepted) = Side::listener(tls::IDLE_TIMEOUT);
        let cut = Faults {
            cut: true,
            ..Faults::default()
        };
        let mut sim = Sim::new(dialer, listener, now, cut, 1);
        let err = dial_answer(&mut sim, &connected).unwrap_err();
        assert_eq!(sim.elapsed(), DIAL_TIMEOUT);
        assert!(matches!(err, DialError::Timeout), "{err:?}");
        assert_eq!(
            err.to_string(),
            "timeout: handshake did not complete in time"
        );
        // The abandoned connection is closed, not left to idle out.
        sim.run_until_idle();
        assert!(sim.a.core.is_finished());
    }
}

#[test]
fn an_unknown_service_fails_the_dial_at_once() {
    for many in [true, false] {
        let now = Instant::now();
        let (mut dialer, connected) = Side::dialer(tls::IDLE_TIMEOUT, DIAL_TIMEOUT, now, many);
        let (node, service) = sim::LISTENER;
        dialer
            .core
            .handle_unreachable(node, service, "service unknown", now);
        let err = connected.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, DialError::Unreachable { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "remote service echo to node b is unreachable: service unknown"
        );
    }
}

/// Opens one more stream on `c`'s connection, as a second dial would.
fn open_another(c: &mut Connected) -> (Stream, Stream) {
    let opened = c.client.opener().expect("many streams").ask().unwrap();
    let mut client = None;
    c.sim.run_until("the stream opens", |_| {
        client = opened.try_take();
        client.is_some()
    });
    let client = client.unwrap().unwrap().expect("opened");
    let accepted = &c._accepted;
    c.sim
        .run_until("the listener accepts it", |_| !accepted.is_empty());
    (client, accepted.try_recv().unwrap())
}

/// A stream opened on a shared connection, once the driver answered;
/// nothing is sent for it yet.
fn open_quietly(c: &mut Connected) -> Stream {
    let opened = c.client.opener().expect("many streams").ask().unwrap();
    c.sim.run_for(4 * LATENCY);
    let stream = opened.try_take().expect("answered").expect("answer");
    stream.expect("opened")
}

#[test]
fn a_shared_connections_new_stream_sends_its_hello_with_its_first_write() {
    let mut c = connect(Faults::default(), 1);
    // Past the delayed acknowledgements of the dial.
    c.sim.run_for(Duration::from_millis(100));
    let before = c.sim.sent();
    let stream = open_quietly(&mut c);
    assert_eq!(c.sim.sent(), before, "the open alone sends nothing");
    (&stream).write_all(b"request").unwrap();
    let accepted = &c._accepted;
    c.sim
        .run_until("the listener accepts it", |_| !accepted.is_empty());
    assert_eq!(
        c.sim.sent(),
        before + 1,
        "hello and request in one datagram"
    );
    let mut got = [0u8; 7];
    (&accepted.try_recv().unwrap())
        .read_exact(&mut got)
        .unwrap();
    assert_eq!(&got, b"request");
}

#[test]
fn a_shared_connections_new_stream_sends_its_hello_when_read_first() {
    let mut c = connect(Faults::default(), 1);
    // Past the delayed acknowledgements of the dial, whose packets would
    // carry the hello along without the read.
    c.sim.run_for(Duration::from_millis(100));
    let stream = open_quietly(&mut c);
    assert!(c._accepted.is_empty(), "the open alone announces nothing");
    // The reader waits for the peer to speak first, as a client waiting
    // for a greeting does: the peer must learn of the stream all the same.
    stream.set_read_timeout(Some(Duration::ZERO));
    let timed_out = (&stream).read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(timed_out.kind(), std::io::ErrorKind::TimedOut);
    // At once, not at the connection's next timer.
    c.sim.run_for(2 * LATENCY);
    assert!(!c._accepted.is_empty());
}

/// Sends `ask` from `client` and answers it from `server`.
fn round_trip(sim: &mut Sim<Side, Side>, client: &Stream, server: &Stream, ask: &[u8]) {
    (&*client).write_all(ask).unwrap();
    let mut got = Vec::new();
    sim.run_until("the question arrives", |_| {
        read_ready(server, &mut got);
        got.len() == ask.len()
    });
    assert_eq!(got, ask);
    (&*server).write_all(b"answer").unwrap();
    got.clear();
    sim.run_until("the answer arrives", |_| {
        read_ready(client, &mut got);
        got.len() == 6
    });
    assert_eq!(got, b"answer");
}

#[test]
fn between_our_nodes_one_connection_carries_many_streams() {
    let mut c = connect(Faults::default(), 1);
    let (client2, server2) = open_another(&mut c);
    let (client3, server3) = open_another(&mut c);
    round_trip(&mut c.sim, &client3, &server3, b"three");
    round_trip(&mut c.sim, &client2, &server2, b"two");
    // Each stream ends on its own; the others stay open.
    drop((client2, server2));
    c.sim.run_for(Duration::from_secs(1));
    round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"one");
    drop((client3, server3));
    // With a stream still to serve, the dialer keeps the connection.
    c.sim.run_for(2 * conn::LINGER);
    round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"still");
    drop((c.client, c.server));
    // Once the linger time passed without a stream, the dialer closes it.
    let last_stream_gone = c.sim.elapsed();
    c.sim.run_until_idle();
    assert!(c.sim.a.core.is_finished());
    let lingered = c.sim.elapsed() - last_stream_gone;
    assert!(
        lingered >= conn::LINGER && lingered < tls::IDLE_TIMEOUT,
        "{lingered:?}"
    );
}

/// Regression (soak: dialer threads piled up): a stream whose request
/// was half-closed, so its FIN was acknowledged before its handle went,
/// used to stay forever and hold the shared connection open.
#[test]
fn streams_half_closed_before_their_release_let_the_shared_connection_close() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect(Faults::default(), 1);
    (&client).write_all(b"request").unwrap();
    client.shutdown_write();
    let mut got = Vec::new();
    sim.run_until("the request arrives", |_| read_ready(&server, &mut got));
    (&server).write_all(b"reply").unwrap();
    drop(server);
    got.clear();
    sim.run_until("the reply arrives", |_| read_ready(&client, &mut got));
    assert_eq!(got, b"reply");
    sim.run_for(Duration::from_secs(1));
    drop(client);
    sim.run_until_idle();
    assert!(sim.a.core.is_finished());
}

/// Likewise when the listener's side went away before reading the
/// request.
#[test]
fn streams_stopped_before_their_release_let_the_shared_connection_close() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect(Faults::default(), 1);
    (&client).write_all(b"request").unwrap();
    client.shutdown_write();
    drop(server);
    sim.run_until("the listener's end arrives", |_| client.peer_gone());
    sim.run_for(Duration::from_secs(1));
    drop(client);
    sim.run_until_idle();
    assert!(sim.a.core.is_finished());
}

/// Regression (soak: the controller grew by ~75 bytes a stream): a stream
/// the listener's side left before reading the request, while the dialer
/// had not finished it, kept its QUIC state on both ends, and with it one
/// of the streams the listener allows at once; after 100 of them the
/// shared connection could open no more.
#[test]
fn streams_the_listener_stopped_give_their_credit_back() {
    let mut c = connect(Faults::default(), 1);
    for _ in 0..150 {
        let (client, server) = open_another(&mut c);
        (&client).write_all(b"request").unwrap();
        drop(server);
        c.sim
            .run_until("the listener's end arrives", |_| client.peer_gone());
        drop(client);
        c.sim.run_for(Duration::from_millis(50));
    }
    round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"first");
}

/// Regression (review: flow-control fate-sharing): with the one-stream
/// connection window (15 MiB) on a shared connection, three results
/// streams whose readers stalled (6 MiB of stream window each) held all
/// of its credit, and a status request beside them got no reply.
#[test]
fn stalled_readers_on_a_shared_connection_leave_room_for_a_request() {
    let mut c = connect(Faults::default(), 1);
    let stalled: Vec<(Stream, Stream)> = (0..3).map(|_| open_another(&mut c)).collect();
    let output = pattern(1 << 20, 3);
    let mut written = [0usize; 3];
    let mut last_taken = c.sim.now();
    c.sim.run_until("the stalled streams take no more", |s| {
        for ((_, executor), w) in stalled.iter().zip(&mut written) {
            let n = write_ready(executor, &output);
            *w += n;
            if n > 0 {
                last_taken = s.now();
            }
        }
        s.now() - last_taken >= Duration::from_secs(1)
    });
    // Each took its stream window and its reader's pipe (1 MiB each end).
    for w in written {
        assert!(w > 7 << 20, "{w} bytes");
    }
    round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"status");
}

/// What the driver answers a request for one more stream on `opener`'s
/// connection: `None` if it dropped the request (the connection is gone).
fn ask_for_more(sim: &mut Sim<Side, Side>, opener: &pipe::Opener) -> Option<DialError> {
    let answer = opener.ask().unwrap();
    let mut got = None;
    sim.run_until("the request is answered", |_| {
        got = answer.try_take().map(|r| match r {
            Ok(r) => Some(r.expect_err("no stream")),
            Err(_) => None,
        });
        got.is_some()
    });
    got.flatten()
}

#[test]
fn a_shared_connection_says_when_it_is_full_and_when_it_closed() {
    let mut c = connect(Faults::default(), 1);
    let opener = c.client.opener().expect("many streams");
    // The listener allows 100 streams at once; the first is `c.client`.
    let streams: Vec<_> = (1..100).map(|_| open_another(&mut c)).collect();
    let full = ask_for_more(&mut c.sim, &opener);
    assert!(matches!(full, Some(DialError::Full)), "{full:?}");
    drop((streams, c.client, c.server));
    // Lingered out: closing, then gone. The last stream ends once its
    // FIN is acknowledged, a round trip after the drop.
    c.sim.run_for(conn::LINGER + 3 * LATENCY);
    let closing = ask_for_more(&mut c.sim, &opener);
    assert!(matches!(closing, Some(DialError::Closed)), "{closing:?}");
    c.sim.run_until_idle();
    assert!(ask_for_more(&mut c.sim, &opener).is_none());
}

#[test]
fn a_stopped_listener_serves_its_streams_refuses_new_ones_then_closes() {
    let Connected {
        mut sim,
        client,
        server,
        _accepted,
    } = connect(Faults::default(), 1);
    drop(_accepted);
    let now = sim.now();
    sim.b.core.stop_accepting(now);
    round_trip(&mut sim, &client, &server, b"served");
    let opened = client.opener().expect("many streams").ask().unwrap();
    let mut refused = None;
    sim.run_until("the stream opens", |_| {
        refused = opened.try_take();
        refused.is_some()
    });
    let refused = refused.unwrap().unwrap().expect("opened here");
    (&refused).write_all(b"anyone?").unwrap();
    sim.run_until("the listener refuses it", |_| refused.peer_gone());
    drop((refused, server));
    // The listener closes the connection once its last stream is done
    // (the dialer, whose `client` is still held, would not).
    let last_stream_gone = sim.elapsed();
    sim.run_until_idle();
    assert!(sim.a.core.is_finished() && sim.b.core.is_finished());
    assert!(sim.elapsed() - last_stream_gone < conn::LINGER);
    assert!(client.peer_gone());
}

#[test]
fn a_connection_with_a_go_end_carries_one_stream() {
    let mut c = connect_to(Side::go_listener(tls::IDLE_TIMEOUT), Faults::default(), 1);
    assert!(c.client.opener().is_none());
    exchange_both_ways(&mut c, 1000);
    drop((c.client, c.server));
    // Its one stream done, the connection closes at once.
    c.sim.run_until_idle();
    assert!(c.sim.a.core.is_finished());
}

/// The one-stream path: what `connect`, the proxies and Go nodes dial
/// (only `netceptor` offered). Our listener and a Go one both give it one
/// stream, and the connection closes with that stream, without lingering.
#[test]
fn a_one_stream_dial_carries_one_stream_and_closes_with_it() {
    let listeners = [Side::listener, Side::go_listener];
    for (seed, listener) in (1..).zip(listeners) {
        let mut c = connect_offering(listener(tls::IDLE_TIMEOUT), false, Faults::default(), seed);
        assert!(c.client.opener().is_none());
        exchange_both_ways(&mut c, 100_000);
        drop((c.client, c.server));
        let last_stream_gone = c.sim.elapsed();
        c.sim.run_until_idle();
        assert!(c.sim.a.core.is_finished());
        assert!(c.sim.elapsed() - last_stream_gone < conn::LINGER);
    }
}

/// Regression (found when the simulator learnt to dial one-stream): when
/// both ends of a one-stream connection dropped their handles without
/// half-closing first, each stopped the other's sending, no FIN was ever
/// acknowledged, and the connection stayed up on keep-alives, with the
/// dialer's thread, for good.
#[test]
fn a_one_stream_connection_closes_when_both_ends_drop_at_once() {
    let listeners = [Side::listener, Side::go_listener];
    for (seed, listener) in (1..).zip(listeners) {
        let mut c = connect_offering(listener(tls::IDLE_TIMEOUT), false, Faults::default(), seed);
        round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"ask");
        drop((c.client, c.server));
        c.sim.run_until_idle();
        assert!(c.sim.a.core.is_finished());
    }
}

/// Against a Go-like listener, each request is a dial of its own: the
/// first one's connection is gone before the second dials.
#[test]
fn one_stream_requests_each_dial_their_own_connection() {
    let mut c = connect_offering(
        Side::go_listener(tls::IDLE_TIMEOUT),
        false,
        Faults::default(),
        1,
    );
    round_trip(&mut c.sim, &c.client.clone(), &c.server.clone(), b"first");
    drop((c.client, c.server));
    c.sim.run_until_idle();
    assert!(c.sim.a.core.is_finished());
    let (second, connected) = Side::dialer(tls::IDLE_TIMEOUT, DIAL_TIMEOUT, c.sim.now(), false);
    c.sim.a = second;
    let client = dial_answer(&mut c.sim, &connected).expect("dialed again");
    let accepted = &c._accepted;
    c.sim
        .run_until("the listener accepts", |_| !accepted.is_empty());
    let server = accepted.try_recv().unwrap();
    round_trip(&mut c.sim, &client, &server, b"second");
    // The listener served each on a connection of its own: none is left.
    drop((client, server));
    c.sim.run_until_idle();
    assert!(c.sim.a.core.is_finished());
}

/// Runs until the dialer's connection is gone; how long that took.
fn until_dialer_closes(sim: &mut Sim<Side, Side>) -> Duration {
    let from = sim.elapsed();
    sim.run_until_idle();
    assert!(sim.a.core.is_finished());
    sim.elapsed() - from
}

/// Pooled control sessions park their streams: a dialed connection whose
/// streams all wait in the pool closes after the linger, as one with no
/// stream left does, instead of living on keep-alives until the next use.
#[test]
fn a_connection_whose_streams_all_wait_parked_closes_after_the_linger() {
    for many in [true, false] {
        let mut c = connect_offering(
            Side::listener(tls::IDLE_TIMEOUT),
            many,
            Faults::default(),
            1,
        );
        let (client, server) = (c.client.clone(), c.server.clone());
        round_trip(&mut c.sim, &client, &server, b"status");
        // Taken again within the linger: the connection stays.
        client.park(true);
        c.sim.run_for(conn::LINGER / 2);
        client.park(false);
        c.sim.run_for(2 * conn::LINGER);
        round_trip(&mut c.sim, &client, &server, b"again");
        if many {
            // A stream in use beside the parked one holds the connection.
            let (other, other_server) = open_another(&mut c);
            client.park(true);
            c.sim.run_for(2 * conn::LINGER);
            round_trip(&mut c.sim, &other, &other_server, b"in use");
            drop((other, other_server));
        } else {
            client.park(true);
        }
        let lingered = until_dialer_closes(&mut c.sim);
        assert!(
            lingered >= conn::LINGER && lingered < tls::IDLE_TIMEOUT,
            "{lingered:?}"
        );
        assert!(client.peer_gone());
    }
}

/// How the listener closed a bare peer's connection: (code, reason).
fn closed_by_listener(lost: &Option<ConnectionError>) -> (VarInt, String) {
    match lost {
        Some(ConnectionError::ApplicationClosed(a)) => (
            a.error_code,
            String::from_utf8_lossy(&a.reason).into_owned(),
        ),
        other => panic!("not closed by the listener: {other:?}"),
    }
}

#[test]
fn a_connection_that_opens_no_stream_is_closed_after_the_accept_timeout() {
    let now = Instant::now();
    let (listener, accepted) = Side::listener(tls::IDLE_TIMEOUT);
    let mut sim = Sim::new(
        BarePeer::dial(None, now),
        listener,
        now,
        Faults::default(),
        1,
    );
    sim.run_until("the listener gives up", |s| s.a.lost.is_some());
    let waited = sim.elapsed();
    assert!(
        waited >= ACCEPT_STREAM_TIMEOUT && waited <= ACCEPT_STREAM_TIMEOUT + 2 * LATENCY,
        "{waited:?}"
    );
    let (code, reason) = closed_by_listener(&sim.a.lost);
    assert_eq!((code.into_inner(), &reason[..]), (500, "Accept Timeout"));
    assert!(accepted.is_empty());
}

#[test]
fn a_stream_that_starts_with_a_wrong_hello_is_refused() {
    let now = Instant::now();
    let (listener, accepted) = Side::listener(tls::IDLE_TIMEOUT);
    let mut sim = Sim::new(
        BarePeer::dial(Some(7), now),
        listener,
        now,
        Faults::default(),
        1,
    );
    sim.run_until("the listener refuses", |s| s.a.lost.is_some());
    let (code, reason) = closed_by_listener(&sim.a.lost);
    assert_eq!((code.into_inner(), &reason[..]), (500, "Read Data Error"));
    assert!(accepted.is_empty());
}

/// One end of an in-memory datagram pipe between two endpoint threads.
struct MemTransport {
    local: (&'static str, &'static str),
    rx: Receiver<Delivery>,
    to_peer: Sender<Delivery>,
}

impl Transport for MemTransport {
    fn incoming(&self) -> &Receiver<Delivery> {
        &self.rx
    }

    fn send(&self, _to_node: &str, _to_service: &str, payload: Vec<u8>) {
        let _ = self.to_peer.send(Delivery::Data {
            from_node: self.local.0.into(),
            from_service: ServiceName::new(self.local.1).expect("service name"),
            payload: bytes::BytesMut::from(&payload[..]),
        });
    }
}

/// A stream over real endpoint threads. The senders returned keep both
/// directions open after one thread exits, as the router does.
fn connect_threads() -> (Stream, Stream, Listener, [Sender<Delivery>; 2]) {
    let (a_tx, a_rx) = unbounded();
    let (b_tx, b_rx) = unbounded();
    let keep_open = [a_tx.clone(), b_tx.clone()];
    let dialer = MemTransport {
        local: sim::DIALER,
        rx: a_rx,
        to_peer: b_tx,
    };
    let listener = MemTransport {
        local: sim::LISTENER,
        rx: b_rx,
        to_peer: a_tx,
    };
    let idle = tls::IDLE_TIMEOUT;
    let listener = Listener::serve(listener, "test-listener", idle).unwrap();
    let client = dial_over(dialer, "a", sim::LISTENER, DIAL_TIMEOUT, idle).unwrap();
    let server = listener.accept().unwrap();
    (client, server, listener, keep_open)
}

#[test]
fn endpoint_threads_carry_a_stream_both_ways() {
    let (client, server, _l, _open) = connect_threads();
    assert_eq!(server.peer_node(), "a");
    (&client).write_all(b"ping").unwrap();
    client.shutdown_write();
    let mut got = Vec::new();
    (&server).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping");
    (&server).write_all(b"pong").unwrap();
    drop(server);
    got.clear();
    (&client).read_to_end(&mut got).unwrap();
    assert_eq!(got, b"pong");
}

#[test]
fn write_timeout_fires_when_the_peer_reads_nothing() {
    let (client, _server, _l, _open) = connect_threads();
    client.set_write_timeout(Some(Duration::from_millis(300)));
    // Flow control (6 MiB stream window) plus both pipes fill up well
    // before 32 MiB while the server reads nothing.
    let chunk = vec![0u8; 1 << 20];
    let err = (0..32)
        .find_map(|_| (&client).write_all(&chunk).err())
        .expect("a write timed out");
    assert_eq!(err.kind(), ErrorKind::TimedOut);
}

#[test]
fn read_timeout_is_reported() {
    let (client, _server, _l, _open) = connect_threads();
    client.set_read_timeout(Some(Duration::from_millis(50)));
    let err = (&client).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
}

#[test]
fn a_last_write_with_its_fin_arrives_whole_then_ends() {
    let mut c = connect(Faults::default(), 1);
    c.sim.run_for(Duration::from_millis(100));
    let before = c.sim.sent();
    let stream = open_quietly(&mut c);
    stream.write_and_shutdown(b"request").unwrap();
    let accepted = &c._accepted;
    c.sim
        .run_until("the listener accepts it", |_| !accepted.is_empty());
    assert_eq!(c.sim.sent(), before + 1, "hello, request and FIN in one");
    let server = accepted.try_recv().unwrap();
    let mut got = Vec::new();
    c.sim
        .run_until("the stream ends", |_| read_ready(&server, &mut got));
    assert_eq!(got, b"request");
    assert!(
        stream.write_and_shutdown(b"more").is_err(),
        "no writes after the FIN"
    );

    // More than the pipe holds goes out as a plain write, then the FIN.
    let big = pattern(pipe::PIPE_CAPACITY + 1000, 7);
    let writer = {
        let (stream, big) = (c.client.clone(), big.clone());
        std::thread::spawn(move || stream.write_and_shutdown(&big))
    };
    let mut got = Vec::new();
    c.sim
        .run_until("the big write ends", |_| read_ready(&c.server, &mut got));
    assert_eq!(got, big);
    writer.join().unwrap().unwrap();
}
