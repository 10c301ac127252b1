//! Byte fields of a message that point into the frame they came in instead of being copied out of it.
//!
//! A replicated write carries its key and record as bytes; decoding them as `Bytes` copies each into an allocation
//! of its own, two per record on every replica. Fields marked `#[serde(deserialize_with = "shared::bytes")]` take
//! a slice of the received frame instead (`Bytes::slice_ref`), which the connection's reader hands to `decode`.
//! Such a slice keeps the whole frame alive: whoever keeps one past the request (the record cache) copies it.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;

thread_local! {
    /// The frame being decoded on this thread.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Decodes `body`, a part of `frame`, letting the fields marked [`bytes`] or [`optional_bytes`] share `frame`.
pub(crate) fn decode<T: DeserializeOwned>(frame: &Bytes, body: &[u8]) -> postcard::Result<T> {
    FRAME.with(|current| *current.borrow_mut() = Some(frame.clone()));
    let decoded = postcard::from_bytes(body);
    FRAME.with(|current| current.borrow_mut().take());
    decoded
}

/// `part` as a slice of the frame being decoded if it lies within it, else as a copy.
fn share(part: &[u8]) -> Bytes {
    FRAME.with(|current| match current.borrow().as_ref() {
        Some(frame)
            if !part.is_empty() && {
                let (within, start) = (frame.as_ptr_range(), part.as_ptr());
                within.start <= start && start.wrapping_add(part.len()) <= within.end
            } =>
        {
            frame.slice_ref(part)
        }
        _ => Bytes::copy_from_slice(part),
    })
}

struct SharedBytes;

impl<'de> Visitor<'de> for SharedBytes {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E>(self, part: &'de [u8]) -> Result<Bytes, E> {
        Ok(share(part))
    }

    fn visit_bytes<E>(self, part: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(part))
    }

    fn visit_byte_buf<E>(self, part: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(part))
    }
}

/// A `deserialize_with` for a `Bytes` field: a slice of the frame (see the module doc).
pub fn bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(SharedBytes)
}

/// One byte string decoded as [`bytes`] decodes it, for serde's own `Option` and `Vec` to hold.
#[repr(transparent)]
struct SharedElement(Bytes);

impl<'de> Deserialize<'de> for SharedElement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SharedElement, D::Error> {
        bytes(deserializer).map(SharedElement)
    }
}

/// [`bytes()`] for an `Option<Bytes>` field.
pub fn optional_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Bytes>, D::Error> {
    Ok(Option::<SharedElement>::deserialize(deserializer)?.map(|SharedElement(part)| part))
}

/// [`bytes()`] for a `Vec<Bytes>` field (a forwarded command's arguments). Collected in place: the element is a
/// transparent `Bytes`.
pub fn bytes_seq<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Bytes>, D::Error> {
    let parts = Vec::<SharedElement>::deserialize(deserializer)?;
    Ok(parts.into_iter().map(|SharedElement(part)| part).collect())
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Message {
        #[serde(deserialize_with = "bytes")]
        key: Bytes,
        #[serde(deserialize_with = "optional_bytes")]
        record: Option<Bytes>,
        #[serde(deserialize_with = "optional_bytes")]
        absent: Option<Bytes>,
        #[serde(deserialize_with = "bytes_seq")]
        argv: Vec<Bytes>,
        copied: Bytes,
    }

    fn within(frame: &Bytes, part: &Bytes) -> bool {
        frame.as_ptr_range().contains(&part.as_ptr())
    }

    #[test]
    fn marked_fields_point_into_the_frame_and_decode_alike() {
        let sent = Message {
            key: Bytes::from_static(b"key"),
            record: Some(Bytes::from_static(b"record")),
            absent: None,
            argv: vec![Bytes::from_static(b"SET"), Bytes::new(), Bytes::from_static(b"v")],
            copied: Bytes::from_static(b"copied"),
        };
        let mut frame = b"header".to_vec();
        frame.extend(postcard::to_allocvec(&sent).expect("encode"));
        let frame = Bytes::from(frame);
        let got: Message = decode(&frame, &frame[6..]).expect("decode");
        assert_eq!(got, sent);
        assert!(within(&frame, &got.key));
        assert!(got.record.as_ref().is_some_and(|record| within(&frame, record)));
        assert!(within(&frame, &got.argv[0]) && within(&frame, &got.argv[2]));
        assert!(!within(&frame, &got.copied), "an unmarked field is copied");
        // Outside `decode`, a marked field is a copy.
        let alone: Message = postcard::from_bytes(&frame[6..]).expect("decode");
        assert_eq!(alone, sent);
        assert!(!within(&frame, &alone.key));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let frame = Bytes::from_static(b"\x05ab");
        assert!(decode::<Message>(&frame, &frame).is_err());
        for len in 0..12u8 {
            let frame = Bytes::from((0..len).map(|i| i.wrapping_mul(37)).collect::<Vec<u8>>());
            let _ = decode::<Message>(&frame, &frame);
        }
    }
}
