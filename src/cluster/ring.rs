//! Slot → preference list: consistent hashing with virtual nodes, looked up from several probes per slot.
//!
//! Every member puts `vnodes` tokens on a 64-bit ring, token `i` being `xxh3(id ‖ i as 4 bytes LE)`, so every process
//! derives the same ring from the same members. A slot is looked up from [`PROBES`] points `xxh3(slot, seed)`.
//! A member's distance to a slot is the shortest clockwise distance from any probe to any of its tokens, and members
//! rank by that distance (ties by id). Put differently: walk clockwise from all probes in lockstep, always stepping
//! to the nearest next token; the distinct members met, in order, are the ranking. With one probe this is exactly
//! Dynamo's clockwise walk. The preference list is the first N of the ranking, zones permitting (below).
//!
//! Why several probes: with one, a member's share is the total length of the arcs ending at its tokens, whose
//! relative spread is about 1/sqrt(vnodes), 9% at 128 vnodes: in 3.7% of random 10-member clusters (measured) someone
//! coordinates over 1.25x its fair share. With several, the nearest token wins, which weighs tokens almost equally
//! whatever their arc length (multi-probe consistent hashing, Appleton & O'Reilly 2015); at 16 probes the spread is
//! about 2.8% for 10 members, most of it the sampling noise of 16384 slots.
//!
//! Why rank members by their own distance rather than walk on from the winning token: a member's distance depends
//! only on its own tokens, so adding a member only inserts it into each ranking and removing one only deletes it.
//! Slots then move only to an added member and only away from a removed one, for every replica, not just the
//! coordinator (walking on from the token a new member wins would give the slot's other places to that token's
//! clockwise neighbours rather than keep the slot's previous replicas).
//!
//! Zones: the list first takes, in ranking order, members whose zone is not used yet; if that gives fewer than N,
//! it fills up with the other members in ranking order. An empty zone means "no zone": such a member is a zone of
//! its own. This selection keeps the movement property above.
//!
//! What this cannot do: balance is statistical, not guaranteed (measured: in 1,000 random member sets of each size
//! from 3 to 10, random ids of 1-12 characters, no member got more than 1.11x its fair share); any membership change
//! recomputes all 16384 lists (about 6 ms for 10 members); neighbouring slots get unrelated lists, so
//! [`Ring::slot_ranges`] yields thousands of short runs.

use std::collections::HashMap;
use std::fmt;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::slot::SLOTS;

/// Points a slot is looked up from; more balance the load better and cost construction time linearly.
pub const PROBES: usize = 16;

/// Tokens a member gets unless configured otherwise; with [`PROBES`] probes, 128 keeps each member's share within a
/// few percent of fair.
pub const DEFAULT_VNODES: u32 = 128;

/// Upper bound on a member's vnodes: a 32x weight range, and it keeps the token table small.
pub const MAX_VNODES: u32 = 4096;

/// Seeds of the probe hashes start here, far from the small seeds tokens use.
const PROBE_SEED: u64 = 0x7072_6f62_6500_0000;

/// One physical node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    /// Unique node id; the tokens are derived from it.
    pub id: String,
    /// Failure domain; replicas of a slot prefer distinct zones. Empty means the node is a zone of its own.
    pub zone: String,
    /// Number of tokens, i.e. the node's weight (see [`DEFAULT_VNODES`]).
    pub vnodes: u32,
}

/// Index of a member in the slice the ring was built from.
pub type MemberIndex = u16;

/// Why a member list cannot form a ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// No members: nothing could own the slots.
    NoMembers,
    /// More members than a [`MemberIndex`] can address.
    TooManyMembers(usize),
    /// Two members share this id, so their tokens would coincide.
    DuplicateId(String),
    /// This member's vnodes is 0 or above [`MAX_VNODES`].
    BadVnodes(String, u32),
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::NoMembers => write!(f, "ring has no members"),
            RingError::TooManyMembers(n) => write!(f, "ring has {n} members, at most {} allowed", 1 << 16),
            RingError::DuplicateId(id) => write!(f, "duplicate ring member id {id:?}"),
            RingError::BadVnodes(id, v) => write!(f, "member {id:?} has {v} vnodes, expected 1..={MAX_VNODES}"),
        }
    }
}

impl std::error::Error for RingError {}

/// The slot → preference list map for one member set, computed once so that lookups are O(1).
#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<RingMember>,
    replicas: usize,
    tokens: Vec<(u64, MemberIndex)>,
    /// `replicas` entries per slot, slot after slot.
    lists: Vec<MemberIndex>,
    primary: Vec<u32>,
    replica: Vec<u32>,
}

impl Ring {
    /// Builds the ring; `replicas` (N) is clamped to 1..=members. Errors on an empty member list, duplicate ids or
    /// vnodes outside 1..=[`MAX_VNODES`].
    pub fn new(members: Vec<RingMember>, replicas: usize) -> Result<Ring, RingError> {
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        if members.len() > usize::from(MemberIndex::MAX) + 1 {
            return Err(RingError::TooManyMembers(members.len()));
        }
        if let Some(m) = members.iter().find(|m| m.vnodes == 0 || m.vnodes > MAX_VNODES) {
            return Err(RingError::BadVnodes(m.id.clone(), m.vnodes));
        }
        // Rank of each member by id: the tie-break that makes results independent of member order.
        let mut by_id: Vec<MemberIndex> = (0..=MemberIndex::MAX).take(members.len()).collect();
        by_id.sort_unstable_by(|&a, &b| members[usize::from(a)].id.cmp(&members[usize::from(b)].id));
        if let Some(w) = by_id
            .windows(2)
            .find(|w| members[usize::from(w[0])].id == members[usize::from(w[1])].id)
        {
            return Err(RingError::DuplicateId(members[usize::from(w[0])].id.clone()));
        }
        let mut rank = vec![0; members.len()];
        for (r, &m) in (0..=MemberIndex::MAX).zip(&by_id) {
            rank[usize::from(m)] = r;
        }

        let mut tokens = Vec::with_capacity(members.iter().map(|m| m.vnodes as usize).sum());
        for (i, m) in (0..=MemberIndex::MAX).zip(&members) {
            tokens.extend((0..m.vnodes).map(|v| (token(&m.id, v), i)));
        }
        tokens.sort_unstable_by_key(|&(t, m)| (t, rank[usize::from(m)]));

        let replicas = replicas.clamp(1, members.len());
        let mut walk = Walk::new(&members, &tokens, &rank, replicas);
        let mut lists = Vec::with_capacity(usize::from(SLOTS) * replicas);
        for slot in 0..SLOTS {
            walk.select(slot, &mut lists);
        }
        let mut primary = vec![0; members.len()];
        let mut replica = vec![0; members.len()];
        for list in lists.chunks_exact(replicas) {
            primary[usize::from(list[0])] += 1;
            for &m in list {
                replica[usize::from(m)] += 1;
            }
        }
        Ok(Ring {
            members,
            replicas,
            tokens,
            lists,
            primary,
            replica,
        })
    }

    /// The members, in the order given to [`Ring::new`]; a [`MemberIndex`] indexes this.
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }

    /// Effective replication factor N: every preference list has exactly this length.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Who holds `slot`, coordinator first, distinct members; empty if `slot >= SLOTS`.
    pub fn preference_list(&self, slot: u16) -> &[MemberIndex] {
        let start = usize::from(slot) * self.replicas;
        self.lists.get(start..start + self.replicas).unwrap_or(&[])
    }

    /// All tokens with their owners, sorted by token (ties, which practically never occur, by member id); for
    /// CLUSTER RING.
    pub fn tokens(&self) -> &[(u64, MemberIndex)] {
        &self.tokens
    }

    /// Number of slots `member` coordinates (is first in the list of); 0 for an unknown index.
    pub fn primary_slots(&self, member: MemberIndex) -> usize {
        self.primary.get(usize::from(member)).map_or(0, |&n| n as usize)
    }

    /// Number of slots whose preference list contains `member`; 0 for an unknown index.
    pub fn replica_slots(&self, member: MemberIndex) -> usize {
        self.replica.get(usize::from(member)).map_or(0, |&n| n as usize)
    }

    /// Maximal runs of consecutive slots with the same preference list, in slot order: (first, last inclusive,
    /// list). For CLUSTER SLOTS/SHARDS.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, &[MemberIndex])> {
        let mut ranges: Vec<(u16, u16, &[MemberIndex])> = Vec::new();
        for (slot, list) in (0..SLOTS).zip(self.lists.chunks_exact(self.replicas)) {
            match ranges.last_mut() {
                Some(last) if last.2 == list => last.1 = slot,
                _ => ranges.push((slot, slot, list)),
            }
        }
        ranges
    }
}

/// The position of token `vnode` of member `id`. The index is hashed with the id rather than passed as xxh3's seed:
/// for inputs of up to 3 bytes xxh3 only adds the seed to a 32-bit mix of the bytes, so short ids shared tokens.
fn token(id: &str, vnode: u32) -> u64 {
    let mut input = Vec::with_capacity(id.len() + 4);
    input.extend_from_slice(id.as_bytes());
    input.extend_from_slice(&vnode.to_le_bytes());
    xxh3_64(&input)
}

/// The position of probe `probe` of `slot` on the ring.
fn probe_point(slot: u16, probe: usize) -> u64 {
    xxh3_64_with_seed(&slot.to_le_bytes(), PROBE_SEED + probe as u64)
}

/// Scratch state for choosing the preference list of one slot after another.
struct Walk<'a> {
    tokens: &'a [(u64, MemberIndex)],
    rank: &'a [MemberIndex],
    /// Zone number of each member; members without a zone get one of their own.
    zone: Vec<u32>,
    /// How many of the N places are taken by one member per zone; the rest are filled in ranking order.
    distinct_zones: usize,
    replicas: usize,
    /// `bucket[b]` is the first token at or after `b << shift`: a successor search is then a short scan.
    bucket: Vec<usize>,
    shift: u32,
    /// Per probe: its position, the index of the next token its walk meets, and that token's distance and owner's
    /// rank (the walk steps to the smallest).
    probe: [u64; PROBES],
    cursor: [usize; PROBES],
    next: [(u64, MemberIndex); PROBES],
    /// `slot + 1` marks a member met / a zone used for the current slot, so nothing needs clearing between slots.
    met: Vec<u16>,
    zone_used: Vec<u16>,
    fill: Vec<MemberIndex>,
}

impl<'a> Walk<'a> {
    fn new(members: &[RingMember], tokens: &'a [(u64, MemberIndex)], rank: &'a [MemberIndex], replicas: usize) -> Self {
        let mut names: HashMap<&str, u32> = HashMap::new();
        let mut zones = 0;
        let mut zone = Vec::with_capacity(members.len());
        for m in members {
            let next = zones;
            let z = if m.zone.is_empty() {
                next
            } else {
                *names.entry(&m.zone).or_insert(next)
            };
            if z == next {
                zones += 1;
            }
            zone.push(z);
        }
        // About one token per bucket on average.
        let bits = tokens.len().next_power_of_two().trailing_zeros().max(1);
        let shift = 64 - bits;
        let bucket = (0..1u64 << bits)
            .map(|b| tokens.partition_point(|&(t, _)| t >> shift < b))
            .collect();
        Walk {
            tokens,
            bucket,
            shift,
            rank,
            distinct_zones: replicas.min(zones as usize),
            zone_used: vec![0; zones as usize],
            zone,
            replicas,
            probe: [0; PROBES],
            cursor: [0; PROBES],
            next: [(0, 0); PROBES],
            met: vec![0; members.len()],
            fill: Vec::with_capacity(replicas),
        }
    }

    /// Appends the preference list of `slot` to `out`.
    fn select(&mut self, slot: u16, out: &mut Vec<MemberIndex>) {
        let stamp = slot + 1;
        for p in 0..PROBES {
            let point = probe_point(slot, p);
            let mut i = self.bucket[(point >> self.shift) as usize];
            while i < self.tokens.len() && self.tokens[i].0 < point {
                i += 1;
            }
            self.probe[p] = point;
            self.cursor[p] = i % self.tokens.len();
            self.next[p] = self.key(p);
        }
        let (mut picked, mut met) = (0, 0);
        let fill_wanted = self.replicas - self.distinct_zones;
        self.fill.clear();
        // Every member is met once one probe has gone round the ring, so the walk ends well within this bound.
        for _ in 0..PROBES * self.tokens.len() {
            let mut best = 0;
            for p in 1..PROBES {
                if self.next[p] < self.next[best] {
                    best = p;
                }
            }
            let m = self.tokens[self.cursor[best]].1;
            self.cursor[best] = (self.cursor[best] + 1) % self.tokens.len();
            self.next[best] = self.key(best);
            if self.met[usize::from(m)] == stamp {
                continue;
            }
            self.met[usize::from(m)] = stamp;
            met += 1;
            let zone = self.zone[usize::from(m)] as usize;
            if picked < self.distinct_zones && self.zone_used[zone] != stamp {
                self.zone_used[zone] = stamp;
                out.push(m);
                picked += 1;
            } else if self.fill.len() < fill_wanted {
                self.fill.push(m);
            }
            if (picked == self.distinct_zones && self.fill.len() == fill_wanted) || met == self.met.len() {
                break;
            }
        }
        out.extend_from_slice(&self.fill);
    }

    /// Where probe `p`'s walk goes next: (clockwise distance, owner's rank by id).
    fn key(&self, p: usize) -> (u64, MemberIndex) {
        let (token, m) = self.tokens[self.cursor[p]];
        (token.wrapping_sub(self.probe[p]), self.rank[usize::from(m)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const ZONES: [&str; 4] = ["", "a", "b", "c"];

    fn member(id: &str, zone: &str, vnodes: u32) -> RingMember {
        RingMember {
            id: id.to_string(),
            zone: zone.to_string(),
            vnodes,
        }
    }

    fn plain(ids: &[String]) -> Vec<RingMember> {
        ids.iter().map(|id| member(id, "", DEFAULT_VNODES)).collect()
    }

    /// Members with zones picked from [`ZONES`] by `zones`, or all without a zone.
    fn zoned(ids: &[String], zones: &[usize], use_zones: bool) -> Vec<RingMember> {
        let zone = |i: usize| if use_zones { ZONES[zones[i]] } else { "" };
        ids.iter()
            .enumerate()
            .map(|(i, id)| member(id, zone(i), DEFAULT_VNODES))
            .collect()
    }

    fn id(ring: &Ring, m: MemberIndex) -> &str {
        &ring.members()[usize::from(m)].id
    }

    /// The preference list of `slot` as ids.
    fn list_ids(ring: &Ring, slot: u16) -> Vec<&str> {
        ring.preference_list(slot).iter().map(|&m| id(ring, m)).collect()
    }

    /// Whether two rings give `slot` the same list, by id and in order.
    fn same_list(a: &Ring, b: &Ring, slot: u16) -> bool {
        list_ids(a, slot) == list_ids(b, slot)
    }

    fn in_list(ring: &Ring, slot: u16, wanted: &str) -> bool {
        ring.preference_list(slot).iter().any(|&m| id(ring, m) == wanted)
    }

    fn ids() -> impl Strategy<Value = Vec<String>> {
        prop::collection::btree_set("[a-z0-9-]{1,12}", 3..=10).prop_map(|s| s.into_iter().collect())
    }

    /// The scheme as the module doc states it, computed the slow, obvious way.
    fn reference_list(members: &[RingMember], replicas: usize, slot: u16) -> Vec<String> {
        let distance = |m: &RingMember| {
            let tokens = (0..m.vnodes).map(|v| token(&m.id, v));
            let points: Vec<u64> = (0..PROBES).map(|p| probe_point(slot, p)).collect();
            tokens
                .flat_map(|t| points.iter().map(move |&p| t.wrapping_sub(p)))
                .min()
                .unwrap()
        };
        let mut ranking: Vec<(u64, &RingMember)> = members.iter().map(|m| (distance(m), m)).collect();
        ranking.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
        let (mut list, mut rest, mut zones) = (Vec::new(), Vec::new(), BTreeSet::new());
        for (_, m) in ranking {
            if list.len() < replicas && (m.zone.is_empty() || zones.insert(m.zone.clone())) {
                list.push(m.id.clone());
            } else {
                rest.push(m.id.clone());
            }
        }
        let missing = replicas - list.len();
        list.extend(rest.into_iter().take(missing));
        list
    }

    /// Tokens of different members never coincide, short ids included (a shared token goes to the lower id, so
    /// members that share many lose their slots to it). Proptest found "-5-" and "-50" when the vnode index was
    /// xxh3's seed: for inputs of up to 3 bytes xxh3 adds the seed to a 32-bit mix of the bytes, so ids differing
    /// in low bits shared most tokens.
    #[test]
    fn members_share_no_tokens() {
        let ids = ["-5-", "-50", "a", "b", "ab", "ac", "node1", "node2", "node10"];
        let members: Vec<RingMember> = ids.iter().map(|id| member(id, "", MAX_VNODES)).collect();
        let ring = Ring::new(members, 1).unwrap();
        let tokens = ring.tokens();
        let shared = tokens.windows(2).filter(|w| w[0].0 == w[1].0).count();
        assert_eq!(shared, 0, "{shared} tokens shared among {} tokens", tokens.len());
    }

    #[test]
    fn rejects_bad_member_lists() {
        assert_eq!(Ring::new(vec![], 3).err(), Some(RingError::NoMembers));
        let dup = vec![member("a", "", 8), member("b", "", 8), member("a", "z", 8)];
        assert_eq!(Ring::new(dup, 3).err(), Some(RingError::DuplicateId("a".into())));
        let zero = vec![member("a", "", 8), member("b", "", 0)];
        assert_eq!(Ring::new(zero, 1).err(), Some(RingError::BadVnodes("b".into(), 0)));
        let huge = vec![member("a", "", MAX_VNODES + 1)];
        assert!(matches!(Ring::new(huge, 1), Err(RingError::BadVnodes(..))));
    }

    #[test]
    fn clamps_replicas_and_counts_consistently() {
        let members = vec![member("a", "", 8), member("b", "", 16)];
        assert_eq!(Ring::new(members.clone(), 0).unwrap().replicas(), 1);
        let ring = Ring::new(members, 5).unwrap();
        assert_eq!(ring.replicas(), 2);
        assert_eq!(ring.tokens().len(), 24);
        assert!(ring.tokens().windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(ring.preference_list(SLOTS).is_empty());
        assert_eq!(ring.primary_slots(0) + ring.primary_slots(1), usize::from(SLOTS));
        assert_eq!(ring.replica_slots(0), usize::from(SLOTS));
        assert_eq!(ring.primary_slots(2), 0);
    }

    #[test]
    fn single_member_owns_everything() {
        let ring = Ring::new(vec![member("solo", "z", 1)], 3).unwrap();
        assert_eq!(ring.slot_ranges(), vec![(0, SLOTS - 1, &[0][..])]);
    }

    // Golden values: every number below was produced by running this code (not derived by hand) and then pinned. The
    // test fails if token or probe hashing, tie-breaking or selection ever change, which would make nodes running
    // different versions disagree about who owns a slot.
    #[test]
    fn golden_ring() {
        let ids: Vec<String> = ["node1", "node2", "node3"].iter().map(|s| s.to_string()).collect();
        let ring = Ring::new(plain(&ids), 2).unwrap();
        let node1_token0 = ring
            .tokens()
            .iter()
            .find(|&&(t, m)| m == 0 && t == 10998843567089840690);
        assert!(node1_token0.is_some(), "token 0 of node1 is xxh3(\"node1\" ‖ 0u32 LE)");
        assert_eq!(
            ring.tokens()[..3],
            [(97239282670222083, 1), (129035504562383241, 1), (185944567154786144, 1)]
        );
        let lists = [
            (0, ["node3", "node1"]),
            (1, ["node3", "node1"]),
            (2, ["node3", "node1"]),
            (3, ["node1", "node2"]),
            (4, ["node1", "node3"]),
            (5, ["node2", "node1"]),
            (16383, ["node3", "node2"]),
        ];
        for (slot, want) in lists {
            assert_eq!(list_ids(&ring, slot), want, "slot {slot}");
        }
        assert_eq!([0, 1, 2].map(|m| ring.primary_slots(m)), [5468, 5492, 5424]);
    }

    #[test]
    fn empty_zone_is_a_zone_of_its_own() {
        let members = vec![
            member("a1", "a", 64),
            member("a2", "a", 64),
            member("x", "", 64),
            member("y", "", 64),
        ];
        let ring = Ring::new(members, 3).unwrap();
        for slot in 0..SLOTS {
            let list = list_ids(&ring, slot);
            assert_eq!(
                list.iter().filter(|id| id.starts_with('a')).count(),
                1,
                "slot {slot}: {list:?}"
            );
        }
    }

    #[test]
    fn fewer_zones_than_replicas_fills_with_distinct_members() {
        let members = vec![
            member("a1", "a", 64),
            member("a2", "a", 64),
            member("b1", "b", 64),
            member("b2", "b", 64),
        ];
        let ring = Ring::new(members.clone(), 3).unwrap();
        for slot in 0..SLOTS {
            let list = ring.preference_list(slot);
            let zone = |i: usize| &members[usize::from(list[i])].zone;
            assert_ne!(zone(0), zone(1), "the two zones come first");
            assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), 3);
        }
    }

    // Statistical properties: the full 256 cases, since a rare bad member set is exactly what they must rule out.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// With 128 vnodes nobody coordinates more than 1.25x its fair share of the slots.
        #[test]
        fn balance(ids in ids()) {
            let ring = Ring::new(plain(&ids), 3).unwrap();
            let n = ids.len();
            for m in 0..n {
                let slots = ring.primary_slots(m as MemberIndex);
                prop_assert!(slots * n * 4 <= usize::from(SLOTS) * 5, "member {m} of {n} has {slots} slots");
            }
        }

        /// A member with twice the vnodes coordinates about twice the slots of an average other member.
        #[test]
        fn vnodes_weigh(ids in ids()) {
            let mut members = plain(&ids);
            members[0].vnodes = 2 * DEFAULT_VNODES;
            let ring = Ring::new(members, 1).unwrap();
            let others = (1..ids.len()).map(|m| ring.primary_slots(m as MemberIndex)).sum::<usize>() as f64;
            let ratio = ring.primary_slots(0) as f64 / (others / (ids.len() - 1) as f64);
            prop_assert!((1.6..=2.4).contains(&ratio), "ratio {ratio}");
        }
    }

    // Exact properties: any failure is a bug, not bad luck, and every case builds rings of 16384 lists, so fewer cases.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The lockstep walk computes exactly the ranking and zone rule stated in the module doc.
        #[test]
        fn matches_reference(ids in ids(), zones in prop::collection::vec(0..4usize, 10), n in 1..=4usize) {
            let members: Vec<RingMember> =
                ids.iter().zip(&zones).map(|(id, &z)| member(id, ZONES[z], 1 + id.len() as u32 * 7)).collect();
            let ring = Ring::new(members.clone(), n).unwrap();
            for slot in (0..SLOTS).step_by(251) {
                prop_assert_eq!(list_ids(&ring, slot), reference_list(&members, ring.replicas(), slot));
            }
        }

        /// Adding a member moves slots only to it: no one else becomes coordinator or joins a list, and lists without
        /// the newcomer stay exactly as they were.
        #[test]
        fn adding_moves_slots_only_to_the_newcomer(
            ids in ids(), zones in prop::collection::vec(0..4usize, 11), use_zones: bool, at in 0..10usize,
        ) {
            let mut members = zoned(&ids, &zones, use_zones);
            let before = Ring::new(members.clone(), 3).unwrap();
            let newcomer = "NEW";
            members.insert(at % members.len(), zoned(&[newcomer.into()], &zones[10..], use_zones).remove(0));
            let after = Ring::new(members, 3).unwrap();
            for slot in 0..SLOTS {
                let coordinator = id(&after, after.preference_list(slot)[0]);
                prop_assert!(coordinator == newcomer || coordinator == id(&before, before.preference_list(slot)[0]));
                for &m in after.preference_list(slot) {
                    prop_assert!(id(&after, m) == newcomer || in_list(&before, slot, id(&after, m)), "slot {}", slot);
                }
                prop_assert!(in_list(&after, slot, newcomer) || same_list(&before, &after, slot), "slot {}", slot);
            }
        }

        /// Removing a member moves only its slots: lists that did not contain it stay exactly as they were.
        #[test]
        fn removing_moves_only_the_leavers_slots(
            ids in ids(), zones in prop::collection::vec(0..4usize, 10), use_zones: bool, leaver in 0..10usize,
        ) {
            let mut members = zoned(&ids, &zones, use_zones);
            let before = Ring::new(members.clone(), 3).unwrap();
            let gone = members.remove(leaver % members.len()).id;
            let after = Ring::new(members, 3).unwrap();
            for slot in 0..SLOTS {
                prop_assert!(in_list(&before, slot, &gone) || same_list(&before, &after, slot), "slot {}", slot);
                let coordinator = id(&before, before.preference_list(slot)[0]);
                prop_assert!(coordinator == gone || coordinator == id(&after, after.preference_list(slot)[0]));
            }
        }

        /// Member order does not matter: the same members give the same tokens and lists, by id.
        #[test]
        fn member_order_does_not_matter(ids in ids(), rotate in 0..10usize) {
            let a = Ring::new(plain(&ids), 3).unwrap();
            let mut shuffled = plain(&ids);
            shuffled.rotate_left(rotate % ids.len());
            shuffled.swap(0, 1);
            let b = Ring::new(shuffled, 3).unwrap();
            let tokens = |r: &Ring| -> Vec<(u64, String)> { r.tokens().iter().map(|&(t, m)| (t, id(r, m).into())).collect() };
            prop_assert_eq!(tokens(&a), tokens(&b));
            for slot in 0..SLOTS {
                prop_assert!(same_list(&a, &b, slot), "slot {}", slot);
            }
        }

        /// With at least N zones, every preference list spans N distinct zones.
        #[test]
        fn lists_span_distinct_zones(ids in ids(), zones in prop::collection::vec(0..5usize, 10), n in 1..=3usize) {
            // The first three members are in zones z0, z1, z2, so there are always at least N zones.
            let zone_of = |i: usize| if i < 3 { i } else { zones[i] };
            let members: Vec<RingMember> =
                ids.iter().enumerate().map(|(i, id)| member(id, &format!("z{}", zone_of(i)), 128)).collect();
            let ring = Ring::new(members.clone(), n).unwrap();
            for slot in 0..SLOTS {
                let spanned: BTreeSet<&str> =
                    ring.preference_list(slot).iter().map(|&m| members[usize::from(m)].zone.as_str()).collect();
                prop_assert_eq!(spanned.len(), n);
            }
        }

        /// Lists have N distinct members, the counters agree with them, and the ranges tile the slots.
        #[test]
        fn lists_ranges_and_counts_agree(ids in ids(), n in 1..=5usize) {
            let ring = Ring::new(plain(&ids), n).unwrap();
            let n = n.min(ids.len());
            let mut primary = vec![0; ids.len()];
            let mut replica = vec![0; ids.len()];
            for slot in 0..SLOTS {
                let list = ring.preference_list(slot);
                prop_assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), n);
                primary[usize::from(list[0])] += 1;
                list.iter().for_each(|&m| replica[usize::from(m)] += 1);
            }
            for m in 0..ids.len() {
                prop_assert_eq!(ring.primary_slots(m as MemberIndex), primary[m]);
                prop_assert_eq!(ring.replica_slots(m as MemberIndex), replica[m]);
            }
            let mut next = 0u32;
            let ranges = ring.slot_ranges();
            for (i, &(first, last, list)) in ranges.iter().enumerate() {
                prop_assert_eq!(u32::from(first), next);
                prop_assert!(first <= last);
                prop_assert!(i == 0 || ranges[i - 1].2 != list, "ranges are maximal");
                for slot in first..=last {
                    prop_assert_eq!(ring.preference_list(slot), list);
                }
                next = u32::from(last) + 1;
            }
            prop_assert_eq!(next, u32::from(SLOTS));
        }
    }
}
