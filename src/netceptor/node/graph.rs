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
//!
//! Nodes are held by [`Id`]: every node keeps every node's connections, so
//! a copy of a name per reference was most of a node's memory in large
//! meshes. An entry holds its node's name, and a listing the listed name;
//! entries, as in Go, are never dropped, so a name goes once no entry
//! lists it and nobody else holds it (the node's stored updates do).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::interner::{Id, IdMap, Interner};
use crate::netceptor::routing::{self, CostTable};

/// A node's connections, sorted by peer ID. Shared: the node's stored
/// update (what it reported) holds the same list until the entry changes.
pub(super) type Edges = Arc<[(Id, f64)]>;

#[derive(Debug)]
pub(super) struct Graph {
    names: Interner,
    /// This node: never released, and its own links are what its
    /// backends say, whatever other nodes report.
    own: Id,
    /// By ID: the node's connections, `None` until it has an entry.
    costs: Vec<Option<Edges>>,
    /// By ID: the nodes whose entries list it.
    listed_by: Vec<Vec<Id>>,
    /// Nodes with an entry.
    entries: usize,
    /// Connections in `costs`, all nodes together.
    edges: usize,
}

impl Graph {
    pub fn new(own: &str) -> Self {
        let mut names = Interner::default();
        let own = names.retain(own);
        Graph {
            names,
            own,
            costs: vec![None],
            listed_by: vec![Vec::new()],
            entries: 0,
            edges: 0,
        }
    }

    pub fn own(&self) -> Id {
        self.own
    }

    /// The ID of a node the graph holds.
    pub fn id(&self, name: &str) -> Option<Id> {
        self.names.get(name)
    }

    pub fn name(&self, id: Id) -> &str {
        self.names.name(id)
    }

    /// Names held, in order, from `from` on (inclusive).
    pub fn names_from(&self, from: Option<&str>) -> impl Iterator<Item = (&str, Id)> {
        self.names.from(from)
    }

    /// Connections known, all nodes together.
    pub fn edges(&self) -> usize {
        self.edges
    }

    /// Nodes with an entry.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// How many connections `node` is known to have.
    pub fn degree(&self, node: &str) -> usize {
        self.id(node)
            .and_then(|id| self.costs[id as usize].as_ref())
            .map_or(0, |e| e.len())
    }

    /// The table by name, as `status` shows it.
    pub fn cost_table(&self) -> CostTable {
        let entry = |edges: &[(Id, f64)]| {
            let named = edges.iter().map(|&(to, c)| (self.name(to).to_string(), c));
            named.collect::<BTreeMap<_, _>>()
        };
        (0..)
            .zip(&self.costs)
            .filter_map(|(id, e)| Some((id, entry(e.as_ref()?))))
            .map(|(id, e)| (self.name(id).to_string(), e))
            .collect()
    }

    /// Next hop (by ID) for every node this node reaches.
    pub fn routes(&self) -> IdMap<Id> {
        let hops = routing::compute(
            self.own,
            self.costs.len(),
            |id| self.costs[id as usize].as_deref(),
            |id| self.name(id),
        );
        hops.into_iter().collect()
    }

    /// Whether `node` has an entry: then its ID is never released, so
    /// maps keyed by it (known nodes, routes, the hash table) need hold no
    /// reference to it.
    pub fn has_entry(&self, node: Id) -> bool {
        self.costs.get(node as usize).is_some_and(Option::is_some)
    }

    /// One more reference to `name`, held outside the graph: its ID.
    pub fn retain(&mut self, name: &str) -> Id {
        let id = self.names.retain(name);
        let slots = self.names.slots();
        if self.costs.len() < slots {
            self.costs.resize_with(slots, || None);
            self.listed_by.resize_with(slots, Vec::new);
        }
        id
    }

    /// One more reference to a live ID (one an entry or update lists).
    pub fn retain_id(&mut self, id: Id) {
        self.names.retain_id(id);
    }

    /// One reference fewer, from [`Graph::retain`] (or held by the graph).
    pub fn release(&mut self, id: Id) {
        self.names.release(id);
        // Entries are never dropped, so an ID with one must stay live.
        debug_assert!(
            self.names.is_live(id) || !self.has_entry(id),
            "node ID {id} released while it has an entry"
        );
    }

    /// Sets the cost of the connection `from -> to`.
    pub fn set_edge(&mut self, from: &str, to: &str, cost: f64) {
        let (from, to) = (self.retain(from), self.retain(to));
        let mut edges = self.take_entry(from);
        match edges.binary_search_by_key(&to, |e| e.0) {
            Ok(at) => {
                edges[at].1 = cost;
                self.release(to);
            }
            Err(at) => {
                edges.insert(at, (to, cost));
                self.edges += 1;
                self.listed_by[to as usize].push(from);
            }
        }
        self.costs[from as usize] = Some(edges.into());
    }

    /// Removes the connection `from -> to`.
    pub fn remove_edge(&mut self, from: &str, to: &str) {
        if let (Some(from), Some(to)) = (self.id(from), self.id(to)) {
            self.remove(from, to);
        }
    }

    /// `node` reports exactly `connections`: its entry becomes that, and
    /// every other node's connection to it that it does not list is
    /// dropped, except this node's own. Its ID, and false if nothing
    /// changed.
    pub fn set_node(&mut self, node: &str, connections: &BTreeMap<String, f64>) -> (Id, bool) {
        if let Some(id) = self.id(node)
            && self.reports(id, connections)
        {
            return (id, false);
        }
        let node = self.retain(node);
        let mut new: Vec<(Id, f64)> = connections
            .iter()
            .map(|(to, &c)| (self.retain(to), c))
            .collect();
        new.sort_unstable_by_key(|e| e.0);
        let old = self.take_entry(node);
        let split = |edges: &[(Id, f64)], other: &[(Id, f64)]| -> (Vec<Id>, Vec<Id>) {
            edges.iter().map(|e| e.0).partition(|&to| lists(other, to))
        };
        let (_, gone) = split(&old, &new);
        let (kept, added) = split(&new, &old);
        self.edges = self.edges.saturating_sub(old.len()) + new.len();
        // In place before unlisting, so a node that listed itself keeps its ID.
        self.costs[node as usize] = Some(new.into());
        for to in kept {
            // Its listing holds it already.
            self.release(to);
        }
        for to in gone {
            self.unlist(to, node);
        }
        for to in added {
            self.listed_by[to as usize].push(node);
        }
        let entry = self.costs[node as usize].as_ref();
        let stale: Vec<Id> = self.listed_by[node as usize]
            .iter()
            .copied()
            .filter(|&from| {
                from != node && from != self.own && !entry.is_some_and(|e| lists(e, from))
            })
            .collect();
        for from in stale {
            self.remove(from, node);
        }
        (node, true)
    }

    /// Whether `node`'s entry is exactly `connections`.
    fn reports(&self, node: Id, connections: &BTreeMap<String, f64>) -> bool {
        let Some(edges) = &self.costs[node as usize] else {
            return false;
        };
        let listed = |to: &str, cost: f64| {
            let Some(to) = self.id(to) else {
                return false;
            };
            let at = edges.binary_search_by_key(&to, |e| e.0);
            at.is_ok_and(|at| edges[at].1 == cost)
        };
        edges.len() == connections.len() && connections.iter().all(|(to, &c)| listed(to, c))
    }

    /// `node`'s entry if it is exactly `connections`, to share.
    pub fn entry_if(&self, node: Id, connections: &BTreeMap<String, f64>) -> Option<Edges> {
        let entry = self.costs[node as usize].as_ref()?;
        self.reports(node, connections).then(|| Arc::clone(entry))
    }

    /// A copy of `node`'s entry (empty if it has none) to change and put
    /// back; takes over one reference to `node`, which the entry holds.
    fn take_entry(&mut self, node: Id) -> Vec<(Id, f64)> {
        match self.costs[node as usize].take() {
            Some(old) => {
                self.release(node);
                old.to_vec()
            }
            None => {
                self.entries += 1;
                Vec::new()
            }
        }
    }

    fn remove(&mut self, from: Id, to: Id) {
        let Some(edges) = &self.costs[from as usize] else {
            return;
        };
        if let Ok(at) = edges.binary_search_by_key(&to, |e| e.0) {
            let mut left = edges.to_vec();
            left.remove(at);
            self.costs[from as usize] = Some(left.into());
            self.edges = self.edges.saturating_sub(1);
            self.unlist(to, from);
        }
    }

    /// `from` no longer lists `to`.
    fn unlist(&mut self, to: Id, from: Id) {
        let set = &mut self.listed_by[to as usize];
        if let Some(at) = set.iter().position(|&f| f == from) {
            set.swap_remove(at);
        }
        if set.is_empty() {
            *set = Vec::new();
        }
        self.release(to);
    }
}

fn lists(edges: &[(Id, f64)], to: Id) -> bool {
    edges.binary_search_by_key(&to, |e| e.0).is_ok()
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

    /// Names a graph equal to `costs` must hold: entries, the nodes they
    /// list, and this node.
    fn held(costs: &CostTable, own: &str) -> usize {
        let listed = costs.values().flat_map(BTreeMap::keys);
        let mut names: std::collections::BTreeSet<&str> =
            costs.keys().chain(listed).map(String::as_str).collect();
        names.insert(own);
        names.len()
    }

    fn edge_count(costs: &CostTable) -> usize {
        costs.values().map(BTreeMap::len).sum()
    }

    #[test]
    fn a_node_that_stops_listing_a_peer_loses_the_peers_edge_to_it() {
        let mut g = Graph::new("me");
        assert!(g.set_node("a", &conns(&[("b", 1.0), ("c", 1.0)])).1);
        assert!(g.set_node("b", &conns(&[("a", 1.0)])).1);
        assert!(g.set_node("c", &conns(&[("a", 1.0)])).1);
        // a drops c: c's edge to a goes too; b's stays.
        assert!(g.set_node("a", &conns(&[("b", 1.0)])).1);
        assert_eq!(g.cost_table().get("c"), Some(&conns(&[])));
        assert_eq!(g.cost_table().get("b"), Some(&conns(&[("a", 1.0)])));
        assert_eq!(g.edges(), 2);
        assert!(!g.set_node("a", &conns(&[("b", 1.0)])).1, "no change");
    }

    #[test]
    fn our_own_edges_are_kept() {
        let mut g = Graph::new("me");
        g.set_edge("me", "a", 1.0);
        g.set_node("a", &conns(&[]));
        assert_eq!(g.cost_table().get("me"), Some(&conns(&[("a", 1.0)])));
    }

    #[test]
    fn names_no_node_lists_any_more_are_released() {
        let mut g = Graph::new("me");
        g.set_edge("me", "m", 1.0);
        for round in 0..100 {
            let list = conns(&[(&format!("random{round}"), 1.0)]);
            g.set_node("m", &list);
        }
        let names: Vec<&str> = g.names_from(None).map(|(n, _)| n).collect();
        assert_eq!(names, ["m", "me", "random99"]);
        assert!(g.costs.len() <= 4, "{} slots", g.costs.len());
    }

    #[test]
    fn the_index_matches_the_full_walk_on_random_updates() {
        let mut rng = crate::random::IdGen::from_seed(9);
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let mut g = Graph::new("n0");
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
            g.set_node(&node, &list);
            reference = walked(&reference, &node, &list, "n0");
            assert_eq!(g.cost_table(), reference, "round {round}");
            assert_eq!(g.edges(), edge_count(&reference), "round {round}");
            assert_eq!(
                g.names_from(None).count(),
                held(&reference, "n0"),
                "round {round}"
            );
        }
    }
}
