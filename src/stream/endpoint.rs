//! The sans-IO stream endpoint: a `quinn_proto::Endpoint` and its
//! connections, with mesh (node, service) pairs standing in for socket
//! addresses.
//!
//! Call order, as with quinn-proto: feed inputs with the `handle_*`
//! methods, then call [`Endpoint::poll_transmit`] until it returns `None`
//! (it brings the touched connections up to date), then ask
//! [`Endpoint::poll_timeout`] when to call [`Endpoint::handle_timeout`].

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use crossbeam_channel::Sender;
use log::debug;
use quinn_proto::{
    ClientConfig, ConnectError, ConnectionHandle, DatagramEvent, EndpointConfig, ServerConfig,
};

use super::conn::{ACCEPT_STREAM_TIMEOUT, Conn, Owner, Role};
use super::error::DialError;
use super::pipe::{DriverCmd, Stream};
use crate::netceptor::node::PROBLEM_SERVICE_UNKNOWN;

/// Capacity of a transmit buffer: one QUIC packet.
const PACKET_BUF: usize = 1500;

/// One datagram for the mesh.
#[derive(Debug)]
pub(crate) struct Transmit {
    pub to_node: String,
    pub to_service: String,
    pub payload: Vec<u8>,
}

/// Fake socket addresses standing for (node, service) pairs, because
/// quinn-proto identifies peers by `SocketAddr`.
#[derive(Default)]
struct AddrBook {
    by_peer: HashMap<(String, String), SocketAddr>,
    by_addr: HashMap<SocketAddr, (String, String)>,
    /// Addresses handed out so far; never reused.
    issued: u128,
}

impl AddrBook {
    fn addr(&mut self, node: &str, service: &str) -> SocketAddr {
        let key = (node.to_string(), service.to_string());
        if let Some(a) = self.by_peer.get(&key) {
            return *a;
        }
        self.issued += 1;
        let addr = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(self.issued), 1, 0, 0));
        self.by_peer.insert(key.clone(), addr);
        self.by_addr.insert(addr, key);
        addr
    }

    fn peer(&self, addr: &SocketAddr) -> Option<&(String, String)> {
        self.by_addr.get(addr)
    }

    /// Drops a peer's address once no connection uses it.
    fn forget(&mut self, peer: &(String, String)) {
        if let Some(addr) = self.by_peer.remove(peer) {
            self.by_addr.remove(&addr);
        }
    }
}

pub(crate) struct Endpoint {
    quic: quinn_proto::Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    addrs: AddrBook,
    owner: Owner,
    /// Connections with news since they were last brought up to date.
    touched: Vec<ConnectionHandle>,
    out: VecDeque<Transmit>,
    buf: Vec<u8>,
}

impl Endpoint {
    /// Serves a listener: accepted streams go to `accepted`. Handles send
    /// their commands to `cmds`, to be fed back through `handle_cmd`.
    pub fn listener(
        server: Arc<ServerConfig>,
        accepted: Sender<Stream>,
        cmds: Sender<DriverCmd>,
    ) -> Self {
        Self::new(Some(server), Role::Listener { accepted }, cmds)
    }

    /// Serves one dial; its answer goes to `connected` once `connect` ran.
    pub fn dialer(connected: Sender<Result<Stream, DialError>>, cmds: Sender<DriverCmd>) -> Self {
        let role = Role::Dialer {
            connected: Some(connected),
        };
        Self::new(None, role, cmds)
    }

    fn new(server: Option<Arc<ServerConfig>>, role: Role, cmds: Sender<DriverCmd>) -> Self {
        let config = Arc::new(EndpointConfig::default());
        Endpoint {
            quic: quinn_proto::Endpoint::new(config, server, false, None),
            conns: HashMap::new(),
            addrs: AddrBook::default(),
            owner: Owner {
                role,
                cmds,
                accepting: true,
            },
            touched: Vec::new(),
            out: VecDeque::new(),
            buf: Vec::with_capacity(PACKET_BUF),
        }
    }

    /// Starts the client connection to `node:service`; the dial fails
    /// with [`DialError::Timeout`] if no stream is open by `deadline`.
    pub fn connect(
        &mut self,
        cfg: ClientConfig,
        (node, service): (&str, &str),
        sni: &str,
        deadline: Instant,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let addr = self.addrs.addr(node, service);
        let (ch, conn) = self.quic.connect(now, cfg, addr, sni)?;
        let peer = (node.to_string(), service.to_string());
        self.conns.insert(ch, Conn::new(conn, peer, deadline));
        self.touched.push(ch);
        Ok(())
    }

    /// A datagram from the mesh.
    pub fn handle_datagram(
        &mut self,
        from_node: &str,
        from_service: &str,
        payload: BytesMut,
        now: Instant,
    ) {
        let addr = self.addrs.addr(from_node, from_service);
        self.buf.clear();
        match self
            .quic
            .handle(now, addr, None, None, payload, &mut self.buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.quic().handle_event(ev);
                    self.touched.push(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.on_incoming(incoming, addr, now),
            Some(DatagramEvent::Response(t)) => {
                let reply = self.buf[..t.size].to_vec();
                self.send_raw(addr, reply);
            }
            None => {}
        }
    }

    fn on_incoming(&mut self, incoming: quinn_proto::Incoming, addr: SocketAddr, now: Instant) {
        if !self.owner.accepting || matches!(self.owner.role, Role::Dialer { .. }) {
            self.quic.ignore(incoming);
            return;
        }
        let mut buf = Vec::new();
        match self.quic.accept(incoming, now, &mut buf, None) {
            Ok((ch, conn)) => {
                let peer = self.addrs.peer(&addr).cloned().unwrap_or_default();
                let deadline = now + ACCEPT_STREAM_TIMEOUT;
                self.conns.insert(ch, Conn::new(conn, peer, deadline));
                self.touched.push(ch);
            }
            Err(e) => {
                debug!("Refused stream connection: {}", e.cause);
                if let Some(t) = e.response {
                    buf.truncate(t.size);
                    self.send_raw(addr, buf);
                }
            }
        }
    }

    /// The mesh could not deliver to `node:service`: connections to it
    /// fail at once instead of waiting out their timeouts.
    pub fn handle_unreachable(&mut self, node: &str, service: &str, problem: &str, now: Instant) {
        let why = DialError::Unreachable {
            node: node.to_string(),
            service: service.to_string(),
            problem: problem.to_string(),
        };
        let text = why.to_string();
        let kind = if problem == PROBLEM_SERVICE_UNKNOWN {
            ErrorKind::ConnectionRefused
        } else {
            ErrorKind::ConnectionAborted
        };
        let mut why = Some(why);
        for (&ch, c) in self.conns.iter_mut() {
            let peer = c.peer();
            if peer.0 == node && peer.1 == service && !c.is_closed() {
                debug!("{text}");
                c.abort(kind, &text, now);
                self.touched.push(ch);
                if let Some(e) = why.take() {
                    self.owner.fail_dial(e);
                }
            }
        }
    }

    /// A command from a stream handle or an [`Opener`](super::pipe::Opener).
    pub fn handle_cmd(&mut self, cmd: DriverCmd) {
        match cmd {
            DriverCmd::Wake(ch) => self.touched.push(ch),
            DriverCmd::Release(ch, id) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.release(id);
                    self.touched.push(ch);
                }
            }
            DriverCmd::Park(ch, id, parked) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.park(id, parked);
                    self.touched.push(ch);
                }
            }
            // A connection that is gone drops `reply`, which says as much.
            // The connection is not driven now: the new stream's hello
            // goes out with its first write (`PipeState::hello_unsent`),
            // a packet and the peer's immediate acknowledgement fewer.
            DriverCmd::Open(ch, reply) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    // Refused, the new stream's drop releases it. A failed
                    // open may have queued a reset of its stream: that must
                    // go out now.
                    let opened = c.open_more(ch, &self.owner);
                    if opened.is_err() {
                        self.touched.push(ch);
                    }
                    let _ = reply.send(opened);
                }
            }
        }
    }

    /// The listener handle is gone: accept nothing new, finish the rest.
    pub fn stop_accepting(&mut self, now: Instant) {
        self.owner.accepting = false;
        for (&ch, c) in self.conns.iter_mut() {
            c.stop_if_idle(now);
            self.touched.push(ch);
        }
    }

    /// The mesh service under this endpoint closed: nothing more can
    /// flow, so every handle and a waiting dial fail now.
    pub fn handle_transport_closed(&mut self) {
        for c in self.conns.values() {
            c.fail(ErrorKind::ConnectionAborted, "mesh service closed");
        }
        self.owner.fail_dial(DialError::MeshClosed);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for (&ch, c) in self.conns.iter_mut() {
            if c.handle_timeout(now, &mut self.owner) {
                self.touched.push(ch);
            }
        }
    }

    /// The next datagram to send, after bringing touched connections up
    /// to date.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.out.is_empty() {
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for ch in touched {
                self.drive(ch, now);
            }
        }
        self.out.pop_front()
    }

    /// When `handle_timeout` is next due; valid once `poll_transmit` has
    /// returned `None`.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.conns.values_mut().filter_map(Conn::poll_timeout).min()
    }

    /// Nothing is left to serve: the dial's connection is gone, or the
    /// listener handle and all its connections are.
    pub fn is_finished(&self) -> bool {
        let open = self.owner.accepting && matches!(self.owner.role, Role::Listener { .. });
        !open && self.conns.is_empty()
    }

    fn send_raw(&mut self, addr: SocketAddr, payload: Vec<u8>) {
        if let Some((node, service)) = self.addrs.peer(&addr) {
            self.out.push_back(Transmit {
                to_node: node.clone(),
                to_service: service.clone(),
                payload,
            });
        }
    }

    /// Brings one connection up to date: endpoint events, application
    /// events, stream buffers, then outgoing packets.
    fn drive(&mut self, ch: ConnectionHandle, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(&ch) else {
                return;
            };
            let mut progressed = false;
            while let Some(ev) = c.quic().poll_endpoint_events() {
                if let Some(back) = self.quic.handle_event(ch, ev) {
                    c.quic().handle_event(back);
                }
                progressed = true;
            }
            while let Some(ev) = c.quic().poll() {
                c.on_event(ch, ev, &mut self.owner, now);
                progressed = true;
            }
            c.pump(now, &self.owner);
            self.transmit(ch, now);
            if self.remove_drained(ch) || !progressed {
                return;
            }
        }
    }

    fn transmit(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        self.buf.clear();
        while let Some(size) = c.poll_transmit(now, &mut self.buf) {
            // Hand the buffer itself over; a fresh one takes its place.
            let mut payload = std::mem::replace(&mut self.buf, Vec::with_capacity(PACKET_BUF));
            payload.truncate(size);
            let (node, service) = c.peer().clone();
            self.out.push_back(Transmit {
                to_node: node,
                to_service: service,
                payload,
            });
        }
    }

    /// Forgets a connection that has fully closed; true if it did.
    fn remove_drained(&mut self, ch: ConnectionHandle) -> bool {
        if !self.conns.get(&ch).is_some_and(Conn::is_drained) {
            return false;
        }
        if let Some(c) = self.conns.remove(&ch) {
            c.fail(ErrorKind::ConnectionAborted, "connection closed");
            if !self.conns.values().any(|o| o.peer() == c.peer()) {
                self.addrs.forget(c.peer());
            }
        }
        true
    }
}
