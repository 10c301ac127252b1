//! A record as a quorum read found it: a replica's stored bytes, decoded only for a command that needs more than
//! its live values. GET, MGET, EXISTS and TYPE answer from the bytes in place ([`StoredSiblings`]) and
//! reply with slices of them. Decoding the entry node's own copy of each key had been about 1,200 of its 7,700
//! instructions per pipelined GET (callgrind), with allocations for the record, its vectors and its value; the other
//! replicas' copies are compared with it byte for byte, not decoded, when they are equal.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::ConflictMode;
use crate::replica::Current;
use crate::storage::StorageError;
use crate::version::{Record, StoredSiblings};

/// A key's record from a read.
#[derive(Debug, Clone)]
pub enum Found {
    /// Decoded already: a cache's record, a merge of differing copies, a single node's read.
    Decoded(Arc<Record>),
    /// The canonical bytes a replica stored.
    Stored(Bytes),
}

/// What a read presents of a record at one moment ([`Current::of`]'s rule).
#[derive(Debug, PartialEq)]
pub enum Presented {
    /// No live value.
    Missing,
    /// One live value, or the last writer's among several under `conflicts = "lww"`.
    One(Bytes),
    /// Every concurrent live value, in dot order.
    Many(Vec<Bytes>),
}

impl Found {
    /// The record, decoded if it was not.
    pub fn record(&self) -> Result<Arc<Record>, StorageError> {
        match self {
            Found::Decoded(record) => Ok(record.clone()),
            Found::Stored(bytes) => Record::decode(bytes).map(Arc::new).ok_or(StorageError::Corrupt),
        }
    }

    /// Whether the record holds a live value at `now_ms`.
    pub fn has_live(&self, now_ms: u64) -> Result<bool, StorageError> {
        match self {
            Found::Decoded(record) => Ok(record.live(now_ms).next().is_some()),
            Found::Stored(bytes) => Ok(view(bytes)?.live(now_ms).next().is_some()),
        }
    }

    /// The live values a read answers at `now_ms`.
    pub fn presented(&self, now_ms: u64, conflicts: ConflictMode) -> Result<Presented, StorageError> {
        let record = match self {
            Found::Decoded(record) => record,
            Found::Stored(bytes) => return presented_in_place(bytes, now_ms, conflicts),
        };
        let value = |value: &Option<Bytes>| value.clone().unwrap_or_default();
        Ok(match Current::of(record, now_ms, conflicts) {
            Current::Missing => Presented::Missing,
            Current::Value(one) => Presented::One(value(&one.value)),
            Current::Conflict(_) => Presented::Many(record.live(now_ms).map(|s| value(&s.value)).collect()),
        })
    }
}

fn view(bytes: &[u8]) -> Result<StoredSiblings<'_>, StorageError> {
    StoredSiblings::read(bytes).ok_or(StorageError::Corrupt)
}

/// [`Found::presented`] of stored bytes, its values sliced out of them.
fn presented_in_place(bytes: &Bytes, now_ms: u64, conflicts: ConflictMode) -> Result<Presented, StorageError> {
    let view = view(bytes)?;
    let mut live = view.live(now_ms);
    Ok(match (live.next(), live.next()) {
        (None, _) => Presented::Missing,
        (Some(one), None) => Presented::One(bytes.slice_ref(one)),
        (Some(_), Some(_)) => match conflicts {
            ConflictMode::Lww => view
                .lww_winner(now_ms)
                .map_or(Presented::Missing, |one| Presented::One(bytes.slice_ref(one))),
            ConflictMode::Siblings => Presented::Many(view.live(now_ms).map(|v| bytes.slice_ref(v)).collect()),
        },
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Up to four writers' records merged: concurrent siblings, tombstones, expiries, equal timestamps.
    fn any_record() -> impl Strategy<Value = Record> {
        let write = (
            proptest::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..20)),
            proptest::option::of(0u64..20),
            0u64..20,
        );
        prop::collection::vec(write, 0..5).prop_map(|writes| {
            let mut merged = Record::default();
            for (actor, (value, expire_at_ms, now_ms)) in (1u64..).zip(writes) {
                let mut copy = Record::default();
                let value = value.map(Bytes::from);
                // Actors as nodes have them: random 64-bit numbers, ten bytes encoded.
                let actor = actor.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                copy.supersede(actor, value, expire_at_ms, now_ms).expect("one sibling");
                merged.merge(&copy);
            }
            merged
        })
    }

    proptest! {
        /// A read answers the same from the stored bytes as from the decoded record, at any moment and in either
        /// conflict mode.
        #[test]
        fn stored_bytes_present_what_the_decoded_record_does(record in any_record(), now_ms in 0u64..25) {
            let stored = Found::Stored(Bytes::from(record.encode()));
            let decoded = Found::Decoded(Arc::new(record));
            for conflicts in [ConflictMode::Siblings, ConflictMode::Lww] {
                let expected = decoded.presented(now_ms, conflicts).expect("decoded");
                prop_assert_eq!(stored.presented(now_ms, conflicts).expect("reads"), expected);
            }
            prop_assert_eq!(stored.has_live(now_ms).expect("reads"), decoded.has_live(now_ms).expect("decoded"));
            prop_assert_eq!(stored.record().expect("decodes"), decoded.record().expect("decoded"));
        }
    }

    #[test]
    fn bytes_that_hold_no_record_are_an_error_not_an_answer() {
        let damaged = Found::Stored(Bytes::from_static(b"\x01\xff"));
        assert!(matches!(
            damaged.presented(0, ConflictMode::Siblings),
            Err(StorageError::Corrupt)
        ));
        assert!(matches!(damaged.has_live(0), Err(StorageError::Corrupt)));
        assert!(matches!(damaged.record(), Err(StorageError::Corrupt)));
    }
}
