//! The outputs waiting for the shell. A flood waits as one entry, the
//! message and the links it goes to, and is handed out as one
//! [`Output::Send`] per link, in the same order: in a mass start thousands
//! of floods wait at once, and a hub's would otherwise be an 80-byte
//! output per peer.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{ConnId, Output};

enum Queued {
    One(Output),
    /// `msg` for each of `conns` from `next` on.
    Flood {
        msg: Bytes,
        conns: Box<[ConnId]>,
        next: usize,
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

    pub fn pop_front(&mut self) -> Option<Output> {
        let Queued::Flood { msg, conns, next } = self.queue.front_mut()? else {
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
        let got: Vec<(ConnId, Option<Bytes>)> = std::iter::from_fn(|| q.pop_front())
            .map(|out| match out {
                Output::Send { conn, msg } => (conn, Some(msg)),
                Output::Close { conn, .. } => (conn, None),
                other => panic!("{other:?}"),
            })
            .collect();
        let m = Some(Bytes::from_static(b"m"));
        assert_eq!(got, [(1, None), (2, m.clone()), (3, m), (4, None)]);
    }
}
