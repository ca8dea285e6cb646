//! Service proxies (config-and-cli.md §4): local TCP, Unix and UDP sockets
//! joined to mesh services, and the byte bridge they share with the
//! control service's `connect`.

pub mod tcp;
pub mod udp;
pub mod unix;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;

use log::debug;

use crate::config::ProxyCfg;
use crate::netceptor::Netceptor;
use crate::stream::Stream;

/// A byte socket that can be cloned for a second thread and half-closed.
pub trait Socket: Read + Write + Send + Sized + 'static {
    fn try_clone(&self) -> io::Result<Self>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Socket for TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        TcpStream::try_clone(self)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        TcpStream::shutdown(self, how)
    }
}

impl Socket for UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        UnixStream::try_clone(self)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        UnixStream::shutdown(self, how)
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

/// Starts every configured proxy.
pub fn start(proxies: &[ProxyCfg], net: &Netceptor) -> Result<(), String> {
    for p in proxies {
        match p {
            ProxyCfg::TcpServer { .. } | ProxyCfg::TcpClient { .. } => tcp::start(p, net)?,
            ProxyCfg::UnixSocketServer { .. } | ProxyCfg::UnixSocketClient { .. } => {
                unix::start(p, net)?
            }
            ProxyCfg::UdpServer { .. } | ProxyCfg::UdpClient { .. } => udp::start(p, net)?,
        }
    }
    Ok(())
}

/// Runs `f` on a named thread; the error names what failed to start.
fn spawn<F: FnOnce() + Send + 'static>(name: String, f: F) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| format!("cannot start {name}: {e}"))
}
