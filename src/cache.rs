//! A bounded cache of records in front of the disk engine: hot keys are
//! served from a hash map instead of the LSM tree's skiplists and blocks,
//! encoded for reads, peers and byte comparisons, and decoded once for the
//! commands that need the record, which is kept. Misses are cached too, so
//! reads of absent keys are as cheap as hits.
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

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::storage::StorageError;
use crate::version::{EncodedRecord, Record};

const SHARDS: usize = 256;

/// Bytes counted per entry on top of key and values. Measured with 1M keys of 100 B values: about 250 B per entry beyond key
/// and value (map slot, key box, Arc, record, its two vectors, the value's
/// buffer and allocator rounding).
const ENTRY_OVERHEAD: usize = 160;

/// Bytes counted for the encoded copy on top of its length: its handle in the
/// entry, the shared header its first clone allocates, allocator rounding.
const ENCODED_OVERHEAD: usize = 72;

/// What the cache holds for a key: the stored record, or `None` if the key is absent.
pub type Cached = Option<CachedRecord>;

/// A cached record: its encoding, as stored and as peers get it, and the record decoded from it once a command
/// needed it. What the disk engine hands over is cached encoded only: reads answer from the bytes, merges compare
/// them, and under writes most keys are rewritten in the write buffer before anything decodes them; decoding every
/// record an ingestion moves took about 550 instructions and a few hundred bytes of fresh heap each (callgrind, and
/// fresh memory is dear on the VMs measured: compat/PERFORMANCE.md).
pub struct CachedRecord {
    encoded: Bytes,
    record: Option<Arc<Record>>,
}

impl CachedRecord {
    /// Stored bytes, not decoded yet.
    pub fn encoded(encoded: Bytes) -> CachedRecord {
        CachedRecord { encoded, record: None }
    }

    /// A record a writer just encoded: both at hand.
    pub fn written(written: &EncodedRecord) -> CachedRecord {
        CachedRecord {
            encoded: written.encoded.clone(),
            record: Some(written.record.clone()),
        }
    }

    /// The record's encoding.
    pub fn bytes(&self) -> &Bytes {
        &self.encoded
    }

    /// The record, decoded the first time it is asked for; bytes that do not decode mean a damaged data dir.
    pub fn record(&mut self) -> Result<Arc<Record>, StorageError> {
        if let Some(record) = &self.record {
            return Ok(record.clone());
        }
        let record = Arc::new(Record::decode(&self.encoded).ok_or(StorageError::Corrupt)?);
        self.record = Some(record.clone());
        Ok(record)
    }
}

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

/// Sharded map from storage key to record.
pub struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    budget_per_shard: usize,
    hasher: ahash::RandomState,
}

/// What an entry is counted as, decoded or not (so that it is taken off as it was added): its encoding twice, for the
/// encoding and the record decoded from it (values, about 80 bytes a sibling, 24 a context entry, of which the
/// encoding is a fair measure).
fn cost(key: &[u8], record: &Cached) -> usize {
    let values = record
        .as_ref()
        .map_or(0, |cached| 2 * cached.encoded.len() + ENCODED_OVERHEAD);
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
    /// touched, and a cache line with it; a record it decodes stays decoded).
    pub fn get<T>(&self, key: &[u8], take: impl FnOnce(&mut CachedRecord) -> T) -> Lookup<T> {
        let index = self.shard_of(key);
        let mut shard = self.shards[index].lock();
        let complete = shard.complete;
        match shard.map.get_mut(key) {
            Some(record) => Lookup::Hit(record.as_mut().map(take)),
            None if complete => Lookup::Hit(None),
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
    use super::*;
    use crate::version::VersionVector;

    fn record() -> Cached {
        Some(CachedRecord::encoded(Bytes::from(Record::default().encode())))
    }

    fn bytes(held: &mut CachedRecord) -> Bytes {
        held.bytes().clone()
    }

    #[test]
    fn stale_fill_after_a_write_is_refused() {
        let cache = RecordCache::new(1 << 20, false);
        let Lookup::Miss(token) = cache.get(b"k", bytes) else {
            panic!("empty cache hit")
        };
        cache.put(b"k", None); // a writer removed the key meanwhile
        cache.fill(token, b"k", record()); // the reader's old view
        assert!(matches!(cache.get(b"k", bytes), Lookup::Hit(None)));
    }

    #[test]
    fn a_forgotten_key_is_asked_of_the_engine_and_a_fill_from_before_is_refused() {
        let cache = RecordCache::new(1 << 20, false);
        cache.put(b"k", record());
        cache.forget(b"k");
        assert!(matches!(cache.get(b"k", bytes), Lookup::Miss(_)));
        assert_eq!(cache.shards.iter().map(|s| s.lock().bytes).sum::<usize>(), 0);
        let Lookup::Miss(token) = cache.get(b"k", bytes) else {
            panic!("a forgotten key hit")
        };
        cache.forget(b"k"); // a writer changed it meanwhile
        cache.fill(token, b"k", record()); // the reader's old view
        assert!(matches!(cache.get(b"k", bytes), Lookup::Miss(_)));
    }

    #[test]
    fn fills_and_evicts_within_budget() {
        let cache = RecordCache::new(SHARDS * 1024, false);
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            if let Lookup::Miss(token) = cache.get(&key, bytes) {
                cache.fill(token, &key, record());
            }
        }
        let cached: usize = cache.shards.iter().map(|s| s.lock().bytes).sum();
        assert!(cached <= SHARDS * 1024, "{cached} bytes cached");
        cache.clear();
        assert!(matches!(cache.get(&0u32.to_be_bytes(), bytes), Lookup::Miss(_)));
    }

    #[test]
    fn a_complete_cache_answers_misses_as_absent_until_it_drops_records() {
        let cache = RecordCache::new(SHARDS * 1024, true);
        assert!(matches!(cache.get(b"never written", bytes), Lookup::Hit(None)));
        cache.put(b"k", record());
        assert!(matches!(cache.get(b"k", bytes), Lookup::Hit(Some(_))));
        // Over budget, shards drop what they held and must ask the engine from then on.
        for i in 0..10_000u32 {
            cache.put(&i.to_be_bytes(), record());
        }
        let complete = cache.shards.iter().filter(|shard| shard.lock().complete).count();
        assert_eq!(complete, 0, "every shard dropped records");
        assert!(matches!(cache.get(b"never written", bytes), Lookup::Miss(_)));
        let cache = RecordCache::new(SHARDS * 1024, true);
        cache.clear();
        assert!(matches!(cache.get(b"k", bytes), Lookup::Miss(_)), "complete no more");
    }

    /// A record cached as bytes is decoded once, when first asked for, and stays so; bytes that do not decode
    /// give an error, not a record.
    #[test]
    fn a_record_cached_as_bytes_is_decoded_once_when_asked() {
        let mut record = Record::default();
        record
            .write(
                7,
                &VersionVector::default(),
                Some(Bytes::from_static(b"v")),
                None,
                1_000,
            )
            .expect("a write");
        let cache = RecordCache::new(1 << 20, false);
        cache.put(b"k", Some(CachedRecord::encoded(Bytes::from(record.encode()))));
        let decoded = |held: &mut CachedRecord| held.record().expect("decodes");
        let (Lookup::Hit(Some(first)), Lookup::Hit(Some(again))) = (cache.get(b"k", decoded), cache.get(b"k", decoded))
        else {
            panic!("cached")
        };
        assert_eq!(*first, record);
        assert!(Arc::ptr_eq(&first, &again), "decoded once");
        cache.put(b"bad", Some(CachedRecord::encoded(Bytes::from_static(&[0xff]))));
        let Lookup::Hit(Some(damaged)) = cache.get(b"bad", |held| held.record().map(|_| ())) else {
            panic!("cached")
        };
        assert!(matches!(damaged, Err(StorageError::Corrupt)));
    }
}
