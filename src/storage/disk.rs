//! The default engine: a write buffer in RAM with a journal in front, over
//! fjall, an LSM tree, that takes the buffer in sorted batches.
//!
//! fjall's own write path inserts every write into a skiplist memtable, a walk
//! of cache misses that was a third of a replica's CPU per SET (and with its
//! journal and flushes, half: a node that skipped it ran SET at twice the
//! rate). Here a write goes to the log engine's hash maps (`memory.rs`) and to
//! a journal of our own (`journal.rs`); once the maps have grown by
//! `memtable_mb` since the last cut (or the journal by four times that, when
//! writes rewrite the same keys), a background thread cuts the journal, seals
//! the maps, and ingests them into fjall as one sorted run (fjall's bulk load,
//! which writes tables without a memtable), then deletes the journal up to the
//! cut.
//!
//! Reads look in the active maps, then the sealed ones, then fjall. A delete
//! is kept in the maps as a marker, so it hides what fjall still holds, and
//! reaches fjall as a tombstone. Scans merge the maps (a record map at a time)
//! with fjall's range.
//!
//! Journal files: `<store>/writes/N.log` (fjall ignores the folder). A restart
//! replays the logs not yet ingested into the maps, including a FLUSHALL,
//! which clears fjall again. Every write reaches the OS before it is
//! acknowledged (`flush`, once per batch of replies); the fsync policy on top
//! lives in `durability.rs`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Mutex, RwLock};

use super::journal::{self, logs_in, Journal, PENDING_MAX};
use super::log_frame::{Change, FrameBuilder};
use super::{BatchOp, Engine, Ingested, MemoryEngine, Space, StorageError, StorageKey, Value, Visitor, KEY_PREFIX_LEN};

/// fjall's own key size limit.
const FJALL_MAX_KEY: usize = 65_536;

/// Writes between two looks at fjall's backlog: a look takes a snapshot of each keyspace's tree, which costs about
/// as much as a small write, and the backlog changes only as tables pile up.
const BACKLOG_EVERY: u32 = 64;

/// How many times `memtable_mb` of journal the write buffer may take before it is sealed, however little its maps
/// hold. A write buffer sealed by journal bytes alone was ingested every 64 MiB of writes even when they rewrote
/// the same keys: under `SET -P 16` over 100,000 keys, ingesting was 18% of a replica's CPU (compat/PERFORMANCE.md).
/// Sealed by the maps' bytes, a buffer of rewritten keys is ingested less often; this bounds the journal since a
/// cut (what a restart replays) to this many times the buffer while ingestion keeps up.
const JOURNAL_PER_BUFFER: u64 = 4;

/// How long a failed ingestion waits before the next flush may try again.
const INGEST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The journal's folder inside fjall's.
const JOURNAL_DIR: &str = "writes";

/// A delete, as the maps hold it: a value no put of that space has (records are never empty, expiry entries
/// always are).
fn deleted_marker(space: Space) -> &'static [u8] {
    match space {
        Space::Records => b"",
        Space::Expiry => b"\0",
    }
}

fn is_deleted(space: Space, value: &[u8]) -> bool {
    value == deleted_marker(space)
}

/// The write buffer over fjall.
pub struct DiskEngine {
    shared: Arc<Shared>,
    /// Hands the engine to its ingestion thread when the active maps are due to be sealed. One thread lives as long
    /// as the engine (it ends once this is dropped): a thread started per ingestion began each time with an empty
    /// heap, and its allocations (the records handed to the cache, fjall's blocks and filter) took fresh memory,
    /// page faults in the ingestion thread being 83% of a replica's under `SET -P 16` (compat/PERFORMANCE.md).
    ingest: SyncSender<Arc<Shared>>,
}

struct Shared {
    db: Database,
    records: Keyspace,
    expiry: Keyspace,
    journal: Journal,
    journal_dir: PathBuf,
    buffers: RwLock<Buffers>,
    /// Bytes the active maps grew by since the last cut, counted as writers add them.
    buffered: AtomicU64,
    /// Journal bytes since the last cut, counted as writers add them.
    unsealed: AtomicU64,
    /// The maps' bytes after which they are sealed and ingested (see [`Shared::fill`]).
    seal_bytes: u64,
    /// Set while an ingestion thread runs.
    ingesting: AtomicBool,
    /// Whether fjall may hold records: not until the first ingestion into a database opened without any. Until
    /// then a key the buffer lacks is absent, without a look into fjall (about 700 instructions, for each write to a
    /// new key on a replica: callgrind). Set before an ingestion writes, and so seen by any reader that no longer
    /// finds the sealed maps (taken away under the buffers' lock, after).
    lsm_holds_records: AtomicBool,
    /// Held while sealed maps are ingested, and by FLUSHALL, which must not race one.
    ingest_lock: Mutex<()>,
    /// Told what each ingestion takes out of the maps.
    ingested: RwLock<Option<Arc<Ingested>>>,
    /// Writes since fjall's backlog was last looked at, and what that look found.
    since_look: AtomicU32,
    backlogged: AtomicBool,
}

/// The maps taking writes, and the ones being ingested with the number of the first log after theirs.
struct Buffers {
    active: Arc<MemoryEngine>,
    sealed: Option<(Arc<MemoryEngine>, u64)>,
}

impl DiskEngine {
    /// Opens (or creates) the database in `path` with a block cache of
    /// `cache_mb` MiB and a write buffer sealed once it holds `memtable_mb` MiB (see [`JOURNAL_PER_BUFFER`]).
    pub fn open(path: &Path, cache_mb: u64, memtable_mb: u64) -> Result<DiskEngine, StorageError> {
        let db = Database::builder(path)
            .cache_size(cache_mb * 1024 * 1024)
            .manual_journal_persist(true)
            .open()?;
        let options = || KeyspaceCreateOptions::default().manual_journal_persist(true);
        let records = db.keyspace("records", options)?;
        let expiry = db.keyspace("expiry", options)?;
        let journal_dir = path.join(JOURNAL_DIR);
        std::fs::create_dir_all(&journal_dir)?;
        let logs = logs_in(&journal_dir)?;
        let active = MemoryEngine::default();
        let mut cleared = Ok(());
        let mut buffered = 0u64;
        let journal = Journal::open(&journal_dir, &logs, 1, &mut |change| match change {
            Change::Put(space, key, value) => buffered += active.put(space, key, value) as u64,
            Change::Delete(space, key) => buffered += active.put(space, key, deleted_marker(space)) as u64,
            Change::Clear => {
                buffered = 0;
                let _ = active.clear();
                // fjall forgot everything before this FLUSHALL when it ran; in case its own journal lost that.
                if cleared.is_ok() {
                    cleared = records.clear().and_then(|()| expiry.clear());
                }
            }
        })?;
        cleared?;
        let lsm_holds_records = !records.is_empty()?;
        let unsealed = journal.since_rotation();
        let (ingest, requests) = std::sync::mpsc::sync_channel::<Arc<Shared>>(1);
        std::thread::Builder::new()
            .name("ringkv-ingest".into())
            .spawn(move || {
                for shared in requests {
                    if let Err(e) = shared.seal_and_ingest() {
                        tracing::error!(
                            "ingesting the write buffer into fjall failed (its journal is kept; retrying in a second): {e}"
                        );
                        // Else every flush would start another try at once.
                        std::thread::sleep(INGEST_RETRY);
                    }
                    shared.ingesting.store(false, Ordering::Release);
                }
            })?;
        Ok(DiskEngine {
            ingest,
            shared: Arc::new(Shared {
                db,
                records,
                expiry,
                journal,
                journal_dir,
                buffers: RwLock::new(Buffers {
                    active: Arc::new(active),
                    sealed: None,
                }),
                unsealed: AtomicU64::new(unsealed),
                buffered: AtomicU64::new(buffered),
                seal_bytes: memtable_mb * 1024 * 1024,
                ingesting: AtomicBool::new(false),
                lsm_holds_records: AtomicBool::new(lsm_holds_records),
                ingest_lock: Mutex::new(()),
                ingested: RwLock::new(None),
                since_look: AtomicU32::new(0),
                backlogged: AtomicBool::new(false),
            }),
        })
    }

    /// Seals and ingests now, on this thread; for tests.
    #[cfg(test)]
    pub(crate) fn ingest_now(&self) -> Result<(), StorageError> {
        self.shared.seal_and_ingest()
    }
}

impl Shared {
    /// How full the active maps are, against `seal_bytes`: their bytes, or the journal since the cut over
    /// [`JOURNAL_PER_BUFFER`], whichever is more.
    fn fill(&self) -> u64 {
        let buffered = self.buffered.load(Ordering::Relaxed);
        buffered.max(self.unsealed.load(Ordering::Relaxed) / JOURNAL_PER_BUFFER)
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        match space {
            Space::Records => &self.records,
            Space::Expiry => &self.expiry,
        }
    }

    /// Calls `read` with the buffer's newest change to record `key` (`None` for a delete) and returns true, or
    /// returns false if the buffer holds none.
    fn read_buffered(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> bool {
        let buffers = self.buffers.read();
        let sealed = buffers.sealed.as_ref().map(|(maps, _)| maps);
        for maps in std::iter::once(&buffers.active).chain(sealed) {
            let mut held = false;
            let _ = maps.read_with(key, &mut |value| {
                if let Some(value) = value {
                    held = true;
                    read((!is_deleted(Space::Records, value)).then_some(value));
                }
            });
            if held {
                return true;
            }
        }
        false
    }

    /// The active maps and the sealed ones, if any, held for a scan (which then takes no lock of the buffer's).
    fn maps(&self) -> (Arc<MemoryEngine>, Option<Arc<MemoryEngine>>) {
        let buffers = self.buffers.read();
        (
            buffers.active.clone(),
            buffers.sealed.as_ref().map(|(maps, _)| maps.clone()),
        )
    }

    /// Cuts the journal and seals the active maps (unless maps sealed before are still to be ingested), ingests
    /// the sealed maps into fjall, then deletes the logs they came from.
    fn seal_and_ingest(&self) -> Result<(), StorageError> {
        let _ingest = self.ingest_lock.lock();
        let (maps, next_log) = self.seal()?;
        self.lsm_holds_records.store(true, Ordering::Release);
        for space in [Space::Records, Space::Expiry] {
            ingest(self.keyspace(space), &maps, space)?;
        }
        if let Some(listener) = self.ingested.read().clone() {
            let active = self.buffers.read().active.clone();
            maps.for_each_record(&mut |key, value| {
                let newest = || {
                    let mut rewritten = false;
                    let _ = active.read_with(key, &mut |held| rewritten = held.is_some());
                    !rewritten
                };
                listener(key, (!is_deleted(Space::Records, value)).then_some(value), &newest);
            });
        }
        journal::remove_before(&self.journal_dir, next_log)?;
        self.buffers.write().sealed = None;
        tracing::debug!("write buffer ingested into fjall; journal cut at log {next_log}");
        Ok(())
    }

    /// The sealed maps and the number of the first log after theirs: the ones sealed before if they are still
    /// there, else the active ones, sealed at a cut of the journal.
    fn seal(&self) -> Result<(Arc<MemoryEngine>, u64), StorageError> {
        if let Some(sealed) = self.buffers.read().sealed.clone() {
            return Ok(sealed);
        }
        let (_, sealed) = self.journal.rotate(|next_log| {
            let mut buffers = self.buffers.write();
            let maps = std::mem::replace(&mut buffers.active, Arc::new(MemoryEngine::default()));
            buffers.sealed = Some((maps.clone(), next_log));
            self.unsealed.store(0, Ordering::Relaxed);
            self.buffered.store(0, Ordering::Relaxed);
            (maps, next_log)
        })?;
        Ok(sealed)
    }
}

/// Writes every entry of `space` in `maps` into `keyspace` as one sorted run, deletes as tombstones.
fn ingest(keyspace: &Keyspace, maps: &MemoryEngine, space: Space) -> Result<(), StorageError> {
    let mut ingestion = None;
    let mut failed = None;
    let _ = maps.scan(space, &[], &mut |key, value| {
        let ingestion = match &mut ingestion {
            Some(ingestion) => ingestion,
            None => match keyspace.start_ingestion() {
                Ok(started) => ingestion.insert(started),
                Err(e) => {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
            },
        };
        let written = if is_deleted(space, value) {
            ingestion.write_tombstone(key)
        } else {
            ingestion.write(key, value)
        };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    if let Some(ingestion) = ingestion {
        ingestion.finish()?;
    }
    Ok(())
}

/// What lies under the active maps in a scan: the sealed maps' entries of the group being scanned over fjall's.
struct Under<I: Iterator> {
    space: Space,
    sealed: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Vec<u8>)>>,
    stored: std::iter::Peekable<I>,
}

/// Where the next entry under the active maps comes from.
enum Source {
    Sealed,
    Stored,
    /// Both hold the key: the sealed entry replaces fjall's.
    Both,
}

impl<I: Iterator<Item = fjall::Result<(fjall::Slice, fjall::Slice)>>> Under<I> {
    /// Visits the live entries before `until` (all if `None`; with `sealed_only`, only while sealed ones are left)
    /// and drops those at `until`, which the caller's entry replaces.
    fn visit_until(
        &mut self,
        until: Option<&[u8]>,
        sealed_only: bool,
        visit: &mut Visitor<'_>,
    ) -> Result<ControlFlow<()>, StorageError> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        loop {
            if let Some(Err(_)) = self.stored.peek() {
                if let Some(Err(e)) = self.stored.next() {
                    return Err(e.into());
                }
            }
            let (source, live) = {
                let sealed = self.sealed.peek().map(|(key, _)| key.as_slice());
                let stored = match self.stored.peek() {
                    Some(Ok((key, _))) if !sealed_only || sealed.is_some() => Some(&key[..]),
                    _ => None,
                };
                let (key, source) = match (sealed, stored) {
                    (None, None) => return Ok(ControlFlow::Continue(())),
                    (Some(key), None) => (key, Source::Sealed),
                    (None, Some(key)) => (key, Source::Stored),
                    (Some(sealed), Some(stored)) => match sealed.cmp(stored) {
                        Less => (sealed, Source::Sealed),
                        Greater => (stored, Source::Stored),
                        Equal => (sealed, Source::Both),
                    },
                };
                match until.map(|until| key.cmp(until)) {
                    Some(Greater) => return Ok(ControlFlow::Continue(())),
                    Some(Equal) => (source, false),
                    _ => (source, true),
                }
            };
            let flow = match source {
                Source::Stored => match self.stored.next() {
                    Some(Ok((key, value))) if live => visit(&key, &value),
                    _ => ControlFlow::Continue(()),
                },
                Source::Sealed | Source::Both => {
                    if matches!(source, Source::Both) {
                        self.stored.next();
                    }
                    match self.sealed.next() {
                        Some((key, value)) if live && !is_deleted(self.space, &value) => visit(&key, &value),
                        _ => ControlFlow::Continue(()),
                    }
                }
            };
            if flow.is_break() {
                return Ok(flow);
            }
        }
    }
}

impl Engine for DiskEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        let mut found = None;
        if self.read_recent(key, &mut |value| {
            found = value.map(|v| Value::Bytes(bytes::Bytes::copy_from_slice(v)))
        })? {
            return Ok(found);
        }
        Ok(self.shared.records.get(key)?.map(Value::Slice))
    }

    /// Into the active maps only: they take every write, and hold the keys written lately. A key found only in the
    /// sealed maps, the record cache or fjall misses the cache as before.
    fn prefetch(&self, keys: &mut dyn Iterator<Item = StorageKey>) {
        self.shared.buffers.read().active.prefetch(keys);
    }

    fn read_with(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), StorageError> {
        if !self.read_recent(key, read)? {
            read(self.shared.records.get(key)?.as_deref());
        }
        Ok(())
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
        for op in ops {
            let invalid = match op {
                BatchOp::Put(Space::Records, _, value) => value.is_empty(),
                BatchOp::Put(Space::Expiry, _, value) => !value.is_empty(),
                BatchOp::Delete(..) => false,
            };
            if invalid {
                return Err(StorageError::InvalidValue);
            }
        }
        let full = {
            // The journal's lock first: a cut takes it, then the buffers'.
            let mut pending = self.shared.journal.pending();
            let before = pending.len();
            let mut frame = FrameBuilder::new(&mut pending);
            frame.batch(ops);
            frame.finish();
            let added = (pending.len() - before) as u64;
            let buffers = self.shared.buffers.read();
            let mut grown = 0;
            for op in ops {
                grown += match op {
                    BatchOp::Put(space, key, value) => buffers.active.put(*space, key, value),
                    BatchOp::Delete(space, key) => buffers.active.put(*space, key, deleted_marker(*space)),
                };
            }
            self.shared.unsealed.fetch_add(added, Ordering::Relaxed);
            self.shared.buffered.fetch_add(grown as u64, Ordering::Relaxed);
            pending.len() >= PENDING_MAX
        };
        if full {
            self.flush()?;
        }
        if self.shared.fill() >= 2 * self.shared.seal_bytes && self.shared.buffers.read().sealed.is_some() {
            // Ingestion is behind by a whole buffer: wait for it (callers moved off the async worker when
            // `backpressure` said so).
            drop(self.shared.ingest_lock.lock());
        }
        Ok(())
    }

    /// Streams the active maps (a record map at a time) over what lies under them; only the sealed maps, while
    /// one is being ingested, are copied, a group at a time.
    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        let (active, sealed) = self.shared.maps();
        let stored = self
            .shared
            .keyspace(space)
            .range(from..)
            .map(|guard| guard.into_inner());
        let mut under = Under {
            space,
            sealed: Vec::new().into_iter().peekable(),
            stored: stored.peekable(),
        };
        let first = MemoryEngine::group_of(space, from);
        for index in first..MemoryEngine::group_count(space) {
            let from = (index == first).then_some(from);
            if let Some(sealed) = &sealed {
                let mut entries = Vec::new();
                let _ = sealed.scan_group(space, index, from, &mut |key, value| {
                    entries.push((key.to_vec(), value.to_vec()));
                    ControlFlow::Continue(())
                });
                under.sealed = entries.into_iter().peekable();
            }
            let mut failed = None;
            let flow = active.scan_group(space, index, from, &mut |key, value| match under.visit_until(
                Some(key),
                false,
                visit,
            ) {
                Ok(ControlFlow::Continue(())) if is_deleted(space, value) => ControlFlow::Continue(()),
                Ok(ControlFlow::Continue(())) => visit(key, value),
                Ok(ControlFlow::Break(())) => ControlFlow::Break(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            // The group's sealed entries after the active maps' last, with fjall's among them.
            if flow.is_break() || under.visit_until(None, true, visit)?.is_break() {
                return Ok(());
            }
        }
        let _ = under.visit_until(None, false, visit)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        let _log = self.shared.journal.write_pending()?;
        if self.shared.fill() >= self.shared.seal_bytes && !self.shared.ingesting.swap(true, Ordering::AcqRel) {
            // The channel is empty: `ingesting` was clear, and the thread clears it only after taking its last request.
            if self.ingest.try_send(self.shared.clone()).is_err() {
                tracing::error!("the write buffer's ingestion thread is gone");
                self.shared.ingesting.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    fn buffers_writes(&self) -> bool {
        true
    }

    fn keeps_recent_writes(&self) -> bool {
        true
    }

    fn watch_ingested(&self, listener: Arc<Ingested>) {
        *self.shared.ingested.write() = Some(listener);
    }

    fn read_recent(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<bool, StorageError> {
        if self.shared.read_buffered(key, read) {
            return Ok(true);
        }
        // Nothing in fjall either: absent, and the record cache in front need not be asked nor told.
        let absent = !self.shared.lsm_holds_records.load(Ordering::Acquire);
        if absent {
            read(None);
        }
        Ok(absent)
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.shared.journal.sync()
    }

    fn clear(&self) -> Result<(), StorageError> {
        let _ingest = self.shared.ingest_lock.lock();
        {
            let mut pending = self.shared.journal.pending();
            let mut frame = FrameBuilder::new(&mut pending);
            frame.clear();
            frame.finish();
            let mut buffers = self.shared.buffers.write();
            buffers.active.clear()?;
            buffers.sealed = None;
            self.shared.buffered.store(0, Ordering::Relaxed);
        }
        // In the journal before fjall forgets: a crash after either replays the FLUSHALL.
        drop(self.shared.journal.write_pending()?);
        self.shared.records.clear()?;
        self.shared.expiry.clear()?;
        self.shared.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn backpressure(&self) -> bool {
        let shared = &self.shared;
        if shared.fill() >= shared.seal_bytes && shared.buffers.read().sealed.is_some() {
            return true;
        }
        if !shared
            .since_look
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(BACKLOG_EVERY)
        {
            return shared.backlogged.load(Ordering::Relaxed);
        }
        // fjall stalls ingestion at 20+ L0 runs; warn early.
        let backlogged = [&shared.records, &shared.expiry]
            .iter()
            .any(|ks| ks.l0_table_count() >= 16);
        shared.backlogged.store(backlogged, Ordering::Relaxed);
        backlogged
    }

    fn disk_bytes(&self) -> u64 {
        self.shared.db.disk_space().unwrap_or(0) + self.shared.journal.since_rotation()
    }

    fn max_key_len(&self) -> usize {
        // The expiry index prefixes 8 more bytes to the storage key.
        FJALL_MAX_KEY - KEY_PREFIX_LEN - 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{storage_key, StorageKey};
    use bytes::Bytes;

    fn put(engine: &DiskEngine, key: &[u8], value: &[u8]) {
        let op = BatchOp::Put(
            Space::Records,
            StorageKey::from_slice(key),
            Bytes::copy_from_slice(value),
        );
        engine.apply(&[op]).expect("put");
    }

    fn delete(engine: &DiskEngine, key: &[u8]) {
        let op = BatchOp::Delete(Space::Records, StorageKey::from_slice(key));
        engine.apply(&[op]).expect("delete");
    }

    fn scan(engine: &DiskEngine, space: Space, from: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        engine
            .scan(space, from, &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                if seen.len() == limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("scan");
        seen
    }

    fn get(engine: &DiskEngine, key: &[u8]) -> Option<Vec<u8>> {
        let got = engine.get(key).expect("get").map(|v| v.to_vec());
        let mut lent = None;
        engine
            .read_with(key, &mut |v| lent = Some(v.map(<[u8]>::to_vec)))
            .expect("read_with");
        assert_eq!(lent, Some(got.clone()), "get and read_with agree on {key:?}");
        got
    }

    fn logs(engine: &DiskEngine) -> Vec<u64> {
        logs_in(&engine.shared.journal_dir).expect("list")
    }

    /// Waits (30 s at most) until no ingestion runs and the journal is the one log `log`, the one after the cut.
    fn wait_for_ingestion(engine: &DiskEngine, log: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while engine.shared.ingesting.load(Ordering::Acquire) || logs(engine) != vec![log] {
            assert!(
                std::time::Instant::now() < deadline,
                "no ingestion up to log {log}: logs {:?}",
                logs(engine)
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Keys 0..n, their slots spread over the record maps.
    fn keys(n: u16) -> Vec<StorageKey> {
        (0..n)
            .map(|i| storage_key((u32::from(i) * 97 % 16384) as u16, 0, &i.to_be_bytes()))
            .collect()
    }

    #[test]
    fn buffered_changes_hide_ingested_ones_in_reads_and_scans_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = keys(300);
        let expected = {
            let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
            for key in &keys {
                put(&engine, key, b"old");
            }
            engine.ingest_now().expect("ingest");
            assert_eq!(logs(&engine), vec![2], "the ingested logs are deleted");
            // Now in the buffer over fjall: overwritten, deleted, and new keys beside untouched ones.
            for key in keys.iter().step_by(3) {
                put(&engine, key, b"new");
            }
            for key in keys.iter().skip(1).step_by(3) {
                delete(&engine, key);
            }
            put(&engine, &storage_key(16383, 0, b"last"), b"added");
            delete(&engine, &storage_key(5, 0, b"never there"));
            engine.flush().expect("flush");
            // A hint over buffered, deleted, ingested and absent keys, which must change no answer below.
            engine.prefetch(&mut keys.iter().cloned().chain([storage_key(5, 0, b"never there")]));
            assert_eq!(get(&engine, &keys[0]).as_deref(), Some(&b"new"[..]));
            assert_eq!(get(&engine, &keys[1]), None);
            assert_eq!(get(&engine, &keys[2]).as_deref(), Some(&b"old"[..]));
            let all = scan(&engine, Space::Records, &[], usize::MAX);
            assert_eq!(all.len(), 200 + 1);
            assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
            // Resumed from the middle, and stopped early.
            let from = &all[77].0;
            assert_eq!(scan(&engine, Space::Records, from, 10), all[77..87].to_vec());
            all
        };
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("reopen");
        assert_eq!(scan(&engine, Space::Records, &[], usize::MAX), expected);
        assert_eq!(
            get(&engine, &keys[2]).as_deref(),
            Some(&b"old"[..]),
            "read from fjall after a reopen"
        );
        engine.ingest_now().expect("ingest again");
        assert_eq!(scan(&engine, Space::Records, &[], usize::MAX), expected);
        assert_eq!(
            get(&engine, &keys[1]),
            None,
            "a tombstone in fjall hides the older value"
        );
    }

    #[test]
    fn fjall_is_asked_once_it_may_hold_records_and_not_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let holds = |engine: &DiskEngine| engine.shared.lsm_holds_records.load(Ordering::Acquire);
        {
            let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
            assert!(!holds(&engine), "a new database");
            put(&engine, b"k", b"v");
            assert_eq!(get(&engine, b"k").as_deref(), Some(&b"v"[..]));
            assert_eq!(get(&engine, b"absent"), None);
            let recent = |key: &[u8]| {
                let mut seen = None;
                let answered = engine.read_recent(key, &mut |v| seen = Some(v.map(<[u8]>::to_vec)));
                if !answered.expect("read") {
                    assert!(seen.is_none(), "called without answering");
                    return None;
                }
                Some(seen.expect("called"))
            };
            assert_eq!(recent(b"absent"), Some(None), "absent, told without fjall");
            engine.ingest_now().expect("ingest");
            assert!(holds(&engine), "after an ingestion");
            assert_eq!(recent(b"k"), None, "no longer recent: ask further");
            assert_eq!(recent(b"absent"), None, "fjall may hold it");
            assert_eq!(
                get(&engine, b"k").as_deref(),
                Some(&b"v"[..]),
                "from fjall, the buffer empty"
            );
        }
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("reopen");
        assert!(holds(&engine), "fjall held a record when opened");
        assert_eq!(get(&engine, b"k").as_deref(), Some(&b"v"[..]));
        engine.clear().expect("flushall");
        drop(engine);
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("reopen after a flush");
        assert!(!holds(&engine), "fjall emptied by FLUSHALL");
        assert_eq!(get(&engine, b"k"), None);
    }

    /// Random puts and deletes, in three layers (ingested into fjall, sealed, active), read back through every
    /// path against a model, then again after a reopen.
    #[test]
    fn reads_and_scans_through_fjall_sealed_and_active_maps_match_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = keys(400);
        let mut model = std::collections::BTreeMap::new();
        let mut expiry_model = std::collections::BTreeSet::new();
        let check = |engine: &DiskEngine, model: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>| {
            let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(scan(engine, Space::Records, &[], usize::MAX), all);
            for start in [0, 1, all.len() / 3, all.len() / 2] {
                let from = keys[start * 7 % keys.len()].to_vec();
                let expected: Vec<_> = all.iter().filter(|(k, _)| *k >= from).take(25).cloned().collect();
                assert_eq!(scan(engine, Space::Records, &from, 25), expected, "from {from:?}");
            }
            for key in &keys {
                assert_eq!(get(engine, key), model.get(&key[..]).cloned(), "{key:?}");
            }
        };
        {
            let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
            for layer in 0..3u8 {
                for _ in 0..600 {
                    let key = &keys[rng.random_range(0..keys.len())];
                    if rng.random_bool(0.3) {
                        delete(&engine, key);
                        model.remove(&key[..]);
                    } else {
                        let value = vec![layer + 1; rng.random_range(1..40)];
                        put(&engine, key, &value);
                        model.insert(key.to_vec(), value);
                    }
                    let at = [0, 0, 0, 0, 0, 0, 0, rng.random_range(0..50u8)];
                    let op = if rng.random_bool(0.4) {
                        expiry_model.remove(&at[..]);
                        BatchOp::Delete(Space::Expiry, StorageKey::from_slice(&at))
                    } else {
                        expiry_model.insert(at.to_vec());
                        BatchOp::Put(Space::Expiry, StorageKey::from_slice(&at), Bytes::new())
                    };
                    engine.apply(&[op]).expect("expiry");
                }
                match layer {
                    0 => engine.ingest_now().expect("ingest"),
                    1 => drop(engine.shared.seal().expect("seal")),
                    _ => engine.flush().expect("flush"),
                }
            }
            assert!(engine.shared.buffers.read().sealed.is_some(), "three layers");
            check(&engine, &model);
            let expiry: Vec<Vec<u8>> = scan(&engine, Space::Expiry, &[], usize::MAX)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(expiry, expiry_model.iter().cloned().collect::<Vec<_>>());
        }
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("reopen");
        check(&engine, &model);
        engine.ingest_now().expect("ingest all");
        check(&engine, &model);
    }

    #[test]
    fn ingestion_tells_its_listener_each_record_and_whether_a_write_came_since() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
        let told = Arc::new(Mutex::new(Vec::new()));
        let log = told.clone();
        engine.watch_ingested(Arc::new(move |key, value, newest| {
            log.lock().push((key.to_vec(), value.map(<[u8]>::to_vec), newest()));
        }));
        let (kept, rewritten, deleted) = (
            storage_key(1, 0, b"a"),
            storage_key(2, 0, b"b"),
            storage_key(3, 0, b"c"),
        );
        put(&engine, &kept, b"1");
        put(&engine, &rewritten, b"1");
        delete(&engine, &deleted);
        drop(engine.shared.seal().expect("seal"));
        put(&engine, &rewritten, b"2");
        engine.ingest_now().expect("ingest");
        // Told in no particular order.
        told.lock().sort();
        assert_eq!(
            *told.lock(),
            vec![
                (kept.to_vec(), Some(b"1".to_vec()), true),
                (rewritten.to_vec(), Some(b"1".to_vec()), false),
                (deleted.to_vec(), None, true),
            ]
        );
    }

    #[test]
    fn a_value_ingested_after_a_reopen_is_newer_than_one_ingested_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = storage_key(42, 0, b"k");
        for value in [&b"1"[..], b"2", b"3"] {
            let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
            put(&engine, &key, value);
            engine.ingest_now().expect("ingest");
            assert_eq!(get(&engine, &key).as_deref(), Some(value));
        }
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
        assert_eq!(get(&engine, &key).as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn a_flushall_forgets_buffered_and_ingested_records_and_expiry_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (storage_key(1, 0, b"a"), storage_key(2, 0, b"b"));
        {
            let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
            put(&engine, &a, b"ingested");
            let expiry = BatchOp::Put(
                Space::Expiry,
                StorageKey::from_slice(b"\0\0\0\0\0\0\0\x01a"),
                Bytes::new(),
            );
            engine.apply(&[expiry]).expect("expiry");
            engine.ingest_now().expect("ingest");
            put(&engine, &b, b"buffered");
            engine.clear().expect("clear");
            assert!(scan(&engine, Space::Records, &[], usize::MAX).is_empty());
            assert!(scan(&engine, Space::Expiry, &[], usize::MAX).is_empty());
            put(&engine, &b, b"after");
            engine.flush().expect("flush");
        }
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("reopen");
        assert_eq!(
            scan(&engine, Space::Records, &[], usize::MAX),
            vec![(b.to_vec(), b"after".to_vec())]
        );
        assert!(scan(&engine, Space::Expiry, &[], usize::MAX).is_empty());
    }

    #[test]
    fn a_flush_past_the_buffer_size_ingests_in_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = DiskEngine::open(dir.path(), 8, 1).expect("open");
        let keys = keys(4000);
        // Twice: the one ingestion thread takes every request, not just the first.
        for (round, half) in keys.chunks(2000).enumerate() {
            for key in half {
                put(&engine, key, &[7; 600]);
            }
            engine.flush().expect("flush");
            wait_for_ingestion(&engine, round as u64 + 2);
            assert!(engine.shared.buffers.read().sealed.is_none());
            let written = 2000 * (round + 1);
            assert_eq!(engine.shared.records.len().expect("count"), written, "all in fjall");
            assert_eq!(scan(&engine, Space::Records, &[], usize::MAX).len(), written);
        }
        // The thread lets go of the engine once idle: the directory opens again.
        drop(engine);
        let engine = DiskEngine::open(dir.path(), 8, 1).expect("reopen");
        assert_eq!(scan(&engine, Space::Records, &[], usize::MAX).len(), keys.len());
    }

    /// Rewrites each of `keys` with a 600-byte value until the journal since the cut reaches `journal_bytes`,
    /// flushing after each pass as a batch of replies does.
    fn rewrite_until(engine: &DiskEngine, keys: &[StorageKey], journal_bytes: u64) {
        let mut pass = 0u8;
        while engine.shared.unsealed.load(Ordering::Relaxed) < journal_bytes {
            for key in keys {
                put(engine, key, &[pass; 600]);
            }
            engine.flush().expect("flush");
            pass = pass.wrapping_add(1);
        }
    }

    #[test]
    fn a_buffer_of_rewritten_keys_is_sealed_by_its_journal_at_four_times_its_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = DiskEngine::open(dir.path(), 8, 1).expect("open");
        let keys = keys(100);
        const MIB: u64 = 1 << 20;
        // 3 MiB of journal over maps of about 60 KiB: not sealed, where a buffer sealed by its journal was at 1 MiB.
        rewrite_until(&engine, &keys, 3 * MIB);
        assert!(!engine.shared.ingesting.load(Ordering::Acquire));
        assert_eq!(logs(&engine), vec![1]);
        assert_eq!(engine.shared.records.len().expect("count"), 0, "nothing in fjall");
        let buffered = engine.shared.buffered.load(Ordering::Relaxed);
        assert!(buffered > 0 && buffered < MIB / 8, "{buffered} bytes buffered");
        // A reopen counts the maps it replays, as the writes did, not the journal: still not sealed.
        drop(engine);
        let engine = DiskEngine::open(dir.path(), 8, 1).expect("reopen");
        assert_eq!(engine.shared.buffered.load(Ordering::Relaxed), buffered);
        engine.flush().expect("flush");
        assert!(!engine.shared.ingesting.load(Ordering::Acquire));
        // Past four times the buffer's size of journal: sealed and ingested.
        rewrite_until(&engine, &keys, 4 * MIB);
        wait_for_ingestion(&engine, 2);
        assert_eq!(engine.shared.records.len().expect("count"), keys.len(), "all in fjall");
        assert_eq!(engine.shared.buffered.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn puts_of_values_a_space_never_holds_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = DiskEngine::open(dir.path(), 8, 8).expect("open");
        for op in [
            BatchOp::Put(Space::Records, StorageKey::from_slice(b"k"), Bytes::new()),
            BatchOp::Put(Space::Expiry, StorageKey::from_slice(b"k"), Bytes::from_static(b"v")),
        ] {
            assert!(matches!(engine.apply(&[op]), Err(StorageError::InvalidValue)));
        }
        assert!(scan(&engine, Space::Records, &[], usize::MAX).is_empty());
    }
}
