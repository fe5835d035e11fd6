//! The key index's hash table: slot numbers by key hash, built so that a batch of
//! lookups can be prefetched in passes (see [`super::index`]).
//!
//! Open addressing with linear probing over one array of `u64` buckets: `0` is empty,
//! anything else is `tag << 32 | (slot + 1)`, where `tag` is the high 32 bits of the
//! key's 64-bit hash. A key's home bucket is `tag & mask`, so the table can grow without
//! hashing any key again, and its home is known from the hash alone:
//! [`SlotTable::prefetch`] asks for that cache line before anything is compared. Eight
//! buckets share a cache line and the table is at most half full, so a lookup almost
//! always reads one line. Deletion shifts the following buckets back (no tombstones).
//!
//! Tags are only a filter: equal tags are confirmed by the caller's `eq` on the slot.
//! Memory: 16 to 32 bytes per key (capacity a power of two, at most half used).

/// Smallest capacity once anything is stored.
const MIN_BUCKETS: usize = 16;

#[derive(Debug, Default)]
pub struct SlotTable {
    /// Empty, or a power of two long.
    buckets: Box<[u64]>,
    len: usize,
}

fn tag(hash: u64) -> u64 {
    hash >> 32
}

impl SlotTable {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    fn home(&self, tag: u64) -> usize {
        tag as usize & self.mask()
    }

    /// Asks the CPU for the cache line where a lookup of `hash` starts.
    pub fn prefetch(&self, hash: u64) {
        if !self.buckets.is_empty() {
            super::index::prefetch_write(&self.buckets[self.home(tag(hash))]);
        }
    }

    /// The slot of the first bucket whose tag matches `hash`, without confirming it: a
    /// hint, right unless two keys share the tag.
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true).map(|i| self.slot_at(i))
    }

    /// The bucket holding `hash` whose slot satisfies `eq`.
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let t = tag(hash);
        let mut i = self.home(t);
        loop {
            let b = self.buckets[i];
            if b == 0 {
                return None;
            }
            if b >> 32 == t && eq(b as u32 - 1) {
                return Some(i);
            }
            i = (i + 1) & self.mask();
        }
    }

    /// The slot stored in bucket `i` (from [`SlotTable::find`]).
    pub fn slot_at(&self, i: usize) -> u32 {
        self.buckets[i] as u32 - 1
    }

    /// Points bucket `i` at `slot` instead.
    pub fn set_slot(&mut self, i: usize, slot: u32) {
        assert!(slot < u32::MAX, "slot numbers are below 2^32 - 1");
        self.buckets[i] = self.buckets[i] >> 32 << 32 | (u64::from(slot) + 1);
    }

    /// Adds `slot` under `hash` (the caller knows no bucket holds it).
    pub fn insert(&mut self, hash: u64, slot: u32) {
        assert!(slot < u32::MAX, "slot numbers are below 2^32 - 1");
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place(tag(hash) << 32 | (u64::from(slot) + 1));
        self.len += 1;
    }

    fn place(&mut self, bucket: u64) {
        let mut i = self.home(bucket >> 32);
        while self.buckets[i] != 0 {
            i = (i + 1) & self.mask();
        }
        self.buckets[i] = bucket;
    }

    fn grow(&mut self) {
        let n = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.buckets, vec![0; n].into_boxed_slice());
        for b in old.iter().copied().filter(|&b| b != 0) {
            self.place(b);
        }
    }

    /// Empties bucket `i` (from [`SlotTable::find`]), moving later buckets of the same
    /// run back so that every lookup still reaches its bucket.
    pub fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        self.buckets[i] = 0;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            // b may fill the hole at i unless its home lies in (i, j] (cyclically).
            let home = self.home(b >> 32);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.buckets[i] = b;
                self.buckets[j] = 0;
                i = j;
            }
        }
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts, removals and slot changes against a map, with hashes drawn from
    /// a small set of tags and homes so that runs, wrap-around and equal tags are
    /// common.
    #[test]
    fn random_operations_match_a_map() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20 {
            let mut t = SlotTable::default();
            // key -> (hash, slot)
            let mut model: HashMap<u64, (u64, u32)> = HashMap::new();
            let keys = 10 + round * 40;
            for step in 0..4000 {
                let key = next() % keys;
                // Tags from a small range: many equal tags and long runs.
                let hash = ((key * 7 + round) % (keys / 2 + 1)) << 32 | key;
                let eq = |s: u32| s == key as u32 * 3;
                match (model.get(&key).copied(), next() % 3) {
                    (None, _) => {
                        assert_eq!(t.find(hash, eq), None, "step {step}");
                        t.insert(hash, key as u32 * 3);
                        model.insert(key, (hash, key as u32 * 3));
                    }
                    (Some(_), 0) => {
                        let i = t.find(hash, eq).expect("present");
                        t.remove_at(i);
                        model.remove(&key);
                    }
                    (Some((_, slot)), _) => {
                        let i = t.find(hash, |s| s == slot).expect("present");
                        assert_eq!(t.slot_at(i), slot);
                        t.set_slot(i, slot);
                    }
                }
                assert_eq!(t.len(), model.len());
                assert!(t.len() * 2 <= t.buckets.len());
            }
            for (&key, &(hash, slot)) in &model {
                let i = t.find(hash, |s| s == slot).expect("every key is found");
                assert_eq!(t.slot_at(i), key as u32 * 3);
            }
            let stored = t.buckets.iter().filter(|&&b| b != 0).count();
            assert_eq!(stored, model.len());
        }
    }

    #[test]
    fn candidate_is_the_first_matching_tag() {
        let mut t = SlotTable::default();
        assert_eq!(t.candidate(7 << 32), None);
        t.prefetch(7 << 32);
        t.insert(7 << 32, 4);
        t.insert(7 << 32 | 1, 5);
        t.insert(9 << 32, 6);
        assert_eq!(t.candidate(7 << 32), Some(4));
        assert_eq!(t.candidate(9 << 32), Some(6));
        assert_eq!(t.candidate(8 << 32), None);
        let i = t.find(7 << 32, |s| s == 5).unwrap();
        t.set_slot(i, 8);
        assert_eq!(t.slot_at(i), 8);
    }
}
