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
use smallvec::SmallVec;

use super::messages::{KeyCopy, Written};
use super::ring::MemberIndex;
use crate::replica::{KeyAt, Replica};
use crate::version::Basis;

tokio::task_local! {
    static FORWARDER: Forwarder;
}

/// The member that forwarded the command this task runs, and what it sent and gets back.
struct Forwarder {
    member: MemberIndex,
    db: u8,
    /// Keys whose copy the forwarder sent and this node merged.
    keys: SentKeys,
    handed: RefCell<Vec<Written>>,
}

/// Keys the forwarder sent copies of: looked through in turn when few (a forwarded command names one key or a few,
/// and a set cost an allocation and a hash per command: callgrind), a set when many (MSET of one hash tag has
/// thousands).
enum SentKeys {
    Few(SmallVec<[Bytes; FEW_KEYS]>),
    Many(AHashSet<Bytes>),
}

/// Up to this many keys are looked through in turn.
const FEW_KEYS: usize = 4;

impl SentKeys {
    fn with_capacity(n: usize) -> SentKeys {
        match n <= FEW_KEYS {
            true => SentKeys::Few(SmallVec::new()),
            false => SentKeys::Many(AHashSet::with_capacity(n)),
        }
    }

    fn insert(&mut self, key: Bytes) {
        match self {
            SentKeys::Few(keys) => keys.push(key),
            SentKeys::Many(keys) => {
                keys.insert(key);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            SentKeys::Few(keys) => keys.len(),
            SentKeys::Many(keys) => keys.len(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            SentKeys::Few(keys) => keys.is_empty(),
            SentKeys::Many(keys) => keys.is_empty(),
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        match self {
            SentKeys::Few(keys) => keys.iter().any(|sent| sent == key),
            SentKeys::Many(keys) => keys.contains(key),
        }
    }
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
    let mut keys = SentKeys::with_capacity(copies.len());
    for copy in copies {
        let merged = match &copy.record {
            None => true,
            Some(record) => local
                .merge_encoded(KeyAt::new(db, &copy.key), record, None)
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
    // A record per key sent, as a rule: sized for them, not grown to them (callgrind).
    let handed = RefCell::new(Vec::with_capacity(keys.len()));
    let forwarder = Forwarder {
        member: from,
        db,
        keys,
        handed,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Few keys are looked through and many hashed; either way exactly the keys sent are found.
    #[test]
    fn sent_keys_hold_exactly_what_was_inserted() {
        for n in [0, 1, FEW_KEYS, FEW_KEYS + 1, 300] {
            let mut keys = SentKeys::with_capacity(n);
            for i in 0..n {
                keys.insert(Bytes::from(format!("{{tag}}k{i}")));
            }
            assert_eq!(keys.is_empty(), n == 0, "{n} keys");
            assert!(
                (0..n).all(|i| keys.contains(format!("{{tag}}k{i}").as_bytes())),
                "{n} keys"
            );
            assert!(!keys.contains(format!("{{tag}}k{n}").as_bytes()), "{n} keys");
            assert!(!keys.contains(b""), "{n} keys");
        }
    }
}
