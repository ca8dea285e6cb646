//! The accept loop of every listening socket (backends, control service,
//! proxies): each connection is served on a thread of its own, and accept
//! errors are logged and paced so a lasting one (no descriptors left)
//! cannot spin.
//!
//! Accept threads run until the process exits: nothing needs them to stop
//! earlier, and the daemon's orderly stop is the router's (see
//! `daemon.rs`).

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
    std::thread::Builder::new().name(name).spawn(move || {
        loop {
            match listener.accept_conn() {
                Ok(conn) => {
                    let serve = serve.clone();
                    let started = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve(conn));
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
    })
}

/// Like [`spawn`], but `gate` first decides on the accept thread whether
/// a connection is served at all: `Some(permit)` serves it on a new thread
/// with the permit, `None` drops it (the gate has told the client why), so
/// refused clients cost no thread.
pub fn spawn_gated<A, G, P, F>(
    name: String,
    listener: A,
    what: String,
    mut gate: G,
    serve: F,
) -> io::Result<JoinHandle<()>>
where
    A: Accept,
    G: FnMut(&mut A::Conn) -> Option<P> + Send + 'static,
    P: Send + 'static,
    F: Fn(A::Conn, P) + Clone + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        loop {
            match listener.accept_conn() {
                Ok(mut conn) => {
                    let Some(permit) = gate(&mut conn) else {
                        continue;
                    };
                    let serve = serve.clone();
                    let started = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve(conn, permit));
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
    })
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
}
