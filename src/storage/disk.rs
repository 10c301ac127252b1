//! The default engine: fjall, an LSM tree with a write-ahead journal.
//!
//! Batches stay in fjall's journal buffer until `flush` hands them to the OS,
//! which the connection does once per batch of commands, before replying: an
//! acknowledged write survives `kill -9`, and many clients' writes share one
//! `write(2)`. The fsync policy on top lives in `durability.rs`.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{BatchOp, Engine, Space, StorageError, Value, Visitor, KEY_PREFIX_LEN};

/// fjall's own key size limit.
const FJALL_MAX_KEY: usize = 65_536;

/// fjall database with one keyspace per [`Space`].
pub struct DiskEngine {
    db: Database,
    records: Keyspace,
    expiry: Keyspace,
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
        Ok(DiskEngine { db, records, expiry })
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

    fn apply(&self, ops: Vec<BatchOp>) -> Result<(), StorageError> {
        let mut batch = self.db.batch();
        for op in ops {
            match op {
                BatchOp::Put(space, key, value) => batch.insert(self.space(space), key, value),
                BatchOp::Delete(space, key) => batch.remove(self.space(space), key),
            }
        }
        batch.commit()?;
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

    fn sync(&self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    fn clear(&self) -> Result<(), StorageError> {
        self.records.clear()?;
        self.expiry.clear()?;
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }

    fn max_key_len(&self) -> usize {
        // The expiry index prefixes 8 more bytes to the storage key.
        FJALL_MAX_KEY - KEY_PREFIX_LEN - 8
    }
}
