//! A record read in place from its encoding, for replication's common case: a
//! replica holds the coordinator's previous version of a key and is sent the
//! next one. Deciding that the incoming copy subsumes the stored one needs
//! only the dots, contexts and sibling contents of both, and the incoming
//! bytes are then stored as they came, so neither record is built. Decoding
//! two [`Record`]s for that took seven allocations per merge (their vectors,
//! their values, the shared record).

use smallvec::SmallVec;

use super::{encoded_len, siblings_canonical, subsumed, ActorId, Dot, VersionVector, Versioned};

/// A record's context and siblings borrowed from its encoding. Decoding
/// accepts exactly what [`Record::decode`](super::Record::decode) accepts (the
/// same wire layout, the same invariants; property-tested), as replication
/// stores a copy checked only this way.
#[derive(Debug)]
pub struct RecordView<'a> {
    context: SmallVec<[(ActorId, u64); 4]>,
    siblings: SmallVec<[SiblingView<'a>; 2]>,
}

/// One sibling, its value borrowed.
#[derive(Debug)]
struct SiblingView<'a> {
    dot: Dot,
    timestamp_ms: u64,
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
        let mut input = Encoded(bytes);
        let mut context = SmallVec::new();
        for _ in 0..input.varint()? {
            context.push((input.varint()?, input.varint()?));
        }
        let mut siblings = SmallVec::new();
        for _ in 0..input.varint()? {
            let dot = Dot {
                actor: input.varint()?,
                counter: input.varint()?,
            };
            let timestamp_ms = input.varint()?;
            let (value, expire_at_ms) = input.value_and_expiry()?;
            siblings.push(SiblingView {
                dot,
                timestamp_ms,
                value,
                expire_at_ms,
            });
        }
        let view = RecordView { context, siblings };
        (input.0.is_empty() && view.is_canonical() && view.is_encoded_in(bytes.len())).then_some(view)
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

    /// [`Record`](super::Record)'s check that no number was written longer than needed.
    fn is_encoded_in(&self, len: usize) -> bool {
        let siblings = self.siblings.iter().map(|s| {
            let value = s.value.map(<[u8]>::len);
            (s.dot, s.timestamp_ms, value, s.expire_at_ms)
        });
        encoded_len(&self.context, siblings) == len
    }
}

/// The siblings of a record this node stored, read in place for what a read answers. The bytes were checked (or
/// encoded here) when written, so only their layout is read: the context and each sibling's dot and timestamp are
/// passed over (only a last-writer-wins choice among live siblings reads them), and [`RecordView::decode`]'s
/// invariants, whose checks cost more than the read, are not checked again.
#[derive(Debug)]
pub struct StoredSiblings<'a>(SmallVec<[StoredSibling<'a>; 2]>);

/// One sibling of [`StoredSiblings`]: its dot and timestamp still encoded.
#[derive(Debug)]
struct StoredSibling<'a> {
    versioning: &'a [u8],
    value: Option<&'a [u8]>,
    expire_at_ms: Option<u64>,
}

impl<'a> StoredSiblings<'a> {
    /// The siblings of `bytes`, or `None` if they do not hold a record.
    pub fn read(bytes: &'a [u8]) -> Option<StoredSiblings<'a>> {
        let mut input = Encoded(bytes);
        for _ in 0..input.varint()? {
            input.skip_varint()?;
            input.skip_varint()?;
        }
        let mut siblings = SmallVec::new();
        for _ in 0..input.varint()? {
            let start = input.0;
            for _ in 0..3 {
                input.skip_varint()?;
            }
            let versioning = &start[..start.len() - input.0.len()];
            let (value, expire_at_ms) = input.value_and_expiry()?;
            siblings.push(StoredSibling {
                versioning,
                value,
                expire_at_ms,
            });
        }
        input.0.is_empty().then_some(StoredSiblings(siblings))
    }

    /// The live values at `now_ms` in dot order, as [`Record::live`](super::Record::live) gives them.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.0.iter().filter_map(move |s| s.live_value(now_ms))
    }

    /// The value of [`Record::lww_winner`](super::Record::lww_winner).
    pub fn lww_winner(&self, now_ms: u64) -> Option<&'a [u8]> {
        let live = self.0.iter().filter(|s| s.live_value(now_ms).is_some());
        live.max_by_key(|s| s.rank()).and_then(|s| s.value)
    }
}

impl<'a> StoredSibling<'a> {
    /// The value, if it is live at `now_ms` ([`Sibling::is_live`](super::Sibling::is_live)).
    fn live_value(&self, now_ms: u64) -> Option<&'a [u8]> {
        self.value.filter(|_| self.expire_at_ms.is_none_or(|at| now_ms < at))
    }

    /// `(timestamp, dot)`, which orders siblings for last-writer-wins; zeros if unreadable ([`StoredSiblings::read`]
    /// passed over these bytes, so they are whole varints).
    fn rank(&self) -> (u64, Dot) {
        let mut input = Encoded(self.versioning);
        let mut next = || input.varint().unwrap_or_default();
        let (actor, counter, timestamp) = (next(), next(), next());
        (timestamp, Dot { actor, counter })
    }
}

/// Joins the low seven bits of each of the eight little-endian bytes of `word` into one 56-bit number.
fn seven_bit_groups(word: u64) -> u64 {
    let x = word & 0x7f7f_7f7f_7f7f_7f7f;
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

/// The rest of a postcard encoding, read in place: a record's here (`Record`: the context as a length and `(actor,
/// counter)` pairs, then the siblings as a length and each one's dot, timestamp, optional value and optional expiry),
/// the hot peer requests' in `cluster::wire`. Written by hand: through serde, postcard's generic reader took about
/// 550 instructions per record here (callgrind, two records per replicated write), most of them reading varints a
/// byte at a time behind its error plumbing.
pub(crate) struct Encoded<'a>(pub(crate) &'a [u8]);

impl<'a> Encoded<'a> {
    /// One raw byte (postcard's `u8`).
    pub(crate) fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    /// postcard's varint: seven bits a byte, lowest first, at most ten bytes, the tenth at most 1. Longer forms of a
    /// number than needed pass, as postcard lets them. Eight bytes are taken apart at once: actors are random 64-bit
    /// numbers, ten bytes each, and timestamps six.
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let Some(word) = self.0.first_chunk::<8>().map(|w| u64::from_le_bytes(*w)) else {
            return self.varint_bytewise();
        };
        if word & 0x80 == 0 {
            self.0 = &self.0[1..];
            return Some(word & 0x7f);
        }
        let ends = !word & 0x8080_8080_8080_8080;
        if ends != 0 {
            let len = ends.trailing_zeros() as usize / 8 + 1;
            let kept = if len == 8 { word } else { word & ((1 << (8 * len)) - 1) };
            self.0 = &self.0[len..];
            return Some(seven_bit_groups(kept));
        }
        // All eight continue: a ninth byte, and a tenth holding bit 63 alone.
        let low = seven_bit_groups(word);
        let ninth = *self.0.get(8)?;
        if ninth & 0x80 == 0 {
            self.0 = &self.0[9..];
            return Some(low | u64::from(ninth) << 56);
        }
        let tenth = *self.0.get(9)?;
        if tenth > 1 {
            return None;
        }
        self.0 = &self.0[10..];
        Some(low | u64::from(ninth & 0x7f) << 56 | u64::from(tenth) << 63)
    }

    /// A sibling's optional value and optional expiry, which end its encoding.
    pub(crate) fn value_and_expiry(&mut self) -> Option<(Option<&'a [u8]>, Option<u64>)> {
        let value = if self.is_some()? { Some(self.bytes()?) } else { None };
        let expire_at_ms = if self.is_some()? { Some(self.varint()?) } else { None };
        Some((value, expire_at_ms))
    }

    /// Passes over a varint ([`Encoded::varint`]'s), without joining its bits.
    pub(crate) fn skip_varint(&mut self) -> Option<()> {
        let Some(word) = self.0.first_chunk::<8>().map(|w| u64::from_le_bytes(*w)) else {
            return self.varint_bytewise().map(drop);
        };
        let ends = !word & 0x8080_8080_8080_8080;
        let len = if ends != 0 {
            ends.trailing_zeros() as usize / 8 + 1
        } else if *self.0.get(8)? & 0x80 == 0 {
            9
        } else if *self.0.get(9)? <= 1 {
            10
        } else {
            return None;
        };
        self.0 = &self.0[len..];
        Some(())
    }

    /// [`Encoded::varint`] near the end of the bytes, where eight are not left.
    fn varint_bytewise(&mut self) -> Option<u64> {
        let mut out = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            out |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return (shift < 63 || byte <= 1).then_some(out);
            }
        }
        None
    }

    /// postcard's `Option` tag: 0 for none, 1 for some.
    pub(crate) fn is_some(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Record;
    use proptest::prelude::*;

    proptest! {
        /// The varint reader agrees with postcard's on any bytes: the number, and where it stops.
        #[test]
        fn varints_read_as_postcard_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..14), number: u64, pad in 0usize..10) {
            let ours = |bytes: &[u8]| {
                let mut input = Encoded(bytes);
                input.varint().map(|n| (n, input.0.len()))
            };
            let theirs = |bytes: &[u8]| postcard::take_from_bytes::<u64>(bytes).ok().map(|(n, rest)| (n, rest.len()));
            let skipped = |bytes: &[u8]| {
                let mut input = Encoded(bytes);
                input.skip_varint().map(|()| input.0.len())
            };
            prop_assert_eq!(ours(&bytes), theirs(&bytes));
            prop_assert_eq!(skipped(&bytes), theirs(&bytes).map(|(_, rest)| rest));
            // Every length of encoding, with fewer or more than eight bytes behind it.
            let mut encoded = postcard::to_stdvec(&(number >> (number % 64))).expect("encodes");
            encoded.extend(std::iter::repeat_n(0x80, pad));
            for bytes in [&encoded[..], &encoded[..encoded.len() - pad]] {
                prop_assert_eq!(ours(bytes), theirs(bytes));
                prop_assert_eq!(skipped(bytes), theirs(bytes).map(|(_, rest)| rest));
            }
        }
    }

    /// A record of one context entry and one sibling, every number written as `number` spells it.
    fn record(number: &[u8], value: &[u8]) -> Vec<u8> {
        let mut bytes = vec![1];
        bytes.extend_from_slice(number); // actor
        bytes.push(5); // counter
        bytes.push(1);
        bytes.extend_from_slice(number); // the sibling's actor
        bytes.push(5); // its counter
        bytes.extend_from_slice(number); // timestamp
        bytes.push(1);
        bytes.push(value.len() as u8);
        bytes.extend_from_slice(value);
        bytes.push(1);
        bytes.extend_from_slice(number); // expiry
        bytes
    }

    #[test]
    fn reads_exactly_what_postcard_reads() {
        let numbers: [&[u8]; 9] = [
            &[0x00],
            &[0x7f],
            &[0x80, 0x01],
            &[0x80, 0x00], // longer than needed: postcard takes it
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // u64::MAX
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // past 64 bits
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], // eleven bytes
            &[0x80],       // cut short
            &[0xaa, 0x8b, 0x03],
        ];
        for number in numbers {
            for value in [&b""[..], b"v", b"value"] {
                let bytes = record(number, value);
                let expected = Record::decode(&bytes);
                assert_eq!(RecordView::decode(&bytes).is_some(), expected.is_some(), "{bytes:02x?}");
                if let Some(record) = expected {
                    let view = RecordView::decode(&bytes).expect("decodes");
                    assert_eq!(view.next_expiry(), record.next_expiry());
                    assert_eq!(view.context().0, record.context.0);
                }
            }
        }
        // A bad option tag, a value longer than what is left, bytes left over.
        let good = record(&[0x07], b"v");
        assert!(RecordView::decode(&good).is_some());
        for bad in [
            [&good[..7], &[2], &good[8..]].concat(),
            [&good[..8], &[9], &good[9..]].concat(),
            [&good[..], &[0]].concat(),
        ] {
            assert_eq!(Record::decode(&bad), None);
            assert!(RecordView::decode(&bad).is_none(), "{bad:02x?}");
        }
    }
}
