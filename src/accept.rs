//! The accept loop of every listening socket (backends, control service,
//! proxies): each connection is served on a thread of its own (one kept
//! from an earlier job when one waits, see `crate::workers`; a control
//! service's on the thread that accepted it, see [`spawn_gated`]), and
//! accept errors are logged and paced so a lasting one (no descriptors
//! left) cannot spin.
//!
//! The control service's and proxies' accept threads run until the process
//! exits (the daemon's orderly stop is the router's, see `daemon.rs`);
//! backend listeners stop when a reload removes them ([`spawn_until`]).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
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
    std::thread::Builder::new()
        .name(name)
        .spawn(move || accept_loop(&listener, &what, stopped, serve))
}

/// Like [`spawn`], but `gate` first decides on the accept thread whether
/// a connection is served at all: `Some(permit)` serves it with the
/// permit, `None` drops it (the gate has told the client why), so refused
/// clients cost no thread.
///
/// An admitted connection is served on the thread that accepted it, once
/// another thread has taken over accepting (leader/follower): a client
/// waits for the greeting as soon as it connects, and the hand-off to a
/// session thread would be on its path every time (twice per remote unit
/// a controller's user submits and then polls). Taking over accepting is
/// off that path: the next client rarely comes before the new leader
/// waits for it.
pub fn spawn_gated<A, G, P, F>(
    name: String,
    listener: A,
    what: String,
    gate: G,
    serve: F,
) -> io::Result<JoinHandle<()>>
where
    A: Accept + Sync,
    G: Fn(&mut A::Conn) -> Option<P> + Send + Sync + 'static,
    P: Send + 'static,
    F: Fn(A::Conn, P) + Send + Sync + 'static,
{
    let leader = Arc::new(Leader {
        name: name.clone(),
        listener,
        what,
        gate,
        serve,
    });
    std::thread::Builder::new()
        .name(name)
        .spawn(move || leader.lead())
}

/// What every leader of one gated listener shares.
struct Leader<A, G, F> {
    name: String,
    listener: A,
    what: String,
    gate: G,
    serve: F,
}

impl<A, G, P, F> Leader<A, G, F>
where
    A: Accept + Sync,
    G: Fn(&mut A::Conn) -> Option<P> + Send + Sync + 'static,
    P: Send + 'static,
    F: Fn(A::Conn, P) + Send + Sync + 'static,
{
    /// Accepts until a connection is admitted, then hands accepting on and
    /// serves it here. Without a thread to hand over to, serves it and
    /// goes on accepting.
    fn lead(self: Arc<Self>) {
        loop {
            let mut conn = match self.listener.accept_conn() {
                Ok(conn) => conn,
                Err(e) => {
                    error!("{}: {e}", self.what);
                    std::thread::sleep(ACCEPT_ERROR_PAUSE);
                    continue;
                }
            };
            let Some(permit) = (self.gate)(&mut conn) else {
                continue;
            };
            let next = self.clone();
            match crate::workers::spawn(self.name.clone(), move || next.lead()) {
                Ok(()) => return (self.serve)(conn, permit),
                Err(e) => {
                    error!("Cannot start connection thread: {e}");
                    (self.serve)(conn, permit);
                }
            }
        }
    }
}

fn accept_loop<A, S, F>(listener: &A, what: &str, stopped: S, serve: F)
where
    A: Accept,
    S: Fn() -> bool,
    F: Fn(A::Conn) + Clone + Send + 'static,
{
    loop {
        let accepted = listener.accept_conn();
        if stopped() {
            return;
        }
        match accepted {
            Ok(conn) => {
                let serve = serve.clone();
                let started = crate::workers::spawn("conn".into(), move || serve(conn));
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
    fn a_gated_listener_serves_each_admitted_client_while_others_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The gate refuses a client that starts with 0, telling it so.
        let gate = |s: &mut TcpStream| {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            if b[0] == 0 {
                let _ = s.write_all(b"no");
                return None;
            }
            Some(b[0])
        };
        let serve = |mut s: TcpStream, first: u8| {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&[first + b[0]]);
            }
        };
        spawn_gated("test-gated".into(), listener, "accept".into(), gate, serve).unwrap();
        // Admitted and then silent: its session holds a thread, not the
        // accepting.
        let mut silent = TcpStream::connect(addr).unwrap();
        silent.write_all(&[1]).unwrap();
        let mut refused = TcpStream::connect(addr).unwrap();
        refused.write_all(&[0]).unwrap();
        let mut no = String::new();
        refused.read_to_string(&mut no).unwrap();
        assert_eq!(no, "no");
        for first in [40, 30] {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&[first, 2]).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert_eq!(b[0], first + 2);
        }
        silent.write_all(&[5]).unwrap();
        let mut b = [0u8; 1];
        silent.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 6);
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
