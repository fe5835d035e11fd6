//! The key index: for every key, the revisions of it that the rev tree holds (etcd's
//! `treeIndex`), in memory.
//!
//! The rev tree (revision → kind, metadata, key, value) is the only place history is
//! stored; this index is derived from it. [`Index::load`] rebuilds it at open with one
//! scan of the rev tree (reading each record's header and key), and every write and
//! physical compaction changes both together, so that the index always lists exactly the
//! rev-tree entries, grouped by key. A put therefore writes one B+tree entry (an append
//! at the rev tree's right edge) instead of also inserting into an on-disk index at a
//! random place; reads find a key's state in memory and fetch only the values they
//! return.
//!
//! Layout, chosen for the cache misses of a put (every put and single-key read looks its
//! key up; with 100k keys and more, each pointer followed is a miss):
//! - The [`Slot`]s, one per key, sit in one dense array. A slot holds the key's bytes
//!   (up to [`INLINE_KEY`] bytes inline, longer keys behind an `Rc`) and its newest
//!   revision. Older revisions sit in a `Vec` that only history reads, compaction and
//!   the next put of the key (one store at its end) touch.
//! - A hash table ([`SlotTable`]) maps a key's hash to its slot's number: one array of
//!   8-byte buckets, where the hash alone says which cache line a lookup starts in.
//! - [`Index::prefetch`] takes a batch's keys at once, in three passes, each asking the
//!   CPU for one cache line per key before the next pass reads it: every key's bucket
//!   line; then the slot its bucket names; then the end of that slot's history (where
//!   the next revision goes). Within a pass nothing waits on a miss, so the misses of a
//!   whole batch overlap instead of following one another, and the applies that come
//!   next find everything in the cache.
//! - An ordered map of the keys (sharing long keys' bytes, with each key's hash) is what
//!   ranges walk; they look each key's slot up by that hash. Only creating or forgetting
//!   a key touches it.
//! - [`Index::find`] returns the key's hash with its newest revision, so that a
//!   read-then-write ([`Index::push_found`]) hashes the key once and finds its slot
//!   again in memory that is still in the CPU cache.
//!
//! The hash is std's `RandomState` (SipHash with per-process random keys): clients pick
//! the keys, so the table must not be open to collision flooding.
//!
//! Memory: one [`Entry`] (48 bytes) per revision held plus, per key, a 96-byte slot,
//! 16-32 bytes of hash table, its bytes if longer than [`INLINE_KEY`], and an entry in
//! the ordered map. Compaction is what bounds it, as in etcd. Slot numbers are `u32`: at
//! most 2^32 - 1 keys per index.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::ops::Bound;
use std::rc::Rc;

use super::backend::{BackendError, ReadView};
use super::keys::*;
use super::slot_table::SlotTable;
use super::types::KvError;

/// One revision of a key: where it is in history, whether it is a tombstone, and the
/// key's metadata at it (zero for a tombstone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub rev: Rev,
    pub kind: u8,
    pub meta: Meta,
}

impl Entry {
    /// The key's state at this revision, if it exists there.
    pub fn live(&self) -> Option<LiveMeta> {
        (self.kind == KIND_PUT).then_some(LiveMeta {
            rev: self.rev,
            meta: self.meta,
        })
    }
}

/// Keys up to this many bytes are stored inside their slot (and map entry).
pub const INLINE_KEY: usize = 22;

/// A key's bytes: inline when short, shared between the table and the ordered map when
/// long. Compares, orders and borrows as its bytes.
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Shared(Rc<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Shared(Rc::from(key))
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Shared(b) => b,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.bytes()))
    }
}

/// Asks the CPU to fetch the cache line at `p` (a hint: never faults, any address).
#[inline]
pub(super) fn prefetch_write<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program can observe and never faults, for
    // any address; SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One key's revisions: the newest in the slot, the older ones ascending behind it.
#[derive(Debug)]
struct Slot {
    key: Key,
    newest: Entry,
    older: Vec<Entry>,
}

impl Slot {
    /// The newest entry with `main <= rev`.
    fn at(&self, rev: i64) -> Option<&Entry> {
        if self.newest.rev.main <= rev {
            return Some(&self.newest);
        }
        let n = self.older.partition_point(|e| e.rev.main <= rev);
        n.checked_sub(1).map(|i| &self.older[i])
    }
}

/// What [`Index::find`] learned about a key: its hash and its newest revision.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    hash: u64,
    /// The key's newest revision, if the index holds any.
    pub newest: Option<Entry>,
}

/// The revisions of every key, ascending per key.
#[derive(Default, Debug)]
pub struct Index {
    /// Every key's slot number, by the hash of its bytes.
    table: SlotTable,
    /// Every key's slot, in no order (a forgotten key's place is taken by the last).
    slots: Vec<Slot>,
    hasher: RandomState,
    /// Every key with its hash, in key order, for ranges.
    ordered: BTreeMap<Key, u64>,
    /// Entries over all keys (= rev-tree entries).
    entries: usize,
}

impl Index {
    /// Rebuilds the index from every entry of the rev tree of `view`.
    pub fn load<V: ReadView + ?Sized>(view: &V) -> Result<Index, KvError> {
        let mut index = Index::default();
        let mut err = None;
        view.scan(TREE_REV, b"", None, false, &mut |k, v| {
            let r = Rev::decode(k, TREE_REV).and_then(|rev| {
                let rec = decode_rev_record(k, v)?;
                let entry = Entry {
                    rev,
                    kind: rec.kind,
                    meta: rec.meta,
                };
                // Ascending revisions: each key's entries arrive in order.
                index.push(rec.key, entry);
                Ok(())
            });
            match r {
                Ok(()) => true,
                Err(e) => {
                    err = Some(e);
                    false
                }
            }
        })
        .map_err(|e: BackendError| KvError::Storage(format!("load key index: scan rev: {e}")))?;
        err.map_or(Ok(index), Err)
    }

    /// Number of revisions held.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Keys whose newest revision is not a tombstone.
    pub fn live_keys(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.newest.kind == KIND_PUT)
            .count()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The number of `key`'s slot.
    fn slot_no(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        let i = self
            .table
            .find(hash, |n| slots[n as usize].key.bytes() == key)?;
        Some(self.table.slot_at(i) as usize)
    }

    fn slot(&self, hash: u64, key: &[u8]) -> Option<&Slot> {
        self.slot_no(hash, key).map(|i| &self.slots[i])
    }

    fn slot_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Slot> {
        self.slot_no(hash, key).map(|i| &mut self.slots[i])
    }

    /// Looks `key` up: its newest revision, and its hash for [`Index::push_found`].
    pub fn find(&self, key: &[u8]) -> Found {
        let hash = self.hash(key);
        Found {
            hash,
            newest: self.slot(hash, key).map(|s| s.newest),
        }
    }

    /// Brings the slots of `keys` into the CPU cache, and the places where their next
    /// revisions will be stored (see [`Store::prefetch`](super::store::Store::prefetch)).
    /// A hint: changes nothing.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        // Pass 1: each key's home bucket (the hash alone says where it is).
        let hashes: Vec<u64> = keys
            .iter()
            .map(|k| {
                let hash = self.hash(k);
                self.table.prefetch(hash);
                hash
            })
            .collect();
        // Pass 2: the candidate slot (a matching tag; its key is not compared here,
        // that would wait for the slot).
        for &hash in &hashes {
            if let Some(n) = self.table.candidate(hash) {
                let s: *const Slot = &self.slots[n as usize];
                prefetch_write(s);
                prefetch_write((s as *const u8).wrapping_add(size_of::<Slot>() - 1));
            }
        }
        // Pass 3: the end of each key's history, where its next revision goes.
        for (k, hash) in keys.iter().zip(hashes) {
            if let Some(s) = self.slot(hash, k) {
                prefetch_write(s.older.as_ptr().wrapping_add(s.older.len()));
            }
        }
    }

    /// Adds a revision of `key`, newer than every one it has.
    pub fn push(&mut self, key: &[u8], entry: Entry) {
        let found = self.find(key);
        self.push_found(found, key, entry)
    }

    /// [`Index::push`], given what [`Index::find`] returned for `key` since the last
    /// change.
    pub fn push_found(&mut self, found: Found, key: &[u8], entry: Entry) {
        debug_assert_eq!(found.hash, self.hash(key));
        match found.newest {
            Some(_) => {
                let s = self
                    .slot_mut(found.hash, key)
                    .expect("a key find() saw is in the table");
                debug_assert!(s.newest.rev < entry.rev);
                let old = std::mem::replace(&mut s.newest, entry);
                s.older.push(old);
            }
            None => {
                debug_assert!(self.slot(found.hash, key).is_none());
                let key = Key::new(key);
                self.ordered.insert(key.clone(), found.hash);
                let no = u32::try_from(self.slots.len()).expect("at most 2^32 - 1 keys");
                self.slots.push(Slot {
                    key,
                    newest: entry,
                    older: Vec::new(),
                });
                self.table.insert(found.hash, no);
            }
        }
        self.entries += 1;
    }

    /// Removes revision `rev` of `key`; false if the index does not hold it. A key left
    /// with no revision is forgotten.
    pub fn remove(&mut self, key: &[u8], rev: Rev) -> bool {
        let hash = self.hash(key);
        let Some(no) = self.slot_no(hash, key) else {
            return false;
        };
        let s = &mut self.slots[no];
        if s.newest.rev == rev && s.older.is_empty() {
            self.forget(hash, no);
        } else {
            if s.newest.rev == rev {
                s.newest = s.older.pop().expect("older is not empty");
            } else {
                let Ok(i) = s.older.binary_search_by(|e| e.rev.cmp(&rev)) else {
                    return false;
                };
                s.older.remove(i);
            }
            if s.older.is_empty() {
                // Give the history's memory back: a compacted key keeps only its newest.
                s.older = Vec::new();
            }
        }
        self.entries -= 1;
        true
    }

    /// Drops slot `no` (of the key hashing to `hash`): the last slot moves into its place.
    fn forget(&mut self, hash: u64, no: usize) {
        let at = self.table.find(hash, |n| n as usize == no);
        self.table.remove_at(at.expect("a slot is in the table"));
        let gone = self.slots.swap_remove(no);
        self.ordered.remove(gone.key.bytes());
        if let Some(moved) = self.slots.get(no) {
            let last = self.slots.len() as u32;
            let hash = self.hash(moved.key.bytes());
            let at = self.table.find(hash, |n| n == last);
            self.table
                .set_slot(at.expect("the moved slot is in the table"), no as u32);
        }
    }

    /// The newest revision of `key` before `rev`.
    pub fn before(&self, key: &[u8], rev: Rev) -> Option<Rev> {
        let s = self.slot(self.hash(key), key)?;
        if s.newest.rev < rev {
            return Some(s.newest.rev);
        }
        let n = s.older.partition_point(|e| e.rev < rev);
        n.checked_sub(1).map(|i| s.older[i].rev)
    }

    /// `key`'s newest entry with main revision `<= rev`.
    pub fn at(&self, key: &[u8], rev: i64) -> Option<Entry> {
        self.slot(self.hash(key), key)?.at(rev).copied()
    }

    /// Calls `f(key, state)` for every key in `[start, end)` (`end` `None`: no upper
    /// bound) that exists at `rev`, in key order (descending if `reverse`), until `f`
    /// returns false.
    pub fn visit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        rev: i64,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], LiveMeta) -> bool,
    ) {
        if end.is_some_and(|e| e <= start) {
            return;
        }
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.ordered.range::<[u8], _>((Bound::Included(start), hi));
        let mut step = |(k, &hash): (&Key, &u64)| {
            let k = k.bytes();
            let s = self
                .slot(hash, k)
                .expect("every key of the ordered map has a slot");
            match s.at(rev).and_then(Entry::live) {
                Some(lm) => f(k, lm),
                None => true,
            }
        };
        if reverse {
            for kv in range.rev() {
                if !step(kv) {
                    return;
                }
            }
        } else {
            for kv in range {
                if !step(kv) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(main: i64, sub: i64, kind: u8, version: i64) -> Entry {
        Entry {
            rev: Rev { main, sub },
            kind,
            meta: Meta {
                create: if kind == KIND_PUT { 2 } else { 0 },
                version,
                lease: 0,
            },
        }
    }

    fn keys_at(
        ix: &Index,
        start: &[u8],
        end: Option<&[u8]>,
        rev: i64,
        rev_order: bool,
    ) -> Vec<String> {
        let mut out = vec![];
        ix.visit(start, end, rev, rev_order, &mut |k, _| {
            out.push(String::from_utf8(k.to_vec()).unwrap());
            true
        });
        out
    }

    #[test]
    fn revisions_per_key_answer_reads_at_any_revision() {
        let mut ix = Index::default();
        ix.push(b"a", e(2, 0, KIND_PUT, 1));
        ix.push(b"b", e(3, 0, KIND_PUT, 1));
        ix.push(b"a", e(4, 0, KIND_PUT, 2));
        ix.push(b"b", e(5, 0, KIND_TOMBSTONE, 0));
        ix.push(b"c", e(5, 1, KIND_PUT, 1));
        assert_eq!(ix.len(), 5);
        assert_eq!(ix.live_keys(), 2);
        assert_eq!(ix.at(b"a", 3).unwrap().meta.version, 1);
        assert_eq!(ix.at(b"a", 9).unwrap().rev.main, 4);
        assert_eq!(ix.at(b"a", 1), None);
        assert_eq!(ix.at(b"b", 5).unwrap().live(), None);
        assert_eq!(keys_at(&ix, b"", None, 3, false), ["a", "b"]);
        assert_eq!(keys_at(&ix, b"", None, 5, false), ["a", "c"]);
        assert_eq!(keys_at(&ix, b"", None, 5, true), ["c", "a"]);
        assert_eq!(keys_at(&ix, b"b", Some(b"c"), 4, false), ["b"]);
        assert_eq!(
            keys_at(&ix, b"c", Some(b"a"), 5, false),
            Vec::<String>::new()
        );
        assert_eq!(
            ix.before(b"a", Rev { main: 4, sub: 0 }),
            Some(Rev { main: 2, sub: 0 })
        );
        assert_eq!(ix.before(b"a", Rev { main: 2, sub: 0 }), None);
        assert!(ix.remove(b"a", Rev { main: 2, sub: 0 }));
        assert!(!ix.remove(b"a", Rev { main: 2, sub: 0 }));
        assert!(ix.remove(b"c", Rev { main: 5, sub: 1 }));
        assert_eq!(keys_at(&ix, b"", None, 9, false), ["a"]);
        assert_eq!(ix.len(), 3);
        // A forgotten key comes back with only its new revision.
        ix.push(b"d", e(6, 0, KIND_PUT, 1));
        ix.push(b"c", e(7, 0, KIND_PUT, 1));
        assert_eq!(
            (ix.table.len(), ix.slots.len(), ix.ordered.len()),
            (4, 4, 4)
        );
        assert_eq!(keys_at(&ix, b"", None, 9, true), ["d", "c", "a"]);
        assert_eq!(ix.at(b"c", 6), None);
        assert_eq!(ix.live_keys(), 3);
    }

    /// Keys on both sides of the inline limit behave alike: lookups, history, removal
    /// of the newest and of older revisions, ranges.
    #[test]
    fn short_and_long_keys_keep_their_history() {
        let keys: Vec<Vec<u8>> = [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300]
            .iter()
            .map(|&n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        let mut ix = Index::default();
        let mut main = 1;
        for round in 1..=3 {
            for k in &keys {
                main += 1;
                ix.push(k, e(main, 0, KIND_PUT, round));
            }
        }
        assert_eq!((ix.len(), ix.live_keys()), (18, 6));
        for (i, k) in keys.iter().enumerate() {
            let first = 2 + i as i64;
            let last = first + 12;
            let f = ix.find(k);
            assert_eq!(f.newest.map(|n| n.rev.main), Some(last));
            assert_eq!(ix.at(k, first).map(|n| n.meta.version), Some(1));
            assert_eq!(ix.at(k, last - 1).map(|n| n.meta.version), Some(2));
            assert_eq!(ix.at(k, first - 1), None);
            let r = |main| Rev { main, sub: 0 };
            assert_eq!(ix.before(k, r(last)), Some(r(first + 6)));
            assert_eq!(ix.before(k, r(last + 1)), Some(r(last)));
            // Removing the newest brings the one before it back as the newest.
            assert!(ix.remove(k, r(last)));
            assert_eq!(ix.find(k).newest.map(|n| n.rev.main), Some(first + 6));
            assert!(!ix.remove(k, r(last)));
            assert!(ix.remove(k, r(first)));
            assert_eq!(ix.at(k, first + 5), None);
        }
        assert_eq!(ix.len(), 6);
        let mut seen = vec![];
        ix.visit(b"", None, i64::MAX, false, &mut |k, lm| {
            seen.push((k.len(), lm.meta.version));
            true
        });
        let lens: Vec<(usize, i64)> = [0, 1, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300]
            .iter()
            .map(|&n| (n, 2))
            .collect();
        assert_eq!(seen, lens);
        for k in &keys {
            let newest = ix.find(k).newest.unwrap().rev;
            assert!(ix.remove(k, newest));
            assert!(ix.find(k).newest.is_none());
        }
        assert!(ix.is_empty());
        assert_eq!(
            (ix.table.len(), ix.slots.len(), ix.ordered.len()),
            (0, 0, 0)
        );
    }

    /// Random puts, tombstones and removals of single revisions over a few hundred keys
    /// (long and short, so the table grows and forgetting keys moves slots around),
    /// checked against a plain map of each key's revisions after every step: the newest
    /// revision, reads at past revisions, `before`, and ranges in both directions.
    #[test]
    fn random_history_matches_a_model() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let key = |n: u64| -> Vec<u8> {
            if n.is_multiple_of(3) {
                format!("long-key-{n:04}-{}", "x".repeat(20)).into_bytes()
            } else {
                format!("k{n:04}").into_bytes()
            }
        };
        let mut ix = Index::default();
        let mut model: BTreeMap<Vec<u8>, Vec<Entry>> = BTreeMap::new();
        let mut main = 1;
        for step in 0..6000 {
            let k = key(next() % 400);
            let r = next() % 10;
            if r < 6 || !model.contains_key(&k) {
                main += 1;
                let kind = if r == 0 { KIND_TOMBSTONE } else { KIND_PUT };
                let entry = e(main, 0, kind, step);
                ix.push(&k, entry);
                model.entry(k.clone()).or_default().push(entry);
            } else {
                // Remove one revision of the key: the newest, the oldest or one between.
                let revs = model.get_mut(&k).unwrap();
                let i = (next() % revs.len() as u64) as usize;
                let gone = revs.remove(i);
                if revs.is_empty() {
                    model.remove(&k);
                }
                assert!(ix.remove(&k, gone.rev), "step {step}");
                assert!(!ix.remove(&k, gone.rev), "step {step}: removed twice");
            }
            assert_eq!(ix.len(), model.values().map(Vec::len).sum::<usize>());
            assert_eq!((ix.table.len(), ix.slots.len()), (model.len(), model.len()));
            if step % 97 != 0 {
                continue;
            }
            for n in 0..400 {
                let k = key(n);
                let revs = model.get(&k);
                assert_eq!(
                    ix.find(&k).newest,
                    revs.and_then(|r| r.last().copied()),
                    "step {step}"
                );
                for at in [main / 3, main / 2, main - 1] {
                    let want = revs.and_then(|r| r.iter().rev().find(|e| e.rev.main <= at));
                    assert_eq!(ix.at(&k, at), want.copied(), "step {step}");
                }
                let before = Rev {
                    main: main / 2,
                    sub: 0,
                };
                let want = revs.and_then(|r| r.iter().rev().find(|e| e.rev < before));
                assert_eq!(ix.before(&k, before), want.map(|e| e.rev));
            }
            for reverse in [false, true] {
                let at = main - next() as i64 % main.max(1);
                let mut want: Vec<Vec<u8>> = model
                    .iter()
                    .filter(|(_, r)| {
                        r.iter()
                            .rev()
                            .find(|e| e.rev.main <= at)
                            .and_then(Entry::live)
                            .is_some()
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if reverse {
                    want.reverse();
                }
                let mut got = vec![];
                ix.visit(b"", None, at, reverse, &mut |k, _| {
                    got.push(k.to_vec());
                    true
                });
                assert_eq!(got, want, "step {step}");
            }
        }
        assert!(model.len() > 100, "the run kept {} keys", model.len());
    }
}
