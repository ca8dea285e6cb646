//! The mesh node as a state machine, apart from sockets, threads, clocks
//! and the OS random generator.
//!
//! Inputs are `handle_*` calls (and `send`/`bind`) given the current
//! [`Now`]; each may queue [`Output`]s, which the shell drains with
//! [`Node::poll_output`] after every input. [`Node::poll_timeout`] says
//! when to call [`Node::handle_timeout`] next. Nothing here blocks, reads a
//! clock or draws OS randomness: identifiers come from the [`IdGen`] the
//! shell seeds.
//!
//! The files split the node by concept: `links` (backend connections and
//! the peers on them), `updates` (routing updates, flooding, the routing
//! table), `data` (data messages: local delivery, forwarding,
//! unreachables), `services` (bound services and advertisements), `share`
//! (catching a new peer up) and `timer` (the deadline table). `graph`
//! holds the cost table, by node IDs from `interner`.

mod data;
mod graph;
mod interner;
mod limits;
mod links;
mod outputs;
mod seen;
mod services;
mod share;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod timer;
mod updates;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::codec::{ServiceAdvertisement, ServiceName, UnreachableMessage, WorkCommand};
use super::firewall::Firewall;
use super::hash::node_hash;
use super::routing::CostTable;
use crate::random::IdGen;
use interner::{Id, IdMap};
pub use limits::Limits;
use limits::{Overflow, Refusal};
use timer::{Timer, TimerTable};

pub type ConnId = u64;

/// Hop budget of locally originated data messages.
pub const MAX_FORWARDING_HOPS: u8 = 30;
pub const PROBLEM_SERVICE_UNKNOWN: &str = "service unknown";
pub const PROBLEM_EXPIRED: &str = "message expired";
pub const PROBLEM_BLOCKED: &str = "blocked by firewall";

const ROUTE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);
const SERVICE_AD_INTERVAL: Duration = Duration::from_secs(60);
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often the seen routing update IDs lose their older generation
/// (`seen.rs`): each is remembered this long at least, unless the mesh
/// makes new ones faster than the table holds.
const SEEN_UPDATE_EXPIRY: Duration = Duration::from_secs(3600);
const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Services every node has; no local service may take these names.
const RESERVED_PING: &[u8] = b"ping";
const RESERVED_UNREACH: &[u8] = b"unreach";
/// How soon a change (new peer, lost peer, new node) reaches the mesh:
/// long enough to send the changes of one moment (a restart's links
/// coming up together) as one update.
const SOON: Duration = Duration::from_millis(25);
/// How soon routes follow a change, at least: updates arriving together
/// (a flood after a relay died) are taken in one computation.
const RECOMPUTE_DELAY: Duration = Duration::from_millis(5);
/// The wait grows by this much per known node, up to
/// [`RECOMPUTE_DELAY_MAX`]: a computation costs about N log N, so in a
/// mesh of thousands, where a storm of updates lasts seconds, routes are
/// computed every few tens of milliseconds instead of hundreds of times a
/// second.
const RECOMPUTE_DELAY_PER_NODE: Duration = Duration::from_micros(50);
const RECOMPUTE_DELAY_MAX: Duration = Duration::from_millis(100);
/// Room kept for outputs once they are drained. A burst (a new peer
/// handed thousands of updates) grows the queue; kept at its peak it was,
/// at a thousand nodes, a third of a node's memory.
const OUTPUTS_KEPT: usize = 64;

/// When an input happens. `mono` drives every deadline; `wall` is read
/// only for the timestamps Go nodes expect on the wire and in `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// The same moment `d` later on both clocks (for simulations).
    pub fn after(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall + d,
        }
    }
}

/// How a backend connection may be used, from its listener or peer config.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendParams {
    pub cost: f64,
    pub node_cost: BTreeMap<String, f64>,
    /// `None` accepts any peer.
    pub allowed_peers: Option<Vec<String>>,
    /// The node IDs in the peer's TLS certificate, when the link is TLS and
    /// the names check is on: the peer must then claim one of them.
    pub cert_node_ids: Option<Vec<String>>,
    /// The configured backend (listener or peer) the link belongs to, so a
    /// reload that removes the backend can close its links together.
    pub backend: BackendId,
}

/// Names one configured backend for the life of the process; never reused.
/// The default names no backend (links opened by tests and tools).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u64);

/// What the shell must do on the node's behalf.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Write one message to a connection. A flood hands every peer the
    /// same buffer: one copy of the message, not one per link.
    Send { conn: ConnId, msg: bytes::Bytes },
    /// Close a connection (after writing what was queued). `error` is the
    /// reason to log, if the close is a failure.
    Close { conn: ConnId, error: Option<String> },
    /// Hand a datagram to the local service it was sent to.
    Deliver {
        service: ServiceName,
        from_node: String,
        from_service: ServiceName,
        payload: bytes::BytesMut,
    },
    /// Tell a local service that something it sent could not be delivered.
    /// Boxed: the rare variant would otherwise double the size of every
    /// queued output (thousands queue up while a mesh converges).
    Unreachable {
        service: ServiceName,
        message: Box<UnreachableMessage>,
        received_from: String,
    },
    /// Another node has our ID and an older process: we must stop.
    Shutdown { reason: String },
}

/// How a local service is announced to the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct Advertise {
    pub conn_type: u8,
    pub tags: BTreeMap<String, String>,
}

/// Why a local send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    NoRoute,
    ServiceUnknown,
    ServiceNameTooLong,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::NoRoute => "no route to node",
            SendError::ServiceUnknown => PROBLEM_SERVICE_UNKNOWN,
            SendError::ServiceNameTooLong => "service name too long",
        })
    }
}

impl std::error::Error for SendError {}

/// A consistent copy of what `status` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    pub node_id: String,
    pub connections: Vec<(String, f64)>,
    pub routing_table: BTreeMap<String, String>,
    pub advertisements: Vec<ServiceAdvertisement>,
    pub known_connection_costs: CostTable,
}

#[derive(Debug)]
struct NodeSeq {
    epoch: u64,
    sequence: u64,
    /// The node's latest update as we flooded it on (`None` until we
    /// have), handed to each new peer: the one of this epoch and sequence.
    update: Option<StoredUpdate>,
}

/// A routing update kept for new peers, its names as IDs (a third of the
/// encoding's size, which every node would keep for every node); encoded
/// again with our ID as forwarder, it is the message we flooded, byte for
/// byte. It holds a reference to each name it lists.
#[derive(Debug)]
struct StoredUpdate {
    update_id: Box<str>,
    suspected_duplicate: u64,
    /// The graph's entry for the node while that is still what the node
    /// reported (most of the time): one list for both.
    connections: graph::Edges,
}

#[derive(Debug, Clone)]
struct StoredAd {
    ad: ServiceAdvertisement,
    time: i128,
    /// The ad as it arrived, encoded once and shared with every new peer
    /// it is handed to.
    msg: bytes::Bytes,
}

pub struct Node {
    id: String,
    /// `id` as a JSON string, spliced into the updates we flood on.
    id_json: Box<[u8]>,
    epoch: u64,
    sequence: u64,
    max_idle: Duration,
    ids: IdGen,
    conns: HashMap<ConnId, links::Conn>,
    peers: BTreeMap<String, ConnId>,
    graph: graph::Graph,
    /// By ID: the latest update of each node we have had one from.
    known: IdMap<NodeSeq>,
    seen_updates: seen::SeenUpdates,
    /// Next hop of each node we reach.
    routes: IdMap<Id>,
    /// The node of each name hash data messages may carry.
    names: HashMap<u64, Id>,
    own_hash: u64,
    ads: BTreeMap<(String, String), StoredAd>,
    /// New peers still being sent the routing updates and advertisements
    /// we know.
    shares: BTreeMap<ConnId, share::Share>,
    /// Which new peer goes first in the next round of sharing.
    share_turn: usize,
    limits: Limits,
    overflow: Overflow,
    /// The time of the latest input, for rate-limited log lines on paths
    /// that are not given one.
    clock: Instant,
    services: HashMap<ServiceName, Option<Advertise>>,
    work_commands: Vec<WorkCommand>,
    firewall: Firewall,
    /// Backends a reload removed: links they still open are closed at once.
    retired: HashSet<BackendId>,
    timers: TimerTable,
    outputs: outputs::Outputs,
}

impl Node {
    /// A node with ID `id` whose process started at `epoch` (Go's
    /// `unix_seconds << 24 | random`), drawing identifiers from `ids`.
    pub fn new(id: &str, epoch: u64, max_idle: Duration, ids: IdGen, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Ads, now + SERVICE_AD_INTERVAL);
        timers.set(Timer::PeriodicUpdate, now + ROUTE_UPDATE_INTERVAL);
        timers.set(Timer::IdleCheck, now + IDLE_CHECK_INTERVAL);
        timers.set(Timer::SeenSweep, now + SEEN_UPDATE_EXPIRY);
        let mut node = Node {
            id: id.to_string(),
            id_json: super::codec::json_string(id).into(),
            epoch,
            sequence: 0,
            max_idle,
            ids,
            conns: HashMap::new(),
            peers: BTreeMap::new(),
            graph: graph::Graph::new(id),
            known: IdMap::default(),
            seen_updates: seen::SeenUpdates::default(),
            routes: IdMap::default(),
            names: HashMap::new(),
            own_hash: node_hash(id),
            ads: BTreeMap::new(),
            shares: BTreeMap::new(),
            share_turn: 0,
            limits: Limits::default(),
            overflow: Overflow::default(),
            clock: now,
            services: HashMap::new(),
            work_commands: Vec::new(),
            firewall: Firewall::default(),
            retired: HashSet::new(),
            timers,
            outputs: outputs::Outputs::default(),
        };
        node.add_name(node.graph.own());
        node
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bounds on state fed from the network, from now on.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The rules every data message is checked against from now on.
    pub fn set_firewall(&mut self, firewall: Firewall) {
        self.firewall = firewall;
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.outputs.pop_front(&self.id_json);
        if out.is_none() && self.outputs.capacity() > OUTPUTS_KEPT {
            self.outputs.shrink_to(OUTPUTS_KEPT);
        }
        out
    }

    /// The next instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let earliest = self.timers.next().into_iter();
        earliest
            .chain(self.next_initial_send())
            .min()
            .expect("the periodic timers are always armed")
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.clock = now.mono;
        self.send_due_initial_messages(now.mono);
        for timer in self.timers.take_expired(now.mono) {
            self.fire(timer, now);
        }
    }

    fn fire(&mut self, timer: Timer, now: Now) {
        let t = now.mono;
        match timer {
            Timer::Flood => self.flood_own_update(0),
            Timer::Recompute => {
                self.timers.set(Timer::Recompute, t + RECOMPUTE_INTERVAL);
                self.recompute_routes();
            }
            Timer::PeriodicUpdate => {
                self.timers
                    .set(Timer::PeriodicUpdate, t + ROUTE_UPDATE_INTERVAL);
                if !self.peers.is_empty() {
                    self.flood_own_update(0);
                }
            }
            Timer::Ads => {
                self.timers.set(Timer::Ads, t + SERVICE_AD_INTERVAL);
                self.send_own_ads(now.wall);
            }
            Timer::IdleCheck => {
                self.timers.set(Timer::IdleCheck, t + IDLE_CHECK_INTERVAL);
                self.close_idle_connections(t);
            }
            Timer::Share => self.share_step(t),
            Timer::SeenSweep => {
                self.timers.set(Timer::SeenSweep, t + SEEN_UPDATE_EXPIRY);
                self.seen_updates.sweep();
            }
        }
    }

    /// Logs `what` at `level`, a few times per interval at most per `kind`.
    fn log_limited(&mut self, kind: Refusal, level: log::Level, what: impl FnOnce() -> String) {
        let now = self.clock;
        self.overflow.log(kind, level, now, what);
    }

    /// Remembers a node's name for its hash; the first name for a hash
    /// wins. Only nodes with an entry in the graph are named, and those
    /// keep their IDs.
    fn add_name(&mut self, id: Id) -> u64 {
        let hash = node_hash(self.graph.name(id));
        self.names.entry(hash).or_insert(id);
        hash
    }

    /// Whether every ID held without a reference (known nodes, routes, the
    /// hash table) is this node's or has a graph entry, so it cannot be
    /// released and given to another name.
    fn ids_have_entries(&self) -> bool {
        let known = self.known.iter().map(|(id, _)| id);
        let routed = self.routes.iter().flat_map(|(d, &h)| [d, h]);
        let hashed = self.names.values().copied();
        let own = self.graph.own();
        (known.chain(routed).chain(hashed)).all(|id| id == own || self.graph.has_entry(id))
    }

    /// Whether `node` is this node (or its alias) or currently reachable.
    pub fn has_route(&self, node: &str) -> bool {
        let node = super::addr::resolve(node, &self.id);
        node == self.id || self.next_hop(node).is_some()
    }

    /// The peer through which `node` is reached, if it is.
    fn next_hop(&self, node: &str) -> Option<&str> {
        let hop = self.routes.get(self.graph.id(node)?)?;
        Some(self.graph.name(*hop))
    }

    /// The routing table by name, as `status` shows it.
    fn route_table(&self) -> BTreeMap<String, String> {
        let name = |id: Id| self.graph.name(id).to_string();
        self.routes
            .iter()
            .map(|(d, &h)| (name(d), name(h)))
            .collect()
    }

    pub fn status(&self, wall: SystemTime) -> StatusSnapshot {
        let mut advertisements = self.own_ads(wall);
        // Status shows the work types on every own ad, as Go does.
        for ad in &mut advertisements {
            if !self.work_commands.is_empty() {
                ad.work_commands = Some(self.work_commands.clone());
            }
        }
        advertisements.extend(
            self.ads
                .values()
                .filter(|s| s.ad.node_id != self.id && !s.ad.cancel)
                .map(|s| s.ad.clone()),
        );
        StatusSnapshot {
            node_id: self.id.clone(),
            connections: self
                .peers
                .iter()
                .filter_map(|(p, c)| Some((p.clone(), self.conns.get(c)?.cost)))
                .collect(),
            routing_table: self.route_table(),
            advertisements,
            known_connection_costs: self.graph.cost_table(),
        }
    }
}

#[cfg(test)]
mod tests;
