//! Routing updates: accepting fresh ones, flooding them on, our own
//! updates, and the routing table computed from what they say.

use std::time::Instant;

use log::{debug, error, info, warn};

use super::timer::Timer;
use super::{ConnId, Node, NodeSeq, Output, SOON};
use crate::netceptor::codec::{self, RoutingUpdate};
use crate::netceptor::routing;

/// Routing update IDs remembered at most (duplicate suppression).
pub(super) const SEEN_UPDATES_CAP: usize = 65_536;

impl Node {
    pub(super) fn handle_routing_update(
        &mut self,
        mut ru: RoutingUpdate,
        from: ConnId,
        now: Instant,
    ) {
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

    pub(super) fn make_update(&mut self, suspected_duplicate: u64) -> RoutingUpdate {
        self.sequence += 1;
        let connections = self
            .peers
            .iter()
            .filter_map(|(peer, conn)| Some((peer.clone(), self.conns.get(conn)?.cost)))
            .collect();
        RoutingUpdate {
            node_id: self.id.clone(),
            update_id: self.ids.alphanumeric(8),
            update_epoch: self.epoch,
            update_sequence: self.sequence,
            connections,
            forwarding_node: self.id.clone(),
            suspected_duplicate,
        }
    }

    pub(super) fn flood_own_update(&mut self, suspected_duplicate: u64) {
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

    pub(super) fn flood(&mut self, msg: &[u8], except: Option<ConnId>) {
        for &conn in self.peers.values() {
            if Some(conn) != except {
                self.outputs.push_back(Output::Send {
                    conn,
                    msg: msg.to_vec(),
                });
            }
        }
    }

    pub(super) fn schedule_flood(&mut self, now: Instant) {
        self.timers.set_if_idle(Timer::Flood, now + SOON);
    }

    pub(super) fn schedule_recompute(&mut self, now: Instant) {
        self.timers.set_no_later(Timer::Recompute, now + SOON);
    }

    pub(super) fn recompute_routes(&mut self) {
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
}
