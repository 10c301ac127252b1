//! The memory engine's hash table of one group of slots, written here rather
//! than taken from hashbrown: a lookup is mostly cache misses, and hashbrown's
//! layout costs one more than it needs (its control bytes, then the bucket,
//! then the entry). Here a slot holds the key's full hash beside the entry's
//! pointer, so a lookup reads one slot (usually the first it probes) and then
//! the entry, whose key it compares only when the hashes agree.
//!
//! Open addressing with linear probing, at most 3/4 full; removal shifts the
//! following slots back instead of leaving tombstones, so a lookup stops at
//! the first empty slot.

use std::sync::OnceLock;

use super::memory::Entry;

/// Bytes the CPU fetches at once.
const CACHE_LINE: usize = 64;

/// Lines of an entry fetched ahead: key and record of a small value; a big value is read in a stream anyway.
const PREFETCH_LINES: usize = 3;

/// Slots of a map's first allocation.
const MIN_SLOTS: usize = 8;

/// One slot: an entry and its key's hash, or nothing.
#[derive(Default)]
pub(super) struct Slot {
    hash: u64,
    entry: Option<Entry>,
}

/// Where a key was found in a map (or that it was not), for a write that follows its read.
pub(super) struct Found {
    hash: u64,
    at: Option<usize>,
}

/// A map's entries, in no order.
pub(super) type Entries<'a> = std::iter::FilterMap<std::slice::Iter<'a, Slot>, fn(&Slot) -> Option<&Entry>>;

/// Entries found by their key alone.
#[derive(Default)]
pub(super) struct RecordMap {
    /// A power of two in length, or empty before the first insert.
    slots: Box<[Slot]>,
    len: usize,
}

impl RecordMap {
    /// Keys come from clients (HashDoS), so they are hashed with the
    /// process's one random seed, kept out of the maps.
    fn hash(key: &[u8]) -> u64 {
        static SEED: OnceLock<ahash::RandomState> = OnceLock::new();
        SEED.get_or_init(ahash::RandomState::new).hash_one(key)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where `key` is, if present.
    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            match &slot.entry {
                None => return None,
                Some(entry) if slot.hash == hash && entry.key() == key => return Some(at),
                Some(_) => at = (at + 1) & mask,
            }
        }
    }

    /// Starts fetching the slot where `key`'s probe begins into the cache; gives the hash for [`Self::prefetch_entry`].
    pub(super) fn prefetch_slot(&self, key: &[u8]) -> u64 {
        let hash = Self::hash(key);
        if !self.slots.is_empty() {
            prefetch(&self.slots[hash as usize & self.mask()]);
        }
        hash
    }

    /// Starts fetching the entry in the home slot of `hash`, if it is that hash's (usually the key's).
    pub(super) fn prefetch_entry(&self, hash: u64) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[hash as usize & self.mask()];
        if let Some(entry) = slot.entry.as_ref().filter(|_| slot.hash == hash) {
            // Key and record usually span two cache lines.
            for line in entry.bytes().chunks(CACHE_LINE).take(PREFETCH_LINES) {
                prefetch(line.as_ptr());
            }
        }
    }

    /// The entry of `key`, if present.
    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        let at = self.position(Self::hash(key), key)?;
        self.slots[at].entry.as_ref()
    }

    /// Looks `key` up for a read followed by a write ([`Self::entry_at`], [`Self::put_found`]): one hash and one
    /// probe for both.
    pub(super) fn find(&self, key: &[u8]) -> Found {
        let hash = Self::hash(key);
        Found {
            hash,
            at: self.position(hash, key),
        }
    }

    /// The entry `found` points at, if the key was present.
    pub(super) fn entry_at(&self, found: &Found) -> Option<&Entry> {
        self.slots[found.at?].entry.as_ref()
    }

    /// Inserts `key` or overwrites its value; returns by how many bytes the map grew (an entry and its slot, or a
    /// longer value; a shorter one counts nothing).
    pub(super) fn put(&mut self, key: &[u8], value: &[u8]) -> usize {
        let found = self.find(key);
        self.put_found(found, key, value)
    }

    /// [`Self::put`] where `found` is `key`'s lookup, with the map unchanged since.
    pub(super) fn put_found(&mut self, found: Found, key: &[u8], value: &[u8]) -> usize {
        let Found { hash, at } = found;
        if let Some(at) = at {
            if let Some(entry) = &mut self.slots[at].entry {
                let grown = value.len().saturating_sub(entry.value().len());
                entry.set_value(value);
                return grown;
            }
            return 0;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let entry = Entry::new(key, value);
        let grown = entry.bytes().len() + std::mem::size_of::<Slot>();
        self.place(hash, entry);
        self.len += 1;
        grown
    }

    /// Puts an entry known to be absent in the first free slot from its home.
    fn place(&mut self, hash: u64, entry: Entry) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.slots[at].entry.is_some() {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            hash,
            entry: Some(entry),
        };
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| Slot::default()).collect());
        for slot in old.into_vec() {
            if let Some(entry) = slot.entry {
                self.place(slot.hash, entry);
            }
        }
    }

    /// Removes the entry of `key`, if present.
    pub(super) fn remove(&mut self, key: &[u8]) {
        let Some(mut hole) = self.position(Self::hash(key), key) else {
            return;
        };
        self.slots[hole].entry = None;
        self.len -= 1;
        // Move back each following entry whose home is not between the hole
        // and it, so every entry stays reachable from its home without gaps.
        let mask = self.mask();
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            if self.slots[at].entry.is_none() {
                return;
            }
            let home = self.slots[at].hash as usize & mask;
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                self.slots.swap(hole, at);
                hole = at;
            }
        }
    }

    /// Every entry, in no order (scans sort them).
    pub(super) fn iter(&self) -> Entries<'_> {
        self.slots.iter().filter_map(|slot| slot.entry.as_ref())
    }

    /// Whether the map holds no entry.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Asks the CPU to bring `at`'s cache line in, without waiting for it.
#[inline]
fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing and never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, so puts overwrite and removals hit; values of 1 to 3
        // bytes, so overwrites both fit in place and do not.
        prop_oneof![
            (0u8..40, 1u8..4).prop_map(|(k, n)| Op::Put(k, n)),
            (0u8..40).prop_map(Op::Remove),
        ]
    }

    #[test]
    fn prefetching_hints_at_the_probe_and_changes_nothing() {
        let mut map = RecordMap::default();
        let hash = map.prefetch_slot(b"k");
        assert_eq!(hash, RecordMap::hash(b"k"));
        map.prefetch_entry(hash);
        for k in 0u8..100 {
            map.put(&[k], &[k, k]);
        }
        for k in 0u8..200 {
            map.prefetch_entry(map.prefetch_slot(&[k]));
            assert_eq!(map.get(&[k]).map(Entry::value), (k < 100).then_some(&[k, k][..]));
        }
        assert_eq!(map.iter().count(), 100);
    }

    proptest! {
        #[test]
        fn agrees_with_std_hash_map(ops in proptest::collection::vec(op(), 0..400)) {
            let mut map = RecordMap::default();
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            for (i, op) in ops.iter().enumerate() {
                match *op {
                    Op::Put(k, n) => {
                        let value = vec![i as u8; usize::from(n)];
                        map.put(&[k], &value);
                        model.insert(vec![k], value);
                    }
                    Op::Remove(k) => {
                        map.remove(&[k]);
                        model.remove(&vec![k]);
                    }
                }
                for k in 0u8..40 {
                    prop_assert_eq!(map.get(&[k]).map(Entry::value), model.get(&vec![k]).map(Vec::as_slice));
                }
                prop_assert_eq!(map.iter().count(), model.len());
                prop_assert_eq!(map.is_empty(), model.is_empty());
            }
        }
    }
}
