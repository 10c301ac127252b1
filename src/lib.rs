//! ringkv: a Redis-protocol server that is, underneath, a Dynamo-style
//! distributed key-value store.
//!
//! Any Redis client connects to any node and uses strings and keys as with
//! Redis 7. Every record is a set of concurrent values (siblings) with a
//! dotted-version-vector context, so replication, quorums and conflict
//! detection sit under the command layer. A single node is a cluster of one;
//! listed members form a replicated cluster where any node takes any command.
//!
//! # Layout
//!
//! - [`config`]: TOML config plus command-line overrides, validated once.
//! - [`server`]: listener, connections, RESP framing ([`server::parse`]) and
//!   reply encoding ([`server::reply`]), the client registry.
//! - [`commands`]: the command table and one file per family (connection,
//!   server, strings, keyspace, cluster), and where a keyed write runs
//!   (`route`: here, forwarded to its coordinator, or split per key).
//! - [`error`]: every failure as a Redis error reply, in one place.
//! - [`cluster`]: key → slot ([`cluster::slot`]), slot → preference list
//!   ([`cluster::ring`]), the member list ([`cluster::membership`]), the
//!   coordinator that runs quorum reads and writes and read repair
//!   ([`cluster::coordinator`]), and what peers say to each other
//!   ([`cluster::messages`], answered by [`cluster::service`]). A forwarder's
//!   copies ride with its command ([`cluster::handback`]); a pipeline's reads
//!   are made together, ahead of its commands ([`cluster::preread`]).
//! - [`net`]: the peer bus: authenticated, multiplexed, coalescing TCP links
//!   between members.
//! - [`replica`]: one node's versioned records: read-modify-write under
//!   per-key locks, the expiry sweep.
//! - [`version`]: dotted version vectors, siblings and their merge; records
//!   read in place from their encoding for replication (`version/view.rs`).
//! - `varint`: postcard's variable-length integers written by hand, for
//!   records and the peer bus's hot messages (`cluster/wire.rs`).
//! - [`storage`]: the `Engine` trait with the disk (a write buffer and its
//!   journal over fjall), log (RAM plus an append-only log) and memory
//!   engines, the journal both durable engines share (`storage/journal.rs`),
//!   key layout, and durability (fsync policy with group commit).
//! - [`identity`]: node id and incarnation kept in the data dir.
//! - [`join`]: futures run concurrently with their outputs in order, for a
//!   pipeline's commands (`join_all` without its move of each finished one).
//! - [`sched`]: how the kernel schedules the node's threads (policy, time
//!   slice).
//! - [`node`]: state shared by all connections; [`run`] starts a node.
//! - [`allocator`]: mimalloc as the binary's global allocator, asked as
//!   `System` asks malloc.

pub mod allocator;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod error;
pub mod glob;
pub mod identity;
pub mod join;
pub mod net;
pub mod node;
pub mod replica;
pub mod sched;
pub mod server;
pub mod storage;
pub(crate) mod varint;
pub mod version;

mod run;

pub use run::{run, StartError};
