//! The routing table: shortest paths by connection cost (docs/wire.md §6.4).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// Directed edges as each node reported them: `node -> (peer -> cost)`.
pub type CostTable = BTreeMap<String, BTreeMap<String, f64>>;

/// Next hop for every reachable node except `origin`.
///
/// Nodes that never reported their own connections (they appear only as a
/// neighbour in someone else's list) are not routed, as in Go: a node is a
/// destination only once the table has an entry for it.
pub fn compute(origin: &str, costs: &CostTable) -> BTreeMap<String, String> {
    let mut best: HashMap<&str, (f64, Option<&str>)> = HashMap::new();
    let mut queue = BinaryHeap::new();
    let mut done = std::collections::HashSet::new();
    best.insert(origin, (0.0, None));
    queue.push(Candidate {
        cost: 0.0,
        node: origin,
        first_hop: None,
    });
    while let Some(Candidate {
        cost,
        node,
        first_hop,
    }) = queue.pop()
    {
        // Stale queue entry; also ends the loop should a non-positive
        // cost ever get this far.
        if best.get(node).is_some_and(|&(c, _)| c < cost) || !done.insert(node) {
            continue;
        }
        let Some(edges) = costs.get(node) else {
            continue;
        };
        for (peer, &edge) in edges {
            if !costs.contains_key(peer.as_str()) {
                continue;
            }
            let total = cost + edge;
            let improves = best.get(peer.as_str()).is_none_or(|&(c, _)| total < c);
            if improves {
                let hop = first_hop.or(Some(peer.as_str()));
                best.insert(peer, (total, hop));
                queue.push(Candidate {
                    cost: total,
                    node: peer,
                    first_hop: hop,
                });
            }
        }
    }
    best.into_iter()
        .filter_map(|(node, (_, hop))| Some((node.to_string(), hop?.to_string())))
        .collect()
}

struct Candidate<'a> {
    cost: f64,
    node: &'a str,
    first_hop: Option<&'a str>,
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate<'_> {}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate<'_> {
    /// Reversed so the max-heap pops the cheapest; ties by name keep the
    /// result deterministic.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .cost
            .total_cmp(&self.cost)
            .then_with(|| other.node.cmp(self.node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(edges: &[(&str, &str, f64)]) -> CostTable {
        let mut t = CostTable::new();
        for &(a, b, c) in edges {
            t.entry(a.into()).or_default().insert(b.into(), c);
            t.entry(b.into()).or_default().insert(a.into(), c);
        }
        t
    }

    fn hops(r: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
        r.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    #[test]
    fn line() {
        let t = table(&[("a", "b", 1.0), ("b", "c", 1.0), ("c", "d", 1.0)]);
        assert_eq!(
            hops(&compute("a", &t)),
            [("b", "b"), ("c", "b"), ("d", "b")]
        );
        assert_eq!(
            hops(&compute("c", &t)),
            [("a", "b"), ("b", "b"), ("d", "d")]
        );
    }

    #[test]
    fn diamond_prefers_cheaper_relay_and_fails_over() {
        let mut t = table(&[
            ("ctl", "ra", 1.0),
            ("ra", "ex", 1.0),
            ("ctl", "rb", 2.0),
            ("rb", "ex", 2.0),
        ]);
        assert_eq!(compute("ctl", &t)["ex"], "ra");
        // relayA dies: its neighbours drop the edges and its own entry empties.
        t.get_mut("ctl").unwrap().remove("ra");
        t.get_mut("ex").unwrap().remove("ra");
        t.insert("ra".into(), BTreeMap::new());
        let r = compute("ctl", &t);
        assert_eq!(r["ex"], "rb");
        assert!(!r.contains_key("ra"));
    }

    #[test]
    fn ring_takes_shorter_way_round() {
        let t = table(&[
            ("n0", "n1", 1.0),
            ("n1", "n2", 1.0),
            ("n2", "n3", 1.0),
            ("n3", "n4", 1.0),
            ("n4", "n5", 1.0),
            ("n5", "n0", 1.0),
        ]);
        let r = compute("n0", &t);
        assert_eq!(r["n1"], "n1");
        assert_eq!(r["n2"], "n1");
        assert_eq!(r["n4"], "n5");
        assert_eq!(r["n5"], "n5");
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn costs_outweigh_hop_count() {
        let t = table(&[
            ("a", "b", 10.0),
            ("a", "c", 1.0),
            ("c", "d", 1.0),
            ("d", "b", 1.0),
        ]);
        assert_eq!(compute("a", &t)["b"], "c");
    }

    #[test]
    fn nodes_without_their_own_entry_are_not_routed() {
        let mut t = CostTable::new();
        t.entry("a".into()).or_default().insert("b".into(), 1.0);
        assert!(compute("a", &t).is_empty());
    }

    #[test]
    fn a_negative_cycle_cannot_hang_it() {
        let mut t = CostTable::new();
        t.entry("s".into()).or_default().insert("m".into(), 1.0);
        t.entry("m".into()).or_default().insert("s".into(), 1.0);
        t.entry("m".into()).or_default().insert("z".into(), 1.0);
        t.entry("z".into()).or_default().insert("m".into(), -5.0);
        let r = compute("s", &t);
        assert_eq!(r["z"], "m");
    }

    #[test]
    fn directed_edges_use_each_side_own_cost() {
        let mut t = CostTable::new();
        t.entry("a".into()).or_default().insert("b".into(), 1.0);
        t.entry("b".into()).or_default().insert("c".into(), 1.0);
        t.entry("c".into()).or_default();
        assert_eq!(compute("a", &t)["c"], "b");
        assert!(compute("c", &t).is_empty());
    }
}
