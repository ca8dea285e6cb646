//! One stream connection, sans-IO: a QUIC connection carrying one
//! bidirectional stream (docs/wire.md §11.5) or, when both ends are ours
//! and agreed on [`tls::ALPN_STREAMS`], many; each stream is joined to the
//! pipe its [`Stream`] handles share. Time comes in as `now`; packets go
//! out through [`Conn::poll_transmit`].

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use crossbeam_channel::Sender;
use log::debug;
use quinn_proto::crypto::rustls::HandshakeData;
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, Dir, Event, ReadError, StreamEvent, StreamId,
    VarInt, WriteError,
};

use super::error::DialError;
use super::pipe::{DriverCmd, PIPE_CAPACITY, Pipe, PipeState, Stream, StreamAt};
use super::tls;

/// How long a listener waits for a new connection's first stream.
pub(super) const ACCEPT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a dialer keeps a many-stream connection that has no stream
/// left, for the next dial to the same service.
pub(super) const LINGER: Duration = Duration::from_secs(5);
/// The byte a dialer writes first so the listener's accept fires.
const HELLO: u8 = 0;
/// Application close codes (docs/wire.md §11.5).
const CLOSE_NORMAL: u32 = 0;
const CLOSE_BAD_HELLO: u32 = 500;
const STOP_READING: u32 = 499;

/// Who receives the streams an endpoint sets up.
pub(super) enum Role {
    Listener {
        accepted: Sender<Stream>,
    },
    Dialer {
        /// Taken once the dial has an answer.
        connected: Option<Sender<Result<Stream, DialError>>>,
    },
}

/// The role plus what every handed-out [`Stream`] needs to reach its
/// endpoint again.
pub(super) struct Owner {
    pub role: Role,
    pub cmds: Sender<DriverCmd>,
    /// Cleared when the listener handle is dropped: accept nothing new.
    pub accepting: bool,
}

impl Owner {
    /// Answers a waiting dial with an error; false if none was waiting.
    pub fn fail_dial(&mut self, e: DialError) -> bool {
        match &mut self.role {
            Role::Dialer { connected } => connected.take().map(|tx| tx.send(Err(e))).is_some(),
            Role::Listener { .. } => false,
        }
    }

    /// The handle of `slot`, a stream of connection `ch` to `peer`.
    fn stream(
        &self,
        ch: ConnectionHandle,
        slot: &Slot,
        many: bool,
        peer: &(String, String),
    ) -> Stream {
        let at = StreamAt {
            conn: ch,
            id: slot.id,
            many,
        };
        Stream::new(slot.pipe.clone(), at, self.cmds.clone(), peer.clone())
    }
}

/// One stream of a connection.
struct Slot {
    id: StreamId,
    pipe: Arc<Pipe>,
    /// The hello has been written (dialer) or read (listener) and the
    /// stream handed out.
    greeted: bool,
    fin_sent: bool,
    /// Our sending is over: the peer has everything, FIN included, or
    /// stopped it.
    send_over: bool,
    /// The last handle is gone.
    released: bool,
    /// Its handle waits idle in a pool (dialer side).
    parked: bool,
}

impl Slot {
    fn new(id: StreamId, greeted: bool) -> Slot {
        Slot {
            id,
            pipe: Arc::new(Pipe::default()),
            greeted,
            fin_sent: false,
            send_over: false,
            released: false,
            parked: false,
        }
    }
}

/// Finding and dropping streams by ID.
trait SlotList {
    fn find_mut(&mut self, id: StreamId) -> Option<&mut Slot>;
    fn forget(&mut self, id: StreamId);
}

impl SlotList for Vec<Slot> {
    fn find_mut(&mut self, id: StreamId) -> Option<&mut Slot> {
        self.iter_mut().find(|s| s.id == id)
    }

    fn forget(&mut self, id: StreamId) {
        self.retain(|s| s.id != id);
    }
}

pub(super) struct Conn {
    conn: Connection,
    peer: (String, String),
    /// Few at a time (the peer may open 100), so a list will do.
    slots: Vec<Slot>,
    /// Whether the handshake agreed on many streams, once it is known.
    many: Option<bool>,
    /// When the first stream must be set up: the listener's accept-stream
    /// timeout, or the dial timeout.
    setup_deadline: Option<Instant>,
    /// A dialer with no stream in use (none left on a many-stream
    /// connection, or all parked) closes then.
    linger_deadline: Option<Instant>,
}

impl Conn {
    pub fn new(conn: Connection, peer: (String, String), setup_deadline: Instant) -> Self {
        Conn {
            conn,
            peer,
            slots: Vec::new(),
            many: None,
            setup_deadline: Some(setup_deadline),
            linger_deadline: None,
        }
    }

    pub fn peer(&self) -> &(String, String) {
        &self.peer
    }

    pub fn quic(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    pub fn is_drained(&self) -> bool {
        self.conn.is_drained()
    }

    /// Whether this connection carries many streams; false until the
    /// handshake has picked its protocol.
    fn many(&mut self) -> bool {
        if self.many.is_none() {
            self.many = self
                .conn
                .crypto_session()
                .handshake_data()
                .and_then(|d| d.downcast::<HandshakeData>().ok())
                .map(|d| tls::carries_many_streams(d.protocol.as_deref()));
        }
        self.many == Some(true)
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.conn.poll_timeout(),
            self.setup_deadline,
            self.linger_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the timers due at `now`; true if any did.
    pub fn handle_timeout(&mut self, now: Instant, owner: &mut Owner) -> bool {
        let mut fired = false;
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            fired = true;
        }
        if self.setup_deadline.is_some_and(|t| t <= now) {
            self.setup_deadline = None;
            self.setup_timed_out(owner, now);
            fired = true;
        }
        if self.linger_deadline.is_some_and(|t| t <= now) {
            self.linger_deadline = None;
            if self.slots.iter().all(|s| s.parked) {
                close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            }
            fired = true;
        }
        fired
    }

    fn setup_timed_out(&mut self, owner: &mut Owner, now: Instant) {
        match owner.role {
            Role::Listener { .. } => {
                close(&mut self.conn, now, CLOSE_BAD_HELLO, "Accept Timeout");
            }
            // The dialer is told, and nobody is left to use the connection.
            Role::Dialer { .. } => {
                if owner.fail_dial(DialError::Timeout) {
                    close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
                }
            }
        }
    }

    /// The last handle of stream `id` is gone: flush, finish, then close
    /// (the connection, or only the stream if it carries many).
    pub fn release(&mut self, id: StreamId) {
        if let Some(slot) = self.slots.find_mut(id) {
            slot.released = true;
            slot.pipe.lock().send_fin = true;
        }
    }

    /// The mesh says the peer cannot be reached: give up at once.
    pub fn abort(&mut self, kind: ErrorKind, why: &str, now: Instant) {
        self.fail(kind, why);
        close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
        self.setup_deadline = None;
    }

    /// Fails every pipe, so blocked handles return `why`.
    pub fn fail(&self, kind: ErrorKind, why: &str) {
        for slot in &self.slots {
            slot.pipe.fail(kind, why.into());
        }
    }

    /// The listener handle is gone: a many-stream connection with no
    /// stream left has nothing more to serve.
    pub fn stop_if_idle(&mut self, now: Instant) {
        if self.slots.is_empty() && self.many() {
            close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
        }
    }

    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        self.conn.poll_transmit(now, 1, buf).map(|t| t.size)
    }

    pub fn on_event(&mut self, ch: ConnectionHandle, ev: Event, owner: &mut Owner, now: Instant) {
        match ev {
            Event::Connected => {
                // Learnt here, before any stream: `Owner::stream` reads the
                // field when it makes the first stream's handle.
                let many = self.many();
                if many {
                    // The window the handshake set is for one stream.
                    let window = VarInt::from_u32(tls::SHARED_CONNECTION_WINDOW);
                    self.conn.set_receive_window(window);
                }
                self.log_connected(owner, many);
                if let Role::Dialer { .. } = owner.role {
                    self.open_dialer_stream(ch, owner, now);
                }
            }
            Event::ConnectionLost { reason } => self.on_lost(reason, owner),
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi })
                if matches!(owner.role, Role::Listener { .. }) =>
            {
                self.accept_streams();
            }
            Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(slot) = self.slots.find_mut(id) {
                    slot.send_over = true;
                    if slot.released {
                        self.end_stream(id, owner, now);
                    }
                }
            }
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                self.on_stopped(id, error_code, owner, now)
            }
            // Readable/Writable are handled by pump, which runs after events.
            _ => {}
        }
        if let Role::Listener { accepted } = &owner.role {
            self.read_hellos(ch, accepted, owner, now);
        }
    }

    /// One debug line per connection, saying how many streams it may carry.
    fn log_connected(&self, owner: &Owner, many: bool) {
        let carries = if many { "many streams" } else { "one stream" };
        let way = match owner.role {
            Role::Listener { .. } => "from",
            Role::Dialer { .. } => "to",
        };
        let (node, service) = &self.peer;
        debug!("Stream connection {way} {node}:{service} carries {carries}");
    }

    /// Takes the streams the peer opened: all of them on a many-stream
    /// connection, else only the first, as Go does.
    fn accept_streams(&mut self) {
        while self.slots.is_empty() || self.many() {
            let Some(id) = self.conn.streams().accept(Dir::Bi) else {
                return;
            };
            self.slots.push(Slot::new(id, false));
        }
    }

    /// Stream `id` is done with after its release: the connection closes,
    /// unless it carries many streams and so only forgets this one.
    fn end_stream(&mut self, id: StreamId, owner: &Owner, now: Instant) {
        if !self.many() {
            close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            return;
        }
        self.slots.forget(id);
        if !self.slots.is_empty() {
            return;
        }
        match owner.role {
            Role::Dialer { .. } => self.linger_deadline = Some(now + LINGER),
            Role::Listener { .. } if !owner.accepting => self.stop_if_idle(now),
            Role::Listener { .. } => {}
        }
    }

    /// Stream `id`'s handle waits idle in a pool, or is in use again;
    /// [`Conn::pump`] starts the linger once none is in use.
    pub fn park(&mut self, id: StreamId, parked: bool) {
        if let Some(slot) = self.slots.find_mut(id) {
            slot.parked = parked;
        }
        if !parked {
            self.linger_deadline = None;
        }
    }

    /// Refuses one stream of a many-stream connection, keeping the others.
    fn refuse_stream(&mut self, id: StreamId) {
        let code = VarInt::from_u32(CLOSE_BAD_HELLO);
        let _ = self.conn.recv_stream(id).stop(code);
        let _ = self.conn.send_stream(id).reset(code);
        self.slots.forget(id);
    }

    fn on_lost(&mut self, reason: ConnectionError, owner: &mut Owner) {
        let (kind, text) = describe(&reason);
        if kind == ErrorKind::UnexpectedEof {
            // A normal close ends the streams like a FIN would, after
            // everything that arrived before it.
            self.drain_on_close();
        }
        self.fail(kind, &text);
        owner.fail_dial(DialError::Handshake(reason));
    }

    /// The peer stopped reading stream `id`. Only our sending ends; what
    /// the peer sent can still be read.
    fn on_stopped(&mut self, id: StreamId, code: VarInt, owner: &Owner, now: Instant) {
        // Answered with a reset (RFC 9000 §3.5), which quinn leaves to us:
        // until then the stream's state stays on both ends, and on a
        // shared connection each such stream keeps one of the peer's
        // stream credits for good (they ran out after ~1,500 units).
        let _ = self.conn.send_stream(id).reset(code);
        let Some(slot) = self.slots.find_mut(id) else {
            return;
        };
        slot.send_over = true;
        let mut st = slot.pipe.lock();
        st.write_closed = true;
        st.send.clear();
        st.send_len = 0;
        slot.pipe.unlock_and_notify(st);
        if slot.released {
            self.end_stream(id, owner, now);
        }
    }

    fn open_dialer_stream(&mut self, ch: ConnectionHandle, owner: &mut Owner, now: Instant) {
        let Role::Dialer { connected } = &mut owner.role else {
            return;
        };
        let Some(tx) = connected.take() else {
            return;
        };
        self.setup_deadline = None;
        match self.open_stream(ch, owner) {
            // If the dialer gave up waiting, the Stream's drop releases it.
            Ok(s) => drop(tx.send(Ok(s))),
            Err(e) => {
                let _ = tx.send(Err(e));
                close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            }
        }
    }

    /// Dialer side: one more stream, its hello written.
    fn open_stream(&mut self, ch: ConnectionHandle, owner: &Owner) -> Result<Stream, DialError> {
        let id = self
            .conn
            .streams()
            .open(Dir::Bi)
            .ok_or(DialError::NoStreams)?;
        if let Err(e) = self.conn.send_stream(id).write(&[HELLO]) {
            // On a shared connection the other streams may hold all of its
            // flow-control credit: give this one up on both ends, so it
            // takes no slot there and no stream from the peer's limit.
            let code = VarInt::from_u32(STOP_READING);
            let _ = self.conn.recv_stream(id).stop(code);
            let _ = self.conn.send_stream(id).reset(code);
            return Err(DialError::Hello(e));
        }
        let slot = Slot::new(id, true);
        let stream = owner.stream(ch, &slot, self.many == Some(true), &self.peer);
        self.slots.push(slot);
        self.linger_deadline = None;
        Ok(stream)
    }

    /// Dialer side: another stream on a many-stream connection that is
    /// still up.
    pub fn open_more(&mut self, ch: ConnectionHandle, owner: &Owner) -> Result<Stream, DialError> {
        // Only the dialer opens streams: ours never accept one a listener
        // would open.
        let dialer = matches!(owner.role, Role::Dialer { .. });
        if !dialer || self.conn.is_closed() || !self.many() {
            return Err(DialError::Closed);
        }
        // The first stream's open cannot fail so: the peer's limit is
        // reached only by the streams beside it.
        let stream = self.open_stream(ch, owner).map_err(|e| match e {
            DialError::NoStreams => DialError::Full,
            e => e,
        })?;
        if let Some(slot) = self.slots.last() {
            slot.pipe.lock().hello_unsent = true;
        }
        Ok(stream)
    }

    /// Listener side: the first byte of each new stream must be the hello;
    /// then the stream is handed to `accept`.
    fn read_hellos(
        &mut self,
        ch: ConnectionHandle,
        accepted: &Sender<Stream>,
        owner: &Owner,
        now: Instant,
    ) {
        let waiting: Vec<StreamId> = (self.slots.iter())
            .filter(|s| !s.greeted)
            .map(|s| s.id)
            .collect();
        for id in waiting {
            let Some(hello_ok) = self.read_hello(id) else {
                continue;
            };
            self.setup_deadline = None;
            // Our own dialers always say hello: a peer that does not is
            // broken, whatever else it carries.
            if !hello_ok {
                close(&mut self.conn, now, CLOSE_BAD_HELLO, "Read Data Error");
                return;
            }
            let many = self.many == Some(true);
            let Some(slot) = self.slots.find_mut(id) else {
                continue;
            };
            slot.greeted = true;
            let stream = owner.stream(ch, slot, many, &self.peer);
            if accepted.send(stream).is_err() {
                // The streams accepted before are still being served.
                match self.many() {
                    true => {
                        self.refuse_stream(id);
                        // The listener is gone: once the served ones end
                        // (or now, if none is left) the connection goes.
                        self.stop_if_idle(now);
                    }
                    false => close(&mut self.conn, now, CLOSE_BAD_HELLO, "Listener Closed"),
                }
            }
        }
    }

    /// Whether stream `id` began with the hello; `None` while its first
    /// byte has not arrived.
    fn read_hello(&mut self, id: StreamId) -> Option<bool> {
        let mut recv = self.conn.recv_stream(id);
        let mut chunks = recv.read(true).ok()?;
        let first = chunks.next(1);
        let _ = chunks.finalize();
        match first {
            Ok(Some(chunk)) => Some(chunk.bytes.first() == Some(&HELLO)),
            Err(ReadError::Blocked) => None,
            Ok(None) | Err(_) => Some(false),
        }
    }

    /// Moves bytes between the pipes and their QUIC streams, both ways.
    pub fn pump(&mut self, now: Instant, owner: &Owner) {
        let mut ended = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| s.greeted) {
            if pump_stream(&mut self.conn, slot) {
                ended.push(slot.id);
            }
        }
        // A stream whose sending was over before its release (a
        // half-closed request, or one the peer stopped) is done with once
        // released: no Finished event is left to say so.
        let done = self.slots.iter().filter(|s| s.released && s.send_over);
        ended.extend(done.map(|s| s.id));
        ended.sort_unstable();
        ended.dedup();
        for id in ended {
            self.end_stream(id, owner, now);
        }
        // A dialer whose streams all wait in a pool lingers as one with
        // none left does: a parked stream is not a use.
        let dialer = matches!(owner.role, Role::Dialer { .. });
        let all_parked = !self.slots.is_empty() && self.slots.iter().all(|s| s.parked);
        if dialer && all_parked && self.linger_deadline.is_none() {
            self.linger_deadline = Some(now + LINGER);
        }
    }

    /// Moves all received stream data into the pipes, past their usual
    /// limit, so a peer's close never loses bytes we already acknowledged.
    fn drain_on_close(&mut self) {
        for slot in &self.slots {
            let mut st = slot.pipe.lock();
            if let Ok(mut chunks) = self.conn.recv_stream(slot.id).read(true) {
                while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                    st.recv_len += chunk.bytes.len();
                    st.recv.push_back(chunk.bytes);
                }
                let _ = chunks.finalize();
            }
            st.recv_fin = true;
        }
    }
}

/// Pumps one stream; true if it was released and can no longer finish.
fn pump_stream(conn: &mut Connection, slot: &mut Slot) -> bool {
    let id = slot.id;
    let pipe = slot.pipe.clone();
    let mut st = pipe.lock();
    st.wake_queued = false;
    let mut changed = fill_send(conn, id, &mut st);
    let mut ended = false;
    if st.send.is_empty() && st.send_fin && !slot.fin_sent {
        slot.fin_sent = true;
        ended = conn.send_stream(id).finish().is_err() && slot.released;
    }
    if slot.released {
        discard_recv(conn, id, &mut st);
    } else {
        changed |= fill_recv(conn, id, &mut st);
    }
    if changed {
        pipe.unlock_and_notify(st);
    }
    ended
}

/// Writes what the handles buffered into the QUIC stream, as far as flow
/// control allows.
fn fill_send(conn: &mut Connection, id: StreamId, st: &mut PipeState) -> bool {
    let mut changed = false;
    let writable = !st.write_closed;
    while let Some(front) = st.send.front_mut().filter(|_| writable) {
        match conn.send_stream(id).write(front) {
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
    changed
}

/// Nobody will read: stop the peer sending, drop what came.
fn discard_recv(conn: &mut Connection, id: StreamId, st: &mut PipeState) {
    if !st.recv_fin {
        let _ = conn.recv_stream(id).stop(VarInt::from_u32(STOP_READING));
        st.recv_fin = true;
    }
    st.recv.clear();
    st.recv_len = 0;
}

/// Reads from the QUIC stream into the pipe, up to its capacity; past
/// that, flow control pushes back on the peer.
fn fill_recv(conn: &mut Connection, id: StreamId, st: &mut PipeState) -> bool {
    if st.recv_fin || st.error.is_some() {
        return false;
    }
    if st.recv_len >= PIPE_CAPACITY {
        st.reader_must_wake = true;
        return false;
    }
    let mut recv = conn.recv_stream(id);
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

fn close(conn: &mut Connection, now: Instant, code: u32, reason: &str) {
    conn.close(
        now,
        VarInt::from_u32(code),
        Bytes::copy_from_slice(reason.as_bytes()),
    );
}

/// Error kind and text for a lost connection. A peer's normal close reads
/// as end of stream, as it does from a Go peer.
pub(super) fn describe(reason: &ConnectionError) -> (ErrorKind, String) {
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
