//! What nodes say to each other over the peer bus. Postcard-encoded: a change
//! here changes the wire format, so add variants at the end.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::net::shared;
use crate::server::reply::Reply;
use crate::version::Basis;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Your copy of a key (quorum reads, and the read before a write).
    Read {
        /// Database.
        db: u8,
        /// User key.
        key: Bytes,
    },
    /// Your copies of these keys, in order (the quorum reads of a pipeline or an MGET, one message per replica).
    ReadBatch {
        /// Database.
        db: u8,
        /// User keys.
        keys: Vec<Bytes>,
    },
    /// Merge this copy of a key into yours (replication, read repair).
    Merge {
        /// Database.
        db: u8,
        /// User key.
        #[serde(deserialize_with = "shared::bytes")]
        key: Bytes,
        /// [`crate::version::Record::encode`] output.
        #[serde(deserialize_with = "shared::bytes")]
        record: Bytes,
        /// What the write replaced, if this is a write's replication.
        basis: Option<Basis>,
    },
    /// Run this command as the coordinator of its keys.
    Forward(Forwarded),
    /// Run these commands as the coordinator of their keys, concurrently, and answer each in one
    /// [`PeerResponse::Batch`]: a pipeline's forwards cost one message each way. The sender batches only commands
    /// on distinct keys, so their order does not matter.
    ForwardBatch(Vec<Forwarded>),
    /// Live keys of `db` in the slots this node answers for (cluster-wide
    /// KEYS, SCAN, DBSIZE, RANDOMKEY).
    Keys(KeysQuery),
    /// FLUSHDB (`Some(db)`) or FLUSHALL (`None`) of the local replica.
    Flush {
        /// Database, or all.
        db: Option<u8>,
    },
    /// Answer once every replication and repair this node had in flight
    /// has been applied or has failed (FLUSHDB's fence).
    Drain,
    /// Answered at once: everything sent on the link before it has been
    /// handled (merges are applied as they are read).
    Fence,
    /// [`PeerRequest::Merge`] of each record, answered in one [`PeerResponse::Batch`] in order: the replication of a
    /// pipeline's writes costs one message each way per replica (see `cluster::merge_batch`).
    MergeBatch(Vec<Written>),
}

/// A command forwarded to the coordinator of its keys, with the client's
/// connection settings that change how it runs or answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// Selected database.
    pub db: u8,
    /// Protocol version the reply is meant for.
    pub resp: u8,
    /// The connection's R and W.
    pub read_quorum: u8,
    /// See `read_quorum`.
    pub write_quorum: u8,
    /// The command and its arguments.
    #[serde(deserialize_with = "shared::bytes_seq")]
    pub argv: Vec<Bytes>,
    /// The forwarder's own copies of the command's keys it is a replica of: they count as its answer to the
    /// coordinator's read before writing, and ask for the written records back in the reply (see
    /// `cluster::handback`).
    pub copies: Vec<KeyCopy>,
}

impl Forwarded {
    /// About how many bytes it takes on the wire (its arguments and copies).
    pub fn wire_size(&self) -> usize {
        let argv: usize = self.argv.iter().map(|arg| arg.len() + 4).sum();
        let copies: usize = self
            .copies
            .iter()
            .map(|copy| copy.key.len() + copy.record.as_ref().map_or(0, Bytes::len) + 8)
            .sum();
        argv + copies + 8
    }
}

/// One replica's copy of one key, as it was when the command was forwarded.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyCopy {
    /// User key.
    #[serde(deserialize_with = "shared::bytes")]
    pub key: Bytes,
    /// [`crate::version::Record::encode`] output, or none if the replica holds nothing.
    #[serde(deserialize_with = "shared::optional_bytes")]
    pub record: Option<Bytes>,
}

/// A record a coordinator wrote, with its key: handed back to the forwarder (a replica of the key) with the reply,
/// or sent to another replica in a [`PeerRequest::MergeBatch`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Written {
    /// Database.
    pub db: u8,
    /// User key.
    #[serde(deserialize_with = "shared::bytes")]
    pub key: Bytes,
    /// [`crate::version::Record::encode`] output.
    #[serde(deserialize_with = "shared::bytes")]
    pub record: Bytes,
    /// What the write replaced, when the coordinator knows it.
    pub basis: Option<Basis>,
}

impl Written {
    /// The record as a [`PeerRequest::Merge`] of its own.
    pub fn into_merge(self) -> PeerRequest {
        let Written { db, key, record, basis } = self;
        PeerRequest::Merge { db, key, record, basis }
    }
}

/// Which keys a [`PeerRequest::Keys`] wants.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeysQuery {
    /// Database.
    pub db: u8,
    /// Slots to visit: `first..=last`, skipping those not in `mine`.
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
    /// Bitmap over all slots: the slots this node answers for, so each key
    /// is counted by exactly one node.
    pub mine: Bytes,
    /// Glob pattern on the key, if any.
    pub pattern: Option<Bytes>,
    /// Only count, do not return the keys (DBSIZE).
    pub count_only: bool,
}

/// A reply to [`PeerRequest::Keys`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeysAnswer {
    /// Matching live keys with their slots, in slot order.
    pub keys: Vec<(u16, Bytes)>,
    /// How many matched (equals `keys.len()` unless `count_only`).
    pub count: u64,
    /// Where a cluster-wide listing stopped early (SCAN's next cursor).
    pub resume: Option<u16>,
}

/// A response to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The encoded record, or none.
    Record(Option<Bytes>),
    /// Done.
    Ack,
    /// A forwarded command's reply.
    Reply(WireReply),
    /// Keys of a [`PeerRequest::Keys`].
    Keys(KeysAnswer),
    /// The request failed; the text is a Redis error line.
    Error(String),
    /// A merge was applied, but this replica held versions the sender
    /// lacked: here is the merged copy (encoded record).
    Diverged(Bytes),
    /// A forwarded command's reply, with the records it wrote for the forwarder to store before it answers.
    Handback {
        /// The reply.
        reply: WireReply,
        /// The records, in the order written.
        records: Vec<Written>,
    },
    /// The answers to a [`PeerRequest::ForwardBatch`] or a [`PeerRequest::MergeBatch`], in its order.
    Batch(Vec<PeerResponse>),
    /// The encoded records of a [`PeerRequest::ReadBatch`]'s keys, in its order.
    Records(Vec<Option<Bytes>>),
}

/// [`Reply`] as it crosses the bus (owned strings only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum WireReply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    NilArray,
    Array(Vec<WireReply>),
    Map(Vec<(WireReply, WireReply)>),
    Set(Vec<WireReply>),
    Verbatim(String),
    /// `+OK`, the reply of most writes, without a string to allocate.
    Ok,
}

impl From<Reply> for WireReply {
    fn from(reply: Reply) -> Self {
        let many = |items: Vec<Reply>| items.into_iter().map(WireReply::from).collect();
        match reply {
            Reply::Ok => WireReply::Ok,
            Reply::Status(s) => WireReply::Status(s.into()),
            Reply::StatusOwned(s) => WireReply::Status(s),
            Reply::Error(e) => WireReply::Error(e),
            Reply::Int(n) => WireReply::Int(n),
            Reply::Bulk(b) => WireReply::Bulk(b),
            Reply::Nil => WireReply::Nil,
            Reply::NilArray => WireReply::NilArray,
            Reply::Array(items) => WireReply::Array(many(items)),
            Reply::Set(items) => WireReply::Set(many(items)),
            Reply::Map(pairs) => WireReply::Map(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()),
            Reply::Verbatim(text) => WireReply::Verbatim(text),
        }
    }
}

impl From<WireReply> for Reply {
    fn from(wire: WireReply) -> Self {
        let many = |items: Vec<WireReply>| items.into_iter().map(Reply::from).collect();
        match wire {
            WireReply::Ok => Reply::Ok,
            WireReply::Status(s) if s == "OK" => Reply::Ok,
            WireReply::Status(s) => Reply::StatusOwned(s),
            WireReply::Error(e) => Reply::Error(e),
            WireReply::Int(n) => Reply::Int(n),
            WireReply::Bulk(b) => Reply::Bulk(b),
            WireReply::Nil => Reply::Nil,
            WireReply::NilArray => Reply::NilArray,
            WireReply::Array(items) => Reply::Array(many(items)),
            WireReply::Set(items) => Reply::Set(many(items)),
            WireReply::Map(pairs) => Reply::Map(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect()),
            WireReply::Verbatim(text) => Reply::Verbatim(text),
        }
    }
}
