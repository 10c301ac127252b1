//! Quorum reads: the merged copy of R replicas, asked one key at a time or all of a batch's keys in one message
//! per replica, and the read repair of the stale copies once every replica has answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use smallvec::SmallVec;

use super::{ClusterStats, Coordinator, Found, Peers, Scope};
use crate::cluster::messages::{PeerRequest, PeerResponse};
use crate::cluster::preread;
use crate::cluster::ring::MemberIndex;
use crate::cluster::service::PeerService;
use crate::cluster::slot::key_slot;
use crate::error::{CommandError, CommandResult};
use crate::net::Bus;
use crate::node::Stats;
use crate::replica::{KeyAt, Replica};
use crate::version::Record;

impl Coordinator {
    /// The merged record of `key` from R replicas; stale replicas are repaired
    /// in the background.
    pub async fn read(&self, scope: Scope, key: &[u8]) -> CommandResult<Option<Found>> {
        let Some(peers) = &self.peers else {
            return self.read_here(KeyAt::new(scope.db, key));
        };
        if let Some(answer) = preread::take(scope.db, key) {
            return answer;
        }
        let ring = self.membership.ring();
        let slot = key_slot(key);
        let list = ring.preference_list(slot);
        let me = self.membership.me();
        let (need, _) = self.quorums(scope);
        let local_replica = list.contains(&me);
        if need == 1 && local_replica {
            return self.read_here(KeyAt::in_slot(scope.db, slot, key));
        }
        let key = Bytes::copy_from_slice(key);
        let mut pending = self.ask_encoded(peers, list, scope.db, &key, None);
        let mut copies = Copies::new();
        if local_replica {
            copies.push((me, self.local_copy(KeyAt::in_slot(scope.db, slot, &key))?));
        }
        while copies.len() < need {
            match pending.next().await {
                Some((m, Some(answer))) => add_copy(&mut copies, m, answer),
                Some((_, None)) => {}
                None => break,
            }
        }
        let merged = merge_copies(&copies).map(ReplicaCopy::found);
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

    /// Asks every other replica in `list` but `except` for its copy of `key`, as it is encoded; each future yields
    /// the member and its answer (`None` if it did not answer).
    pub(super) fn ask_encoded(
        &self,
        peers: &Peers,
        list: &[MemberIndex],
        db: u8,
        key: &Bytes,
        except: Option<MemberIndex>,
    ) -> FuturesUnordered<impl std::future::Future<Output = (MemberIndex, Option<Option<Bytes>>)> + Send + 'static>
    {
        let me = self.membership.me();
        list.iter()
            .copied()
            .filter(|&m| m != me && Some(m) != except)
            .map(|m| {
                let (bus, timeout) = (peers.bus.clone(), peers.timeout);
                let request = PeerRequest::Read { db, key: key.clone() };
                async move {
                    let answer = match bus.call(m, request, timeout).await {
                        Ok(PeerResponse::Record(copy)) => Some(copy),
                        Ok(_) | Err(_) => None,
                    };
                    (m, answer)
                }
            })
            .collect()
    }

    /// This node's copy of `key` for a quorum read: its bytes, not decoded (see [`Found`]).
    fn local_copy(&self, at: KeyAt<'_>) -> CommandResult<Option<ReplicaCopy>> {
        Ok(self.local.read_encoded(at)?.map(|encoded| ReplicaCopy {
            record: None,
            encoded: Some(encoded),
        }))
    }

    /// The local replica's record of `key`, where it alone answers: its bytes, as for a quorum read.
    fn read_here(&self, at: KeyAt<'_>) -> CommandResult<Option<Found>> {
        Ok(self.local.read_encoded(at)?.map(Found::Stored))
    }

    /// Once the replicas still pending have answered, sends the merge of all
    /// copies to every replica whose copy differs from it.
    fn repair_later(
        &self,
        peers: &Peers,
        db: u8,
        key: Bytes,
        mut copies: Copies,
        mut pending: FuturesUnordered<
            impl std::future::Future<Output = (MemberIndex, Option<Option<Bytes>>)> + Send + 'static,
        >,
    ) {
        let repairer = self.repairer(peers);
        let in_flight = self.in_flight.enter();
        tokio::spawn(async move {
            let _in_flight = in_flight;
            while let Some((m, answer)) = pending.next().await {
                if let Some(answer) = answer {
                    add_copy(&mut copies, m, answer);
                }
            }
            if !all_same(&copies) {
                repairer.repair(db, &key, copies).await;
            }
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
    pub async fn read_many(&self, scope: Scope, keys: &[Bytes]) -> Vec<CommandResult<Option<Found>>> {
        if self.peers.is_none() {
            return keys
                .iter()
                .map(|key| self.read_here(KeyAt::new(scope.db, key)))
                .collect();
        }
        let slots: Vec<u16> = keys.iter().map(|key| key_slot(key)).collect();
        self.read_many_in(scope, keys, &slots).await
    }

    /// [`Coordinator::read_many`] of keys whose slots the caller has hashed: `slots[i]` is `keys[i]`'s.
    pub async fn read_many_in(&self, scope: Scope, keys: &[Bytes], slots: &[u16]) -> Vec<CommandResult<Option<Found>>> {
        debug_assert_eq!(keys.len(), slots.len());
        let at = |i: usize| KeyAt::in_slot(scope.db, slots[i], &keys[i]);
        let Some(peers) = &self.peers else {
            return (0..keys.len()).map(|i| self.read_here(at(i))).collect();
        };
        let (db, me, ring) = (scope.db, self.membership.me(), self.membership.ring());
        let (need, _) = self.quorums(scope);
        let lists: Vec<&[MemberIndex]> = slots.iter().map(|&slot| ring.preference_list(slot)).collect();
        let mut errors: Vec<Option<CommandError>> = keys.iter().map(|_| None).collect();
        let mut copies: Vec<Copies> = Vec::with_capacity(keys.len());
        for (i, list) in lists.iter().enumerate() {
            let mut found = Copies::new();
            if list.contains(&me) {
                match self.local_copy(at(i)) {
                    Ok(copy) => found.push((me, copy)),
                    Err(e) => errors[i] = Some(e),
                }
            }
            copies.push(found);
        }
        // Per member, the positions of the keys it is asked for, in one pass over the keys.
        let mut asks: Vec<Vec<usize>> = vec![Vec::new(); self.membership.members().len()];
        for (i, list) in lists.iter().enumerate() {
            if errors[i].is_none() && copies[i].len() < need {
                for &m in list.iter().filter(|&&m| m != me) {
                    asks[usize::from(m)].push(i);
                }
            }
        }
        let mut pending: FuturesUnordered<_> = (0..)
            .zip(asks)
            .filter_map(|(m, at): (MemberIndex, Vec<usize>)| {
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
                None => Ok(merge_copies(found).map(ReplicaCopy::found)),
            })
            .collect();
        if asked {
            let (repairer, in_flight, keys) = (self.repairer(peers), self.in_flight.enter(), keys.to_vec());
            tokio::spawn(async move {
                let _in_flight = in_flight;
                while let Some((m, at, answer)) = pending.next().await {
                    add_copies(&mut copies, m, at, answer);
                }
                // Most keys need no repair: they are passed over without a future each, which would move the copies.
                for (key, found) in keys.iter().zip(copies) {
                    if !all_same(&found) {
                        repairer.repair(db, key, found).await;
                    }
                }
            });
        }
        answers
    }
}

/// One replica's copy of a key: its encoding, and the record once decoded; at least one of them. The local copy
/// is not decoded until a merge needs it; a peer's copy is, unless its bytes equal a copy in hand. A merge of
/// differing copies lacks an encoding until one is made. The encoding is canonical, so a copy whose bytes equal
/// another's is that record: it is neither decoded nor compared field by field, and read repair skips it.
#[derive(Clone)]
struct ReplicaCopy {
    record: Option<Arc<Record>>,
    encoded: Option<Bytes>,
}

impl ReplicaCopy {
    /// The record, decoded if it was not; `None` (logged) if its bytes do not decode, which for a peer's copy
    /// [`add_copy`] ruled out and for the local one means a damaged store.
    fn record(&self) -> Option<Arc<Record>> {
        if let Some(record) = &self.record {
            return Some(record.clone());
        }
        let decoded = self.encoded.as_deref().and_then(Record::decode).map(Arc::new);
        if decoded.is_none() {
            tracing::warn!("a stored copy does not decode: read as if absent");
        }
        decoded
    }

    /// Whether `self` and `other` are the same record.
    fn same(&self, other: &ReplicaCopy) -> bool {
        if let (Some(a), Some(b)) = (&self.record, &other.record) {
            if Arc::ptr_eq(a, b) {
                return true;
            }
        }
        match (&self.encoded, &other.encoded) {
            (Some(a), Some(b)) => a == b,
            _ => self.record() == other.record(),
        }
    }

    /// What a read answers with: the bytes where no record was decoded.
    fn found(self) -> Found {
        match (self.record, self.encoded) {
            (Some(record), _) => Found::Decoded(record),
            (None, Some(encoded)) => Found::Stored(encoded),
            (None, None) => Found::Decoded(Arc::default()),
        }
    }
}

/// The copies of one key that replicas answered with, by member (`None`: the replica holds nothing); inline for
/// up to three replicas, as each key of a read has its own.
type Copies = SmallVec<[(MemberIndex, Option<ReplicaCopy>); 3]>;

/// Adds member `m`'s `answer` for one key to its `copies`: an encoding equal to a copy in hand shares its record,
/// another is decoded; one that does not decode counts as no answer.
fn add_copy(copies: &mut Copies, m: MemberIndex, answer: Option<Bytes>) {
    let Some(bytes) = answer else {
        copies.push((m, None));
        return;
    };
    let known = copies
        .iter()
        .filter_map(|(_, copy)| copy.as_ref())
        .find(|copy| copy.encoded.as_ref() == Some(&bytes))
        .map(|copy| copy.record.clone());
    let record = match known {
        Some(record) => record,
        None => match Record::decode(&bytes) {
            Some(record) => Some(Arc::new(record)),
            None => return,
        },
    };
    let encoded = Some(bytes);
    copies.push((m, Some(ReplicaCopy { record, encoded })));
}

/// Adds member `m`'s answer to a [`PeerRequest::ReadBatch`] for the keys at positions `at` (empty if it failed).
fn add_copies(copies: &mut [Copies], m: MemberIndex, at: Vec<usize>, answer: Vec<Option<Bytes>>) {
    for (i, record) in at.into_iter().zip(answer) {
        add_copy(&mut copies[i], m, record);
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
    /// Sends the merge of all `copies` of `key` to every replica whose copy differs from it. Callers skip the
    /// common case first, copies that are [`all_same`].
    async fn repair(&self, db: u8, key: &Bytes, copies: Copies) {
        let Some(mut merged) = merge_copies(&copies) else {
            return;
        };
        let Some(record) = merged.record() else {
            return;
        };
        for (m, copy) in copies {
            if copy.as_ref().is_some_and(|copy| copy.same(&merged)) {
                continue;
            }
            Stats::bump(&self.stats.read_repairs);
            if m == self.me {
                if let Err(e) = self.local.merge(db, key, &record) {
                    tracing::warn!("read repair of the local copy failed: {e}");
                }
                continue;
            }
            let record = merged
                .encoded
                .get_or_insert_with(|| Bytes::from(record.encode()))
                .clone();
            let request = PeerRequest::Merge {
                db,
                key: key.clone(),
                record,
                basis: None,
            };
            if let Err(e) = self.bus.call(m, request, self.timeout).await {
                tracing::debug!("read repair of member {m} failed: {e}");
            }
        }
    }
}

/// Whether every replica answered with the same record, or all with none, so that none needs repair: the common
/// case, which takes no merge (and no reference counts).
fn all_same(copies: &Copies) -> bool {
    let mut held = copies.iter().map(|(_, copy)| copy.as_ref());
    let Some(first) = held.next() else {
        return true;
    };
    held.all(|copy| match (first, copy) {
        (Some(first), Some(copy)) => copy.same(first),
        (None, None) => true,
        _ => false,
    })
}

/// The merge of the copies that exist; `None` if no replica holds the key. It keeps an encoding only while it is
/// one of the copies unchanged.
fn merge_copies(copies: &[(MemberIndex, Option<ReplicaCopy>)]) -> Option<ReplicaCopy> {
    let mut merged: Option<ReplicaCopy> = None;
    for copy in copies.iter().filter_map(|(_, copy)| copy.as_ref()) {
        match &mut merged {
            None => merged = Some(copy.clone()),
            Some(acc) if acc.same(copy) => {
                if acc.encoded.is_none() {
                    acc.encoded = copy.encoded.clone();
                }
            }
            Some(acc) => match (acc.record(), copy.record()) {
                (Some(mut record), Some(other)) => {
                    Arc::make_mut(&mut record).merge(&other);
                    *acc = ReplicaCopy {
                        record: Some(record),
                        encoded: None,
                    };
                }
                (None, Some(_)) => *acc = copy.clone(),
                _ => {}
            },
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(actor: u64, value: &'static [u8]) -> Record {
        let mut record = Record::default();
        record
            .supersede(actor, Some(Bytes::from_static(value)), None, 1)
            .expect("write");
        record
    }

    fn encoded(record: &Record) -> Option<Bytes> {
        Some(Bytes::from(record.encode()))
    }

    #[test]
    fn equal_bytes_share_one_decoded_record_and_need_no_repair() {
        let one = record(1, b"v");
        let mut copies = Copies::new();
        add_copy(&mut copies, 0, encoded(&one));
        add_copy(&mut copies, 1, encoded(&one));
        let (first, second) = (copies[0].1.as_ref().expect("held"), copies[1].1.as_ref().expect("held"));
        let (first, second) = (
            first.record.as_ref().expect("decoded"),
            second.record.as_ref().expect("shared"),
        );
        assert!(Arc::ptr_eq(first, second), "decoded once");
        assert!(all_same(&copies), "no repair");
        let merged = merge_copies(&copies).expect("merged");
        assert_eq!(*merged.record().expect("decodes"), one);
        assert_eq!(merged.encoded, encoded(&one), "the merge is a copy unchanged");
        assert!(copies
            .iter()
            .all(|(_, copy)| copy.as_ref().is_some_and(|c| c.same(&merged))));
    }

    #[test]
    fn different_copies_merge_and_the_stale_and_missing_ones_differ_from_it() {
        let (a, b) = (record(1, b"a"), record(2, b"b"));
        let mut copies = Copies::new();
        add_copy(&mut copies, 0, encoded(&a));
        add_copy(&mut copies, 1, encoded(&b));
        add_copy(&mut copies, 2, None);
        add_copy(&mut copies, 3, Some(Bytes::from_static(b"\xff\xff")));
        assert_eq!(copies.len(), 3, "an undecodable copy is no answer");
        assert!(!all_same(&copies));
        let merged = merge_copies(&copies).expect("merged");
        let mut expected = a.clone();
        expected.merge(&b);
        assert_eq!(*merged.record().expect("decodes"), expected);
        assert_eq!(merged.encoded, None);
        let stale: Vec<MemberIndex> = copies
            .iter()
            .filter(|(_, copy)| !copy.as_ref().is_some_and(|c| c.same(&merged)))
            .map(|(m, _)| *m)
            .collect();
        assert_eq!(stale, [0, 1, 2]);
        assert!(merge_copies(&[(0, None)]).is_none());
    }

    #[test]
    fn the_local_copy_is_decoded_only_when_a_peer_differs_and_a_damaged_one_reads_as_absent() {
        let (one, other) = (record(1, b"v"), record(2, b"w"));
        let local = |encoded| Some(ReplicaCopy { record: None, encoded });
        let mut equal = Copies::new();
        equal.push((0, local(encoded(&one))));
        add_copy(&mut equal, 1, encoded(&one));
        assert!(
            equal
                .iter()
                .all(|(_, copy)| copy.as_ref().is_some_and(|c| c.record.is_none())),
            "nothing decoded"
        );
        assert!(all_same(&equal));
        assert!(
            matches!(merge_copies(&equal).expect("held").found(), Found::Stored(bytes) if Some(&bytes) == encoded(&one).as_ref())
        );
        let mut differ = Copies::new();
        differ.push((0, local(encoded(&one))));
        add_copy(&mut differ, 1, encoded(&other));
        assert!(!all_same(&differ));
        let mut expected = one.clone();
        expected.merge(&other);
        assert!(matches!(merge_copies(&differ).expect("held").found(), Found::Decoded(r) if *r == expected));
        let mut damaged = Copies::new();
        damaged.push((0, local(Some(Bytes::from_static(b"\xff\xff")))));
        add_copy(&mut damaged, 1, encoded(&other));
        assert!(matches!(merge_copies(&damaged).expect("held").found(), Found::Decoded(r) if *r == other));
    }

    #[test]
    fn copies_absent_everywhere_need_no_repair_but_one_absent_among_held_does() {
        let one = record(1, b"v");
        let mut absent = Copies::new();
        add_copy(&mut absent, 0, None);
        add_copy(&mut absent, 1, None);
        assert!(all_same(&absent));
        let mut one_missing = absent.clone();
        add_copy(&mut one_missing, 2, encoded(&one));
        assert!(!all_same(&one_missing));
        let mut first_missing = Copies::new();
        add_copy(&mut first_missing, 2, encoded(&one));
        add_copy(&mut first_missing, 0, None);
        assert!(!all_same(&first_missing));
    }
}
