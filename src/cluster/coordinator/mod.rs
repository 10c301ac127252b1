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
//!
//! Layout: this file holds routing, writes and cluster-wide listings;
//! `reads.rs` the quorum reads and read repair; `found.rs` what a read
//! answers (the stored bytes, decoded only if needed); `forward.rs` the forwarding
//! of writes to their coordinator. A pipeline's commands share messages: its
//! forwards to one coordinator travel together, and its reads ask each
//! replica once.

mod forward;
mod found;
mod reads;

pub use found::{Found, Presented};

use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, poll_fn, BoxFuture};
use futures_util::stream::StreamExt;
use smallvec::SmallVec;
use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::cluster::handback;
use crate::cluster::membership::Membership;
use crate::cluster::merge_batch::{self, MergeAnswer};
use crate::cluster::messages::{KeysAnswer, KeysQuery, PeerRequest, PeerResponse, Written};
use crate::cluster::ring::MemberIndex;
use crate::cluster::service::PeerService;
use crate::cluster::slot::{key_slot, SLOTS};
use crate::error::{CommandError, CommandResult};
use crate::glob;
use crate::net::Bus;
use crate::node::Stats;
use crate::replica::{Current, KeyAt, Mutation, RecordVisitor, Replica};
use crate::version::{Basis, Record};

/// A replica's answer to one merge of a write: from its pipeline's batch, or from a message of its own.
enum Ack {
    Batched(merge_batch::BatchedAnswer),
    Alone(BoxFuture<'static, MergeAnswer>),
}

impl Future for Ack {
    type Output = MergeAnswer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<MergeAnswer> {
        match self.get_mut() {
            Ack::Batched(answer) => Pin::new(answer).poll(cx),
            Ack::Alone(answer) => answer.as_mut().poll(cx),
        }
    }
}

/// The first of `acks` to answer, taken out of them; `None` once none is left. Written here rather than with
/// `FuturesUnordered`: a write waits for one or two acks, and that set's allocations cost more than polling both.
async fn next_answer(acks: &mut SmallVec<[Ack; 2]>) -> Option<MergeAnswer> {
    poll_fn(|cx| {
        if acks.is_empty() {
            return Poll::Ready(None);
        }
        for i in 0..acks.len() {
            if let Poll::Ready(answer) = Pin::new(&mut acks[i]).poll(cx) {
                acks.swap_remove(i);
                return Poll::Ready(Some(answer));
            }
        }
        Poll::Pending
    })
    .await
}

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
    /// Records a coordinator sent to the other replicas of their keys, one per replica.
    pub replicated: AtomicU64,
    /// Messages that carried them (a pipeline's to one replica share one).
    pub replication_messages: AtomicU64,
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

    /// Runs `writes` (a pipeline's, or a forwarded batch's) with the records they replicate sent in one message
    /// per replica (see [`merge_batch`]). Counted in flight meanwhile: the merges it tells go when it ends.
    pub async fn batching<T>(&self, writes: impl Future<Output = T>) -> T {
        match &self.peers {
            Some(peers) => {
                let _in_flight = self.in_flight.enter();
                let (out, unanswered) =
                    merge_batch::scope(peers.bus.clone(), peers.timeout, self.stats.clone(), writes).await;
                if !unanswered.is_empty() {
                    // The merges no write waited for still count until they land (FLUSHDB's fence).
                    let in_flight = self.in_flight.enter();
                    tokio::spawn(async move {
                        let _in_flight = in_flight;
                        unanswered.wait().await;
                    });
                }
                out
            }
            None => writes.await,
        }
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
        self.route_slot(key_slot(key))
    }

    /// Where a write to a key of `slot` runs, in a cluster.
    pub fn route_slot(&self, slot: u16) -> CommandResult<Route> {
        if self.peers.is_none() {
            return Ok(Route::Local);
        }
        match self.coordinator_of(slot) {
            Some(m) if m == self.membership.me() => Ok(Route::Local),
            Some(m) => Ok(Route::Remote(m)),
            None => Err(CommandError::NoReplica),
        }
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
        let mut pending = self.ask_encoded(peers, list, scope.db, &key, forwarder);
        while answered < need {
            match pending.next().await {
                Some((_, Some(None))) => answered += 1,
                Some((_, Some(Some(copy)))) => {
                    match self.local.merge_encoded(KeyAt::new(scope.db, &key), &copy, None) {
                        Ok(_) => answered += 1,
                        Err(e) => tracing::warn!("merging a replica's copy before a write failed: {e}"),
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
        if let Some(encoded) = written {
            // Versions a replica reports that this node lacked stay siblings:
            // catch_up already merged a quorum's copies before `decide` ran.
            let diverged = self
                .replicate(peers, scope.db, key, (&encoded, None), list, write)
                .await?;
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
                .map(|record| self.replicate(peers, scope.db, key, (&record.encoded, None), list, write))
        });
        match self
            .batching(join_all(replications))
            .await
            .into_iter()
            .find_map(Result::err)
        {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Sends a record this node wrote (over `basis`, if known) to the other replicas in `list`; Ok once `write`
    /// replicas (this one included) hold it.
    async fn replicate(
        &self,
        peers: &Peers,
        db: u8,
        key: &[u8],
        (encoded, basis): (&Bytes, Option<Basis>),
        list: &[MemberIndex],
        write: usize,
    ) -> CommandResult<Vec<Record>> {
        let me = self.membership.me();
        // The forwarder, a replica that sent its copy, stores the record from the reply before answering.
        let mut forwarder = handback::forwarder_of(db, key, list);
        let key = Bytes::copy_from_slice(key);
        let written = || Written {
            db,
            key: key.clone(),
            record: encoded.clone(),
            basis,
        };
        let others = list.iter().copied().filter(|&m| m != me && Some(m) != forwarder);
        let mut acked = 1 + usize::from(forwarder.is_some());
        if acked >= write {
            self.tell(peers, others, written);
            if forwarder.is_some() {
                handback::hand_back(db, &key, encoded.clone(), basis);
            }
            return Ok(Vec::new());
        }
        // Batched merges outlive this write in their scope (see `batching`); one sent alone counts here.
        let in_flight = (!merge_batch::is_open()).then(|| self.in_flight.enter());
        let merge = |m: MemberIndex| match merge_batch::ask(m, written) {
            Some(batched) => Ack::Batched(batched),
            None => {
                Stats::bump(&self.stats.replication_messages);
                let (bus, timeout, request) = (peers.bus.clone(), peers.timeout, written().into_merge());
                Ack::Alone(Box::pin(async move {
                    MergeAnswer::of_call(bus.call(m, request, timeout).await)
                }))
            }
        };
        let mut acks: SmallVec<[Ack; 2]> = others
            .map(|m| {
                Stats::bump(&self.stats.replicated);
                merge(m)
            })
            .collect();
        if merge_batch::is_open() {
            // Lets the pipeline's other writes queue their merges before this one's batch goes.
            tokio::task::yield_now().await;
        }
        let mut diverged = Vec::new();
        loop {
            while acked < write {
                match next_answer(&mut acks).await {
                    Some(MergeAnswer::Ack) => acked += 1,
                    Some(MergeAnswer::Diverged(bytes)) => {
                        acked += 1;
                        diverged.extend(Record::decode(&bytes));
                    }
                    Some(MergeAnswer::Failed) => {}
                    None => break,
                }
            }
            // Short of W without the forwarder's copy: ask for its ack the usual way, so the count is exact.
            match forwarder.take() {
                Some(m) if acked < write => {
                    acked -= 1;
                    Stats::bump(&self.stats.replicated);
                    acks.push(merge(m));
                }
                Some(_) => handback::hand_back(db, &key, encoded.clone(), basis),
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
        // Without a scope every ack is its own message: not waited for, but counted until it lands (FLUSHDB's
        // fence). Batched ones are dropped; their scope waits for the batch.
        if let Some(in_flight) = in_flight.filter(|_| !acks.is_empty()) {
            tokio::spawn(async move {
                let _in_flight = in_flight;
                join_all(acks).await;
            });
        }
        Ok(diverged)
    }

    /// Sends a written record to `members` one way, in the open merge batch if there is one: no ack will be waited
    /// for (drain's fence covers it).
    fn tell(&self, peers: &Peers, members: impl Iterator<Item = MemberIndex>, written: impl Fn() -> Written) {
        for m in members {
            Stats::bump(&self.stats.replicated);
            if !merge_batch::tell(m, &written) {
                Stats::bump(&self.stats.replication_messages);
                if let Err(e) = peers.bus.tell(m, written().into_merge()) {
                    tracing::debug!("replicating to member {m} failed: {e}");
                }
            }
        }
    }

    /// A plain SET forwarded by `forwarder` with its `copy` of `key` (in `slot`), written at once when this node and the
    /// forwarder make up W: the copy is merged, the record told to the other replicas and returned for the reply,
    /// which the forwarder stores before it answers. Nothing is awaited, so such a write needs neither a task nor
    /// the command table (a quarter of a forwarded SET's instructions at its coordinator: callgrind). `None`, with
    /// nothing done, when W needs another replica's ack, either node is not a replica of `key` (a ring that
    /// changed), or the copy cannot be merged: the command then runs the usual way.
    pub fn put_forwarded(
        &self,
        scope: Scope,
        (key, slot): (&Bytes, u16),
        value: &Bytes,
        (forwarder, copy): (MemberIndex, Option<&Bytes>),
    ) -> Option<CommandResult<Option<Written>>> {
        let peers = self.peers.as_ref()?;
        let ring = self.membership.ring();
        let at = KeyAt::in_slot(scope.db, slot, key);
        let list = ring.preference_list(slot);
        let me = self.membership.me();
        let (_, write) = self.quorums(scope);
        // Two acks without waiting: this node's, and the forwarder's once it stores the record handed back.
        if write > 2 || !list.contains(&me) || !list.contains(&forwarder) {
            return None;
        }
        if let Some(copy) = copy {
            // The usual way logs a copy that cannot be merged and asks the forwarder's ack instead.
            self.local.merge_encoded(at, copy, None).ok()?;
        }
        let (record, basis) = match self.local.put_returning(at, value.clone(), None) {
            Ok(Some(written)) => written,
            Ok(None) => return Some(Ok(None)),
            Err(e) => return Some(Err(e)),
        };
        let written = || Written {
            db: scope.db,
            key: key.clone(),
            record: record.clone(),
            basis,
        };
        self.tell(
            peers,
            list.iter().copied().filter(|&m| m != me && m != forwarder),
            written,
        );
        Some(Ok(Some(written())))
    }

    /// A plain SET: a value superseding everything, written without first
    /// reading the other replicas. If a replica answers that it held versions
    /// this node had not seen (this node was down or cut off when they were
    /// written), they are merged in and the value is written once more over
    /// them, so a plain SET still supersedes every acknowledged write: any W
    /// acks include a replica of every write W acknowledged when W + W > N.
    /// `at` is a key of `scope`'s database.
    pub async fn put(&self, scope: Scope, at: KeyAt<'_>, value: Bytes, expire_at_ms: Option<u64>) -> CommandResult<()> {
        debug_assert_eq!(at.db, scope.db);
        let put = || Mutation::Put {
            value: value.clone(),
            expire_at_ms,
        };
        let key = at.key;
        let Some(peers) = &self.peers else {
            return self.local.update(scope.db, key, |_| Ok((put(), ())));
        };
        let ring = self.membership.ring();
        let list = ring.preference_list(at.slot);
        if !list.contains(&self.membership.me()) {
            return Err(CommandError::NoReplica);
        }
        let (_, write) = self.quorums(scope);
        for _ in 0..3 {
            let written = self.local.put_returning(at, value.clone(), expire_at_ms)?;
            let Some((encoded, basis)) = written else { return Ok(()) };
            let diverged = self
                .replicate(peers, scope.db, key, (&encoded, basis), list, write)
                .await?;
            if diverged.is_empty() {
                return Ok(());
            }
            for copy in &diverged {
                self.local.merge(scope.db, key, copy)?;
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
