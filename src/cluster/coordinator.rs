//! The coordinator: where a key operation runs and how many replicas must
//! answer. Commands call only this, never a replica, so replication slots in
//! here without touching them.
//!
//! Today every node is a cluster of one (N = R = W = 1): every slot's
//! preference list is this node, so each operation runs on the local replica.
//! The methods are async because with N > 1 they wait for peers.

use std::sync::Arc;

use crate::error::CommandResult;
use crate::replica::{Current, Mutation, RecordVisitor, Replica};
use crate::version::Record;

/// Routes key operations to replicas and collects quorums.
pub struct Coordinator {
    local: Arc<Replica>,
}

impl Coordinator {
    /// A coordinator over the local replica.
    pub fn new(local: Arc<Replica>) -> Coordinator {
        Coordinator { local }
    }

    /// The local replica (INFO, durability waits, expiry sweep).
    pub fn local(&self) -> &Arc<Replica> {
        &self.local
    }

    /// The merged record of `key` from R replicas.
    pub async fn read(&self, db: u8, key: &[u8]) -> CommandResult<Option<Arc<Record>>> {
        self.local.read(db, key)
    }

    /// A read-modify-write of one key at its coordinating replica, acknowledged by W replicas.
    pub async fn update<T>(
        &self,
        db: u8,
        key: &[u8],
        decide: impl FnOnce(Current<'_>) -> CommandResult<(Mutation, T)>,
    ) -> CommandResult<T> {
        self.local.update(db, key, decide)
    }

    /// A read-modify-write of several keys, atomic when they share a coordinator.
    pub async fn update_many<T>(
        &self,
        db: u8,
        keys: &[&[u8]],
        decide: impl FnOnce(&[Current<'_>]) -> CommandResult<(Vec<Mutation>, T)>,
    ) -> CommandResult<T> {
        self.local.update_many(db, keys, decide)
    }

    /// Visits every key of `db` once, in slot order from `from_slot`.
    pub async fn scan(&self, db: u8, from_slot: u16, visit: &mut RecordVisitor<'_>) -> CommandResult<()> {
        self.local.scan(db, from_slot, visit)
    }

    /// FLUSHDB (`Some(db)`) or FLUSHALL (`None`) on every node.
    pub async fn flush(&self, db: Option<u8>) -> CommandResult<()> {
        self.local.flush(db)
    }
}
