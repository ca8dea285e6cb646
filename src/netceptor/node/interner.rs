//! Node names as small integers, one table per node: the cost table, the
//! index of who lists whom, routes and known nodes hold a 4-byte [`Id`]
//! per reference instead of a copy of the name.
//!
//! The graph (its only user) releases an ID once no structure refers to
//! the name, and a released ID is reused by the next new name, so peers
//! advertising ever new names cannot grow the table: it holds at most the
//! names the graph holds, which the node's limits bound.

use std::collections::BTreeMap;
use std::ops::Bound;

pub(super) type Id = u32;

#[derive(Debug, Default)]
pub(super) struct Interner {
    /// Ordered, so new peers can be handed updates by name, a chunk at a time.
    ids: BTreeMap<Box<str>, Id>,
    /// The name of each ID; `None` for released IDs.
    names: Vec<Option<Box<str>>>,
    /// Released IDs, reused before new ones are made.
    free: Vec<Id>,
}

impl Interner {
    /// The ID of `name`, made if it has none.
    pub fn intern(&mut self, name: &str) -> Id {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                Id::try_from(self.names.len() - 1).expect("names are bounded by the node limits")
            }
        };
        self.names[id as usize] = Some(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    pub fn get(&self, name: &str) -> Option<Id> {
        self.ids.get(name).copied()
    }

    /// The name of a live ID (an ID is only handed out while it is live).
    pub fn name(&self, id: Id) -> &str {
        self.names[id as usize]
            .as_deref()
            .expect("a released node ID is still referred to")
    }

    /// Forgets `id`'s name; the ID may be given to another name.
    pub fn release(&mut self, id: Id) {
        if let Some(name) = self.names[id as usize].take() {
            self.ids.remove(&name);
            self.free.push(id);
        }
    }

    /// One more than the highest ID ever handed out.
    pub fn slots(&self) -> usize {
        self.names.len()
    }

    /// Live names in order, from `from` on (inclusive).
    pub fn from(&self, from: Option<&str>) -> impl Iterator<Item = (&str, Id)> {
        let from = from.map_or(Bound::Unbounded, Bound::Included);
        self.ids
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(name, &id)| (&**name, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_ids_are_reused_so_churn_does_not_grow_the_table() {
        let mut t = Interner::default();
        let me = t.intern("me");
        for i in 0..1000 {
            let id = t.intern(&format!("random{i}"));
            assert_eq!(t.name(id), format!("random{i}"));
            t.release(id);
        }
        assert_eq!(t.slots(), 2);
        assert_eq!(t.get("random999"), None);
        assert_eq!(t.intern("me"), me);
        let names: Vec<&str> = t.from(None).map(|(n, _)| n).collect();
        assert_eq!(names, ["me"]);
    }

    #[test]
    fn names_come_in_order_from_a_given_name() {
        let mut t = Interner::default();
        for n in ["c", "a", "d", "b"] {
            t.intern(n);
        }
        let names: Vec<&str> = t.from(Some("b")).map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "c", "d"]);
    }
}
