//! The routing table: shortest paths by connection cost (docs/wire.md §6.4).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// Directed edges as each node reported them: `node -> (peer -> cost)`.
pub type CostTable = BTreeMap<String, BTreeMap<String, f64>>;

/// A node, as the node computing routes numbers the names it knows.
pub type NodeIx = u32;

/// Next hop of every reachable node except `origin` (by number: `None`
/// for unreachable ones and `origin`), over nodes numbered below `slots`: `edges` gives a node's reported connections (`None` if
/// it never reported any) and `name` its name, which breaks ties between
/// equal costs so the result does not depend on the numbering.
///
/// Nodes that never reported their own connections (they appear only as a
/// neighbour in someone else's list) are not routed, as in Go: a node is a
/// destination only once the table has an entry for it.
pub fn compute<'a>(
    origin: NodeIx,
    slots: usize,
    edges: impl Fn(NodeIx) -> Option<&'a [(NodeIx, f64)]>,
    name: impl Fn(NodeIx) -> &'a str,
) -> Vec<Option<NodeIx>> {
    let mut best: Vec<Option<(f64, Option<NodeIx>)>> = vec![None; slots];
    let mut done = vec![false; slots];
    let mut queue = BinaryHeap::new();
    best[origin as usize] = Some((0.0, None));
    queue.push(Candidate {
        cost: 0.0,
        name: name(origin),
        node: origin,
        first_hop: None,
    });
    while let Some(Candidate {
        cost,
        node,
        first_hop,
        ..
    }) = queue.pop()
    {
        // Stale queue entry; also ends the loop should a non-positive
        // cost ever get this far.
        let ix = node as usize;
        if best[ix].is_some_and(|(c, _)| c < cost) || done[ix] {
            continue;
        }
        done[ix] = true;
        let Some(list) = edges(node) else {
            continue;
        };
        for &(peer, edge) in list {
            if edges(peer).is_none() {
                continue;
            }
            let total = cost + edge;
            let improves = best[peer as usize].is_none_or(|(c, _)| total < c);
            if improves {
                let hop = first_hop.or(Some(peer));
                best[peer as usize] = Some((total, hop));
                queue.push(Candidate {
                    cost: total,
                    name: name(peer),
                    node: peer,
                    first_hop: hop,
                });
            }
        }
    }
    best.into_iter().map(|b| b?.1).collect()
}

struct Candidate<'a> {
    cost: f64,
    name: &'a str,
    node: NodeIx,
    first_hop: Option<NodeIx>,
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
            .then_with(|| other.name.cmp(self.name))
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

    /// `compute` over `t` with its nodes numbered in reverse name order
    /// (so ties cannot follow the numbering), as names.
    fn compute(origin: &str, t: &CostTable) -> BTreeMap<String, String> {
        let mut names: Vec<&str> = t
            .iter()
            .flat_map(|(n, e)| std::iter::once(n).chain(e.keys()))
            .map(String::as_str)
            .chain([origin])
            .collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        names.dedup();
        let ix = |n: &str| names.iter().position(|m| *m == n).unwrap() as NodeIx;
        let lists: Vec<Option<Vec<(NodeIx, f64)>>> = names
            .iter()
            .map(|n| Some(t.get(*n)?.iter().map(|(p, &c)| (ix(p), c)).collect()))
            .collect();
        let routes = super::compute(
            ix(origin),
            names.len(),
            |n| lists[n as usize].as_deref(),
            |n| names[n as usize],
        );
        let named = |(d, h): (usize, Option<NodeIx>)| Some((names[d], names[h? as usize]));
        routes
            .into_iter()
            .enumerate()
            .filter_map(named)
            .map(|(d, h)| (d.to_string(), h.to_string()))
            .collect()
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
