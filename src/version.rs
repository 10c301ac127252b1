//! Dotted version vectors (DVVs) and sibling sets: how ringkv tells concurrent
//! writes apart and merges replica copies without losing any of them.
//!
//! # Why dotted version vectors
//!
//! A Dynamo-style store accepts writes for one key at several replicas at once,
//! so it must detect writes that did not see each other and keep all of them
//! (as *siblings*) until a client resolves the conflict. Plain per-value vector
//! clocks do this, but they suffer "sibling explosion": a client that writes
//! with a stale clock makes the server unable to tell which siblings that write
//! replaced, so siblings pile up. Dotted version vectors (Preguiça, Baquero,
//! Almeida, Fonte, Gonçalves, "Dotted Version Vectors: Logical Clocks for
//! Optimistic Replication", 2012; used by Riak 2 and Garage K2V) fix that by
//! tagging each value with the single event that wrote it, its [`Dot`], and
//! keeping one causal context per key. A write supersedes exactly the siblings
//! whose dots its context covers, no more and no less.
//!
//! # The rules
//!
//! A [`Record`] is a causal context (actor → highest counter seen) plus the
//! siblings it has not superseded, each tagged by its dot.
//!
//! * **Write** by actor `a` with client context `C`:
//!   `dot = (a, max(context[a], C[a]) + 1)`, floored at the current time in
//!   microseconds so a key that was deleted and physically dropped (its context
//!   lost) never reissues an old dot. Keep the siblings whose dot `C` does not
//!   cover, add `(dot, value)`, and set `context = context ⊔ C ⊔ {dot}`.
//! * **Merge** of two copies: a sibling survives if both copies hold it, or the
//!   other copy's context does not cover its dot; contexts join pointwise.
//!   Merge is commutative, associative and idempotent (property-tested below),
//!   so replicas converge whatever order replication, read repair and
//!   anti-entropy deliver copies in.
//! * **Reads** see the live siblings (values that have not expired) in dot
//!   order, so every node answers with the same order. A tombstone concurrent
//!   with a value loses to the value.
//!
//! Everything is kept in canonical order (contexts sorted by actor with no zero
//! entries, siblings sorted by dot with unique dots), so structural equality is
//! semantic equality and the postcard encoding of a record is deterministic,
//! which the Merkle trees of anti-entropy rely on. Decoding checks these
//! invariants, so untrusted bytes can never produce a record that breaks them.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};

mod basis;
mod supersede;
mod view;

pub use basis::Basis;
pub use supersede::{supersede_encoded, Superseding};

use crate::varint::{put_varint, varint_len};
pub(crate) use view::Encoded;
pub use view::{RecordView, StoredSiblings};

/// Identifies a writer: a node id plus the incarnation created with its data
/// directory, hashed. It must never be reused by a node that lost its disk,
/// because such a node would reissue dots that other replicas already know,
/// and the old and new writes would be confused.
pub type ActorId = u64;

/// One write event: the `counter`-th event of `actor`. Each sibling carries the
/// dot of the write that produced it, which is what lets a later write
/// supersede exactly the siblings it saw (the point of DVVs).
///
/// Ordered by `(actor, counter)`; siblings are kept in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The writer that issued this event.
    pub actor: ActorId,
    /// The writer's event counter; strictly increasing per actor, never 0.
    pub counter: u64,
}

/// Causal context: actor → highest counter seen.
///
/// Kept sorted by actor with no zero entries, so that equal contexts are equal
/// structurally, lookups are a binary search, and the encoding is canonical.
/// Counter-based coverage works because each actor issues its dots in
/// increasing order at a single replica, so having seen `(a, n)` means having
/// seen (or superseded) every earlier dot of `a`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VersionVector(Vec<(ActorId, u64)>);

/// Tokens from clients are untrusted: a forged counter near `u64::MAX` would let
/// the next write overflow the actor's counter. Real counters are floored at
/// the wall clock in microseconds (about 2^51 today), so anything past 2^63 can
/// only be forged.
const MAX_TOKEN_COUNTER: u64 = u64::MAX >> 1;

impl VersionVector {
    fn find(&self, actor: ActorId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&actor, |&(a, _)| a)
    }

    /// The highest counter of `actor` this context has seen (0 if none), used to
    /// issue the actor's next dot and to test coverage.
    pub fn get(&self, actor: ActorId) -> u64 {
        context_get(&self.0, actor)
    }

    /// Whether this context has seen `dot` (`self[dot.actor] >= dot.counter`):
    /// a write or merge carrying this context supersedes a sibling with that dot.
    pub fn covers(&self, dot: Dot) -> bool {
        context_covers(&self.0, dot)
    }

    /// Pointwise max: the knowledge of both contexts, used when merging copies
    /// and when a write absorbs the client's context.
    ///
    /// Allocates only when `other` names actors that `self` does not.
    pub fn join(&mut self, other: &VersionVector) {
        // Walk both sorted lists: raise shared entries in place, count new actors.
        let mut missing = 0;
        let mut i = 0;
        for &(actor, counter) in &other.0 {
            while i < self.0.len() && self.0[i].0 < actor {
                i += 1;
            }
            match self.0.get_mut(i) {
                Some(entry) if entry.0 == actor => entry.1 = entry.1.max(counter),
                _ => missing += 1,
            }
        }
        if missing == 0 {
            return;
        }
        let n = self.0.len();
        self.0.reserve(missing);
        for &(actor, counter) in &other.0 {
            if self.0[..n].binary_search_by_key(&actor, |&(a, _)| a).is_err() {
                self.0.push((actor, counter));
            }
        }
        self.0.sort_unstable_by_key(|&(a, _)| a);
    }

    /// Records that `dot` has been seen (`self[actor] = max(self[actor], counter)`).
    /// A zero counter is ignored so the context never holds zero entries.
    pub fn add(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        match self.find(dot.actor) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(dot.counter),
            Err(i) => self.0.insert(i, (dot.actor, dot.counter)),
        }
    }

    /// The `(actor, counter)` entries, sorted by actor, for metrics and
    /// inspection without exposing mutation (which could break the ordering).
    pub fn entries(&self) -> &[(ActorId, u64)] {
        &self.0
    }

    /// Number of actors in the context (exported as a metric: contexts grow
    /// with every actor that ever wrote the key).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the context has seen no write at all (a key never written here).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The opaque token `VGET` hands out and `VSET` takes back: the postcard
    /// encoding of the context. Clients must treat it as opaque bytes.
    pub fn encode_token(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("postcard encoding into a Vec cannot fail")
    }

    /// Parses a token from [`encode_token`](Self::encode_token). Returns `None`
    /// if the bytes are malformed, have trailing bytes, are not sorted by
    /// actor, repeat an actor, hold a zero counter, or hold a counter too large
    /// to have been issued (the token comes from a client and is untrusted).
    pub fn decode_token(bytes: &[u8]) -> Option<VersionVector> {
        let (vv, rest) = postcard::take_from_bytes::<VersionVector>(bytes).ok()?;
        // Numbers written longer than needed decode too; a canonical token is exactly as long as its re-encoding.
        let canonical = encoded_len(&vv.0, std::iter::empty()) == bytes.len() + 1;
        if !rest.is_empty() || !canonical || vv.0.iter().any(|&(_, c)| c > MAX_TOKEN_COUNTER) {
            return None;
        }
        Some(vv)
    }

    fn is_canonical(entries: &[(ActorId, u64)]) -> bool {
        entries.iter().all(|&(_, c)| c != 0) && entries.windows(2).all(|w| w[0].0 < w[1].0)
    }
}

/// Deserializes like the derived impl would, then rejects non-canonical
/// contexts, so no decoded context can break binary search or equality.
impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "VersionVector")]
        struct Raw(Vec<(ActorId, u64)>);
        let Raw(entries) = Raw::deserialize(deserializer)?;
        if !VersionVector::is_canonical(&entries) {
            return Err(serde::de::Error::custom(
                "version vector not sorted by actor, with a repeated actor or a zero counter",
            ));
        }
        Ok(VersionVector(entries))
    }
}

/// One version of a key's value, tagged by the write that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    /// The write event that produced this version; unique per key.
    pub dot: Dot,
    /// Wall clock at write (unix ms). Only used to pick a winner when
    /// `conflicts = "lww"`; causality never depends on clocks.
    pub timestamp_ms: u64,
    /// The value, or `None` for a tombstone (a delete). Tombstones are kept so
    /// replicas that missed the delete learn of it instead of resurrecting the
    /// value.
    pub value: Option<Bytes>,
    /// Absolute unix ms after which this sibling is gone (expired when
    /// `now_ms >= expire_at_ms`). For a tombstone, its grace deadline.
    pub expire_at_ms: Option<u64>,
}

impl Sibling {
    /// Whether reads should see this sibling: a value (not a tombstone) that
    /// has not expired. Expiry is checked lazily here so an expired key is
    /// never returned, even before the active sweep prunes it.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.expire_at_ms.is_none_or(|at| now_ms < at)
    }
}

/// Total order on sibling contents, used only to make merge deterministic if
/// two copies ever disagree about the content of one dot (which needs a reused
/// actor id). Without it, merge could not be commutative on such input and
/// anti-entropy would never converge.
fn content_rank(s: &Sibling) -> (u64, Option<u64>, Option<&[u8]>) {
    (s.timestamp_ms, s.expire_at_ms, s.value.as_deref())
}

/// A sibling as subsumption sees it, owned or read in place ([`RecordView`]).
trait Versioned {
    fn dot(&self) -> Dot;
    /// [`content_rank`]; equal dots and equal ranks are equal siblings.
    fn rank(&self) -> (u64, Option<u64>, Option<&[u8]>);
}

impl Versioned for Sibling {
    fn dot(&self) -> Dot {
        self.dot
    }

    fn rank(&self) -> (u64, Option<u64>, Option<&[u8]>) {
        content_rank(self)
    }
}

/// The highest counter of `actor` in a canonical context (0 if none).
fn context_get(context: &[(ActorId, u64)], actor: ActorId) -> u64 {
    context
        .binary_search_by_key(&actor, |&(a, _)| a)
        .map_or(0, |i| context[i].1)
}

/// [`VersionVector::covers`] of a canonical context.
fn context_covers(context: &[(ActorId, u64)], dot: Dot) -> bool {
    context_get(context, dot.actor) >= dot.counter
}

/// The invariant on a record's siblings, owned or read in place: sorted by unique dot, each covered by `context`.
fn siblings_canonical<S: Versioned>(context: &[(ActorId, u64)], siblings: &[S]) -> bool {
    siblings.windows(2).all(|w| w[0].dot() < w[1].dot()) && siblings.iter().all(|s| context_covers(context, s.dot()))
}

/// [`Record::is_subsumed_by`] over the parts of two records, owned or read in place.
fn subsumed<O: Versioned, N: Versioned>(
    context: &[(ActorId, u64)],
    siblings: &[O],
    newer_context: &[(ActorId, u64)],
    newer_siblings: &[N],
) -> bool {
    let context_below = context
        .iter()
        .all(|&(actor, counter)| context_get(newer_context, actor) >= counter);
    // Ours: each one newer holds with the content merge keeps, or has superseded.
    let ours_kept = || {
        siblings.iter().all(
            |s| match newer_siblings.binary_search_by_key(&s.dot(), Versioned::dot) {
                Ok(i) => newer_siblings[i].rank() >= s.rank(),
                Err(_) => context_covers(newer_context, s.dot()),
            },
        )
    };
    // Theirs: each one we lack must be one we have not seen (else merge drops it).
    let theirs_kept = || {
        newer_siblings.iter().all(|o| {
            siblings.binary_search_by_key(&o.dot(), Versioned::dot).is_ok() || !context_covers(context, o.dot())
        })
    };
    context_below && ours_kept() && theirs_kept()
}

/// What is stored per key: a causal context and the siblings it has not
/// superseded.
///
/// Invariant: siblings sorted by dot, unique dots, every sibling's dot covered
/// by `context`. Every method keeps it and decoding checks it, so equality is
/// structural and encodings are canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Every write event this copy has seen, including superseded ones: it is
    /// what lets a merge drop a sibling the other copy still holds.
    pub context: VersionVector,
    /// The versions not yet superseded, sorted by dot.
    pub siblings: Vec<Sibling>,
}

/// A record with its [`Record::encode`] output, kept together where both are needed: a write stores and
/// replicates the same bytes, and the record cache serves commands the record and peers the bytes.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// The record.
    pub record: Arc<Record>,
    /// Its encoding.
    pub encoded: Bytes,
}

/// Upper bound on siblings per key, so a key written concurrently without
/// resolution cannot grow without limit; writes past it fail with a clear error.
pub const MAX_SIBLINGS: usize = 64;

/// Why a write was refused. A plain enum; the crate maps it to a Redis error.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The write would leave more than [`MAX_SIBLINGS`] siblings. The client
    /// must resolve the conflict (write with a context that covers siblings).
    /// Also returned in the practically unreachable case that the actor's
    /// counter is exhausted (`u64::MAX`), since no fresh dot can be issued.
    TooManySiblings,
}

impl Record {
    /// A write by `actor` with causal context `ctx` (for a plain SET/DEL the
    /// caller passes a clone of `self.context`, superseding everything this
    /// copy has seen; `VSET` passes the client's token).
    ///
    /// The dot is `(actor, max(max(context[actor], ctx[actor]) + 1, now_ms * 1000))`:
    /// above anything the actor issued that either context knows, and floored
    /// at the clock in microseconds so a record that was deleted and physically
    /// dropped never reissues an old dot. Keeps the siblings whose dot `ctx`
    /// does not cover, adds the new sibling (timestamped `now_ms`), and sets
    /// `context = context ⊔ ctx ⊔ {dot}`.
    ///
    /// Fails with [`WriteError::TooManySiblings`], leaving `self` unchanged, if
    /// the result would hold more than [`MAX_SIBLINGS`] siblings.
    pub fn write(
        &mut self,
        actor: ActorId,
        ctx: &VersionVector,
        value: Option<Bytes>,
        expire_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Dot, WriteError> {
        let kept = self.siblings.iter().filter(|s| !ctx.covers(s.dot)).count();
        if kept >= MAX_SIBLINGS {
            return Err(WriteError::TooManySiblings);
        }
        let seen = self.context.get(actor).max(ctx.get(actor));
        let counter = seen
            .checked_add(1)
            .ok_or(WriteError::TooManySiblings)?
            .max(now_ms.saturating_mul(1000));
        let dot = Dot { actor, counter };

        self.siblings.retain(|s| !ctx.covers(s.dot));
        self.context.join(ctx);
        self.context.add(dot);
        // The dot is above every dot of `actor` either context covers, so it is
        // new here; it still has to go in dot order among other actors' dots.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(
            at,
            Sibling {
                dot,
                timestamp_ms: now_ms,
                value,
                expire_at_ms,
            },
        );
        Ok(dot)
    }

    /// A write that supersedes everything this copy holds (a plain SET or
    /// DEL): the same as [`Record::write`] with `ctx = self.context`, without
    /// copying the context. Every sibling's dot is covered by the record's own
    /// context, so none survives.
    pub fn supersede(
        &mut self,
        actor: ActorId,
        value: Option<Bytes>,
        expire_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Dot, WriteError> {
        let counter = self
            .context
            .get(actor)
            .checked_add(1)
            .ok_or(WriteError::TooManySiblings)?
            .max(now_ms.saturating_mul(1000));
        let dot = Dot { actor, counter };
        self.context.add(dot);
        self.siblings.clear();
        self.siblings.push(Sibling {
            dot,
            timestamp_ms: now_ms,
            value,
            expire_at_ms,
        });
        Ok(dot)
    }

    /// Merges another replica's copy into this one (replication, read repair,
    /// anti-entropy, hinted handoff).
    ///
    /// A sibling survives if both sides hold it, or the other side's context
    /// does not cover its dot (the other side has not seen it, so it cannot
    /// have superseded it). Contexts join. Commutative, associative and
    /// idempotent, so replicas converge in any delivery order. Allocates only
    /// when `other` brings siblings or actors this copy lacks.
    pub fn merge(&mut self, other: &Record) {
        // Our siblings: keep those the other side holds too or has not seen.
        self.siblings
            .retain_mut(|s| match other.siblings.binary_search_by_key(&s.dot, |o| o.dot) {
                Ok(i) => {
                    let o = &other.siblings[i];
                    if content_rank(o) > content_rank(s) {
                        *s = o.clone();
                    }
                    true
                }
                Err(_) => !other.context.covers(s.dot),
            });
        // Their siblings: by our invariant, a dot our (not yet joined) context
        // does not cover is one we do not hold; one it covers we either hold
        // (kept above) or have superseded.
        let ours = self.siblings.len();
        for o in &other.siblings {
            if !self.context.covers(o.dot) {
                self.siblings.push(o.clone());
            }
        }
        if self.siblings.len() != ours {
            self.siblings.sort_unstable_by_key(|s| s.dot);
        }
        self.context.join(&other.context);
    }

    /// Whether merging `newer` into this copy gives exactly `newer`: it has
    /// seen every write this copy has and drops nothing of its own. That is
    /// replication's common case (the coordinator's next version of what a
    /// replica holds), where the merge need not be built nor `newer`'s bytes
    /// encoded again. Agrees with [`Record::merge`] (property-tested).
    pub fn is_subsumed_by(&self, newer: &Record) -> bool {
        subsumed(&self.context.0, &self.siblings, &newer.context.0, &newer.siblings)
    }

    /// Live siblings (a value, not expired at `now_ms`) in dot order, which is
    /// the same on every node so replies are deterministic. Does not allocate.
    pub fn live(&self, now_ms: u64) -> impl Iterator<Item = &Sibling> {
        self.siblings.iter().filter(move |s| s.is_live(now_ms))
    }

    /// For `conflicts = "lww"`: the live sibling with the greatest
    /// `(timestamp_ms, dot)`; the dot breaks timestamp ties the same way on
    /// every node. Tombstones are not candidates, matching the rule that a
    /// tombstone concurrent with a value loses to the value (and so that
    /// pruning a tombstone never changes the answer).
    pub fn lww_winner(&self, now_ms: u64) -> Option<&Sibling> {
        self.live(now_ms).max_by_key(|s| (s.timestamp_ms, s.dot))
    }

    /// Drops siblings that are expired at `now_ms` and tombstones whose
    /// `expire_at_ms` (their grace deadline) has passed. The context is kept,
    /// so a copy that still holds a dropped sibling cannot bring it back by
    /// merge. Returns true if the record now has no siblings and may be
    /// removed from storage.
    pub fn prune(&mut self, now_ms: u64) -> bool {
        self.siblings.retain(|s| s.expire_at_ms.is_none_or(|at| now_ms < at));
        self.siblings.is_empty()
    }

    /// Earliest `expire_at_ms` among siblings (values and tombstones), the key
    /// under which the expiry index should file this record.
    pub fn next_expiry(&self) -> Option<u64> {
        self.siblings.iter().filter_map(|s| s.expire_at_ms).min()
    }

    /// Postcard encoding, for storage and the peer bus. Canonical: equal
    /// records encode to equal bytes (Merkle hashes depend on it).
    ///
    /// Written by hand, byte for byte what postcard writes for the derived `Serialize` (property-tested): through
    /// serde, postcard took about 970 instructions per record (callgrind), pushing each varint byte through its
    /// flavor. The layout is the one [`RecordView::decode`] reads.
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: growing the vector while encoding costs reallocations.
        let values: usize = self
            .siblings
            .iter()
            .map(|s| s.value.as_ref().map_or(0, Bytes::len))
            .sum();
        let mut out = Vec::with_capacity(values + 40 * self.siblings.len() + 20 * self.context.len() + 8);
        put_varint(&mut out, self.context.0.len() as u64);
        for &(actor, counter) in &self.context.0 {
            put_varint(&mut out, actor);
            put_varint(&mut out, counter);
        }
        put_varint(&mut out, self.siblings.len() as u64);
        for sibling in &self.siblings {
            put_varint(&mut out, sibling.dot.actor);
            put_varint(&mut out, sibling.dot.counter);
            put_varint(&mut out, sibling.timestamp_ms);
            put_value_and_expiry(&mut out, sibling.value.as_deref(), sibling.expire_at_ms);
        }
        out
    }

    /// Decodes [`encode`](Self::encode) output. Returns `None` if the bytes are
    /// malformed, have trailing bytes, or describe a record that breaks the
    /// invariants (bytes from disk or peers are not trusted blindly).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        match postcard::take_from_bytes::<Record>(bytes) {
            Ok((record, [])) if record.is_encoded_in(bytes.len()) => Some(record),
            _ => None,
        }
    }

    /// Whether the record's encoding takes `len` bytes: postcard also reads numbers written longer than needed,
    /// and only those make an encoding longer, so a decoded record whose length differs was not written canonically
    /// (equal records must encode to equal bytes).
    fn is_encoded_in(&self, len: usize) -> bool {
        let siblings = self.siblings.iter().map(|s| {
            let value = s.value.as_ref().map(Bytes::len);
            (s.dot, s.timestamp_ms, value, s.expire_at_ms)
        });
        encoded_len(&self.context.0, siblings) == len
    }

    fn is_canonical(&self) -> bool {
        siblings_canonical(&self.context.0, &self.siblings)
    }
}

/// Deserializes like the derived impl would, then rejects records that break
/// the invariants (unsorted or repeated dots, a sibling its context does not
/// cover), which merge relies on.
impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "Record")]
        struct Raw {
            context: VersionVector,
            siblings: Vec<Sibling>,
        }
        let Raw { context, siblings } = Raw::deserialize(deserializer)?;
        let record = Record { context, siblings };
        if !record.is_canonical() {
            return Err(serde::de::Error::custom(
                "record siblings not sorted by unique dot, or not covered by its context",
            ));
        }
        Ok(record)
    }
}

/// Bytes of [`Record::encode`] output for a record of this context and these siblings (dot, timestamp, value
/// length, expiry).
fn encoded_len(
    context: &[(ActorId, u64)],
    siblings: impl ExactSizeIterator<Item = (Dot, u64, Option<usize>, Option<u64>)>,
) -> usize {
    let pairs: usize = context.iter().map(|&(a, c)| varint_len(a) + varint_len(c)).sum();
    let mut len = varint_len(context.len() as u64) + pairs + varint_len(siblings.len() as u64);
    for (dot, timestamp_ms, value, expire_at_ms) in siblings {
        len += varint_len(dot.actor) + varint_len(dot.counter) + varint_len(timestamp_ms) + 2;
        len += value.map_or(0, |n| varint_len(n as u64) + n) + expire_at_ms.map_or(0, varint_len);
    }
    len
}

/// Appends a sibling's optional value and optional expiry, which end its encoding (what
/// [`Encoded::value_and_expiry`] reads).
fn put_value_and_expiry(out: &mut Vec<u8>, value: Option<&[u8]>, expire_at_ms: Option<u64>) {
    match value {
        Some(value) => {
            out.push(1);
            put_varint(out, value.len() as u64);
            out.extend_from_slice(value);
        }
        None => out.push(0),
    }
    match expire_at_ms {
        Some(at) => {
            out.push(1);
            put_varint(out, at);
        }
        None => out.push(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_sibling() -> impl Strategy<Value = Sibling> {
        let value = proptest::option::of(prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from));
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            value,
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(actor, counter, timestamp_ms, value, expire_at_ms)| Sibling {
                dot: Dot { actor, counter },
                timestamp_ms,
                value,
                expire_at_ms,
            })
    }

    proptest! {
        /// Any record, canonical or not, encodes to exactly the bytes postcard writes for it.
        #[test]
        fn encodes_as_postcard_does(
            context in prop::collection::vec((any::<u64>(), 0u64..300), 0..5),
            siblings in prop::collection::vec(any_sibling(), 0..4),
        ) {
            let record = Record { context: VersionVector(context), siblings };
            prop_assert_eq!(record.encode(), postcard::to_allocvec(&record).expect("postcard"));
        }
    }

    const A: ActorId = 0xA;
    const B: ActorId = 0xB;
    const C: ActorId = 0xC;

    fn val(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn live_values(r: &Record, now_ms: u64) -> Vec<&[u8]> {
        r.live(now_ms).map(|s| s.value.as_deref().unwrap_or_default()).collect()
    }

    fn vv(entries: &[(ActorId, u64)]) -> VersionVector {
        let mut v = VersionVector::default();
        for &(actor, counter) in entries {
            v.add(Dot { actor, counter });
        }
        v
    }

    fn assert_invariants(r: &Record) {
        assert!(
            VersionVector::is_canonical(r.context.entries()),
            "context not canonical: {r:?}"
        );
        assert!(r.is_canonical(), "record not canonical: {r:?}");
    }

    // ---- version vectors -------------------------------------------------

    #[test]
    fn version_vector_add_get_covers_join() {
        let mut v = VersionVector::default();
        assert!(v.is_empty());
        v.add(Dot { actor: C, counter: 3 });
        v.add(Dot { actor: A, counter: 5 });
        v.add(Dot { actor: A, counter: 2 }); // lower: no change
        v.add(Dot { actor: B, counter: 0 }); // zero: ignored
        assert_eq!(v.entries(), &[(A, 5), (C, 3)]);
        assert_eq!(v.get(A), 5);
        assert_eq!(v.get(B), 0);
        assert!(v.covers(Dot { actor: A, counter: 5 }));
        assert!(!v.covers(Dot { actor: A, counter: 6 }));
        assert!(!v.covers(Dot { actor: B, counter: 1 }));

        let mut w = vv(&[(A, 7), (C, 1)]);
        w.join(&v); // only shared actors: in place
        assert_eq!(w.entries(), &[(A, 7), (C, 3)]);
        w.join(&vv(&[(0x1, 4), (B, 2), (0xFF, 9)]));
        assert_eq!(w.entries(), &[(0x1, 4), (A, 7), (B, 2), (C, 3), (0xFF, 9)]);
        assert_eq!(w.len(), 5);
    }

    #[test]
    fn token_round_trip() {
        for v in [
            VersionVector::default(),
            vv(&[(A, 1)]),
            vv(&[(A, 1_700_000_000_000_000), (B, 3), (u64::MAX, 42)]),
        ] {
            let token = v.encode_token();
            assert_eq!(VersionVector::decode_token(&token), Some(v));
        }
    }

    #[test]
    fn decode_token_rejects_garbage() {
        let good = vv(&[(A, 1), (B, 2)]).encode_token();
        // Truncated, trailing bytes, empty input, random bytes.
        assert_eq!(VersionVector::decode_token(&good[..good.len() - 1]), None);
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(VersionVector::decode_token(&trailing), None);
        assert_eq!(VersionVector::decode_token(&[]), None);
        assert_eq!(VersionVector::decode_token(&[0xff; 16]), None);
        // Well-formed postcard, but not canonical.
        let raw = |e: &[(u64, u64)]| postcard::to_allocvec(&e.to_vec()).unwrap();
        assert_eq!(VersionVector::decode_token(&raw(&[(B, 1), (A, 1)])), None);
        assert_eq!(VersionVector::decode_token(&raw(&[(A, 1), (A, 2)])), None);
        assert_eq!(VersionVector::decode_token(&raw(&[(A, 0)])), None);
        assert_eq!(VersionVector::decode_token(&raw(&[(A, u64::MAX)])), None);
        assert!(VersionVector::decode_token(&raw(&[(A, 1), (B, 2)])).is_some());
    }

    // ---- writes ----------------------------------------------------------

    #[test]
    fn subsumed_by_the_next_version_but_not_by_an_older_or_concurrent_one() {
        let mut old = Record::default();
        old.write(A, &VersionVector::default(), val("v1"), Some(10), 1).unwrap();
        let mut next = old.clone();
        next.write(B, &next.context.clone(), val("v2"), None, 2).unwrap();
        assert!(old.is_subsumed_by(&next), "the coordinator's next version");
        assert!(Record::default().is_subsumed_by(&next), "a key this copy never held");
        assert!(!next.is_subsumed_by(&old), "an older copy");
        let mut concurrent = old.clone();
        concurrent
            .write(C, &VersionVector::default(), val("v3"), None, 3)
            .unwrap();
        assert!(!concurrent.is_subsumed_by(&next) && !next.is_subsumed_by(&concurrent));
        // A copy that pruned v1 (expired) keeps its context: merging the
        // unpruned copy would drop v1 again, so that copy is not the result.
        let mut pruned = old.clone();
        pruned.prune(20);
        assert!(!pruned.is_subsumed_by(&old));
        assert!(old.is_subsumed_by(&pruned));
    }

    #[test]
    fn write_supersedes_what_ctx_covers() {
        let mut r = Record::default();
        r.write(A, &r.context.clone(), val("v1"), None, 1).unwrap();
        let d2 = r.write(A, &r.context.clone(), val("v2"), None, 2).unwrap();
        assert_eq!(live_values(&r, 2), [b"v2"]);
        assert_eq!(r.siblings.len(), 1);
        assert!(r.context.covers(d2));
        assert_invariants(&r);
    }

    #[test]
    fn supersede_equals_write_with_own_context() {
        let mut conflicted = Record::default();
        conflicted
            .write(A, &VersionVector::default(), val("a"), None, 1)
            .unwrap();
        conflicted
            .write(B, &VersionVector::default(), val("b"), Some(9), 1)
            .unwrap();
        assert_eq!(conflicted.siblings.len(), 2);
        let mut by_write = conflicted.clone();
        let mut by_supersede = conflicted.clone();
        let ctx = by_write.context.clone();
        let d1 = by_write.write(A, &ctx, val("c"), None, 5).unwrap();
        let d2 = by_supersede.supersede(A, val("c"), None, 5).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(by_write, by_supersede);
        assert_invariants(&by_supersede);
    }

    #[test]
    fn write_with_old_ctx_yields_two_siblings() {
        let mut r = Record::default();
        r.write(A, &r.context.clone(), val("base"), None, 1).unwrap();
        let old = r.context.clone();
        r.write(A, &old, val("x"), None, 2).unwrap();
        r.write(A, &old, val("y"), None, 3).unwrap();
        assert_eq!(live_values(&r, 3), [b"x".as_slice(), b"y"]);
        // Resolving with the current context collapses them.
        r.write(A, &r.context.clone(), val("xy"), None, 4).unwrap();
        assert_eq!(live_values(&r, 4), [b"xy"]);
        assert_invariants(&r);
    }

    #[test]
    fn write_dot_is_fresh_and_clock_floored() {
        let mut r = Record::default();
        let d1 = r.write(A, &VersionVector::default(), val("a"), None, 5).unwrap();
        assert_eq!(
            d1,
            Dot {
                actor: A,
                counter: 5_000
            }
        );
        // Clock went backwards: still above what the context has seen.
        let d2 = r.write(A, &r.context.clone(), val("b"), None, 1).unwrap();
        assert_eq!(d2.counter, 5_001);
        // A record deleted and dropped (context lost) does not reissue old dots.
        let mut fresh = Record::default();
        let d3 = fresh.write(A, &VersionVector::default(), val("c"), None, 6).unwrap();
        assert!(d3.counter > d2.counter);
        // A client context that knows more of our own dots pushes the counter up.
        let mut other = Record::default();
        let d4 = other.write(A, &vv(&[(A, 9_999)]), val("d"), None, 1).unwrap();
        assert_eq!(d4.counter, 10_000);
    }

    #[test]
    fn tombstone_concurrent_with_value_value_is_live() {
        let mut a = Record::default();
        a.write(A, &a.context.clone(), val("v0"), None, 1).unwrap();
        let mut b = a.clone();
        // A deletes, B concurrently overwrites.
        a.write(A, &a.context.clone(), None, Some(1_000), 2).unwrap();
        b.write(B, &b.context.clone(), val("v1"), None, 2).unwrap();
        a.merge(&b);
        assert_eq!(a.siblings.len(), 2);
        assert_eq!(live_values(&a, 3), [b"v1"]);
        assert_eq!(a.lww_winner(3).and_then(|s| s.value.as_deref()), Some(&b"v1"[..]));
        // A delete that saw the value wins.
        a.write(A, &a.context.clone(), None, Some(1_000), 4).unwrap();
        assert_eq!(a.live(4).count(), 0);
        assert_eq!(a.lww_winner(4), None);
        assert_invariants(&a);
    }

    #[test]
    fn too_many_siblings_leaves_record_unchanged() {
        let mut r = Record::default();
        let empty = VersionVector::default();
        for i in 0..MAX_SIBLINGS as u64 {
            r.write(A, &empty, val("v"), None, i).unwrap();
        }
        assert_eq!(r.siblings.len(), MAX_SIBLINGS);
        let before = r.clone();
        assert_eq!(
            r.write(A, &empty, val("one too many"), None, 100),
            Err(WriteError::TooManySiblings)
        );
        assert_eq!(r, before);
        // A write that supersedes them is fine.
        r.write(A, &r.context.clone(), val("resolved"), None, 101).unwrap();
        assert_eq!(r.siblings.len(), 1);
    }

    // ---- merge -----------------------------------------------------------

    #[test]
    fn merge_drops_superseded_and_keeps_concurrent() {
        let mut a = Record::default();
        a.write(A, &a.context.clone(), val("v1"), None, 1).unwrap();
        let mut b = a.clone();
        // B supersedes v1; A does not know yet.
        b.write(B, &b.context.clone(), val("v2"), None, 2).unwrap();
        let mut a2 = a.clone();
        a2.merge(&b);
        assert_eq!(live_values(&a2, 2), [b"v2"]);
        // Concurrent writes on both sides survive a merge either way round.
        a.write(A, &a.context.clone(), val("v3"), None, 3).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(live_values(&ab, 3), [b"v3".as_slice(), b"v2"]);
        assert_invariants(&ab);
    }

    #[test]
    fn merge_same_dot_different_content_is_deterministic() {
        let mut a = Record::default();
        a.write(A, &VersionVector::default(), val("one"), None, 1).unwrap();
        let mut b = Record::default();
        b.write(A, &VersionVector::default(), val("two"), None, 1).unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.siblings.len(), 1);
    }

    // ---- expiry and pruning ----------------------------------------------

    #[test]
    fn expiry_hides_value_at_deadline() {
        let mut r = Record::default();
        r.write(A, &r.context.clone(), val("v"), Some(100), 1).unwrap();
        assert_eq!(live_values(&r, 99), [b"v"]);
        assert_eq!(r.live(100).count(), 0);
        assert_eq!(r.lww_winner(100), None);
        assert_eq!(r.next_expiry(), Some(100));
    }

    #[test]
    fn prune_drops_expired_and_old_tombstones_keeps_context() {
        let mut r = Record::default();
        let empty = VersionVector::default();
        r.write(A, &empty, val("forever"), None, 1).unwrap();
        r.write(B, &empty, val("short"), Some(50), 1).unwrap();
        r.write(C, &empty, None, Some(80), 1).unwrap(); // tombstone, grace until 80
        assert_eq!(r.next_expiry(), Some(50));
        let ctx = r.context.clone();

        assert!(!r.prune(49));
        assert_eq!(r.siblings.len(), 3);
        assert!(!r.prune(50));
        assert_eq!(r.siblings.len(), 2);
        assert_eq!(r.next_expiry(), Some(80));
        assert!(!r.prune(80));
        assert_eq!(live_values(&r, 80), [b"forever"]);
        assert_eq!(r.next_expiry(), None);
        assert_eq!(r.context, ctx);

        // Only a tombstone left: pruning it empties the record.
        let mut d = Record::default();
        d.write(A, &empty, val("v"), None, 1).unwrap();
        d.write(A, &d.context.clone(), None, Some(10), 2).unwrap();
        assert!(!d.prune(9));
        assert!(d.prune(10));
        assert!(!d.context.is_empty());
    }

    #[test]
    fn pruned_sibling_is_not_resurrected_by_merge() {
        let mut a = Record::default();
        a.write(A, &a.context.clone(), val("v"), None, 1).unwrap();
        a.write(A, &a.context.clone(), None, Some(10), 2).unwrap();
        let stale = a.clone(); // still holds the tombstone
        a.prune(10);
        a.merge(&stale);
        assert!(a.siblings.is_empty());
    }

    // ---- encoding --------------------------------------------------------

    #[test]
    fn record_round_trip() {
        let mut r = Record::default();
        let empty = VersionVector::default();
        r.write(B, &empty, val("b"), Some(1_000), 3).unwrap();
        r.write(A, &empty, None, Some(2_000), 4).unwrap();
        r.write(A, &empty, val(""), None, 5).unwrap();
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Some(r.clone()));
        assert_eq!(Record::decode(&Record::default().encode()), Some(Record::default()));
    }

    #[test]
    fn record_decode_rejects_garbage() {
        // Whatever a record refuses, so does its view (replication stores copies checked only as views).
        let decode = |bytes: &[u8]| {
            let record = Record::decode(bytes);
            assert_eq!(RecordView::decode(bytes).is_some(), record.is_some(), "{bytes:?}");
            record
        };
        let mut r = Record::default();
        r.write(A, &r.context.clone(), val("v"), None, 1).unwrap();
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "prefix {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(7);
        assert_eq!(decode(&trailing), None);
        assert_eq!(decode(&[0xff; 32]), None);

        // Well-formed postcard that breaks the invariants.
        #[derive(Serialize)]
        struct Raw<'a> {
            context: &'a [(u64, u64)],
            siblings: &'a [Sibling],
        }
        let sib = |actor, counter| Sibling {
            dot: Dot { actor, counter },
            timestamp_ms: 0,
            value: val("x"),
            expire_at_ms: None,
        };
        let enc =
            |context: &[(u64, u64)], siblings: &[Sibling]| postcard::to_allocvec(&Raw { context, siblings }).unwrap();
        // Consistent baseline decodes.
        assert!(decode(&enc(&[(A, 5)], &[sib(A, 4), sib(A, 5)])).is_some());
        // Sibling not covered by the context.
        assert_eq!(decode(&enc(&[(A, 5)], &[sib(A, 6)])), None);
        // Siblings out of order, and a repeated dot.
        assert_eq!(decode(&enc(&[(A, 5)], &[sib(A, 5), sib(A, 4)])), None);
        assert_eq!(decode(&enc(&[(A, 5)], &[sib(A, 5), sib(A, 5)])), None);
        // Context not canonical.
        assert_eq!(decode(&enc(&[(B, 1), (A, 5)], &[])), None);
        assert_eq!(decode(&enc(&[(A, 0)], &[])), None);
    }

    #[test]
    fn numbers_written_longer_than_needed_are_refused() {
        let record = Record {
            context: VersionVector(vec![(7, 2)]),
            siblings: vec![Sibling {
                dot: Dot { actor: 7, counter: 2 },
                timestamp_ms: 1,
                value: Some(Bytes::from_static(b"v")),
                expire_at_ms: None,
            }],
        };
        let canonical = record.encode();
        assert_eq!(Record::decode(&canonical).as_ref(), Some(&record));
        assert!(RecordView::decode(&canonical).is_some());
        // The context's length, 1, as two bytes: postcard reads it, but it is not the record's encoding.
        let mut overlong = vec![0x81, 0x00];
        overlong.extend_from_slice(&canonical[1..]);
        assert!(postcard::from_bytes::<Record>(&overlong).is_ok());
        assert_eq!(Record::decode(&overlong), None);
        assert!(RecordView::decode(&overlong).is_none());
        // The same in a token.
        let token = record.context.encode_token();
        assert!(VersionVector::decode_token(&token).is_some());
        let mut overlong = vec![0x81, 0x00];
        overlong.extend_from_slice(&token[1..]);
        assert_eq!(VersionVector::decode_token(&overlong), None);
    }

    // ---- property tests on random histories ------------------------------

    /// Actor ids deliberately not in replica order, to exercise sorting.
    const ACTORS: [ActorId; 4] = [0x7f3a, 0x0102, 0xfffe_0000_0000_0001, 0x55];

    #[derive(Clone, Debug)]
    enum CtxChoice {
        /// The replica's own current context (a plain SET/DEL).
        Own,
        /// A context captured earlier from some replica (a VSET with an old token).
        Captured(usize),
        /// No context (a blind write that supersedes nothing).
        Empty,
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write {
            at: usize,
            ctx: CtxChoice,
            value: Option<u8>,
            ttl: Option<u8>,
            clock: u8,
        },
        /// Remember replica `at`'s context (a token) and a snapshot of its record.
        Capture {
            at: usize,
        },
        Merge {
            from: usize,
            to: usize,
        },
        Prune {
            at: usize,
            now: u8,
        },
    }

    fn op_strategy(allow_prune: bool) -> impl Strategy<Value = Op> {
        let ctx = prop_oneof![
            3 => Just(CtxChoice::Own),
            2 => any::<usize>().prop_map(CtxChoice::Captured),
            1 => Just(CtxChoice::Empty),
        ];
        let write = (
            any::<usize>(),
            ctx,
            proptest::option::weighted(0.8, any::<u8>()),
            proptest::option::weighted(0.3, 0u8..40),
            0u8..60,
        )
            .prop_map(|(at, ctx, value, ttl, clock)| Op::Write {
                at,
                ctx,
                value,
                ttl,
                clock,
            });
        let capture = any::<usize>().prop_map(|at| Op::Capture { at });
        let merge = (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Op::Merge { from, to });
        let prune = (any::<usize>(), 0u8..100).prop_map(|(at, now)| Op::Prune { at, now });
        let prune_weight = if allow_prune { 1 } else { 0 };
        prop_oneof![
            4 => write,
            2 => capture,
            3 => merge,
            prune_weight => prune,
        ]
    }

    fn history_strategy(allow_prune: bool) -> impl Strategy<Value = (usize, Vec<Op>)> {
        (2usize..=4, prop::collection::vec(op_strategy(allow_prune), 0..40))
    }

    /// Everything a history produced: replicas, snapshots, and the write log
    /// (each write's sibling and the context it was issued with).
    struct Outcome {
        replicas: Vec<Record>,
        snapshots: Vec<Record>,
        writes: Vec<(Sibling, VersionVector)>,
    }

    fn run(n: usize, ops: &[Op]) -> Outcome {
        let mut replicas = vec![Record::default(); n];
        let mut tokens: Vec<VersionVector> = Vec::new();
        let mut snapshots = Vec::new();
        let mut writes = Vec::new();
        for op in ops {
            match *op {
                Op::Write {
                    at,
                    ref ctx,
                    value,
                    ttl,
                    clock,
                } => {
                    let at = at % n;
                    let ctx = match *ctx {
                        CtxChoice::Own => replicas[at].context.clone(),
                        CtxChoice::Captured(i) if !tokens.is_empty() => tokens[i % tokens.len()].clone(),
                        CtxChoice::Captured(_) | CtxChoice::Empty => VersionVector::default(),
                    };
                    let now = u64::from(clock);
                    let value = value.map(|b| Bytes::from(vec![b]));
                    let expire = ttl.map(|t| now + u64::from(t));
                    let r = &mut replicas[at];
                    let dot = r
                        .write(ACTORS[at], &ctx, value, expire, now)
                        .expect("histories stay below MAX_SIBLINGS");
                    let pos = r.siblings.binary_search_by_key(&dot, |s| s.dot).unwrap();
                    writes.push((r.siblings[pos].clone(), ctx));
                    assert_invariants(r);
                }
                Op::Capture { at } => {
                    let r = &replicas[at % n];
                    tokens.push(r.context.clone());
                    snapshots.push(r.clone());
                }
                Op::Merge { from, to } => {
                    let src = replicas[from % n].clone();
                    replicas[to % n].merge(&src);
                    assert_invariants(&replicas[to % n]);
                }
                Op::Prune { at, now } => {
                    replicas[at % n].prune(u64::from(now));
                    assert_invariants(&replicas[at % n]);
                }
            }
        }
        Outcome {
            replicas,
            snapshots,
            writes,
        }
    }

    fn merged(a: &Record, b: &Record) -> Record {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Merge is a join: commutative, associative, idempotent, and keeps
        /// the invariants, on replicas and mid-history snapshots alike.
        #[test]
        fn prop_merge_laws((n, ops) in history_strategy(true)) {
            let out = run(n, &ops);
            let mut records = out.replicas;
            records.extend(out.snapshots.into_iter().take(3));
            for a in &records {
                prop_assert_eq!(&merged(a, a), a);
                for b in &records {
                    let ab = merged(a, b);
                    assert_invariants(&ab);
                    prop_assert_eq!(&ab, &merged(b, a));
                    for c in &records {
                        prop_assert_eq!(merged(&ab, c), merged(a, &merged(b, c)));
                    }
                }
            }
        }

        /// `is_subsumed_by` says exactly when a merge would give the newer copy
        /// back, including over pruned copies and copies that merged each other.
        #[test]
        fn prop_subsumed_matches_merge((n, ops) in history_strategy(true)) {
            let out = run(n, &ops);
            let mut records = out.replicas;
            records.extend(out.snapshots.into_iter().take(3));
            let joined: Vec<Record> = records.iter().flat_map(|a| records.iter().map(|b| merged(a, b))).collect();
            records.extend(joined);
            let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
            for (a, a_bytes) in records.iter().zip(&encoded) {
                let a_view = RecordView::decode(a_bytes).expect("a record's encoding reads as a view");
                prop_assert_eq!(a_view.next_expiry(), a.next_expiry());
                prop_assert_eq!(a_view.is_empty(), a.siblings.is_empty());
                for (b, b_bytes) in records.iter().zip(&encoded) {
                    let subsumed = a.is_subsumed_by(b);
                    prop_assert_eq!(subsumed, merged(a, b) == *b, "{:?} into {:?}", b, a);
                    prop_assert_eq!(a_view.is_subsumed_by(&RecordView::decode(b_bytes).expect("a view")), subsumed);
                }
            }
        }

        /// After every replica has merged every other, in any order, all
        /// replicas are equal, and they round-trip through the encoding.
        #[test]
        fn prop_convergence((n, ops) in history_strategy(true), rot in 0usize..4) {
            let out = run(n, &ops);
            let finals: Vec<Record> = (0..n)
                .map(|i| {
                    let mut r = out.replicas[i].clone();
                    for k in 0..n {
                        r.merge(&out.replicas[(i + rot + k) % n]);
                    }
                    // Also in reverse order, on a second copy.
                    let mut rev = out.replicas[i].clone();
                    for k in (0..n).rev() {
                        rev.merge(&out.replicas[k]);
                    }
                    assert_eq!(r, rev);
                    r
                })
                .collect();
            for r in &finals {
                prop_assert_eq!(r, &finals[0]);
                prop_assert_eq!(&Record::decode(&r.encode()), &Some(r.clone()));
            }
            // Gossip in place, ring order twice round, gives the same result.
            let mut gossip = out.replicas.clone();
            for _ in 0..2 {
                for i in 0..n {
                    let src = gossip[i].clone();
                    gossip[(i + 1) % n].merge(&src);
                }
            }
            for r in &gossip {
                prop_assert_eq!(r, &finals[0]);
            }
        }

        /// Without pruning, the converged record holds exactly the writes that
        /// no write's context covered (nothing lost, nothing superseded kept).
        #[test]
        fn prop_converged_matches_causal_model((n, ops) in history_strategy(false)) {
            let out = run(n, &ops);
            let mut all = Record::default();
            for r in &out.replicas {
                all.merge(r);
            }
            let mut expected: Vec<Sibling> = out
                .writes
                .iter()
                .filter(|(s, _)| !out.writes.iter().any(|(_, ctx)| ctx.covers(s.dot)))
                .map(|(s, _)| s.clone())
                .collect();
            expected.sort_by_key(|s| s.dot);
            prop_assert_eq!(&all.siblings, &expected);
            for (s, _) in &out.writes {
                prop_assert!(all.context.covers(s.dot));
            }
        }

        /// Decoding a corrupted encoding of a real record never panics, and
        /// whatever still decodes is canonical.
        #[test]
        fn prop_decode_corrupted_record(
            (n, ops) in history_strategy(true),
            flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let out = run(n, &ops);
            let mut all = Record::default();
            for r in &out.replicas {
                all.merge(r);
            }
            let mut bytes = all.encode();
            prop_assert_eq!(&Record::decode(&bytes), &Some(all.clone()));
            if !bytes.is_empty() {
                for (at, x) in flips {
                    let len = bytes.len();
                    bytes[at % len] ^= x;
                }
            }
            prop_assert_eq!(RecordView::decode(&bytes).is_some(), Record::decode(&bytes).is_some());
            if let Some(r) = Record::decode(&bytes) {
                assert_invariants(&r);
            }
        }

        /// Decoding arbitrary bytes never panics, and whatever decodes is
        /// canonical and re-encodes to the same bytes.
        #[test]
        fn prop_decode_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(RecordView::decode(&bytes).is_some(), Record::decode(&bytes).is_some());
            if let Some(r) = Record::decode(&bytes) {
                assert_invariants(&r);
                prop_assert_eq!(r.encode(), bytes.clone());
            }
            if let Some(v) = VersionVector::decode_token(&bytes) {
                prop_assert_eq!(v.encode_token(), bytes);
            }
        }
    }
}
