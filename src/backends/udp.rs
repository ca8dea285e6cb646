//! `udp-listener` and `udp-peer` (docs/wire.md §2.3): one datagram is one
//! netceptor message, with no framing, fragmentation or reliability (QUIC
//! streams above recover what is lost). The listener tells sessions apart
//! by the sender's address; a session ends when the node closes it (idle
//! timeout, rejection), and the sender's next datagram opens a new one.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use log::{debug, error, warn};

use super::redial::{self, Attempt};
use super::scope::{Poke, Scope};
use crate::netceptor::Netceptor;
use crate::netceptor::link::{Link, LinkError};
use crate::netceptor::node::{BackendParams, ConnId};

/// The most a UDP datagram carries over IPv4 (Go's dialer limit too).
const MAX_DATAGRAM: usize = 65_507;
/// Sessions one listener keeps at most: each is a source address, which a
/// forger can vary freely.
const MAX_SESSIONS: usize = 4096;
/// The receive buffer each UDP socket asks for (the kernel caps it at
/// net.core.rmem_max). With Linux's default of 208 KiB, about a hundred
/// full QUIC packets, a stream's bursts overflowed it while the reader
/// handed datagrams to the router; QUIC took those drops for congestion
/// and slowed down (1-hop UDP streams ran at a third of TCP's rate).
const RECEIVE_BUFFER: libc::c_int = 4 << 20;
/// How often a peer's reader looks up from the socket to see whether the
/// node closed its session.
const READ_POLL: Duration = Duration::from_millis(500);

/// One session's sending side: datagrams to `to` (or to the connected peer).
struct UdpLink {
    sock: Arc<UdpSocket>,
    to: Option<SocketAddr>,
    closed: Arc<AtomicBool>,
    /// The listener's table entry to remove once the node closes us.
    table: Option<(Sessions, SocketAddr)>,
}

impl Link for UdpLink {
    fn queue(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(LinkError::Closed);
        }
        if msg.len() > MAX_DATAGRAM {
            return Err(LinkError::TooLarge(msg.len()));
        }
        let sent = match self.to {
            Some(to) => self.sock.send_to(msg, to),
            None => self.sock.send(msg),
        };
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(LinkError::Congested),
            // A refused datagram (the peer's port is shut for now) is lost
            // like any other; the session lives until it goes idle.
            Err(e) => {
                debug!("UDP send failed: {e}");
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }

    fn close(self: Box<Self>) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some((table, from)) = self.table {
            table.forget(from, &self.closed);
        }
    }
}

/// A session's connection, and the flag its link sets when the node
/// closes it.
type Session = (ConnId, Arc<AtomicBool>);

/// A listener's sessions by source address.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<SocketAddr, Session>>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Session>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `from`'s entry if it is still the session `closed` belongs to.
    fn forget(&self, from: SocketAddr, closed: &Arc<AtomicBool>) {
        let mut map = self.lock();
        if map.get(&from).is_some_and(|(_, c)| Arc::ptr_eq(c, closed)) {
            map.remove(&from);
        }
    }
}

/// Binds now (so errors surface at startup) and reads datagrams on a
/// thread that `scope` owns.
pub fn listen(
    net: &Netceptor,
    addr: &str,
    params: BackendParams,
    scope: &Scope,
) -> Result<(), String> {
    let failed = |e: std::io::Error| format!("udp-listener {addr}: {e}");
    let sock = UdpSocket::bind(addr).map_err(failed)?;
    widen_receive_buffer(&sock);
    let local = sock.local_addr().map_err(failed)?;
    debug!("Listening on UDP {local}");
    let (net, sock, stop) = (net.clone(), Arc::new(sock), scope.clone());
    let thread = std::thread::Builder::new()
        .name(format!("udp-listen-{local}"))
        .spawn(move || serve(&net, &sock, &params, &stop))
        .map_err(|e| e.to_string())?;
    scope.own_listener(Poke::Udp(local), thread);
    Ok(())
}

fn serve(net: &Netceptor, sock: &Arc<UdpSocket>, params: &BackendParams, scope: &Scope) {
    let sessions = Sessions::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = sock.recv_from(&mut buf);
        if scope.is_stopped() {
            return;
        }
        let (n, from) = match received {
            Ok(got) => got,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("UDP listener read error: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(conn) = session(net, sock, params, &sessions, from) else {
            continue;
        };
        net.conn_message(conn, buf[..n].to_vec());
    }
}

/// The live session for `from`, opened if there is none.
fn session(
    net: &Netceptor,
    sock: &Arc<UdpSocket>,
    params: &BackendParams,
    sessions: &Sessions,
    from: SocketAddr,
) -> Option<ConnId> {
    {
        let mut map = sessions.lock();
        if let Some((conn, closed)) = map.get(&from)
            && !closed.load(Ordering::Relaxed)
        {
            return Some(*conn);
        }
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, (_, closed)| !closed.load(Ordering::Relaxed));
            if map.len() >= MAX_SESSIONS {
                warn!("UDP listener: {MAX_SESSIONS} sessions open, ignoring {from}");
                return None;
            }
        }
    }
    let closed = Arc::new(AtomicBool::new(false));
    let link = UdpLink {
        sock: sock.clone(),
        to: Some(from),
        closed: closed.clone(),
        table: Some((sessions.clone(), from)),
    };
    // Not under the table's lock: the router may be closing another
    // session (which takes the lock) while this waits for room in its queue.
    let conn = net.conn_opened(params.clone(), Box::new(link));
    sessions.lock().insert(from, (conn, closed));
    Some(conn)
}

/// Keeps a session with `address` up, starting a new one when the node
/// closes it (unless `redial` is off).
pub fn dial(
    net: &Netceptor,
    address: &str,
    redial: bool,
    params: BackendParams,
    scope: &Scope,
) -> Result<(), String> {
    let (net, address, scope) = (net.clone(), address.to_string(), scope.clone());
    debug!("Running UDP peer connection {address}");
    std::thread::Builder::new()
        .name(format!("udp-peer-{address}"))
        .spawn(move || {
            redial::run(redial, &scope, || match connect(&address) {
                Ok(sock) => {
                    run_peer(&net, params.clone(), sock);
                    Attempt::Ran
                }
                Err(e) => Attempt::Failed(e),
            })
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A socket connected to the first address `address` resolves to.
fn connect(address: &str) -> Result<UdpSocket, String> {
    let to = address
        .to_socket_addrs()
        .map_err(|e| format!("dial udp {address}: lookup: {e}"))?
        .next()
        .ok_or_else(|| format!("dial udp {address}: no addresses"))?;
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(any).map_err(|e| format!("dial udp {to}: {e}"))?;
    widen_receive_buffer(&sock);
    sock.connect(to)
        .map_err(|e| format!("dial udp {to}: {e}"))?;
    sock.set_read_timeout(Some(READ_POLL))
        .map_err(|e| format!("dial udp {to}: {e}"))?;
    Ok(sock)
}

/// Asks for [`RECEIVE_BUFFER`]; a refusal leaves the default, which works,
/// only slower.
fn widen_receive_buffer(sock: &UdpSocket) {
    let size = RECEIVE_BUFFER;
    // SAFETY: setsockopt on an open socket we own, with a c_int value and
    // its exact length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!(
            "UDP receive buffer stays at the default: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs one session until the node closes it or the socket fails.
fn run_peer(net: &Netceptor, params: BackendParams, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let closed = Arc::new(AtomicBool::new(false));
    let link = UdpLink {
        sock: sock.clone(),
        to: None,
        closed: closed.clone(),
        table: None,
    };
    let conn = net.conn_opened(params, Box::new(link));
    let mut buf = vec![0u8; 65_536];
    while !closed.load(Ordering::Relaxed) {
        match sock.recv(&mut buf) {
            Ok(n) => net.conn_message(conn, buf[..n].to_vec()),
            // Timeouts let us notice the close; a refused send (nobody
            // listening yet) shows up here too and changes nothing.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::Interrupted
                        | ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                error!("UDP peer read error: {e}");
                break;
            }
        }
    }
    net.conn_closed(conn);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_buffer(sock: &UdpSocket) -> libc::c_int {
        let mut size: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a c_int and its length.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw mut size).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        size
    }

    #[test]
    fn udp_sockets_get_as_much_receive_buffer_as_the_host_allows() {
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<libc::c_int>().ok())
            .unwrap_or(RECEIVE_BUFFER);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        widen_receive_buffer(&sock);
        // Linux reports twice what was granted (its bookkeeping share).
        let granted = receive_buffer(&sock) / 2;
        assert!(
            granted >= RECEIVE_BUFFER.min(cap),
            "granted {granted}, asked {RECEIVE_BUFFER}, rmem_max {cap}"
        );
    }
}
