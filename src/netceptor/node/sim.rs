//! A test and benchmark harness, not part of the daemon: nodes wired
//! together in memory, every frame a node emits handed to the node at the
//! other end of its link, in simulated time. No sockets, no threads.
//!
//! Built for the unit tests and, with the `sim` feature, for
//! `benches/mesh_sim.rs`. Messages are delivered the instant they are sent,
//! so time passes only between timer deadlines: convergence is measured in
//! timer rounds, not in link latency.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use super::{BackendId, BackendParams, ConnId, Node, Now, Output, SendError};
use crate::netceptor::codec::{MSG_ROUTE, ServiceName};
use crate::random::IdGen;

/// The virtual clock's start. The monotonic base is read once (an
/// `Instant` cannot be made otherwise); after that only the simulation
/// moves time.
pub fn start() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000),
    }
}

/// A node whose identifiers are seeded by its epoch, so runs replay.
pub fn node(id: &str, epoch: u64, now: Now) -> Node {
    Node::new(
        id,
        epoch,
        Duration::from_secs(21),
        IdGen::from_seed(epoch),
        now.mono,
    )
}

/// A plain link of `cost`: any peer, no per-node costs, no certificate.
pub fn params(cost: f64) -> BackendParams {
    BackendParams {
        cost,
        node_cost: BTreeMap::new(),
        allowed_peers: None,
        cert_node_ids: None,
        backend: BackendId::default(),
    }
}

/// Messages and bytes the nodes handed to their links.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub routing_msgs: u64,
    pub routing_bytes: u64,
    pub other_msgs: u64,
    pub other_bytes: u64,
}

pub struct Sim {
    pub nodes: Vec<Node>,
    /// (node, conn) -> (node, conn) at the other end.
    pub links: HashMap<(usize, ConnId), (usize, ConnId)>,
    pub next_conn: ConnId,
    pub now: Now,
    pub delivered: Vec<(usize, Output)>,
    pub closed_with: Vec<(usize, String)>,
    pub shutdowns: Vec<usize>,
    pub sent: Traffic,
}

impl Sim {
    pub fn new<S: AsRef<str>>(names: &[S]) -> Sim {
        let now = start();
        let nodes = names
            .iter()
            .enumerate()
            .map(|(i, n)| node(n.as_ref(), 1000 + i as u64, now))
            .collect();
        Sim {
            nodes,
            links: HashMap::new(),
            next_conn: 1,
            now,
            delivered: Vec::new(),
            closed_with: Vec::new(),
            shutdowns: Vec::new(),
            sent: Traffic::default(),
        }
    }

    pub fn idx(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.id() == name).unwrap()
    }

    pub fn connect_with(&mut self, a: &str, pa: BackendParams, b: &str, pb: BackendParams) {
        let (a, b) = (self.idx(a), self.idx(b));
        self.connect_idx(a, pa, b, pb);
    }

    pub fn connect_idx(&mut self, a: usize, pa: BackendParams, b: usize, pb: BackendParams) {
        let (ca, cb) = (self.next_conn, self.next_conn + 1);
        self.next_conn += 2;
        self.links.insert((a, ca), (b, cb));
        self.links.insert((b, cb), (a, ca));
        self.nodes[a].handle_conn_opened(ca, pa, self.now.mono);
        self.nodes[b].handle_conn_opened(cb, pb, self.now.mono);
    }

    pub fn connect(&mut self, a: &str, b: &str, cost: f64) {
        self.connect_with(a, params(cost), b, params(cost));
    }

    /// Opens every link of `edges` (node indices) at cost 1.
    pub fn connect_all(&mut self, edges: &[(usize, usize)]) {
        for &(a, b) in edges {
            self.connect_idx(a, params(1.0), b, params(1.0));
        }
    }

    /// Cuts every link of a node, as if its process died.
    pub fn kill(&mut self, name: &str) {
        self.kill_idx(self.idx(name));
    }

    /// Cuts every link of node `i`; a fresh process with the same ID and a
    /// later epoch takes its place, connected to nobody.
    pub fn kill_idx(&mut self, i: usize) {
        let gone: Vec<_> = self
            .links
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for key in gone {
            if let Some((peer, pc)) = self.links.remove(&key) {
                self.links.remove(&(peer, pc));
                self.nodes[peer].handle_conn_closed(pc, self.now.mono);
            }
        }
        let name = self.nodes[i].id().to_string();
        let epoch = self.nodes[i].epoch + 100;
        self.nodes[i] = node(&name, epoch, self.now);
    }

    /// Delivers outputs until the mesh is quiet; panics rather than hang if
    /// it never is (a message circulating forever).
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    any = true;
                    self.apply(i, out);
                }
            }
            if !any {
                return;
            }
        }
        panic!("messages still circulating after 100000 rounds");
    }

    fn apply(&mut self, i: usize, out: Output) {
        match out {
            Output::Send { conn, msg } => {
                self.count(&msg);
                if let Some(&(peer, pc)) = self.links.get(&(i, conn)) {
                    // Handed on as sent, not copied: the peers of a flood
                    // share its buffer (each daemon reads its own).
                    self.nodes[peer].handle_message(pc, msg, self.now);
                }
            }
            Output::Close { conn, error } => {
                if let Some(e) = error {
                    self.closed_with.push((i, e));
                }
                if let Some((peer, pc)) = self.links.remove(&(i, conn)) {
                    self.links.remove(&(peer, pc));
                    self.nodes[peer].handle_conn_closed(pc, self.now.mono);
                }
            }
            Output::Shutdown { .. } => self.shutdowns.push(i),
            other => self.delivered.push((i, other)),
        }
    }

    fn count(&mut self, msg: &[u8]) {
        let len = msg.len() as u64;
        if msg.first() == Some(&MSG_ROUTE) {
            self.sent.routing_msgs += 1;
            self.sent.routing_bytes += len;
        } else {
            self.sent.other_msgs += 1;
            self.sent.other_bytes += len;
        }
    }

    /// Delivers what is queued, then fires the earliest deadline (if it is
    /// no later than `end`) and delivers what that sends; false once the
    /// next deadline is past `end`, with the clock moved to `end`.
    pub fn step(&mut self, end: Now) -> bool {
        self.pump();
        let next = self.nodes.iter().map(Node::poll_timeout).min().unwrap();
        if next > end.mono {
            self.now = end;
            return false;
        }
        if next > self.now.mono {
            self.now = self.now.after(next - self.now.mono);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].poll_timeout() <= self.now.mono {
                // Links here drain at once: say so, as the router does
                // before each timeout, or catching up would stall.
                let conns: Vec<ConnId> = self.nodes[i].conns_catching_up().collect();
                for conn in conns {
                    self.nodes[i].handle_link_backlog(conn, 0);
                }
                self.nodes[i].handle_timeout(self.now);
            }
        }
        self.pump();
        true
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now.after(d);
        while self.step(end) {}
    }

    /// Runs until `done` holds (checked after every timer round) or `limit`
    /// has passed; how long it took, or `None` if it never held.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let (begin, end) = (self.now, self.now.after(limit));
        loop {
            let more = self.step(end);
            if done(self) {
                return Some(self.now.mono - begin.mono);
            }
            if !more {
                return None;
            }
        }
    }

    /// Whether every node but those in `dead` routes to all the others,
    /// and none routes to a dead one.
    pub fn converged(&self, dead: &[usize]) -> bool {
        let live = self.nodes.len() - dead.len();
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !dead.contains(i))
            .all(|(_, n)| {
                n.routes.len() == live - 1
                    && dead
                        .iter()
                        .all(|&d| n.next_hop(self.nodes[d].id()).is_none())
            })
    }

    pub fn route(&self, from: &str, to: &str) -> Option<String> {
        let hop = self.nodes[self.idx(from)].next_hop(to)?;
        Some(hop.to_string())
    }

    pub fn service(&mut self, node: &str, name: &str) -> ServiceName {
        let i = self.idx(node);
        self.nodes[i].bind(name, None, self.now.mono).unwrap()
    }

    pub fn send(
        &mut self,
        from: &str,
        svc: ServiceName,
        to: &str,
        to_svc: &str,
        data: &[u8],
        hops: u8,
    ) -> Result<(), SendError> {
        let i = self.idx(from);
        let r = self.nodes[i].send(svc, to, to_svc, data, hops);
        self.pump();
        r
    }
}

/// Mesh shapes for simulations: node count and links by node index.
pub mod topology {
    /// A seeded generator (splitmix64), so a topology replays exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            crate::random::splitmix64(&mut self.0)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn push(
        links: &mut Vec<(usize, usize)>,
        seen: &mut std::collections::HashSet<(usize, usize)>,
        a: usize,
        b: usize,
    ) -> bool {
        let key = (a.min(b), a.max(b));
        if a == b || !seen.insert(key) {
            return false;
        }
        links.push(key);
        true
    }

    /// `n` nodes, connected, each with 3 to 6 links (a few may end with
    /// fewer when every candidate is full): a random spanning tree first,
    /// then random links until each node reaches its drawn degree.
    pub fn random(n: usize, seed: u64) -> Vec<(usize, usize)> {
        let mut rng = Rng(seed);
        let want: Vec<usize> = (0..n).map(|_| 3 + rng.below(4)).collect();
        let mut degree = vec![0; n];
        let mut links = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for b in 1..n {
            let a = rng.below(b);
            push(&mut links, &mut seen, a, b);
            degree[a] += 1;
            degree[b] += 1;
        }
        for a in 0..n {
            for _ in 0..20 {
                if degree[a] >= want[a] {
                    break;
                }
                let b = rng.below(n);
                if degree[b] < want[b] && push(&mut links, &mut seen, a, b) {
                    degree[a] += 1;
                    degree[b] += 1;
                }
            }
        }
        links
    }

    /// Like AWX: 3 control nodes (0, 1, 2) linked to each other, hop nodes
    /// (one per 50 nodes, at least 2) each linked to every control node,
    /// and the rest execution nodes, each linked to two hop nodes.
    pub fn hub_and_spoke(n: usize) -> Vec<(usize, usize)> {
        let hops = (n / 50).max(2);
        assert!(n > 3 + hops, "too few nodes for hub and spoke");
        let mut links = vec![(0, 1), (0, 2), (1, 2)];
        for h in 3..3 + hops {
            links.extend((0..3).map(|c| (c, h)));
        }
        for (k, e) in (3 + hops..n).enumerate() {
            links.push((3 + k % hops, e));
            links.push((3 + (k + 1) % hops, e));
        }
        links
    }

    /// The links of `node`: what comes back when it restarts.
    pub fn links_of(node: usize, links: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let own = links.iter().filter(|&&(a, b)| a == node || b == node);
        own.copied().collect()
    }

    /// The node with the most links (the lowest index among equals).
    pub fn busiest(n: usize, links: &[(usize, usize)]) -> usize {
        let mut degree = vec![0; n];
        for &(a, b) in links {
            degree[a] += 1;
            degree[b] += 1;
        }
        (0..n)
            .max_by_key(|&i| (degree[i], std::cmp::Reverse(i)))
            .unwrap_or(0)
    }
}
