//! The endpoint driver: one thread owning a `quinn_proto::Endpoint` and its
//! connections, fed by mesh datagrams and by stream handles.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender, never, select};
use log::debug;
use quinn_proto::{
    ClientConfig, Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event, ReadError, ServerConfig, StreamEvent, StreamId, VarInt, WriteError,
};

use super::pipe::{DriverCmd, PIPE_CAPACITY, Pipe, Stream};
use crate::netceptor::Delivery;
use crate::netceptor::node::PROBLEM_SERVICE_UNKNOWN;

/// How long a listener waits for a new connection's first stream.
const ACCEPT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// The byte a dialer writes first so the listener's accept fires.
const HELLO: u8 = 0;
/// Application close codes (docs/wire.md §11.5).
const CLOSE_NORMAL: u32 = 0;
const CLOSE_BAD_HELLO: u32 = 500;
const STOP_READING: u32 = 499;
/// Capacity of a transmit buffer: one QUIC packet.
const PACKET_BUF: usize = 1500;
/// Datagrams handled before the driver looks at its other work.
const RECV_BATCH: usize = 64;

/// Where a driver's datagrams come from and go to.
pub trait Transport: Send + 'static {
    fn incoming(&self) -> &Receiver<Delivery>;
    fn send(&self, to_node: &str, to_service: &str, payload: Vec<u8>);
}

impl Transport for crate::netceptor::PacketConn {
    fn incoming(&self) -> &Receiver<Delivery> {
        self.receiver()
    }

    fn send(&self, to_node: &str, to_service: &str, payload: Vec<u8>) {
        crate::netceptor::PacketConn::send(self, to_node, to_service, payload);
    }
}

pub(crate) enum Role {
    Listener {
        accepted: Sender<Stream>,
    },
    Dialer {
        connected: Option<Sender<Result<Stream, String>>>,
    },
}

struct Conn {
    conn: Connection,
    peer: (String, String),
    stream: Option<StreamId>,
    pipe: Arc<Pipe>,
    /// Listener side: the hello byte has been read and the stream handed out.
    greeted: bool,
    accept_deadline: Option<Instant>,
    fin_sent: bool,
    released: bool,
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

pub(crate) struct Driver<T: Transport> {
    transport: T,
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    addrs: AddrBook,
    role: Role,
    cmd_tx: Sender<DriverCmd>,
    cmd_rx: Receiver<DriverCmd>,
    /// Cleared when the listener handle is dropped: accept nothing new.
    accepting: bool,
    buf: Vec<u8>,
}

impl<T: Transport> Driver<T> {
    pub fn new(transport: T, server: Option<Arc<ServerConfig>>, role: Role) -> Self {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), server, false, None);
        Driver {
            transport,
            endpoint,
            conns: HashMap::new(),
            addrs: AddrBook::default(),
            role,
            cmd_tx,
            cmd_rx,
            accepting: true,
            buf: Vec::with_capacity(1500),
        }
    }

    /// Starts a client connection to `node:service`.
    pub fn connect(
        &mut self,
        cfg: ClientConfig,
        node: &str,
        service: &str,
        sni: &str,
    ) -> Result<(), String> {
        let addr = self.addrs.addr(node, service);
        let (ch, conn) = self
            .endpoint
            .connect(Instant::now(), cfg, addr, sni)
            .map_err(|e| e.to_string())?;
        self.insert(ch, conn, (node.to_string(), service.to_string()), None);
        self.drive(ch, Instant::now());
        Ok(())
    }

    fn insert(
        &mut self,
        ch: ConnectionHandle,
        conn: Connection,
        peer: (String, String),
        accept_deadline: Option<Instant>,
    ) {
        self.conns.insert(
            ch,
            Conn {
                conn,
                peer,
                stream: None,
                pipe: Arc::new(Pipe::default()),
                greeted: false,
                accept_deadline,
                fin_sent: false,
                released: false,
            },
        );
    }

    /// Runs until there is nothing left to serve. `listener_gone` fires
    /// when the owner of a listener drops it.
    pub fn run(mut self, listener_gone: Receiver<()>) {
        let mut gone = listener_gone;
        loop {
            let timeout = self.next_timeout();
            let mut touched = Vec::new();
            select! {
                recv(self.transport.incoming()) -> d => match d {
                    Ok(d) => self.on_delivery(d, &mut touched),
                    Err(_) => return self.fail_all("mesh service closed"),
                },
                recv(self.cmd_rx) -> c => {
                    if let Ok(c) = c {
                        self.on_cmd(c, &mut touched);
                    }
                }
                recv(gone) -> _ => {
                    self.accepting = false;
                    gone = never();
                }
                recv(crossbeam_channel::at(timeout)) -> _ => {}
            }
            for _ in 0..RECV_BATCH {
                match self.transport.incoming().try_recv() {
                    Ok(d) => self.on_delivery(d, &mut touched),
                    Err(_) => break,
                }
            }
            while let Ok(c) = self.cmd_rx.try_recv() {
                self.on_cmd(c, &mut touched);
            }
            let now = Instant::now();
            self.expire(now, &mut touched);
            touched.sort_unstable();
            touched.dedup();
            for ch in touched {
                self.drive(ch, now);
            }
            if self.finished() {
                return;
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.role {
            Role::Listener { .. } => !self.accepting && self.conns.is_empty(),
            Role::Dialer { .. } => self.conns.is_empty(),
        }
    }

    fn next_timeout(&mut self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.conns
            .values_mut()
            .flat_map(|c| [c.conn.poll_timeout(), c.accept_deadline])
            .flatten()
            .min()
            .unwrap_or(far)
    }

    fn expire(&mut self, now: Instant, touched: &mut Vec<ConnectionHandle>) {
        for (&ch, c) in self.conns.iter_mut() {
            if c.conn.poll_timeout().is_some_and(|t| t <= now) {
                c.conn.handle_timeout(now);
                touched.push(ch);
            }
            if c.accept_deadline.is_some_and(|t| t <= now) {
                c.accept_deadline = None;
                close(&mut c.conn, now, CLOSE_BAD_HELLO, "Accept Timeout");
                touched.push(ch);
            }
        }
    }

    fn on_cmd(&mut self, cmd: DriverCmd, touched: &mut Vec<ConnectionHandle>) {
        match cmd {
            DriverCmd::Wake(ch) => touched.push(ch),
            DriverCmd::Release(ch) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.released = true;
                    c.pipe.lock().send_fin = true;
                    touched.push(ch);
                }
            }
        }
    }

    fn on_delivery(&mut self, d: Delivery, touched: &mut Vec<ConnectionHandle>) {
        match d {
            Delivery::Data {
                from_node,
                from_service,
                payload,
            } => {
                let addr = self.addrs.addr(&from_node, &from_service.to_text());
                self.on_packet(addr, payload, touched);
            }
            Delivery::Unreachable { message, .. } => {
                let peer = (message.to_node, message.to_service);
                let why = format!(
                    "remote service {} to node {} is unreachable: {}",
                    peer.1, peer.0, message.problem
                );
                let kind = if message.problem == PROBLEM_SERVICE_UNKNOWN {
                    ErrorKind::ConnectionRefused
                } else {
                    ErrorKind::ConnectionAborted
                };
                let now = Instant::now();
                for (&ch, c) in self.conns.iter_mut() {
                    if c.peer == peer && !c.conn.is_closed() {
                        debug!("{why}");
                        c.pipe.fail(kind, why.clone());
                        close(&mut c.conn, now, CLOSE_NORMAL, "normal close");
                        touched.push(ch);
                        if let Role::Dialer { connected } = &mut self.role
                            && let Some(tx) = connected.take()
                        {
                            let _ = tx.send(Err(why.clone()));
                        }
                    }
                }
            }
        }
    }

    fn on_packet(&mut self, addr: SocketAddr, data: BytesMut, touched: &mut Vec<ConnectionHandle>) {
        let now = Instant::now();
        self.buf.clear();
        match self
            .endpoint
            .handle(now, addr, None, None, data, &mut self.buf)
        {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.conn.handle_event(ev);
                    touched.push(ch);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if !self.accepting || matches!(self.role, Role::Dialer { .. }) {
                    self.endpoint.ignore(incoming);
                    return;
                }
                let mut buf = Vec::new();
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((ch, conn)) => {
                        let peer = self.addrs.peer(&addr).cloned().unwrap_or_default();
                        self.insert(ch, conn, peer, Some(now + ACCEPT_STREAM_TIMEOUT));
                        touched.push(ch);
                    }
                    Err(e) => {
                        debug!("Refused stream connection: {}", e.cause);
                        if let Some(t) = e.response {
                            self.send_raw(addr, &buf[..t.size]);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                let reply = self.buf[..t.size].to_vec();
                self.send_raw(addr, &reply);
            }
            None => {}
        }
    }

    fn send_raw(&self, addr: SocketAddr, packet: &[u8]) {
        if let Some((node, service)) = self.addrs.peer(&addr) {
            self.transport.send(node, service, packet.to_vec());
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
            while let Some(ev) = c.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(ch, ev) {
                    c.conn.handle_event(back);
                }
                progressed = true;
            }
            while let Some(ev) = c.conn.poll() {
                on_event(c, ch, ev, &mut self.role, &self.cmd_tx, now);
                progressed = true;
            }
            pump(c, now);
            self.transmit(ch, now);
            let Some(c) = self.conns.get_mut(&ch) else {
                return;
            };
            if c.conn.is_drained() {
                c.pipe
                    .fail(ErrorKind::ConnectionAborted, "connection closed".into());
                let peer = c.peer.clone();
                self.conns.remove(&ch);
                if !self.conns.values().any(|c| c.peer == peer) {
                    self.addrs.forget(&peer);
                }
                return;
            }
            if !progressed {
                return;
            }
        }
    }

    fn transmit(&mut self, ch: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns.get_mut(&ch) else {
            return;
        };
        loop {
            self.buf.clear();
            let Some(t) = c.conn.poll_transmit(now, 1, &mut self.buf) else {
                return;
            };
            // Hand the buffer itself over; a fresh one takes its place.
            let mut packet = std::mem::replace(&mut self.buf, Vec::with_capacity(PACKET_BUF));
            packet.truncate(t.size);
            self.transport.send(&c.peer.0, &c.peer.1, packet);
        }
    }

    fn fail_all(&mut self, why: &str) {
        for c in self.conns.values() {
            c.pipe.fail(ErrorKind::ConnectionAborted, why.into());
        }
        if let Role::Dialer { connected } = &mut self.role
            && let Some(tx) = connected.take()
        {
            let _ = tx.send(Err(why.into()));
        }
    }
}

fn close(conn: &mut Connection, now: Instant, code: u32, reason: &str) {
    conn.close(
        now,
        VarInt::from_u32(code),
        Bytes::copy_from_slice(reason.as_bytes()),
    );
}

fn on_event(
    c: &mut Conn,
    ch: ConnectionHandle,
    ev: Event,
    role: &mut Role,
    cmd_tx: &Sender<DriverCmd>,
    now: Instant,
) {
    match ev {
        Event::Connected => {
            if let Role::Dialer { connected } = role {
                open_dialer_stream(c, ch, connected, cmd_tx, now);
            }
        }
        Event::ConnectionLost { reason } => {
            let (kind, text) = describe(&reason);
            if kind == ErrorKind::UnexpectedEof {
                // A normal close ends the stream like a FIN would, after
                // everything that arrived before it.
                drain_on_close(c);
            }
            c.pipe.fail(kind, text.clone());
            if let Role::Dialer { connected } = role
                && let Some(tx) = connected.take()
            {
                let _ = tx.send(Err(text));
            }
        }
        Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
            if c.stream.is_none()
                && let Some(id) = c.conn.streams().accept(Dir::Bi)
            {
                c.stream = Some(id);
            }
        }
        Event::Stream(StreamEvent::Finished { id }) if Some(id) == c.stream && c.released => {
            close(&mut c.conn, now, CLOSE_NORMAL, "normal close");
        }
        Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) == c.stream => {
            // Only our sending ends; what the peer sent can still be read.
            let mut st = c.pipe.lock();
            st.write_closed = true;
            st.send.clear();
            st.send_len = 0;
            drop(st);
            c.pipe.notify();
        }
        // Readable/Writable are handled by pump, which runs after events.
        _ => {}
    }
    if let Role::Listener { accepted } = role
        && !c.greeted
        && c.stream.is_some()
    {
        read_hello(c, ch, accepted, cmd_tx, now);
    }
}

fn open_dialer_stream(
    c: &mut Conn,
    ch: ConnectionHandle,
    connected: &mut Option<Sender<Result<Stream, String>>>,
    cmd_tx: &Sender<DriverCmd>,
    now: Instant,
) {
    let Some(tx) = connected.take() else {
        return;
    };
    let Some(id) = c.conn.streams().open(Dir::Bi) else {
        let _ = tx.send(Err("peer allows no streams".into()));
        close(&mut c.conn, now, CLOSE_NORMAL, "normal close");
        return;
    };
    if let Err(e) = c.conn.send_stream(id).write(&[HELLO]) {
        let _ = tx.send(Err(format!("cannot write stream hello: {e}")));
        return;
    }
    c.stream = Some(id);
    c.greeted = true;
    let stream = Stream::new(c.pipe.clone(), ch, cmd_tx.clone(), c.peer.clone());
    if tx.send(Ok(stream)).is_err() {
        // The dialer gave up waiting; the Stream's drop released it.
        c.released = true;
    }
}

/// Listener side: the first byte must be the hello; then the stream is
/// handed to `accept`.
fn read_hello(
    c: &mut Conn,
    ch: ConnectionHandle,
    accepted: &Sender<Stream>,
    cmd_tx: &Sender<DriverCmd>,
    now: Instant,
) {
    let Some(id) = c.stream else {
        return;
    };
    let mut recv = c.conn.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return;
    };
    let first = chunks.next(1);
    let _ = chunks.finalize();
    let byte = match first {
        Ok(Some(chunk)) => chunk.bytes.first().copied(),
        Err(ReadError::Blocked) => return,
        Ok(None) | Err(_) => None,
    };
    c.accept_deadline = None;
    if byte != Some(HELLO) {
        close(&mut c.conn, now, CLOSE_BAD_HELLO, "Read Data Error");
        return;
    }
    c.greeted = true;
    let stream = Stream::new(c.pipe.clone(), ch, cmd_tx.clone(), c.peer.clone());
    if accepted.send(stream).is_err() {
        close(&mut c.conn, now, CLOSE_BAD_HELLO, "Listener Closed");
    }
}

/// Moves bytes between the pipe and the QUIC stream, both ways.
fn pump(c: &mut Conn, now: Instant) {
    let Some(id) = c.stream.filter(|_| c.greeted) else {
        return;
    };
    let pipe = c.pipe.clone();
    let mut st = pipe.lock();
    st.wake_queued = false;
    let mut changed = false;
    let writable = !st.write_closed;
    while let Some(front) = st.send.front_mut().filter(|_| writable) {
        match c.conn.send_stream(id).write(front) {
            Ok(n) => {
                front.advance(n);
                if front.is_empty() {
                    st.send.pop_front();
                }
                st.send_len -= n;
                changed = true;
            }
            Err(WriteError::Blocked) => break,
            Err(e) => {
                st.error
                    .get_or_insert((ErrorKind::BrokenPipe, e.to_string()));
                st.send.clear();
                st.send_len = 0;
                changed = true;
                break;
            }
        }
    }
    if st.send.is_empty() && st.send_fin && !c.fin_sent {
        c.fin_sent = true;
        if c.conn.send_stream(id).finish().is_err() && c.released {
            close(&mut c.conn, now, CLOSE_NORMAL, "normal close");
        }
    }
    if c.released {
        // Nobody will read: stop the peer sending, drop what came.
        if !st.recv_fin {
            let _ = c.conn.recv_stream(id).stop(VarInt::from_u32(STOP_READING));
            st.recv_fin = true;
        }
        st.recv.clear();
        st.recv_len = 0;
    } else {
        changed |= fill_recv(c, id, &mut st);
    }
    drop(st);
    if changed {
        pipe.notify();
    }
}

fn fill_recv(c: &mut Conn, id: StreamId, st: &mut super::pipe::PipeState) -> bool {
    if st.recv_fin || st.error.is_some() {
        return false;
    }
    if st.recv_len >= PIPE_CAPACITY {
        st.reader_must_wake = true;
        return false;
    }
    let mut recv = c.conn.recv_stream(id);
    let Ok(mut chunks) = recv.read(true) else {
        return false;
    };
    let mut changed = false;
    while st.recv_len < PIPE_CAPACITY {
        match chunks.next(PIPE_CAPACITY - st.recv_len) {
            Ok(Some(chunk)) => {
                st.recv_len += chunk.bytes.len();
                st.recv.push_back(chunk.bytes);
                changed = true;
            }
            Ok(None) => {
                st.recv_fin = true;
                changed = true;
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(code)) => {
                st.error = Some((
                    ErrorKind::ConnectionReset,
                    format!("stream reset by peer (code {code})"),
                ));
                changed = true;
                break;
            }
        }
    }
    if st.recv_len >= PIPE_CAPACITY {
        st.reader_must_wake = true;
    }
    let _ = chunks.finalize();
    changed
}

/// Moves all received stream data into the pipe, past its usual limit,
/// so a peer's close never loses bytes we already acknowledged.
fn drain_on_close(c: &mut Conn) {
    let pipe = c.pipe.clone();
    let mut st = pipe.lock();
    if let Some(id) = c.stream
        && let Ok(mut chunks) = c.conn.recv_stream(id).read(true)
    {
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            st.recv_len += chunk.bytes.len();
            st.recv.push_back(chunk.bytes);
        }
        let _ = chunks.finalize();
    }
    st.recv_fin = true;
}

/// Error kind and text for a lost connection. A peer's normal close reads
/// as end of stream, as it does from a Go peer.
fn describe(reason: &ConnectionError) -> (ErrorKind, String) {
    match reason {
        ConnectionError::ApplicationClosed(a) if a.error_code == VarInt::from_u32(CLOSE_NORMAL) => {
            (ErrorKind::UnexpectedEof, "connection closed by peer".into())
        }
        ConnectionError::TimedOut => (
            ErrorKind::TimedOut,
            "timeout: no recent network activity".into(),
        ),
        ConnectionError::LocallyClosed => {
            (ErrorKind::ConnectionAborted, "connection closed".into())
        }
        other => (ErrorKind::ConnectionAborted, other.to_string()),
    }
}
