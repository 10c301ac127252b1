//! The RAM engine: records in hash maps, one per group of slots, an ordered
//! map for the expiry index. On its own nothing survives a restart; the `log`
//! engine (`log.rs`) adds an append-only log in front of it.
//!
//! A lookup is a few cache misses, and they are most of its cost: the map's
//! lock, the slot (`record_map.rs`), then the key to compare and the value.
//! So each entry is one allocation holding its key and then its value (the
//! key that is compared brings the value into the cache with it), and the
//! maps' locks and headers fit the L2 cache: 1024 maps of 16 slots each, 64
//! bytes apiece. A record rewritten at its old length is overwritten in place.
//!
//! Records are looked up far more often than scanned, so a map is a hash map
//! (one hash and one comparison per lookup, where an ordered map compares
//! keys sharing long prefixes at every level). A scan sorts one map's keys at
//! a time: maps are visited in slot order and a storage key begins with its
//! slot, so keys still come out in storage-key order.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use parking_lot::RwLock;
use smallvec::SmallVec;

use super::record_map::RecordMap;
use super::{BatchOp, Engine, Ops, Space, StorageError, StorageKey, Value, Visitor};
use crate::cluster::slot::SLOTS;

/// Slots per record map.
const SLOTS_PER_MAP: usize = 16;

/// Keys one prefetch takes at most: a pipeline's worth. More lines fetched ahead would push each other out of the
/// cache before they are used.
const PREFETCH_KEYS: usize = 32;

/// What an expiry index entry costs beside its key and value, about: the B-tree's share and two allocations.
const EXPIRY_ENTRY_OVERHEAD: usize = 64;

/// Record maps.
const MAPS: usize = SLOTS as usize / SLOTS_PER_MAP;

/// A stored record: `key length (u32 LE) ‖ key ‖ value` in one allocation.
pub(super) struct Entry(Box<[u8]>);

impl Entry {
    pub(super) fn new(key: &[u8], value: &[u8]) -> Entry {
        let mut bytes = Vec::with_capacity(4 + key.len() + value.len());
        // Keys longer than u32::MAX are refused before they get here (`max_key_len`).
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    fn key_len(&self) -> usize {
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.0[..4]);
        u32::from_le_bytes(len) as usize
    }

    /// The whole allocation.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The storage key.
    pub(super) fn key(&self) -> &[u8] {
        &self.0[4..4 + self.key_len()]
    }

    /// The stored value.
    pub(super) fn value(&self) -> &[u8] {
        &self.0[4 + self.key_len()..]
    }

    /// Replaces the value, in place when it has the old one's length: a
    /// rewritten record usually does (same value size, same clock entries),
    /// and a fresh allocation plus freeing the old one is two cold cache
    /// lines in the allocator on every write.
    pub(super) fn set_value(&mut self, value: &[u8]) {
        let start = 4 + self.key_len();
        if self.0.len() - start == value.len() {
            self.0[start..].copy_from_slice(value);
        } else {
            *self = Entry::new(self.key(), value);
        }
    }
}

/// A record map on a cache line of its own, with its lock.
#[repr(align(64))]
struct Shard(RwLock<RecordMap>);

/// Record maps by slot group, one ordered map for the expiry index.
pub struct MemoryEngine {
    records: Box<[Shard]>,
    expiry: RwLock<BTreeMap<Vec<u8>, Bytes>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine {
            records: (0..MAPS).map(|_| Shard(RwLock::new(RecordMap::default()))).collect(),
            expiry: RwLock::new(BTreeMap::new()),
        }
    }
}

impl MemoryEngine {
    /// The map of the slot a storage key begins with. Shorter or foreign keys
    /// land in a neighbouring map; the index only grows with the key, so
    /// scans stay ordered either way.
    fn map_of(key: &[u8]) -> usize {
        let prefix = match key {
            [] => 0,
            [high] => usize::from(*high) << 8,
            [high, low, ..] => usize::from(*high) << 8 | usize::from(*low),
        };
        prefix.min(usize::from(SLOTS) - 1) / SLOTS_PER_MAP
    }

    /// How many record maps there are, for the log engine's snapshots.
    pub(super) fn map_count(&self) -> usize {
        self.records.len()
    }

    /// Calls `visit` with the entries of record map `index`, unordered, under its read lock (snapshots).
    pub(super) fn with_map<R>(&self, index: usize, visit: impl FnOnce(&mut dyn Iterator<Item = &Entry>) -> R) -> R {
        let map = self.records[index].0.read();
        visit(&mut map.iter())
    }

    /// Calls `visit` with the expiry index's entries in order, under its read lock (snapshots).
    pub(super) fn with_expiry<R>(
        &self,
        visit: impl for<'a> FnOnce(&mut dyn Iterator<Item = (&'a [u8], &'a [u8])>) -> R,
    ) -> R {
        let map = self.expiry.read();
        visit(&mut map.iter().map(|(key, value)| (key.as_slice(), &value[..])))
    }

    /// Inserts or overwrites one entry; returns by how many bytes the maps grew, about (the disk engine seals its
    /// write buffer by that).
    pub(super) fn put(&self, space: Space, key: &[u8], value: &[u8]) -> usize {
        match space {
            Space::Records => self.records[Self::map_of(key)].0.write().put(key, value),
            Space::Expiry => {
                let old = self.expiry.write().insert(key.to_vec(), Bytes::copy_from_slice(value));
                match old {
                    Some(old) => value.len().saturating_sub(old.len()),
                    None => key.len() + value.len() + EXPIRY_ENTRY_OVERHEAD,
                }
            }
        }
    }

    /// [`Engine::read_then_apply`] with `journal` told the ops before they reach the maps (the log engine logs
    /// them): the key is found once for its read and its own write. Its other ops (expiry-index changes) are
    /// applied once its map's lock is let go, one lock at a time as [`Engine::apply`] takes them.
    pub(super) fn rewrite(
        &self,
        key: &[u8],
        write: &mut dyn FnMut(Option<&[u8]>, &mut Ops),
        journal: impl FnOnce(&[BatchOp]),
    ) -> bool {
        let mut ops = Ops::new();
        let mut map = self.records[Self::map_of(key)].0.write();
        let found = map.find(key);
        write(map.entry_at(&found).map(Entry::value), &mut ops);
        if ops.is_empty() {
            return false;
        }
        journal(&ops);
        let mut found = Some(found);
        let mut others: SmallVec<[&BatchOp; 3]> = SmallVec::new();
        for op in &ops {
            match (op, found.take()) {
                (BatchOp::Put(Space::Records, at, value), Some(found)) if at[..] == *key => {
                    map.put_found(found, key, value);
                }
                (BatchOp::Put(Space::Records, at, value), None) if at[..] == *key => {
                    map.put(key, value);
                }
                (BatchOp::Delete(Space::Records, at), _) if at[..] == *key => map.remove(key),
                (op, still) => {
                    found = still;
                    others.push(op);
                }
            }
        }
        drop(map);
        others.into_iter().for_each(|op| self.apply_one(op));
        true
    }

    /// One op of [`Engine::apply`].
    fn apply_one(&self, op: &BatchOp) {
        match op {
            BatchOp::Put(space, key, value) => {
                self.put(*space, key, value);
            }
            BatchOp::Delete(space, key) => self.remove(*space, key),
        }
    }

    /// Removes one entry if present.
    pub(super) fn remove(&self, space: Space, key: &[u8]) {
        match space {
            Space::Records => self.records[Self::map_of(key)].0.write().remove(key),
            Space::Expiry => {
                self.expiry.write().remove(key);
            }
        }
    }

    /// How many groups a scan of `space` walks, in key order: the record maps, or the one expiry index.
    pub(super) fn group_count(space: Space) -> usize {
        match space {
            Space::Records => MAPS,
            Space::Expiry => 1,
        }
    }

    /// The group of `space` that holds `key`.
    pub(super) fn group_of(space: Space, key: &[u8]) -> usize {
        match space {
            Space::Records => Self::map_of(key),
            Space::Expiry => 0,
        }
    }

    /// Visits every record once, in no order: for a caller that needs no order, as sorting each map is most of a
    /// scan's cost (a write buffer's ingestion: perf).
    pub(super) fn for_each_record(&self, visit: &mut dyn FnMut(&[u8], &[u8])) {
        for map in &self.records {
            for entry in map.0.read().iter() {
                visit(entry.key(), entry.value());
            }
        }
    }

    /// Visits group `index` of `space` (from `from` on, if given) in key order.
    pub(super) fn scan_group(
        &self,
        space: Space,
        index: usize,
        from: Option<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> ControlFlow<()> {
        match space {
            Space::Records => Self::scan_map(&self.records[index].0, from, visit),
            Space::Expiry => {
                let guard = self.expiry.read();
                for (key, value) in guard.range::<[u8], _>((Bound::Included(from.unwrap_or(&[])), Bound::Unbounded)) {
                    visit(key, value)?;
                }
                ControlFlow::Continue(())
            }
        }
    }

    /// Visits the records of one map from `from` on, sorted.
    fn scan_map(map: &RwLock<RecordMap>, from: Option<&[u8]>, visit: &mut Visitor<'_>) -> ControlFlow<()> {
        let guard = map.read();
        if guard.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut entries: Vec<&Entry> = guard
            .iter()
            .filter(|entry| from.is_none_or(|from| entry.key() >= from))
            .collect();
        entries.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        for entry in entries {
            visit(entry.key(), entry.value())?;
        }
        ControlFlow::Continue(())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        let map = self.records[Self::map_of(key)].0.read();
        Ok(map
            .get(key)
            .map(|entry| Value::Bytes(Bytes::copy_from_slice(entry.value()))))
    }

    fn read_with(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), StorageError> {
        let map = self.records[Self::map_of(key)].0.read();
        read(map.get(key).map(Entry::value));
        Ok(())
    }

    /// In two passes, so that the keys' cache misses overlap: their home slots, then the entries in them.
    fn prefetch(&self, keys: &mut dyn Iterator<Item = StorageKey>) {
        let mut homes: SmallVec<[(usize, u64); PREFETCH_KEYS]> = SmallVec::new();
        for key in keys.take(PREFETCH_KEYS) {
            let map = Self::map_of(&key);
            homes.push((map, self.records[map].0.read().prefetch_slot(&key)));
        }
        for &(map, hash) in &homes {
            self.records[map].0.read().prefetch_entry(hash);
        }
    }

    fn read_then_apply(
        &self,
        key: &[u8],
        write: &mut dyn FnMut(Option<&[u8]>, &mut Ops),
    ) -> Result<bool, StorageError> {
        Ok(self.rewrite(key, write, |_| ()))
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
        // Callers hold the key's lock, so per-map atomicity is enough here.
        ops.iter().for_each(|op| self.apply_one(op));
        Ok(())
    }

    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        let first = Self::group_of(space, from);
        for index in first..Self::group_count(space) {
            let from = (index == first).then_some(from);
            if self.scan_group(space, index, from, visit).is_break() {
                break;
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
            let mut map = map.0.write();
            if !map.is_empty() {
                *map = RecordMap::default();
            }
        }
        self.expiry.write().clear();
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }

    fn max_key_len(&self) -> usize {
        u32::MAX as usize
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
        for slot in [0u16, 1, 15, 16, 255, 256, 16383] {
            for name in ["b", "a", "c", "aa", ""] {
                keys.push(storage_key(slot, 0, name.as_bytes()).to_vec());
            }
        }
        // Keys shorter than a slot prefix sort before slot 0's keys.
        keys.push(vec![]);
        keys.push(vec![0]);
        let ops: Vec<BatchOp> = keys
            .iter()
            .map(|k| BatchOp::Put(Space::Records, k.as_slice().into(), Bytes::from(k.clone())))
            .collect();
        engine.apply(&ops).expect("apply");
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
        let at = keys.iter().position(|k| k[..] == middle[..]).expect("present");
        assert_eq!(scan_from(&middle), keys[at..].to_vec());
        // Unordered, every record once, with its value.
        let mut visited = Vec::new();
        engine.for_each_record(&mut |k, v| {
            assert_eq!(k, v);
            visited.push(k.to_vec());
        });
        visited.sort();
        assert_eq!(visited, keys);
    }

    #[test]
    fn a_prefetch_of_present_absent_and_foreign_keys_changes_nothing() {
        let engine = MemoryEngine::default();
        let keys: Vec<StorageKey> = (0u16..40)
            .map(|i| StorageKey::from_slice(&[((i * 1000) >> 8) as u8, (i * 1000) as u8, b'k']))
            .chain([StorageKey::new(), StorageKey::from_slice(&[0xff])])
            .collect();
        engine.prefetch(&mut keys.iter().cloned());
        for key in keys.iter().step_by(2) {
            engine.put(Space::Records, key, key);
        }
        engine.prefetch(&mut keys.iter().cloned());
        for (i, key) in keys.iter().enumerate() {
            let value = engine.get(key).expect("get").map(|value| value.to_vec());
            assert_eq!(value, (i % 2 == 0).then(|| key.to_vec()));
        }
    }

    #[test]
    fn an_entry_keeps_its_key_and_value_apart() {
        let engine = MemoryEngine::default();
        let read = |key: &[u8]| engine.get(key).expect("get").map(|value| value.to_vec());
        engine.put(Space::Records, b"\x00\x01k", b"value");
        engine.put(Space::Records, b"\x00\x01", b"");
        engine.put(Space::Records, b"", b"empty key");
        assert_eq!(read(b"\x00\x01k").as_deref(), Some(&b"value"[..]));
        assert_eq!(read(b"\x00\x01").as_deref(), Some(&b""[..]));
        assert_eq!(read(b"").as_deref(), Some(&b"empty key"[..]));
        assert_eq!(read(b"\x00\x01kv"), None, "a key is not a prefix of its entry");
        engine.put(Space::Records, b"\x00\x01k", b"other");
        assert_eq!(
            read(b"\x00\x01k").as_deref(),
            Some(&b"other"[..]),
            "overwritten, not added"
        );
        engine.put(Space::Records, b"\x00\x01k", b"longer value");
        engine.put(Space::Records, b"\x00\x01", b"grown");
        assert_eq!(read(b"\x00\x01k").as_deref(), Some(&b"longer value"[..]));
        assert_eq!(read(b"\x00\x01").as_deref(), Some(&b"grown"[..]));
        engine.put(Space::Records, b"\x00\x01k", b"other");
        let mut seen = None;
        engine
            .read_with(b"\x00\x01k", &mut |value| seen = value.map(<[u8]>::to_vec))
            .expect("read");
        assert_eq!(seen.as_deref(), Some(&b"other"[..]));
        engine.remove(Space::Records, b"\x00\x01k");
        assert_eq!(read(b"\x00\x01k"), None);
    }
}
