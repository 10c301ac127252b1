//! postcard's variable-length integers, written by hand where serde's path is too slow: records
//! (`version::Record::encode`) and the peer bus's frames (`cluster::wire`, `net`).

/// Bytes postcard writes for `n`.
pub(crate) fn varint_len(n: u64) -> usize {
    ((64 - n.leading_zeros()).max(1) as usize).div_ceil(7)
}

/// A buffer postcard's varints are appended to: a record being encoded, or a peer-bus frame (`cluster::wire`).
pub(crate) trait VarintSink: bytes::BufMut {
    /// Drops the last `n` bytes appended.
    fn drop_last(&mut self, n: usize);
}

impl VarintSink for Vec<u8> {
    fn drop_last(&mut self, n: usize) {
        self.truncate(self.len() - n);
    }
}

impl VarintSink for bytes::BytesMut {
    fn drop_last(&mut self, n: usize) {
        self.truncate(self.len() - n);
    }
}

/// Appends `n` as postcard writes a `u64`: seven bits a byte, lowest first, the high bit set on all but the last.
/// Eight bytes are made at once and appended whole, then cut to length: actors are random 64-bit numbers (ten
/// bytes), and a push per byte checked the buffer's room each time.
pub(crate) fn put_varint(out: &mut impl VarintSink, n: u64) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if n < 0x80 {
        out.put_u8(n as u8);
        return;
    }
    let low = seven_bit_bytes(n);
    let rest = n >> 56;
    if rest == 0 {
        let len = (64 - n.leading_zeros() as usize).div_ceil(7);
        out.put_slice(&(low | (HIGH & ((1 << (8 * (len - 1))) - 1))).to_le_bytes());
        out.drop_last(8 - len);
        return;
    }
    out.put_slice(&(low | HIGH).to_le_bytes());
    if rest < 0x80 {
        out.put_u8(rest as u8);
    } else {
        out.put_slice(&[rest as u8, 1]);
    }
}

/// The low 56 bits of `n` spread seven to a byte over eight bytes (little-endian), each byte's high bit clear.
fn seven_bit_bytes(n: u64) -> u64 {
    let x = n & 0x00ff_ffff_ffff_ffff;
    let x = (x & 0x0fff_ffff) | ((x & 0x00ff_ffff_f000_0000) << 4);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x0fff_c000_0fff_c000) << 2);
    (x & 0x007f_007f_007f_007f) | ((x & 0x3f80_3f80_3f80_3f80) << 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every length of varint, as postcard writes it.
        #[test]
        fn varints_are_written_as_postcard_writes_them(n: u64, bits in 0u32..64) {
            for n in [n, n >> bits] {
                let mut ours = vec![7];
                put_varint(&mut ours, n);
                let mut theirs = vec![7];
                theirs.extend(postcard::to_allocvec(&n).expect("postcard"));
                prop_assert_eq!(ours, theirs);
            }
        }
    }
}
