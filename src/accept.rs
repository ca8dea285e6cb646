//! The accept loop of every listening socket (backends, control service,
//! proxies): each connection is served on a thread of its own (one kept
//! from an earlier job when one waits, see `crate::workers`), and accept
//! errors are logged and paced so a lasting one (no descriptors left)
//! cannot spin.
//!
//! The control service's and proxies' accept threads run until the process
//! exits (the daemon's orderly stop is the router's, see `daemon.rs`);
//! backend listeners stop when a reload removes them ([`spawn_until`]).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread::JoinHandle;
use std::time::Duration;

use log::error;

/// How long to wait after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A listening socket.
pub trait Accept: Send + 'static {
    type Conn: Send + 'static;
    fn accept_conn(&self) -> io::Result<Self::Conn>;
}

impl Accept for TcpListener {
    type Conn = TcpStream;
    fn accept_conn(&self) -> io::Result<TcpStream> {
        let (conn, _) = self.accept()?;
        // Every TCP use here is messages or proxied bytes that should
        // leave at once, never bulk data that waits for a full segment.
        let _ = conn.set_nodelay(true);
        Ok(conn)
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    fn accept_conn(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// Starts thread `name` accepting on `listener`; `serve` runs for each
/// connection on a new thread. A failed accept is logged as
/// `<what>: <error>`.
pub fn spawn<A, F>(name: String, listener: A, what: String, serve: F) -> io::Result<JoinHandle<()>>
where
    A: Accept,
    F: Fn(A::Conn) + Clone + Send + 'static,
{
    spawn_until(name, listener, what, || false, serve)
}

/// Like [`spawn`], but the loop ends, closing the listener, at the first
/// accept after `stopped` turns true (so whoever stops it connects once to
/// wake it).
pub fn spawn_until<A, S, F>(
    name: String,
    listener: A,
    what: String,
    stopped: S,
    serve: F,
) -> io::Result<JoinHandle<()>>
where
    A: Accept,
    S: Fn() -> bool + Send + 'static,
    F: Fn(A::Conn) + Clone + Send + 'static,
{
    let gate = |_: &mut A::Conn| Some(());
    let serve = move |conn, ()| serve(conn);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || accept_loop(&listener, &what, stopped, gate, serve))
}

/// Like [`spawn`], but `gate` first decides on the accept thread whether
/// a connection is served at all: `Some(permit)` serves it on a new thread
/// with the permit, `None` drops it (the gate has told the client why), so
/// refused clients cost no thread.
pub fn spawn_gated<A, G, P, F>(
    name: String,
    listener: A,
    what: String,
    gate: G,
    serve: F,
) -> io::Result<JoinHandle<()>>
where
    A: Accept,
    G: FnMut(&mut A::Conn) -> Option<P> + Send + 'static,
    P: Send + 'static,
    F: Fn(A::Conn, P) + Clone + Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .spawn(move || accept_loop(&listener, &what, || false, gate, serve))
}

fn accept_loop<A, S, G, P, F>(listener: &A, what: &str, stopped: S, mut gate: G, serve: F)
where
    A: Accept,
    S: Fn() -> bool,
    G: FnMut(&mut A::Conn) -> Option<P>,
    P: Send + 'static,
    F: Fn(A::Conn, P) + Clone + Send + 'static,
{
    loop {
        let accepted = listener.accept_conn();
        if stopped() {
            return;
        }
        match accepted {
            Ok(mut conn) => {
                let Some(permit) = gate(&mut conn) else {
                    continue;
                };
                let serve = serve.clone();
                let started = crate::workers::spawn("conn".into(), move || serve(conn, permit));
                if let Err(e) = started {
                    error!("Cannot start connection thread: {e}");
                }
            }
            Err(e) => {
                error!("{what}: {e}");
                std::thread::sleep(ACCEPT_ERROR_PAUSE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn every_connection_is_served_on_its_own_thread() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serve = |mut s: TcpStream| {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&[b[0] + 1]);
            }
        };
        spawn("test-accept".into(), listener, "accept".into(), serve).unwrap();
        // The first client stays silent; the second is answered anyway.
        let _silent = TcpStream::connect(addr).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[41]).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 42);
    }

    #[test]
    fn a_stopped_loop_closes_its_listener_at_the_next_accept() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stopped = move || flag.load(Ordering::Relaxed);
        let thread = spawn_until("t".into(), listener, "accept".into(), stopped, |_| {}).unwrap();
        stop.store(true, Ordering::Relaxed);
        let _wake = TcpStream::connect(addr).unwrap();
        thread.join().unwrap();
        assert!(TcpStream::connect(addr).is_err(), "nobody listens any more");
    }
}
