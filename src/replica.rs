//! One node's copy of the data: versioned records in a storage engine.
//!
//! Reads are lock-free. Every write is a read-modify-write of the key's record
//! (a plain SET still needs the causal context it supersedes), done under a
//! striped per-key lock that is never held across an await. The expiry index
//! lets the active sweep find due records without scanning everything.

use std::borrow::Cow;
use std::ops::{ControlFlow, RangeInclusive};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use smallvec::smallvec;
use xxhash_rust::xxh3::xxh3_64;

use crate::cache::{Cached, CachedRecord, Lookup, RecordCache};
use crate::clock::now_ms;
use crate::cluster::slot::key_slot;
use crate::config::ConflictMode;
use crate::error::{CommandError, CommandResult};
use crate::storage::{
    expiry_key, split_expiry_key, split_storage_key, storage_key, BatchOp, Durability, Engine, Ops, Space,
    StorageError, StorageKey, Value,
};
use crate::version::{supersede_encoded, ActorId, Basis, EncodedRecord, Record, RecordView, Sibling, VersionVector};

/// Number of lock stripes; two keys share a lock with probability 1/4096.
const LOCK_STRIPES: usize = 4096;

/// What a key holds now, as a read-modify-write command sees it.
#[derive(Debug, Clone, Copy)]
pub enum Current<'a> {
    /// No live value (never written, deleted or expired).
    Missing,
    /// Exactly one live value (or the LWW winner).
    Value(&'a Sibling),
    /// This many concurrent live values: RMW commands refuse to guess.
    Conflict(usize),
}

impl<'a> Current<'a> {
    /// What `record` presents at `now`: the one rule for reads and writes.
    pub fn of(record: &'a Record, now: u64, conflicts: ConflictMode) -> Current<'a> {
        let mut live = record.live(now);
        match (live.next(), live.next()) {
            (None, _) => Current::Missing,
            (Some(one), None) => Current::Value(one),
            (Some(_), Some(_)) => match conflicts {
                ConflictMode::Lww => record.lww_winner(now).map_or(Current::Missing, Current::Value),
                ConflictMode::Siblings => Current::Conflict(record.live(now).count()),
            },
        }
    }

    /// The single value, or the error an RMW command answers on a conflict.
    pub fn value(self) -> CommandResult<Option<&'a Sibling>> {
        match self {
            Current::Missing => Ok(None),
            Current::Value(sibling) => Ok(Some(sibling)),
            Current::Conflict(n) => Err(CommandError::Conflict(n)),
        }
    }
}

/// Called for each (slot, user key, record) of a scan; `Break` stops it.
/// It must not write: engines may hold a read lock while they scan.
pub type RecordVisitor<'a> = dyn FnMut(u16, &[u8], &Record) -> ControlFlow<()> + Send + 'a;

/// What one round of the expiry sweep did.
#[derive(Debug, Clone, Copy)]
pub struct Swept {
    /// Expiry-index entries handled: a full round means more may be due.
    pub handled: usize,
    /// Keys whose value expired and was removed (INFO `expired_keys`).
    pub expired: u64,
}

/// What a read-modify-write decided to do with the key.
#[derive(Debug)]
pub enum Mutation {
    /// Leave the key as it is.
    Keep,
    /// Write a value superseding everything the record holds.
    Put {
        /// The new value.
        value: Bytes,
        /// Absolute expiry, if any.
        expire_at_ms: Option<u64>,
    },
    /// Write a value superseding only the versions `context` covers (VSET):
    /// versions the client had not seen stay as siblings.
    PutAfter {
        /// The new value.
        value: Bytes,
        /// Absolute expiry, if any.
        expire_at_ms: Option<u64>,
        /// The causal context the client read (a VGET token).
        context: VersionVector,
    },
    /// Delete the key (a tombstone superseding everything it holds).
    Delete,
}

/// Stored bytes as the cache keeps them, decoded only when a command needs the record.
fn cached_copy(bytes: &[u8]) -> CachedRecord {
    CachedRecord::encoded(Bytes::copy_from_slice(bytes))
}

/// A record as the engine stored it; bytes that do not decode mean a damaged data dir.
fn decode_stored(bytes: &[u8]) -> Result<Arc<Record>, StorageError> {
    Record::decode(bytes).map(Arc::new).ok_or(StorageError::Corrupt)
}

/// What a merge of a copy found stored, read in place.
enum Held {
    /// Nothing to change: the same bytes, or no copy and an incoming one holding no sibling (merge_locked's rule).
    Settled,
    /// No copy, or one the incoming copy subsumes: the incoming bytes replace it (the earliest expiries of both).
    Replaced(Option<u64>, Option<u64>),
    /// A copy to merge with the incoming one.
    Other(Arc<Record>),
}

/// The local store of versioned records.
pub struct Replica {
    engine: Arc<dyn Engine>,
    durability: Arc<Durability>,
    actor: ActorId,
    conflicts: ConflictMode,
    tombstone_grace_ms: u64,
    locks: Box<[Mutex<()>]>,
    /// Decoded hot records, for engines where a lookup is not already a hash probe.
    cache: Option<Arc<RecordCache>>,
    /// Whether writers keep the cache up to date. Not where the engine holds recent writes in RAM itself (the
    /// disk engine's write buffer): there writers only make the cache forget what they change, reads of keys not
    /// in the buffer fill it, and the engine hands it what it moves out of RAM; so a write neither decodes its
    /// record nor copies it for the cache.
    write_through: bool,
}

/// A key with its database and slot: a command's key is looked at by several steps on a node (its route, the
/// prefetch, the copy sent with a forward, the write), and its slot is hashed once for all of them.
#[derive(Clone, Copy, Debug)]
pub struct KeyAt<'a> {
    /// The database (SELECT's index).
    pub db: u8,
    /// `key`'s slot on the ring, as [`key_slot`] gives it.
    pub slot: u16,
    /// The key as the client sent it.
    pub key: &'a [u8],
}

impl<'a> KeyAt<'a> {
    /// `key` of database `db`, its slot hashed.
    pub fn new(db: u8, key: &'a [u8]) -> Self {
        Self::in_slot(db, key_slot(key), key)
    }

    /// `key` of database `db`, whose slot the caller has already taken.
    pub fn in_slot(db: u8, slot: u16, key: &'a [u8]) -> Self {
        debug_assert_eq!(slot, key_slot(key));
        Self { db, slot, key }
    }
}

impl Replica {
    /// A replica writing as `actor` into `engine`.
    pub fn new(
        engine: Arc<dyn Engine>,
        durability: Arc<Durability>,
        actor: ActorId,
        conflicts: ConflictMode,
        tombstone_grace_ms: u64,
        cache_bytes: usize,
    ) -> Replica {
        let write_through = !engine.keeps_recent_writes();
        let cache = (cache_bytes > 0).then(|| {
            Arc::new(RecordCache::new(
                cache_bytes,
                holds_no_records(&*engine) && write_through,
            ))
        });
        if let Some(cache) = cache.clone().filter(|_| !write_through) {
            engine.watch_ingested(Arc::new(move |stored, bytes, newest| {
                // Taken before asking: a write after it makes the fill a no-op.
                let token = cache.token(stored);
                if newest() {
                    cache.fill(token, stored, bytes.map(cached_copy));
                }
            }));
        }
        Replica {
            durability,
            actor,
            conflicts,
            tombstone_grace_ms,
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache,
            write_through,
            engine,
        }
    }

    /// The engine, for INFO.
    pub fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// The durability policy, for connections that must wait for fsync.
    pub fn durability(&self) -> &Durability {
        &self.durability
    }

    /// How reads present concurrent values.
    pub fn conflicts(&self) -> ConflictMode {
        self.conflicts
    }

    /// Starts bringing the records of `keys`, about to be read or written, into the CPU cache (see
    /// [`Engine::prefetch`]).
    pub fn prefetch<'a>(&self, keys: impl IntoIterator<Item = KeyAt<'a>>) {
        let max = self.engine.max_key_len();
        let mut stored = keys
            .into_iter()
            .filter(|at| at.key.len() <= max)
            .map(|at| storage_key(at.slot, at.db, at.key));
        self.engine.prefetch(&mut stored);
    }

    fn stored_key(&self, db: u8, key: &[u8]) -> CommandResult<StorageKey> {
        self.stored_key_at(KeyAt::new(db, key))
    }

    fn stored_key_at(&self, at: KeyAt<'_>) -> CommandResult<StorageKey> {
        let max = self.engine.max_key_len();
        if at.key.len() > max {
            return Err(StorageError::KeyTooLong(max).into());
        }
        Ok(storage_key(at.slot, at.db, at.key))
    }

    fn stripe(stored: &[u8]) -> usize {
        (xxh3_64(stored) % LOCK_STRIPES as u64) as usize
    }

    /// The record under `stored`, decoded.
    fn load(&self, stored: &[u8]) -> Result<Option<Arc<Record>>, StorageError> {
        if self.cache.is_some() {
            return self.load_as_or(stored, CachedRecord::record, decode_stored);
        }
        let mut record = Ok(None);
        self.engine.read_with(stored, &mut |bytes| {
            record = bytes.map(decode_stored).transpose();
        })?;
        record
    }

    /// What `take` needs of the record under `stored`, decoded or encoded, from the cache if there is one.
    fn load_as<T>(
        &self,
        stored: &[u8],
        take: impl Fn(&mut CachedRecord) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        self.load_as_or(stored, &take, |bytes| take(&mut cached_copy(bytes)))
    }

    /// [`Replica::load_as`], where a record the engine holds among its recent writes is made into what the caller
    /// needs by `from_bytes` instead, and not cached: the next write would only make the cache forget it.
    fn load_as_or<T>(
        &self,
        stored: &[u8],
        take: impl Fn(&mut CachedRecord) -> Result<T, StorageError>,
        from_bytes: impl Fn(&[u8]) -> Result<T, StorageError>,
    ) -> Result<Option<T>, StorageError> {
        if !self.write_through {
            // The buffer first: it holds the newest change of each key it has, and under a write-heavy load most
            // keys read are there, so the cache is not asked (its hash, lock and probe were about 100 instructions
            // per look: callgrind). A write landing after this look is seen below, by the engine's read.
            let mut recent = Ok(None);
            if self
                .engine
                .read_recent(stored, &mut |bytes| recent = bytes.map(&from_bytes).transpose())?
            {
                return recent;
            }
        }
        let token = match self.cache.as_ref().map(|cache| cache.get(stored, &take)) {
            Some(Lookup::Hit(taken)) => return taken.transpose(),
            Some(Lookup::Miss(token)) => Some(token),
            None => None,
        };
        let mut loaded: Cached = None;
        self.engine
            .read_with(stored, &mut |bytes| loaded = bytes.map(cached_copy))?;
        let taken = loaded.as_mut().map(&take).transpose()?;
        if let (Some(cache), Some(token)) = (&self.cache, token) {
            cache.fill(token, stored, loaded);
        }
        Ok(taken)
    }

    /// Calls `read` with the stored bytes of `stored`, for a writer holding the key's lock: from the engine's recent
    /// writes where it keeps them apart, else from the read cache, else from the engine. Under the lock the cache's
    /// copy is current, as writers make it forget what they change; after an ingestion it holds what left the write
    /// buffer, which writers would otherwise look up in the LSM tree, a block search each.
    fn read_locked(&self, stored: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), StorageError> {
        if self.engine.read_recent(stored, read)? {
            return Ok(());
        }
        if let Some(cache) = &self.cache {
            if let Lookup::Hit(encoded) = cache.get(stored, |held| held.bytes().clone()) {
                read(encoded.as_deref());
                return Ok(());
            }
        }
        self.engine.read_with(stored, read)
    }

    /// [`Replica::read_locked`], then [`Replica::commit`] of the ops `write` queues on seeing the record, for a
    /// writer holding the key's lock. Where only the engine answers reads (no cache, no write buffer) it finds the
    /// key once for both.
    fn read_then_commit(
        &self,
        stored: &[u8],
        write: &mut dyn FnMut(Option<&[u8]>, &mut Ops),
    ) -> Result<(), StorageError> {
        if self.cache.is_some() || !self.write_through || self.engine.backpressure() {
            let mut ops = Ops::new();
            self.read_locked(stored, &mut |bytes| write(bytes, &mut ops))?;
            return self.commit(&ops);
        }
        if self.engine.read_then_apply(stored, write)? {
            self.durability.note_write();
        }
        Ok(())
    }

    /// Loads a record to change it (a copy if the cache shares it).
    fn load_mut(&self, stored: &[u8]) -> Result<Record, StorageError> {
        Ok(self.load(stored)?.map(Arc::unwrap_or_clone).unwrap_or_default())
    }

    /// The cache, if writers keep it up to date.
    fn write_cache(&self) -> Option<&RecordCache> {
        self.cache.as_deref().filter(|_| self.write_through)
    }

    /// Tells a write-through cache what a committed write left under `stored`.
    fn cache_put(&self, stored: &[u8], written: Option<&EncodedRecord>) {
        if let Some(cache) = self.write_cache() {
            cache.put(stored, written.map(CachedRecord::written));
        }
    }

    /// The record of `key`, if stored (possibly holding only tombstones or expired values), decoded: for tests, as
    /// commands read through [`Replica::read_encoded`] and decode only what they need.
    #[cfg(test)]
    pub fn read(&self, db: u8, key: &[u8]) -> CommandResult<Option<Arc<Record>>> {
        if key.len() > self.engine.max_key_len() {
            // It cannot have been stored, so it does not exist.
            return Ok(None);
        }
        let stored = self.stored_key(db, key)?;
        Ok(self.load(&stored)?)
    }

    /// The record of `key` as [`Record::encode`] gives it, for a read or a peer: the stored bytes, or the cache's, with
    /// no decode and no encode; a reader decodes what it needs of them ([`Found`](crate::cluster::coordinator::Found)).
    pub fn read_encoded(&self, at: KeyAt<'_>) -> CommandResult<Option<Bytes>> {
        if at.key.len() > self.engine.max_key_len() {
            return Ok(None);
        }
        let stored = self.stored_key_at(at)?;
        if self.cache.is_some() {
            let copy = |bytes: &[u8]| Ok(Bytes::copy_from_slice(bytes));
            return Ok(self.load_as_or(&stored, |loaded| Ok(loaded.bytes().clone()), copy)?);
        }
        Ok(self.engine.get(&stored)?.map(|value| match value {
            Value::Bytes(bytes) => bytes,
            other => Bytes::copy_from_slice(&other),
        }))
    }

    /// Read-modify-write of one key: `decide` sees the key's current state and
    /// says what to write; it runs under the key's lock.
    pub fn update<T>(
        &self,
        db: u8,
        key: &[u8],
        decide: impl FnOnce(Current<'_>) -> CommandResult<(Mutation, T)>,
    ) -> CommandResult<T> {
        self.update_returning(db, key, decide).map(|(out, _)| out)
    }

    /// [`Replica::update`], also returning the record written, if any, for
    /// the coordinator to send to the other replicas.
    pub fn update_returning<T>(
        &self,
        db: u8,
        key: &[u8],
        decide: impl FnOnce(Current<'_>) -> CommandResult<(Mutation, T)>,
    ) -> CommandResult<(T, Option<Bytes>)> {
        self.update_returning_at(KeyAt::new(db, key), decide)
    }

    /// [`Replica::update_returning`] of a key whose slot the caller has taken.
    fn update_returning_at<T>(
        &self,
        at: KeyAt<'_>,
        decide: impl FnOnce(Current<'_>) -> CommandResult<(Mutation, T)>,
    ) -> CommandResult<(T, Option<Bytes>)> {
        let stored = self.stored_key_at(at)?;
        let _guard = self.locks[Self::stripe(&stored)].lock();
        let now = now_ms();
        let mut record = self.load_mut(&stored)?;
        let (mut mutation, out) = decide(Current::of(&record, now, self.conflicts))?;
        self.own_value_for_cache(&mut mutation);
        let mut ops = Ops::new();
        let Some(encoded) = self.apply_mutation(&mut record, &stored, mutation, now, &mut ops)? else {
            return Ok((out, None));
        };
        self.commit(&ops)?;
        if self.write_cache().is_some() {
            let record = Arc::new(record);
            self.cache_put(
                &stored,
                Some(&EncodedRecord {
                    record,
                    encoded: encoded.clone(),
                }),
            );
        }
        Ok((out, Some(encoded)))
    }

    /// Gives `mutation`'s value an allocation of its own where a cache will keep the record: a value straight
    /// from a request points into a client's read buffer or a peer's message (`net::shared`), and would keep it alive.
    fn own_value_for_cache(&self, mutation: &mut Mutation) {
        if self.write_cache().is_none() {
            return;
        }
        if let Mutation::Put { value, .. } | Mutation::PutAfter { value, .. } = mutation {
            *value = Bytes::copy_from_slice(value);
        }
    }

    /// [`Replica::update_returning`] of a plain SET, a value superseding everything stored. The new record depends
    /// only on the stored one's context, so without a cache to fill it is written from the stored bytes, neither
    /// record decoded (see [`supersede_encoded`]); it comes with the [`Basis`] it replaced, for the other replicas.
    pub fn put_returning(
        &self,
        at: KeyAt<'_>,
        value: Bytes,
        expire_at_ms: Option<u64>,
    ) -> CommandResult<Option<(Bytes, Option<Basis>)>> {
        if self.write_cache().is_some() {
            let put = Mutation::Put { value, expire_at_ms };
            let written = self.update_returning_at(at, |_| Ok((put, ())))?.1;
            return Ok(written.map(|encoded| (encoded, None)));
        }
        let stored = self.stored_key_at(at)?;
        let _guard = self.locks[Self::stripe(&stored)].lock();
        let now = now_ms();
        let mut written = Ok(None);
        let mut replaced = Basis::new(None, None, None);
        self.read_then_commit(&stored, &mut |bytes, ops| {
            written = supersede_encoded(bytes, self.actor, &value, expire_at_ms, now).map(|written| {
                let written = written?;
                replaced = Basis::new(bytes, written.replaced_expiry, expire_at_ms);
                Self::reindex(written.replaced_expiry, expire_at_ms, &stored, ops);
                let encoded = Bytes::from(written.encoded);
                ops.push(BatchOp::Put(
                    Space::Records,
                    StorageKey::from_slice(&stored),
                    encoded.clone(),
                ));
                Some(encoded)
            });
        })?;
        let encoded = written?.ok_or(StorageError::Corrupt)?;
        Ok(Some((encoded, Some(replaced))))
    }

    /// [`Replica::merge`] of a copy as it came from a peer ([`Record::encode`] output). A copy whose bytes equal
    /// the stored ones (a forwarder's copy, a repeated repair) is settled by that comparison, decoding neither; one
    /// that subsumes the stored copy (replication's common case) is stored as it came, both read in place.
    pub fn merge_encoded(
        &self,
        at: KeyAt<'_>,
        encoded: &Bytes,
        basis: Option<&Basis>,
    ) -> CommandResult<Option<Record>> {
        let stored = self.stored_key_at(at)?;
        let _guard = self.locks[Self::stripe(&stored)].lock();
        let malformed = || CommandError::Other("malformed record".into());
        let current = if self.write_cache().is_some() {
            // One lookup compares the stored bytes and, only if they differ, lends the decoded record.
            let differs = |held: &mut CachedRecord| match held.bytes()[..] == encoded[..] {
                true => Ok(None),
                false => held.record().map(Some),
            };
            match self.load_as(&stored, differs)? {
                Some(None) => return Ok(None),
                other => other.flatten(),
            }
        } else {
            let mut held = Ok(Held::Settled);
            self.read_then_commit(&stored, &mut |bytes, ops| {
                held = Self::held_against(bytes, encoded, basis);
                if let Ok(Held::Replaced(previous_expiry, next_expiry)) = held {
                    Self::reindex(previous_expiry, next_expiry, &stored, ops);
                    ops.push(BatchOp::Put(
                        Space::Records,
                        StorageKey::from_slice(&stored),
                        encoded.clone(),
                    ));
                }
            })?;
            match held? {
                // Stored above, where it subsumed the held copy: no write-through cache on this path (a read cache
                // forgets the key in the commit).
                Held::Settled | Held::Replaced(..) => return Ok(None),
                Held::Other(current) => Some(current),
            }
        };
        let incoming = Record::decode(encoded).ok_or_else(malformed)?;
        self.merge_locked(stored, current, Cow::Owned(incoming), Some(encoded))
    }

    /// How an incoming copy (`encoded`, written over the record `basis` names, if given) stands to the stored bytes
    /// of its key: equal, subsuming them, or to be merged with them (decoded).
    fn held_against(bytes: Option<&[u8]>, encoded: &Bytes, basis: Option<&Basis>) -> CommandResult<Held> {
        let malformed = || CommandError::Other("malformed record".into());
        if let Some(basis) = basis.filter(|basis| basis.replaced(bytes)) {
            // The record the incoming one was written over: it subsumes it.
            return Ok(Held::Replaced(basis.replaced_expiry, basis.expiry));
        }
        if bytes.is_some_and(|bytes| bytes == &encoded[..]) {
            // An equal copy, as a forwarder's mostly is: nothing to decode.
            return Ok(Held::Settled);
        }
        let incoming = RecordView::decode(encoded).ok_or_else(malformed)?;
        match bytes {
            None if incoming.is_empty() => Ok(Held::Settled),
            None => Ok(Held::Replaced(None, incoming.next_expiry())),
            Some(bytes) => match RecordView::decode(bytes) {
                Some(view) if view.is_subsumed_by(&incoming) => {
                    Ok(Held::Replaced(view.next_expiry(), incoming.next_expiry()))
                }
                _ => decode_stored(bytes).map(Held::Other).map_err(CommandError::from),
            },
        }
    }

    /// Merges another replica's copy of a key into this one (replication,
    /// read repair). Returns the merged copy when it holds versions
    /// `incoming` lacks (this replica had seen writes the sender had not).
    pub fn merge(&self, db: u8, key: &[u8], incoming: &Record) -> CommandResult<Option<Record>> {
        let stored = self.stored_key(db, key)?;
        let _guard = self.locks[Self::stripe(&stored)].lock();
        let current = self.load(&stored)?;
        self.merge_locked(stored, current, Cow::Borrowed(incoming), None)
    }

    /// [`Replica::merge`] of `incoming` (and its encoding, if it came as one) into `current`, the record at storage
    /// key `stored`, whose lock the caller holds. A borrowed `incoming` is copied only if it is stored as it is.
    fn merge_locked(
        &self,
        stored: StorageKey,
        current: Option<Arc<Record>>,
        incoming: Cow<'_, Record>,
        encoded: Option<&Bytes>,
    ) -> CommandResult<Option<Record>> {
        if current.as_deref() == Some(&*incoming) {
            // The common case of a forwarder's copy: nothing to learn, nothing to copy.
            return Ok(None);
        }
        let previous_expiry = current.as_deref().and_then(Record::next_expiry);
        if current.as_deref().is_none_or(|held| held.is_subsumed_by(&incoming)) {
            // Replication's common case: the merge is `incoming` itself, stored without building it (and as the
            // bytes came, if it came encoded); nothing to send back.
            if current.is_none() && incoming.siblings.is_empty() {
                return Ok(None);
            }
            let encoded = match encoded {
                // A peer's bytes may point into its whole message (`net::shared`): the cache keeps its own copy.
                Some(bytes) if self.write_cache().is_some() => Bytes::copy_from_slice(bytes),
                Some(bytes) => bytes.clone(),
                None => Bytes::from(incoming.encode()),
            };
            self.store(stored, previous_expiry, incoming.into_owned(), encoded)?;
            return Ok(None);
        }
        let mut record = current.as_deref().cloned().unwrap_or_default();
        record.merge(&incoming);
        let diverged = (record.siblings != incoming.siblings).then(|| record.clone());
        if current.as_deref() == Some(&record) || (current.is_none() && record.siblings.is_empty()) {
            return Ok(diverged);
        }
        let encoded = Bytes::from(record.encode());
        self.store(stored, previous_expiry, record, encoded)?;
        Ok(diverged)
    }

    /// Writes a merged `record` and its encoding under `stored` (whose lock
    /// the caller holds), moving its expiry index entry from `previous_expiry`.
    fn store(
        &self,
        stored: StorageKey,
        previous_expiry: Option<u64>,
        record: Record,
        encoded: Bytes,
    ) -> CommandResult<()> {
        let cache_key = self.write_cache().is_some().then(|| stored.clone());
        self.store_encoded(stored, previous_expiry, record.next_expiry(), encoded.clone())?;
        if let Some(cache_key) = cache_key {
            let record = Arc::new(record);
            self.cache_put(&cache_key, Some(&EncodedRecord { record, encoded }));
        }
        Ok(())
    }

    /// Writes an encoding whose record's earliest expiry is `next_expiry` under `stored`, moving its expiry index
    /// entry from `previous_expiry`. The cache, if there is one, is the caller's to update.
    fn store_encoded(
        &self,
        stored: StorageKey,
        previous_expiry: Option<u64>,
        next_expiry: Option<u64>,
        encoded: Bytes,
    ) -> CommandResult<()> {
        let mut ops = Ops::new();
        Self::reindex(previous_expiry, next_expiry, &stored, &mut ops);
        ops.push(BatchOp::Put(Space::Records, stored, encoded));
        Ok(self.commit(&ops)?)
    }

    /// Read-modify-write of several keys at once, atomically on this node
    /// (RENAME, MSET, MSETNX): `decide` gets one state per key, in order, and
    /// returns one mutation per key.
    pub fn update_many<T>(
        &self,
        db: u8,
        keys: &[&[u8]],
        decide: impl FnOnce(&[Current<'_>]) -> CommandResult<(Vec<Mutation>, T)>,
    ) -> CommandResult<(T, Vec<Option<EncodedRecord>>)> {
        let stored = keys
            .iter()
            .map(|key| self.stored_key(db, key))
            .collect::<CommandResult<Vec<_>>>()?;
        // Locks in stripe order, each once, so concurrent callers cannot deadlock.
        let mut stripes: Vec<usize> = stored.iter().map(|s| Self::stripe(s)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<MutexGuard<'_, ()>> = stripes.iter().map(|&i| self.locks[i].lock()).collect();
        let now = now_ms();
        let mut records = stored
            .iter()
            .map(|s| self.load_mut(s))
            .collect::<Result<Vec<Record>, StorageError>>()?;
        let current: Vec<Current<'_>> = records.iter().map(|r| Current::of(r, now, self.conflicts)).collect();
        let (mut mutations, out) = decide(&current)?;
        mutations
            .iter_mut()
            .for_each(|mutation| self.own_value_for_cache(mutation));
        debug_assert_eq!(mutations.len(), keys.len());
        let mut ops = Ops::with_capacity(3 * keys.len());
        // A key named twice (MSET k 1 k 2) must end with the last mutation only.
        let mut encodings: Vec<Option<Bytes>> = Vec::with_capacity(keys.len());
        for (i, mutation) in mutations.into_iter().enumerate() {
            let last = !stored[i + 1..].contains(&stored[i]);
            encodings.push(match last {
                true => self.apply_mutation(&mut records[i], &stored[i], mutation, now, &mut ops)?,
                false => None,
            });
        }
        self.commit(&ops)?;
        let mut written = Vec::with_capacity(keys.len());
        for ((stored, record), encoded) in stored.iter().zip(records).zip(encodings) {
            let Some(encoded) = encoded else {
                written.push(None);
                continue;
            };
            let record = EncodedRecord {
                record: Arc::new(record),
                encoded,
            };
            self.cache_put(stored, Some(&record));
            written.push(Some(record));
        }
        Ok((out, written))
    }

    /// Applies `mutation` to `record` (a new dot superseding its whole context)
    /// and queues the storage ops that persist it; returns the record's new
    /// encoding, or `None` if nothing changed.
    fn apply_mutation(
        &self,
        record: &mut Record,
        stored: &[u8],
        mutation: Mutation,
        now: u64,
        ops: &mut Ops,
    ) -> CommandResult<Option<Bytes>> {
        let previous_expiry = record.next_expiry();
        let (value, expire_at_ms, context) = match mutation {
            Mutation::Keep => return Ok(None),
            Mutation::Put { value, expire_at_ms } => (Some(value), expire_at_ms, None),
            Mutation::PutAfter {
                value,
                expire_at_ms,
                context,
            } => (Some(value), expire_at_ms, Some(context)),
            // Deleting what holds no value would only add a tombstone.
            Mutation::Delete if record.live(now).next().is_none() => return Ok(None),
            Mutation::Delete => (None, Some(now + self.tombstone_grace_ms), None),
        };
        match context {
            None => record.supersede(self.actor, value, expire_at_ms, now),
            Some(context) => record.write(self.actor, &context, value, expire_at_ms, now),
        }?;
        Self::reindex(previous_expiry, record.next_expiry(), stored, ops);
        let encoded = Bytes::from(record.encode());
        ops.push(BatchOp::Put(
            Space::Records,
            StorageKey::from_slice(stored),
            encoded.clone(),
        ));
        Ok(Some(encoded))
    }

    /// Queues the expiry-index changes for a record whose earliest expiry goes from `previous` to `next`.
    fn reindex(previous: Option<u64>, next: Option<u64>, stored: &[u8], ops: &mut Ops) {
        if previous == next {
            return;
        }
        if let Some(at) = previous {
            ops.push(BatchOp::Delete(Space::Expiry, expiry_key(at, stored)));
        }
        if let Some(at) = next {
            ops.push(BatchOp::Put(Space::Expiry, expiry_key(at, stored), Bytes::new()));
        }
    }

    fn commit(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
        if ops.is_empty() {
            return Ok(());
        }
        if self.engine.backpressure() {
            // The engine may sleep this thread: let the runtime move the other
            // connections to another worker meanwhile.
            tokio::task::block_in_place(|| self.engine.apply(ops))?;
        } else {
            self.engine.apply(ops)?;
        }
        if let Some(cache) = self.cache.as_ref().filter(|_| !self.write_through) {
            for op in ops {
                if let BatchOp::Put(Space::Records, stored, _) | BatchOp::Delete(Space::Records, stored) = op {
                    cache.forget(stored);
                }
            }
        }
        self.durability.note_write();
        Ok(())
    }

    /// Visits stored records of database `db` in slots `slots`, in storage
    /// order, until `visit` breaks. `visit` gets the slot, the user key and
    /// the record; it must not write (engines may hold a read lock).
    pub fn scan(&self, db: u8, slots: RangeInclusive<u16>, visit: &mut RecordVisitor<'_>) -> CommandResult<()> {
        let start = storage_key(*slots.start(), db, b"");
        let last = *slots.end();
        let mut failure = None;
        self.engine.scan(Space::Records, &start, &mut |stored, bytes| {
            let Some((slot, key_db, key)) = split_storage_key(stored) else {
                return ControlFlow::Continue(());
            };
            if slot > last {
                return ControlFlow::Break(());
            }
            if key_db != db {
                return ControlFlow::Continue(());
            }
            match Record::decode(bytes) {
                Some(record) => visit(slot, key, &record),
                None => {
                    failure = Some(StorageError::Corrupt);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Removes every record of `db` (FLUSHDB), or everything (FLUSHALL).
    pub fn flush(&self, db: Option<u8>) -> CommandResult<()> {
        let Some(db) = db else {
            self.engine.clear()?;
            self.durability.note_write();
            if let Some(cache) = &self.cache {
                cache.clear();
            }
            return Ok(());
        };
        // In rounds of 4096 keys, each resuming where the last stopped; the
        // visitor only collects, since it may not write while the engine scans.
        let mut from = Vec::new();
        loop {
            let mut batch = Vec::new();
            let mut resume = None;
            self.engine.scan(Space::Records, &from, &mut |stored, bytes| {
                if split_storage_key(stored).is_some_and(|(_, d, _)| d == db) {
                    if let Some(at) = Record::decode(bytes).and_then(|r| r.next_expiry()) {
                        batch.push(BatchOp::Delete(Space::Expiry, expiry_key(at, stored)));
                    }
                    batch.push(BatchOp::Delete(Space::Records, StorageKey::from_slice(stored)));
                }
                if batch.len() < 4096 {
                    return ControlFlow::Continue(());
                }
                resume = Some(stored.to_vec());
                ControlFlow::Break(())
            })?;
            self.commit(&batch)?;
            match resume {
                Some(next) => from = next,
                None => break,
            }
        }
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        Ok(())
    }

    /// One round of the active expiry sweep: drops what expired by now from up
    /// to `limit` due records (values past their TTL, tombstones past their
    /// grace period).
    pub fn sweep_expired(&self, limit: usize) -> CommandResult<Swept> {
        let now = now_ms();
        let mut due: Vec<(u64, Vec<u8>)> = Vec::new();
        self.engine.scan(
            Space::Expiry,
            &[],
            &mut |index_key, _| match split_expiry_key(index_key) {
                Some((at, stored)) if at <= now && due.len() < limit => {
                    due.push((at, stored.to_vec()));
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Break(()),
            },
        )?;
        let mut expired = 0;
        for (at, stored) in &due {
            let _guard = self.locks[Self::stripe(stored)].lock();
            let mut ops: Ops = smallvec![BatchOp::Delete(Space::Expiry, expiry_key(*at, stored))];
            let mut cached = None;
            if let Some(mut record) = self.load(stored)?.map(Arc::unwrap_or_clone) {
                let values = |r: &Record| r.siblings.iter().filter(|s| s.value.is_some()).count();
                let (siblings, values_before) = (record.siblings.len(), values(&record));
                let empty = record.prune(now);
                if values(&record) == 0 && values_before > 0 {
                    expired += 1;
                }
                if empty {
                    ops.push(BatchOp::Delete(Space::Records, StorageKey::from_slice(stored)));
                    cached = Some(None);
                } else {
                    if let Some(next) = record.next_expiry() {
                        ops.push(BatchOp::Put(Space::Expiry, expiry_key(next, stored), Bytes::new()));
                    }
                    if record.siblings.len() != siblings {
                        let encoded = Bytes::from(record.encode());
                        ops.push(BatchOp::Put(
                            Space::Records,
                            StorageKey::from_slice(stored),
                            encoded.clone(),
                        ));
                        let record = Arc::new(record);
                        cached = Some(Some(EncodedRecord { record, encoded }));
                    }
                }
            }
            self.commit(&ops)?;
            if let Some(written) = cached {
                self.cache_put(stored, written.as_ref());
            }
        }
        Ok(Swept {
            handled: due.len(),
            expired,
        })
    }
}

/// Whether `engine` holds no records (a failed look counts as some).
fn holds_no_records(engine: &dyn Engine) -> bool {
    let mut any = false;
    let looked = engine.scan(Space::Records, &[], &mut |_, _| {
        any = true;
        ControlFlow::Break(())
    });
    looked.is_ok() && !any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FsyncMode;
    use crate::storage::MemoryEngine;

    /// The key most tests use.
    fn k() -> KeyAt<'static> {
        KeyAt::new(0, b"k")
    }

    fn replica() -> Replica {
        replica_with_cache(1 << 20)
    }

    fn replica_with_cache(cache_bytes: usize) -> Replica {
        replica_as(1, cache_bytes)
    }

    fn replica_as(actor: ActorId, cache_bytes: usize) -> Replica {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
        let durability = Durability::start(FsyncMode::No, engine.clone());
        Replica::new(engine, durability, actor, ConflictMode::Siblings, 0, cache_bytes)
    }

    #[test]
    fn a_cache_opened_on_stored_records_asks_the_engine_for_them() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::default());
        let open = || {
            let durability = Durability::start(FsyncMode::No, engine.clone());
            Replica::new(engine.clone(), durability, 1, ConflictMode::Siblings, 0, 1 << 20)
        };
        let put = Mutation::Put {
            value: Bytes::from_static(b"value"),
            expire_at_ms: None,
        };
        open().update(0, b"k", |_| Ok((put, ()))).expect("put");
        let reopened = open();
        assert!(
            reopened.read(0, b"k").expect("read").is_some(),
            "stored before the cache was made"
        );
        assert!(reopened.read(0, b"other").expect("read").is_none());
    }

    #[test]
    fn a_copy_for_a_peer_is_the_encoded_record_with_or_without_a_cache() {
        for cache_bytes in [0, 1 << 20] {
            let replica = replica_with_cache(cache_bytes);
            let value = Bytes::from_static(b"value");
            replica
                .update(0, b"k", |_| {
                    Ok((
                        Mutation::Put {
                            value,
                            expire_at_ms: None,
                        },
                        (),
                    ))
                })
                .expect("put");
            let record = replica.read(0, b"k").expect("read").expect("stored");
            let copy = replica.read_encoded(k()).expect("read").expect("stored");
            assert_eq!(copy, Bytes::from(record.encode()), "cache {cache_bytes}");
            assert_eq!(Record::decode(&copy).as_ref(), Some(&*record));
            assert_eq!(replica.read_encoded(KeyAt::new(0, b"absent")).expect("read"), None);
            assert_eq!(
                replica.read_encoded(KeyAt::new(1, b"k")).expect("read"),
                None,
                "another database"
            );
        }
    }

    #[test]
    fn a_merged_copy_equal_to_the_stored_one_changes_nothing_and_a_different_one_is_still_merged() {
        let (here, there) = (replica_as(1, 0), replica_as(2, 0));
        put(&here, b"k", b"here");
        let stored = here.read_encoded(k()).expect("read").expect("stored");
        assert_eq!(here.merge_encoded(k(), &stored, None).expect("merge"), None);
        assert_eq!(here.read_encoded(k()).expect("read"), Some(stored));
        let garbage = Bytes::from_static(b"\xff\xff\xff");
        assert!(
            here.merge_encoded(k(), &garbage, None).is_err(),
            "a different copy is decoded"
        );
        put(&there, b"k", b"there");
        let concurrent = there.read_encoded(k()).expect("read").expect("stored");
        assert!(here.merge_encoded(k(), &concurrent, None).expect("merge").is_some());
        let merged = here.read(0, b"k").expect("read").expect("stored");
        let mut values: Vec<&[u8]> = merged.live(0).filter_map(|sibling| sibling.value.as_deref()).collect();
        values.sort();
        assert_eq!(values, [&b"here"[..], &b"there"[..]]);
    }

    /// A replica over the disk engine, whose write buffer holds recent writes: its cache is filled by reads only.
    fn disk_replica(dir: &std::path::Path, actor: ActorId) -> Replica {
        disk_replica_and_engine(dir, actor).0
    }

    fn disk_replica_and_engine(dir: &std::path::Path, actor: ActorId) -> (Replica, Arc<crate::storage::DiskEngine>) {
        let disk = Arc::new(crate::storage::DiskEngine::open(dir, 8, 8).expect("open disk"));
        let engine: Arc<dyn Engine> = disk.clone();
        let durability = Durability::start(FsyncMode::No, engine.clone());
        (
            Replica::new(engine, durability, actor, ConflictMode::Siblings, 0, 1 << 20),
            disk,
        )
    }

    #[test]
    fn writes_after_an_ingestion_see_the_records_it_handed_to_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, disk) = disk_replica_and_engine(dir.path(), 1);
        let values = |replica: &Replica| -> Vec<Bytes> {
            let record = replica.read(0, b"k").expect("read").expect("stored");
            record.live(0).filter_map(|s| s.value.clone()).collect()
        };
        replica
            .put_returning(k(), Bytes::from_static(b"v1"), None)
            .expect("put");
        disk.ingest_now().expect("ingest");
        replica
            .put_returning(k(), Bytes::from_static(b"v2"), None)
            .expect("put");
        assert_eq!(values(&replica), [Bytes::from_static(b"v2")], "v2 supersedes v1");
        // Another writer's value that never saw v2: kept beside it.
        let mut concurrent = Record::default();
        concurrent
            .supersede(2, Some(Bytes::from_static(b"w")), None, 1)
            .expect("write");
        disk.ingest_now().expect("ingest");
        let encoded = Bytes::from(concurrent.encode());
        replica.merge_encoded(k(), &encoded, None).expect("merge");
        let mut kept = values(&replica);
        kept.sort();
        assert_eq!(kept, [Bytes::from_static(b"v2"), Bytes::from_static(b"w")], "siblings");
    }

    #[test]
    fn records_the_write_buffer_ingests_are_handed_to_the_read_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (replica, disk) = disk_replica_and_engine(dir.path(), 1);
        let cache = replica.cache.clone().expect("a cache");
        let stored = replica.stored_key(0, b"k").expect("key");
        let cached = || match cache.get(&stored, |held| held.bytes().clone()) {
            Lookup::Hit(encoded) => Some(encoded),
            Lookup::Miss(_) => None,
        };
        put(&replica, b"k", b"v1");
        assert_eq!(cached(), None, "a write is not cached");
        disk.ingest_now().expect("ingest");
        let handed = cached();
        let first = replica.read_encoded(k()).expect("read").expect("stored");
        assert_eq!(
            handed,
            Some(Some(first.clone())),
            "handed over by the ingestion, before any read"
        );
        put(&replica, b"k", b"v2");
        assert_eq!(cached(), None, "forgotten by the write");
        let second = replica.read_encoded(k()).expect("read").expect("stored");
        assert_ne!(first, second);
        assert_eq!(cached(), None, "read from the write buffer, not cached");
        replica.update(0, b"k", |_| Ok((Mutation::Delete, ()))).expect("delete");
        disk.ingest_now().expect("ingest");
        let handed = cached();
        let tombstone = replica.read_encoded(k()).expect("read");
        assert_ne!(tombstone.as_ref(), Some(&second));
        assert_eq!(handed, Some(tombstone), "the delete's record replaces the value");
    }

    #[test]
    fn a_read_cache_never_answers_with_what_a_write_replaced() {
        let (dir, other_dir) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let (here, there) = (disk_replica(dir.path(), 1), disk_replica(other_dir.path(), 2));
        assert!(!here.write_through && here.cache.is_some());
        let encoded = |replica: &Replica| replica.read_encoded(k()).expect("read").expect("stored");
        // Each write below follows a read that cached the record it replaces.
        put(&here, b"k", b"v1");
        let cached = encoded(&here);
        let written = here
            .put_returning(k(), Bytes::from_static(b"v2"), None)
            .expect("put")
            .expect("written")
            .0;
        assert_ne!(written, cached);
        assert_eq!(encoded(&here), written, "after a plain SET");
        assert_eq!(there.merge_encoded(k(), &written, None).expect("merge"), None);
        put(&there, b"k", b"v3");
        let newer = encoded(&there);
        assert_eq!(here.merge_encoded(k(), &newer, None).expect("merge"), None);
        assert_eq!(encoded(&here), newer, "after a replicated write");
        put(&here, b"k", b"v4");
        let record = here.read(0, b"k").expect("read").expect("stored");
        assert_eq!(
            Bytes::from(record.encode()),
            encoded(&here),
            "after a read-modify-write"
        );
        assert_ne!(encoded(&here), newer);
    }

    fn put(replica: &Replica, key: &[u8], value: &'static [u8]) {
        let value = Bytes::from_static(value);
        replica
            .update(0, key, |_| {
                Ok((
                    Mutation::Put {
                        value,
                        expire_at_ms: None,
                    },
                    (),
                ))
            })
            .expect("put");
    }

    #[test]
    fn merged_copies_move_their_expiry_and_are_swept_once_due() {
        let put_until = |replica: &Replica, value: &'static [u8], expire_at_ms: u64| {
            let value = Bytes::from_static(value);
            let put = Mutation::Put {
                value,
                expire_at_ms: Some(expire_at_ms),
            };
            replica.update(0, b"k", |_| Ok((put, ()))).expect("put");
            replica.read_encoded(k()).expect("read").expect("stored")
        };
        let far = now_ms() + 3_600_000;
        for cache_bytes in [0, 1 << 20] {
            let (here, there) = (replica_as(1, cache_bytes), replica_as(2, cache_bytes));
            // A key this replica never held, then the next version of it: each stored as it came, indexed anew.
            let first = put_until(&there, b"v1", far);
            assert_eq!(here.merge_encoded(k(), &first, None).expect("merge"), None);
            let due = put_until(&there, b"v2", 1);
            assert_eq!(here.merge_encoded(k(), &due, None).expect("merge"), None);
            assert_eq!(here.read_encoded(k()).expect("read"), Some(due));
            // Only the new deadline is indexed: the sweep drops the key once, and finds nothing else due.
            let swept = here.sweep_expired(16).expect("sweep");
            assert_eq!((swept.handled, swept.expired), (1, 1), "cache {cache_bytes}");
            assert_eq!(here.read(0, b"k").expect("read"), None);
            assert_eq!(here.sweep_expired(16).expect("sweep").handled, 0);
        }
    }

    #[test]
    fn a_cached_record_does_not_keep_the_request_it_came_in() {
        let request = Bytes::from_static(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n");
        let value = request.slice(request.len() - 7..request.len() - 2);
        for cache_bytes in [0, 1 << 20] {
            let replica = replica_with_cache(cache_bytes);
            let put = Mutation::Put {
                value: value.clone(),
                expire_at_ms: None,
            };
            replica.update(0, b"k", |_| Ok((put, ()))).expect("put");
            let record = replica.read(0, b"k").expect("read").expect("stored");
            let stored = record.siblings[0].value.as_ref().expect("a value");
            assert_eq!(stored, &value);
            let inside = request.as_ptr_range().contains(&stored.as_ptr());
            assert!(!inside, "cache {cache_bytes}: the record points into the request");
        }
    }

    #[test]
    fn a_plain_set_supersedes_siblings_and_expiry_with_or_without_a_cache() {
        for cache_bytes in [0, 1 << 20] {
            let (here, there) = (replica_as(1, cache_bytes), replica_as(2, cache_bytes));
            // Two concurrent values, one of them due to expire: siblings, indexed for the sweep.
            put(&here, b"k", b"mine");
            let expiring = Mutation::Put {
                value: Bytes::from_static(b"theirs"),
                expire_at_ms: Some(1),
            };
            there.update(0, b"k", |_| Ok((expiring, ()))).expect("put");
            let theirs = there.read_encoded(k()).expect("read").expect("stored");
            here.merge_encoded(k(), &theirs, None).expect("merge");
            let before = here.read(0, b"k").expect("read").expect("stored");
            assert_eq!(before.siblings.len(), 2);

            let (encoded, _) = here
                .put_returning(k(), Bytes::from_static(b"new"), None)
                .expect("set")
                .expect("written");
            assert_eq!(here.read_encoded(k()).expect("read"), Some(encoded.clone()));
            let after = Record::decode(&encoded).expect("decodes");
            let [only] = &after.siblings[..] else {
                panic!("one sibling, cache {cache_bytes}")
            };
            assert_eq!((only.value.as_deref(), only.expire_at_ms), (Some(&b"new"[..]), None));
            assert!(
                only.dot.counter > before.context.get(1),
                "a new dot, cache {cache_bytes}"
            );
            let mut expected = before.context.clone();
            expected.add(only.dot);
            assert_eq!(
                after.context, expected,
                "the old context and the new dot, cache {cache_bytes}"
            );
            // The old deadline left the index with the value that had it: the sweep finds nothing due.
            assert_eq!(here.sweep_expired(16).expect("sweep").handled, 0, "cache {cache_bytes}");
        }
    }

    #[test]
    fn a_merge_of_encoded_copies_settles_equal_bytes_and_refuses_garbage() {
        for cache_bytes in [0, 1 << 20] {
            let (here, there) = (replica_as(1, cache_bytes), replica_as(2, cache_bytes));
            put(&here, b"k", b"old");
            let held = here.read_encoded(k()).expect("read").expect("stored");
            assert_eq!(
                here.merge_encoded(k(), &held, None).expect("merge"),
                None,
                "its own copy"
            );
            assert_eq!(here.read_encoded(k()).expect("read"), Some(held.clone()));

            let malformed = here.merge_encoded(k(), &Bytes::from_static(b"\xff\xff\xff"), None);
            assert!(malformed.is_err(), "cache {cache_bytes}");
            assert_eq!(here.read_encoded(k()).expect("read"), Some(held.clone()));

            // Another actor's concurrent write: both values stay, and the sender learns it lacked one.
            put(&there, b"k", b"new");
            let theirs = there.read_encoded(k()).expect("read").expect("stored");
            let diverged = here
                .merge_encoded(k(), &theirs, None)
                .expect("merge")
                .expect("diverged");
            assert_eq!(diverged.siblings.len(), 2);
            let merged = here.read(0, b"k").expect("read").expect("stored");
            assert_eq!(*merged, diverged);

            // The next version of what it holds: stored as the bytes came, nothing sent back.
            let merged = here.read_encoded(k()).expect("read").expect("stored");
            assert_eq!(there.merge_encoded(k(), &merged, None).expect("merge"), None);
            put(&there, b"k", b"newest");
            let newest = there.read_encoded(k()).expect("read").expect("stored");
            assert_eq!(here.merge_encoded(k(), &newest, None).expect("merge"), None);
            assert_eq!(here.read_encoded(k()).expect("read"), Some(newest.clone()));
            assert_eq!(here.read(0, b"k").expect("read").expect("stored").siblings.len(), 1);
        }
    }

    #[test]
    fn a_write_over_the_held_bytes_is_stored_unread_and_any_other_is_merged() {
        let (coordinator, replica) = (replica_as(1, 0), replica_as(2, 0));
        put(&coordinator, b"k", b"old");
        let old = coordinator.read_encoded(k()).expect("read").expect("stored");
        replica.merge_encoded(k(), &old, None).expect("merge");
        let far = now_ms() + 3_600_000;
        let (new, basis) = coordinator
            .put_returning(k(), Bytes::from_static(b"new"), Some(far))
            .expect("set")
            .expect("written");
        let basis = basis.expect("a basis without a cache");
        assert_eq!(basis, Basis::new(Some(&old), None, Some(far)));

        // Settled by the digest alone: even a record that does not subsume the held one would be stored as it came.
        let stranger = replica_as(3, 0);
        put(&stranger, b"k", b"concurrent");
        let concurrent = stranger.read_encoded(k()).expect("read").expect("stored");
        let spare = replica_as(2, 0);
        spare.merge_encoded(k(), &old, None).expect("merge");
        assert_eq!(
            spare.merge_encoded(k(), &concurrent, Some(&basis)).expect("merge"),
            None
        );
        assert_eq!(spare.read_encoded(k()).expect("read"), Some(concurrent.clone()));

        // The write itself: stored, its deadline indexed in place of none.
        assert_eq!(replica.merge_encoded(k(), &new, Some(&basis)).expect("merge"), None);
        assert_eq!(replica.read_encoded(k()).expect("read"), Some(new.clone()));
        assert_eq!(replica.sweep_expired(16).expect("sweep").handled, 0, "not due yet");

        // A replica holding other bytes merges the usual way and says what the write lacked.
        let other = replica_as(2, 0);
        other.merge_encoded(k(), &concurrent, None).expect("merge");
        let diverged = other.merge_encoded(k(), &new, Some(&basis)).expect("merge");
        assert_eq!(diverged.expect("diverged").siblings.len(), 2);
    }

    fn count(replica: &Replica, db: u8) -> usize {
        let mut n = 0;
        replica
            .scan(db, 0..=u16::MAX, &mut |_, _, _| {
                n += 1;
                ControlFlow::Continue(())
            })
            .expect("scan");
        n
    }

    #[test]
    fn flushdb_over_several_rounds_leaves_other_databases() {
        let replica = replica();
        let put = |db: u8, key: String| {
            let value = Bytes::from_static(b"v");
            replica
                .update(db, key.as_bytes(), |_| {
                    Ok((
                        Mutation::Put {
                            value,
                            expire_at_ms: Some(u64::MAX / 2),
                        },
                        (),
                    ))
                })
                .expect("put");
        };
        for i in 0..10_000 {
            put(1, format!("doomed:{i}"));
        }
        for i in 0..3_000 {
            put(0, format!("kept:{i}"));
        }
        replica.flush(Some(1)).expect("flushdb");
        assert_eq!(count(&replica, 1), 0);
        assert_eq!(count(&replica, 0), 3_000);
        assert!(
            replica.read(1, b"doomed:7").expect("read").is_none(),
            "the cache forgot it too"
        );
    }
}
