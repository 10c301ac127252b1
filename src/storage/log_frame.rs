//! The format of the log engine's files: frames of changes, each checked by a
//! hash, so a frame torn by a crash is found and cut off rather than read.
//!
//! ```text
//! frame   = payload length (u64 LE) ‖ xxh3-64 of the payload (u64 LE) ‖ payload
//! payload = change*
//! change  = tag (u8) ‖ key length (varint) ‖ key [‖ value length (varint) ‖ value]
//! ```
//!
//! Written by hand: it is a few dozen lines, and a file format must not change
//! with a serialization crate's version.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use super::{BatchOp, Space, StorageError};

/// Bytes before a frame's payload.
const HEADER: usize = 16;

const PUT_RECORD: u8 = 1;
const PUT_EXPIRY: u8 = 2;
const DELETE_RECORD: u8 = 3;
const DELETE_EXPIRY: u8 = 4;
const CLEAR: u8 = 5;

/// One change, as read back from a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Change<'a> {
    /// Insert or overwrite.
    Put(Space, &'a [u8], &'a [u8]),
    /// Remove if present.
    Delete(Space, &'a [u8]),
    /// Remove everything (FLUSHALL).
    Clear,
}

/// Builds one frame at the end of a buffer.
pub struct FrameBuilder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> FrameBuilder<'a> {
    /// Starts a frame at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        FrameBuilder { out, start }
    }

    /// Adds one put.
    pub fn put(&mut self, space: Space, key: &[u8], value: &[u8]) {
        self.out.push(match space {
            Space::Records => PUT_RECORD,
            Space::Expiry => PUT_EXPIRY,
        });
        self.bytes(key);
        self.bytes(value);
    }

    /// Adds one delete.
    pub fn delete(&mut self, space: Space, key: &[u8]) {
        self.out.push(match space {
            Space::Records => DELETE_RECORD,
            Space::Expiry => DELETE_EXPIRY,
        });
        self.bytes(key);
    }

    /// Adds a removal of everything.
    pub fn clear(&mut self) {
        self.out.push(CLEAR);
    }

    /// Adds every op of a batch.
    pub fn batch(&mut self, ops: &[BatchOp]) {
        for op in ops {
            match op {
                BatchOp::Put(space, key, value) => self.put(*space, key, value),
                BatchOp::Delete(space, key) => self.delete(*space, key),
            }
        }
    }

    /// Bytes in the frame so far, header included.
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let mut len = bytes.len() as u64;
        while len >= 0x80 {
            self.out.push(len as u8 | 0x80);
            len >>= 7;
        }
        self.out.push(len as u8);
        self.out.extend_from_slice(bytes);
    }

    /// Writes the header; the frame is complete.
    pub fn finish(self) {
        let payload = &self.out[self.start + HEADER..];
        let (len, sum) = (payload.len() as u64, xxh3_64(payload));
        self.out[self.start..self.start + 8].copy_from_slice(&len.to_le_bytes());
        self.out[self.start + 8..self.start + HEADER].copy_from_slice(&sum.to_le_bytes());
    }
}

/// How reading a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Bytes of whole, intact frames from the start of the file.
    pub valid_len: u64,
    /// Whether bytes after those were cut short or fail their hash.
    pub torn: bool,
}

/// Reads every intact frame of `path` in order, handing each change to
/// `apply`; stops at the first torn or damaged frame.
pub fn replay(path: &Path, apply: &mut dyn FnMut(Change<'_>)) -> Result<Replayed, StorageError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut payload = Vec::new();
    let mut valid_len = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut reader, &mut header)? {
            0 => return Ok(Replayed { valid_len, torn: false }),
            HEADER => {}
            _ => return Ok(Replayed { valid_len, torn: true }),
        }
        let len = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let sum = u64::from_le_bytes(header[8..].try_into().unwrap_or_default());
        // A damaged length must not make us allocate what the file cannot hold.
        if len > file_len - valid_len - HEADER as u64 {
            return Ok(Replayed { valid_len, torn: true });
        }
        payload.resize(len as usize, 0);
        if read_full(&mut reader, &mut payload)? < payload.len() || xxh3_64(&payload) != sum {
            return Ok(Replayed { valid_len, torn: true });
        }
        decode(&payload, apply)?;
        valid_len += HEADER as u64 + len;
    }
}

/// Fills `buf` as far as the reader goes; the count read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decodes one intact payload. Its hash matched, so a malformed one was
/// written so, not torn: that is corruption.
fn decode(mut payload: &[u8], apply: &mut dyn FnMut(Change<'_>)) -> Result<(), StorageError> {
    while let Some((&tag, rest)) = payload.split_first() {
        payload = rest;
        let change = match tag {
            CLEAR => Change::Clear,
            PUT_RECORD | PUT_EXPIRY => {
                let key = take_bytes(&mut payload)?;
                let value = take_bytes(&mut payload)?;
                Change::Put(space_of(tag), key, value)
            }
            DELETE_RECORD | DELETE_EXPIRY => Change::Delete(space_of(tag), take_bytes(&mut payload)?),
            _ => return Err(StorageError::Corrupt),
        };
        apply(change);
    }
    Ok(())
}

fn space_of(tag: u8) -> Space {
    match tag {
        PUT_RECORD | DELETE_RECORD => Space::Records,
        _ => Space::Expiry,
    }
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], StorageError> {
    let mut len = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or(StorageError::Corrupt)?;
        *input = rest;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let len = usize::try_from(len).map_err(|_| StorageError::Corrupt)?;
            if len > input.len() {
                return Err(StorageError::Corrupt);
            }
            let (bytes, rest) = input.split_at(len);
            *input = rest;
            return Ok(bytes);
        }
    }
    Err(StorageError::Corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> (Vec<String>, Replayed) {
        let mut seen = Vec::new();
        let end = replay(path, &mut |change| seen.push(format!("{change:?}"))).expect("replay");
        (seen, end)
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.log");
        let mut out = Vec::new();
        let mut frame = FrameBuilder::new(&mut out);
        frame.put(Space::Records, b"k", &[7u8; 300]);
        frame.delete(Space::Expiry, b"");
        frame.finish();
        let first = out.len() as u64;
        let mut frame = FrameBuilder::new(&mut out);
        frame.clear();
        frame.put(Space::Expiry, b"\x00\xff", b"");
        frame.finish();
        std::fs::write(&path, &out).expect("write");
        let (seen, end) = read_all(&path);
        assert_eq!(seen.len(), 4);
        assert!(seen[0].starts_with("Put(Records, [107], [7, 7"));
        assert_eq!(seen[2], "Clear");
        assert_eq!(
            end,
            Replayed {
                valid_len: out.len() as u64,
                torn: false
            }
        );

        // Every cut inside the second frame keeps the first whole and only it.
        let torn_after_first = Replayed {
            valid_len: first,
            torn: true,
        };
        for cut in first + 1..out.len() as u64 {
            std::fs::write(&path, &out[..cut as usize]).expect("write");
            let (seen, end) = read_all(&path);
            assert_eq!((seen.len(), end), (2, torn_after_first));
        }
        // A flipped byte in the payload fails the hash.
        let mut damaged = out.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        std::fs::write(&path, &damaged).expect("write");
        assert_eq!(read_all(&path).1, torn_after_first);
        // A huge length is a torn frame, not an allocation.
        let mut huge = out[..first as usize].to_vec();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &huge).expect("write");
        assert_eq!(read_all(&path).1, torn_after_first);
    }
}
