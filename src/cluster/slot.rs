//! Key → slot, exactly as Redis Cluster: `CRC16(key) mod 16384`, where a
//! non-empty `{hash tag}` replaces the key so related keys share a slot.

use crc::{Crc, Table, CRC_16_XMODEM};

/// Number of slots on the ring.
pub const SLOTS: u16 = 16384;

/// Redis Cluster's CRC16 is CCITT/XMODEM. Sliced 16 bytes at a time (an 8 KiB table): a key's slot is taken a
/// few times per command, and a byte at a time it was 3-4% of a node's CPU under pipelined SETs.
const CRC16: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_XMODEM);

/// The part of `key` that is hashed: the first non-empty `{...}` if any.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = find(key, b'{') {
        let inside = &key[open + 1..];
        if let Some(len) = find(inside, b'}') {
            if len > 0 {
                return &inside[..len];
            }
        }
    }
    key
}

/// Where `byte` first is in `bytes`, looked for eight bytes at a time: a key's slot is taken several times per
/// command, and a byte at a time this search was a third of it (callgrind). Written here: for keys this short a call
/// to `memchr` took as many instructions as the plain loop.
fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    const LOW: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = u64::from_ne_bytes([byte; 8]);
    let (mut rest, mut offset) = (bytes, 0);
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        // A byte equal to `byte` becomes zero; the lowest zero byte sets the lowest flagged bit (higher ones may be
        // flagged falsely by the borrow, but only above a true zero).
        let x = u64::from_le_bytes(*word) ^ pattern;
        let zeros = x.wrapping_sub(LOW) & !x & HIGH;
        if zeros != 0 {
            return Some(offset + zeros.trailing_zeros() as usize / 8);
        }
        rest = tail;
        offset += 8;
    }
    rest.iter().position(|&b| b == byte).map(|at| offset + at)
}

/// The slot that owns `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    CRC16.checksum(hash_tag(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_cluster() {
        // Values from redis-cli CLUSTER KEYSLOT against Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b""), 0);
        // Keys of 16 bytes and more go through the sliced table's 16-byte steps.
        assert_eq!(key_slot(b"key:000000012345"), 12533);
        assert_eq!(
            key_slot(b"the quick brown fox jumps over the lazy dog, twice over"),
            15292
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }

    #[test]
    fn finds_a_byte_where_the_plain_search_does() {
        let plain = |bytes: &[u8], byte: u8| bytes.iter().position(|&b| b == byte);
        let key: Vec<u8> = (0..40u8)
            .map(|i| if i % 7 == 3 { b'{' } else { i.wrapping_mul(37) })
            .collect();
        for start in 0..key.len() {
            for end in start..=key.len() {
                for byte in [b'{', b'}', 0, 0x80, 0xff, key[start.min(key.len() - 1)]] {
                    let part = &key[start..end];
                    assert_eq!(find(part, byte), plain(part, byte), "{part:?} {byte}");
                }
            }
        }
        // A byte just below the one looked for, before it: the borrow must not flag it.
        assert_eq!(find(b"az{{}}zzzz", b'{'), Some(2));
        assert_eq!(find(b"\x7a\x7b\x7b", b'{'), Some(1));
    }

    #[test]
    fn sliced_crc_equals_the_bytewise_one_at_every_length() {
        let bytewise = Crc::<u16>::new(&CRC_16_XMODEM);
        let key: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..key.len() {
            assert_eq!(
                CRC16.checksum(&key[..len]),
                bytewise.checksum(&key[..len]),
                "length {len}"
            );
        }
    }
}
