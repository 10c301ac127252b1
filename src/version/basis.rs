//! What a write replaced, sent with the record it wrote. A write's new record subsumes the one it was made from, so
//! a replica still holding those very bytes (replication's common case: every replica took the previous write) may
//! store the new record as it came, reading neither: a digest comparison instead of decoding both records, about
//! 1,200 instructions per merge and a tenth of a replica's instructions per SET (callgrind, log `SET -P 16`).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::xxh3_128;

use super::Encoded;
use crate::varint::{put_varint, VarintSink};

/// The record a write replaced, by digest, and the earliest expiries before and after it (the expiry index moves
/// from one to the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basis {
    /// xxh3-128 of the replaced record's encoding; of no bytes if there was none (no record encodes to nothing).
    #[serde(serialize_with = "digest_out", deserialize_with = "digest_in")]
    digest: u128,
    /// The replaced record's earliest expiry.
    pub replaced_expiry: Option<u64>,
    /// The new record's earliest expiry.
    pub expiry: Option<u64>,
}

impl Basis {
    /// The basis of a write that replaced `replaced` (its encoding, or `None`).
    pub fn new(replaced: Option<&[u8]>, replaced_expiry: Option<u64>, expiry: Option<u64>) -> Basis {
        Basis {
            digest: xxh3_128(replaced.unwrap_or_default()),
            replaced_expiry,
            expiry,
        }
    }

    /// Reads what postcard writes for a basis (the digest as a length, 16, and its bytes; then both expiries as
    /// options), for `cluster::wire`.
    pub(crate) fn read(input: &mut Encoded<'_>) -> Option<Basis> {
        let digest: [u8; 16] = input.bytes()?.try_into().ok()?;
        let mut expiry = || match input.is_some()? {
            true => input.varint().map(Some),
            false => Some(None),
        };
        Some(Basis {
            digest: u128::from_le_bytes(digest),
            replaced_expiry: expiry()?,
            expiry: expiry()?,
        })
    }

    /// Appends what postcard writes for a basis, as [`Basis::read`] reads it, for `cluster::wire`.
    pub(crate) fn write(&self, out: &mut impl VarintSink) {
        out.put_u8(16); // the digest's length, as the varint postcard writes for it
        out.put_slice(&self.digest.to_le_bytes());
        for expiry in [self.replaced_expiry, self.expiry] {
            match expiry {
                Some(at) => {
                    out.put_u8(1);
                    put_varint(out, at);
                }
                None => out.put_u8(0),
            }
        }
    }

    /// Whether `held` (a replica's encoding of the key, or `None`) is the record the write replaced. A 128-bit
    /// digest: two different records compare equal about once in 2^128 tries, and peers are authenticated.
    pub fn replaced(&self, held: Option<&[u8]>) -> bool {
        xxh3_128(held.unwrap_or_default()) == self.digest
    }
}

/// The digest as 16 bytes in one piece: as a `u128`, postcard writes and reads it seven bits at a time (300
/// instructions a message, callgrind).
fn digest_out<S: Serializer>(digest: &u128, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(&digest.to_le_bytes())
}

fn digest_in<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
    let bytes: &[u8] = Deserialize::deserialize(deserializer)?;
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| D::Error::invalid_length(bytes.len(), &"16 bytes"))?;
    Ok(u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_replaced_record_and_nothing_else() {
        let basis = Basis::new(Some(b"\x01\x02\x03"), None, Some(5));
        assert!(basis.replaced(Some(b"\x01\x02\x03")));
        assert!(!basis.replaced(Some(b"\x01\x02\x04")));
        assert!(!basis.replaced(None));
        let fresh = Basis::new(None, None, None);
        assert!(fresh.replaced(None));
        assert!(!fresh.replaced(Some(b"\x00")));
    }

    #[test]
    fn crosses_the_wire_as_it_was() {
        let basis = Basis::new(Some(b"record"), Some(7), None);
        let wire = postcard::to_allocvec(&basis).expect("encode");
        assert_eq!(postcard::from_bytes::<Basis>(&wire).expect("decode"), basis);
        assert!(postcard::from_bytes::<Basis>(&wire[..10]).is_err(), "a short digest");
    }
}
