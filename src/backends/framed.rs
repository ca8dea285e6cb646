//! The [`Link`] of a byte-stream backend (TCP, and TLS over it): each
//! message goes out with a 2-byte length prefix. The router queues the
//! frames of one batch of work and flushes them together: when nothing is
//! waiting they go straight to the socket without blocking, saving a
//! thread hand-off; otherwise they queue for the connection's writer
//! thread, which writes them in large batches.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::netceptor::codec;
use crate::netceptor::link::{Link, LinkError};

/// Queued bytes beyond which new messages are dropped: mesh data is
/// datagrams (QUIC recovers the loss), and memory per peer stays bounded.
const QUEUE_LIMIT: usize = 8 * 1024 * 1024;
/// Queued bytes of all links together beyond which a link may hold only
/// [`LINK_FLOOR`]: hundreds of peers that never read cannot make the node
/// hold gigabytes, and links that drain keep working.
const TOTAL_LIMIT: usize = 64 * 1024 * 1024;
/// What any link may queue, however full the others are.
const LINK_FLOOR: usize = 256 * 1024;

/// Bytes queued in every sink of the process.
static TOTAL_QUEUED: AtomicUsize = AtomicUsize::new(0);

/// The connection is closed: nothing more can be sent.
#[derive(Debug, PartialEq, Eq)]
pub enum SinkError {
    Closed,
}

#[derive(Default)]
struct State {
    queue: Vec<u8>,
    /// The writer thread is writing bytes it took from the queue.
    busy: bool,
    closed: bool,
    /// The writer must call its output even with nothing queued (a TLS
    /// layer has records of its own to send).
    nudged: bool,
}

/// What the router's link and the writer thread share.
pub struct FrameSink {
    state: Mutex<State>,
    ready: Condvar,
    /// The sink's own descriptor of the socket, for direct non-blocking
    /// sends; `None` queues everything (e.g. when a TLS layer must see
    /// every byte). Owned, so it stays valid however the session ends.
    direct: Option<OwnedFd>,
    /// Bytes in `queue`, readable without the lock.
    queued: AtomicUsize,
}

impl FrameSink {
    pub fn new(direct: Option<OwnedFd>) -> FrameSink {
        FrameSink {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            direct,
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `extra` more bytes would exceed what may wait here; the
    /// caller then drops a whole message rather than queue it.
    fn would_congest(&self, extra: usize) -> bool {
        let mine = self.queued.load(Ordering::Relaxed);
        congested(mine, extra, TOTAL_QUEUED.load(Ordering::Relaxed))
    }

    /// Sends whole frames (length prefixes included), in order.
    pub(crate) fn send(&self, frames: &[u8]) -> Result<(), SinkError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SinkError::Closed);
        }
        let mut sent = 0;
        if st.queue.is_empty()
            && !st.busy
            && let Some(fd) = &self.direct
        {
            sent = send_now(fd, frames).map_err(|()| {
                st.closed = true;
                SinkError::Closed
            })?;
        }
        if sent == frames.len() {
            return Ok(());
        }
        // A partly sent frame must be finished, so the rest always queues.
        st.queue.extend_from_slice(&frames[sent..]);
        TOTAL_QUEUED.fetch_add(frames.len() - sent, Ordering::Relaxed);
        self.queued.store(st.queue.len(), Ordering::Relaxed);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Wakes the writer to write an empty batch, so an output with bytes
    /// of its own (TLS records the reader side produced) sends them in
    /// order with everything else.
    pub fn nudge(&self) {
        self.lock().nudged = true;
        self.ready.notify_one();
    }

    /// No more messages: the writer flushes what is queued, then stops.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The writer thread's loop; returns when closed and drained or when
    /// the socket fails.
    pub fn run_writer<W: Write>(&self, mut out: W) -> std::io::Result<()> {
        let mut batch = Vec::new();
        loop {
            {
                let mut st = self.lock();
                st.busy = false;
                while st.queue.is_empty() && !st.closed && !st.nudged {
                    st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.queue.is_empty() && !st.nudged {
                    return Ok(());
                }
                st.busy = true;
                st.nudged = false;
                // Swap buffers rather than copy: the queue keeps the
                // batch's old capacity for what comes next.
                batch.clear();
                std::mem::swap(&mut batch, &mut st.queue);
                TOTAL_QUEUED.fetch_sub(batch.len(), Ordering::Relaxed);
                self.queued.store(0, Ordering::Relaxed);
            }
            if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
                self.lock().closed = true;
                return Err(e);
            }
        }
    }
}

impl Drop for FrameSink {
    fn drop(&mut self) {
        let left = self.lock().queue.len();
        TOTAL_QUEUED.fetch_sub(left, Ordering::Relaxed);
    }
}

/// Whether a link holding `mine` bytes may not take `extra` more while all
/// links together hold `total`.
fn congested(mine: usize, extra: usize, total: usize) -> bool {
    let after = mine + extra;
    after > QUEUE_LIMIT || (after > LINK_FLOOR && total + extra > TOTAL_LIMIT)
}

/// The router's end: frames of the current batch, then the shared sink.
pub struct FramedLink {
    sink: Arc<FrameSink>,
    batch: Vec<u8>,
    encode: Encoder,
}

/// Appends one message, framed for the transport, to a batch.
pub type Encoder = fn(&mut Vec<u8>, &[u8]) -> Result<(), LinkError>;

/// TCP's framing: a 2-byte little-endian length, then the message.
fn length_prefixed(out: &mut Vec<u8>, msg: &[u8]) -> Result<(), LinkError> {
    codec::write_frame(out, msg).map_err(|_| LinkError::TooLarge(msg.len()))
}

impl FramedLink {
    /// A link with TCP's length-prefixed framing.
    pub fn new(sink: Arc<FrameSink>) -> FramedLink {
        FramedLink::with_encoder(sink, length_prefixed)
    }

    /// A link whose messages `encode` frames (e.g. as WebSocket messages).
    pub fn with_encoder(sink: Arc<FrameSink>, encode: Encoder) -> FramedLink {
        FramedLink {
            sink,
            batch: Vec::new(),
            encode,
        }
    }
}

impl Link for FramedLink {
    fn queue(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        // A frame header is at most 14 bytes (WebSocket, masked).
        if self.sink.would_congest(self.batch.len() + msg.len() + 14) {
            return Err(LinkError::Congested);
        }
        (self.encode)(&mut self.batch, msg)
    }

    fn backlog(&self) -> usize {
        self.sink.queued.load(Ordering::Relaxed) + self.batch.len()
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        let sent = self.sink.send(&self.batch);
        self.batch.clear();
        sent.map_err(|SinkError::Closed| LinkError::Closed)
    }

    fn close(mut self: Box<Self>) {
        let _ = self.flush();
        self.sink.close();
    }
}

/// One non-blocking send; the bytes sent, or `Err` when the socket is
/// unusable.
fn send_now(fd: &OwnedFd, data: &[u8]) -> Result<usize, ()> {
    // SAFETY: `fd` is open for as long as the borrow lasts, and send only
    // reads `data` during the call.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    match std::io::Error::last_os_error().kind() {
        ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(0),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn direct_and_queued_sends_keep_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let direct = OwnedFd::from(a.try_clone().unwrap());
        let sink = Arc::new(FrameSink::new(Some(direct)));
        let writer = {
            let (sink, a) = (sink.clone(), a.try_clone().unwrap());
            std::thread::spawn(move || sink.run_writer(a))
        };
        // Enough data to fill the socket buffer and force queueing.
        let msgs: Vec<Vec<u8>> = (0..2000u32).map(|i| vec![(i % 251) as u8; 1000]).collect();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            b.read_to_end(&mut all).unwrap();
            all
        });
        let mut link = Box::new(FramedLink::new(sink.clone()));
        for batch in msgs.chunks(7) {
            for m in batch {
                link.queue(m).unwrap();
            }
            link.flush().unwrap();
        }
        link.close();
        writer.join().unwrap().unwrap();
        assert_eq!(sink.send(b"x"), Err(SinkError::Closed));
        // The reader sees the end once every descriptor is closed.
        drop((sink, a));
        let all = reader.join().unwrap();
        let mut frames = crate::netceptor::codec::FrameReader::default();
        frames.push(&all);
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| frames.next_frame()).collect();
        assert_eq!(got, msgs);
    }

    #[test]
    fn links_share_a_total_budget_beyond_their_floor() {
        // Alone, a link may queue up to its own limit.
        assert!(!congested(QUEUE_LIMIT - 10, 10, QUEUE_LIMIT - 10));
        assert!(congested(QUEUE_LIMIT, 1, QUEUE_LIMIT));
        // When all links together are full, each may still hold its floor
        // (so links that drain keep working) but no more.
        assert!(!congested(0, 1000, TOTAL_LIMIT));
        assert!(!congested(LINK_FLOOR - 1000, 1000, TOTAL_LIMIT));
        assert!(congested(LINK_FLOOR, 1000, TOTAL_LIMIT));
        assert!(!congested(LINK_FLOOR, 1000, TOTAL_LIMIT / 2));
    }

    #[test]
    fn oversized_messages_are_refused_alone() {
        let mut link = FramedLink::new(Arc::new(FrameSink::new(None)));
        assert_eq!(link.queue(&vec![0; 65536]), Err(LinkError::TooLarge(65536)));
        assert_eq!(link.queue(b"ok"), Ok(()));
    }
}
