//! Service proxies (docs/config.md §4): local TCP, Unix and UDP sockets
//! joined to mesh services, and the byte bridge they share with the
//! control service's `connect`.

pub mod tcp;
pub mod udp;
pub mod unix;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

use std::collections::BTreeMap;
use std::sync::Arc;

use log::{debug, error};

use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::netceptor::node::Advertise;
use crate::stream::{self, DIAL_TIMEOUT, Listener, Stream};
use crate::tls::io::TlsStream;
use crate::tls::{ClientTls, Sections, ServerTls};

/// The sections a proxy names, looked up at start-up (Go's errors).
fn server_section(tls: &Sections, name: &Option<String>) -> Result<Option<Arc<ServerTls>>, String> {
    name.as_deref()
        .map(|n| tls.server(n).map_err(|e| e.to_string()))
        .transpose()
}

fn client_section(tls: &Sections, name: &Option<String>) -> Result<Option<Arc<ClientTls>>, String> {
    name.as_deref()
        .map(|n| tls.client(n).map_err(|e| e.to_string()))
        .transpose()
}

/// A byte socket that can be cloned for a second thread and half-closed.
pub trait Socket: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    /// The peer has closed both directions (or the connection failed).
    /// A peer that only half-closed is still there.
    fn peer_gone(&self) -> bool;
    /// The client is one of our nodes, which may send a submit's stdin
    /// right behind the request without waiting for the reply (a stream
    /// on a many-stream connection).
    fn pipelines_submits(&self) -> bool {
        false
    }
    /// [`pipelines_submits`](Self::pipelines_submits), and bytes of the
    /// client's first request are here already: it did not wait for the
    /// greeting.
    fn sent_ahead(&self) -> bool {
        false
    }
    /// Writes `last`, then closes the write side; a mesh stream does
    /// both in one step, so they leave in one packet.
    fn finish(&mut self, last: &[u8]) -> io::Result<()> {
        self.write_all(last)?;
        self.shutdown(Shutdown::Write)
    }
}

/// Whether the socket reports a hang-up or an error, without blocking.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll reads and writes only the one pollfd we pass.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Kernel sockets: the std methods, plus `poll` for hang-up.
macro_rules! kernel_socket {
    ($t:ty) => {
        impl Socket for $t {
            fn try_clone(&self) -> io::Result<Self> {
                <$t>::try_clone(self)
            }

            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$t>::shutdown(self, how)
            }

            fn peer_gone(&self) -> bool {
                hung_up(std::os::fd::AsRawFd::as_raw_fd(self))
            }
        }
    };
}

kernel_socket!(TcpStream);
kernel_socket!(UnixStream);

impl Socket for TlsStream<TcpStream> {
    fn try_clone(&self) -> io::Result<Self> {
        TlsStream::try_clone(self)
    }

    /// Closing the write side sends TLS's close_notify first, so the peer
    /// sees a clean end of data.
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.close_notify();
        }
        self.socket().shutdown(how)
    }

    fn peer_gone(&self) -> bool {
        self.socket().peer_gone()
    }
}

impl Socket for Stream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(self.clone())
    }

    /// A stream only half-closes; reading stops when the handles go.
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            self.shutdown_write();
        }
        Ok(())
    }

    fn peer_gone(&self) -> bool {
        Stream::peer_gone(self)
    }

    fn pipelines_submits(&self) -> bool {
        self.carries_many()
    }

    fn sent_ahead(&self) -> bool {
        self.carries_many() && self.has_input()
    }

    fn finish(&mut self, last: &[u8]) -> io::Result<()> {
        self.write_and_shutdown(last)
    }
}

/// What to do to the local socket when the mesh stream ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnRemoteEof {
    /// Pass the EOF on and keep sending local bytes (proxies).
    HalfClose,
    /// Close the local socket entirely (control `connect`, as Go does).
    Close,
}

/// Copies bytes both ways until both directions are done. `pending` is
/// what the caller already read from `local` and must go first.
pub fn bridge<S: Socket>(local: S, pending: &[u8], stream: Stream, on_eof: OnRemoteEof) {
    let to_mesh = match local.try_clone() {
        Ok(reader) => {
            let (out, pending) = (stream.clone(), pending.to_vec());
            std::thread::Builder::new()
                .name("bridge-up".into())
                .spawn(move || copy_up(reader, &pending, out))
        }
        Err(e) => Err(e),
    };
    let mut down = &stream;
    let mut local_w = local;
    let result = io::copy(&mut down, &mut local_w);
    if let Err(e) = &result {
        debug!(
            "Bridge from {}:{} ended: {e}",
            stream.peer_node(),
            stream.peer_service()
        );
    }
    let how = match (on_eof, result) {
        (OnRemoteEof::HalfClose, Ok(_)) => Shutdown::Write,
        _ => Shutdown::Both,
    };
    let _ = local_w.shutdown(how);
    match to_mesh {
        Ok(t) => {
            let _ = t.join();
        }
        Err(e) => debug!("Bridge could not start its second thread: {e}"),
    }
}

fn copy_up<S: Socket>(mut local: S, pending: &[u8], stream: Stream) {
    let mut up = &stream;
    let copied = up
        .write_all(pending)
        .and_then(|()| io::copy(&mut local, &mut up));
    if let Err(e) = copied {
        debug!(
            "Bridge to {}:{} ended: {e}",
            stream.peer_node(),
            stream.peer_service()
        );
    }
    stream.shutdown_write();
}

/// Starts every configured proxy; `tls` holds the sections they name.
pub fn start(proxies: &[ProxyCfg], net: &Netceptor, tls: &Sections) -> Result<(), String> {
    for p in proxies {
        match p {
            ProxyCfg::TcpServer { .. } | ProxyCfg::TcpClient { .. } => tcp::start(p, net, tls)?,
            ProxyCfg::UnixSocketServer { .. } | ProxyCfg::UnixSocketClient { .. } => {
                unix::start(p, net, tls)?
            }
            ProxyCfg::UdpServer { .. } | ProxyCfg::UdpClient { .. } => udp::start(p, net)?,
        }
    }
    Ok(())
}

/// Carries each connection accepted on `listener` to `node:service` over
/// the mesh. `wrap` turns an accepted connection into the socket to
/// bridge (a TLS handshake for a `tlsserver`, else nothing); `mesh_tls`
/// is the `tls-client` section for the mesh side, if any.
fn forward_local<A, S, W>(
    name: String,
    listener: A,
    wrap: W,
    net: &Netceptor,
    (node, service): (&str, &str),
    mesh_tls: Option<Arc<ClientTls>>,
) -> Result<(), String>
where
    A: crate::accept::Accept,
    W: Fn(A::Conn) -> io::Result<S> + Clone + Send + 'static,
    S: Socket,
{
    let (net, node, service) = (net.clone(), node.to_string(), service.to_string());
    let who = name.clone();
    let serve = move |conn: A::Conn| {
        let local = match wrap(conn) {
            Ok(local) => local,
            Err(e) => return error!("{who}: TLS handshake with a local client failed: {e}"),
        };
        let dialed = stream::dial_tls(&net, &node, &service, DIAL_TIMEOUT, mesh_tls.as_deref());
        match dialed {
            Ok(s) => bridge(local, &[], s, OnRemoteEof::HalfClose),
            Err(e) => {
                error!("{who}: cannot reach {node}:{service}: {e}");
                let _ = local.shutdown(Shutdown::Both);
            }
        }
    };
    let what = format!("{name} accept");
    crate::accept::spawn(name.clone(), listener, what, serve)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name}: {e}"))
}

/// Serves mesh service `service`, advertised with `tags` (as StreamTLS
/// with a `tls-server` section, as Go does), and joins each stream to a
/// local connection made by `connect`. A failed local connect closes the
/// stream at once (Go leaves it open, and the far client hangs).
fn forward_mesh<S, F>(
    name: String,
    net: &Netceptor,
    (service, tags): (&str, BTreeMap<String, String>),
    mesh_tls: Option<Arc<ServerTls>>,
    connect: F,
) -> Result<(), String>
where
    S: Socket,
    F: Fn() -> io::Result<S> + Send + Sync + 'static,
{
    let conn_type = if mesh_tls.is_some() { 2 } else { 1 };
    let advert = Some(Advertise { conn_type, tags });
    let listener = Listener::bind_tls(net, service, advert, mesh_tls.as_deref())
        .map_err(|e| format!("{name}: {e}"))?;
    let connect = Arc::new(connect);
    let thread = name.clone();
    spawn(thread, move || {
        while let Ok(s) = listener.accept() {
            let (connect, name) = (connect.clone(), name.clone());
            let started = spawn(format!("{name}-conn"), move || match connect() {
                Ok(conn) => bridge(conn, &[], s, OnRemoteEof::HalfClose),
                Err(e) => debug!("{name}: cannot connect: {e}"),
            });
            if let Err(e) = started {
                error!("{e}");
            }
        }
    })
}

/// Runs `f` on a named thread; the error names what failed to start.
fn spawn<F: FnOnce() + Send + 'static>(name: String, f: F) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name}: {e}"))
}
