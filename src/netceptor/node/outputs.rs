//! The outputs waiting for the shell. A flood waits as one entry, the
//! message and the links it goes to, and is handed out as one
//! [`Output::Send`] per link, in the same order: in a mass start thousands
//! of floods wait at once, and a hub's would otherwise be an 80-byte
//! output per peer. A routing update flooded on waits as the update as it
//! arrived ([`Forwardable`]): our ID goes in when it comes out, so it
//! waits in the sender's buffer, not in a copy of our own.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ConnId, Output};
use crate::netceptor::codec::Forwardable;

enum Queued {
    One(Output),
    /// `msg` for each of `conns` from `next` on.
    Flood {
        msg: Bytes,
        conns: Box<[ConnId]>,
        next: usize,
    },
    /// `update` with our ID as forwarder, for each of `conns`.
    Forward {
        update: Forwardable,
        conns: Box<[ConnId]>,
    },
}

#[derive(Default)]
pub(super) struct Outputs {
    queue: VecDeque<Queued>,
}

impl Outputs {
    pub fn push_back(&mut self, out: Output) {
        self.queue.push_back(Queued::One(out));
    }

    /// `msg` for each of `conns`, in order.
    pub fn push_flood(&mut self, msg: Bytes, conns: Box<[ConnId]>) {
        if !conns.is_empty() {
            let next = 0;
            self.queue.push_back(Queued::Flood { msg, conns, next });
        }
    }

    /// `update` with our ID as forwarder for each of `conns`, in order.
    pub fn push_forward(&mut self, update: Forwardable, conns: Box<[ConnId]>) {
        if !conns.is_empty() {
            self.queue.push_back(Queued::Forward { update, conns });
        }
    }

    /// The next output; `forwarder` is our ID as a JSON string.
    pub fn pop_front(&mut self, forwarder: &[u8]) -> Option<Output> {
        let front = self.queue.front_mut()?;
        if let Queued::Forward { update, conns } = front {
            // Encoded once for all its links.
            let msg = update.with_forwarder(forwarder);
            let conns = std::mem::take(conns);
            *front = Queued::Flood {
                msg,
                conns,
                next: 0,
            };
        }
        let Some(Queued::Flood { msg, conns, next }) = self.queue.front_mut() else {
            return match self.queue.pop_front() {
                Some(Queued::One(out)) => Some(out),
                _ => None,
            };
        };
        let out = Output::Send {
            conn: conns[*next],
            msg: msg.clone(),
        };
        *next += 1;
        if *next == conns.len() {
            self.queue.pop_front();
        }
        Some(out)
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub fn shrink_to(&mut self, room: usize) {
        self.queue.shrink_to(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netceptor::codec;

    #[test]
    fn a_flood_comes_out_in_order_among_other_outputs() {
        let mut q = Outputs::default();
        q.push_back(Output::Close {
            conn: 1,
            error: None,
        });
        q.push_flood(Bytes::from_static(b"m"), Box::new([2, 3]));
        q.push_flood(Bytes::from_static(b"none"), Box::new([]));
        q.push_back(Output::Close {
            conn: 4,
            error: None,
        });
        let got: Vec<(ConnId, Option<Bytes>)> = std::iter::from_fn(|| q.pop_front(b"\"us\""))
            .map(|out| match out {
                Output::Send { conn, msg } => (conn, Some(msg)),
                Output::Close { conn, .. } => (conn, None),
                other => panic!("{other:?}"),
            })
            .collect();
        let m = Some(Bytes::from_static(b"m"));
        assert_eq!(got, [(1, None), (2, m.clone()), (3, m), (4, None)]);
    }

    #[test]
    fn a_forwarded_update_comes_out_with_our_id_in_one_buffer() {
        let ru = codec::RoutingUpdate {
            node_id: "far".into(),
            update_id: "u1".into(),
            update_epoch: 1,
            update_sequence: 1,
            connections: [("them".to_string(), 1.0)].into(),
            forwarding_node: "them".into(),
            suspected_duplicate: 0,
        };
        let raw = codec::encode_routing(&ru).into();
        let update = Forwardable::new(raw, &ru).expect("our own encoding");
        let mut q = Outputs::default();
        q.push_forward(update, Box::new([2, 3]));
        let ours = codec::json_string("us");
        let sent: Vec<(ConnId, Bytes)> = std::iter::from_fn(|| q.pop_front(&ours))
            .map(|out| match out {
                Output::Send { conn, msg } => (conn, msg),
                other => panic!("{other:?}"),
            })
            .collect();
        let as_ours = codec::RoutingUpdate {
            forwarding_node: "us".into(),
            ..ru
        };
        assert_eq!(sent[0], (2, Bytes::from(codec::encode_routing(&as_ours))));
        assert_eq!(sent[1].0, 3);
        assert_eq!(sent[0].1.as_ptr(), sent[1].1.as_ptr(), "one buffer");
        assert_eq!(sent.len(), 2);
    }
}
