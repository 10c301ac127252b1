//! The coordinator: where a key operation runs and how many replicas must
//! answer. Commands call only this, never a replica or the bus.
//!
//! - Reads run at the node the client asked: it asks every replica of the key,
//!   answers once R have replied (merging their copies), and repairs the
//!   stale or missing copies in the background once the rest have replied.
//! - Writes run at the key's coordinator, the first reachable node of its
//!   preference list (the command layer forwards them there). It first merges
//!   R copies into its own (so a plain SET supersedes every acknowledged write
//!   and INCR counts from the newest value), applies the change under the
//!   key's lock, stores it, sends the new record to the other replicas in
//!   parallel and answers after W acknowledgements.
//!
//! A node without members is a cluster of one: every path short-cuts to the
//! local replica.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::handback;
use super::membership::Membership;
use super::messages::{Forwarded, Handed, KeyCopy, KeysAnswer, KeysQuery, PeerRequest, PeerResponse};
use super::preread;
use super::ring::MemberIndex;
use super::service::PeerService;
use super::slot::{key_slot, SLOTS};
use crate::clock::now_ms;
use crate::error::{CommandError, CommandResult};
use crate::glob;
use crate::net::Bus;
use crate::node::Stats;
use crate::replica::{Current, Mutation, RecordVisitor, Replica};
use crate::server::reply::Reply;
use crate::version::Record;

/// The database and the quorums one operation uses (a connection may
/// override R and W with CONSISTENCY; 0 means the configured default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope {
    /// Selected database.
    pub db: u8,
    /// R override, 0 for the default.
    pub read: u8,
    /// W override, 0 for the default.
    pub write: u8,
}

/// Where a write must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node coordinates it.
    Local,
    /// Forward it to this member.
    Remote(MemberIndex),
}

/// Counters for INFO's cluster section.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Commands forwarded to another coordinator.
    pub forwarded: AtomicU64,
    /// Messages that carried them (a pipeline's forwards to one coordinator share one).
    pub forward_messages: AtomicU64,
    /// Records a coordinator handed back with a forwarded command's reply.
    pub handed_back: AtomicU64,
    /// Copies sent to repair a stale or missing replica.
    pub read_repairs: AtomicU64,
    /// Operations refused for lack of a quorum.
    pub quorum_failures: AtomicU64,
}

/// The peers of a clustered node.
struct Peers {
    bus: Arc<Bus<PeerService>>,
    timeout: Duration,
}

/// Routes key operations to replicas and collects quorums.
pub struct Coordinator {
    local: Arc<Replica>,
    membership: Arc<Membership>,
    peers: Option<Peers>,
    read_quorum: usize,
    write_quorum: usize,
    /// INFO counters.
    pub stats: Arc<ClusterStats>,
    in_flight: Arc<InFlight>,
}

/// Replications and repairs sent and not yet answered, so FLUSHDB can wait
/// for them to land before it flushes (else a late copy would outlive it).
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One operation counted in [`InFlight`] until dropped.
struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Coordinator {
    /// A cluster of one over the local replica.
    pub fn single(local: Arc<Replica>, membership: Arc<Membership>) -> Coordinator {
        Coordinator {
            local,
            membership,
            peers: None,
            read_quorum: 1,
            write_quorum: 1,
            stats: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// A clustered coordinator talking to its peers over `bus`.
    pub fn clustered(
        local: Arc<Replica>,
        membership: Arc<Membership>,
        bus: Arc<Bus<PeerService>>,
        (read_quorum, write_quorum): (usize, usize),
        timeout: Duration,
    ) -> Coordinator {
        Coordinator {
            local,
            membership,
            peers: Some(Peers { bus, timeout }),
            read_quorum,
            write_quorum,
            stats: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// The local replica (INFO, durability waits, expiry sweep).
    pub fn local(&self) -> &Arc<Replica> {
        &self.local
    }

    /// The members and the ring.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// The peer bus, if this node has peers.
    pub fn bus(&self) -> Option<&Arc<Bus<PeerService>>> {
        self.peers.as_ref().map(|p| &p.bus)
    }

    /// Whether this node has peers.
    pub fn is_clustered(&self) -> bool {
        self.peers.is_some()
    }

    /// The (R, W) an operation in `scope` waits for, capped at N.
    pub fn quorums(&self, scope: Scope) -> (usize, usize) {
        let n = self.membership.ring().replicas();
        let pick = |over: u8, default: usize| if over == 0 { default } else { usize::from(over) };
        (
            pick(scope.read, self.read_quorum).min(n),
            pick(scope.write, self.write_quorum).min(n),
        )
    }

    /// Whether `member` can be talked to now (this node always can).
    pub fn is_reachable(&self, member: MemberIndex) -> bool {
        member == self.membership.me() || self.peers.as_ref().is_some_and(|p| p.bus.is_reachable(member))
    }

    /// The node that coordinates writes to `slot`: the first reachable one of its preference list.
    pub fn coordinator_of(&self, slot: u16) -> Option<MemberIndex> {
        let ring = self.membership.ring();
        ring.preference_list(slot)
            .iter()
            .copied()
            .find(|&m| self.is_reachable(m))
    }

    /// Every member's reachability now, by index (one look per member, not per slot).
    fn reachable_members(&self) -> Vec<bool> {
        (0..self.membership.members().len() as MemberIndex)
            .map(|m| self.is_reachable(m))
            .collect()
    }

    /// Where a write to `key` runs.
    pub fn route(&self, key: &[u8]) -> CommandResult<Route> {
        if self.peers.is_none() {
            return Ok(Route::Local);
        }
        match self.coordinator_of(key_slot(key)) {
            Some(m) if m == self.membership.me() => Ok(Route::Local),
            Some(m) => Ok(Route::Remote(m)),
            None => Err(CommandError::NoReplica),
        }
    }

    /// The merged record of `key` from R replicas; stale replicas are repaired
    /// in the background.
    pub async fn read(&self, scope: Scope, key: &[u8]) -> CommandResult<Option<Arc<Record>>> {
        let Some(peers) = &self.peers else {
            return self.local.read(scope.db, key);
        };
        if let Some(answer) = preread::take(scope.db, key) {
            return answer;
        }
        let ring = self.membership.ring();
        let list = ring.preference_list(key_slot(key));
        let me = self.membership.me();
        let (need, _) = self.quorums(scope);
        let local_replica = list.contains(&me);
        if need == 1 && local_replica {
            return self.local.read(scope.db, key);
        }
        let key = Bytes::copy_from_slice(key);
        let mut pending = self.ask_copies(peers, list, scope.db, &key, None);
        let mut copies: Vec<(MemberIndex, Option<Arc<Record>>)> = Vec::with_capacity(list.len());
        if local_replica {
            copies.push((me, self.local.read(scope.db, &key)?));
        }
        while copies.len() < need {
            match pending.next().await {
                Some((m, Some(copy))) => copies.push((m, copy)),
                Some((_, None)) => {}
                None => break,
            }
        }
        let merged = merge_copies(&copies);
        if copies.len() < need {
            Stats::bump(&self.stats.quorum_failures);
            return Err(CommandError::ReadQuorum {
                answered: copies.len(),
                needed: need,
                replicas: list.len(),
            });
        }
        self.repair_later(peers, scope.db, key, copies, pending);
        Ok(merged)
    }

    /// Asks every other replica in `list` but `except` for its copy of `key`;
    /// each future yields the member and its copy (`None` if it did not answer).
    fn ask_copies(
        &self,
        peers: &Peers,
        list: &[MemberIndex],
        db: u8,
        key: &Bytes,
        except: Option<MemberIndex>,
    ) -> FuturesUnordered<impl std::future::Future<Output = (MemberIndex, Option<Option<Arc<Record>>>)> + Send + 'static>
    {
        let me = self.membership.me();
        list.iter()
            .copied()
            .filter(|&m| m != me && Some(m) != except)
            .map(|m| {
                let bus = peers.bus.clone();
                let request = PeerRequest::Read { db, key: key.clone() };
                let timeout = peers.timeout;
                async move {
                    let copy = match bus.call(m, request, timeout).await {
                        Ok(PeerResponse::Record(None)) => Some(None),
                        Ok(PeerResponse::Record(Some(bytes))) => Record::decode(&bytes).map(|r| Some(Arc::new(r))),
                        Ok(_) | Err(_) => None,
                    };
                    (m, copy)
                }
            })
            .collect()
    }

    /// Once the replicas still pending have answered, sends the merge of all
    /// copies to every replica whose copy differs from it.
    fn repair_later(
        &self,
        peers: &Peers,
        db: u8,
        key: Bytes,
        mut copies: Vec<(MemberIndex, Option<Arc<Record>>)>,
        mut pending: FuturesUnordered<
            impl std::future::Future<Output = (MemberIndex, Option<Option<Arc<Record>>>)> + Send + 'static,
        >,
    ) {
        let repairer = self.repairer(peers);
        let in_flight = self.in_flight.enter();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            while let Some((m, copy)) = pending.next().await {
                if let Some(copy) = copy {
                    copies.push((m, copy));
                }
            }
            repairer.repair(db, &key, copies).await;
        });
    }

    /// What a background read repair needs.
    fn repairer(&self, peers: &Peers) -> Repairer {
        Repairer {
            bus: peers.bus.clone(),
            timeout: peers.timeout,
            local: self.local.clone(),
            stats: self.stats.clone(),
            me: self.membership.me(),
        }
    }

    /// [`Coordinator::read`] of several keys at once: each replica is asked once for all the keys it holds, and
    /// each key is answered (or refused) once R replicas have answered for it. Stale copies are repaired in the
    /// background once every replica has answered.
    pub async fn read_many(&self, scope: Scope, keys: &[Bytes]) -> Vec<CommandResult<Option<Arc<Record>>>> {
        let Some(peers) = &self.peers else {
            return keys.iter().map(|key| self.local.read(scope.db, key)).collect();
        };
        let (db, me, ring) = (scope.db, self.membership.me(), self.membership.ring());
        let (need, _) = self.quorums(scope);
        let lists: Vec<&[MemberIndex]> = keys.iter().map(|key| ring.preference_list(key_slot(key))).collect();
        let mut errors: Vec<Option<CommandError>> = keys.iter().map(|_| None).collect();
        let mut copies: Vec<Copies> = Vec::with_capacity(keys.len());
        for (i, (key, list)) in keys.iter().zip(&lists).enumerate() {
            let mut found = Vec::with_capacity(list.len());
            if list.contains(&me) {
                match self.local.read(db, key) {
                    Ok(copy) => found.push((me, copy)),
                    Err(e) => errors[i] = Some(e),
                }
            }
            copies.push(found);
        }
        let members = self.membership.members().len() as MemberIndex;
        let mut pending: FuturesUnordered<_> = (0..members)
            .filter(|&m| m != me)
            .filter_map(|m| {
                let at: Vec<usize> = (0..keys.len())
                    .filter(|&i| errors[i].is_none() && copies[i].len() < need && lists[i].contains(&m))
                    .collect();
                if at.is_empty() {
                    return None;
                }
                let request = PeerRequest::ReadBatch {
                    db,
                    keys: at.iter().map(|&i| keys[i].clone()).collect(),
                };
                let (bus, timeout) = (peers.bus.clone(), peers.timeout);
                Some(async move {
                    let answer = match bus.call(m, request, timeout).await {
                        Ok(PeerResponse::Records(records)) if records.len() == at.len() => records,
                        _ => Vec::new(),
                    };
                    (m, at, answer)
                })
            })
            .collect();
        let asked = !pending.is_empty();
        let short = |copies: &[Copies], errors: &[Option<CommandError>]| {
            copies
                .iter()
                .zip(errors)
                .any(|(found, e)| e.is_none() && found.len() < need)
        };
        while short(&copies, &errors) {
            let Some((m, at, answer)) = pending.next().await else {
                break;
            };
            add_copies(&mut copies, m, at, answer);
        }
        let answers = errors
            .into_iter()
            .zip(&copies)
            .zip(&lists)
            .map(|((error, found), list)| match error {
                Some(e) => Err(e),
                None if found.len() < need => {
                    Stats::bump(&self.stats.quorum_failures);
                    Err(CommandError::ReadQuorum {
                        answered: found.len(),
                        needed: need,
                        replicas: list.len(),
                    })
                }
                None => Ok(merge_copies(found)),
            })
            .collect();
        if asked {
            let (repairer, in_flight, keys) = (self.repairer(peers), self.in_flight.enter(), keys.to_vec());
            tokio::spawn(async move {
                let _in_flight = in_flight;
                while let Some((m, at, answer)) = pending.next().await {
                    add_copies(&mut copies, m, at, answer);
                }
                for (key, found) in keys.iter().zip(copies) {
                    repairer.repair(db, key, found).await;
                }
            });
        }
        answers
    }

    /// Merges R copies of `key` (this node's included) into the local one
    /// before a write, so the write supersedes what a quorum has acknowledged.
    async fn catch_up(&self, peers: &Peers, scope: Scope, list: &[MemberIndex], key: &[u8], need: usize) {
        // A forwarder's copy came with the command and is merged already.
        let forwarder = handback::forwarder_of(scope.db, key, list);
        let mut answered = 1 + usize::from(forwarder.is_some());
        if answered >= need {
            return;
        }
        let key = Bytes::copy_from_slice(key);
        let mut pending = self.ask_copies(peers, list, scope.db, &key, forwarder);
        while answered < need {
            match pending.next().await {
                Some((_, Some(copy))) => {
                    answered += 1;
                    if let Some(copy) = copy {
                        if let Err(e) = self.local.merge(scope.db, &key, &copy) {
                            tracing::warn!("merging a replica's copy before a write failed: {e}");
                        }
                    }
                }
                Some((_, None)) => {}
                None => break,
            }
        }
    }

    /// A read-modify-write of one key at this node, its coordinator,
    /// acknowledged by W replicas.
    pub async fn update<T>(
        &self,
        scope: Scope,
        key: &[u8],
        decide: impl FnOnce(Current<'_>) -> CommandResult<(Mutation, T)>,
    ) -> CommandResult<T> {
        let Some(peers) = &self.peers else {
            return self.local.update(scope.db, key, decide);
        };
        let ring = self.membership.ring();
        let list = ring.preference_list(key_slot(key));
        if !list.contains(&self.membership.me()) {
            return Err(CommandError::NoReplica);
        }
        let (read, write) = self.quorums(scope);
        self.catch_up(peers, scope, list, key, read).await;
        let (out, written) = self.local.update_returning(scope.db, key, decide)?;
        if let Some(record) = written {
            // Versions a replica reports that this node lacked stay siblings:
            // catch_up already merged a quorum's copies before `decide` ran.
            let diverged = self.replicate(peers, scope.db, key, &record, list, write).await?;
            for copy in &diverged {
                self.local.merge(scope.db, key, copy)?;
            }
        }
        Ok(out)
    }

    /// A read-modify-write of several keys, atomic on this node, which must
    /// be a replica of all of them (RENAME, MSET and MSETNX within one
    /// coordinator).
    pub async fn update_many<T>(
        &self,
        scope: Scope,
        keys: &[&[u8]],
        decide: impl FnOnce(&[Current<'_>]) -> CommandResult<(Vec<Mutation>, T)>,
    ) -> CommandResult<T> {
        let Some(peers) = &self.peers else {
            return self.local.update_many(scope.db, keys, decide).map(|(out, _)| out);
        };
        let ring = self.membership.ring();
        let me = self.membership.me();
        if keys.iter().any(|k| !ring.preference_list(key_slot(k)).contains(&me)) {
            return Err(CommandError::CrossSlot);
        }
        let (read, write) = self.quorums(scope);
        // Keys are read and replicated in parallel: an MSET of one hash tag
        // may name thousands, and one round trip after another adds up.
        let catch_ups = keys
            .iter()
            .map(|key| self.catch_up(peers, scope, ring.preference_list(key_slot(key)), key, read));
        join_all(catch_ups).await;
        let (out, written) = self.local.update_many(scope.db, keys, decide)?;
        let replications = keys.iter().zip(&written).filter_map(|(key, record)| {
            let list = ring.preference_list(key_slot(key));
            record
                .as_ref()
                .map(|record| self.replicate(peers, scope.db, key, record, list, write))
        });
        match join_all(replications).await.into_iter().find_map(Result::err) {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Sends a record this node wrote to the other replicas in `list`; Ok once
    /// `write` replicas (this one included) hold it.
    async fn replicate(
        &self,
        peers: &Peers,
        db: u8,
        key: &[u8],
        record: &Record,
        list: &[MemberIndex],
        write: usize,
    ) -> CommandResult<Vec<Record>> {
        let me = self.membership.me();
        // The forwarder, a replica that sent its copy, stores the record from the reply before answering.
        let mut forwarder = handback::forwarder_of(db, key, list);
        let (key, encoded) = (Bytes::copy_from_slice(key), Bytes::from(record.encode()));
        let request = || PeerRequest::Merge {
            db,
            key: key.clone(),
            record: encoded.clone(),
        };
        let others = list.iter().copied().filter(|&m| m != me && Some(m) != forwarder);
        let mut acked = 1 + usize::from(forwarder.is_some());
        if acked >= write {
            // No ack will be waited for: the record is told, not asked (drain's fence covers it).
            for m in others {
                if let Err(e) = peers.bus.tell(m, request()) {
                    tracing::debug!("replicating to member {m} failed: {e}");
                }
            }
            if forwarder.is_some() {
                handback::hand_back(db, &key, encoded.clone());
            }
            return Ok(Vec::new());
        }
        let in_flight = self.in_flight.enter();
        let merge = |m: MemberIndex| {
            let (bus, timeout, request) = (peers.bus.clone(), peers.timeout, request());
            async move { bus.call(m, request, timeout).await }
        };
        let mut acks: FuturesUnordered<_> = others.map(merge).collect();
        let mut diverged = Vec::new();
        loop {
            while acked < write {
                match acks.next().await {
                    Some(Ok(PeerResponse::Ack)) => acked += 1,
                    Some(Ok(PeerResponse::Diverged(bytes))) => {
                        acked += 1;
                        diverged.extend(Record::decode(&bytes));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            // Short of W without the forwarder's copy: ask for its ack the usual way, so the count is exact.
            match forwarder.take() {
                Some(m) if acked < write => {
                    acked -= 1;
                    acks.push(merge(m));
                }
                Some(_) => handback::hand_back(db, &key, encoded.clone()),
                None => break,
            }
        }
        if acked < write {
            Stats::bump(&self.stats.quorum_failures);
            return Err(CommandError::WriteQuorum {
                acked,
                needed: write,
                replicas: list.len(),
            });
        }
        if !acks.is_empty() {
            // Not waited for, but counted until they land (FLUSHDB's fence).
            tokio::spawn(async move {
                let _in_flight = in_flight;
                while acks.next().await.is_some() {}
            });
        }
        Ok(diverged)
    }

    /// A plain SET: a value superseding everything, written without first
    /// reading the other replicas. If a replica answers that it held versions
    /// this node had not seen (this node was down or cut off when they were
    /// written), they are merged in and the value is written once more over
    /// them, so a plain SET still supersedes every acknowledged write: any W
    /// acks include a replica of every write W acknowledged when W + W > N.
    pub async fn put(&self, scope: Scope, key: &[u8], value: Bytes, expire_at_ms: Option<u64>) -> CommandResult<()> {
        let put = || Mutation::Put {
            value: value.clone(),
            expire_at_ms,
        };
        let Some(peers) = &self.peers else {
            return self.local.update(scope.db, key, |_| Ok((put(), ())));
        };
        let ring = self.membership.ring();
        let list = ring.preference_list(key_slot(key));
        if !list.contains(&self.membership.me()) {
            return Err(CommandError::NoReplica);
        }
        let (_, write) = self.quorums(scope);
        for _ in 0..3 {
            let ((), written) = self.local.update_returning(scope.db, key, |_| Ok((put(), ())))?;
            let Some(record) = written else { return Ok(()) };
            let diverged = self.replicate(peers, scope.db, key, &record, list, write).await?;
            if diverged.is_empty() {
                return Ok(());
            }
            for copy in &diverged {
                self.local.merge(scope.db, key, copy)?;
            }
        }
        Ok(())
    }

    /// Runs a command at another member, as coordinator of its keys (at
    /// positions `keys` of its argv). This node's copies of the keys it is a
    /// replica of go along, and the records written for them come back in the
    /// reply (see [`handback`]).
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
        command.copies = self.copies_of(command.db, keys.filter_map(|i| command.argv.get(i)))?;
        // Records handed back land after the call: FLUSHDB waits for them.
        let _in_flight = (!command.copies.is_empty()).then(|| self.in_flight.enter());
        Stats::bump(&self.stats.forward_messages);
        let response = peers
            .bus
            .call(to, PeerRequest::Forward(command), forward_timeout(peers))
            .await;
        self.forwarded_reply(peers, to, response.map_err(|e| e.to_string()))
    }

    /// Runs commands on distinct keys, one key each at `argv[1]`, at member `to`, their keys' coordinator, in as few
    /// messages as the frame size allows; answers each, in order. Otherwise as [`Coordinator::forward`].
    pub async fn forward_batch(&self, to: MemberIndex, commands: Vec<Forwarded>) -> Vec<CommandResult<Reply>> {
        let Some(peers) = &self.peers else {
            return commands.iter().map(|_| Err(CommandError::NoReplica)).collect();
        };
        let mut chunks: Vec<Vec<Forwarded>> = Vec::new();
        let mut failed: Vec<(usize, CommandError)> = Vec::new();
        let mut chunk_bytes = 0;
        for (i, mut command) in commands.into_iter().enumerate() {
            Stats::bump(&self.stats.forwarded);
            match self.copies_of(command.db, command.argv.get(1).into_iter()) {
                Ok(copies) => command.copies = copies,
                Err(e) => {
                    failed.push((i, e));
                    continue;
                }
            }
            let bytes = command.wire_size();
            if chunks.is_empty() || chunk_bytes + bytes > BATCH_BYTES {
                chunks.push(Vec::new());
                chunk_bytes = 0;
            }
            chunk_bytes += bytes;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(command);
            }
        }
        let calls = chunks.into_iter().map(|chunk| self.forward_chunk(peers, to, chunk));
        let mut replies: Vec<CommandResult<Reply>> = join_all(calls).await.into_iter().flatten().collect();
        for (i, e) in failed {
            replies.insert(i, Err(e));
        }
        replies
    }

    /// One message of [`Coordinator::forward_batch`].
    async fn forward_chunk(&self, peers: &Peers, to: MemberIndex, chunk: Vec<Forwarded>) -> Vec<CommandResult<Reply>> {
        let n = chunk.len();
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
            Ok(responses) => responses
                .into_iter()
                .map(|response| self.forwarded_reply(peers, to, Ok(response)))
                .collect(),
            Err(e) => (0..n).map(|_| Err(self.peer_error(to, &e))).collect(),
        }
    }

    /// The client's reply to a command forwarded to `to`, once the records handed back with it are stored.
    fn forwarded_reply(
        &self,
        peers: &Peers,
        to: MemberIndex,
        response: Result<PeerResponse, String>,
    ) -> CommandResult<Reply> {
        match response {
            Ok(PeerResponse::Reply(reply)) => Ok(reply.into()),
            Ok(PeerResponse::Handback { reply, records }) => {
                self.take_back(peers, to, records)?;
                Ok(reply.into())
            }
            Ok(PeerResponse::Error(e)) => Ok(Reply::Error(e)),
            Ok(_) => Err(self.peer_error(to, "unexpected response")),
            Err(e) => Err(self.peer_error(to, &e)),
        }
    }

    /// This node's copies of those of `keys` it is a replica of (a key named
    /// twice is sent twice; merging an equal copy again costs a comparison).
    fn copies_of<'a>(&self, db: u8, keys: impl Iterator<Item = &'a Bytes>) -> CommandResult<Vec<KeyCopy>> {
        let ring = self.membership.ring();
        let me = self.membership.me();
        let mut copies: Vec<KeyCopy> = Vec::new();
        for key in keys {
            if !ring.preference_list(key_slot(key)).contains(&me) {
                continue;
            }
            let record = self.local.read(db, key)?.map(|r| Bytes::from(r.encode()));
            copies.push(KeyCopy {
                key: key.clone(),
                record,
            });
        }
        Ok(copies)
    }

    /// Stores the records a coordinator handed back; the write's reply waits
    /// for them, as they count towards its W. A copy that turns out to hold
    /// versions the coordinator's lacks (a concurrent repair) goes back to it.
    fn take_back(&self, peers: &Peers, from: MemberIndex, records: Vec<Handed>) -> CommandResult<()> {
        for handed in records {
            Stats::bump(&self.stats.handed_back);
            let Some(record) = Record::decode(&handed.record) else {
                return Err(self.peer_error(from, "malformed record handed back"));
            };
            if let Some(merged) = self.local.merge(handed.db, &handed.key, &record)? {
                let request = PeerRequest::Merge {
                    db: handed.db,
                    key: handed.key,
                    record: Bytes::from(merged.encode()),
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

    fn peer_error(&self, member: MemberIndex, reason: &str) -> CommandError {
        CommandError::Peer {
            node: self.membership.member(member).id.clone(),
            reason: reason.to_string(),
        }
    }

    /// Which member answers for each slot in cluster-wide key listings: the
    /// first reachable replica, so each key is listed once.
    fn slot_owners(&self) -> CommandResult<Vec<MemberIndex>> {
        let ring = self.membership.ring();
        let reachable = self.reachable_members();
        (0..SLOTS)
            .map(|slot| {
                let list = ring.preference_list(slot);
                let owner = list.iter().copied().find(|&m| reachable[usize::from(m)]);
                owner.ok_or(CommandError::NoReplica)
            })
            .collect()
    }

    /// Live keys of `db` across the cluster, in `slots` (SCAN, KEYS,
    /// DBSIZE, RANDOMKEY). Each key is listed by one node only: the first
    /// reachable replica of its slot. With a `limit`, slots are visited in
    /// growing windows, every member at once, until `limit` keys are found;
    /// the answer ends at a slot boundary and `resume` says where to go on.
    pub async fn keys(
        &self,
        db: u8,
        slots: RangeInclusive<u16>,
        pattern: Option<Bytes>,
        limit: usize,
        count_only: bool,
    ) -> CommandResult<KeysAnswer> {
        let owners = self.slot_owners()?;
        let members = self.membership.members().len() as MemberIndex;
        let (mut from, end) = (*slots.start(), (*slots.end()).min(SLOTS - 1));
        // A window about as many slots wide as keys are wanted, doubled while
        // it brings too few: SCAN COUNT 10 reads a few slots, not thousands.
        let mut window = if limit == 0 {
            u32::from(SLOTS)
        } else {
            limit.clamp(1, 1024) as u32
        };
        let mut answer = KeysAnswer::default();
        while from <= end {
            let last = (u32::from(from) + window - 1).min(u32::from(end)) as u16;
            let queries = (0..members).filter_map(|member| {
                let mut mine = vec![0u8; usize::from(SLOTS) / 8];
                let mut any = false;
                for slot in from..=last {
                    if owners[usize::from(slot)] == member {
                        mine[usize::from(slot) / 8] |= 1 << (slot % 8);
                        any = true;
                    }
                }
                let query = KeysQuery {
                    db,
                    first: from,
                    last,
                    mine: Bytes::from(mine),
                    pattern: pattern.clone(),
                    count_only,
                };
                any.then(|| self.keys_at(member, query))
            });
            for part in join_all(queries).await {
                let part = part?;
                answer.count += part.count;
                answer.keys.extend(part.keys);
            }
            if limit != 0 && answer.keys.len() >= limit {
                // Cut after the slot holding the limit-th key, so slots are never split.
                answer.keys.sort_by_key(|(slot, _)| *slot);
                let cut = answer.keys[limit - 1].0;
                answer.keys.retain(|(slot, _)| *slot <= cut);
                answer.count = answer.keys.len() as u64;
                answer.resume = (cut < end).then_some(cut + 1);
                return Ok(answer);
            }
            if last >= end {
                break;
            }
            from = last + 1;
            window = (window * 2).min(u32::from(SLOTS));
        }
        answer.keys.sort_by_key(|(slot, _)| *slot);
        Ok(answer)
    }

    async fn keys_at(&self, member: MemberIndex, query: KeysQuery) -> CommandResult<KeysAnswer> {
        let peers = match &self.peers {
            Some(peers) if member != self.membership.me() => peers,
            _ => return tokio::task::block_in_place(|| answer_keys(&self.local, &query)),
        };
        match peers.bus.call(member, PeerRequest::Keys(query), peers.timeout).await {
            Ok(PeerResponse::Keys(answer)) => Ok(answer),
            Ok(PeerResponse::Error(e)) => Err(self.peer_error(member, &e)),
            Ok(_) => Err(self.peer_error(member, "unexpected response")),
            Err(e) => Err(self.peer_error(member, &e.to_string())),
        }
    }

    /// Visits this node's records of `db` from `from_slot` on (INFO keyspace).
    pub async fn scan_local(&self, db: u8, from_slot: u16, visit: &mut RecordVisitor<'_>) -> CommandResult<()> {
        self.local.scan(db, from_slot..=SLOTS - 1, visit)
    }

    /// Waits (at most the request timeout) until every replication and
    /// repair this node has in flight has landed or failed.
    pub async fn drain(&self) {
        let Some(peers) = &self.peers else { return };
        let idle = async {
            loop {
                let notified = self.in_flight.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(peers.timeout, idle).await;
        // Merges told without an ack are applied in order with what follows
        // on their link, so a call answered after them shows they landed.
        let me = self.membership.me();
        let fences = (0..self.membership.members().len() as MemberIndex)
            .filter(|&m| m != me)
            .map(|m| peers.bus.call(m, PeerRequest::Fence, peers.timeout));
        join_all(fences).await;
    }

    /// FLUSHDB (`Some(db)`) or FLUSHALL (`None`) on every node. Refused
    /// unless every member is reachable, so no node keeps keys the others
    /// dropped (read repair would bring them back). First every node's
    /// replication in flight is let land, so none arrives after the flush.
    pub async fn flush(&self, db: Option<u8>) -> CommandResult<()> {
        let Some(peers) = &self.peers else {
            return self.local.flush(db);
        };
        let me = self.membership.me();
        let others: Vec<MemberIndex> = (0..self.membership.members().len() as MemberIndex)
            .filter(|&m| m != me)
            .collect();
        if let Some(&down) = others.iter().find(|&&m| !self.is_reachable(m)) {
            return Err(self.peer_error(down, "unreachable; FLUSHDB and FLUSHALL need every node"));
        }
        let drains = others
            .iter()
            .map(|&m| peers.bus.call(m, PeerRequest::Drain, peers.timeout));
        futures_util::future::join(self.drain(), join_all(drains)).await;
        tokio::task::block_in_place(|| self.local.flush(db))?;
        let calls = others.iter().map(|&m| async move {
            let answer = peers.bus.call(m, PeerRequest::Flush { db }, peers.timeout).await;
            (m, answer)
        });
        for (m, answer) in join_all(calls).await {
            match answer {
                Ok(PeerResponse::Ack) => {}
                Ok(PeerResponse::Error(e)) => return Err(self.peer_error(m, &e)),
                Ok(_) => return Err(self.peer_error(m, "unexpected response")),
                Err(e) => return Err(self.peer_error(m, &e.to_string())),
            }
        }
        Ok(())
    }
}

/// The copies of one key that replicas answered with, by member.
type Copies = Vec<(MemberIndex, Option<Arc<Record>>)>;

/// Adds member `m`'s answer to a [`PeerRequest::ReadBatch`] for the keys at positions `at` (empty if it failed; an
/// undecodable record counts as no answer).
fn add_copies(copies: &mut [Copies], m: MemberIndex, at: Vec<usize>, answer: Vec<Option<Bytes>>) {
    for (i, record) in at.into_iter().zip(answer) {
        let copy = match record {
            None => Some(None),
            Some(bytes) => Record::decode(&bytes).map(|r| Some(Arc::new(r))),
        };
        if let Some(copy) = copy {
            copies[i].push((m, copy));
        }
    }
}

/// Sends repaired copies from a background task.
struct Repairer {
    bus: Arc<Bus<PeerService>>,
    timeout: Duration,
    local: Arc<Replica>,
    stats: Arc<ClusterStats>,
    me: MemberIndex,
}

impl Repairer {
    /// Sends the merge of all `copies` of `key` to every replica whose copy differs from it.
    async fn repair(&self, db: u8, key: &Bytes, copies: Copies) {
        let Some(merged) = merge_copies(&copies) else {
            return;
        };
        let mut encoded = None;
        for (m, copy) in copies {
            if copy.as_deref() == Some(&*merged) {
                continue;
            }
            Stats::bump(&self.stats.read_repairs);
            if m == self.me {
                if let Err(e) = self.local.merge(db, key, &merged) {
                    tracing::warn!("read repair of the local copy failed: {e}");
                }
                continue;
            }
            let record = encoded.get_or_insert_with(|| Bytes::from(merged.encode())).clone();
            let request = PeerRequest::Merge {
                db,
                key: key.clone(),
                record,
            };
            if let Err(e) = self.bus.call(m, request, self.timeout).await {
                tracing::debug!("read repair of member {m} failed: {e}");
            }
        }
    }
}

/// How long a forwarder waits: the coordinator waits for its own peers first.
fn forward_timeout(peers: &Peers) -> Duration {
    peers.timeout * 2
}

/// Bytes of commands and copies per [`PeerRequest::ForwardBatch`]: far below the frame limit, so the answers (which
/// may carry written records and old values) fit too. A bigger command travels on its own.
const BATCH_BYTES: usize = 256 * 1024;

/// The merge of the copies that exist; `None` if no replica holds the key.
fn merge_copies(copies: &[(MemberIndex, Option<Arc<Record>>)]) -> Option<Arc<Record>> {
    let mut merged: Option<Arc<Record>> = None;
    for (_, copy) in copies {
        let Some(copy) = copy else { continue };
        match &mut merged {
            None => merged = Some(copy.clone()),
            Some(acc) if **acc == **copy => {}
            Some(acc) => Arc::make_mut(acc).merge(copy),
        }
    }
    merged
}

/// Answers a [`KeysQuery`] from the local replica (for this node or a peer).
pub fn answer_keys(replica: &Replica, query: &KeysQuery) -> CommandResult<KeysAnswer> {
    let now = now_ms();
    let mine = |slot: u16| {
        query
            .mine
            .get(usize::from(slot) / 8)
            .is_some_and(|byte| byte & (1 << (slot % 8)) != 0)
    };
    let mut answer = KeysAnswer::default();
    let mut slot = query.first;
    // One scan per run of consecutive slots this node answers for.
    while slot <= query.last && slot < SLOTS {
        if !mine(slot) {
            slot += 1;
            continue;
        }
        let mut end = slot;
        while end < query.last && mine(end + 1) {
            end += 1;
        }
        replica.scan(query.db, slot..=end, &mut |at, key, record| {
            let wanted = query.pattern.as_ref().is_none_or(|p| glob::matches(p, key, false));
            if wanted && record.live(now).next().is_some() {
                answer.count += 1;
                if !query.count_only {
                    answer.keys.push((at, Bytes::copy_from_slice(key)));
                }
            }
            std::ops::ControlFlow::Continue(())
        })?;
        slot = end.saturating_add(1);
        if end == SLOTS - 1 {
            break;
        }
    }
    Ok(answer)
}
