//! The peer messages every write and read sends, encoded and decoded by hand: a replicated record
//! ([`PeerRequest::Merge`], [`PeerRequest::MergeBatch`]), a forwarded command ([`PeerRequest::Forward`],
//! [`PeerRequest::ForwardBatch`]), a quorum read ([`PeerRequest::Read`], [`PeerRequest::ReadBatch`]), and their
//! common answers (acks, replies with the records handed back, copies read, in batches or alone).
//!
//! Through serde, postcard took about 500 instructions per replicated record and 1,440 per forwarded command at a
//! replica to decode (callgrind, log `SET -P 16`): a call through its generic reader per field, and per byte string
//! a trip through the thread-local that lends the frame (`net::shared`). Here the frame is at hand and each byte
//! string is a slice of it. Encoding through serde cost the entry node about 600 instructions per SET, a call per
//! field and a check of the buffer's room per byte. The bytes are postcard's either way (property-tested), so both
//! ends may mix the two: anything else, and anything this reader does not take exactly, is left to postcard.

use bytes::{BufMut, Bytes, BytesMut};

use super::messages::{Forwarded, KeyCopy, PeerRequest, PeerResponse, WireReply, Written};
use crate::varint::put_varint;
use crate::version::{Basis, Encoded};

/// postcard's variant indexes of [`PeerRequest`] (its order of declaration), each one byte.
const READ: u8 = 0;
const READ_BATCH: u8 = 1;
const MERGE: u8 = 2;
const FORWARD: u8 = 3;
const FORWARD_BATCH: u8 = 4;
const MERGE_BATCH: u8 = 9;

/// postcard's variant indexes of [`PeerResponse`].
const RECORD: u8 = 0;
const ACK: u8 = 1;
const REPLY: u8 = 2;
const DIVERGED: u8 = 5;
const HANDBACK: u8 = 6;
const BATCH: u8 = 7;
const RECORDS: u8 = 8;

/// postcard's variant indexes of [`WireReply`].
const REPLY_STATUS: u8 = 0;
const REPLY_ERROR: u8 = 1;
const REPLY_INT: u8 = 2;
const REPLY_BULK: u8 = 3;
const REPLY_NIL: u8 = 4;
const REPLY_NIL_ARRAY: u8 = 5;
const REPLY_ARRAY: u8 = 6;
const REPLY_MAP: u8 = 7;
const REPLY_SET: u8 = 8;
const REPLY_VERBATIM: u8 = 9;
const REPLY_OK: u8 = 10;

/// Appends `request` as postcard writes it, if it is one read here; otherwise appends nothing and answers false.
pub fn encode_request(request: &PeerRequest, out: &mut BytesMut) -> bool {
    let mut out = Output(out);
    match request {
        PeerRequest::Read { db, key } => {
            out.0.put_slice(&[READ, *db]);
            out.bytes(key);
        }
        PeerRequest::ReadBatch { db, keys } => {
            out.0.put_slice(&[READ_BATCH, *db]);
            out.seq(keys, |out, key| out.bytes(key));
        }
        PeerRequest::Merge { db, key, record, basis } => {
            out.0.put_u8(MERGE);
            out.written(*db, key, record, basis);
        }
        PeerRequest::Forward(forwarded) => {
            out.0.put_u8(FORWARD);
            out.forwarded(forwarded);
        }
        PeerRequest::ForwardBatch(batch) => out.tagged_seq(FORWARD_BATCH, batch, Output::forwarded),
        PeerRequest::MergeBatch(batch) => out.tagged_seq(MERGE_BATCH, batch, Output::written_record),
        _ => return false,
    }
    true
}

/// Appends `response` as postcard writes it, if it is one read here (a reply of any kind, too); otherwise appends
/// nothing and answers false.
pub fn encode_response(response: &PeerResponse, out: &mut BytesMut) -> bool {
    let start = out.len();
    let encoded = Output(out).response(response, true);
    if !encoded {
        out.truncate(start);
    }
    encoded
}

/// A body being written.
struct Output<'a>(&'a mut BytesMut);

impl Output<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        put_varint(self.0, bytes.len() as u64);
        self.0.put_slice(bytes);
    }

    fn optional_bytes(&mut self, bytes: &Option<Bytes>) {
        match bytes {
            Some(bytes) => {
                self.0.put_u8(1);
                self.bytes(bytes);
            }
            None => self.0.put_u8(0),
        }
    }

    fn seq<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        put_varint(self.0, items.len() as u64);
        for each in items {
            item(self, each);
        }
    }

    /// A variant holding one sequence.
    fn tagged_seq<T>(&mut self, tag: u8, items: &[T], item: impl FnMut(&mut Self, &T)) {
        self.0.put_u8(tag);
        self.seq(items, item);
    }

    fn written(&mut self, db: u8, key: &[u8], record: &[u8], basis: &Option<Basis>) {
        self.0.put_u8(db);
        self.bytes(key);
        self.bytes(record);
        match basis {
            Some(basis) => {
                self.0.put_u8(1);
                basis.write(self.0);
            }
            None => self.0.put_u8(0),
        }
    }

    fn written_record(&mut self, written: &Written) {
        self.written(written.db, &written.key, &written.record, &written.basis);
    }

    fn forwarded(&mut self, forwarded: &Forwarded) {
        // Taken apart whole, so that a field added to the message cannot be left out here.
        let Forwarded {
            db,
            resp,
            read_quorum,
            write_quorum,
            argv,
            copies,
        } = forwarded;
        self.0.put_slice(&[*db, *resp, *read_quorum, *write_quorum]);
        self.seq(argv, |out, arg| out.bytes(arg));
        self.seq(copies, |out, copy| {
            out.bytes(&copy.key);
            out.optional_bytes(&copy.record);
        });
    }

    /// Writes a common response (a batch only at the top, `outer`); false, with some of it written, for another.
    fn response(&mut self, response: &PeerResponse, outer: bool) -> bool {
        match response {
            PeerResponse::Record(copy) => {
                self.0.put_u8(RECORD);
                self.optional_bytes(copy);
            }
            PeerResponse::Ack => self.0.put_u8(ACK),
            PeerResponse::Reply(reply) => {
                self.0.put_u8(REPLY);
                self.reply(reply);
            }
            PeerResponse::Diverged(copy) => {
                self.0.put_u8(DIVERGED);
                self.bytes(copy);
            }
            PeerResponse::Handback { reply, records } => {
                self.0.put_u8(HANDBACK);
                self.reply(reply);
                self.seq(records, Output::written_record);
            }
            PeerResponse::Batch(items) if outer => {
                self.0.put_u8(BATCH);
                put_varint(self.0, items.len() as u64);
                return items.iter().all(|item| self.response(item, false));
            }
            PeerResponse::Records(copies) => self.tagged_seq(RECORDS, copies, Output::optional_bytes),
            _ => return false,
        }
        true
    }

    /// Any reply: forwarded reads answer bulk strings and arrays.
    fn reply(&mut self, reply: &WireReply) {
        match reply {
            WireReply::Status(text) => self.tagged_bytes(REPLY_STATUS, text),
            WireReply::Error(text) => self.tagged_bytes(REPLY_ERROR, text),
            WireReply::Verbatim(text) => self.tagged_bytes(REPLY_VERBATIM, text),
            WireReply::Int(n) => {
                self.0.put_u8(REPLY_INT);
                // postcard's zigzag: small magnitudes of either sign in few bytes.
                put_varint(self.0, ((n << 1) ^ (n >> 63)) as u64);
            }
            WireReply::Bulk(bytes) => self.tagged_bytes(REPLY_BULK, bytes),
            WireReply::Nil => self.0.put_u8(REPLY_NIL),
            WireReply::NilArray => self.0.put_u8(REPLY_NIL_ARRAY),
            WireReply::Array(items) => self.tagged_seq(REPLY_ARRAY, items, Output::reply),
            WireReply::Set(items) => self.tagged_seq(REPLY_SET, items, Output::reply),
            WireReply::Map(pairs) => self.tagged_seq(REPLY_MAP, pairs, |out, (key, value)| {
                out.reply(key);
                out.reply(value);
            }),
            WireReply::Ok => self.0.put_u8(REPLY_OK),
        }
    }

    /// A variant holding one string or byte string (postcard writes both alike).
    fn tagged_bytes(&mut self, tag: u8, bytes: impl AsRef<[u8]>) {
        self.0.put_u8(tag);
        self.bytes(bytes.as_ref());
    }
}

/// `body` (a part of `frame`) as a write's request, if it is one and reads to its end; `None` leaves it to postcard.
pub fn decode_request(frame: &Bytes, body: &[u8]) -> Option<PeerRequest> {
    let mut input = Input::new(frame, body)?;
    let request = match input.encoded.byte()? {
        READ => PeerRequest::Read {
            db: input.encoded.byte()?,
            key: input.bytes()?,
        },
        READ_BATCH => PeerRequest::ReadBatch {
            db: input.encoded.byte()?,
            keys: input.seq(Input::bytes)?,
        },
        MERGE => {
            let Written { db, key, record, basis } = input.written()?;
            PeerRequest::Merge { db, key, record, basis }
        }
        FORWARD => PeerRequest::Forward(input.forwarded()?),
        FORWARD_BATCH => PeerRequest::ForwardBatch(input.seq(Input::forwarded)?),
        MERGE_BATCH => PeerRequest::MergeBatch(input.seq(Input::written)?),
        _ => return None,
    };
    input.encoded.0.is_empty().then_some(request)
}

/// `body` (a part of `frame`) as one of the common responses, if it is one and reads to its end; `None` leaves it to
/// postcard.
pub fn decode_response(frame: &Bytes, body: &[u8]) -> Option<PeerResponse> {
    let mut input = Input::new(frame, body)?;
    let response = input.response(true)?;
    input.encoded.0.is_empty().then_some(response)
}

/// A body being read, and the frame its byte strings are slices of.
struct Input<'a> {
    frame: &'a Bytes,
    /// Where the body starts in the frame.
    start: usize,
    body_len: usize,
    encoded: Encoded<'a>,
}

impl<'a> Input<'a> {
    fn new(frame: &'a Bytes, body: &'a [u8]) -> Option<Input<'a>> {
        let start = (body.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
        (start + body.len() <= frame.len()).then_some(Input {
            frame,
            start,
            body_len: body.len(),
            encoded: Encoded(body),
        })
    }

    /// A byte string, as a slice of the frame.
    fn bytes(&mut self) -> Option<Bytes> {
        let part = self.encoded.bytes()?;
        let end = self.start + self.body_len - self.encoded.0.len();
        Some(self.frame.slice(end - part.len()..end))
    }

    fn optional_bytes(&mut self) -> Option<Option<Bytes>> {
        match self.encoded.is_some()? {
            true => self.bytes().map(Some),
            false => Some(None),
        }
    }

    /// A length, then that many items. Room is reserved for no more items than bytes are left.
    fn seq<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let len = usize::try_from(self.encoded.varint()?).ok()?;
        let mut items = Vec::with_capacity(len.min(self.encoded.0.len()));
        for _ in 0..len {
            items.push(item(self)?);
        }
        Some(items)
    }

    fn written(&mut self) -> Option<Written> {
        Some(Written {
            db: self.encoded.byte()?,
            key: self.bytes()?,
            record: self.bytes()?,
            basis: match self.encoded.is_some()? {
                true => Some(Basis::read(&mut self.encoded)?),
                false => None,
            },
        })
    }

    /// A common response; a batch only at the top (`outer`), as sent.
    fn response(&mut self, outer: bool) -> Option<PeerResponse> {
        Some(match self.encoded.byte()? {
            RECORD => PeerResponse::Record(self.optional_bytes()?),
            ACK => PeerResponse::Ack,
            REPLY => PeerResponse::Reply(self.reply_ok()?),
            DIVERGED => PeerResponse::Diverged(self.bytes()?),
            HANDBACK => PeerResponse::Handback {
                reply: self.reply_ok()?,
                records: self.seq(Self::written)?,
            },
            BATCH if outer => PeerResponse::Batch(self.seq(|input| input.response(false))?),
            RECORDS => PeerResponse::Records(self.seq(Self::optional_bytes)?),
            _ => return None,
        })
    }

    /// `+OK`, the only reply read here.
    fn reply_ok(&mut self) -> Option<WireReply> {
        (self.encoded.byte()? == REPLY_OK).then_some(WireReply::Ok)
    }

    fn forwarded(&mut self) -> Option<Forwarded> {
        Some(Forwarded {
            db: self.encoded.byte()?,
            resp: self.encoded.byte()?,
            read_quorum: self.encoded.byte()?,
            write_quorum: self.encoded.byte()?,
            argv: self.seq(Self::bytes)?,
            copies: self.seq(|input| {
                Some(KeyCopy {
                    key: input.bytes()?,
                    record: input.optional_bytes()?,
                })
            })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
    }

    fn any_written() -> impl Strategy<Value = Written> {
        let basis = (any::<Option<Vec<u8>>>(), any::<Option<u64>>(), any::<Option<u64>>())
            .prop_map(|(replaced, before, after)| Basis::new(replaced.as_deref(), before, after));
        (any::<u8>(), any_bytes(), any_bytes(), proptest::option::of(basis))
            .prop_map(|(db, key, record, basis)| Written { db, key, record, basis })
    }

    fn any_forwarded() -> impl Strategy<Value = Forwarded> {
        let copy = (any_bytes(), proptest::option::of(any_bytes())).prop_map(|(key, record)| KeyCopy { key, record });
        (
            any::<[u8; 4]>(),
            prop::collection::vec(any_bytes(), 0..5),
            prop::collection::vec(copy, 0..3),
        )
            .prop_map(|([db, resp, read_quorum, write_quorum], argv, copies)| Forwarded {
                db,
                resp,
                read_quorum,
                write_quorum,
                argv,
                copies,
            })
    }

    fn any_request() -> impl Strategy<Value = PeerRequest> {
        prop_oneof![
            any_written().prop_map(|w| PeerRequest::Merge {
                db: w.db,
                key: w.key,
                record: w.record,
                basis: w.basis
            }),
            any_forwarded().prop_map(PeerRequest::Forward),
            prop::collection::vec(any_forwarded(), 0..4).prop_map(PeerRequest::ForwardBatch),
            prop::collection::vec(any_written(), 0..6).prop_map(PeerRequest::MergeBatch),
            (any::<u8>(), any_bytes()).prop_map(|(db, key)| PeerRequest::Read { db, key }),
            (any::<u8>(), prop::collection::vec(any_bytes(), 0..4))
                .prop_map(|(db, keys)| PeerRequest::ReadBatch { db, keys }),
        ]
    }

    /// Any reply a forwarded command may answer.
    fn any_reply() -> impl Strategy<Value = WireReply> {
        let text = || "[a-zé ]{0,12}";
        let leaf = prop_oneof![
            any::<()>().prop_map(|_| WireReply::Ok),
            any::<()>().prop_map(|_| WireReply::Nil),
            any::<()>().prop_map(|_| WireReply::NilArray),
            any::<i64>().prop_map(WireReply::Int),
            any_bytes().prop_map(WireReply::Bulk),
            text().prop_map(WireReply::Status),
            text().prop_map(WireReply::Error),
            text().prop_map(WireReply::Verbatim),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(WireReply::Array),
                prop::collection::vec(inner.clone(), 0..4).prop_map(WireReply::Set),
                prop::collection::vec((inner.clone(), inner), 0..3).prop_map(WireReply::Map),
            ]
        })
    }

    /// Any response but [`PeerResponse::Keys`] (never sent in a batch), and whether it is written here.
    fn any_written_response() -> impl Strategy<Value = (PeerResponse, bool)> {
        responses(any_reply().prop_map(|reply| (reply, true)).boxed())
    }

    /// A response, and whether it is one of the common ones read here.
    fn any_response() -> impl Strategy<Value = (PeerResponse, bool)> {
        responses(
            prop_oneof![
                3 => any::<()>().prop_map(|_| (WireReply::Ok, true)),
                1 => any::<i64>().prop_map(|n| (WireReply::Int(n), false)),
            ]
            .boxed(),
        )
    }

    /// Responses carrying replies of `reply` (each with whether it is handled here), alone or batched, and whether
    /// all of the response is handled here (an error is not).
    fn responses(reply: BoxedStrategy<(WireReply, bool)>) -> impl Strategy<Value = (PeerResponse, bool)> {
        let single = prop_oneof![
            any::<()>().prop_map(|_| (PeerResponse::Ack, true)),
            proptest::option::of(any_bytes()).prop_map(|copy| (PeerResponse::Record(copy), true)),
            any_bytes().prop_map(|copy| (PeerResponse::Diverged(copy), true)),
            reply
                .clone()
                .prop_map(|(reply, handled)| (PeerResponse::Reply(reply), handled)),
            (reply, prop::collection::vec(any_written(), 0..3))
                .prop_map(|((reply, handled), records)| (PeerResponse::Handback { reply, records }, handled)),
            prop::collection::vec(proptest::option::of(any_bytes()), 0..4)
                .prop_map(|copies| (PeerResponse::Records(copies), true)),
            "[A-Z ]{0,9}".prop_map(|text| (PeerResponse::Error(text), false)),
        ]
        .boxed();
        prop_oneof![
            single.clone(),
            prop::collection::vec(single, 0..5).prop_map(|items| {
                let handled = items.iter().all(|(_, handled)| *handled);
                (
                    PeerResponse::Batch(items.into_iter().map(|(item, _)| item).collect()),
                    handled,
                )
            }),
        ]
    }

    fn reencoded_response(response: &PeerResponse) -> Vec<u8> {
        postcard::to_allocvec(response).expect("encode")
    }

    /// A frame as the bus hands it over: a request id, then the body.
    fn framed(request: &PeerRequest) -> (Bytes, usize) {
        let mut frame = vec![0x81, 0x01];
        let start = frame.len();
        frame.extend(postcard::to_allocvec(request).expect("encode"));
        (Bytes::from(frame), start)
    }

    fn reencoded(request: &PeerRequest) -> Vec<u8> {
        postcard::to_allocvec(request).expect("encode")
    }

    proptest! {
        /// Every write's request decodes here, to what postcard decodes, its byte strings slices of the frame.
        #[test]
        fn reads_what_postcard_reads(request in any_request()) {
            let (frame, start) = framed(&request);
            let ours = decode_request(&frame, &frame[start..]).expect("decoded here");
            prop_assert_eq!(reencoded(&ours), reencoded(&request));
            if let PeerRequest::MergeBatch(merges) = &ours {
                for merge in merges.iter().filter(|merge| !merge.key.is_empty()) {
                    prop_assert!(frame.as_ptr_range().contains(&merge.key.as_ptr()), "a slice of the frame");
                }
            }
        }

        /// Damaged bodies: whatever this reader takes, postcard takes as the same request.
        #[test]
        fn takes_nothing_postcard_would_read_otherwise(
            request in any_request(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte: u8,
        ) {
            let (frame, start) = framed(&request);
            let mut body = frame[start..].to_vec();
            let at = flip.index(body.len());
            body[at] = byte;
            body.truncate(cut.index(body.len() + 1).max(1));
            let frame = Bytes::from(body);
            if let Some(ours) = decode_request(&frame, &frame) {
                let theirs: PeerRequest = postcard::from_bytes(&frame).expect("postcard reads it too");
                prop_assert_eq!(reencoded(&ours), reencoded(&theirs));
            }
        }
    }

    proptest! {
        /// A response decodes here only as postcard decodes it, and the common ones (acks, `+OK`s, copies) do.
        #[test]
        fn reads_responses_as_postcard_reads_them(
            (response, common) in any_response(),
            cut in any::<prop::sample::Index>(),
        ) {
            let wire = reencoded_response(&response);
            let frame = Bytes::from(wire.clone());
            match decode_response(&frame, &frame) {
                Some(ours) => prop_assert_eq!(reencoded_response(&ours), wire.clone()),
                None => prop_assert!(!common, "left to postcard: {:?}", response),
            }
            let cut = Bytes::from(wire[..cut.index(wire.len())].to_vec());
            prop_assert!(decode_response(&cut, &cut).is_none(), "a cut response");
        }
    }

    proptest! {
        /// Requests are written byte for byte as postcard writes them, after what the buffer held.
        #[test]
        fn writes_requests_as_postcard_writes_them(request in any_request()) {
            let mut out = BytesMut::from(&b"held"[..]);
            prop_assert!(encode_request(&request, &mut out));
            prop_assert_eq!(&out[..4], b"held");
            prop_assert_eq!(&out[4..], &reencoded(&request)[..]);
        }

        /// Responses too; one not written here leaves the buffer as it was.
        #[test]
        fn writes_responses_as_postcard_writes_them((response, written) in any_written_response()) {
            let mut out = BytesMut::from(&b"held"[..]);
            prop_assert_eq!(encode_response(&response, &mut out), written);
            match written {
                true => prop_assert_eq!(&out[4..], &reencoded_response(&response)[..]),
                false => prop_assert_eq!(&out[..], b"held"),
            }
        }
    }

    #[test]
    fn leaves_other_requests_to_postcard() {
        let mut out = BytesMut::new();
        assert!(!encode_request(&PeerRequest::Fence, &mut out));
        assert!(!encode_request(&PeerRequest::Flush { db: None }, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn leaves_other_requests_and_trailing_bytes_to_postcard() {
        let (frame, start) = framed(&PeerRequest::Fence);
        assert!(decode_request(&frame, &frame[start..]).is_none());
        let mut body = reencoded(&PeerRequest::MergeBatch(Vec::new()));
        assert!(
            decode_request(&Bytes::from(body.clone()), &body.clone()).is_none(),
            "not within the frame"
        );
        let frame = Bytes::from(body.clone());
        assert!(decode_request(&frame, &frame).is_some());
        body.push(0);
        let frame = Bytes::from(body);
        assert!(decode_request(&frame, &frame).is_none(), "a byte left over");
    }
}
