//! Forwarding a write to its keys' coordinator, one command or a pipeline's batch per message, with this node's
//! copies of the keys going along and the records written for them coming back (see [`handback`](crate::cluster::handback)).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use smallvec::SmallVec;

use super::{Coordinator, Peers};
use crate::cluster::messages::{Forwarded, KeyCopy, PeerRequest, PeerResponse, Written};
use crate::cluster::ring::MemberIndex;
use crate::cluster::slot::key_slot;
use crate::error::{CommandError, CommandResult};
use crate::node::Stats;
use crate::replica::KeyAt;
use crate::server::reply::Reply;

impl Coordinator {
    /// Runs a command at another member, as coordinator of its keys (at
    /// positions `keys` of its argv). This node's copies of the keys it is a
    /// replica of go along, and the records written for them come back in the
    /// reply (see [`handback`](crate::cluster::handback)).
    pub async fn forward(
        &self,
        to: MemberIndex,
        mut command: Forwarded,
        keys: impl Iterator<Item = usize>,
    ) -> CommandResult<Reply> {
        let Some(peers) = &self.peers else {
            return Err(CommandError::NoReplica);
        };
        Stats::bump(&self.stats.forwarded);
        let keys = keys.filter_map(|i| command.argv.get(i));
        command.copies = self.copies_of(command.db, keys.map(|key| (key, key_slot(key))))?;
        let reply = self.forward_chunk(peers, to, vec![command]).await.pop();
        reply.unwrap_or_else(|| Err(self.peer_error(to, "no answer")))
    }

    /// Runs commands on distinct keys, one key each at `argv[1]` (its slot beside it), at member `to`, their keys'
    /// coordinator, in as few messages as the frame size allows; answers each, in order. Otherwise as
    /// [`Coordinator::forward`].
    pub async fn forward_batch(&self, to: MemberIndex, commands: Vec<(Forwarded, u16)>) -> Vec<CommandResult<Reply>> {
        let Some(peers) = &self.peers else {
            return commands.iter().map(|_| Err(CommandError::NoReplica)).collect();
        };
        let mut failed: Vec<(usize, CommandError)> = Vec::new();
        let mut ready = Vec::with_capacity(commands.len());
        for (i, (mut command, slot)) in commands.into_iter().enumerate() {
            Stats::bump(&self.stats.forwarded);
            match self.copies_of(command.db, command.argv.get(1).map(|key| (key, slot)).into_iter()) {
                Ok(copies) => {
                    command.copies = copies;
                    ready.push(command);
                }
                Err(e) => failed.push((i, e)),
            }
        }
        let chunks = chunk_by_size(ready, BATCH_BYTES);
        let calls = chunks.into_iter().map(|chunk| self.forward_chunk(peers, to, chunk));
        let mut replies: Vec<CommandResult<Reply>> = join_all(calls).await.into_iter().flatten().collect();
        for (i, e) in failed {
            replies.insert(i, Err(e));
        }
        replies
    }

    /// One message to `to` carrying `chunk`'s commands (a plain `Forward` for one), answered in order.
    async fn forward_chunk(&self, peers: &Peers, to: MemberIndex, chunk: Vec<Forwarded>) -> Vec<CommandResult<Reply>> {
        let n = chunk.len();
        // Records handed back land after the call: FLUSHDB waits for them.
        let _in_flight = chunk
            .iter()
            .any(|c| !c.copies.is_empty())
            .then(|| self.in_flight.enter());
        let request = match chunk.len() {
            1 => chunk.into_iter().next().map(PeerRequest::Forward),
            _ => Some(PeerRequest::ForwardBatch(chunk)),
        };
        let Some(request) = request else { return Vec::new() };
        Stats::bump(&self.stats.forward_messages);
        let responses = match peers.bus.call(to, request, forward_timeout(peers)).await {
            Ok(PeerResponse::Batch(responses)) if responses.len() == n => Ok(responses),
            Ok(PeerResponse::Batch(_)) => Err("a batch answered with another count".to_string()),
            Ok(single) if n == 1 => Ok(vec![single]),
            Ok(_) => Err("unexpected response".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match responses {
            Ok(responses) => {
                let handed = responses.iter().flat_map(handed_back);
                let slots: SmallVec<[u16; 16]> = handed.clone().map(|written| key_slot(&written.key)).collect();
                let keys = handed.zip(&slots);
                self.local
                    .prefetch(keys.map(|(written, &slot)| KeyAt::in_slot(written.db, slot, &written.key)));
                // Each response gets the slots of its own records, so one that fails midway shifts no other's.
                let mut rest = &slots[..];
                responses
                    .into_iter()
                    .map(|response| {
                        let (own, others) = rest.split_at(handed_back(&response).len().min(rest.len()));
                        rest = others;
                        self.forwarded_reply(peers, to, Ok(response), own)
                    })
                    .collect()
            }
            Err(e) => (0..n).map(|_| Err(self.peer_error(to, &e))).collect(),
        }
    }

    /// The client's reply to a command forwarded to `to`, once the records handed back with it are stored.
    fn forwarded_reply(
        &self,
        peers: &Peers,
        to: MemberIndex,
        response: Result<PeerResponse, String>,
        slots: &[u16],
    ) -> CommandResult<Reply> {
        match response {
            Ok(PeerResponse::Reply(reply)) => Ok(reply.into()),
            Ok(PeerResponse::Handback { reply, records }) => {
                self.take_back(peers, to, records, slots)?;
                Ok(reply.into())
            }
            Ok(PeerResponse::Error(e)) => Ok(Reply::Error(e)),
            Ok(_) => Err(self.peer_error(to, "unexpected response")),
            Err(e) => Err(self.peer_error(to, &e)),
        }
    }

    /// This node's copies of those of `keys` (each with its slot) it is a replica of (a key named
    /// twice is sent twice; merging an equal copy again costs a comparison).
    fn copies_of<'a>(&self, db: u8, keys: impl Iterator<Item = (&'a Bytes, u16)>) -> CommandResult<Vec<KeyCopy>> {
        let ring = self.membership.ring();
        let me = self.membership.me();
        let mut copies: Vec<KeyCopy> = Vec::with_capacity(keys.size_hint().0);
        for (key, slot) in keys {
            if !ring.preference_list(slot).contains(&me) {
                continue;
            }
            copies.push(KeyCopy {
                key: key.clone(),
                record: self.local.read_encoded(KeyAt::in_slot(db, slot, key))?,
            });
        }
        Ok(copies)
    }

    /// Stores the records a coordinator handed back; the write's reply waits
    /// for them, as they count towards its W. A copy that turns out to hold
    /// versions the coordinator's lacks (a concurrent repair) goes back to it.
    /// `slots` are the records' slots, in order.
    fn take_back(&self, peers: &Peers, from: MemberIndex, records: Vec<Written>, slots: &[u16]) -> CommandResult<()> {
        for (i, handed) in records.into_iter().enumerate() {
            Stats::bump(&self.stats.handed_back);
            let basis = handed.basis.as_ref();
            // One slot per record by construction; a record without one is still stored, its slot hashed here.
            let slot = slots.get(i).copied().unwrap_or_else(|| key_slot(&handed.key));
            if let Some(merged) =
                self.local
                    .merge_encoded(KeyAt::in_slot(handed.db, slot, &handed.key), &handed.record, basis)?
            {
                let request = PeerRequest::Merge {
                    db: handed.db,
                    key: handed.key,
                    record: Bytes::from(merged.encode()),
                    basis: None,
                };
                let (bus, timeout, in_flight) = (peers.bus.clone(), peers.timeout, self.in_flight.enter());
                tokio::spawn(async move {
                    let _in_flight = in_flight;
                    if let Err(e) = bus.call(from, request, timeout).await {
                        tracing::debug!("returning a diverged copy to member {from} failed: {e}");
                    }
                });
            }
        }
        Ok(())
    }
}

/// The records a coordinator handed back with `response`.
fn handed_back(response: &PeerResponse) -> &[Written] {
    match response {
        PeerResponse::Handback { records, .. } => records,
        _ => &[],
    }
}

/// How long a forwarder waits: the coordinator waits for its own peers first.
fn forward_timeout(peers: &Peers) -> Duration {
    peers.timeout * 2
}

/// Splits `commands`, in order, into runs of at most `budget` bytes on the wire; a bigger command runs alone.
fn chunk_by_size(commands: Vec<Forwarded>, budget: usize) -> Vec<Vec<Forwarded>> {
    // A pipeline's batch nearly always fits: keep its vector rather than move each command into a new one.
    if !commands.is_empty() && commands.iter().map(Forwarded::wire_size).sum::<usize>() <= budget {
        return vec![commands];
    }
    let mut chunks: Vec<Vec<Forwarded>> = Vec::new();
    let mut room = 0;
    for command in commands {
        let bytes = command.wire_size();
        match chunks.last_mut() {
            Some(chunk) if bytes <= room => {
                chunk.push(command);
                room -= bytes;
            }
            _ => {
                room = budget.saturating_sub(bytes);
                chunks.push(vec![command]);
            }
        }
    }
    chunks
}

/// Bytes of commands and copies per [`PeerRequest::ForwardBatch`]: far below the frame limit, so the answers (which
/// may carry written records and old values) fit too. A bigger command travels on its own.
const BATCH_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn set(len: usize) -> Forwarded {
        Forwarded {
            db: 0,
            resp: 2,
            read_quorum: 0,
            write_quorum: 0,
            argv: vec![
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                Bytes::from(vec![b'v'; len]),
            ],
            copies: Vec::new(),
        }
    }

    #[test]
    fn batches_keep_their_order_and_a_big_command_travels_alone() {
        let sizes = [100_000, 100_000, 100_000, 10, 300_000, 10, 10];
        let commands = sizes.iter().map(|&len| set(len)).collect();
        let chunks = chunk_by_size(commands, 256 * 1024);
        let value_sizes: Vec<Vec<usize>> = chunks
            .iter()
            .map(|chunk| chunk.iter().map(|c| c.argv[2].len()).collect())
            .collect();
        assert_eq!(
            value_sizes,
            [vec![100_000, 100_000], vec![100_000, 10], vec![300_000], vec![10, 10]]
        );
        for chunk in chunks.iter().filter(|chunk| chunk.len() > 1) {
            assert!(chunk.iter().map(Forwarded::wire_size).sum::<usize>() <= 256 * 1024);
        }
    }
}
