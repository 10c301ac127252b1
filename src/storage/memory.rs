//! The RAM engine: ordered maps behind sharded locks. Nothing survives a
//! restart. Shards split the slot space into contiguous ranges, so a scan that
//! walks the shards in order still visits keys in storage-key order.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use bytes::Bytes;
use parking_lot::RwLock;

use super::{BatchOp, Engine, Space, StorageError, Value, Visitor};

/// Shards by the high bits of the slot (the first storage-key byte).
const SHARDS: usize = 64;

type Map = BTreeMap<Vec<u8>, Bytes>;

/// Sharded ordered maps for records, one map for the expiry index.
pub struct MemoryEngine {
    records: Vec<RwLock<Map>>,
    expiry: RwLock<Map>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine {
            records: (0..SHARDS).map(|_| RwLock::new(Map::new())).collect(),
            expiry: RwLock::new(Map::new()),
        }
    }
}

impl MemoryEngine {
    /// Slots are < 16384, so the first byte is < 64: one shard per value.
    fn shard_of(key: &[u8]) -> usize {
        key.first().map_or(0, |b| usize::from(*b) % SHARDS)
    }

    fn map(&self, space: Space, key: &[u8]) -> &RwLock<Map> {
        match space {
            Space::Records => &self.records[Self::shard_of(key)],
            Space::Expiry => &self.expiry,
        }
    }

    fn scan_map(map: &RwLock<Map>, from: &[u8], visit: &mut Visitor<'_>) -> ControlFlow<()> {
        let guard = map.read();
        for (key, value) in guard.range::<[u8], _>((Bound::Included(from), Bound::Unbounded)) {
            visit(key, value)?;
        }
        ControlFlow::Continue(())
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        Ok(self.records[Self::shard_of(key)]
            .read()
            .get(key)
            .cloned()
            .map(Value::Bytes))
    }

    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StorageError> {
        // Callers hold the key's lock, so per-shard atomicity is enough here.
        for op in ops {
            match op {
                BatchOp::Put(space, key, value) => {
                    self.map(space, &key).write().insert(key, Bytes::from(value));
                }
                BatchOp::Delete(space, key) => {
                    self.map(space, &key).write().remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        match space {
            Space::Expiry => {
                let _ = Self::scan_map(&self.expiry, from, visit);
            }
            Space::Records => {
                for shard in &self.records[Self::shard_of(from)..] {
                    if Self::scan_map(shard, from, visit).is_break() {
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
        for shard in &self.records {
            shard.write().clear();
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
