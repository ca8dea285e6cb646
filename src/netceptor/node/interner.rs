//! Node names as small integers, one table per node: the cost table, the
//! index of who lists whom, routes and known nodes hold a 4-byte [`Id`]
//! per reference instead of a copy of the name.
//!
//! Each reference is counted ([`Interner::retain`], [`Interner::release`]):
//! a name goes once nothing refers to it, and its ID is reused by the next
//! new name, so peers advertising ever new names cannot grow the table: it
//! holds at most the names the node's state holds, which its limits bound.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

pub(super) type Id = u32;

#[derive(Debug, Default)]
pub(super) struct Interner {
    /// Ordered, so new peers can be handed updates by name, a chunk at a time.
    ids: BTreeMap<Arc<str>, Id>,
    /// The name of each ID and its references; `None` for free IDs. The
    /// name is shared with `ids`: one allocation per name, not two (every
    /// node holds every node's name).
    names: Vec<Option<(Arc<str>, u32)>>,
    /// Released IDs, reused before new ones are made.
    free: Vec<Id>,
}

impl Interner {
    /// One more reference to `name`: its ID, made if it has none.
    pub fn retain(&mut self, name: &str) -> Id {
        if let Some(&id) = self.ids.get(name) {
            self.retain_id(id);
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.names.push(None);
                Id::try_from(self.names.len() - 1).expect("names are bounded by the node limits")
            }
        };
        let name: Arc<str> = name.into();
        self.names[id as usize] = Some((Arc::clone(&name), 1));
        self.ids.insert(name, id);
        id
    }

    /// One more reference to a live ID.
    pub fn retain_id(&mut self, id: Id) {
        let slot = &mut self.names[id as usize];
        debug_assert!(slot.is_some(), "node ID {id} retained while free");
        if let Some((_, refs)) = slot {
            *refs += 1;
        }
    }

    /// Whether `id` names a node (it is not free).
    pub fn is_live(&self, id: Id) -> bool {
        self.names.get(id as usize).is_some_and(Option::is_some)
    }

    pub fn get(&self, name: &str) -> Option<Id> {
        self.ids.get(name).copied()
    }

    /// The name of a live ID (an ID is only held while it is live).
    pub fn name(&self, id: Id) -> &str {
        let (name, _) = self.names[id as usize]
            .as_ref()
            .expect("a released node ID is still referred to");
        name
    }

    /// One reference to `id` fewer; with none left, its name is forgotten
    /// and the ID may be given to another name.
    pub fn release(&mut self, id: Id) {
        let slot = &mut self.names[id as usize];
        // Releasing a free ID is a counting bug: once the ID is reused it
        // would take a reference from another name.
        debug_assert!(slot.is_some(), "node ID {id} released while free");
        if let Some((_, refs)) = slot {
            *refs -= 1;
            if *refs == 0
                && let Some((name, _)) = slot.take()
            {
                self.ids.remove(&name);
                self.free.push(id);
            }
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

/// Values by [`Id`], in a vector indexed by it: at thousands of known
/// nodes, a hash map's entries and spare room cost twice the value.
///
/// It holds no reference to the IDs it is keyed by: only IDs of nodes
/// with an entry in the graph go in, and those are never released (see
/// [`super::graph::Graph::has_entry`]).
#[derive(Debug)]
pub(super) struct IdMap<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> IdMap<T> {
    pub fn get(&self, id: Id) -> Option<&T> {
        self.slots.get(id as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: Id) -> Option<&mut T> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    pub fn contains(&self, id: Id) -> bool {
        self.get(id).is_some()
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Puts `value` at `id`: what was there.
    pub fn insert(&mut self, id: Id, value: T) -> Option<T> {
        let at = id as usize;
        if self.slots.len() <= at {
            self.slots.resize_with(at + 1, || None);
        }
        let old = self.slots[at].replace(value);
        self.len += usize::from(old.is_none());
        old
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, &T)> {
        (0..)
            .zip(&self.slots)
            .filter_map(|(id, v)| Some((id, v.as_ref()?)))
    }
}

impl<T> FromIterator<Option<T>> for IdMap<T> {
    /// Values by position: the `n`th item is ID `n`'s.
    fn from_iter<I: IntoIterator<Item = Option<T>>>(iter: I) -> Self {
        let slots: Vec<Option<T>> = iter.into_iter().collect();
        let len = slots.iter().flatten().count();
        IdMap { slots, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_ids_are_reused_so_churn_does_not_grow_the_table() {
        let mut t = Interner::default();
        let me = t.retain("me");
        for i in 0..1000 {
            let id = t.retain(&format!("random{i}"));
            assert_eq!(t.retain(&format!("random{i}")), id);
            assert_eq!(t.name(id), format!("random{i}"));
            t.release(id);
            assert_eq!(t.get(&format!("random{i}")), Some(id), "one reference left");
            t.release(id);
        }
        assert_eq!(t.slots(), 2);
        assert_eq!(t.get("random999"), None);
        assert_eq!(t.retain("me"), me);
        let names: Vec<&str> = t.from(None).map(|(n, _)| n).collect();
        assert_eq!(names, ["me"]);
    }

    #[test]
    fn names_come_in_order_from_a_given_name() {
        let mut t = Interner::default();
        for n in ["c", "a", "d", "b"] {
            t.retain(n);
        }
        let names: Vec<&str> = t.from(Some("b")).map(|(n, _)| n).collect();
        assert_eq!(names, ["b", "c", "d"]);
    }
}
