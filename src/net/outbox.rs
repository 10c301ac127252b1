//! The queue between the tasks that produce messages for a connection and that connection's writer.
//!
//! A short parking_lot lock guards a `Vec`; the writer swaps it out whole, so one wake-up drains everything queued
//! since the last write and, once warm, neither side allocates.

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Messages waiting for one connection's writer.
pub(crate) struct Outbox<T> {
    state: Mutex<State<T>>,
    ready: Notify,
}

struct State<T> {
    items: Vec<T>,
    closed: bool,
}

impl<T> Outbox<T> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    /// Queues `item`, or hands it back if the connection is gone.
    pub(crate) fn push(&self, item: T) -> Result<(), T> {
        let was_empty = {
            let mut state = self.state.lock();
            if state.closed {
                return Err(item);
            }
            state.items.push(item);
            state.items.len() == 1
        };
        // Only the push that makes the queue non-empty wakes the writer: it takes everything when it runs, and
        // `notify_one` keeps a permit if it is not waiting yet.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Completes when something may have been queued since the last `take`.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Moves everything queued into `batch` (which must be empty), leaving `batch`'s old allocation in its place.
    pub(crate) fn take(&self, batch: &mut Vec<T>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.state.lock().items, batch);
    }

    /// Refuses further pushes and drops what is queued.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: items may own senders whose drop wakes other tasks.
        drop(dropped);
    }
}
