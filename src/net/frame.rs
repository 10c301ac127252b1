//! Frame encoding and the coalescing write loop shared by both directions of a connection.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of postcard, which is exactly what
//! `LengthDelimitedCodec` decodes on the reading side. Frames are encoded straight into the writer's buffer.

use std::future::Future;

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::LengthDelimitedCodec;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;

/// Bytes in the length prefix; `LengthDelimitedCodec`'s default.
const HEADER: usize = 4;
/// Capacity a writer's buffer starts with and returns to after a burst grew it past `KEEP`.
const INITIAL: usize = 64 << 10;
const KEEP: usize = 4 << 20;
/// A batch vector grown past this by a burst is released rather than kept.
const KEEP_ITEMS: usize = 1 << 16;

/// Why a message could not be framed; the message is dropped, the connection is unaffected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("cannot encode message: {0}")]
    Encode(#[from] postcard::Error),
    #[error("message of {size} bytes exceeds the frame limit of {max}")]
    TooLarge { size: usize, max: usize },
}

/// The configured frame limit, capped to what the 4-byte prefix can express.
pub(crate) fn frame_limit(max: usize) -> usize {
    max.min(u32::MAX as usize)
}

/// The decoder for frames written by [`encode_frame`] with the same `max`.
pub(crate) fn decoder(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(HEADER)
        .max_frame_length(frame_limit(max))
        .new_codec()
}

/// Appends one frame holding `value` to `buf`; on error `buf` is left as it was.
pub(crate) fn encode_frame<T: Serialize + ?Sized>(buf: &mut BytesMut, value: &T, max: usize) -> Result<(), FrameError> {
    encode_frame_by(buf, max, |buf| serialize_into(buf, value))
}

/// Appends one frame whose body `write` appends; on error `buf` is left as it was.
pub(crate) fn encode_frame_by(
    buf: &mut BytesMut,
    max: usize,
    write: impl FnOnce(&mut BytesMut) -> postcard::Result<()>,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.put_u32(0);
    if let Err(e) = write(buf) {
        buf.truncate(start);
        return Err(e.into());
    }
    let size = buf.len() - start - HEADER;
    let max = frame_limit(max);
    let Some(len) = u32::try_from(size).ok().filter(|_| size <= max) else {
        buf.truncate(start);
        return Err(FrameError::TooLarge { size, max });
    };
    buf[start..start + HEADER].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends `value` as postcard writes it.
pub(crate) fn serialize_into<T: Serialize + ?Sized>(buf: &mut BytesMut, value: &T) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Appender(buf))
}

/// Lets postcard write into a `BytesMut` directly (its stock flavors want a slice or an owned `Extend`).
struct Appender<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Appender<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Something a writer awaits before each batch: the answering side's durability barrier.
pub(crate) trait Barrier: Send + 'static {
    fn wait(&self) -> impl Future<Output = ()> + Send;
}

/// The calling side writes requests, which need no barrier.
pub(crate) struct NoBarrier;

impl Barrier for NoBarrier {
    async fn wait(&self) {}
}

/// Writes everything `outbox` receives to `io` until `token` is cancelled or a write fails.
///
/// Each wake-up takes the whole queue, awaits `barrier` once, encodes the batch into one buffer with `encode`
/// (which deals with messages that cannot be framed) and writes it with a single `write_all`.
pub(crate) async fn write_loop<T, W, E, B>(
    outbox: &Outbox<T>,
    mut io: W,
    token: &CancellationToken,
    mut encode: E,
    barrier: B,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    E: FnMut(&mut BytesMut, T),
    B: Barrier,
{
    let mut batch = Vec::new();
    let mut buf = BytesMut::with_capacity(INITIAL);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            () = outbox.ready() => {}
        }
        // Let the tasks already runnable queue their messages too: one write
        // for them all costs less than a write each.
        tokio::task::yield_now().await;
        outbox.take(&mut batch);
        if batch.is_empty() {
            continue;
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            () = barrier.wait() => {}
        }
        for item in batch.drain(..) {
            encode(&mut buf, item);
        }
        if batch.capacity() > KEEP_ITEMS {
            batch = Vec::new();
        }
        if buf.is_empty() {
            continue;
        }
        tokio::select! {
            biased;
            () = token.cancelled() => return Ok(()),
            written = io.write_all(&buf) => written?,
        }
        buf.clear();
        if buf.capacity() > KEEP {
            buf = BytesMut::with_capacity(INITIAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn frames_decode_with_the_reading_codec() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &(1u64, "first"), 64).expect("encode");
        encode_frame(&mut buf, &(300u64, vec![9u8; 40]), 64).expect("encode");
        let mut codec = decoder(64);
        let first = codec.decode(&mut buf).expect("decode").expect("a frame");
        assert_eq!(
            postcard::from_bytes::<(u64, &str)>(&first).expect("postcard"),
            (1, "first")
        );
        let second = codec.decode(&mut buf).expect("decode").expect("a frame");
        assert_eq!(
            postcard::from_bytes::<(u64, Vec<u8>)>(&second).expect("postcard"),
            (300, vec![9u8; 40])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_message_leaves_the_buffer_untouched() {
        let mut buf = BytesMut::new();
        encode_frame(&mut buf, &7u8, 16).expect("encode");
        let before = buf.clone();
        let result = encode_frame(&mut buf, &vec![0u8; 100], 16);
        assert!(
            matches!(result, Err(FrameError::TooLarge { size: 101, max: 16 })),
            "{result:?}"
        );
        assert_eq!(buf, before);
    }
}
