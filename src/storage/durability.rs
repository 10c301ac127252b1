//! When acknowledged writes are fsynced, like Redis `appendfsync`.
//!
//! Every write reaches the OS before it is acknowledged ([`Durability::before_reply`]),
//! so all modes survive `kill -9`. On top of that:
//! - `always`: a connection waits, before sending the replies of a batch of
//!   commands, until a sync that started after its last write has finished. One
//!   sync thread serves every waiting connection at once (group commit), so the
//!   cost of an fsync is shared by everything written meanwhile.
//! - `everysec`: the same thread syncs once a second if anything was written.
//! - `no`: nothing; the OS flushes when it likes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::Engine;
use crate::config::FsyncMode;

/// Sequence numbers of writes made and writes made durable.
pub struct Durability {
    mode: FsyncMode,
    engine: Arc<dyn Engine>,
    /// Sequence number of the last write applied to the engine.
    written: AtomicU64,
    /// Highest write sequence known to be handed to the OS.
    flushed: AtomicU64,
    /// Highest write sequence known to be fsynced.
    synced: watch::Sender<u64>,
    /// Wakes the sync thread in `always` mode.
    wanted: Mutex<bool>,
    wake: Condvar,
}

impl Durability {
    /// Starts the sync thread the mode needs.
    pub fn start(mode: FsyncMode, engine: Arc<dyn Engine>) -> Arc<Durability> {
        let durability = Arc::new(Durability {
            mode,
            engine,
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            synced: watch::channel(0).0,
            wanted: Mutex::new(false),
            wake: Condvar::new(),
        });
        if mode != FsyncMode::No {
            let weak = Arc::downgrade(&durability);
            std::thread::Builder::new()
                .name("ringkv-fsync".into())
                .spawn(move || sync_loop(weak, mode))
                .map_err(|e| tracing::error!("cannot start fsync thread: {e}"))
                .ok();
        }
        durability
    }

    /// Records that a write was applied.
    pub fn note_write(&self) {
        self.written.fetch_add(1, Ordering::AcqRel);
    }

    /// Sequence number of the newest applied write.
    pub fn last_write(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Called before replies to writes are sent: in `always` mode waits until
    /// everything written so far is fsynced; otherwise hands it to the OS.
    pub async fn before_reply(&self) -> Result<(), super::StorageError> {
        if self.mode != FsyncMode::Always {
            return self.flush_shared().await;
        }
        let seq = self.last_write();
        if seq == 0 || *self.synced.borrow() >= seq {
            return Ok(());
        }
        let mut synced = self.synced.subscribe();
        {
            let mut wanted = self.wanted.lock();
            *wanted = true;
            self.wake.notify_one();
        }
        // The sender lives as long as self, which the caller borrows.
        let _ = synced.wait_for(|done| *done >= seq).await;
        Ok(())
    }

    /// Hands everything written so far to the OS, in one `write(2)` shared by
    /// every connection that wrote meanwhile: it first lets the other ready
    /// tasks run (they add their writes, then find them covered by this flush).
    /// Unpipelined clients otherwise cost one `write(2)` per command per node.
    async fn flush_shared(&self) -> Result<(), super::StorageError> {
        if !self.engine.buffers_writes() {
            return Ok(());
        }
        let seq = self.last_write();
        if self.flushed.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        tokio::task::yield_now().await;
        if self.flushed.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        // Everything noted by now is in the engine's buffer, so the flush covers it.
        let target = self.last_write();
        self.engine.flush()?;
        self.flushed.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Waits (briefly, so the thread notices shutdown) for a connection to
    /// ask for a sync; true if one did.
    fn take_request(&self) -> bool {
        let mut wanted = self.wanted.lock();
        if !*wanted {
            self.wake.wait_for(&mut wanted, Duration::from_millis(200));
        }
        std::mem::take(&mut *wanted)
    }

    /// Syncs everything now (shutdown, SAVE); errors are logged and returned.
    pub fn sync_now(&self) -> Result<(), super::StorageError> {
        let target = self.last_write();
        self.engine.sync()?;
        self.synced.send_if_modified(|done| {
            let advanced = target > *done;
            *done = (*done).max(target);
            advanced
        });
        Ok(())
    }
}

/// The fsync thread. It holds the node only while working, so it ends
/// when the node is gone.
fn sync_loop(durability: std::sync::Weak<Durability>, mode: FsyncMode) {
    loop {
        if mode != FsyncMode::Always {
            std::thread::sleep(Duration::from_secs(1));
        }
        let Some(d) = durability.upgrade() else {
            return;
        };
        let due = match mode {
            FsyncMode::Always => d.take_request(),
            _ => d.last_write() > *d.synced.borrow(),
        };
        if !due {
            continue;
        }
        if let Err(e) = d.sync_now() {
            tracing::error!("fsync failed, retrying: {e}");
            if mode == FsyncMode::Always {
                // Waiters keep waiting: nothing is acknowledged that is not on disk.
                *d.wanted.lock() = true;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::storage::{BatchOp, MemoryEngine, Space, StorageError, Value, Visitor};

    /// The memory engine, but with a write buffer whose flushes are counted.
    #[derive(Default)]
    struct CountingEngine {
        inner: MemoryEngine,
        flushes: AtomicUsize,
    }

    impl Engine for CountingEngine {
        fn get(&self, key: &[u8]) -> Result<Option<Value>, StorageError> {
            self.inner.get(key)
        }
        fn apply(&self, ops: &[BatchOp]) -> Result<(), StorageError> {
            self.inner.apply(ops)
        }
        fn scan(&self, space: Space, from: &[u8], visit: &mut Visitor<'_>) -> Result<(), StorageError> {
            self.inner.scan(space, from, visit)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn buffers_writes(&self) -> bool {
            true
        }
        fn sync(&self) -> Result<(), StorageError> {
            Ok(())
        }
        fn clear(&self) -> Result<(), StorageError> {
            self.inner.clear()
        }
        fn disk_bytes(&self) -> u64 {
            0
        }
        fn max_key_len(&self) -> usize {
            self.inner.max_key_len()
        }
    }

    /// Connections that wrote in the same round of the scheduler share one flush; one that finds its write flushed
    /// already flushes nothing; a later write is flushed again.
    #[tokio::test(flavor = "current_thread")]
    async fn connections_that_wrote_together_share_one_flush() {
        let engine = Arc::new(CountingEngine::default());
        let durability = Durability::start(FsyncMode::No, engine.clone());
        let connections: Vec<_> = (0..10)
            .map(|_| {
                let durability = durability.clone();
                tokio::spawn(async move {
                    durability.note_write();
                    durability.before_reply().await
                })
            })
            .collect();
        for connection in connections {
            connection.await.expect("task").expect("flush");
        }
        assert_eq!(engine.flushes.load(Ordering::SeqCst), 1);
        durability.before_reply().await.expect("flush");
        assert_eq!(engine.flushes.load(Ordering::SeqCst), 1, "nothing new was written");
        durability.note_write();
        durability.before_reply().await.expect("flush");
        assert_eq!(engine.flushes.load(Ordering::SeqCst), 2);
    }
}
