//! `udp-server` (local UDP port -> mesh datagram service) and `udp-client`
//! (mesh datagram service -> UDP address). One mesh datagram carries one
//! UDP payload; each remote peer gets its own session.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use log::{debug, error, warn};

use super::spawn;
use crate::config::ProxyCfg;
use crate::netceptor::node::Advertise;
use crate::netceptor::{Delivery, Netceptor, PacketConn};

/// Sessions idle this long are closed (Go keeps them forever).
const SESSION_IDLE: Duration = Duration::from_secs(300);
const TICK: Duration = Duration::from_secs(1);
const MAX_DATAGRAM: usize = 65536;
/// Peers served at once per proxy; each has a socket and a thread.
const MAX_SESSIONS: usize = 1024;

pub fn start(cfg: &ProxyCfg, net: &Netceptor) -> Result<(), String> {
    match cfg {
        ProxyCfg::UdpServer {
            bind_addr,
            port,
            remote_node,
            remote_service,
        } => server(
            net,
            &format!("{bind_addr}:{port}"),
            remote_node,
            remote_service,
        ),
        ProxyCfg::UdpClient { service, address } => client(net, service, address),
        _ => Err("not a UDP proxy".into()),
    }
}

fn server(net: &Netceptor, addr: &str, node: &str, service: &str) -> Result<(), String> {
    let sock = UdpSocket::bind(addr).map_err(|e| format!("udp-server {addr}: {e}"))?;
    sock.set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let (net, node, service) = (net.clone(), node.to_string(), service.to_string());
    spawn(format!("udp-server-{addr}"), move || {
        let mut sessions: HashMap<SocketAddr, (PacketConn, Instant)> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            sessions.retain(|_, (_, last)| now.duration_since(*last) < SESSION_IDLE);
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => return error!("udp-server: {e}"),
            };
            if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&from) {
                warn!("udp-server: too many sessions; dropping a datagram from {from}");
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = sessions.entry(from) {
                match open_server_session(&net, &sock, from, &node, &service) {
                    Ok(pc) => {
                        slot.insert((pc, now));
                    }
                    Err(e) => {
                        error!("udp-server: {e}");
                        continue;
                    }
                }
            }
            if let Some((pc, last)) = sessions.get_mut(&from) {
                *last = now;
                pc.send(&node, &service, buf[..n].to_vec());
            }
        }
    })
}

/// A fresh ephemeral mesh service for one UDP peer; replies from the
/// remote service go back to that peer until the session is dropped.
fn open_server_session(
    net: &Netceptor,
    sock: &UdpSocket,
    peer: SocketAddr,
    node: &str,
    service: &str,
) -> Result<PacketConn, String> {
    let pc = net.bind(None, None)?;
    let (rx, sock) = (
        pc.receiver().clone(),
        sock.try_clone().map_err(|e| e.to_string())?,
    );
    let (node, service) = (node.to_string(), service.to_string());
    debug!("Received new UDP connection from {peer}");
    spawn("udp-server-session".into(), move || {
        // Ends when the session's PacketConn is dropped and unbound.
        for d in rx.iter() {
            if let Delivery::Data {
                from_node,
                from_service,
                payload,
            } = d
            {
                if from_node == node && from_service.to_text() == service {
                    let _ = sock.send_to(&payload, peer);
                } else {
                    debug!("Received packet from unexpected source {from_node}:{from_service}");
                }
            }
        }
    })?;
    Ok(pc)
}

struct ClientSession {
    sock: Arc<UdpSocket>,
    last: Instant,
    closed: Arc<AtomicBool>,
}

fn client(net: &Netceptor, service: &str, address: &str) -> Result<(), String> {
    let target = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("udp-client: could not resolve UDP address {address}"))?;
    let tags = BTreeMap::from([
        ("type".to_string(), "UDP Proxy".to_string()),
        ("address".to_string(), address.to_string()),
    ]);
    let pc = Arc::new(
        net.bind(Some(service), Some(Advertise { conn_type: 0, tags }))
            .map_err(|e| format!("udp-client {service}: {e}"))?,
    );
    spawn(format!("udp-client-{service}"), move || {
        let mut sessions: HashMap<(String, String), ClientSession> = HashMap::new();
        loop {
            let now = Instant::now();
            sessions.retain(|_, s| {
                let alive = now.duration_since(s.last) < SESSION_IDLE;
                if !alive {
                    s.closed.store(true, Ordering::Relaxed);
                }
                alive
            });
            let (from_node, from_service, payload) = match pc.receiver().recv_timeout(TICK) {
                Ok(Delivery::Data {
                    from_node,
                    from_service,
                    payload,
                }) => (from_node, from_service.to_text(), payload),
                Ok(Delivery::Unreachable { .. }) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let key = (from_node, from_service);
            if sessions.len() >= MAX_SESSIONS && !sessions.contains_key(&key) {
                warn!(
                    "udp-client: too many sessions; dropping a datagram from {}:{}",
                    key.0, key.1
                );
                continue;
            }
            if !sessions.contains_key(&key) {
                match open_client_session(&pc, target, &key) {
                    Ok(s) => {
                        sessions.insert(key.clone(), s);
                    }
                    Err(e) => {
                        error!("udp-client: {e}");
                        continue;
                    }
                }
            }
            if let Some(s) = sessions.get_mut(&key) {
                s.last = now;
                if let Err(e) = s.sock.send(&payload) {
                    error!("udp-client: error writing to UDP: {e}");
                }
            }
        }
    })
}

fn open_client_session(
    pc: &Arc<PacketConn>,
    target: SocketAddr,
    (node, service): &(String, String),
) -> Result<ClientSession, String> {
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.connect(target).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(TICK))
        .map_err(|e| e.to_string())?;
    let sock = Arc::new(sock);
    let closed = Arc::new(AtomicBool::new(false));
    let (pc, reader, stop) = (pc.clone(), sock.clone(), closed.clone());
    let (node, service) = (node.clone(), service.clone());
    debug!("Opened new UDP connection to {node}:{service}");
    spawn("udp-client-session".into(), move || {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::Relaxed) {
            match reader.recv(&mut buf) {
                Ok(n) => pc.send(&node, &service, buf[..n].to_vec()),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return debug!("udp-client session ended: {e}"),
            }
        }
    })?;
    Ok(ClientSession {
        sock,
        last: Instant::now(),
        closed,
    })
}

/// A read that ran out of time or was cut short by a signal (a socket
/// with a read timeout is never restarted after a handler: SIGHUP's, or
/// SIGCHLD's in a daemon that reaps orphans), to be tried again.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}
