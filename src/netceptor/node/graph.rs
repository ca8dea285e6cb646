//! The mesh's connection costs as the nodes report them, with the index
//! that makes taking in one node's update cost what the update changes
//! rather than the size of the mesh.
//!
//! When a node reports its connections, every other node's connection to
//! it that it no longer lists is dropped (a link is only as alive as both
//! ends say). Go finds those by walking the whole table on every changed
//! update, O(nodes) each; in a mesh of a thousand nodes that walk was most
//! of a node's CPU while routes converge. `listed_by` answers "who lists
//! this node" directly.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::netceptor::routing::CostTable;

#[derive(Debug, Default)]
pub(super) struct Graph {
    costs: CostTable,
    /// For each node, the nodes whose entries list it.
    listed_by: HashMap<String, BTreeSet<String>>,
    /// Connections in `costs`, all nodes together.
    edges: usize,
}

impl Graph {
    pub fn costs(&self) -> &CostTable {
        &self.costs
    }

    /// Connections known, all nodes together.
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// Nodes with an entry.
    pub fn len(&self) -> usize {
        self.costs.len()
    }

    /// The connections `node` is known to have.
    pub fn get(&self, node: &str) -> Option<&BTreeMap<String, f64>> {
        self.costs.get(node)
    }

    /// Sets the cost of the connection `from -> to`.
    pub fn set_edge(&mut self, from: &str, to: &str, cost: f64) {
        let edges = self.costs.entry(from.to_string()).or_default();
        if edges.insert(to.to_string(), cost).is_none() {
            self.edges += 1;
            self.list(to, from);
        }
    }

    /// Removes the connection `from -> to`.
    pub fn remove_edge(&mut self, from: &str, to: &str) {
        if let Some(edges) = self.costs.get_mut(from)
            && edges.remove(to).is_some()
        {
            self.edges = self.edges.saturating_sub(1);
            self.unlist(to, from);
        }
    }

    /// `node` reports exactly `connections`: its entry becomes that, and
    /// every other node's connection to it that it does not list is
    /// dropped, except those of `keep` (this node, whose own links are
    /// what its backends say). False if nothing changed.
    pub fn set_node(
        &mut self,
        node: &str,
        connections: &BTreeMap<String, f64>,
        keep: &str,
    ) -> bool {
        if self.costs.get(node) == Some(connections) {
            return false;
        }
        let old = self.costs.insert(node.to_string(), connections.clone());
        for to in old.iter().flat_map(|o| o.keys()) {
            if !connections.contains_key(to) {
                self.unlist(to, node);
            }
        }
        for to in connections.keys() {
            self.list(to, node);
        }
        self.edges = self.edges.saturating_sub(old.map_or(0, |o| o.len())) + connections.len();
        let stale: Vec<String> = self
            .listed_by
            .get(node)
            .into_iter()
            .flatten()
            .filter(|from| *from != node && *from != keep && !connections.contains_key(*from))
            .cloned()
            .collect();
        for from in stale {
            self.remove_edge(&from, node);
        }
        true
    }

    fn list(&mut self, to: &str, from: &str) {
        self.listed_by
            .entry(to.to_string())
            .or_default()
            .insert(from.to_string());
    }

    fn unlist(&mut self, to: &str, from: &str) {
        if let Some(set) = self.listed_by.get_mut(to) {
            set.remove(from);
            if set.is_empty() {
                self.listed_by.remove(to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(list: &[(&str, f64)]) -> BTreeMap<String, f64> {
        list.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    /// The walk Go does (only for an update that changes the node's
    /// entry), to check the index against.
    fn walked(
        costs: &CostTable,
        node: &str,
        connections: &BTreeMap<String, f64>,
        keep: &str,
    ) -> CostTable {
        let mut costs = costs.clone();
        if costs.get(node) == Some(connections) {
            return costs;
        }
        costs.insert(node.to_string(), connections.clone());
        for (from, edges) in costs.iter_mut() {
            if from != keep && !connections.contains_key(from) {
                edges.remove(node);
            }
        }
        costs
    }

    fn edge_count(costs: &CostTable) -> usize {
        costs.values().map(BTreeMap::len).sum()
    }

    #[test]
    fn a_node_that_stops_listing_a_peer_loses_the_peers_edge_to_it() {
        let mut g = Graph::default();
        assert!(g.set_node("a", &conns(&[("b", 1.0), ("c", 1.0)]), "me"));
        assert!(g.set_node("b", &conns(&[("a", 1.0)]), "me"));
        assert!(g.set_node("c", &conns(&[("a", 1.0)]), "me"));
        // a drops c: c's edge to a goes too; b's stays.
        assert!(g.set_node("a", &conns(&[("b", 1.0)]), "me"));
        assert_eq!(g.get("c"), Some(&conns(&[])));
        assert_eq!(g.get("b"), Some(&conns(&[("a", 1.0)])));
        assert_eq!(g.edges(), 2);
        assert!(!g.set_node("a", &conns(&[("b", 1.0)]), "me"), "no change");
    }

    #[test]
    fn our_own_edges_are_kept() {
        let mut g = Graph::default();
        g.set_edge("me", "a", 1.0);
        g.set_node("a", &conns(&[]), "me");
        assert_eq!(g.get("me"), Some(&conns(&[("a", 1.0)])));
    }

    #[test]
    fn the_index_matches_the_full_walk_on_random_updates() {
        let mut rng = crate::random::IdGen::from_seed(9);
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let mut g = Graph::default();
        let mut reference = CostTable::new();
        for round in 0..2000 {
            let pick =
                |rng: &mut crate::random::IdGen| names[(rng.next_u64() % 12) as usize].clone();
            if round % 7 == 0 {
                let (from, to) = (pick(&mut rng), pick(&mut rng));
                g.set_edge(&from, &to, 1.0);
                reference.entry(from).or_default().insert(to, 1.0);
                continue;
            }
            let node = pick(&mut rng);
            let list: BTreeMap<String, f64> = (0..rng.next_u64() % 5)
                .map(|_| (pick(&mut rng), 1.0 + (rng.next_u64() % 3) as f64))
                .collect();
            g.set_node(&node, &list, "n0");
            reference = walked(&reference, &node, &list, "n0");
            assert_eq!(g.costs(), &reference, "round {round}");
            assert_eq!(g.edges(), edge_count(&reference), "round {round}");
        }
    }
}
