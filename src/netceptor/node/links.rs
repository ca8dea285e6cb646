//! Backend connections: identifying the peer on a new link, the rules
//! that reject one, idle links, and losing a peer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info, warn};

use super::limits::Refusal;
use super::{BackendId, BackendParams, ConnId, Node, Now, Output};
use crate::gotime;
use crate::netceptor::codec::{self, MAX_MESSAGE_LEN, Message, REJECT_MESSAGE, RoutingUpdate};
use crate::netceptor::names;

const INITIAL_SEND_INTERVAL: Duration = Duration::from_secs(1);
/// Initial connect messages sent before giving up on a silent peer.
const INITIAL_SEND_LIMIT: u32 = 11;

#[derive(Debug)]
pub(super) enum ConnState {
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
pub(super) struct Conn {
    pub params: BackendParams,
    pub cost: f64,
    pub state: ConnState,
    pub last_received: Instant,
}

impl Node {
    /// A backend session exists: start identifying the peer.
    pub fn handle_conn_opened(&mut self, conn: ConnId, params: BackendParams, now: Instant) {
        if self.retired.contains(&params.backend) {
            // Its backend was removed while the session was being set up.
            self.outputs.push_back(Output::Close { conn, error: None });
            return;
        }
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
        self.shares.remove(&conn);
        if let ConnState::Established { peer, .. } = c.state {
            self.forget_peer(&peer, now);
        }
    }

    /// A reload removed backend `id`: its links close now, and any it
    /// still opens (a dial or accept under way) close as they open.
    pub fn handle_backend_retired(&mut self, id: BackendId, now: Instant) {
        self.retired.insert(id);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.params.backend == id)
            .map(|(&conn, _)| conn)
            .collect();
        for conn in conns {
            self.close(conn, None, now);
        }
    }

    fn forget_peer(&mut self, peer: &str, now: Instant) {
        self.peers.remove(peer);
        self.remove_edge(peer, &self.id.clone());
        self.remove_edge(&self.id.clone(), peer);
        self.schedule_flood(now);
        self.schedule_recompute(now);
    }

    pub(super) fn close(&mut self, conn: ConnId, error: Option<String>, now: Instant) {
        self.handle_conn_closed(conn, now);
        self.outputs.push_back(Output::Close { conn, error });
    }

    fn reject(&mut self, conn: ConnId, peer: &str, reason: &str, now: Instant) {
        self.outputs.push_back(Output::Send {
            conn,
            msg: bytes::Bytes::from_static(REJECT_MESSAGE),
        });
        let error = format!(
            "{}: rejected connection with node {} because {reason}",
            self.id,
            names::shown(peer)
        );
        self.close(conn, Some(error), now);
    }

    /// When the next initial connect message of a pending link is due.
    pub(super) fn next_initial_send(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match c.state {
                ConnState::Pending { next_send, .. } => Some(next_send),
                ConnState::Established { .. } => None,
            })
            .min()
    }

    pub(super) fn send_due_initial_messages(&mut self, now: Instant) {
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
            let msg = codec::encode_routing(&self.make_update(0)).into();
            self.outputs.push_back(Output::Send { conn, msg });
        }
    }

    pub(super) fn close_idle_connections(&mut self, now: Instant) {
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

    /// One whole message arrived on a connection.
    /// `msg` is one message from the link `conn`: a frame the shell read
    /// (a `Vec`), or a buffer shared with the other nodes it was sent to
    /// (`Bytes`, in the simulator).
    pub fn handle_message<M>(&mut self, conn: ConnId, msg: M, now: Now)
    where
        M: AsRef<[u8]> + Into<Vec<u8>> + Into<Bytes>,
    {
        self.clock = now.mono;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_received = now.mono;
        // The peer's name is copied out only for the messages that need
        // it beside `&mut self`, not for every data frame.
        let peer = match &c.state {
            ConnState::Established { peer, .. } => Some(peer),
            ConnState::Pending { .. } => None,
        };
        let decoded = match codec::decode(msg.as_ref()) {
            Ok(m) => m,
            Err(codec::DecodeError::UnknownType(t)) if peer.is_some() => {
                let what = || format!("Unknown message type {t}");
                return self.log_limited(Refusal::Undecodable, log::Level::Warn, what);
            }
            Err(e) => {
                let what = || format!("Error decoding message from backend: {e}");
                return self.log_limited(Refusal::Undecodable, log::Level::Error, what);
            }
        };
        match (peer, decoded) {
            (None, Message::Routing(ru)) => self.identify_peer(conn, ru, now),
            (_, Message::Reject) => {
                warn!("Received a rejection message from peer.");
                self.close(
                    conn,
                    Some("remote node rejected the connection".into()),
                    now.mono,
                );
            }
            (None, _) => {}
            (Some(_), Message::Data(h)) => self.handle_inbound_data(h, msg.into()),
            (Some(peer), Message::Routing(ru)) => {
                let peer = peer.clone();
                self.handle_peer_update(conn, &peer, ru, msg.into(), now.mono)
            }
            (Some(peer), Message::ServiceAd(ad)) => {
                let peer = peer.clone();
                self.handle_service_ad(ad, &peer, now.mono)
            }
        }
    }

    fn identify_peer(&mut self, conn: ConnId, ru: RoutingUpdate, at: Now) {
        let now = at.mono;
        let peer = ru.forwarding_node;
        if let Err(e) = names::check_node_id(&peer) {
            return self.reject(conn, &peer, &format!("its node ID {e}"), now);
        }
        if let Err(e) = names::check_node_id(&ru.node_id) {
            let reason = format!(
                "the NodeID {} of its first message {e}",
                names::shown(&ru.node_id)
            );
            return self.reject(conn, &peer, &reason, now);
        }
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
        // Go checks only the chain on backend links, so one node's stolen
        // certificate could join the mesh as any node.
        if let Some(ids) = &c.params.cert_node_ids
            && !ids.contains(&peer)
        {
            let reason = match ids.as_slice() {
                [] => "its TLS certificate lists no node IDs".to_string(),
                _ => format!("its TLS certificate is for node ID(s) {}", ids.join(", ")),
            };
            return self.reject(conn, &peer, &reason, now);
        }
        if self.peers.contains_key(&peer) {
            let reason = "it connected using a node ID we are already connected to";
            return self.reject(conn, &peer, reason, now);
        }
        let cost = c.params.node_cost.get(&peer).copied().unwrap_or(c.cost);
        // Our own update lists every peer; it must still fit a frame, or we
        // could update nobody (the name limit makes this need hundreds of
        // peers, but a frame is what matters).
        let size = self.own_update_size_with(&peer, cost);
        if size > MAX_MESSAGE_LEN {
            let reason = format!(
                "our routing update would be {size} bytes with it, more than a message can carry"
            );
            return self.reject(conn, &peer, &reason, now);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.cost = cost;
            c.state = ConnState::Established {
                peer: peer.clone(),
                peer_lists_us: false,
            };
        }
        debug!("Stopping initial updates");
        info!("Connection established with {peer}");
        self.peers.insert(peer.clone(), conn);
        self.set_edge(&self.id.clone(), &peer, cost);
        self.set_edge(&peer, &self.id.clone(), cost);
        if let Some(id) = self.graph.id(&peer) {
            self.add_name(id);
        }
        self.schedule_flood(now);
        self.schedule_recompute(now);
        self.share_with(conn, at);
    }

    /// The encoded size of the largest update we could send with `peer`
    /// added at `cost` (sequence and suspected epoch at their widest).
    fn own_update_size_with(&self, peer: &str, cost: f64) -> usize {
        let mut connections: std::collections::BTreeMap<String, f64> = self
            .peers
            .iter()
            .filter_map(|(p, conn)| Some((p.clone(), self.conns.get(conn)?.cost)))
            .collect();
        connections.insert(peer.to_string(), cost);
        let widest = RoutingUpdate {
            node_id: self.id.clone(),
            update_id: "x".repeat(8),
            update_epoch: u64::MAX,
            update_sequence: u64::MAX,
            connections,
            forwarding_node: self.id.clone(),
            suspected_duplicate: u64::MAX,
        };
        codec::encode_routing(&widest).len()
    }

    /// How many bytes are still waiting to be written on `conn` (the
    /// shell reports this for connections still being caught up, before
    /// `handle_timeout`).
    pub fn handle_link_backlog(&mut self, conn: ConnId, bytes: usize) {
        if let Some(share) = self.shares.get_mut(&conn) {
            share.backlog = bytes;
        }
    }

    /// Connections whose backlog the node wants to know: new peers still
    /// being handed what we know.
    pub fn conns_catching_up(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.shares.keys().copied()
    }

    /// `ru` is `raw` decoded.
    fn handle_peer_update(
        &mut self,
        conn: ConnId,
        peer: &str,
        ru: RoutingUpdate,
        raw: Bytes,
        now: Instant,
    ) {
        if ru.forwarding_node != peer {
            let reason = format!(
                "remote node ID changed unexpectedly from {peer} to {}",
                names::shown(&ru.node_id)
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
        self.handle_routing_update(ru, raw, conn, now);
    }

    pub(super) fn peer_of(&self, conn: ConnId) -> Option<String> {
        match &self.conns.get(&conn)?.state {
            ConnState::Established { peer, .. } => Some(peer.clone()),
            ConnState::Pending { .. } => None,
        }
    }
}
