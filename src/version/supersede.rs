//! A plain SET's record written straight from the stored one's encoding. Such a write keeps none of the stored
//! siblings and needs only the stored context, so the context's bytes are copied as they are, around the writer's
//! one changed entry, and the new sibling is appended. Decoding the stored record, building the new one and encoding
//! it took about 1,700 instructions per coordinated SET, this about 900 (callgrind, log `SET -P 16`).

use std::ops::Range;

use super::{put_value_and_expiry, ActorId, Encoded, WriteError};
use crate::varint::put_varint;

/// The encoding of a plain SET's record, and what the expiry index needs to move.
#[derive(Debug, PartialEq, Eq)]
pub struct Superseding {
    /// What [`Record::encode`](super::Record::encode) writes for the new record.
    pub encoded: Vec<u8>,
    /// The replaced record's earliest expiry.
    pub replaced_expiry: Option<u64>,
}

/// [`Record::supersede`](super::Record::supersede) of the record `stored` encodes (none if `None`) with `value`, by
/// `actor` at `now_ms`, then [`Record::encode`](super::Record::encode). `Ok(None)` if `stored` does not hold a record's layout.
///
/// `stored` must be bytes this node stored: they were checked when written (decoded from a peer, or encoded here),
/// so they are read for their layout only, as [`StoredSiblings`](super::StoredSiblings) reads them. Their numbers
/// are then written no longer than needed and their context is sorted by actor, so copying its entries as they are
/// writes exactly what encoding them again would.
pub fn supersede_encoded(
    stored: Option<&[u8]>,
    actor: ActorId,
    value: &[u8],
    expire_at_ms: Option<u64>,
    now_ms: u64,
) -> Result<Option<Superseding>, WriteError> {
    let stored = stored.unwrap_or(EMPTY_RECORD);
    let Some(held) = read(stored, actor) else {
        return Ok(None);
    };
    let counter = held
        .counter
        .checked_add(1)
        .ok_or(WriteError::TooManySiblings)?
        .max(now_ms.saturating_mul(1000));
    let (before, after) = (&stored[held.before], &stored[held.after]);
    let mut out = Vec::with_capacity(before.len() + after.len() + value.len() + MAX_NUMBERS_LEN);
    put_varint(&mut out, held.entries);
    out.extend_from_slice(before);
    let dot_start = out.len();
    put_varint(&mut out, actor);
    put_varint(&mut out, counter);
    let dot = dot_start..out.len();
    out.extend_from_slice(after);
    out.push(1); // one sibling, dotted by the writer's new counter
    out.extend_from_within(dot);
    put_varint(&mut out, now_ms);
    put_value_and_expiry(&mut out, Some(value), expire_at_ms);
    Ok(Some(Superseding {
        encoded: out,
        replaced_expiry: held.expiry,
    }))
}

/// At most what the new record holds besides the stored entries and the value: eight varints of at most ten bytes
/// (the entry count, the writer's dot twice, the timestamp, the value's length, the expiry) and three one-byte tags
/// (the sibling count, the value's and the expiry's).
const MAX_NUMBERS_LEN: usize = 8 * 10 + 3;

/// The encoding of a record with no context and no sibling: what a key that holds none is superseded from.
const EMPTY_RECORD: &[u8] = &[0, 0];

/// What a plain SET takes from the stored record.
struct Held {
    /// Context entries of the new record: the stored ones and the writer's, if it had none.
    entries: u64,
    /// The bytes of the stored context's entries for actors below the writer, and above it.
    before: Range<usize>,
    after: Range<usize>,
    /// The writer's counter in the stored context (0 if absent).
    counter: u64,
    /// The stored siblings' earliest expiry.
    expiry: Option<u64>,
}

/// Reads `stored` (a record's encoding) as far as a plain SET by `actor` needs; `None` if it does not hold one.
fn read(stored: &[u8], actor: ActorId) -> Option<Held> {
    let mut input = Encoded(stored);
    let offset = |input: &Encoded<'_>| stored.len() - input.0.len();
    let entries = input.varint()?;
    let start = offset(&input);
    // Where the writer's entry is or goes, and where the entries after it start.
    let mut split: Option<(usize, usize)> = None;
    let mut counter = 0;
    for _ in 0..entries {
        let at = offset(&input);
        let held = input.varint()?;
        if split.is_none() && held >= actor {
            if held == actor {
                counter = input.varint()?;
                split = Some((at, offset(&input)));
                continue;
            }
            split = Some((at, at));
        }
        input.skip_varint()?;
    }
    let end = offset(&input);
    let (before_end, after_start) = split.unwrap_or((end, end));
    let mut expiry: Option<u64> = None;
    for _ in 0..input.varint()? {
        for _ in 0..3 {
            input.skip_varint()?; // the dot and the timestamp
        }
        if let (_, Some(at)) = input.value_and_expiry()? {
            expiry = Some(expiry.map_or(at, |earliest| earliest.min(at)));
        }
    }
    input.0.is_empty().then_some(Held {
        entries: entries + u64::from(before_end == after_start),
        before: start..before_end,
        after: after_start..end,
        counter,
        expiry,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::version::{Dot, Record, Sibling, VersionVector};

    /// Actors below, between, at and above one another, some ten bytes long as real ones are.
    const ACTORS: [ActorId; 5] = [1, 0x80, 0x1234_5678, u64::MAX / 3, u64::MAX - 1];

    /// A write to a record by one of [`ACTORS`] (its context the record's own, or none), or a merge of another
    /// record built the same way: records of every shape a node stores.
    #[derive(Debug, Clone)]
    enum Step {
        Write {
            actor: usize,
            own_context: bool,
            value: Option<Vec<u8>>,
            ttl: Option<u64>,
            now: u64,
        },
        Merge(Vec<(usize, u64)>),
    }

    fn step() -> impl Strategy<Value = Step> {
        let write = (
            0..ACTORS.len(),
            any::<bool>(),
            proptest::option::of(prop::collection::vec(any::<u8>(), 0..200)),
            proptest::option::of(0u64..1 << 40),
            0u64..1 << 42,
        )
            .prop_map(|(actor, own_context, value, ttl, now)| Step::Write {
                actor,
                own_context,
                value,
                ttl,
                now,
            });
        let merge = prop::collection::vec((0..ACTORS.len(), 1u64..1 << 50), 1..4).prop_map(Step::Merge);
        prop_oneof![3 => write, 1 => merge]
    }

    fn build(steps: &[Step]) -> Record {
        let mut record = Record::default();
        for step in steps {
            match step {
                Step::Write {
                    actor,
                    own_context,
                    value,
                    ttl,
                    now,
                } => {
                    let context = if *own_context {
                        record.context.clone()
                    } else {
                        VersionVector::default()
                    };
                    let value = value.clone().map(Bytes::from);
                    let _ = record.write(ACTORS[*actor], &context, value, ttl.map(|t| now + t), *now);
                }
                Step::Merge(writes) => {
                    let mut other = Record::default();
                    for &(actor, now) in writes {
                        let context = other.context.clone();
                        let _ = other.write(ACTORS[actor], &context, Some(Bytes::from_static(b"x")), None, now);
                    }
                    record.merge(&other);
                }
            }
        }
        record
    }

    proptest! {
        /// Byte for byte what decoding, superseding and encoding again write, for stored records of every shape, by
        /// a writer that is in their context or not, below, between or above its actors.
        #[test]
        fn writes_what_a_decoded_supersede_encodes(
            steps in prop::collection::vec(step(), 0..8),
            writer in 0..ACTORS.len() + 1,
            value in prop::collection::vec(any::<u8>(), 0..300),
            expire_at_ms in proptest::option::of(any::<u64>()),
            now_ms in 0u64..1 << 42,
        ) {
            let record = build(&steps);
            let actor = ACTORS.get(writer).copied().unwrap_or(0x8000);
            let mut expected = record.clone();
            let dot = expected.supersede(actor, Some(Bytes::from(value.clone())), expire_at_ms, now_ms);
            let stored = (!steps.is_empty()).then(|| record.encode());
            let ours = supersede_encoded(stored.as_deref(), actor, &value, expire_at_ms, now_ms);
            match dot {
                Ok(_) => prop_assert_eq!(ours, Ok(Some(Superseding {
                    encoded: expected.encode(),
                    replaced_expiry: record.next_expiry(),
                }))),
                Err(e) => prop_assert_eq!(ours, Err(e)),
            }
        }
    }

    #[test]
    fn bytes_that_hold_no_record_are_refused() {
        let mut record = Record::default();
        record
            .write(
                ACTORS[2],
                &VersionVector::default(),
                Some(Bytes::from_static(b"v")),
                Some(9),
                5,
            )
            .expect("one sibling");
        let encoded = record.encode();
        for cut in 0..encoded.len() {
            assert_eq!(
                supersede_encoded(Some(&encoded[..cut]), 7, b"", None, 1),
                Ok(None),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(supersede_encoded(Some(&longer), 7, b"", None, 1), Ok(None));
        assert!(matches!(
            supersede_encoded(Some(&encoded), 7, b"", None, 1),
            Ok(Some(_))
        ));
    }

    #[test]
    fn an_exhausted_counter_is_refused_as_a_decoded_supersede_refuses_it() {
        let dot = Dot {
            actor: 7,
            counter: u64::MAX,
        };
        let mut record = Record {
            context: VersionVector(vec![(7, u64::MAX)]),
            siblings: vec![Sibling {
                dot,
                timestamp_ms: 1,
                value: None,
                expire_at_ms: None,
            }],
        };
        let encoded = record.encode();
        assert_eq!(
            record.supersede(7, Some(Bytes::new()), None, 2),
            Err(WriteError::TooManySiblings)
        );
        assert_eq!(
            supersede_encoded(Some(&encoded), 7, b"", None, 2),
            Err(WriteError::TooManySiblings)
        );
    }
}
