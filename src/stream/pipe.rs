//! The buffers between a blocking [`Stream`] handle and the endpoint driver
//! thread that owns the QUIC connection.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use crossbeam_channel::Sender;
use quinn_proto::{ConnectionHandle, StreamId};

use super::error::DialError;
use crate::reply::{NoAnswer, Replier, Waiter};

/// Bytes buffered each way before the writer blocks or the driver stops
/// reading (which lets QUIC flow control push back on the peer).
pub(crate) const PIPE_CAPACITY: usize = 1024 * 1024;

/// What the driver learns from stream handles.
#[derive(Debug)]
pub(crate) enum DriverCmd {
    /// A pipe of this connection has something for the driver.
    Wake(ConnectionHandle),
    /// The last handle of this stream is gone: flush and finish it, then
    /// close the connection unless it carries many streams.
    Release(ConnectionHandle, StreamId),
    /// Open one more stream on this many-stream connection.
    Open(ConnectionHandle, Replier<Result<Stream, DialError>>),
    /// This stream waits idle for its next use (true), or is in use
    /// again (false).
    Park(ConnectionHandle, StreamId, bool),
}

#[derive(Default)]
pub(crate) struct PipeState {
    pub recv: VecDeque<Bytes>,
    pub recv_len: usize,
    pub recv_fin: bool,
    pub send: VecDeque<Bytes>,
    pub send_len: usize,
    /// The handle asked for a FIN after what is buffered.
    pub send_fin: bool,
    /// Why the connection is unusable, if it is.
    pub error: Option<(ErrorKind, String)>,
    /// The peer will read no more (it sent STOP_SENDING); reading goes on.
    pub write_closed: bool,
    /// The driver stopped reading because `recv` was full.
    pub reader_must_wake: bool,
    /// A `Wake` is already queued for the driver.
    pub wake_queued: bool,
    /// A stream opened on a shared connection: its hello waits in the
    /// connection for the handle's first write (or read), which sends it
    /// with that write instead of in a packet of its own.
    pub hello_unsent: bool,
    /// Handles blocked in [`Pipe::wait`]: a change wakes them only if
    /// there are any, since a condvar's notify is a syscall either way.
    waiting: usize,
}

#[derive(Default)]
pub(crate) struct Pipe {
    state: Mutex<PipeState>,
    cond: Condvar,
}

impl Pipe {
    pub fn lock(&self) -> MutexGuard<'_, PipeState> {
        // A panic while holding this lock leaves plain buffers behind; the
        // data is still coherent enough to report errors, so carry on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unlocks the state after a change and wakes the handles waiting
    /// for one. Whether any wait is decided under the lock, which a
    /// handle holds from its last look at the state until it waits.
    pub fn unlock_and_notify(&self, st: MutexGuard<'_, PipeState>) {
        let waiting = st.waiting > 0;
        drop(st);
        if waiting {
            self.cond.notify_all();
        }
    }

    /// Waits for a change; false once `deadline` has passed.
    fn wait<'a>(
        &self,
        mut guard: MutexGuard<'a, PipeState>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, PipeState>, bool) {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return (guard, false);
        }
        guard.waiting += 1;
        let mut guard = match left {
            None => self.cond.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(left) => {
                let waited = self.cond.wait_timeout(guard, left);
                waited.unwrap_or_else(|p| p.into_inner()).0
            }
        };
        guard.waiting -= 1;
        (guard, true)
    }

    /// Marks the connection failed and wakes any blocked handle.
    pub fn fail(&self, kind: ErrorKind, message: String) {
        let mut st = self.lock();
        st.error.get_or_insert((kind, message));
        self.unlock_and_notify(st);
    }
}

/// A reliable, ordered byte stream to a service on another node, carried
/// by QUIC over the mesh. Clones share the stream (one thread may read
/// while another writes); the connection is released when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

struct Inner {
    pipe: Arc<Pipe>,
    conn: ConnectionHandle,
    id: StreamId,
    driver: Sender<DriverCmd>,
    /// The connection carries many streams (both ends are ours).
    many: bool,
    peer_node: String,
    peer_service: String,
    read_timeout: Mutex<Option<Duration>>,
    write_timeout: Mutex<Option<Duration>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.driver.send(DriverCmd::Release(self.conn, self.id));
    }
}

/// Opens more streams on the connection of a [`Stream`] that carries
/// many; it stays usable as long as that connection does.
#[derive(Clone)]
pub(crate) struct Opener {
    conn: ConnectionHandle,
    driver: Sender<DriverCmd>,
}

impl Opener {
    /// A new stream; [`DialError::Full`] while the connection carries
    /// all it may, [`DialError::Closed`] once it is gone.
    pub fn open(&self, timeout: Duration) -> Result<Stream, DialError> {
        match self.ask()?.wait(Some(timeout)) {
            Ok(answer) => answer,
            Err(NoAnswer::Timeout) => Err(DialError::Timeout),
            // The driver forgot the connection, or itself ended.
            Err(NoAnswer::Abandoned) => Err(DialError::Closed),
        }
    }

    /// Asks the driver for a new stream; the answer comes to the waiter
    /// returned (which only this thread may wait on), abandoned if the
    /// connection is gone.
    pub fn ask(&self) -> Result<Waiter<Result<Stream, DialError>>, DialError> {
        let (tx, rx) = crate::reply::pair();
        let open = DriverCmd::Open(self.conn, tx);
        self.driver.send(open).map_err(|_| DialError::Closed)?;
        Ok(rx)
    }

    /// Whether `s` runs on this connection.
    pub fn carries(&self, s: &Stream) -> bool {
        s.inner.conn == self.conn && s.inner.driver.same_channel(&self.driver)
    }
}

/// Openers are equal when they open streams on the same connection.
impl PartialEq for Opener {
    fn eq(&self, other: &Opener) -> bool {
        other.conn == self.conn && other.driver.same_channel(&self.driver)
    }
}

/// Where a handed-out stream lives: its connection, the stream in it,
/// and whether that connection carries many streams.
pub(crate) struct StreamAt {
    pub conn: ConnectionHandle,
    pub id: StreamId,
    pub many: bool,
}

impl Stream {
    pub(crate) fn new(
        pipe: Arc<Pipe>,
        at: StreamAt,
        driver: Sender<DriverCmd>,
        peer: (String, String),
    ) -> Stream {
        Stream {
            inner: Arc::new(Inner {
                pipe,
                conn: at.conn,
                id: at.id,
                driver,
                many: at.many,
                peer_node: peer.0,
                peer_service: peer.1,
                read_timeout: Mutex::new(None),
                write_timeout: Mutex::new(None),
            }),
        }
    }

    /// Whether this stream's connection carries many streams: both ends
    /// are ours.
    pub fn carries_many(&self) -> bool {
        self.inner.many
    }

    /// Whether some of the peer's bytes wait here unread.
    pub fn has_input(&self) -> bool {
        self.inner.pipe.lock().recv_len > 0
    }

    /// What opens more streams on this one's connection, if it carries
    /// many.
    pub(crate) fn opener(&self) -> Option<Opener> {
        self.inner.many.then(|| Opener {
            conn: self.inner.conn,
            driver: self.inner.driver.clone(),
        })
    }

    pub fn peer_node(&self) -> &str {
        &self.inner.peer_node
    }

    pub fn peer_service(&self) -> &str {
        &self.inner.peer_service
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) {
        *self
            .inner
            .read_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) {
        *self
            .inner
            .write_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// The peer stopped reading or the connection failed.
    pub fn peer_gone(&self) -> bool {
        let st = self.inner.pipe.lock();
        st.write_closed || st.error.is_some()
    }

    /// Whether the stream waits idle in a pool for its next use: a
    /// dialed connection whose streams all wait closes
    /// [`LINGER`](super::conn::LINGER) after the last one began to, as
    /// one with no stream left does, so kept sessions do not hold it up
    /// for good.
    pub fn park(&self, parked: bool) {
        let park = DriverCmd::Park(self.inner.conn, self.inner.id, parked);
        let _ = self.inner.driver.send(park);
    }

    /// Half-close: the peer reads EOF once what was written arrives;
    /// reading from the peer goes on.
    pub fn shutdown_write(&self) {
        let mut st = self.inner.pipe.lock();
        st.send_fin = true;
        self.wake(&mut st);
    }

    /// Writes `last` and half-closes in one step, so that a short last
    /// write and the FIN leave in one packet, not a packet each (the
    /// driver may send the first before the second is asked for, and its
    /// peer then acknowledges two packets at once). What does not fit the
    /// pipe is written as `write_all` would, then the FIN follows.
    pub fn write_and_shutdown(&self, last: &[u8]) -> io::Result<()> {
        {
            let mut st = self.inner.pipe.lock();
            let usable = st.error.is_none() && !st.send_fin && !st.write_closed;
            if usable && st.send_len + last.len() <= PIPE_CAPACITY {
                if !last.is_empty() {
                    st.send.push_back(Bytes::copy_from_slice(last));
                    st.send_len += last.len();
                }
                st.send_fin = true;
                self.wake(&mut st);
                return Ok(());
            }
        }
        Write::write_all(&mut &*self, last)?;
        self.shutdown_write();
        Ok(())
    }

    fn deadline(t: &Mutex<Option<Duration>>) -> Option<Instant> {
        t.lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|d| Instant::now() + d)
    }

    fn wake(&self, st: &mut PipeState) {
        st.hello_unsent = false;
        if !st.wake_queued {
            st.wake_queued = true;
            let _ = self.inner.driver.send(DriverCmd::Wake(self.inner.conn));
        }
    }

    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Self::deadline(&self.inner.read_timeout);
        let mut st = self.inner.pipe.lock();
        // A reader waits for the peer, which knows of the stream only
        // once its hello went out.
        if st.hello_unsent {
            self.wake(&mut st);
        }
        loop {
            if let Some(front) = st.recv.front_mut() {
                let n = front.len().min(buf.len());
                buf[..n].copy_from_slice(&front[..n]);
                front.advance(n);
                if front.is_empty() {
                    st.recv.pop_front();
                }
                st.recv_len -= n;
                if st.reader_must_wake && st.recv_len <= PIPE_CAPACITY / 2 {
                    st.reader_must_wake = false;
                    self.wake(&mut st);
                }
                return Ok(n);
            }
            if st.recv_fin {
                return Ok(0);
            }
            if let Some((kind, msg)) = &st.error {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            let (g, in_time) = self.inner.pipe.wait(st, deadline);
            st = g;
            if !in_time {
                return Err(io::Error::new(ErrorKind::TimedOut, "read timed out"));
            }
        }
    }

    fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = Self::deadline(&self.inner.write_timeout);
        let mut st = self.inner.pipe.lock();
        loop {
            if let Some((kind, msg)) = &st.error {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if st.send_fin {
                return Err(io::Error::new(
                    ErrorKind::BrokenPipe,
                    "stream was shut down for writing",
                ));
            }
            if st.write_closed {
                return Err(io::Error::new(
                    ErrorKind::BrokenPipe,
                    "peer stopped reading",
                ));
            }
            if st.send_len < PIPE_CAPACITY {
                let n = buf.len().min(PIPE_CAPACITY - st.send_len);
                st.send.push_back(Bytes::copy_from_slice(&buf[..n]));
                st.send_len += n;
                self.wake(&mut st);
                return Ok(n);
            }
            let (g, in_time) = self.inner.pipe.wait(st, deadline);
            st = g;
            if !in_time {
                return Err(io::Error::new(ErrorKind::TimedOut, "write timed out"));
            }
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_some(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stream({}:{})",
            self.inner.peer_node, self.inner.peer_service
        )
    }
}
