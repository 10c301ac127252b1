//! The RAM engine: one hash map per slot for records, an ordered map for the
//! expiry index. On its own nothing survives a restart; the `log` engine
//! (`log.rs`) adds an append-only log in front of it.
//!
//! Records are looked up far more often than scanned, so each slot is a hash
//! map (one hash and one comparison per lookup, where an ordered map compares
//! keys sharing long prefixes at every level). A scan sorts one slot's keys at
//! a time: slots are visited in order and a storage key begins with its slot,
//! so keys still come out in storage-key order.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use parking_lot::RwLock;

use super::{BatchOp, Engine, Space, StorageError, Value, Visitor};
use crate::cluster::slot::SLOTS;

/// The records of one slot.
pub(super) type SlotMap = HashMap<Vec<u8>, Bytes, ahash::RandomState>;

/// Per-slot maps for records, one ordered map for the expiry index.
pub struct MemoryEngine {
    records: Box<[RwLock<SlotMap>]>,
    expiry: RwLock<BTreeMap<Vec<u8>, Bytes>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        // One random hasher for all maps: keys come from clients (HashDoS).
        let hasher = ahash::RandomState::new();
        MemoryEngine {
            records: (0..SLOTS)
                .map(|_| RwLock::new(SlotMap::with_hasher(hasher.clone())))
                .collect(),
            expiry: RwLock::new(BTreeMap::new()),
        }
    }
}

impl MemoryEngine {
    /// The map of the slot a storage key begins with. Shorter or foreign keys
    /// land in a neighbouring map; the index only grows with the key, so
    /// scans stay ordered either way.
    fn slot_of(key: &[u8]) -> usize {
        let prefix = match key {
            [] => 0,
            [high] => usize::from(*high) << 8,
            [high, low, ..] => usize::from(*high) << 8 | usize::from(*low),
        };
        prefix.min(usize::from(SLOTS) - 1)
    }

    /// The records of slot map `index`, for the log engine's snapshots.
    pub(super) fn slot_map(&self, index: usize) -> &RwLock<SlotMap> {
        &self.records[index]
    }

    /// The expiry index, for the log engine's snapshots.
    pub(super) fn expiry_map(&self) -> &RwLock<BTreeMap<Vec<u8>, Bytes>> {
        &self.expiry
    }

    /// Inserts or overwrites one entry.
    pub(super) fn put(&self, space: Space, key: Vec<u8>, value: Bytes) {
        match space {
            Space::Records => self.records[Self::slot_of(&key)].write().insert(key, value),
            Space::Expiry => self.expiry.write().insert(key, value),
        };
    }

    /// Removes one entry if present.
    pub(super) fn remove(&self, space: Space, key: &[u8]) {
        match space {
            Space::Records => self.records[Self::slot_of(key)].write().remove(key),
            Space::Expiry => self.expiry.write().remove(key),
        };
    }

    /// Visits the records of one slot map from `from` on, sorted.
    fn scan_slot(map: &RwLock<SlotMap>, from: Option<&[u8]>, visit: &mut Visitor<'_>) -> ControlFlow<()> {
        let guard = map.read();
        if guard.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut entries: Vec<(&Vec<u8>, &Bytes)> = guard
            .iter()
            .filter(|(key, _)| from.is_none_or(|from| key.as_slice() >= from))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, value) in entries {
            visit(key, value)?;
        }
        ControlFlow::Continue(())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        Ok(self.records[Self::slot_of(key)]
            .read()
            .get(key)
            .cloned()
            .map(Value::Bytes))
    }

    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StorageError> {
        // Callers hold the key's lock, so per-map atomicity is enough here.
        for op in ops {
            match op {
                BatchOp::Put(space, key, value) => self.put(space, key, Bytes::from(value)),
                BatchOp::Delete(space, key) => self.remove(space, &key),
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        match space {
            Space::Expiry => {
                let guard = self.expiry.read();
                for (key, value) in guard.range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
                    if visit(key, value).is_break() {
                        break;
                    }
                }
            }
            Space::Records => {
                let first = Self::slot_of(from);
                for (index, map) in self.records.iter().enumerate().skip(first) {
                    let from = (index == first).then_some(from);
                    if Self::scan_slot(map, from, visit).is_break() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn clear(&self) -> Result<(), StorageError> {
        for map in self.records.iter() {
            let mut map = map.write();
            if !map.is_empty() {
                *map = SlotMap::with_hasher(map.hasher().clone());
            }
        }
        self.expiry.write().clear();
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }

    fn max_key_len(&self) -> usize {
        usize::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::storage_key;

    #[test]
    fn scans_are_ordered_across_and_within_slots_and_resume_mid_slot() {
        let engine = MemoryEngine::default();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for slot in [0u16, 1, 255, 256, 16383] {
            for name in ["b", "a", "c", "aa", ""] {
                keys.push(storage_key(slot, 0, name.as_bytes()));
            }
        }
        // Keys shorter than a slot prefix sort before slot 0's keys.
        keys.push(vec![]);
        keys.push(vec![0]);
        let ops = keys
            .iter()
            .map(|k| BatchOp::Put(Space::Records, k.clone(), k.clone()))
            .collect();
        engine.apply(ops).expect("apply");
        keys.sort();
        let scan_from = |from: &[u8]| {
            let mut seen = Vec::new();
            engine
                .scan(Space::Records, from, &mut |k, v| {
                    assert_eq!(k, v);
                    seen.push(k.to_vec());
                    ControlFlow::Continue(())
                })
                .expect("scan");
            seen
        };
        assert_eq!(scan_from(&[]), keys);
        let middle = storage_key(255, 0, b"aa");
        let at = keys.iter().position(|k| *k == middle).expect("present");
        assert_eq!(scan_from(&middle), keys[at..].to_vec());
    }
}
