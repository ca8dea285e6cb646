//! One configured backend's life, so a reload can remove it: every link it
//! opens carries its [`BackendId`], and stopping it ends its accept or dial
//! loop and has the router close those links.
//!
//! Stopping wakes what blocks: a listener's accept (by connecting to it)
//! or receive (by sending it an empty datagram), and a dialer's wait
//! between attempts. Listener threads are joined, so the port is free when
//! [`Scope::stop`] returns and a changed listener can bind it again at
//! once (a listener that will not end within 5 s is logged and left).
//! Dialer threads are not: one may be inside a connect that only the OS
//! times out; the session it may still open is closed as it opens (the
//! node refuses links of a retired backend).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use log::warn;

use crate::netceptor::Netceptor;
use crate::netceptor::node::BackendId;

/// How long a stop waits to reach its own listener.
const POKE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a stop pokes a listener that has not ended yet.
const POKE_INTERVAL: Duration = Duration::from_millis(20);
/// How long a stop waits for a listener thread at most.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A cheap, cloneable handle on one backend's life.
#[derive(Clone)]
pub struct Scope(Arc<Inner>);

struct Inner {
    id: BackendId,
    stopped: AtomicBool,
    /// Dropped on stop, which wakes every [`Scope::sleep`].
    wake: Mutex<Option<Sender<()>>>,
    woken: Receiver<()>,
    listeners: Mutex<Vec<Listening>>,
}

/// A listener thread and how to wake it.
struct Listening {
    poke: Poke,
    thread: JoinHandle<()>,
}

/// What unblocks a listener thread.
#[derive(Clone, Copy, Debug)]
pub enum Poke {
    /// Connect to this TCP listener.
    Tcp(SocketAddr),
    /// Send an empty datagram to this UDP socket.
    Udp(SocketAddr),
}

impl Default for Scope {
    fn default() -> Self {
        Self::new()
    }
}

impl Scope {
    /// A new backend, with an ID no other backend of this process has.
    pub fn new() -> Scope {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (wake, woken) = bounded(0);
        Scope(Arc::new(Inner {
            id: BackendId(NEXT.fetch_add(1, Ordering::Relaxed)),
            stopped: AtomicBool::new(false),
            wake: Mutex::new(Some(wake)),
            woken,
            listeners: Mutex::new(Vec::new()),
        }))
    }

    pub fn id(&self) -> BackendId {
        self.0.id
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Waits `d`, or less if the backend stops; true if it still runs.
    pub fn sleep(&self, d: Duration) -> bool {
        // Nothing is ever sent: the wait ends by timeout or by the sender
        // being dropped on stop.
        let _ = self.0.woken.recv_timeout(d);
        !self.is_stopped()
    }

    /// Hands over the thread listening at `poke`'s address, to be woken
    /// and joined on stop.
    pub fn own_listener(&self, poke: Poke, thread: JoinHandle<()>) {
        let listening = Listening { poke, thread };
        lock(&self.0.listeners).push(listening);
    }

    /// Stops the backend: no more accepts or dials, listeners joined (their
    /// sockets closed), and every link it opened closed by the router.
    pub fn stop(&self, net: &Netceptor) {
        self.0.stopped.store(true, Ordering::Release);
        lock(&self.0.wake).take();
        net.retire_backend(self.id());
        let listeners = std::mem::take(&mut *lock(&self.0.listeners));
        for l in listeners {
            l.close();
        }
    }
}

impl Listening {
    /// Pokes the thread until it has ended (a poke may be lost: a full
    /// accept queue, a dropped datagram), then joins it. One that is still
    /// running after [`CLOSE_TIMEOUT`] is left to end on its own, so a
    /// reload cannot hang the daemon's main thread.
    fn close(self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                warn!("A backend listener did not stop; its port stays open");
                return;
            }
            self.poke.send();
            std::thread::sleep(POKE_INTERVAL);
        }
        let _ = self.thread.join();
    }
}

impl Poke {
    fn send(self) {
        match self {
            Poke::Tcp(addr) => {
                let _ = TcpStream::connect_timeout(&reachable(addr), POKE_TIMEOUT);
            }
            Poke::Udp(addr) => {
                let to = reachable(addr);
                let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
                if let Ok(sock) = UdpSocket::bind(any) {
                    let _ = sock.send_to(&[], to);
                }
            }
        }
    }
}

/// A listener bound to the unspecified address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_has_its_own_id() {
        assert_ne!(Scope::new().id(), Scope::new().id());
    }

    #[test]
    fn stopping_wakes_a_sleeper_and_joins_the_listener() {
        let (net, router) =
            Netceptor::start("scope-test", Duration::from_secs(30), Default::default());
        let scope = Scope::new();
        let sleeper = {
            let scope = scope.clone();
            std::thread::spawn(move || scope.sleep(Duration::from_secs(600)))
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let listener = {
            let scope = scope.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                while !scope.is_stopped() {
                    let _ = sock.recv_from(&mut buf);
                }
            })
        };
        scope.own_listener(Poke::Udp(addr), listener);
        scope.stop(&net);
        assert!(!sleeper.join().unwrap(), "the sleeper saw the stop");
        assert!(scope.is_stopped());
        // The listener thread has ended, so its socket is closed.
        UdpSocket::bind(addr).expect("the port is free again");
        net.shutdown();
        router.join().unwrap();
    }

    #[test]
    fn stopping_closes_a_tcp_listener_bound_to_the_unspecified_address() {
        let (net, router) =
            Netceptor::start("scope-tcp", Duration::from_secs(30), Default::default());
        let scope = Scope::new();
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = {
            let scope = scope.clone();
            move || scope.is_stopped()
        };
        let thread =
            crate::accept::spawn_until("t".into(), listener, "accept".into(), stopped, |_| {})
                .unwrap();
        scope.own_listener(Poke::Tcp(([0, 0, 0, 0], port).into()), thread);
        scope.stop(&net);
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "still listening"
        );
        net.shutdown();
        router.join().unwrap();
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:7323".parse().unwrap();
        assert_eq!(reachable(v4), "127.0.0.1:7323".parse().unwrap());
        let v6: SocketAddr = "[::]:7323".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:7323".parse().unwrap());
        let given: SocketAddr = "10.1.2.3:1".parse().unwrap();
        assert_eq!(reachable(given), given);
    }
}
