//! The default engine: fjall, an LSM tree with a write-ahead journal.
//!
//! Batches stay in fjall's journal buffer until `flush` hands them to the OS,
//! which the connection does once per batch of commands, before replying: an
//! acknowledged write survives `kill -9`, and many clients' writes share one
//! `write(2)`. The fsync policy on top lives in `durability.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{BatchOp, Engine, Space, StorageError, Value, Visitor, KEY_PREFIX_LEN};

/// fjall's own key size limit.
const FJALL_MAX_KEY: usize = 65_536;

/// Writes between two looks at fjall's backlog: a look takes a snapshot of each keyspace's tree, which costs about
/// as much as a small write, and the backlog changes only as memtables fill.
const BACKLOG_EVERY: u32 = 64;

/// fjall database with one keyspace per [`Space`].
pub struct DiskEngine {
    /// The database folder, where fjall keeps its journals (`*.jnl`).
    path: PathBuf,
    db: Database,
    records: Keyspace,
    expiry: Keyspace,
    /// Writes since the backlog was last looked at, and what that look found.
    since_look: AtomicU32,
    backlogged: AtomicBool,
}

impl DiskEngine {
    /// Opens (or creates) the database in `path` with a block cache of
    /// `cache_mb` MiB and memtables of `memtable_mb` MiB.
    pub fn open(path: &Path, cache_mb: u64, memtable_mb: u64) -> Result<DiskEngine, StorageError> {
        let db = Database::builder(path)
            .cache_size(cache_mb * 1024 * 1024)
            .manual_journal_persist(true)
            .open()?;
        let options = || {
            KeyspaceCreateOptions::default()
                .manual_journal_persist(true)
                .max_memtable_size(memtable_mb * 1024 * 1024)
        };
        let records = db.keyspace("records", options)?;
        let expiry = db.keyspace("expiry", options)?;
        Ok(DiskEngine {
            path: path.to_owned(),
            db,
            records,
            expiry,
            since_look: AtomicU32::new(0),
            backlogged: AtomicBool::new(false),
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        match space {
            Space::Records => &self.records,
            Space::Expiry => &self.expiry,
        }
    }
}

impl Engine for DiskEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        Ok(self.records.get(key)?.map(Value::Slice))
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
        match ops {
            // A lone write (most SETs) skips the batch's bookkeeping; it is just as atomic.
            [BatchOp::Put(space, key, value)] => self.space(*space).insert(&key[..], &value[..])?,
            [BatchOp::Delete(space, key)] => self.space(*space).remove(&key[..])?,
            _ => {
                let mut batch = self.db.batch();
                for op in ops {
                    match op {
                        BatchOp::Put(space, key, value) => batch.insert(self.space(*space), &key[..], &value[..]),
                        BatchOp::Delete(space, key) => batch.remove(self.space(*space), &key[..]),
                    }
                }
                batch.commit()?;
            }
        }
        Ok(())
    }

    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        for guard in self.space(space).range(from..) {
            let (key, value) = guard.into_inner()?;
            if visit(&key, &value).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::Buffer)?;
        Ok(())
    }

    fn buffers_writes(&self) -> bool {
        true
    }

    fn sync(&self) -> Result<(), StorageError> {
        // fjall fsyncs while holding its journal lock, which would stall every
        // writer for the length of the fsync. Instead: hand the buffer to the
        // OS under the lock, then fsync the journal through a descriptor of
        // our own (fsync is per file, not per descriptor). Journals fjall
        // sealed were fsynced by fjall when it rotated them.
        self.db.persist(PersistMode::Buffer)?;
        let mut synced = false;
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "jnl") {
                File::open(&path)?.sync_data()?;
                synced = true;
            }
        }
        if !synced {
            // A layout we do not know: let fjall do it.
            self.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn clear(&self) -> Result<(), StorageError> {
        self.records.clear()?;
        self.expiry.clear()?;
        Ok(())
    }

    fn backpressure(&self) -> bool {
        if !self
            .since_look
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(BACKLOG_EVERY)
        {
            return self.backlogged.load(Ordering::Relaxed);
        }
        // fjall sleeps writers at 20+ L0 runs or 4+ sealed memtables; warn early.
        let backlogged = [&self.records, &self.expiry]
            .iter()
            .any(|ks| ks.sealed_memtable_count() >= 2 || ks.l0_table_count() >= 16);
        self.backlogged.store(backlogged, Ordering::Relaxed);
        backlogged
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn max_key_len(&self) -> usize {
        // The expiry index prefixes 8 more bytes to the storage key.
        FJALL_MAX_KEY - KEY_PREFIX_LEN - 8
    }
}
