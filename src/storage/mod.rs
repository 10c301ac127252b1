//! Storage engines behind one trait, and the on-disk key layout.
//!
//! Records are stored under `slot (u16 BE) ‖ db (u8) ‖ key`, so every slot (and
//! so every slot range: Merkle trees, rebalancing) is one contiguous scan. A
//! second space, the expiry index, maps `expire_at_ms (u64 BE) ‖ storage key`
//! to nothing, so the active sweep reads only what is due.

mod disk;
mod durability;
mod journal;
mod log;
mod log_frame;
mod memory;
mod record_map;

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use crate::config::{EngineKind, StorageConfig};

pub use disk::DiskEngine;
pub use durability::Durability;
pub use log::LogEngine;
pub use memory::MemoryEngine;

/// A storage failure, reported to the client as `ERR storage error: ...`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk engine failed.
    #[error("{0}")]
    Fjall(fjall::Error),
    /// Reading or fsyncing a storage file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Another process has the data dir open.
    #[error("the data dir is in use by another process (is another ringkv running on it?)")]
    Locked,
    /// A stored record did not decode: the data dir is damaged or foreign.
    #[error("corrupt record")]
    Corrupt,
    /// The key does not fit the engine's key size limit.
    #[error("key too long for the storage engine ({0} bytes max)")]
    KeyTooLong(usize),
    /// A put of a value its space never holds (a record is never empty, an expiry entry always is).
    #[error("invalid value for the storage engine")]
    InvalidValue,
    /// The data dir holds another durable engine's data. Starting anyway
    /// would keep the node's identity with none of its records, and the
    /// version counters it issued before could be issued again.
    #[error("the data dir holds the {0} engine's data: set engine = \"{0}\", or use another data dir")]
    OtherEngine(&'static str),
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Locked => StorageError::Locked,
            other => StorageError::Fjall(other),
        }
    }
}

/// Which of the engine's two key spaces an operation addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Storage key → encoded record.
    Records,
    /// `expire_at_ms ‖ storage key` → empty, the expiry index.
    Expiry,
}

/// A storage key (or expiry-index key), inline up to 48 bytes: one is built for every record read or written,
/// and most keys are short.
pub type StorageKey = smallvec::SmallVec<[u8; STORAGE_KEY_INLINE]>;

/// Bytes of a storage key held without an allocation.
const STORAGE_KEY_INLINE: usize = 48;

/// One change in an atomic batch.
#[derive(Debug)]
pub enum BatchOp {
    /// Insert or overwrite (the value is shared: the record cache keeps the same bytes).
    Put(Space, StorageKey, bytes::Bytes),
    /// Remove if present.
    Delete(Space, StorageKey),
}

/// The ops of one write: a record and at most two expiry-index changes, kept on the stack.
pub type Ops = smallvec::SmallVec<[BatchOp; 3]>;

/// A stored value, borrowed from the engine without copying where it can be.
pub enum Value {
    /// From the disk engine (reference counted, no copy).
    Slice(fjall::Slice),
    /// From the memory engine (reference counted, no copy).
    Bytes(bytes::Bytes),
}

impl std::ops::Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Value::Slice(slice) => slice,
            Value::Bytes(bytes) => bytes,
        }
    }
}

/// Told each record (storage key, stored bytes or `None` for a delete) an engine moves out of RAM, with a check
/// that no write to the key has come since (to ask after marking the moment: a write may land at any time).
pub type Ingested = dyn Fn(&[u8], Option<&[u8]>, &dyn Fn() -> bool) + Send + Sync;

/// Called for each (key, value) of a scan; `Break` stops it.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// What a storage engine must do. Implementations are synchronous and fast
/// (memtable or block cache on the hot path); callers never hold a lock across
/// an await while calling them.
pub trait Engine: Send + Sync + 'static {
    /// Reads one record.
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError>;
    /// Calls `read` with one record, lent where the engine can lend it: a
    /// caller that only decodes or compares the bytes needs no copy of them.
    fn read_with(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), StorageError> {
        read(self.get(key)?.as_deref());
        Ok(())
    }
    /// Starts bringing the records of `keys` (about to be read or written) into the CPU cache, where the engine
    /// can: a batch of keys then costs about one cache miss instead of one or two each.
    fn prefetch(&self, _keys: &mut dyn Iterator<Item = StorageKey>) {}
    /// Applies all ops atomically: after a crash either all or none are visible.
    fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError>;
    /// A read-modify-write of one record, for a caller holding the key's lock: `write` sees the record (as
    /// [`Engine::read_with`] lends it) and queues the ops that follow from it, which are then applied as by
    /// [`Engine::apply`]; none queued, nothing is written. Returns whether any were. The RAM engines find the key
    /// once for both (a hash and a probe fewer on every replicated write).
    fn read_then_apply(
        &self,
        key: &[u8],
        write: &mut dyn FnMut(Option<&[u8]>, &mut Ops),
    ) -> Result<bool, StorageError> {
        let mut ops = Ops::new();
        self.read_with(key, &mut |bytes| write(bytes, &mut ops))?;
        if ops.is_empty() {
            return Ok(false);
        }
        self.apply(&ops)?;
        Ok(true)
    }
    /// Visits keys of `space` in order from `from` (inclusive) until `visit` breaks.
    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError>;
    /// Hands every applied batch to the OS, so it survives the process
    /// dying (not a power loss). Cheap when nothing is pending.
    fn flush(&self) -> Result<(), StorageError>;
    /// Whether applied batches wait in a buffer for `flush`: if not, callers
    /// skip flushing altogether.
    fn buffers_writes(&self) -> bool {
        false
    }
    /// Whether reads of recently written keys are answered from RAM by a hash probe (the disk engine's write
    /// buffer): a record cache in front then need not be told what writers wrote.
    fn keeps_recent_writes(&self) -> bool {
        false
    }
    /// Has `listener` told each record the engine moves out of RAM (`None` for a delete) before it stops
    /// answering [`Engine::read_recent`] for it, so a record cache can take it over. Engines that keep no recent
    /// writes apart ignore this.
    fn watch_ingested(&self, _listener: Arc<Ingested>) {}
    /// Calls `read` with a record written lately and returns true, where the engine holds it in RAM
    /// ([`Engine::keeps_recent_writes`]), or with `None` where it holds nothing older either, so the key is absent;
    /// returns false without calling it otherwise.
    fn read_recent(&self, _key: &[u8], _read: &mut dyn FnMut(Option<&[u8]>)) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Makes every applied batch durable (fsync). A no-op for RAM.
    fn sync(&self) -> Result<(), StorageError>;
    /// Removes everything (FLUSHALL).
    fn clear(&self) -> Result<(), StorageError>;
    /// True when a write may block for a while (the engine throttles writers
    /// while its background work catches up), so callers on an async worker
    /// should move it off the worker first.
    fn backpressure(&self) -> bool {
        false
    }
    /// Bytes used on disk, for INFO.
    fn disk_bytes(&self) -> u64;
    /// Largest key the engine stores (after the slot/db prefix).
    fn max_key_len(&self) -> usize;
}

/// The folders of `data_dir` the durable engines keep their files in.
const DISK_DIR: &str = "store";
const LOG_DIR: &str = "log";
const ENGINE_DIRS: [(EngineKind, &str); 2] = [(EngineKind::Disk, DISK_DIR), (EngineKind::Log, LOG_DIR)];

/// Opens the configured engine in `data_dir`.
pub fn open(config: &StorageConfig, data_dir: &Path) -> Result<Arc<dyn Engine>, StorageError> {
    if config.engine.is_durable() {
        for (other, dir) in ENGINE_DIRS {
            if other != config.engine && data_dir.join(dir).exists() {
                return Err(StorageError::OtherEngine(other.as_str()));
            }
        }
    }
    Ok(match config.engine {
        EngineKind::Disk => Arc::new(DiskEngine::open(
            &data_dir.join(DISK_DIR),
            config.cache_mb,
            config.memtable_mb,
        )?),
        EngineKind::Log => Arc::new(LogEngine::open(&data_dir.join(LOG_DIR))?),
        EngineKind::Memory => Arc::new(MemoryEngine::default()),
    })
}

/// Bytes before the user key in a storage key.
pub const KEY_PREFIX_LEN: usize = 3;

/// The storage key of `key` in database `db`, which lives in `slot`.
pub fn storage_key(slot: u16, db: u8, key: &[u8]) -> StorageKey {
    let len = KEY_PREFIX_LEN + key.len();
    let [high, low] = slot.to_be_bytes();
    // Most keys fit inline: written in place there, as `extend_from_slice` is a generic insert (callgrind: about
    // 80 instructions a key, several keys a command).
    let mut inline = [0u8; STORAGE_KEY_INLINE];
    match inline.get_mut(KEY_PREFIX_LEN..len) {
        Some(rest) => {
            rest.copy_from_slice(key);
            inline[..KEY_PREFIX_LEN].copy_from_slice(&[high, low, db]);
            StorageKey::from_buf_and_len(inline, len)
        }
        None => {
            let mut out = Vec::with_capacity(len);
            out.extend_from_slice(&[high, low, db]);
            out.extend_from_slice(key);
            StorageKey::from_vec(out)
        }
    }
}

/// Splits a storage key into (slot, db, user key); None for a malformed key.
pub fn split_storage_key(stored: &[u8]) -> Option<(u16, u8, &[u8])> {
    if stored.len() < KEY_PREFIX_LEN {
        return None;
    }
    let slot = u16::from_be_bytes([stored[0], stored[1]]);
    Some((slot, stored[2], &stored[KEY_PREFIX_LEN..]))
}

/// The expiry-index key for a record due at `at_ms`.
pub fn expiry_key(at_ms: u64, stored: &[u8]) -> StorageKey {
    let mut out = StorageKey::with_capacity(8 + stored.len());
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(stored);
    out
}

/// Splits an expiry-index key into (due time, storage key).
pub fn split_expiry_key(index_key: &[u8]) -> Option<(u64, &[u8])> {
    let (at, stored) = index_key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engines() -> Vec<(Box<dyn Engine>, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = DiskEngine::open(dir.path(), 8, 8).expect("open disk");
        let log_dir = tempfile::tempdir().expect("tempdir");
        let log = LogEngine::open(log_dir.path()).expect("open log");
        vec![
            (Box::new(MemoryEngine::default()), None),
            (Box::new(disk), Some(dir)),
            (Box::new(log), Some(log_dir)),
        ]
    }

    fn collect(engine: &dyn Engine, space: Space, from: &[u8]) -> Vec<StorageKey> {
        let mut keys = Vec::new();
        engine
            .scan(space, from, &mut |k, _| {
                keys.push(StorageKey::from_slice(k));
                ControlFlow::Continue(())
            })
            .expect("scan");
        keys
    }

    #[test]
    fn storage_keys_hold_slot_db_and_key_inline_or_not() {
        for len in [0, 1, 45, 46, 200] {
            let key: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let stored = storage_key(0x1234, 7, &key);
            assert_eq!(stored.spilled(), len > 45, "{len}");
            assert_eq!(&stored[..], [&[0x12, 0x34, 7][..], &key].concat());
            assert_eq!(split_storage_key(&stored), Some((0x1234, 7, &key[..])));
        }
    }

    #[test]
    fn engines_agree_on_put_get_delete_scan() {
        for (engine, _dir) in engines() {
            let a = storage_key(5, 0, b"a");
            let b = storage_key(5, 1, b"b");
            let c = storage_key(300, 0, b"c");
            engine
                .apply(&[
                    BatchOp::Put(Space::Records, c.clone(), bytes::Bytes::from_static(b"3")),
                    BatchOp::Put(Space::Records, a.clone(), bytes::Bytes::from_static(b"1")),
                    BatchOp::Put(Space::Records, b.clone(), bytes::Bytes::from_static(b"2")),
                    BatchOp::Put(Space::Expiry, expiry_key(10, &a), bytes::Bytes::new()),
                ])
                .expect("apply");
            assert_eq!(engine.get(&a).expect("get").as_deref(), Some(&b"1"[..]));
            assert_eq!(
                collect(&*engine, Space::Records, &[]),
                vec![a.clone(), b.clone(), c.clone()]
            );
            assert_eq!(collect(&*engine, Space::Records, &b), vec![b.clone(), c.clone()]);
            assert_eq!(collect(&*engine, Space::Expiry, &[]).len(), 1);
            engine
                .apply(&[BatchOp::Delete(Space::Records, b.clone())])
                .expect("delete");
            assert!(engine.get(&b).expect("get").is_none());
            engine.flush().expect("flush");
            engine.sync().expect("sync");
            engine.clear().expect("clear");
            assert!(collect(&*engine, Space::Records, &[]).is_empty());
            assert!(collect(&*engine, Space::Expiry, &[]).is_empty());
        }
    }

    #[test]
    fn a_read_then_apply_writes_what_it_queued_on_seeing_the_record_and_survives_a_reopen() {
        use bytes::Bytes;
        let (disk_dir, log_dir) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let open_disk = || Box::new(DiskEngine::open(disk_dir.path(), 8, 8).expect("open disk")) as Box<dyn Engine>;
        let open_log = || Box::new(LogEngine::open(log_dir.path()).expect("open log")) as Box<dyn Engine>;
        type Reopen<'a> = Option<&'a dyn Fn() -> Box<dyn Engine>>;
        let engines: [(Box<dyn Engine>, Reopen<'_>); 3] = [
            (Box::new(MemoryEngine::default()), None),
            (open_disk(), Some(&open_disk)),
            (open_log(), Some(&open_log)),
        ];
        // Two keys of one slot: one record map.
        let (a, b) = (storage_key(5, 0, b"a"), storage_key(5, 0, b"b"));
        let due = expiry_key(10, &a);
        for (engine, reopen) in engines {
            let step = |engine: &dyn Engine, saw: Option<&[u8]>, queue: Vec<BatchOp>| {
                let mut seen = None;
                let mut queue = Some(queue);
                let wrote = engine
                    .read_then_apply(&a, &mut |bytes, ops| {
                        seen = Some(bytes.map(<[u8]>::to_vec));
                        ops.extend(queue.take().into_iter().flatten());
                    })
                    .expect("read_then_apply");
                assert_eq!(seen, Some(saw.map(<[u8]>::to_vec)));
                wrote
            };
            engine
                .apply(&[BatchOp::Put(Space::Records, b.clone(), Bytes::from_static(b"b"))])
                .expect("apply");
            let put_a = |value: &'static [u8]| BatchOp::Put(Space::Records, a.clone(), Bytes::from_static(value));
            let first = vec![put_a(b"1"), BatchOp::Put(Space::Expiry, due.clone(), Bytes::new())];
            assert!(step(&*engine, None, first));
            assert_eq!(engine.get(&a).expect("get").as_deref(), Some(&b"1"[..]));
            assert_eq!(collect(&*engine, Space::Expiry, &[]), vec![due.clone()]);
            // A longer value (a new allocation) and the expiry gone.
            assert!(step(
                &*engine,
                Some(b"1"),
                vec![put_a(b"22"), BatchOp::Delete(Space::Expiry, due.clone())]
            ));
            assert!(!step(&*engine, Some(b"22"), vec![]));
            assert_eq!(engine.get(&a).expect("get").as_deref(), Some(&b"22"[..]));
            assert!(collect(&*engine, Space::Expiry, &[]).is_empty());
            // The key's own delete, and a write to another record of its map.
            let last = vec![
                BatchOp::Delete(Space::Records, a.clone()),
                BatchOp::Put(Space::Records, b.clone(), Bytes::from_static(b"bb")),
            ];
            assert!(step(&*engine, Some(b"22"), last));
            let state = |engine: &dyn Engine| {
                let get = |key: &StorageKey| engine.get(key).expect("get").map(|v| v.to_vec());
                (get(&a), get(&b), collect(engine, Space::Expiry, &[]).len())
            };
            assert_eq!(state(&*engine), (None, Some(b"bb".to_vec()), 0));
            if let Some(reopen) = reopen {
                engine.flush().expect("flush");
                drop(engine);
                assert_eq!(state(&*reopen()), (None, Some(b"bb".to_vec()), 0));
            }
        }
    }

    #[test]
    fn a_durable_engine_refuses_a_data_dir_of_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = |engine| StorageConfig {
            engine,
            ..StorageConfig::default()
        };
        drop(open(&config(EngineKind::Disk), dir.path()).expect("disk"));
        let refused = open(&config(EngineKind::Log), dir.path()).err();
        assert!(matches!(refused, Some(StorageError::OtherEngine("disk"))));
        // The memory engine keeps nothing, so it may run there.
        open(&config(EngineKind::Memory), dir.path()).expect("memory");
        let other = tempfile::tempdir().expect("tempdir");
        drop(open(&config(EngineKind::Log), other.path()).expect("log"));
        let refused = open(&config(EngineKind::Disk), other.path()).err();
        assert!(matches!(refused, Some(StorageError::OtherEngine("log"))));
    }

    #[test]
    fn key_layout_round_trips() {
        let stored = storage_key(16383, 7, b"\x00bin\xff");
        assert_eq!(split_storage_key(&stored), Some((16383, 7, &b"\x00bin\xff"[..])));
        let idx = expiry_key(1234, &stored);
        assert_eq!(split_expiry_key(&idx), Some((1234, &stored[..])));
        assert_eq!(split_storage_key(b"x"), None);
    }
}
