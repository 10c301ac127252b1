//! A bounded cache of records in front of the disk engine: hot keys are
//! served from a hash map instead of the LSM tree's skiplists and blocks,
//! decoded for commands and encoded for peers and byte comparisons, so
//! neither side decodes or encodes again. Misses are cached too, so reads of
//! absent keys are as cheap as hits.
//!
//! Consistency: writers update the cache after the engine, under the key's
//! lock, or, over an engine that keeps its recent writes in RAM (the disk
//! engine's write buffer, which a cache miss asks before the LSM tree),
//! make it forget the key. Readers, and the engine handing over what it moves
//! out of RAM, fill it only if nothing in the shard changed since they looked
//! (a per-shard version), so a slow filler can never put back a value older
//! than one a writer stored.
//!
//! Complete shards: a shard that has held every record of its keys since the
//! engine was opened empty, and has never dropped any, answers a miss as
//! "absent" without asking the engine. A write to a new key then reads nothing
//! from the LSM tree: on a cluster replica under `SET -P 16` that was a memtable
//! search per write, about 2,600 instructions, an eighth of the node's
//! (callgrind). Its first drop for the budget, FLUSHDB and FLUSHALL end that.

use ahash::AHashMap;
use parking_lot::Mutex;

use crate::version::EncodedRecord;

const SHARDS: usize = 256;

/// Bytes counted per entry on top of key and values. Measured with 1M keys of 100 B values: about 250 B per entry beyond key
/// and value (map slot, key box, Arc, record, its two vectors, the value's
/// buffer and allocator rounding).
const ENTRY_OVERHEAD: usize = 160;

/// Bytes counted for the encoded copy on top of its length: its handle in the
/// entry, the shared header its first clone allocates, allocator rounding.
const ENCODED_OVERHEAD: usize = 72;

/// What the cache holds for a key: the stored record with its encoding, or `None` if the key is absent.
pub type Cached = Option<EncodedRecord>;

/// What the cache knows about a key.
pub enum Lookup<T> {
    /// Cached: what the caller took of the record, or `None` if the key is known to be absent.
    Hit(Option<T>),
    /// Not cached; pass the token to [`RecordCache::fill`] after reading the engine.
    Miss(FillToken),
}

/// Proof of when a reader missed, so a stale fill is refused.
pub struct FillToken {
    shard: usize,
    version: u64,
}

#[derive(Default)]
struct Shard {
    map: AHashMap<Box<[u8]>, Cached>,
    bytes: usize,
    version: u64,
    /// Holds every stored record of its keys: a key it lacks is absent.
    complete: bool,
}

/// Sharded map from storage key to decoded record.
pub struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    budget_per_shard: usize,
    hasher: ahash::RandomState,
}

fn cost(key: &[u8], record: &Cached) -> usize {
    let values = record.as_ref().map_or(0, |EncodedRecord { record: r, encoded }| {
        encoded.len()
            + ENCODED_OVERHEAD
            + r.siblings
                .iter()
                .map(|s| s.value.as_ref().map_or(0, |v| v.len()) + 80)
                .sum::<usize>()
            + r.context.len() * 24
    });
    key.len() + values + ENTRY_OVERHEAD
}

impl RecordCache {
    /// A cache holding about `budget_bytes` of records, in front of an engine that holds no records yet if
    /// `engine_empty` (so the cache starts complete).
    pub fn new(budget_bytes: usize, engine_empty: bool) -> RecordCache {
        let shard = || {
            Mutex::new(Shard {
                complete: engine_empty,
                ..Shard::default()
            })
        };
        RecordCache {
            shards: (0..SHARDS).map(|_| shard()).collect(),
            budget_per_shard: (budget_bytes / SHARDS).max(1),
            hasher: ahash::RandomState::new(),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Looks `key` up and takes what the caller needs of its record (each part it clones is a reference count
    /// touched, and a cache line with it).
    pub fn get<T>(&self, key: &[u8], take: impl FnOnce(&EncodedRecord) -> T) -> Lookup<T> {
        let index = self.shard_of(key);
        let shard = self.shards[index].lock();
        match shard.map.get(key) {
            Some(record) => Lookup::Hit(record.as_ref().map(take)),
            None if shard.complete => Lookup::Hit(None),
            None => Lookup::Miss(FillToken {
                shard: index,
                version: shard.version,
            }),
        }
    }

    /// Marks this moment for a fill of `key` from elsewhere than a miss (what an engine moves out of RAM).
    pub fn token(&self, key: &[u8]) -> FillToken {
        let index = self.shard_of(key);
        FillToken {
            shard: index,
            version: self.shards[index].lock().version,
        }
    }

    /// Caches what a reader found in the engine, unless the shard changed since it missed.
    pub fn fill(&self, token: FillToken, key: &[u8], record: Cached) {
        let mut shard = self.shards[token.shard].lock();
        if shard.version == token.version {
            self.insert(&mut shard, key, record);
        }
    }

    /// Records what a writer just stored (`None`: the key was removed).
    pub fn put(&self, key: &[u8], record: Cached) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        shard.version += 1;
        self.insert(&mut shard, key, record);
    }

    /// Drops what is cached of `key`, which a writer changed without telling the cache what it wrote; a reader's
    /// fill from before is refused.
    pub fn forget(&self, key: &[u8]) {
        let mut shard = self.shards[self.shard_of(key)].lock();
        shard.version += 1;
        if let Some(old) = shard.map.remove(key) {
            shard.bytes -= cost(key, &old);
        }
    }

    fn insert(&self, shard: &mut Shard, key: &[u8], record: Cached) {
        let added = cost(key, &record);
        let replaced = match shard.map.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, record)),
            None => shard.map.insert(key.into(), record),
        };
        if let Some(old) = replaced {
            shard.bytes -= cost(key, &old);
        }
        shard.bytes += added;
        if shard.bytes > self.budget_per_shard {
            // Over budget: drop the whole shard. Crude, but O(1) amortised and
            // hot keys come back on their next read.
            shard.map.clear();
            shard.bytes = 0;
            shard.version += 1;
            shard.complete = false;
        }
    }

    /// Forgets everything (FLUSHDB, FLUSHALL). No shard is complete after: a write may land between the engine's
    /// flush and this, and what it cached is dropped here.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.map.clear();
            shard.bytes = 0;
            shard.version += 1;
            shard.complete = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::version::Record;

    fn record() -> Cached {
        let record = Record::default();
        let encoded = Bytes::from(record.encode());
        Some(EncodedRecord {
            record: Arc::new(record),
            encoded,
        })
    }

    #[test]
    fn stale_fill_after_a_write_is_refused() {
        let cache = RecordCache::new(1 << 20, false);
        let Lookup::Miss(token) = cache.get(b"k", Clone::clone) else {
            panic!("empty cache hit")
        };
        cache.put(b"k", None); // a writer removed the key meanwhile
        cache.fill(token, b"k", record()); // the reader's old view
        assert!(matches!(cache.get(b"k", Clone::clone), Lookup::Hit(None)));
    }

    #[test]
    fn a_forgotten_key_is_asked_of_the_engine_and_a_fill_from_before_is_refused() {
        let cache = RecordCache::new(1 << 20, false);
        cache.put(b"k", record());
        cache.forget(b"k");
        assert!(matches!(cache.get(b"k", Clone::clone), Lookup::Miss(_)));
        assert_eq!(cache.shards.iter().map(|s| s.lock().bytes).sum::<usize>(), 0);
        let Lookup::Miss(token) = cache.get(b"k", Clone::clone) else {
            panic!("a forgotten key hit")
        };
        cache.forget(b"k"); // a writer changed it meanwhile
        cache.fill(token, b"k", record()); // the reader's old view
        assert!(matches!(cache.get(b"k", Clone::clone), Lookup::Miss(_)));
    }

    #[test]
    fn fills_and_evicts_within_budget() {
        let cache = RecordCache::new(SHARDS * 1024, false);
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            if let Lookup::Miss(token) = cache.get(&key, Clone::clone) {
                cache.fill(token, &key, record());
            }
        }
        let cached: usize = cache.shards.iter().map(|s| s.lock().bytes).sum();
        assert!(cached <= SHARDS * 1024, "{cached} bytes cached");
        cache.clear();
        assert!(matches!(cache.get(&0u32.to_be_bytes(), Clone::clone), Lookup::Miss(_)));
    }

    #[test]
    fn a_complete_cache_answers_misses_as_absent_until_it_drops_records() {
        let cache = RecordCache::new(SHARDS * 1024, true);
        assert!(matches!(cache.get(b"never written", Clone::clone), Lookup::Hit(None)));
        cache.put(b"k", record());
        assert!(matches!(cache.get(b"k", Clone::clone), Lookup::Hit(Some(_))));
        // Over budget, shards drop what they held and must ask the engine from then on.
        for i in 0..10_000u32 {
            cache.put(&i.to_be_bytes(), record());
        }
        let complete = cache.shards.iter().filter(|shard| shard.lock().complete).count();
        assert_eq!(complete, 0, "every shard dropped records");
        assert!(matches!(cache.get(b"never written", Clone::clone), Lookup::Miss(_)));
        let cache = RecordCache::new(SHARDS * 1024, true);
        cache.clear();
        assert!(
            matches!(cache.get(b"k", Clone::clone), Lookup::Miss(_)),
            "complete no more"
        );
    }
}
