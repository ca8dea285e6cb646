//! Routing updates: accepting fresh ones, flooding them on, our own
//! updates, and the routing table computed from what they say.

use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, error, info, warn};

use super::graph::Graph;
use super::interner::Id;
use super::limits::Refusal;
use super::timer::Timer;
use super::{
    ConnId, Node, NodeSeq, Output, RECOMPUTE_DELAY, RECOMPUTE_DELAY_MAX, RECOMPUTE_DELAY_PER_NODE,
    SOON, StoredUpdate,
};
use crate::netceptor::codec::{self, MAX_MESSAGE_LEN, RoutingUpdate};
use crate::netceptor::names::{self, NameError};

/// Above this many nodes, a recomputed routing table is logged as one
/// summary line instead of a line per node and route.
pub(super) const TABLE_LOG_NODES: usize = 64;
/// Connections a direct peer may list even when `maxconnections` is reached.
const PEER_RESERVE: usize = 256;

/// The first name in an update that breaks the rules of `names`.
fn bad_name(ru: &RoutingUpdate) -> Option<(&'static str, &str, NameError)> {
    let named = [
        ("NodeID", &ru.node_id),
        ("ForwardingNode", &ru.forwarding_node),
    ];
    let listed = ru.connections.keys().map(|k| ("a key of Connections", k));
    named
        .into_iter()
        .chain(listed)
        .find_map(|(what, name)| Some((what, name.as_str(), names::check_node_id(name).err()?)))
}

impl Node {
    /// `ru` is `raw` decoded, as it came from the peer on `from`.
    pub(super) fn handle_routing_update(
        &mut self,
        mut ru: RoutingUpdate,
        raw: Bytes,
        from: ConnId,
        now: Instant,
    ) {
        if let Some((what, name, e)) = bad_name(&ru) {
            let id = &ru.update_id;
            return self.overflow.warn(Refusal::BadUpdate, now, || {
                format!(
                    "Ignoring routing update {}: {what} {} {e}",
                    names::shown(id),
                    names::shown(name)
                )
            });
        }
        // Costs must be positive for shortest paths to exist; one bad
        // update must not stall routing on every node it reaches.
        if let Some((peer, cost)) = ru
            .connections
            .iter()
            .find(|(_, c)| !(c.is_finite() && **c > 0.0))
        {
            let (id, node) = (&ru.update_id, &ru.node_id);
            return self
                .overflow
                .log(Refusal::BadCost, log::Level::Error, now, || {
                    format!(
                        "Ignoring routing update {id} from {node}: invalid cost {cost} to {peer}"
                    )
                });
        }
        if ru.node_id == self.id {
            return self.handle_own_id_update(&ru);
        }
        if !self.seen_updates.first_sight(&ru.update_id) {
            return;
        }
        if ru.suspected_duplicate != 0 {
            warn!(
                "Node {} with epoch {} sent update {} suspecting a duplicate node with epoch {}",
                ru.node_id, ru.update_epoch, ru.update_id, ru.suspected_duplicate
            );
            if let Some(k) = self
                .graph
                .id(&ru.node_id)
                .and_then(|id| self.known.get_mut(id))
                && k.epoch == ru.suspected_duplicate
            {
                k.epoch = ru.update_epoch;
                k.sequence = ru.update_sequence;
                // Kept only with the epoch and sequence it carried.
                let old = k.update.take();
                release_update(&mut self.graph, old);
            }
        } else if !self.accept_fresh_update(&ru, from, now) {
            return;
        }
        if !self.flood_on(&mut ru, raw, from, now) {
            return;
        }
        if let Some(id) = self.graph.id(&ru.node_id)
            && let Some(k) = self.known.get(id)
            && (k.epoch, k.sequence) == (ru.update_epoch, ru.update_sequence)
        {
            self.store_update(id, &ru);
        }
    }

    /// Floods `ru` (`raw` as it came from `from`) on to our other peers,
    /// with us as forwarder; false if it would be too large.
    fn flood_on(&mut self, ru: &mut RoutingUpdate, raw: Bytes, from: ConnId, now: Instant) -> bool {
        let conns = self.flood_conns(Some(from));
        match codec::Forwardable::new(raw, ru) {
            Some(update) => match update.len_with(&self.id_json) {
                len if len > MAX_MESSAGE_LEN => return self.too_large(&ru.update_id, len, now),
                _ => self.outputs.push_forward(update, conns),
            },
            None => {
                ru.forwarding_node = self.id.clone();
                let msg = codec::encode_routing(ru);
                if msg.len() > MAX_MESSAGE_LEN {
                    return self.too_large(&ru.update_id, msg.len(), now);
                }
                self.outputs.push_flood(msg.into(), conns);
            }
        }
        true
    }

    /// Says that update `id` is not forwarded: false.
    fn too_large(&mut self, id: &str, len: usize, now: Instant) -> bool {
        // Only possible when our ID is longer than the forwarder's.
        self.overflow.warn(Refusal::TooLarge, now, || {
            format!("Not forwarding routing update {id}: {len} bytes is too large")
        });
        false
    }

    /// Keeps `ru`, as we flooded it on, as `node`'s latest update.
    fn store_update(&mut self, node: Id, ru: &RoutingUpdate) {
        // References are taken only once the update has its place: a
        // stored update owns one per name it lists.
        let Some(k) = self.known.get_mut(node) else {
            return;
        };
        let connections = match self.graph.entry_if(node, &ru.connections) {
            Some(entry) => {
                for &(to, _) in entry.iter() {
                    self.graph.retain_id(to);
                }
                entry
            }
            None => ru
                .connections
                .iter()
                .map(|(to, &c)| (self.graph.retain(to), c))
                .collect(),
        };
        let stored = StoredUpdate {
            update_id: ru.update_id.as_str().into(),
            suspected_duplicate: ru.suspected_duplicate,
            connections,
        };
        let old = k.update.replace(stored);
        release_update(&mut self.graph, old);
    }

    /// Records a newer update from another node; false if it is stale.
    fn accept_fresh_update(&mut self, ru: &RoutingUpdate, from: ConnId, now: Instant) -> bool {
        let via = self.peer_of(from).unwrap_or_default();
        debug!(
            "Received routing update {} from {} via {via}",
            ru.update_id, ru.node_id
        );
        match self.graph.id(&ru.node_id).and_then(|id| self.known.get(id)) {
            Some(k) if ru.update_epoch < k.epoch => return false,
            Some(k) if ru.update_epoch == k.epoch && ru.update_sequence <= k.sequence => {
                return false;
            }
            // Our own peers always count: the limit is for nodes we only
            // hear about.
            None if self.known.len() >= self.limits.max_nodes
                && !self.peers.contains_key(&ru.node_id) =>
            {
                let (node, max) = (&ru.node_id, self.limits.max_nodes);
                self.overflow.warn(Refusal::Nodes, now, || {
                    format!(
                        "Ignoring routing update from new node {}: {max} nodes are known already (node maxnodes)",
                        names::shown(node)
                    )
                });
                return false;
            }
            _ => {}
        }
        let old = self.graph.degree(&ru.node_id);
        let total = self.graph.edges().saturating_sub(old) + ru.connections.len();
        // A peer may list a few connections beyond the limit, so one that
        // joins while a flood fills the table is still routed.
        let peer_reserve =
            self.peers.contains_key(&ru.node_id) && ru.connections.len() <= PEER_RESERVE;
        if total > self.limits.max_connections && ru.connections.len() > old && !peer_reserve {
            let (node, max) = (&ru.node_id, self.limits.max_connections);
            self.overflow.warn(Refusal::Connections, now, || {
                format!(
                    "Ignoring routing update from {}: it would make more than {max} known connections (node maxconnections)",
                    names::shown(node)
                )
            });
            return false;
        }
        // Go floods its own update whenever it hears of a new node, so the
        // newcomer learns of it: every node of the mesh flooding, for each
        // node that joins or restarts. Here a newcomer is instead handed
        // what its own peers know when its link comes up (`share_with`),
        // and only nodes whose links changed flood.
        let (id, changed) = self.graph.set_node(&ru.node_id, &ru.connections);
        if !self.known.contains(id) {
            self.add_name(id);
        }
        let seq = NodeSeq {
            epoch: ru.update_epoch,
            sequence: ru.update_sequence,
            update: None,
        };
        let old = self.known.insert(id, seq);
        release_update(&mut self.graph, old.and_then(|k| k.update));
        if changed {
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

    /// Sets the cost of the connection `from -> to` in the cost table.
    pub(super) fn set_edge(&mut self, from: &str, to: &str, cost: f64) {
        self.graph.set_edge(from, to, cost);
    }

    /// Removes the connection `from -> to` from the cost table.
    pub(super) fn remove_edge(&mut self, from: &str, to: &str) {
        self.graph.remove_edge(from, to);
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
        self.flood(codec::encode_routing(&update).into(), None);
    }

    pub(super) fn flood(&mut self, msg: Bytes, except: Option<ConnId>) {
        let conns = self.flood_conns(except);
        self.outputs.push_flood(msg, conns);
    }

    /// The links of our peers but `except`.
    fn flood_conns(&self, except: Option<ConnId>) -> Box<[ConnId]> {
        let peers = self.peers.values().copied();
        peers.filter(|&conn| Some(conn) != except).collect()
    }

    pub(super) fn schedule_flood(&mut self, now: Instant) {
        self.timers.set_if_idle(Timer::Flood, now + SOON);
    }

    pub(super) fn schedule_recompute(&mut self, now: Instant) {
        let delay = recompute_delay(self.graph.len());
        self.timers.set_no_later(Timer::Recompute, now + delay);
    }

    pub(super) fn recompute_routes(&mut self) {
        debug!("Re-calculating routing table");
        self.routes = self.graph.routes();
        debug_assert!(self.ids_have_entries());
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        if self.graph.len() > TABLE_LOG_NODES {
            // A line per node would let a large (or forged) mesh fill the
            // disk: each recompute logs a summary instead.
            info!(
                "Known Connections: {} nodes, {} connections; Routing Table: {} routes (not listed above {TABLE_LOG_NODES} nodes)",
                self.graph.len(),
                self.graph.edges(),
                self.routes.len()
            );
            return;
        }
        info!("Known Connections:");
        for (node, edges) in self.graph.cost_table() {
            let list: String = edges.iter().map(|(p, c)| format!("{p}({c:.2}) ")).collect();
            info!("   {node}: {list}");
        }
        info!("Routing Table:");
        for (dest, hop) in self.route_table() {
            info!("   {dest} via {hop}");
        }
    }
}

/// Lets go of the names a stored update holds.
fn release_update(graph: &mut Graph, update: Option<StoredUpdate>) {
    for &(to, _) in update.iter().flat_map(|u| u.connections.iter()) {
        graph.release(to);
    }
}

/// How long routes wait after a change in a mesh of `nodes` known nodes.
fn recompute_delay(nodes: usize) -> Duration {
    let scaled = RECOMPUTE_DELAY_PER_NODE.saturating_mul(u32::try_from(nodes).unwrap_or(u32::MAX));
    scaled.clamp(RECOMPUTE_DELAY, RECOMPUTE_DELAY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_wait_longer_in_larger_meshes() {
        assert_eq!(recompute_delay(0), RECOMPUTE_DELAY);
        assert_eq!(recompute_delay(30), RECOMPUTE_DELAY);
        assert_eq!(recompute_delay(400), Duration::from_millis(20));
        assert_eq!(recompute_delay(1000), Duration::from_millis(50));
        assert_eq!(recompute_delay(100_000), RECOMPUTE_DELAY_MAX);
    }
}
