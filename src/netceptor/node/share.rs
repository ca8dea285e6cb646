//! Catching a new peer up: it is handed the latest routing update of every
//! node we route to, then every advertisement we know, a chunk at a time
//! as its link drains.
//!
//! Go peers learn routes from the mesh-wide floods each node sends on
//! hearing of a new node, and ads from the periodic round (a minute). Both
//! messages are ordinary ones a Go peer accepts: the updates keep their
//! origin's ID, epoch and sequence, so whoever has them already drops them.

use std::ops::Bound;
use std::time::{Duration, Instant};

use super::graph::Graph;
use super::timer::Timer;
use super::{ConnId, Node, NodeSeq, Now, Output, StoredUpdate};
use crate::netceptor::codec::{self, RoutingUpdate};

/// How often a new peer is given its next chunk.
pub(super) const SHARE_INTERVAL: Duration = Duration::from_millis(50);
/// A chunk tops what waits on the new peer's link up to this many bytes,
/// so a link that does not drain gets nothing more (at most 640 KB/s per
/// new peer at the interval above).
pub(super) const SHARE_BACKLOG: usize = 32 * 1024;
/// Bytes handed to all new peers together per interval (20 MB/s), taking
/// turns: hundreds of peers joining at once cost no more memory than a
/// few.
pub(super) const SHARE_ROUND: usize = 1024 * 1024;

/// How far a new peer has got through what we know.
#[derive(Debug)]
pub(super) struct Share {
    pub next: Cursor,
    /// Bytes the link last said were still waiting to be written.
    pub backlog: usize,
}

/// The next item to send (`None`: the first of its kind).
#[derive(Debug)]
pub(super) enum Cursor {
    Updates(Option<String>),
    Ads(Option<(String, String)>),
}

impl Node {
    /// A new peer learns the routes and advertisements we know now: our
    /// ads and the first chunk at once, the rest as its link drains.
    pub(super) fn share_with(&mut self, conn: ConnId, at: Now) {
        for ad in self.own_ads(at.wall) {
            let msg = codec::encode_service_ad(&ad).into();
            self.outputs.push_back(Output::Send { conn, msg });
        }
        let share = Share {
            next: Cursor::Updates(None),
            backlog: 0,
        };
        self.shares.insert(conn, share);
        if self.share_next_chunk(conn, SHARE_BACKLOG) {
            self.timers
                .set_no_later(Timer::Share, at.mono + SHARE_INTERVAL);
        }
    }

    /// Tops up the link of every new peer still being caught up.
    pub(super) fn share_step(&mut self, now: Instant) {
        let mut due: Vec<(ConnId, usize)> = self
            .shares
            .iter()
            .map(|(&c, s)| (c, SHARE_BACKLOG.saturating_sub(s.backlog)))
            .filter(|(_, budget)| *budget > 0)
            .collect();
        if !due.is_empty() {
            // Whoever came first last round comes last this one.
            self.share_turn = self.share_turn.wrapping_add(1);
            let len = due.len();
            due.rotate_left(self.share_turn % len);
        }
        let mut round = SHARE_ROUND;
        for (conn, budget) in due {
            if round == 0 {
                break;
            }
            let before = self.shares.get(&conn).map_or(0, |s| s.backlog);
            self.share_next_chunk(conn, budget.min(round));
            let after = self
                .shares
                .get(&conn)
                .map_or(before + budget, |s| s.backlog);
            round = round.saturating_sub(after.saturating_sub(before).max(1));
        }
        if !self.shares.is_empty() {
            self.timers.set(Timer::Share, now + SHARE_INTERVAL);
        }
    }

    /// Sends `conn` about `budget` bytes more of what it has not had; true
    /// while more remain.
    fn share_next_chunk(&mut self, conn: ConnId, budget: usize) -> bool {
        let Some(share) = self.shares.remove(&conn) else {
            return false;
        };
        let (next, sent) = match share.next {
            Cursor::Updates(from) => match self.share_updates(conn, from, budget) {
                (None, sent) => {
                    let (next, more) = self.share_ads(conn, None, budget.saturating_sub(sent));
                    (next, sent + more)
                }
                other => other,
            },
            Cursor::Ads(from) => self.share_ads(conn, from, budget),
        };
        let Some(next) = next else {
            return false;
        };
        let backlog = share.backlog + sent;
        self.shares.insert(conn, Share { next, backlog });
        true
    }

    /// Sends the updates from node `from` on of nodes we route to (but the
    /// peer itself), about `budget` bytes: where to go on from, if
    /// anywhere, and the bytes sent.
    fn share_updates(
        &mut self,
        conn: ConnId,
        from: Option<String>,
        budget: usize,
    ) -> (Option<Cursor>, usize) {
        let peer = self.peer_of(conn);
        let mut sent = 0;
        for (node, id) in self.graph.names_from(from.as_deref()) {
            let Some(seq) = self.known.get(id) else {
                continue;
            };
            if sent >= budget {
                return (Some(Cursor::Updates(Some(node.to_string()))), sent);
            }
            let Some(update) = &seq.update else {
                continue;
            };
            if peer.as_deref() == Some(node) || !self.routes.contains(id) {
                continue;
            }
            let msg = codec::encode_routing(&as_flooded(&self.graph, &self.id, node, seq, update));
            sent += msg.len() + 2;
            let msg = msg.into();
            self.outputs.push_back(Output::Send { conn, msg });
        }
        (None, sent)
    }

    /// Sends the live ads from key `from` on, about `budget` bytes: where
    /// to go on from, if anywhere, and the bytes sent.
    fn share_ads(
        &mut self,
        conn: ConnId,
        from: Option<(String, String)>,
        budget: usize,
    ) -> (Option<Cursor>, usize) {
        let from = from.map_or(Bound::Unbounded, Bound::Included);
        let mut sent = 0;
        for (key, stored) in self.ads.range((from, Bound::Unbounded)) {
            if sent >= budget {
                return (Some(Cursor::Ads(Some(key.clone()))), sent);
            }
            if stored.ad.cancel {
                continue;
            }
            sent += stored.msg.len() + 2;
            let msg = stored.msg.clone();
            self.outputs.push_back(Output::Send { conn, msg });
        }
        (None, sent)
    }
}

/// `node`'s stored update (of `seq`) as we (`own`) flooded it on.
fn as_flooded(
    graph: &Graph,
    own: &str,
    node: &str,
    seq: &NodeSeq,
    u: &StoredUpdate,
) -> RoutingUpdate {
    let named = u
        .connections
        .iter()
        .map(|&(to, c)| (graph.name(to).to_string(), c));
    RoutingUpdate {
        node_id: node.to_string(),
        update_id: u.update_id.to_string(),
        update_epoch: seq.epoch,
        update_sequence: seq.sequence,
        connections: named.collect(),
        forwarding_node: own.to_string(),
        suspected_duplicate: u.suspected_duplicate,
    }
}
