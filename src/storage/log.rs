//! The `log` engine: every record in RAM (the memory engine), every change
//! appended to a log file first, as Redis's `appendonly yes` does. A restart
//! reads the newest snapshot and the logs after it.
//!
//! Files in `<data dir>/log/`: `N.log` (changes) and `N.snap` (every entry,
//! taken just after log `N` was started). When the logs since the snapshot
//! outgrow it (and a minimum), a background thread rewrites: it starts log
//! `N+1`, writes snapshot `N+1` from the maps while writers go on, and then
//! deletes the older files. Every change records a key's whole new value, so
//! replaying log `N+1` over a snapshot that already holds some of its changes
//! ends in the same state.
//!
//! The change order in the log is the order changes reach the maps (both
//! happen under one lock), so FLUSHALL racing a write replays as it ran.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::journal::{self, file_path, numbered_files, remove_before, sync_dir, Journal, PENDING_MAX};
use super::log_frame::{self, Change, FrameBuilder};
use super::memory::Entry;
use super::{BatchOp, Engine, MemoryEngine, Ops, Space, StorageError, StorageKey, Value, Visitor};

/// Logs since the snapshot are rewritten once they pass this many bytes and
/// the snapshot's size (Redis: auto-aof-rewrite-min-size 64mb, percentage 100).
pub const REWRITE_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// A snapshot frame is closed at about this size.
const SNAPSHOT_FRAME: usize = 1 << 20;

/// RAM maps with an append-only log in front.
pub struct LogEngine {
    shared: Arc<Shared>,
}

struct Shared {
    ram: MemoryEngine,
    dir: PathBuf,
    /// The logs since the snapshot; a rewrite rotates it.
    journal: Journal,
    /// The snapshot's size.
    snapshot: AtomicU64,
    /// Set while a rewrite thread runs; it clears this only after letting go
    /// of the engine (so the data dir's lock is free once this is false).
    rewriting: Arc<AtomicBool>,
    rewrite_min: u64,
    /// Held (locked) while the engine is open: one process per data dir.
    _lock: File,
}

impl LogEngine {
    /// Opens (or creates) the engine in `dir`, loading what its files hold.
    pub fn open(dir: &Path) -> Result<LogEngine, StorageError> {
        Self::open_with(dir, REWRITE_MIN_BYTES)
    }

    /// As [`LogEngine::open`], rewriting from `rewrite_min` bytes of log.
    pub fn open_with(dir: &Path, rewrite_min: u64) -> Result<LogEngine, StorageError> {
        std::fs::create_dir_all(dir)?;
        let lock = File::create(dir.join("LOCK"))?;
        lock.try_lock().map_err(|_| StorageError::Locked)?;
        let ram = MemoryEngine::default();
        let files = Files::list(dir)?;
        let mut snapshot = 0;
        if let Some(number) = files.snapshot {
            let path = file_path(dir, number, "snap");
            let end = log_frame::replay(&path, &mut |change| load(&ram, change))?;
            if end.torn {
                // Snapshots are fsynced before they are named: this is damage.
                tracing::error!("snapshot {} is damaged at byte {}", path.display(), end.valid_len);
                return Err(StorageError::Corrupt);
            }
            snapshot = end.valid_len;
        }
        let fresh = files.snapshot.unwrap_or(1);
        let journal = Journal::open(dir, &files.logs, fresh, &mut |change| load(&ram, change))?;
        Ok(LogEngine {
            shared: Arc::new(Shared {
                ram,
                dir: dir.to_owned(),
                journal,
                snapshot: AtomicU64::new(snapshot),
                rewriting: Arc::new(AtomicBool::new(false)),
                rewrite_min,
                _lock: lock,
            }),
        })
    }

    /// Rewrites now, on this thread; for tests.
    #[cfg(test)]
    fn rewrite_now(&self) -> Result<(), StorageError> {
        assert!(!self.shared.rewriting.swap(true, Ordering::AcqRel), "a rewrite runs");
        let result = self.shared.rewrite();
        self.shared.rewriting.store(false, Ordering::Release);
        result
    }
}

/// Applies one change read from a file to the maps.
fn load(ram: &MemoryEngine, change: Change<'_>) {
    match change {
        Change::Put(space, key, value) => {
            ram.put(space, key, value);
        }
        Change::Delete(space, key) => ram.remove(space, key),
        Change::Clear => {
            let _ = ram.clear();
        }
    }
}

/// The numbered files of a log directory.
struct Files {
    snapshot: Option<u64>,
    /// Logs at or after the snapshot, in order.
    logs: Vec<u64>,
}

impl Files {
    /// Lists `dir`, deleting what a finished rewrite or a crash left behind:
    /// unfinished snapshots, and files older than the newest snapshot.
    fn list(dir: &Path) -> Result<Files, StorageError> {
        let mut snapshots = Vec::new();
        let mut logs = Vec::new();
        for (path, number, ext) in numbered_files(dir)? {
            match (number, ext.as_str()) {
                (Some(n), "snap") => snapshots.push(n),
                (Some(n), "log") => logs.push(n),
                (_, "tmp") => std::fs::remove_file(&path)?,
                _ => {}
            }
        }
        let snapshot = snapshots.iter().copied().max();
        let first = snapshot.unwrap_or(0);
        remove_before(dir, first)?;
        logs.retain(|&n| n >= first);
        logs.sort_unstable();
        Ok(Files { snapshot, logs })
    }
}

impl Shared {
    fn rewrite_due(&self, log: &journal::ActiveLog) -> bool {
        log.since_rotation >= self.rewrite_min && log.since_rotation >= self.snapshot.load(Ordering::Relaxed)
    }

    /// Starts log `N+1`, snapshots the maps as `N+1.snap`, then deletes the
    /// files before it.
    fn rewrite(&self) -> Result<(), StorageError> {
        // Changes after the cut are in log N+1 and, maybe, in the snapshot too: replaying them over it ends the same.
        let (number, ()) = self.journal.rotate(|_| {})?;
        let tmp = file_path(&self.dir, number, "snap.tmp");
        let size = self.write_snapshot(&tmp)?;
        std::fs::rename(&tmp, file_path(&self.dir, number, "snap"))?;
        sync_dir(&self.dir)?;
        self.snapshot.store(size, Ordering::Relaxed);
        remove_before(&self.dir, number)?;
        tracing::info!("log rewritten: snapshot {number} holds {size} bytes");
        Ok(())
    }

    /// Writes every entry to `path`, a record map at a time, and fsyncs it.
    fn write_snapshot(&self, path: &Path) -> Result<u64, StorageError> {
        let mut file = File::create(path)?;
        let mut out = Vec::with_capacity(SNAPSHOT_FRAME * 2);
        let mut size = 0u64;
        let mut emit = |out: &mut Vec<u8>, file: &mut File| -> Result<(), StorageError> {
            file.write_all(out)?;
            size += out.len() as u64;
            out.clear();
            Ok(())
        };
        for index in 0..self.ram.map_count() {
            let entries = |entries: &mut dyn Iterator<Item = &Entry>| {
                encode_puts(&mut out, Space::Records, entries.map(|e| (e.key(), e.value())));
            };
            self.ram.with_map(index, entries);
            if out.len() >= SNAPSHOT_FRAME {
                emit(&mut out, &mut file)?;
            }
        }
        self.ram
            .with_expiry(|entries| encode_puts(&mut out, Space::Expiry, entries));
        emit(&mut out, &mut file)?;
        file.sync_all()?;
        Ok(size)
    }
}

/// Appends puts of `entries` as frames of about [`SNAPSHOT_FRAME`] bytes, so
/// loading reads a bounded payload at a time however many keys a slot holds.
fn encode_puts<'a>(out: &mut Vec<u8>, space: Space, entries: impl Iterator<Item = (&'a [u8], &'a [u8])>) {
    let mut frame = FrameBuilder::new(out);
    for (key, value) in entries {
        if frame.len() >= SNAPSHOT_FRAME {
            frame.finish();
            frame = FrameBuilder::new(out);
        }
        frame.put(space, key, value);
    }
    frame.finish();
}

impl LogEngine {
    /// Runs `change` under the journal's pending lock (frames and maps change in one order), then writes the
    /// pending frames out once they pass [`PENDING_MAX`].
    fn journaled<R>(&self, change: impl FnOnce(&mut Vec<u8>) -> Result<R, StorageError>) -> Result<R, StorageError> {
        let (out, full) = {
            let mut pending = self.shared.journal.pending();
            let out = change(&mut pending)?;
            (out, pending.len() >= PENDING_MAX)
        };
        if full {
            self.flush()?;
        }
        Ok(out)
    }
}

/// Appends one frame holding `ops` to the pending journal bytes.
fn frame_ops(pending: &mut Vec<u8>, ops: &[BatchOp]) {
    let mut frame = FrameBuilder::new(pending);
    frame.batch(ops);
    frame.finish();
}

impl Engine for LogEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
        self.shared.ram.get(key)
    }

    fn read_with(&self, key: &[u8], read: &mut dyn FnMut(Option<&[u8]>)) -> Result<(), StorageError> {
        self.shared.ram.read_with(key, read)
    }

    fn prefetch(&self, keys: &mut dyn Iterator<Item = StorageKey>) {
        self.shared.ram.prefetch(keys)
    }

    fn read_then_apply(
        &self,
        key: &[u8],
        write: &mut dyn FnMut(Option<&[u8]>, &mut Ops),
    ) -> Result<bool, StorageError> {
        self.journaled(|pending| Ok(self.shared.ram.rewrite(key, write, |ops| frame_ops(pending, ops))))
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
        self.journaled(|pending| {
            frame_ops(pending, ops);
            self.shared.ram.apply(ops)
        })
    }

    fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
        self.shared.ram.scan(space, from, visit)
    }

    fn flush(&self) -> Result<(), StorageError> {
        let log = self.shared.journal.write_pending()?;
        if self.shared.rewrite_due(&log) && !self.shared.rewriting.swap(true, Ordering::AcqRel) {
            let (shared, rewriting) = (self.shared.clone(), self.shared.rewriting.clone());
            let spawned = std::thread::Builder::new()
                .name("ringkv-rewrite".into())
                .spawn(move || {
                    if let Err(e) = shared.rewrite() {
                        tracing::error!("log rewrite failed (the logs are kept; retrying later): {e}");
                    }
                    drop(shared);
                    rewriting.store(false, Ordering::Release);
                });
            if let Err(e) = spawned {
                tracing::error!("cannot start the log rewrite: {e}");
                self.shared.rewriting.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    fn buffers_writes(&self) -> bool {
        true
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.shared.journal.sync()
    }

    fn clear(&self) -> Result<(), StorageError> {
        let mut pending = self.shared.journal.pending();
        let mut frame = FrameBuilder::new(&mut pending);
        frame.clear();
        frame.finish();
        self.shared.ram.clear()
    }

    fn disk_bytes(&self) -> u64 {
        self.shared.snapshot.load(Ordering::Relaxed) + self.shared.journal.since_rotation()
    }

    fn max_key_len(&self) -> usize {
        self.shared.ram.max_key_len()
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::storage::{storage_key, StorageKey};
    use bytes::Bytes;

    fn put(engine: &LogEngine, key: &[u8], value: &[u8]) {
        engine
            .apply(&[BatchOp::Put(
                Space::Records,
                StorageKey::from_slice(key),
                Bytes::copy_from_slice(value),
            )])
            .expect("apply");
    }

    fn contents(engine: &LogEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut seen = Vec::new();
        engine
            .scan(Space::Records, &[], &mut |k, v| {
                seen.push((k.to_vec(), v.to_vec()));
                ControlFlow::Continue(())
            })
            .expect("scan");
        seen
    }

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn flushed_changes_survive_a_reopen_and_unflushed_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (storage_key(1, 0, b"a"), storage_key(2, 0, b"b"));
        {
            let engine = LogEngine::open(dir.path()).expect("open");
            put(&engine, &a, b"1");
            put(&engine, &b, b"2");
            engine
                .apply(&[BatchOp::Delete(Space::Records, b.clone())])
                .expect("delete");
            engine.clear().expect("clear");
            put(&engine, &a, b"3");
            engine.flush().expect("flush");
            put(&engine, &b, b"never flushed");
        }
        let engine = LogEngine::open(dir.path()).expect("reopen");
        assert_eq!(contents(&engine), vec![(a.to_vec(), b"3".to_vec())]);
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = LogEngine::open(dir.path()).expect("open");
        assert!(matches!(LogEngine::open(dir.path()), Err(StorageError::Locked)));
    }

    #[test]
    fn a_torn_last_frame_is_cut_and_writing_goes_on_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (storage_key(1, 0, b"a"), storage_key(1, 0, b"b"));
        {
            let engine = LogEngine::open(dir.path()).expect("open");
            put(&engine, &a, b"kept");
            engine.flush().expect("flush");
        }
        let log = dir.path().join(&log_files(dir.path())[0]);
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).expect("open log");
        file.write_all(&[9, 0, 0, 0, 0, 0, 0, 0, 1, 2])
            .expect("write torn frame");
        drop(file);
        {
            let engine = LogEngine::open(dir.path()).expect("reopen");
            assert_eq!(contents(&engine), vec![(a.to_vec(), b"kept".to_vec())]);
            put(&engine, &b, b"after");
            engine.sync().expect("sync");
        }
        let engine = LogEngine::open(dir.path()).expect("reopen again");
        assert_eq!(
            contents(&engine),
            vec![(a.to_vec(), b"kept".to_vec()), (b.to_vec(), b"after".to_vec())]
        );
    }

    #[test]
    fn a_rewrite_keeps_everything_and_leaves_one_snapshot_and_one_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys: Vec<StorageKey> = (0..500u16)
            .map(|i| storage_key(i * 31 % 16384, 0, &i.to_be_bytes()))
            .collect();
        let expected = {
            let engine = LogEngine::open_with(dir.path(), u64::MAX).expect("open");
            for round in 0..3u8 {
                for key in &keys {
                    put(&engine, key, &[round; 10]);
                }
                engine
                    .apply(&[BatchOp::Put(
                        Space::Expiry,
                        StorageKey::from_slice(&[round]),
                        Bytes::new(),
                    )])
                    .expect("expiry");
                engine.flush().expect("flush");
                engine.rewrite_now().expect("rewrite");
            }
            // Changes after the last rewrite land in the new log.
            engine
                .apply(&[BatchOp::Delete(Space::Records, keys[0].clone())])
                .expect("delete");
            engine.flush().expect("flush");
            contents(&engine)
        };
        assert_eq!(expected.len(), keys.len() - 1);
        let engine = LogEngine::open(dir.path()).expect("reopen");
        assert_eq!(contents(&engine), expected);
        let mut expiry = Vec::new();
        engine
            .scan(Space::Expiry, &[], &mut |k, _| {
                expiry.push(k.to_vec());
                ControlFlow::Continue(())
            })
            .expect("scan expiry");
        assert_eq!(expiry, vec![vec![0], vec![1], vec![2]]);
        let files = log_files(dir.path());
        assert_eq!(
            files,
            vec![format!("{:020}.log", 4), format!("{:020}.snap", 4)],
            "one snapshot and the log after it"
        );
    }

    #[test]
    fn a_flush_starts_a_rewrite_once_the_log_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = LogEngine::open_with(dir.path(), 4096).expect("open");
        for i in 0..100u16 {
            put(&engine, &storage_key(i, 0, b"k"), &[1; 100]);
        }
        engine.flush().expect("flush");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while engine.shared.rewriting.load(Ordering::Acquire) || engine.shared.snapshot.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no rewrite: {:?}",
                log_files(dir.path())
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            log_files(dir.path()),
            vec![format!("{:020}.log", 2), format!("{:020}.snap", 2)]
        );
        drop(engine);
        let engine = LogEngine::open(dir.path()).expect("reopen");
        assert_eq!(contents(&engine).len(), 100);
    }
}
