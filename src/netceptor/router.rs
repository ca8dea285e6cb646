//! The router thread: the one owner of the mesh [`Node`], fed by commands
//! from backends and local services over a single channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded, unbounded};
use log::{debug, error, warn};

use super::codec::{ServiceName, UnreachableMessage, WorkCommand};
use super::firewall::Firewall;
use super::link::{Link, LinkError};
use super::node::{
    Advertise, BackendId, BackendParams, ConnId, Limits, Node, Now, Output, SendError,
    StatusSnapshot,
};
use crate::random::IdGen;
use crate::ratelog::{self, RateLog};
use crate::reply::Replier;

/// What a local service receives.
#[derive(Debug)]
pub enum Delivery {
    Data {
        from_node: String,
        from_service: ServiceName,
        payload: bytes::BytesMut,
    },
    Unreachable {
        message: UnreachableMessage,
        received_from: String,
    },
}

pub(crate) enum Command {
    ConnOpened {
        conn: ConnId,
        params: BackendParams,
        link: Box<dyn Link>,
    },
    Message {
        conn: ConnId,
        msg: Vec<u8>,
    },
    ConnClosed {
        conn: ConnId,
    },
    Bind {
        service: Option<String>,
        advertise: Option<Advertise>,
        deliver: Sender<Delivery>,
        /// A thread to unpark after each delivery (see [`Netceptor::bind_parked`]).
        wake: Option<Thread>,
        reply: Sender<Result<ServiceName, String>>,
    },
    Unbind {
        service: ServiceName,
    },
    Send {
        from: ServiceName,
        to_node: String,
        to_service: String,
        payload: Vec<u8>,
        hops: u8,
        /// Where a refusal goes; nothing is sent there on success.
        refused: Option<Sender<SendError>>,
    },
    WorkType(WorkCommand),
    Status(Sender<StatusSnapshot>),
    HasRoute(String, Replier<bool>),
    RetireBackend(BackendId),
    Shutdown,
}

/// A cheap, cloneable handle to the router thread.
#[derive(Clone)]
pub struct Netceptor {
    tx: Sender<Box<Command>>,
    /// Unparked after every command: the router parks on its own rather
    /// than in crossbeam's `recv`, whose backoff yields the CPU and, on a
    /// busy machine, does not get it back for a whole time slice.
    router: Thread,
    node_id: Arc<str>,
    next_conn: Arc<AtomicU64>,
    shutdown: Receiver<String>,
}

impl Netceptor {
    /// Starts the router thread for node `id`. The thread runs until
    /// [`Netceptor::shutdown`] (or the mesh tells this node to stop); join
    /// the handle to know it has closed every link.
    pub fn start(id: &str, max_idle: Duration, firewall: Firewall) -> (Netceptor, JoinHandle<()>) {
        Self::start_with(id, max_idle, firewall, Limits::default())
    }

    /// [`Netceptor::start`] with bounds on what the mesh may make it keep.
    pub fn start_with(
        id: &str,
        max_idle: Duration,
        firewall: Firewall,
        limits: Limits,
    ) -> (Netceptor, JoinHandle<()>) {
        // Bounded, so readers of busy connections wait (and TCP pushes back
        // on the peer) instead of queueing without limit.
        let (tx, rx) = bounded(COMMAND_QUEUE);
        let (shutdown_tx, shutdown_rx) = bounded(1);
        let epoch = new_epoch();
        let mut node = Node::new(id, epoch, max_idle, IdGen::from_os(), Instant::now());
        node.set_firewall(firewall);
        node.set_limits(limits);
        let handle = std::thread::Builder::new()
            .name("router".into())
            .spawn(move || Router::new(node, shutdown_tx).run(rx))
            .expect("spawn router thread");
        let net = Netceptor {
            tx,
            router: handle.thread().clone(),
            node_id: id.into(),
            next_conn: Arc::new(AtomicU64::new(1)),
            shutdown: shutdown_rx,
        };
        (net, handle)
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Receives the reason once the mesh decides this node must stop.
    pub fn shutdown_signal(&self) -> &Receiver<String> {
        &self.shutdown
    }

    /// Registers a backend connection; returns its ID for `message`/`closed`.
    pub fn conn_opened(&self, params: BackendParams, link: Box<dyn Link>) -> ConnId {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.command(Command::ConnOpened { conn, params, link });
        conn
    }

    pub fn conn_message(&self, conn: ConnId, msg: Vec<u8>) {
        self.command(Command::Message { conn, msg });
    }

    pub fn conn_closed(&self, conn: ConnId) {
        self.command(Command::ConnClosed { conn });
    }

    /// Binds a named service (or an ephemeral one with `None`).
    pub fn bind(
        &self,
        service: Option<&str>,
        advertise: Option<Advertise>,
    ) -> Result<PacketConn, String> {
        self.bind_waking(service, advertise, None)
    }

    /// Binds an ephemeral service whose deliveries (and refusals of its
    /// [`PacketConn::send_reporting`]) also unpark the calling thread, so
    /// it can wait with `try_recv` and `park_timeout`: one wake-up per
    /// reply, and none lost to crossbeam's backoff on a busy machine.
    pub(super) fn bind_parked(&self) -> Result<PacketConn, String> {
        self.bind_waking(None, None, Some(std::thread::current()))
    }

    fn bind_waking(
        &self,
        service: Option<&str>,
        advertise: Option<Advertise>,
        wake: Option<Thread>,
    ) -> Result<PacketConn, String> {
        let (deliver, rx) = unbounded();
        let (reply, answer) = bounded(1);
        self.command(Command::Bind {
            service: service.map(str::to_string),
            advertise,
            deliver,
            wake,
            reply,
        });
        let service = answer.recv().map_err(|_| "router stopped".to_string())??;
        Ok(PacketConn {
            net: self.clone(),
            service,
            rx,
        })
    }

    pub fn add_work_command(&self, command: WorkCommand) {
        self.command(Command::WorkType(command));
    }

    pub fn status(&self) -> Option<StatusSnapshot> {
        let (tx, rx) = bounded(1);
        self.command(Command::Status(tx));
        rx.recv().ok()
    }

    /// Whether `node` is this node or currently reachable.
    pub fn has_route(&self, node: &str) -> bool {
        self.ask_route(node).reachable()
    }

    /// Asks whether `node` is reachable and returns at once, so that the
    /// caller can do something else while the router answers.
    pub fn ask_route(&self, node: &str) -> RouteAnswer {
        let (tx, rx) = crate::reply::pair();
        self.command(Command::HasRoute(node.to_string(), tx));
        RouteAnswer(rx)
    }

    pub fn shutdown(&self) {
        self.command(Command::Shutdown);
    }

    /// Closes every link backend `id` opened, and any it opens later.
    pub fn retire_backend(&self, id: BackendId) {
        self.command(Command::RetireBackend(id));
    }

    fn command(&self, cmd: Command) {
        // Only fails once the router has stopped, when nothing matters.
        let _ = self.tx.send(Box::new(cmd));
        // An atomic swap while the router runs; a futex wake when parked.
        self.router.unpark();
    }
}

/// The router's answer to [`Netceptor::ask_route`], for the thread that
/// asked.
pub struct RouteAnswer(crate::reply::Waiter<bool>);

impl RouteAnswer {
    /// Whether the node was reachable; waits for the router if need be.
    pub fn reachable(self) -> bool {
        self.0.wait(None).unwrap_or(false)
    }
}

/// The router's clocks, read once per input.
fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

/// This process's epoch: `unix_seconds * 2^24` plus the fraction of the
/// second in 24 bits. Go fills the low bits with a random number instead,
/// so a node restarted within the second it started gets a smaller epoch
/// half the time, and every peer then ignores its updates as stale for as
/// long as it runs. Ours only grow; on the scale of seconds they compare
/// with Go's epochs as Go's do with each other.
fn epoch_at(time: SystemTime) -> u64 {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let fraction = (u64::from(since.subsec_nanos()) << 24) / 1_000_000_000;
    (since.as_secs() << 24) + fraction
}

fn new_epoch() -> u64 {
    epoch_at(SystemTime::now())
}

/// A bound datagram service: receive what is sent to it, send from it.
pub struct PacketConn {
    net: Netceptor,
    service: ServiceName,
    rx: Receiver<Delivery>,
}

impl PacketConn {
    pub fn service(&self) -> ServiceName {
        self.service
    }

    pub fn receiver(&self) -> &Receiver<Delivery> {
        &self.rx
    }

    /// Sends without waiting; a refusal (e.g. "no route to node") arrives
    /// on the returned channel, which otherwise closes unused.
    pub fn send_reporting(
        &self,
        to_node: &str,
        to_service: &str,
        payload: Vec<u8>,
        hops: u8,
    ) -> Receiver<SendError> {
        let (refused, refusal) = bounded(1);
        self.net.command(Command::Send {
            from: self.service,
            to_node: to_node.to_string(),
            to_service: to_service.to_string(),
            payload,
            hops,
            refused: Some(refused),
        });
        refusal
    }

    /// Fire-and-forget send, for datagram traffic.
    pub fn send(&self, to_node: &str, to_service: &str, payload: Vec<u8>) {
        self.net.command(Command::Send {
            from: self.service,
            to_node: to_node.to_string(),
            to_service: to_service.to_string(),
            payload,
            hops: super::node::MAX_FORWARDING_HOPS,
            refused: None,
        });
    }
}

impl Drop for PacketConn {
    fn drop(&mut self) {
        self.net.command(Command::Unbind {
            service: self.service,
        });
    }
}

/// Commands waiting for the router at most. The channel allocates and
/// writes all its slots up front, so every node holds them: each command
/// is boxed to keep a slot at 16 bytes (64 KiB in all; unboxed, a slot
/// held the largest command, 480 KiB in all). The box is one small
/// allocation per command, next to the frame's own.
const COMMAND_QUEUE: usize = 4096;

/// Commands handled before gathered frames are sent.
const BATCH: usize = 256;

/// A connection's link, and whether it has messages queued in this batch.
struct Outgoing {
    link: Box<dyn Link>,
    queued: bool,
}

/// Where a bound service's deliveries go.
struct Subscriber {
    deliver: Sender<Delivery>,
    wake: Option<Thread>,
}

impl Subscriber {
    fn wake(&self) {
        if let Some(t) = &self.wake {
            t.unpark();
        }
    }
}

struct Router {
    node: Node,
    writers: HashMap<ConnId, Outgoing>,
    /// Connections with messages queued since the last flush.
    dirty: Vec<ConnId>,
    services: HashMap<ServiceName, Subscriber>,
    shutdown: Sender<String>,
    stopping: bool,
    /// A peer that does not read makes every message to it a drop: one
    /// line per drop would let it fill the disk.
    drop_log: RateLog,
    send_error_log: RateLog,
}

impl Router {
    fn new(node: Node, shutdown: Sender<String>) -> Router {
        Router {
            node,
            writers: HashMap::new(),
            dirty: Vec::new(),
            services: HashMap::new(),
            shutdown,
            stopping: false,
            drop_log: RateLog::default(),
            send_error_log: RateLog::default(),
        }
    }

    /// Every sender unparks this thread after queueing a command; an
    /// unpark that comes between `try_recv` and `park_timeout` makes the
    /// park return at once, so none is missed.
    fn run(mut self, rx: Receiver<Box<Command>>) {
        while !self.stopping {
            match rx.try_recv() {
                Ok(cmd) => {
                    self.handle(*cmd);
                    // Handle what is already queued, then send the frames
                    // of the whole batch together.
                    for _ in 0..BATCH {
                        let Ok(cmd) = rx.try_recv() else { break };
                        self.handle(*cmd);
                    }
                }
                Err(TryRecvError::Empty) => wait_for(&rx, self.node.poll_timeout()),
                // Every handle dropped without `shutdown`: stop the same way.
                Err(TryRecvError::Disconnected) => break,
            }
            // Checked after every batch too, so a busy channel cannot starve timers.
            let now = now();
            if self.node.poll_timeout() <= now.mono {
                self.report_backlogs();
                self.node.handle_timeout(now);
                self.apply_outputs();
            }
            self.flush();
        }
        // Peers see the connection end now, not at process exit.
        for (_, out) in self.writers.drain() {
            out.link.close();
        }
        // Waiters parked on a service see its channel closed.
        for (_, sub) in self.services.drain() {
            drop(sub.deliver);
            if let Some(t) = sub.wake {
                t.unpark();
            }
        }
        debug!("Router stopped");
    }

    fn handle(&mut self, cmd: Command) {
        let now = now();
        match cmd {
            Command::ConnOpened { conn, params, link } => {
                let queued = false;
                self.writers.insert(conn, Outgoing { link, queued });
                self.node.handle_conn_opened(conn, params, now.mono);
            }
            Command::Message { conn, msg } => self.node.handle_message(conn, msg, now),
            Command::ConnClosed { conn } => {
                if let Some(out) = self.writers.remove(&conn) {
                    out.link.close();
                }
                self.node.handle_conn_closed(conn, now.mono);
            }
            Command::Bind {
                service,
                advertise,
                deliver,
                wake,
                reply,
            } => {
                let bound = match service {
                    Some(name) => self.node.bind(&name, advertise, now.mono),
                    None => Ok(self.node.bind_ephemeral(now.mono)),
                };
                if let Ok(name) = bound {
                    self.services.insert(name, Subscriber { deliver, wake });
                }
                let _ = reply.send(bound);
            }
            Command::Unbind { service } => {
                self.services.remove(&service);
                self.node.unbind(service, now.wall);
            }
            Command::Send {
                from,
                to_node,
                to_service,
                payload,
                hops,
                refused,
            } => {
                let result = self.node.send(from, &to_node, &to_service, &payload, hops);
                if let (Err(e), Some(refused)) = (result, refused) {
                    let _ = refused.send(e);
                    if let Some(sub) = self.services.get(&from) {
                        sub.wake();
                    }
                }
            }
            Command::WorkType(wc) => self.node.add_work_command(wc),
            Command::Status(reply) => {
                let _ = reply.send(self.node.status(now.wall));
            }
            Command::HasRoute(node, reply) => {
                let _ = reply.send(self.node.has_route(&node));
            }
            Command::RetireBackend(id) => self.node.handle_backend_retired(id, now.mono),
            Command::Shutdown => self.stopping = true,
        }
        self.apply_outputs();
    }

    fn apply_outputs(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { conn, msg } => self.write(conn, &msg),
                Output::Close { conn, error } => {
                    if let Some(e) = error {
                        error!("Backend error: {e}");
                    }
                    // The link still sends what is queued, then closes.
                    if let Some(out) = self.writers.remove(&conn) {
                        out.link.close();
                    }
                }
                Output::Deliver {
                    service,
                    from_node,
                    from_service,
                    payload,
                } => self.deliver(
                    service,
                    Delivery::Data {
                        from_node,
                        from_service,
                        payload,
                    },
                ),
                Output::Unreachable {
                    service,
                    message,
                    received_from,
                } => self.deliver(
                    service,
                    Delivery::Unreachable {
                        message: *message,
                        received_from,
                    },
                ),
                Output::Shutdown { reason } => {
                    let _ = self.shutdown.try_send(reason);
                    self.stopping = true;
                }
            }
        }
    }

    /// Tells the node how much waits on the links it paces sends by.
    fn report_backlogs(&mut self) {
        let conns: Vec<ConnId> = self.node.conns_catching_up().collect();
        for conn in conns {
            if let Some(out) = self.writers.get(&conn) {
                self.node.handle_link_backlog(conn, out.link.backlog());
            }
        }
    }

    /// Queues a message; `flush` hands each link's batch over.
    fn write(&mut self, conn: ConnId, msg: &[u8]) {
        let Some(out) = self.writers.get_mut(&conn) else {
            return;
        };
        match out.link.queue(msg) {
            Ok(()) if !out.queued => {
                out.queued = true;
                self.dirty.push(conn);
            }
            Ok(()) => {}
            Err(LinkError::Congested) => {
                if let Some(held) = self.drop_log.allow(Instant::now()) {
                    let more = ratelog::suffix(held);
                    warn!("Dropping message: connection {conn} is congested{more}");
                }
            }
            Err(e) => {
                if let Some(held) = self.send_error_log.allow(Instant::now()) {
                    error!("Cannot send message: {e}{}", ratelog::suffix(held));
                }
            }
        }
    }

    /// Sends everything queued since the last flush.
    fn flush(&mut self) {
        for conn in self.dirty.drain(..) {
            let Some(out) = self.writers.get_mut(&conn) else {
                continue;
            };
            out.queued = false;
            if out.link.flush().is_err() {
                // The backend's reader reports the close to the node.
                self.writers.remove(&conn);
            }
        }
    }

    fn deliver(&mut self, service: ServiceName, delivery: Delivery) {
        let Some(sub) = self.services.get(&service) else {
            return;
        };
        if sub.deliver.send(delivery).is_err() {
            self.services.remove(&service);
        } else {
            sub.wake();
        }
    }
}

/// Doubling rounds of spinning before the router parks: about as long as
/// crossbeam spins (a few microseconds), which catches the next frame of
/// a stream without a futex wake on either side.
const SPIN_ROUNDS: u32 = 7;

/// Spins briefly, then parks until a sender unparks the router or
/// `deadline` comes. Never yields: a yielding thread that loses the CPU
/// to a busy neighbour is not woken when its command arrives.
fn wait_for(rx: &Receiver<Box<Command>>, deadline: Instant) {
    for round in 0..SPIN_ROUNDS {
        if !rx.is_empty() {
            return;
        }
        for _ in 0..1 << round {
            std::hint::spin_loop();
        }
    }
    if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
        std::thread::park_timeout(wait);
    }
}

#[cfg(test)]
mod tests {
    //! The router thread with in-memory links: no sockets, and waits only
    //! on channels with a deadline.

    use std::collections::BTreeMap;

    use super::*;
    use crate::netceptor::codec::{self, DATA_HEADER_LEN, DataHeader, Message, RoutingUpdate};
    use crate::netceptor::hash::node_hash;

    const WAIT: Duration = Duration::from_secs(5);

    /// What a link was given: one entry per flush, and its close.
    #[derive(Debug, PartialEq)]
    enum Wire {
        Batch(Vec<Vec<u8>>),
        Closed,
    }

    struct MemLink {
        queued: Vec<Vec<u8>>,
        out: Sender<Wire>,
    }

    impl Link for MemLink {
        fn queue(&mut self, msg: &[u8]) -> Result<(), LinkError> {
            self.queued.push(msg.to_vec());
            Ok(())
        }

        fn flush(&mut self) -> Result<(), LinkError> {
            let batch = std::mem::take(&mut self.queued);
            self.out
                .send(Wire::Batch(batch))
                .map_err(|_| LinkError::Closed)
        }

        fn close(mut self: Box<Self>) {
            let _ = self.flush();
            let _ = self.out.send(Wire::Closed);
        }
    }

    fn params() -> BackendParams {
        BackendParams {
            cost: 1.0,
            node_cost: BTreeMap::new(),
            allowed_peers: None,
            cert_node_ids: None,
            backend: BackendId::default(),
        }
    }

    fn open_link(net: &Netceptor) -> (ConnId, Receiver<Wire>) {
        let (out, rx) = unbounded();
        let link = MemLink {
            queued: Vec::new(),
            out,
        };
        (net.conn_opened(params(), Box::new(link)), rx)
    }

    /// The next message on the link that `pick` accepts.
    fn next<T>(rx: &Receiver<Wire>, mut pick: impl FnMut(Message, &[u8]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match rx.recv_deadline(deadline).expect("link went quiet") {
                Wire::Batch(msgs) => {
                    let found = msgs
                        .iter()
                        .find_map(|m| pick(codec::decode(m).expect("router sent garbage"), m));
                    if let Some(t) = found {
                        return t;
                    }
                }
                Wire::Closed => panic!("link closed"),
            }
        }
    }

    fn wait_closed(rx: &Receiver<Wire>) {
        let deadline = Instant::now() + WAIT;
        while rx.recv_deadline(deadline).expect("link never closed") != Wire::Closed {}
    }

    fn update_from(peer: &str, lists: Option<&str>, seq: u64) -> Vec<u8> {
        codec::encode_routing(&RoutingUpdate {
            node_id: peer.into(),
            update_id: format!("{peer}-{seq}"),
            update_epoch: 7,
            update_sequence: seq,
            connections: lists.map(|n| (n.to_string(), 1.0)).into_iter().collect(),
            forwarding_node: peer.into(),
            suspected_duplicate: 0,
        })
    }

    #[test]
    fn a_link_carries_routing_and_data_both_ways_and_closes() {
        let (net, router) = Netceptor::start("a", Duration::from_secs(30), Firewall::default());
        let (conn, wire) = open_link(&net);
        // The new link gets our initial connect message at once.
        next(&wire, |m, _| match m {
            Message::Routing(ru) if ru.node_id == "a" => Some(()),
            _ => None,
        });
        net.conn_message(conn, update_from("b", None, 1));
        // Established: our next update lists b, and b is routable.
        next(&wire, |m, _| match m {
            Message::Routing(ru) if ru.connections.contains_key("b") => Some(()),
            _ => None,
        });
        net.conn_message(conn, update_from("b", Some("a"), 2));
        assert!(net.has_route("b"));

        let svc = net.bind(Some("echo"), None).unwrap();
        let refusal = svc.send_reporting("b", "far", b"hello".to_vec(), 30);
        // Accepted: the router drops the refusal channel unused.
        assert_eq!(
            refusal.recv_timeout(WAIT),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        let payload = next(&wire, |m, raw| match m {
            Message::Data(h) if h.to_node == node_hash("b") => {
                Some(raw[DATA_HEADER_LEN..].to_vec())
            }
            _ => None,
        });
        assert_eq!(payload, b"hello");

        let inbound = DataHeader {
            hops_to_live: 5,
            from_node: node_hash("b"),
            to_node: node_hash("a"),
            from_service: ServiceName::new("far").unwrap(),
            to_service: ServiceName::new("echo").unwrap(),
        };
        net.conn_message(conn, inbound.encode(b"back"));
        match svc.receiver().recv_timeout(WAIT).unwrap() {
            Delivery::Data {
                from_node, payload, ..
            } => assert_eq!((from_node.as_str(), &payload[..]), ("b", &b"back"[..])),
            other => panic!("unexpected {other:?}"),
        }

        net.conn_closed(conn);
        wait_closed(&wire);
        net.shutdown();
        router.join().unwrap();
    }

    #[test]
    fn epochs_grow_within_a_second_and_keep_go_scale() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let (a, b) = (epoch_at(t), epoch_at(t + Duration::from_micros(1)));
        assert!(b > a);
        assert!(epoch_at(t + Duration::from_millis(999)) < epoch_at(t + Duration::from_secs(1)));
        assert_eq!(a >> 24, 1_780_000_000);
    }

    #[test]
    fn shutdown_closes_every_link_and_ends_the_thread() {
        let (net, router) = Netceptor::start("a", Duration::from_secs(30), Firewall::default());
        let links: Vec<_> = (0..3).map(|_| open_link(&net).1).collect();
        net.shutdown();
        router.join().unwrap();
        for wire in &links {
            wait_closed(wire);
        }
        // Calls after the stop fail cleanly instead of hanging.
        assert!(net.status().is_none());
        assert_eq!(
            net.bind(None, None).err().as_deref(),
            Some("router stopped")
        );
    }
}
