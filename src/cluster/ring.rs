//! TEMPORARY stub (replaced by the real ring): plain vnode ring.
use super::slot::SLOTS;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    pub id: String,
    pub zone: String,
    pub vnodes: u32,
}
pub type MemberIndex = u16;
#[derive(Debug)]
pub struct RingError(pub String);
impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub struct Ring {
    members: Vec<RingMember>,
    n: usize,
    tokens: Vec<(u64, MemberIndex)>,
    lists: Vec<MemberIndex>,
}
impl Ring {
    pub fn new(members: Vec<RingMember>, replicas: usize) -> Result<Ring, RingError> {
        if members.is_empty() {
            return Err(RingError("no members".into()));
        }
        let n = replicas.clamp(1, members.len());
        let mut tokens = Vec::new();
        for (i, m) in members.iter().enumerate() {
            for v in 0..m.vnodes {
                let mut b = m.id.as_bytes().to_vec();
                b.extend_from_slice(&v.to_le_bytes());
                tokens.push((xxh3_64(&b), i as MemberIndex));
            }
        }
        tokens.sort_unstable();
        let mut lists = Vec::with_capacity(SLOTS as usize * n);
        for slot in 0..SLOTS {
            let pos = (slot as u64) << 50;
            let start = tokens.partition_point(|t| t.0 < pos);
            let mut list: Vec<MemberIndex> = Vec::new();
            for k in 0..tokens.len() {
                let m = tokens[(start + k) % tokens.len()].1;
                if !list.contains(&m) {
                    list.push(m);
                    if list.len() == n {
                        break;
                    }
                }
            }
            lists.extend(list);
        }
        Ok(Ring {
            members,
            n,
            tokens,
            lists,
        })
    }
    pub fn members(&self) -> &[RingMember] {
        &self.members
    }
    pub fn replicas(&self) -> usize {
        self.n
    }
    pub fn preference_list(&self, slot: u16) -> &[MemberIndex] {
        let s = slot as usize * self.n;
        &self.lists[s..s + self.n]
    }
    pub fn tokens(&self) -> &[(u64, MemberIndex)] {
        &self.tokens
    }
    pub fn primary_slots(&self, member: MemberIndex) -> usize {
        (0..SLOTS).filter(|&s| self.preference_list(s)[0] == member).count()
    }
    pub fn replica_slots(&self, member: MemberIndex) -> usize {
        (0..SLOTS)
            .filter(|&s| self.preference_list(s).contains(&member))
            .count()
    }
    pub fn slot_ranges(&self) -> Vec<(u16, u16, &[MemberIndex])> {
        let mut out: Vec<(u16, u16, &[MemberIndex])> = Vec::new();
        for s in 0..SLOTS {
            let l = self.preference_list(s);
            match out.last_mut() {
                Some(last) if last.2 == l => last.1 = s,
                _ => out.push((s, s, l)),
            }
        }
        out
    }
}
