//! The mesh node as a state machine, apart from sockets and threads.
//!
//! Inputs are `handle_*` calls with the current time; outputs are queued
//! [`Output`]s that the router thread drains with [`Node::poll_output`] after
//! every input, and [`Node::poll_timeout`] says when to call
//! [`Node::handle_timeout`] next. Nothing here blocks or reads a clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};

use log::{debug, error, info, warn};

use super::codec::{
    self, DATA_HEADER_LEN, DataHeader, Message, REJECT_MESSAGE, RoutingUpdate,
    ServiceAdvertisement, ServiceName, UnreachableMessage, WorkCommand,
};
use super::hash::node_hash;
use super::routing::{self, CostTable};
use crate::gotime;

pub type ConnId = u64;

/// Hop budget of locally originated data messages.
pub const MAX_FORWARDING_HOPS: u8 = 30;
pub const PROBLEM_SERVICE_UNKNOWN: &str = "service unknown";
pub const PROBLEM_EXPIRED: &str = "message expired";

const INITIAL_SEND_INTERVAL: Duration = Duration::from_secs(1);
/// Initial connect messages sent before giving up on a silent peer.
const INITIAL_SEND_LIMIT: u32 = 11;
const ROUTE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);
const SERVICE_AD_INTERVAL: Duration = Duration::from_secs(60);
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
const SEEN_UPDATE_EXPIRY: Duration = Duration::from_secs(3600);
const RECOMPUTE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Routing update IDs remembered at most (duplicate suppression).
const SEEN_UPDATES_CAP: usize = 65_536;
/// How soon a change (new peer, lost peer, new node) reaches the mesh.
const SOON: Duration = Duration::from_millis(100);

const RESERVED_PING: &[u8] = b"ping";
const RESERVED_UNREACH: &[u8] = b"unreach";

/// How a backend connection may be used, from its listener or peer config.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendParams {
    pub cost: f64,
    pub node_cost: BTreeMap<String, f64>,
    /// `None` accepts any peer.
    pub allowed_peers: Option<Vec<String>>,
}

/// What the shell must do on the node's behalf.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Write one message to a connection.
    Send { conn: ConnId, msg: Vec<u8> },
    /// Close a connection (after writing what was queued). `error` is the
    /// reason to log, if the close is a failure.
    Close { conn: ConnId, error: Option<String> },
    /// Hand a datagram to the local service it was sent to.
    Deliver {
        service: ServiceName,
        from_node: String,
        from_service: ServiceName,
        payload: BytesMut,
    },
    /// Tell a local service that something it sent could not be delivered.
    Unreachable {
        service: ServiceName,
        message: UnreachableMessage,
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

#[derive(Debug)]
enum ConnState {
    Pending {
        sends: u32,
        next_send: Instant,
    },
    Established {
        peer: String,
        /// The peer has listed us in one of its own updates.
        peer_lists_us: bool,
    },
}

#[derive(Debug)]
struct Conn {
    params: BackendParams,
    cost: f64,
    state: ConnState,
    last_received: Instant,
}

#[derive(Debug, Clone, Copy)]
struct NodeSeq {
    epoch: u64,
    sequence: u64,
}

#[derive(Debug, Clone)]
struct StoredAd {
    ad: ServiceAdvertisement,
    time: i128,
}

/// Why a local send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    NoRoute,
    ServiceUnknown,
    ServiceNameTooLong,
    Stopped,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::NoRoute => "no route to node",
            SendError::ServiceUnknown => PROBLEM_SERVICE_UNKNOWN,
            SendError::ServiceNameTooLong => "service name too long",
            SendError::Stopped => "node is shutting down",
        })
    }
}

/// A consistent copy of what `status` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    pub node_id: String,
    pub connections: Vec<(String, f64)>,
    pub routing_table: BTreeMap<String, String>,
    pub advertisements: Vec<ServiceAdvertisement>,
    pub known_connection_costs: CostTable,
}

pub struct Node {
    id: String,
    epoch: u64,
    sequence: u64,
    max_idle: Duration,
    conns: HashMap<ConnId, Conn>,
    peers: BTreeMap<String, ConnId>,
    costs: CostTable,
    known: HashMap<String, NodeSeq>,
    seen_updates: HashMap<String, Instant>,
    routes: BTreeMap<String, String>,
    names: HashMap<u64, String>,
    own_hash: u64,
    ads: BTreeMap<(String, String), StoredAd>,
    services: HashMap<ServiceName, Option<Advertise>>,
    work_commands: Vec<WorkCommand>,
    flood_at: Option<Instant>,
    recompute_at: Option<Instant>,
    ads_at: Instant,
    periodic_update_at: Instant,
    idle_check_at: Instant,
    seen_sweep_at: Instant,
    outputs: VecDeque<Output>,
}

impl Node {
    pub fn new(id: &str, epoch: u64, max_idle: Duration, now: Instant) -> Self {
        let mut node = Node {
            id: id.to_string(),
            epoch,
            sequence: 0,
            max_idle,
            conns: HashMap::new(),
            peers: BTreeMap::new(),
            costs: CostTable::new(),
            known: HashMap::new(),
            seen_updates: HashMap::new(),
            routes: BTreeMap::new(),
            names: HashMap::new(),
            own_hash: node_hash(id),
            ads: BTreeMap::new(),
            services: HashMap::new(),
            work_commands: Vec::new(),
            flood_at: None,
            recompute_at: None,
            ads_at: now + SERVICE_AD_INTERVAL,
            periodic_update_at: now + ROUTE_UPDATE_INTERVAL,
            idle_check_at: now + IDLE_CHECK_INTERVAL,
            seen_sweep_at: now + SEEN_UPDATE_EXPIRY / 2,
            outputs: VecDeque::new(),
        };
        node.add_name(id);
        node
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next instant at which `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Instant {
        let pending = self.conns.values().filter_map(|c| match c.state {
            ConnState::Pending { next_send, .. } => Some(next_send),
            ConnState::Established { .. } => None,
        });
        [
            self.ads_at,
            self.periodic_update_at,
            self.idle_check_at,
            self.seen_sweep_at,
        ]
        .into_iter()
        .chain(self.flood_at)
        .chain(self.recompute_at)
        .chain(pending)
        .min()
        .unwrap_or(self.idle_check_at)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_due_initial_messages(now);
        if self.flood_at.is_some_and(|t| t <= now) {
            self.flood_at = None;
            self.flood_own_update(0);
        }
        if self.recompute_at.is_some_and(|t| t <= now) {
            self.recompute_at = Some(now + RECOMPUTE_INTERVAL);
            self.recompute_routes();
        }
        if self.periodic_update_at <= now {
            self.periodic_update_at = now + ROUTE_UPDATE_INTERVAL;
            if !self.peers.is_empty() {
                self.flood_own_update(0);
            }
        }
        if self.ads_at <= now {
            self.ads_at = now + SERVICE_AD_INTERVAL;
            self.send_own_ads(SystemTime::now());
        }
        if self.idle_check_at <= now {
            self.idle_check_at = now + IDLE_CHECK_INTERVAL;
            self.close_idle_connections(now);
        }
        if self.seen_sweep_at <= now {
            self.seen_sweep_at = now + SEEN_UPDATE_EXPIRY / 2;
            self.seen_updates
                .retain(|_, seen| now.duration_since(*seen) < SEEN_UPDATE_EXPIRY);
        }
    }

    // ----- connections -----

    /// A backend session exists: start identifying the peer.
    pub fn handle_conn_opened(&mut self, conn: ConnId, params: BackendParams, now: Instant) {
        let cost = params.cost;
        self.conns.insert(
            conn,
            Conn {
                params,
                cost,
                state: ConnState::Pending {
                    sends: 0,
                    next_send: now,
                },
                last_received: now,
            },
        );
        self.send_due_initial_messages(now);
    }

    pub fn handle_conn_closed(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let ConnState::Established { peer, .. } = c.state {
            self.forget_peer(&peer, now);
        }
    }

    fn forget_peer(&mut self, peer: &str, now: Instant) {
        self.peers.remove(peer);
        if let Some(edges) = self.costs.get_mut(peer) {
            edges.remove(&self.id);
        }
        if let Some(edges) = self.costs.get_mut(&self.id) {
            edges.remove(peer);
        }
        self.schedule_flood(now);
        self.schedule_recompute(now);
    }

    fn close(&mut self, conn: ConnId, error: Option<String>, now: Instant) {
        self.handle_conn_closed(conn, now);
        self.outputs.push_back(Output::Close { conn, error });
    }

    fn reject(&mut self, conn: ConnId, peer: &str, reason: &str, now: Instant) {
        self.outputs.push_back(Output::Send {
            conn,
            msg: REJECT_MESSAGE.to_vec(),
        });
        let error = format!(
            "{}: rejected connection with node {peer} because {reason}",
            self.id
        );
        self.close(conn, Some(error), now);
    }

    fn send_due_initial_messages(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Pending { next_send, .. } if next_send <= now))
            .map(|(&id, _)| id)
            .collect();
        for conn in due {
            let Some(ConnState::Pending { sends, .. }) = self.conns.get(&conn).map(|c| &c.state)
            else {
                continue;
            };
            if *sends >= INITIAL_SEND_LIMIT {
                warn!("Giving up on connection initialization");
                self.close(conn, None, now);
                continue;
            }
            let sends = sends + 1;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::Pending {
                    sends,
                    next_send: now + INITIAL_SEND_INTERVAL,
                };
            }
            debug!("Sending initial connection message");
            let msg = codec::encode_routing(&self.make_update(0));
            self.outputs.push_back(Output::Send { conn, msg });
        }
    }

    fn close_idle_connections(&mut self, now: Instant) {
        let idle: Vec<(ConnId, String)> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_received) > self.max_idle)
            .filter_map(|(&id, c)| match &c.state {
                ConnState::Established { peer, .. } => Some((id, peer.clone())),
                ConnState::Pending { .. } => None,
            })
            .collect();
        for (conn, peer) in idle {
            warn!(
                "Timing out connection {peer}, idle for the past {}",
                gotime::duration_string(self.max_idle)
            );
            self.close(conn, None, now);
        }
    }

    // ----- inbound messages -----

    /// One whole message arrived on a connection.
    pub fn handle_message(&mut self, conn: ConnId, msg: Vec<u8>, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_received = now;
        let peer = match &c.state {
            ConnState::Established { peer, .. } => Some(peer.clone()),
            ConnState::Pending { .. } => None,
        };
        let decoded = match codec::decode(&msg) {
            Ok(m) => m,
            Err(codec::DecodeError::UnknownType(t)) if peer.is_some() => {
                warn!("Unknown message type {t}");
                return;
            }
            Err(e) => {
                error!("Error decoding message from backend: {e}");
                return;
            }
        };
        match (peer, decoded) {
            (None, Message::Routing(ru)) => self.identify_peer(conn, ru, now),
            (_, Message::Reject) => {
                warn!("Received a rejection message from peer.");
                self.close(
                    conn,
                    Some("remote node rejected the connection".into()),
                    now,
                );
            }
            (None, _) => {}
            (Some(_), Message::Data(h)) => self.handle_inbound_data(h, msg, now),
            (Some(peer), Message::Routing(ru)) => self.handle_peer_update(conn, &peer, ru, now),
            (Some(peer), Message::ServiceAd(ad)) => self.handle_service_ad(ad, &peer),
        }
    }

    fn identify_peer(&mut self, conn: ConnId, ru: RoutingUpdate, now: Instant) {
        let peer = ru.forwarding_node;
        if peer == self.id {
            return self.reject(
                conn,
                &peer,
                "it tried to connect using our own node ID",
                now,
            );
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Some(allowed) = &c.params.allowed_peers
            && !allowed.contains(&peer)
        {
            return self.reject(conn, &peer, "it is not in the allowed peers list", now);
        }
        if self.peers.contains_key(&peer) {
            let reason = "it connected using a node ID we are already connected to";
            return self.reject(conn, &peer, reason, now);
        }
        let cost = c.params.node_cost.get(&peer).copied().unwrap_or(c.cost);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.cost = cost;
            c.state = ConnState::Established {
                peer: peer.clone(),
                peer_lists_us: false,
            };
        }
        debug!("Stopping initial updates");
        info!("Connection established with {peer}");
        self.add_name(&peer);
        self.peers.insert(peer.clone(), conn);
        self.costs
            .entry(self.id.clone())
            .or_default()
            .insert(peer.clone(), cost);
        self.costs
            .entry(peer.clone())
            .or_default()
            .insert(self.id.clone(), cost);
        self.schedule_flood(now);
        self.schedule_recompute(now);
        self.share_ads_with(conn, SystemTime::now());
    }

    fn handle_peer_update(&mut self, conn: ConnId, peer: &str, ru: RoutingUpdate, now: Instant) {
        if ru.forwarding_node != peer {
            let reason = format!(
                "remote node ID changed unexpectedly from {peer} to {}",
                ru.node_id
            );
            return self.reject(conn, peer, &reason, now);
        }
        if ru.node_id == peer {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let ConnState::Established { peer_lists_us, .. } = &mut c.state else {
                return;
            };
            match ru.connections.get(&self.id) {
                None if *peer_lists_us => {
                    let reason = "remote node no longer lists us as a connection";
                    return self.reject(conn, peer, reason, now);
                }
                // A late initial message: the peer has not registered us yet.
                None => return,
                Some(&cost) => {
                    *peer_lists_us = true;
                    if cost != c.cost {
                        let reason = "we disagree about the connection cost";
                        return self.reject(conn, peer, reason, now);
                    }
                }
            }
        }
        self.handle_routing_update(ru, conn, now);
    }

    fn handle_routing_update(&mut self, mut ru: RoutingUpdate, from: ConnId, now: Instant) {
        if ru.node_id.is_empty() {
            return;
        }
        // Costs must be positive for shortest paths to exist; one bad
        // update must not stall routing on every node it reaches.
        if let Some((peer, cost)) = ru
            .connections
            .iter()
            .find(|(_, c)| !(c.is_finite() && **c > 0.0))
        {
            error!(
                "Ignoring routing update {} from {}: invalid cost {cost} to {peer}",
                ru.update_id, ru.node_id
            );
            return;
        }
        if ru.node_id == self.id {
            return self.handle_own_id_update(&ru);
        }
        if self.seen_updates.contains_key(&ru.update_id) {
            return;
        }
        if self.seen_updates.len() >= SEEN_UPDATES_CAP {
            // Peers choose update IDs; forget the oldest half rather than
            // grow without bound before the hourly sweep.
            let mut times: Vec<Instant> = self.seen_updates.values().copied().collect();
            times.sort_unstable();
            let cutoff = times[times.len() / 2];
            self.seen_updates.retain(|_, t| *t > cutoff);
        }
        self.seen_updates.insert(ru.update_id.clone(), now);
        if ru.suspected_duplicate != 0 {
            warn!(
                "Node {} with epoch {} sent update {} suspecting a duplicate node with epoch {}",
                ru.node_id, ru.update_epoch, ru.update_id, ru.suspected_duplicate
            );
            if let Some(k) = self.known.get_mut(&ru.node_id)
                && k.epoch == ru.suspected_duplicate
            {
                *k = NodeSeq {
                    epoch: ru.update_epoch,
                    sequence: ru.update_sequence,
                };
            }
        } else if !self.accept_fresh_update(&ru, from, now) {
            return;
        }
        ru.forwarding_node = self.id.clone();
        self.flood(&codec::encode_routing(&ru), Some(from));
    }

    /// Records a newer update from another node; false if it is stale.
    fn accept_fresh_update(&mut self, ru: &RoutingUpdate, from: ConnId, now: Instant) -> bool {
        let via = self.peer_of(from).unwrap_or_default();
        debug!(
            "Received routing update {} from {} via {via}",
            ru.update_id, ru.node_id
        );
        match self.known.get(&ru.node_id) {
            Some(k) if ru.update_epoch < k.epoch => return false,
            Some(k) if ru.update_epoch == k.epoch && ru.update_sequence <= k.sequence => {
                return false;
            }
            // A known node restarted and knows nobody: tell it about us now
            // rather than at our next periodic update (Go waits for that).
            Some(k) if ru.update_epoch > k.epoch => self.schedule_flood(now),
            Some(_) => {}
            None => {
                self.schedule_flood(now);
                self.add_name(&ru.node_id);
            }
        }
        self.known.insert(
            ru.node_id.clone(),
            NodeSeq {
                epoch: ru.update_epoch,
                sequence: ru.update_sequence,
            },
        );
        if self.costs.get(&ru.node_id) != Some(&ru.connections) {
            self.costs
                .insert(ru.node_id.clone(), ru.connections.clone());
            for (node, edges) in self.costs.iter_mut() {
                if *node != self.id && !ru.connections.contains_key(node) {
                    edges.remove(&ru.node_id);
                }
            }
            self.schedule_recompute(now);
        }
        true
    }

    fn handle_own_id_update(&mut self, ru: &RoutingUpdate) {
        if ru.update_epoch == self.epoch {
            return;
        }
        if ru.suspected_duplicate == self.epoch {
            let reason = format!(
                "We are a duplicate node with ID {} and epoch {}.  Shutting down.",
                self.id, self.epoch
            );
            error!("{reason}");
            self.outputs.push_back(Output::Shutdown { reason });
        } else if ru.update_epoch > self.epoch {
            error!("Duplicate node ID {} detected", ru.node_id);
            self.flood_own_update(ru.update_epoch);
        }
    }

    fn handle_service_ad(&mut self, ad: ServiceAdvertisement, from_peer: &str) {
        if ad.node_id == self.id {
            return;
        }
        debug!("Received service advertisement from {}", ad.node_id);
        let Some(time) = gotime::parse_rfc3339(&ad.time) else {
            error!(
                "Error handling service advertisement: bad time {:?}",
                ad.time
            );
            return;
        };
        let key = (ad.node_id.clone(), ad.service.clone());
        if self.ads.get(&key).is_some_and(|s| time <= s.time) {
            return;
        }
        let msg = codec::encode_service_ad(&ad);
        // A cancel stays as a tombstone with its time, so copies of it
        // arriving round a loop are recognised and not flooded again.
        self.ads.insert(key, StoredAd { ad, time });
        let from = self.peers.get(from_peer).copied();
        self.flood(&msg, from);
    }

    // ----- data -----

    fn handle_inbound_data(&mut self, h: DataHeader, frame: Vec<u8>, now: Instant) {
        let (Some(from), Some(to)) = (self.names.get(&h.from_node), self.names.get(&h.to_node))
        else {
            error!("Error translating data to message struct: hash not found");
            return;
        };
        let (from, to) = (from.clone(), to.clone());
        if to != self.id {
            return self.forward(h, &from, &to, frame, now);
        }
        // Owning the frame's buffer, skip the header without copying.
        let mut payload = BytesMut::from(Bytes::from(frame));
        payload.advance(DATA_HEADER_LEN);
        if let Err(e) = self.deliver_local(h, &from, payload, now) {
            error!("Error handling message data: {e}");
        }
    }

    /// Sends a datagram from a local service (or relays one from a peer).
    pub fn send(
        &mut self,
        from_service: ServiceName,
        to_node: &str,
        to_service: &str,
        payload: &[u8],
        hops: u8,
        now: Instant,
    ) -> Result<(), SendError> {
        let to_service = ServiceName::new(to_service).map_err(|_| SendError::ServiceNameTooLong)?;
        let to_node = if to_node.eq_ignore_ascii_case("localhost") {
            self.id.clone()
        } else {
            to_node.to_string()
        };
        let h = DataHeader {
            hops_to_live: hops,
            from_node: self.own_hash,
            to_node: self.add_name(&to_node),
            from_service,
            to_service,
        };
        if to_node == self.id {
            let id = self.id.clone();
            return self.deliver_local(h, &id, BytesMut::from(payload), now);
        }
        if !self.routes.contains_key(&to_node) && hops > 0 {
            return Err(SendError::NoRoute);
        }
        let id = self.id.clone();
        self.forward(h, &id, &to_node, h.encode(payload), now);
        Ok(())
    }

    fn forward(&mut self, h: DataHeader, from: &str, to: &str, mut frame: Vec<u8>, now: Instant) {
        if h.hops_to_live == 0 {
            if h.from_service.as_bytes() != RESERVED_UNREACH {
                self.send_unreachable(from, to, h, PROBLEM_EXPIRED, now);
            }
            return;
        }
        let Some(conn) = self.routes.get(to).and_then(|hop| self.peers.get(hop)) else {
            error!("Error handling message data: no route to node {to}");
            return;
        };
        frame[1] = h.hops_to_live - 1;
        self.outputs.push_back(Output::Send {
            conn: *conn,
            msg: frame,
        });
    }

    fn deliver_local(
        &mut self,
        h: DataHeader,
        from: &str,
        payload: BytesMut,
        now: Instant,
    ) -> Result<(), SendError> {
        match h.to_service.as_bytes() {
            // Never answer a reserved service: a forged ping from `ping`
            // would otherwise echo forever (or recurse without end when it
            // claims to come from ourselves).
            RESERVED_PING
                if ![RESERVED_PING, RESERVED_UNREACH].contains(&h.from_service.as_bytes()) =>
            {
                let ping = ServiceName::new("ping").unwrap_or_default();
                let reply_to = h.from_service.to_text();
                return self.send(ping, from, &reply_to, &[], MAX_FORWARDING_HOPS, now);
            }
            RESERVED_PING => return Ok(()),
            RESERVED_UNREACH => {
                self.handle_unreachable(h, from, &payload);
                return Ok(());
            }
            _ => {}
        }
        if self.services.contains_key(&h.to_service) {
            self.outputs.push_back(Output::Deliver {
                service: h.to_service,
                from_node: from.to_string(),
                from_service: h.from_service,
                payload,
            });
            return Ok(());
        }
        if from == self.id {
            return Err(SendError::ServiceUnknown);
        }
        let to = self.id.clone();
        self.send_unreachable(from, &to, h, PROBLEM_SERVICE_UNKNOWN, now);
        Ok(())
    }

    fn handle_unreachable(&mut self, h: DataHeader, from: &str, payload: &[u8]) {
        let message: UnreachableMessage = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                error!("Error handling message data: bad unreachable message: {e}");
                return;
            }
        };
        warn!(
            "Received unreachable message from {from} (service {}) to {} (service {}): ttl {}, data {}",
            h.from_service, self.id, h.to_service, h.hops_to_live, message.problem
        );
        if message.from_node != self.id {
            return;
        }
        let Ok(service) = ServiceName::new(&message.from_service) else {
            return;
        };
        if self.services.contains_key(&service) {
            self.outputs.push_back(Output::Unreachable {
                service,
                message,
                received_from: from.to_string(),
            });
        }
    }

    fn send_unreachable(
        &mut self,
        from: &str,
        to: &str,
        h: DataHeader,
        problem: &str,
        now: Instant,
    ) {
        let message = UnreachableMessage {
            from_node: from.to_string(),
            to_node: to.to_string(),
            from_service: h.from_service.to_text(),
            to_service: h.to_service.to_text(),
            problem: problem.to_string(),
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        let unreach = ServiceName::new("unreach").unwrap_or_default();
        if let Err(e) = self.send(unreach, from, "unreach", &payload, MAX_FORWARDING_HOPS, now) {
            debug!("Could not send unreachable message to {from}: {e}");
        }
    }

    // ----- local services -----

    /// Binds a service name so datagrams to it are delivered.
    pub fn bind(
        &mut self,
        service: &str,
        advertise: Option<Advertise>,
        now: Instant,
    ) -> Result<ServiceName, String> {
        let name = ServiceName::new(service).map_err(|e| e.to_string())?;
        if [RESERVED_PING, RESERVED_UNREACH].contains(&name.as_bytes())
            || self.services.contains_key(&name)
        {
            return Err(format!("service {service} is defined in reserved services"));
        }
        debug!("{} added service {service} to listener registry", self.id);
        let advertised = advertise.is_some();
        self.services.insert(name, advertise);
        if advertised {
            // Go announces a new service within 5 s; we do it at once.
            self.ads_at = self.ads_at.min(now + SOON);
        }
        Ok(name)
    }

    /// Binds an unused random 8-character service name, never advertised.
    pub fn bind_ephemeral(&mut self, now: Instant) -> ServiceName {
        loop {
            let name = crate::random::alphanumeric(8);
            if let Ok(s) = self.bind(&name, None, now) {
                return s;
            }
        }
    }

    pub fn unbind(&mut self, service: ServiceName) {
        let Some(Some(advert)) = self.services.remove(&service) else {
            return;
        };
        let ad = ServiceAdvertisement {
            node_id: self.id.clone(),
            service: service.to_text(),
            time: gotime::rfc3339_nano(SystemTime::now()),
            conn_type: advert.conn_type,
            tags: None,
            work_commands: None,
            cancel: true,
        };
        self.flood(&codec::encode_service_ad(&ad), None);
    }

    pub fn add_work_command(&mut self, command: WorkCommand) {
        self.work_commands.push(command);
    }

    fn own_ads(&self, time: SystemTime) -> Vec<ServiceAdvertisement> {
        let time = gotime::rfc3339_nano(time);
        let mut ads: Vec<_> = self
            .services
            .iter()
            .filter_map(|(name, adv)| Some((name, adv.as_ref()?)))
            .map(|(name, adv)| {
                let is_control = adv.tags.get("type").is_some_and(|t| t == "Control Service");
                ServiceAdvertisement {
                    node_id: self.id.clone(),
                    service: name.to_text(),
                    time: time.clone(),
                    conn_type: adv.conn_type,
                    tags: Some(adv.tags.clone()),
                    work_commands: (is_control && !self.work_commands.is_empty())
                        .then(|| self.work_commands.clone()),
                    cancel: false,
                }
            })
            .collect();
        ads.sort_by(|a, b| a.service.cmp(&b.service));
        ads
    }

    fn send_own_ads(&mut self, time: SystemTime) {
        for ad in self.own_ads(time) {
            debug!(
                "Sending service advertisement: {} {}",
                ad.node_id, ad.service
            );
            self.flood(&codec::encode_service_ad(&ad), None);
        }
    }

    /// A new peer learns every advertisement we know at once, instead of
    /// waiting up to a minute for the periodic round as Go peers do.
    fn share_ads_with(&mut self, conn: ConnId, time: SystemTime) {
        let mut msgs: Vec<Vec<u8>> = self
            .own_ads(time)
            .iter()
            .map(codec::encode_service_ad)
            .collect();
        let live = self.ads.values().filter(|s| !s.ad.cancel);
        msgs.extend(live.map(|s| codec::encode_service_ad(&s.ad)));
        for msg in msgs {
            self.outputs.push_back(Output::Send { conn, msg });
        }
    }

    // ----- routing -----

    fn make_update(&mut self, suspected_duplicate: u64) -> RoutingUpdate {
        self.sequence += 1;
        let connections = self
            .peers
            .iter()
            .filter_map(|(peer, conn)| Some((peer.clone(), self.conns.get(conn)?.cost)))
            .collect();
        RoutingUpdate {
            node_id: self.id.clone(),
            update_id: crate::random::alphanumeric(8),
            update_epoch: self.epoch,
            update_sequence: self.sequence,
            connections,
            forwarding_node: self.id.clone(),
            suspected_duplicate,
        }
    }

    fn flood_own_update(&mut self, suspected_duplicate: u64) {
        let update = self.make_update(suspected_duplicate);
        let conns: Vec<String> = update
            .connections
            .iter()
            .map(|(p, c)| format!("{p}({c:.2})"))
            .collect();
        debug!(
            "Sending routing update {}. Connections: {}",
            update.update_id,
            conns.join(" ")
        );
        self.flood(&codec::encode_routing(&update), None);
    }

    fn flood(&mut self, msg: &[u8], except: Option<ConnId>) {
        for &conn in self.peers.values() {
            if Some(conn) != except {
                self.outputs.push_back(Output::Send {
                    conn,
                    msg: msg.to_vec(),
                });
            }
        }
    }

    fn schedule_flood(&mut self, now: Instant) {
        self.flood_at.get_or_insert(now + SOON);
    }

    fn schedule_recompute(&mut self, now: Instant) {
        let soon = now + SOON;
        self.recompute_at = Some(self.recompute_at.map_or(soon, |t| t.min(soon)));
    }

    fn recompute_routes(&mut self) {
        debug!("Re-calculating routing table");
        self.routes = routing::compute(&self.id, &self.costs);
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        info!("Known Connections:");
        for (node, edges) in &self.costs {
            let list: String = edges.iter().map(|(p, c)| format!("{p}({c:.2}) ")).collect();
            info!("   {node}: {list}");
        }
        info!("Routing Table:");
        for (dest, hop) in &self.routes {
            info!("   {dest} via {hop}");
        }
    }

    fn peer_of(&self, conn: ConnId) -> Option<String> {
        match &self.conns.get(&conn)?.state {
            ConnState::Established { peer, .. } => Some(peer.clone()),
            ConnState::Pending { .. } => None,
        }
    }

    /// Remembers a node name for its hash; the first name for a hash wins.
    fn add_name(&mut self, name: &str) -> u64 {
        let hash = node_hash(name);
        self.names.entry(hash).or_insert_with(|| name.to_string());
        hash
    }

    pub fn has_route(&self, node: &str) -> bool {
        node == self.id || node.eq_ignore_ascii_case("localhost") || self.routes.contains_key(node)
    }

    pub fn status(&self, now: SystemTime) -> StatusSnapshot {
        let mut advertisements = self.own_ads(now);
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
            routing_table: self.routes.clone(),
            advertisements,
            known_connection_costs: self.costs.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
