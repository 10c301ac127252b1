//! Key → slot, exactly as Redis Cluster: `CRC16(key) mod 16384`, where a
//! non-empty `{hash tag}` replaces the key so related keys share a slot.

/// Number of slots on the ring.
pub const SLOTS: u16 = 16384;

/// Redis Cluster's CRC16 (CCITT/XMODEM: polynomial 0x1021, no reflection, zero start) sliced eight bytes at a time.
/// Written here rather than taken from the `crc` crate, whose generic code reads its parameters at run time unless
/// the compiler happens to inline it: 66 or 112 instructions per 16-byte key from one build to the next
/// (callgrind), and a key's slot is taken several times per command. Checked against that crate in the tests.
static CRC16_TABLES: [[u16; 256]; 8] = crc16_tables();

/// `[0]`: the CRC of each byte; `[k]`: of each byte followed by `k` zero bytes.
const fn crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut byte = 0;
        while byte < 256 {
            let previous = tables[k - 1][byte];
            tables[k][byte] = (previous << 8) ^ tables[0][(previous >> 8) as usize];
            byte += 1;
        }
        k += 1;
    }
    tables
}

/// CRC16/XMODEM of `bytes`.
fn crc16(bytes: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut crc: u16 = 0;
    let mut rest = bytes;
    while let Some((b, more)) = rest.split_first_chunk::<8>() {
        let [high, low] = crc.to_be_bytes();
        crc = t[7][usize::from(b[0] ^ high)]
            ^ t[6][usize::from(b[1] ^ low)]
            ^ t[5][usize::from(b[2])]
            ^ t[4][usize::from(b[3])]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
        rest = more;
    }
    for &b in rest {
        crc = (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ b)];
    }
    crc
}

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
    crc16(hash_tag(key)) % SLOTS
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
        // Keys of 8 bytes and more go through the sliced tables, eight bytes a step.
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
    fn sliced_crc_equals_the_crc_crates_at_every_length() {
        let bytewise = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);
        let key: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..key.len() {
            assert_eq!(crc16(&key[..len]), bytewise.checksum(&key[..len]), "length {len}");
        }
    }
}
