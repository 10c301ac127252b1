//! A hash table of entries that carry their own key, written here rather
//! than taken from hashbrown: a lookup is mostly cache misses, and hashbrown's
//! layout costs one more than it needs (its control bytes, then the bucket,
//! then the entry). Here a slot holds the key's full hash beside the entry,
//! so a lookup reads one slot (usually the first it probes) and compares a
//! key only when the hashes agree. The memory engine's record maps and the
//! disk engine's record cache use it.
//!
//! Open addressing with linear probing, at most 3/4 full; removal shifts the
//! following slots back instead of leaving tombstones, so a lookup stops at
//! the first empty slot. Slots are picked by the hash's low bits: a caller
//! that shards by hash must shard by its high bits.

use std::sync::OnceLock;

/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 8;

/// An entry that knows its key.
pub(crate) trait Keyed {
    /// The key the entry is found by.
    fn key(&self) -> &[u8];
}

/// One slot: an entry and its key's hash, or nothing.
pub(crate) struct Slot<T> {
    hash: u64,
    entry: Option<T>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { hash: 0, entry: None }
    }
}

/// A table's entries, in no order.
pub(crate) type Entries<'a, T> = std::iter::FilterMap<std::slice::Iter<'a, Slot<T>>, fn(&Slot<T>) -> Option<&T>>;

/// Entries found by their key alone.
pub(crate) struct KeyedTable<T> {
    /// A power of two in length, or empty before the first insert.
    slots: Box<[Slot<T>]>,
    len: usize,
}

impl<T> Default for KeyedTable<T> {
    fn default() -> Self {
        KeyedTable {
            slots: Box::default(),
            len: 0,
        }
    }
}

/// The hash tables key by. Keys come from clients (HashDoS), so they are
/// hashed with the process's one random seed, kept out of the tables.
pub(crate) fn hash_key(key: &[u8]) -> u64 {
    static SEED: OnceLock<ahash::RandomState> = OnceLock::new();
    SEED.get_or_init(ahash::RandomState::new).hash_one(key)
}

impl<T: Keyed> KeyedTable<T> {
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where `key` (whose hash is `hash`) is, if present.
    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            match &slot.entry {
                None => return None,
                Some(entry) if slot.hash == hash && entry.key() == key => return Some(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// The entry of `key`, whose hash is `hash`.
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&T> {
        let at = self.position(hash, key)?;
        self.slots[at].entry.as_ref()
    }

    /// The entry of `key`, whose hash is `hash`, to change (not its key).
    pub(crate) fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut T> {
        let at = self.position(hash, key)?;
        self.slots[at].entry.as_mut()
    }

    /// Adds `entry`, whose key's hash is `hash`; the caller knows the key is absent.
    pub(crate) fn insert_absent(&mut self, hash: u64, entry: T) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(hash, entry);
        self.len += 1;
    }

    /// Puts an entry known to be absent in the first free slot from its home.
    fn place(&mut self, hash: u64, entry: T) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.slots[at].entry.is_some() {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            hash,
            entry: Some(entry),
        };
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| Slot::default()).collect());
        for slot in old.into_vec() {
            if let Some(entry) = slot.entry {
                self.place(slot.hash, entry);
            }
        }
    }

    /// Takes out the entry of `key`, whose hash is `hash`.
    pub(crate) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<T> {
        let mut hole = self.position(hash, key)?;
        let removed = self.slots[hole].entry.take();
        self.len -= 1;
        // Move back each following entry whose home is not between the hole
        // and it, so every entry stays reachable from its home without gaps.
        let mask = self.mask();
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            if self.slots[at].entry.is_none() {
                return removed;
            }
            let home = self.slots[at].hash as usize & mask;
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                self.slots.swap(hole, at);
                hole = at;
            }
        }
    }

    pub(crate) fn iter(&self) -> Entries<'_, T> {
        self.slots.iter().filter_map(|slot| slot.entry.as_ref())
    }

    /// Drops every entry, keeping the slots for the entries to come.
    pub(crate) fn clear(&mut self) {
        for slot in self.slots.iter_mut() {
            slot.entry = None;
        }
        self.len = 0;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A key and a value, for the model test.
    struct Pair(Vec<u8>, Vec<u8>);

    impl Keyed for Pair {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, so puts overwrite and removals hit.
        prop_oneof![(0u8..40).prop_map(Op::Put), (0u8..40).prop_map(Op::Remove)]
    }

    proptest! {
        #[test]
        fn agrees_with_std_hash_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut table = KeyedTable::<Pair>::default();
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            for (i, op) in ops.iter().enumerate() {
                let value = vec![i as u8];
                match *op {
                    Op::Put(k) => {
                        let hash = hash_key(&[k]);
                        match table.get_mut(hash, &[k]) {
                            Some(pair) => pair.1 = value.clone(),
                            None => table.insert_absent(hash, Pair(vec![k], value.clone())),
                        }
                        model.insert(vec![k], value);
                    }
                    Op::Remove(k) => {
                        let removed = table.remove(hash_key(&[k]), &[k]).map(|pair| pair.1);
                        prop_assert_eq!(removed, model.remove(&vec![k]));
                    }
                }
                for k in 0u8..40 {
                    let found = table.get(hash_key(&[k]), &[k]).map(|pair| pair.1.as_slice());
                    prop_assert_eq!(found, model.get(&vec![k]).map(Vec::as_slice));
                }
                prop_assert_eq!(table.iter().count(), model.len());
                prop_assert_eq!(table.is_empty(), model.is_empty());
            }
            table.clear();
            prop_assert!(table.is_empty());
            prop_assert_eq!(table.iter().count(), 0);
            for k in 0u8..40 {
                prop_assert!(table.get(hash_key(&[k]), &[k]).is_none());
            }
        }
    }
}
