//! One stream connection, sans-IO: a QUIC connection carrying exactly one
//! bidirectional stream (docs/wire.md §11.5), joined to the pipe its [`Stream`]
//! handles share. Time comes in as `now`; packets go out through
//! [`Conn::poll_transmit`].

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use crossbeam_channel::Sender;
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, Dir, Event, ReadError, StreamEvent, StreamId,
    VarInt, WriteError,
};

use super::error::DialError;
use super::pipe::{DriverCmd, PIPE_CAPACITY, Pipe, PipeState, Stream};

/// How long a listener waits for a new connection's first stream.
pub(super) const ACCEPT_STREAM_TIMEOUT: Duration = Duration::from_secs(60);
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
}

impl Owner {
    /// Answers a waiting dial with an error; false if none was waiting.
    pub fn fail_dial(&mut self, e: DialError) -> bool {
        match &mut self.role {
            Role::Dialer { connected } => connected.take().map(|tx| tx.send(Err(e))).is_some(),
            Role::Listener { .. } => false,
        }
    }

    fn stream(&self, c: &Conn, ch: ConnectionHandle) -> Stream {
        Stream::new(c.pipe.clone(), ch, self.cmds.clone(), c.peer.clone())
    }
}

pub(super) struct Conn {
    conn: Connection,
    peer: (String, String),
    stream: Option<StreamId>,
    pipe: Arc<Pipe>,
    /// The hello has been written (dialer) or read (listener) and the
    /// stream handed out.
    greeted: bool,
    /// When the stream must be set up: the listener's accept-stream
    /// timeout, or the dial timeout.
    setup_deadline: Option<Instant>,
    fin_sent: bool,
    /// The last handle is gone.
    released: bool,
}

impl Conn {
    pub fn new(conn: Connection, peer: (String, String), setup_deadline: Instant) -> Self {
        Conn {
            conn,
            peer,
            stream: None,
            pipe: Arc::new(Pipe::default()),
            greeted: false,
            setup_deadline: Some(setup_deadline),
            fin_sent: false,
            released: false,
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

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [self.conn.poll_timeout(), self.setup_deadline]
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

    /// The last handle is gone: flush, finish, then close.
    pub fn release(&mut self) {
        self.released = true;
        self.pipe.lock().send_fin = true;
    }

    /// The mesh says the peer cannot be reached: give up at once.
    pub fn abort(&mut self, kind: ErrorKind, why: &str, now: Instant) {
        self.pipe.fail(kind, why.into());
        close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
        self.setup_deadline = None;
    }

    /// Fails the pipe, so blocked handles return `why`.
    pub fn fail(&self, kind: ErrorKind, why: &str) {
        self.pipe.fail(kind, why.into());
    }

    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<usize> {
        self.conn.poll_transmit(now, 1, buf).map(|t| t.size)
    }

    pub fn on_event(&mut self, ch: ConnectionHandle, ev: Event, owner: &mut Owner, now: Instant) {
        match ev {
            Event::Connected => {
                if let Role::Dialer { .. } = owner.role {
                    self.open_dialer_stream(ch, owner, now);
                }
            }
            Event::ConnectionLost { reason } => self.on_lost(reason, owner),
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                if self.stream.is_none()
                    && let Some(id) = self.conn.streams().accept(Dir::Bi)
                {
                    self.stream = Some(id);
                }
            }
            Event::Stream(StreamEvent::Finished { id })
                if Some(id) == self.stream && self.released =>
            {
                close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) if Some(id) == self.stream => {
                self.on_stopped();
            }
            // Readable/Writable are handled by pump, which runs after events.
            _ => {}
        }
        if let Role::Listener { accepted } = &owner.role
            && !self.greeted
            && self.stream.is_some()
        {
            self.read_hello(ch, accepted, owner, now);
        }
    }

    fn on_lost(&mut self, reason: ConnectionError, owner: &mut Owner) {
        let (kind, text) = describe(&reason);
        if kind == ErrorKind::UnexpectedEof {
            // A normal close ends the stream like a FIN would, after
            // everything that arrived before it.
            self.drain_on_close();
        }
        self.pipe.fail(kind, text);
        owner.fail_dial(DialError::Handshake(reason));
    }

    /// The peer stopped reading. Only our sending ends; what the peer sent
    /// can still be read.
    fn on_stopped(&mut self) {
        let mut st = self.pipe.lock();
        st.write_closed = true;
        st.send.clear();
        st.send_len = 0;
        drop(st);
        self.pipe.notify();
    }

    fn open_dialer_stream(&mut self, ch: ConnectionHandle, owner: &mut Owner, now: Instant) {
        let Role::Dialer { connected } = &mut owner.role else {
            return;
        };
        let Some(tx) = connected.take() else {
            return;
        };
        self.setup_deadline = None;
        let Some(id) = self.conn.streams().open(Dir::Bi) else {
            let _ = tx.send(Err(DialError::NoStreams));
            close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            return;
        };
        if let Err(e) = self.conn.send_stream(id).write(&[HELLO]) {
            let _ = tx.send(Err(DialError::Hello(e)));
            return;
        }
        self.stream = Some(id);
        self.greeted = true;
        if tx.send(Ok(owner.stream(self, ch))).is_err() {
            // The dialer gave up waiting; the Stream's drop released it.
            self.released = true;
        }
    }

    /// Listener side: the first byte must be the hello; then the stream is
    /// handed to `accept`.
    fn read_hello(
        &mut self,
        ch: ConnectionHandle,
        accepted: &Sender<Stream>,
        owner: &Owner,
        now: Instant,
    ) {
        let Some(id) = self.stream else {
            return;
        };
        let mut recv = self.conn.recv_stream(id);
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
        self.setup_deadline = None;
        if byte != Some(HELLO) {
            close(&mut self.conn, now, CLOSE_BAD_HELLO, "Read Data Error");
            return;
        }
        self.greeted = true;
        if accepted.send(owner.stream(self, ch)).is_err() {
            close(&mut self.conn, now, CLOSE_BAD_HELLO, "Listener Closed");
        }
    }

    /// Moves bytes between the pipe and the QUIC stream, both ways.
    pub fn pump(&mut self, now: Instant) {
        let Some(id) = self.stream.filter(|_| self.greeted) else {
            return;
        };
        let pipe = self.pipe.clone();
        let mut st = pipe.lock();
        st.wake_queued = false;
        let mut changed = self.fill_send(id, &mut st);
        if st.send.is_empty() && st.send_fin && !self.fin_sent {
            self.fin_sent = true;
            if self.conn.send_stream(id).finish().is_err() && self.released {
                close(&mut self.conn, now, CLOSE_NORMAL, "normal close");
            }
        }
        if self.released {
            self.discard_recv(id, &mut st);
        } else {
            changed |= self.fill_recv(id, &mut st);
        }
        drop(st);
        if changed {
            pipe.notify();
        }
    }

    /// Writes what the handles buffered into the QUIC stream, as far as
    /// flow control allows.
    fn fill_send(&mut self, id: StreamId, st: &mut PipeState) -> bool {
        let mut changed = false;
        let writable = !st.write_closed;
        while let Some(front) = st.send.front_mut().filter(|_| writable) {
            match self.conn.send_stream(id).write(front) {
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
    fn discard_recv(&mut self, id: StreamId, st: &mut PipeState) {
        if !st.recv_fin {
            let _ = self
                .conn
                .recv_stream(id)
                .stop(VarInt::from_u32(STOP_READING));
            st.recv_fin = true;
        }
        st.recv.clear();
        st.recv_len = 0;
    }

    /// Reads from the QUIC stream into the pipe, up to its capacity; past
    /// that, flow control pushes back on the peer.
    fn fill_recv(&mut self, id: StreamId, st: &mut PipeState) -> bool {
        if st.recv_fin || st.error.is_some() {
            return false;
        }
        if st.recv_len >= PIPE_CAPACITY {
            st.reader_must_wake = true;
            return false;
        }
        let mut recv = self.conn.recv_stream(id);
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
    fn drain_on_close(&mut self) {
        let pipe = self.pipe.clone();
        let mut st = pipe.lock();
        if let Some(id) = self.stream
            && let Ok(mut chunks) = self.conn.recv_stream(id).read(true)
        {
            while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                st.recv_len += chunk.bytes.len();
                st.recv.push_back(chunk.bytes);
            }
            let _ = chunks.finalize();
        }
        st.recv_fin = true;
    }
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
