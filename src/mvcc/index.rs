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
//! Two maps share each key's bytes (`Rc<[u8]>`) and point at its slot of revisions: a
//! hash map for the point lookups every put and single-key read makes (one or two cache
//! misses, where a comparison-ordered search of 100k keys takes dozens), and an ordered
//! map that ranges walk. Only creating or forgetting a key touches the ordered map.
//!
//! Memory: one [`Entry`] (48 bytes) per revision held plus, per key, its bytes, a
//! `Vec` header and an entry in each map. Compaction is what bounds it, as in etcd.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::rc::Rc;

use super::backend::{BackendError, ReadView};
use super::keys::*;
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

/// The revisions of every key, ascending per key.
#[derive(Default, Debug)]
pub struct Index {
    /// Key → slot, for point lookups.
    by_key: HashMap<Rc<[u8]>, usize>,
    /// Key → slot, in key order, for ranges.
    ordered: BTreeMap<Rc<[u8]>, usize>,
    /// Each key's revisions; a free slot is empty.
    slots: Vec<Vec<Entry>>,
    free: Vec<usize>,
    /// Entries over all keys (= rev-tree entries).
    entries: usize,
}

/// The newest entry with `main <= rev`, by binary search.
fn newest_at(entries: &[Entry], rev: i64) -> Option<&Entry> {
    let n = entries.partition_point(|e| e.rev.main <= rev);
    n.checked_sub(1).map(|i| &entries[i])
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
            .filter(|es| es.last().is_some_and(|e| e.kind == KIND_PUT))
            .count()
    }

    fn revisions(&self, key: &[u8]) -> Option<&Vec<Entry>> {
        self.by_key.get(key).map(|&i| &self.slots[i])
    }

    /// Where `key`'s revisions are (for [`Index::newest`] and [`Index::push_to`]: one
    /// lookup for a read-then-write), if the index has any.
    pub fn slot(&self, key: &[u8]) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The newest revision in a slot [`Index::slot`] returned.
    pub fn newest(&self, slot: usize) -> &Entry {
        self.slots[slot]
            .last()
            .expect("a slot in use holds a revision")
    }

    /// Adds a revision of `key`, newer than every one it has.
    pub fn push(&mut self, key: &[u8], entry: Entry) {
        self.push_to(self.slot(key), key, entry)
    }

    /// [`Index::push`], given `slot`: what [`Index::slot`] returned for `key` since the
    /// last change.
    pub fn push_to(&mut self, slot: Option<usize>, key: &[u8], entry: Entry) {
        debug_assert_eq!(slot, self.slot(key));
        match slot {
            Some(i) => {
                let es = &mut self.slots[i];
                debug_assert!(es.last().is_none_or(|l| l.rev < entry.rev));
                es.push(entry);
            }
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i].push(entry);
                        i
                    }
                    None => {
                        self.slots.push(vec![entry]);
                        self.slots.len() - 1
                    }
                };
                let key: Rc<[u8]> = Rc::from(key);
                self.by_key.insert(key.clone(), i);
                self.ordered.insert(key, i);
            }
        }
        self.entries += 1;
    }

    /// Removes revision `rev` of `key`; false if the index does not hold it. A key left
    /// with no revision is forgotten (its slot is reused).
    pub fn remove(&mut self, key: &[u8], rev: Rev) -> bool {
        let Some(&slot) = self.by_key.get(key) else {
            return false;
        };
        let es = &mut self.slots[slot];
        let Ok(i) = es.binary_search_by(|e| e.rev.cmp(&rev)) else {
            return false;
        };
        es.remove(i);
        if es.is_empty() {
            *es = Vec::new();
            self.by_key.remove(key);
            self.ordered.remove(key);
            self.free.push(slot);
        }
        self.entries -= 1;
        true
    }

    /// The newest revision of `key` before `rev`.
    pub fn before(&self, key: &[u8], rev: Rev) -> Option<Rev> {
        let es = self.revisions(key)?;
        let n = es.partition_point(|e| e.rev < rev);
        n.checked_sub(1).map(|i| es[i].rev)
    }

    /// `key`'s newest entry with main revision `<= rev`.
    pub fn at(&self, key: &[u8], rev: i64) -> Option<Entry> {
        newest_at(self.revisions(key)?, rev).copied()
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
        let mut step = |(k, &i): (&Rc<[u8]>, &usize)| match newest_at(&self.slots[i], rev)
            .and_then(Entry::live)
        {
            Some(lm) => f(k, lm),
            None => true,
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
        // A forgotten key's slot is reused; the key comes back with only its new revision.
        ix.push(b"d", e(6, 0, KIND_PUT, 1));
        ix.push(b"c", e(7, 0, KIND_PUT, 1));
        assert_eq!(ix.slots.len(), 4, "d took c's freed slot");
        assert_eq!(keys_at(&ix, b"", None, 9, true), ["d", "c", "a"]);
        assert_eq!(ix.at(b"c", 6), None);
        assert_eq!(ix.live_keys(), 3);
    }
}
