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

/// CRC16/XMODEM of `bytes`: by carry-less multiplication where the CPU has it (about a third of the table's
/// instructions for a 16-byte key, callgrind), else by the tables.
fn crc16(bytes: &[u8]) -> u16 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("pclmulqdq") {
        // SAFETY: the CPU has just been found to have the instruction the function is compiled for.
        return unsafe { carryless::crc16(bytes) };
    }
    crc16_by_tables(bytes)
}

/// CRC16/XMODEM of `bytes`, eight bytes a step through the sliced tables.
fn crc16_by_tables(bytes: &[u8]) -> u16 {
    let mut rest = bytes;
    let mut crc: u16 = 0;
    while let Some((b, more)) = rest.split_first_chunk::<8>() {
        crc = crc16_step(crc, b);
        rest = more;
    }
    crc16_bytewise(crc, rest)
}

/// The CRC after eight more bytes.
fn crc16_step(crc: u16, b: &[u8; 8]) -> u16 {
    let t = &CRC16_TABLES;
    let [high, low] = crc.to_be_bytes();
    t[7][usize::from(b[0] ^ high)]
        ^ t[6][usize::from(b[1] ^ low)]
        ^ t[5][usize::from(b[2])]
        ^ t[4][usize::from(b[3])]
        ^ t[3][usize::from(b[4])]
        ^ t[2][usize::from(b[5])]
        ^ t[1][usize::from(b[6])]
        ^ t[0][usize::from(b[7])]
}

/// The CRC after `rest`, a byte at a time.
fn crc16_bytewise(mut crc: u16, rest: &[u8]) -> u16 {
    for &b in rest {
        crc = (crc << 8) ^ CRC16_TABLES[0][usize::from((crc >> 8) as u8 ^ b)];
    }
    crc
}

/// Eight bytes a step by Barrett reduction with PCLMULQDQ. With `V` the step's bytes (big-endian) plus the CRC so far
/// in its top 16 bits, the new CRC is `V·x^16 mod P`: the quotient is `q = V ^ high64(V·MU)` and the remainder the
/// low 16 bits of `q·P`. Both are linear in `V`, so the unit-vector test below covers every input.
#[cfg(target_arch = "x86_64")]
mod carryless {
    use std::arch::x86_64::{__m128i, _mm_clmulepi64_si128, _mm_cvtsi128_si64, _mm_cvtsi64_si128, _mm_srli_si128};

    /// The polynomial x^16 + x^12 + x^5 + 1 without its x^16 term.
    const POLY: u64 = 0x1021;
    /// floor(x^80 / P) without its x^64 term.
    const MU: u64 = barrett_mu();

    const fn barrett_mu() -> u64 {
        let mut remainder: u128 = 1 << 80;
        let mut quotient: u128 = 0;
        let mut bit = 80;
        while bit >= 16 {
            if remainder & (1 << bit) != 0 {
                remainder ^= ((1 << 16) | POLY as u128) << (bit - 16);
                quotient |= 1 << (bit - 16);
            }
            bit -= 1;
        }
        quotient as u64
    }

    #[target_feature(enable = "pclmulqdq")]
    fn multiply(a: u64, b: u64) -> __m128i {
        _mm_clmulepi64_si128::<0>(_mm_cvtsi64_si128(a as i64), _mm_cvtsi64_si128(b as i64))
    }

    #[target_feature(enable = "pclmulqdq")]
    pub(super) fn crc16(bytes: &[u8]) -> u16 {
        let mut rest = bytes;
        let mut crc: u16 = 0;
        while let Some((b, more)) = rest.split_first_chunk::<8>() {
            let v = u64::from_be_bytes(*b) ^ (u64::from(crc) << 48);
            let q = v ^ _mm_cvtsi128_si64(_mm_srli_si128::<8>(multiply(v, MU))) as u64;
            crc = _mm_cvtsi128_si64(multiply(q, POLY)) as u16;
            rest = more;
        }
        super::crc16_bytewise(crc, rest)
    }
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

/// Where `byte` first is in `bytes`: sixteen bytes a step with SSE2 (part of every x86-64 CPU), then eight at a time.
/// A key's slot is taken several times per command, and a byte at a time this search was a third of it (callgrind).
/// Written here: for keys this short a call to `memchr` took as many instructions as the plain loop.
fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    let mut offset = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: the build targets SSE2, and each load reads the sixteen bytes `chunk` holds, unaligned.
    unsafe {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        let pattern = _mm_set1_epi8(byte as i8);
        while let Some(chunk) = bytes.get(offset..offset + 16) {
            let loaded = _mm_loadu_si128(chunk.as_ptr().cast());
            let found = _mm_movemask_epi8(_mm_cmpeq_epi8(loaded, pattern)) as u32;
            if found != 0 {
                return Some(offset + found.trailing_zeros() as usize);
            }
            offset += 16;
        }
    }
    find_by_words(&bytes[offset..], byte).map(|at| offset + at)
}

/// Where `byte` first is in `bytes`, eight bytes at a time.
fn find_by_words(bytes: &[u8], byte: u8) -> Option<usize> {
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
            let expected = bytewise.checksum(&key[..len]);
            assert_eq!(crc16(&key[..len]), expected, "length {len}");
            assert_eq!(crc16_by_tables(&key[..len]), expected, "length {len}, tables");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn carryless_crc_equals_the_crc_crates_on_every_unit_vector() {
        if !std::arch::is_x86_feature_detected!("pclmulqdq") {
            eprintln!("this CPU has no PCLMULQDQ: the carry-less CRC is not exercised here");
            return;
        }
        // A step is linear in its 64 input bits and the CRC carried in: two steps with each bit alone cover it all.
        let bytewise = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);
        for bit in 0..128 {
            let mut message = [0u8; 16];
            message[bit / 8] = 0x80 >> (bit % 8);
            // SAFETY: the CPU has the instruction, checked above.
            let carryless = unsafe { carryless::crc16(&message) };
            assert_eq!(carryless, bytewise.checksum(&message), "bit {bit}");
        }
    }
}
