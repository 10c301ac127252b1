//! A forwarder that is itself a replica of the keys it forwards acts as one without messages of its own.
//!
//! Sent on their own, a forwarded write costs the coordinator a read of the forwarder's copy (for
//! read-modify-write commands), a merge to it and its ack: four messages on top of the forward and its reply.
//! Instead the forwarder sends its copies with the command, and the coordinator hands the records it writes back
//! in the reply; the forwarder stores them before it answers the client, so its copy still counts towards W.
//!
//! Nothing is lost against the plain exchange: the copies are merged into the coordinator's before the command
//! runs, so its new versions cover everything the forwarder held, as a read or a `Diverged` ack would have told
//! it. If the other replicas cannot make up the rest of W, the coordinator merges to the forwarder the usual way,
//! so a quorum failure counts exactly as before.
//!
//! The forwarder of the command being run is a task-local: a forwarded command runs in one task on the
//! coordinator, and the coordinator's paths consult it where they would otherwise talk to that member.

use std::cell::RefCell;
use std::future::Future;

use ahash::AHashSet;
use bytes::Bytes;

use super::messages::{KeyCopy, Written};
use super::ring::MemberIndex;
use crate::replica::Replica;
use crate::version::Basis;

tokio::task_local! {
    static FORWARDER: Forwarder;
}

/// The member that forwarded the command this task runs, and what it sent and gets back.
struct Forwarder {
    member: MemberIndex,
    db: u8,
    /// Keys whose copy the forwarder sent and this node merged (a set: MSET of one hash tag has thousands).
    keys: AHashSet<Bytes>,
    handed: RefCell<Vec<Written>>,
}

/// Runs `command` (forwarded by `from` with its `copies` of keys in `db`) with `from` as the forwarder; returns its
/// reply and the records to hand back.
pub async fn serve<T>(
    local: &Replica,
    from: MemberIndex,
    db: u8,
    copies: Vec<KeyCopy>,
    command: impl Future<Output = T>,
) -> (T, Vec<Written>) {
    let mut keys = AHashSet::with_capacity(copies.len());
    for copy in copies {
        let merged = match &copy.record {
            None => true,
            Some(record) => local
                .merge_encoded(db, &copy.key, record, None)
                .map_err(|e| tracing::warn!("merging a forwarder's copy failed: {e}"))
                .is_ok(),
        };
        if merged {
            keys.insert(copy.key);
        }
    }
    if keys.is_empty() {
        return (command.await, Vec::new());
    }
    let forwarder = Forwarder {
        member: from,
        db,
        keys,
        handed: RefCell::new(Vec::new()),
    };
    FORWARDER
        .scope(forwarder, async {
            let out = command.await;
            (out, FORWARDER.with(|f| f.handed.take()))
        })
        .await
}

/// The forwarder of the running command, if it is in `list` and sent its copy of `key`: its answer is in hand.
pub fn forwarder_of(db: u8, key: &[u8], list: &[MemberIndex]) -> Option<MemberIndex> {
    FORWARDER
        .try_with(|f| {
            let sent = f.db == db && list.contains(&f.member) && f.keys.contains(key);
            sent.then_some(f.member)
        })
        .ok()
        .flatten()
}

/// Queues `record`, just written for `key` over `basis`, for the forwarder. A rewrite of the key just queued (a SET
/// written again over versions a replica reported) replaces it.
pub fn hand_back(db: u8, key: &[u8], record: Bytes, basis: Option<Basis>) {
    let _ = FORWARDER.try_with(|f| {
        let mut handed = f.handed.borrow_mut();
        if handed.last().is_some_and(|h| h.db == db && h.key == key) {
            handed.pop();
        }
        handed.push(Written {
            db,
            key: Bytes::copy_from_slice(key),
            record,
            basis,
        });
    });
}
