//! A record read in place from its encoding, for replication's common case: a
//! replica holds the coordinator's previous version of a key and is sent the
//! next one. Deciding that the incoming copy subsumes the stored one needs
//! only the dots, contexts and sibling contents of both, and the incoming
//! bytes are then stored as they came, so neither record is built. Decoding
//! two [`Record`]s for that took seven allocations per merge (their vectors,
//! their values, the shared record).

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;

use super::{siblings_canonical, subsumed, ActorId, Dot, VersionVector, Versioned};

/// A record's context and siblings borrowed from its encoding. Decoding
/// accepts exactly what [`Record::decode`](super::Record::decode) accepts (the
/// same wire layout, the same invariants; property-tested), as replication
/// stores a copy checked only this way.
#[derive(Debug, Deserialize)]
#[serde(rename = "Record")]
pub struct RecordView<'a> {
    #[serde(deserialize_with = "inline_seq")]
    context: SmallVec<[(ActorId, u64); 4]>,
    #[serde(borrow, deserialize_with = "inline_seq")]
    siblings: SmallVec<[SiblingView<'a>; 2]>,
}

/// One sibling, its value borrowed.
#[derive(Debug, Deserialize)]
#[serde(rename = "Sibling")]
struct SiblingView<'a> {
    dot: Dot,
    timestamp_ms: u64,
    #[serde(borrow)]
    value: Option<&'a [u8]>,
    expire_at_ms: Option<u64>,
}

impl Versioned for SiblingView<'_> {
    fn dot(&self) -> Dot {
        self.dot
    }

    fn rank(&self) -> (u64, Option<u64>, Option<&[u8]>) {
        (self.timestamp_ms, self.expire_at_ms, self.value)
    }
}

impl<'a> RecordView<'a> {
    /// Reads [`Record::encode`](super::Record::encode) output in place; `None`
    /// where [`Record::decode`](super::Record::decode) would refuse the bytes.
    pub fn decode(bytes: &'a [u8]) -> Option<RecordView<'a>> {
        match postcard::take_from_bytes::<RecordView<'a>>(bytes) {
            Ok((view, [])) if view.is_canonical() => Some(view),
            _ => None,
        }
    }

    /// [`Record::is_subsumed_by`](super::Record::is_subsumed_by) of the records these views read.
    pub fn is_subsumed_by(&self, newer: &RecordView<'_>) -> bool {
        subsumed(&self.context, &self.siblings, &newer.context, &newer.siblings)
    }

    /// The record's context, copied out.
    pub fn context(&self) -> VersionVector {
        VersionVector(self.context.to_vec())
    }

    /// Whether the record holds no sibling at all (not even a tombstone).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// [`Record::next_expiry`](super::Record::next_expiry) of the record.
    pub fn next_expiry(&self) -> Option<u64> {
        self.siblings.iter().filter_map(|s| s.expire_at_ms).min()
    }

    fn is_canonical(&self) -> bool {
        VersionVector::is_canonical(&self.context) && siblings_canonical(&self.context, &self.siblings)
    }
}

/// A sequence into a `SmallVec`, growing as elements arrive: smallvec's own
/// impl reserves whatever length the bytes claim before reading any element.
fn inline_seq<'de, D, A>(deserializer: D) -> Result<SmallVec<A>, D::Error>
where
    D: Deserializer<'de>,
    A: smallvec::Array,
    A::Item: Deserialize<'de>,
{
    struct Inline<A>(std::marker::PhantomData<A>);
    impl<'de, A> Visitor<'de> for Inline<A>
    where
        A: smallvec::Array,
        A::Item: Deserialize<'de>,
    {
        type Value = SmallVec<A>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<SmallVec<A>, S::Error> {
            let mut items = SmallVec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(Inline(std::marker::PhantomData))
}
