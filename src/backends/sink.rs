//! A connection's outgoing side as the router sees it. The router gathers
//! the frames of one batch of work and hands them over together: when
//! nothing is queued they go straight to the socket without blocking,
//! saving a thread hand-off; otherwise they queue for the connection's
//! writer thread, which writes them in large batches.

use std::io::{ErrorKind, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Queued bytes beyond which new messages are dropped: mesh data is
/// datagrams (QUIC recovers the loss), and memory per peer stays bounded.
const QUEUE_LIMIT: usize = 8 * 1024 * 1024;

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
}

pub struct FrameSink {
    state: Mutex<State>,
    ready: Condvar,
    /// The socket, for direct non-blocking sends; `None` queues everything.
    fd: Option<RawFd>,
    /// Bytes in `queue`, readable without the lock.
    queued: AtomicUsize,
}

impl FrameSink {
    pub fn new(fd: Option<RawFd>) -> FrameSink {
        FrameSink {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            fd,
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `extra` more bytes would exceed what may wait here; the
    /// caller then drops a whole message rather than queue it.
    pub fn would_congest(&self, extra: usize) -> bool {
        self.queued.load(Ordering::Relaxed) + extra > QUEUE_LIMIT
    }

    /// Sends whole frames (length prefixes included), in order.
    pub fn send(&self, frames: &[u8]) -> Result<(), SinkError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SinkError::Closed);
        }
        let mut sent = 0;
        if st.queue.is_empty()
            && !st.busy
            && let Some(fd) = self.fd
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
        self.queued.store(st.queue.len(), Ordering::Relaxed);
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// No more messages: the writer flushes what is queued, then stops.
    pub fn close(&self) {
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
                while st.queue.is_empty() && !st.closed {
                    st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.queue.is_empty() {
                    return Ok(());
                }
                st.busy = true;
                // Swap buffers rather than copy: the queue keeps the
                // batch's old capacity for what comes next.
                batch.clear();
                std::mem::swap(&mut batch, &mut st.queue);
                self.queued.store(0, Ordering::Relaxed);
            }
            if let Err(e) = out.write_all(&batch).and_then(|()| out.flush()) {
                self.lock().closed = true;
                return Err(e);
            }
        }
    }
}

/// One non-blocking send; the bytes sent, or `Err` when the socket is
/// unusable.
fn send_now(fd: RawFd, data: &[u8]) -> Result<usize, ()> {
    // SAFETY: send only reads `data` during the call.
    let n = unsafe {
        libc::send(
            fd,
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
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    #[test]
    fn direct_and_queued_sends_keep_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let sink = Arc::new(FrameSink::new(Some(a.as_raw_fd())));
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
        for m in &msgs {
            let mut framed = Vec::new();
            crate::netceptor::codec::write_frame(&mut framed, m).unwrap();
            sink.send(&framed).unwrap();
        }
        sink.close();
        writer.join().unwrap().unwrap();
        drop(a);
        let all = reader.join().unwrap();
        let mut frames = crate::netceptor::codec::FrameReader::default();
        frames.push(&all);
        let got: Vec<Vec<u8>> = std::iter::from_fn(|| frames.next_frame()).collect();
        assert_eq!(got, msgs);
        assert_eq!(sink.send(b"x"), Err(SinkError::Closed));
    }
}
