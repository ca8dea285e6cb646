//! A deterministic two-endpoint simulator on a virtual clock, after
//! quinn-proto's `tests/util.rs` `Pair`: no sockets, no threads, no
//! sleeps. Each step runs what is due, then jumps the clock to the
//! earliest arrival or deadline; faults come from a seeded generator.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, bounded, unbounded};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig, Event,
};

use super::super::endpoint::Endpoint;
use super::super::pipe::DriverCmd;
use super::super::{DialError, Stream, tls};

/// One-way delay of every datagram.
pub const LATENCY: Duration = Duration::from_millis(10);
/// Steps a run may take before the test fails instead of hanging.
const MAX_STEPS: usize = 200_000;

pub const DIALER: (&str, &str) = ("a", "Eph1x2y3");
pub const LISTENER: (&str, &str) = ("b", "echo");

/// One side of the simulation.
pub trait Peer {
    fn handle_datagram(&mut self, payload: Vec<u8>, now: Instant);
    fn handle_timeout(&mut self, now: Instant);
    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>>;
    fn poll_timeout(&mut self) -> Option<Instant>;
}

/// A stream endpoint under test, with the channel its handles talk on.
pub struct Side {
    pub core: Endpoint,
    cmds: Receiver<DriverCmd>,
    /// Who every datagram comes from: the other side.
    from: (&'static str, &'static str),
}

impl Side {
    pub fn listener(idle: Duration) -> (Side, Receiver<Stream>) {
        Self::listener_with(tls::server_config(idle).expect("server config"))
    }

    /// A listener that speaks only what a Go listener does.
    pub fn go_listener(idle: Duration) -> (Side, Receiver<Stream>) {
        Self::listener_with(tls::go_server_config(idle).expect("server config"))
    }

    fn listener_with(server: Arc<quinn_proto::ServerConfig>) -> (Side, Receiver<Stream>) {
        let (accepted_tx, accepted) = unbounded();
        let (cmds_tx, cmds) = unbounded();
        let core = Endpoint::listener(server, accepted_tx, cmds_tx);
        let side = Side {
            core,
            cmds,
            from: DIALER,
        };
        (side, accepted)
    }

    /// A dialer that has just called `connect` at `now`, offering many
    /// streams if `many`, else only Go's protocol (as `connect`, the
    /// proxies and Go nodes dial).
    pub fn dialer(
        idle: Duration,
        timeout: Duration,
        now: Instant,
        many: bool,
    ) -> (Side, Receiver<Result<Stream, DialError>>) {
        let (connected_tx, connected) = bounded(1);
        let (cmds_tx, cmds) = unbounded();
        let mut core = Endpoint::dialer(connected_tx, cmds_tx);
        let cfg = tls::client_config(idle, many).expect("client config");
        core.connect(cfg, LISTENER, DIALER.0, now + timeout, now)
            .expect("connect");
        let side = Side {
            core,
            cmds,
            from: LISTENER,
        };
        (side, connected)
    }
}

impl Peer for Side {
    fn handle_datagram(&mut self, payload: Vec<u8>, now: Instant) {
        let (node, service) = self.from;
        let payload = BytesMut::from(&payload[..]);
        self.core.handle_datagram(node, service, payload, now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        for c in self.cmds.try_iter() {
            self.core.handle_cmd(c);
        }
        let t = self.core.poll_transmit(now)?;
        assert_eq!((&t.to_node[..], &t.to_service[..]), self.from);
        Some(t.payload)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}

/// A plain QUIC client speaking Go's protocol that completes the
/// handshake and then opens a stream and writes `first_byte`, or opens
/// none: a peer that breaks the stream protocol on purpose.
pub struct BarePeer {
    quic: quinn_proto::Endpoint,
    ch: ConnectionHandle,
    conn: Connection,
    first_byte: Option<u8>,
    pub lost: Option<ConnectionError>,
}

/// The one address a bare peer knows its listener by.
const BARE_PEER_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V6(Ipv6Addr::LOCALHOST), 1);

impl BarePeer {
    pub fn dial(first_byte: Option<u8>, now: Instant) -> BarePeer {
        let config = Arc::new(EndpointConfig::default());
        let mut quic = quinn_proto::Endpoint::new(config, None, false, None);
        let cfg = tls::client_config(tls::IDLE_TIMEOUT, false).expect("client config");
        let (ch, conn) = quic
            .connect(now, cfg, BARE_PEER_ADDR, DIALER.0)
            .expect("connect");
        BarePeer {
            quic,
            ch,
            conn,
            first_byte,
            lost: None,
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected => {
                if let Some(b) = self.first_byte {
                    let id = self.conn.streams().open(Dir::Bi).expect("a stream");
                    self.conn.send_stream(id).write(&[b]).expect("write");
                }
            }
            Event::ConnectionLost { reason } => self.lost = Some(reason),
            _ => {}
        }
    }
}

impl Peer for BarePeer {
    fn handle_datagram(&mut self, payload: Vec<u8>, now: Instant) {
        let mut buf = Vec::new();
        let payload = BytesMut::from(&payload[..]);
        let event = self
            .quic
            .handle(now, BARE_PEER_ADDR, None, None, payload, &mut buf);
        if let Some(DatagramEvent::ConnectionEvent(_, ev)) = event {
            self.conn.handle_event(ev);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.quic.handle_event(self.ch, ev) {
                self.conn.handle_event(back);
            }
        }
        while let Some(ev) = self.conn.poll() {
            self.on_event(ev);
        }
        let mut buf = Vec::new();
        let t = self.conn.poll_transmit(now, 1, &mut buf)?;
        buf.truncate(t.size);
        Some(buf)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.conn.poll_timeout()
    }
}

/// What the link does to datagrams; `one in n` for each fault, 0: never.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    pub loss: u64,
    pub duplicate: u64,
    /// Delayed by one more latency, so later datagrams overtake it.
    pub reorder: u64,
    /// Nothing gets through.
    pub cut: bool,
}

/// xorshift64*: enough randomness for faults, and the same every run.
struct Rng(u64);

impl Rng {
    fn one_in(&mut self, n: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        n > 0 && self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).is_multiple_of(n)
    }
}

/// Datagrams in flight to one side, by arrival time then send order.
type Inbox = BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>;

pub struct Sim<A, B> {
    pub a: A,
    pub b: B,
    pub faults: Faults,
    start: Instant,
    now: Instant,
    to_a: Inbox,
    to_b: Inbox,
    rng: Rng,
    sent: u64,
}

impl<A: Peer, B: Peer> Sim<A, B> {
    /// `a` and `b` must have been made at `start`.
    pub fn new(a: A, b: B, start: Instant, faults: Faults, seed: u64) -> Self {
        Sim {
            a,
            b,
            faults,
            start,
            now: start,
            to_a: Inbox::new(),
            to_b: Inbox::new(),
            rng: Rng(seed | 1),
            sent: 0,
        }
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Datagrams put on the links so far, both ways.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs what is due now: arrivals, timers, then whatever both sides
    /// send in answer.
    fn run_due(&mut self) {
        let now = self.now;
        for p in due(&mut self.to_a, now) {
            self.a.handle_datagram(p, now);
        }
        self.a.handle_timeout(now);
        while let Some(p) = self.a.poll_transmit(now) {
            self.carry(p, false);
        }
        for p in due(&mut self.to_b, now) {
            self.b.handle_datagram(p, now);
        }
        self.b.handle_timeout(now);
        while let Some(p) = self.b.poll_transmit(now) {
            self.carry(p, true);
        }
    }

    /// Jumps the clock to the earliest arrival or deadline, or to `stop`
    /// if that comes first; false if there is none.
    fn advance(&mut self, stop: Option<Instant>) -> bool {
        let arrivals = [&self.to_a, &self.to_b].map(|q| q.peek().map(|Reverse((t, ..))| *t));
        let deadlines = [self.a.poll_timeout(), self.b.poll_timeout(), stop];
        let next = arrivals.into_iter().chain(deadlines).flatten().min();
        next.map(|t| self.now = self.now.max(t)).is_some()
    }

    /// Puts a datagram on the link towards `a` or `b`, faults applied.
    fn carry(&mut self, payload: Vec<u8>, to_a: bool) {
        let f = self.faults;
        if f.cut || self.rng.one_in(f.loss) {
            return;
        }
        let copies = if self.rng.one_in(f.duplicate) { 2 } else { 1 };
        let delay = if self.rng.one_in(f.reorder) {
            2 * LATENCY
        } else {
            LATENCY
        };
        let inbox = if to_a { &mut self.to_a } else { &mut self.to_b };
        for _ in 0..copies {
            self.sent += 1;
            inbox.push(Reverse((self.now + delay, self.sent, payload.clone())));
        }
    }

    /// Steps until `done` holds, checked after each instant's work and
    /// before the clock moves on; panics if that never comes.
    pub fn run_until(&mut self, what: &str, done: impl FnMut(&Self) -> bool) {
        self.run_until_or(None, what, done);
    }

    /// As `run_until`, with the clock stopping at `stop` on its way.
    fn run_until_or(
        &mut self,
        stop: Option<Instant>,
        what: &str,
        mut done: impl FnMut(&Self) -> bool,
    ) {
        for _ in 0..MAX_STEPS {
            self.run_due();
            if done(self) {
                return;
            }
            assert!(self.advance(stop), "everything went quiet before {what}");
        }
        panic!("{what}: not within {MAX_STEPS} steps");
    }

    /// Steps until no datagram is in flight and no timer is set.
    pub fn run_until_idle(&mut self) {
        for _ in 0..MAX_STEPS {
            self.run_due();
            if !self.advance(None) {
                return;
            }
        }
        panic!("still busy after {MAX_STEPS} steps");
    }

    /// Steps through `d` of virtual time, and no further: a deadline
    /// past it has not fired when this returns.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until_or(Some(end), "the time is up", |s| s.now >= end);
    }
}

fn due(inbox: &mut Inbox, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while inbox.peek().is_some_and(|Reverse((t, ..))| *t <= now) {
        if let Some(Reverse((_, _, p))) = inbox.pop() {
            out.push(p);
        }
    }
    out
}
