//! What this node answers on the peer bus: reads and merges of its copies,
//! commands forwarded to it as coordinator, key listings and flushes.

use std::sync::{Arc, OnceLock, Weak};

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::coordinator::{answer_keys, Scope};
use super::handback;
use super::messages::{Forwarded, PeerRequest, PeerResponse};
use super::slot::key_slot;
use super::wire;
use crate::commands;
use crate::error::CommandResult;
use crate::join::join_in_order;
use crate::net::{PeerId, Service};
use crate::node::{Node, Stats};
use crate::replica::{KeyAt, Replica};
use crate::server::reply::Reply;
use crate::version::Basis;

/// The answer to a forward that arrives while the node is not (or no longer) there to run it.
const STOPPING: &str = "LOADING node is starting or stopping";

/// The peer-bus service of one node.
pub struct PeerService {
    replica: Arc<Replica>,
    /// Set once the node exists (it owns the bus that owns this service).
    node: OnceLock<Weak<Node>>,
}

impl PeerService {
    /// A service over the local replica; call [`PeerService::attach`] once the node is built.
    pub fn new(replica: Arc<Replica>) -> Arc<PeerService> {
        Arc::new(PeerService {
            replica,
            node: OnceLock::new(),
        })
    }

    /// Lets forwarded commands reach the node.
    pub fn attach(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    /// The node, unless it is not built yet or is being dropped.
    fn node(&self) -> Option<Arc<Node>> {
        self.node.get().and_then(Weak::upgrade)
    }

    /// Runs a command `from` forwarded to this node as coordinator of its keys, merging the copies that came with
    /// it first and handing back the records written for them.
    /// `slot` is the slot of the key at `argv[1]`, if the caller has hashed it.
    async fn coordinate(&self, from: PeerId, mut command: Forwarded, slot: Option<u16>) -> PeerResponse {
        let Some(node) = self.node() else {
            return PeerResponse::Error(STOPPING.into());
        };
        if let Some(answer) = self.put_now(&node, from, &command, slot) {
            return answer;
        }
        let (db, copies) = (command.db, std::mem::take(&mut command.copies));
        // Boxed: a command's future is over a KiB, and the layers below would each move it.
        let run = Box::pin(commands::execute_forwarded(&node, command));
        let (reply, records) = handback::serve(&self.replica, from, db, copies, run).await;
        if records.is_empty() {
            PeerResponse::Reply(reply.into())
        } else {
            PeerResponse::Handback {
                reply: reply.into(),
                records,
            }
        }
    }

    /// A forwarded `SET key value` with the forwarder's copy, answered at once when
    /// [`Coordinator::put_forwarded`](super::coordinator::Coordinator::put_forwarded) can; `None` for the usual way.
    fn put_now(&self, node: &Node, from: PeerId, command: &Forwarded, slot: Option<u16>) -> Option<PeerResponse> {
        let [name, key, value] = &command.argv[..] else {
            return None;
        };
        let [copy] = &command.copies[..] else {
            return None;
        };
        if !name.eq_ignore_ascii_case(b"set") || copy.key != key || node.over_maxmemory() {
            return None;
        }
        let scope = Scope {
            db: command.db,
            read: command.read_quorum,
            write: command.write_quorum,
        };
        let written = node.coordinator.put_forwarded(
            scope,
            (key, slot.unwrap_or_else(|| key_slot(key))),
            value,
            (from, copy.record.as_ref()),
        )?;
        Stats::bump(&node.stats.commands);
        Some(match written {
            Ok(Some(written)) => PeerResponse::Handback {
                reply: Reply::Ok.into(),
                records: vec![written],
            },
            Ok(None) => PeerResponse::Reply(Reply::Ok.into()),
            Err(e) => PeerResponse::Reply(Reply::from(e).into()),
        })
    }

    /// Answers a read or merge of the local copy, or a fence; any other request is refused.
    fn answer_locally(&self, request: PeerRequest) -> PeerResponse {
        let answer = match request {
            PeerRequest::Read { db, key } => self
                .replica
                .read_encoded(KeyAt::new(db, &key))
                .map(PeerResponse::Record),
            PeerRequest::ReadBatch { db, keys } => {
                let keys: SmallVec<[KeyAt; 16]> = keys.iter().map(|key| KeyAt::new(db, key)).collect();
                self.replica.prefetch(keys.iter().copied());
                keys.iter()
                    .map(|&at| self.replica.read_encoded(at))
                    .collect::<CommandResult<_>>()
                    .map(PeerResponse::Records)
            }
            PeerRequest::Merge { db, key, record, basis } => {
                Ok(self.merge(KeyAt::new(db, &key), &record, basis.as_ref()))
            }
            PeerRequest::MergeBatch(merges) => {
                let keys: SmallVec<[KeyAt; 16]> = merges.iter().map(|merge| KeyAt::new(merge.db, &merge.key)).collect();
                self.replica.prefetch(keys.iter().copied());
                Ok(PeerResponse::Batch(
                    merges
                        .iter()
                        .zip(keys)
                        .map(|(merge, at)| self.merge(at, &merge.record, merge.basis.as_ref()))
                        .collect(),
                ))
            }
            PeerRequest::Fence => Ok(PeerResponse::Ack),
            _ => return PeerResponse::Error("ERR not a request for the local copy".into()),
        };
        answer.unwrap_or_else(|e| PeerResponse::Error(e.to_string()))
    }

    /// Merges another replica's copy of `key` into the local one: `Ack`, or `Diverged` with the merged copy if the
    /// local one held versions the sender lacked.
    fn merge(&self, at: KeyAt<'_>, record: &Bytes, basis: Option<&Basis>) -> PeerResponse {
        match self.replica.merge_encoded(at, record, basis) {
            Ok(None) => PeerResponse::Ack,
            Ok(Some(merged)) => PeerResponse::Diverged(Bytes::from(merged.encode())),
            Err(e) => PeerResponse::Error(e.to_string()),
        }
    }
}

impl Service for PeerService {
    type Request = PeerRequest;
    type Response = PeerResponse;

    /// A write's requests, read by hand (see [`wire`]).
    fn decode_request(frame: &Bytes, body: &[u8]) -> Option<PeerRequest> {
        wire::decode_request(frame, body)
    }

    /// A write's and a read's requests, written by hand (see [`wire`]).
    fn encode_request(request: &PeerRequest, out: &mut BytesMut) -> bool {
        wire::encode_request(request, out)
    }

    /// The common responses, written by hand (see [`wire`]).
    fn encode_response(response: &PeerResponse, out: &mut BytesMut) -> bool {
        wire::encode_response(response, out)
    }

    /// The common responses, read by hand (see [`wire`]).
    fn decode_response(frame: &Bytes, body: &[u8]) -> Option<PeerResponse> {
        wire::decode_response(frame, body)
    }

    /// Reads and merges of the local copy never wait, so they are answered on the connection's own task.
    fn handle_now(&self, _from: PeerId, request: PeerRequest) -> Result<PeerResponse, PeerRequest> {
        match request {
            local @ (PeerRequest::Read { .. }
            | PeerRequest::ReadBatch { .. }
            | PeerRequest::Merge { .. }
            | PeerRequest::MergeBatch(_)
            | PeerRequest::Fence) => Ok(self.answer_locally(local)),
            other => Err(other),
        }
    }

    async fn handle(self: Arc<Self>, from: PeerId, request: PeerRequest) -> PeerResponse {
        let answer = match request {
            // Boxed, so that the task spawned for every request is not as big as a command's future.
            PeerRequest::Forward(command) => return Box::pin(self.coordinate(from, command, None)).await,
            PeerRequest::ForwardBatch(commands) => {
                // Each command's key is at argv[1], its slot hashed once for the prefetch and the write.
                let slots: SmallVec<[Option<u16>; 16]> = commands
                    .iter()
                    .map(|c| c.argv.get(1).map(|key| key_slot(key)))
                    .collect();
                let keys = commands.iter().zip(&slots);
                self.replica
                    .prefetch(keys.filter_map(|(c, &slot)| Some(KeyAt::in_slot(c.db, slot?, c.argv.get(1)?))));
                // By index, not zipped: a zip of the two is no TrustedLen, and collecting it moved each future again.
                let runs = commands
                    .into_iter()
                    .enumerate()
                    .map(|(i, command)| self.coordinate(from, command, slots[i]));
                let runs = join_in_order(runs);
                let answers = match self.node() {
                    Some(node) => node.coordinator.batching(runs).await,
                    None => runs.await,
                };
                return PeerResponse::Batch(answers);
            }
            // Scans of the whole store: other tasks move to another worker meanwhile.
            PeerRequest::Keys(query) => {
                tokio::task::block_in_place(|| answer_keys(&self.replica, &query)).map(PeerResponse::Keys)
            }
            PeerRequest::Flush { db } => {
                tokio::task::block_in_place(|| self.replica.flush(db)).map(|()| PeerResponse::Ack)
            }
            PeerRequest::Drain => {
                if let Some(node) = self.node() {
                    node.coordinator.drain().await;
                }
                Ok(PeerResponse::Ack)
            }
            local @ (PeerRequest::Read { .. }
            | PeerRequest::ReadBatch { .. }
            | PeerRequest::Merge { .. }
            | PeerRequest::MergeBatch(_)
            | PeerRequest::Fence) => return self.answer_locally(local),
        };
        answer.unwrap_or_else(|e| PeerResponse::Error(e.to_string()))
    }

    async fn before_reply(&self) {
        if let Err(e) = self.replica.durability().before_reply().await {
            tracing::error!("cannot make replicated writes durable: {e}");
        }
    }
}
