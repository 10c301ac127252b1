//! Quorum reads: the merged copy of R replicas, asked one key at a time or all of a batch's keys in one message
//! per replica, and the read repair of the stale copies once every replica has answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{ClusterStats, Coordinator, Peers, Scope};
use crate::cluster::messages::{PeerRequest, PeerResponse};
use crate::cluster::preread;
use crate::cluster::ring::MemberIndex;
use crate::cluster::service::PeerService;
use crate::cluster::slot::key_slot;
use crate::error::{CommandError, CommandResult};
use crate::net::Bus;
use crate::node::Stats;
use crate::replica::Replica;
use crate::version::Record;

impl Coordinator {
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
    pub(super) fn ask_copies(
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
