//! The in-memory index of the Raft log the WAL holds: snapshot metadata, hard state,
//! the term of every retained entry, where each entry's record lies on disk, and a
//! cache of the most recent entries, and the arena holding a copy of the encoded
//! records whose entries are cached (a cached entry's data is a range of its record;
//! the cache references each record's chunk once, not once per entry). The same rules
//! apply when appending live and when replaying at recovery, so the WAL never writes
//! what it would refuse to read.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::format::append_data_offsets;
use crate::raft::types::{Entry, EntryKind, HardState, SnapshotMeta};

/// Bytes of one [`Arena`] chunk (a larger record gets a chunk of its own).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Unreferenced chunks an [`Arena`] keeps at least, whatever its byte bound.
const SPARE_CHUNKS_MIN: usize = 2;

/// A chunk's bytes: allocated (and zeroed) once, then handed out again and again
/// without being zeroed; whoever gets a range writes all of it.
type Chunk = Rc<RefCell<Box<[u8]>>>;

/// Where the encoded records whose entries are cached live (copied whole from the
/// WAL's staging buffer): appended one after the other into chunks of [`CHUNK_BYTES`].
/// A chunk no record in it is referenced from is kept for reuse as a spare (memory that
/// is already faulted in; the one filled last is reused first) while the arena holds
/// at most `keep_bytes_max` in all, else freed. Appending costs no allocation, no
/// zeroing and one `memcpy` of the record, however many entries it has.
///
/// Measured (batch of 1024 × 256 B, `scripts/wal-bench.sh`): a fresh allocation per
/// record made each append page-fault its 290 KB in (8% of the executor's time); chunks
/// zeroed on reuse (`Vec::resize`) and freed beyond 2 spares still cost a third of the
/// WAL's CPU per write: a compaction releases dozens of chunks at once, which were then
/// freed and, a few milliseconds later, allocated and faulted in again.
#[derive(Debug)]
pub struct Arena {
    cur: Option<Chunk>,
    /// Bytes of `cur` handed out.
    used: usize,
    /// Chunks filled earlier, oldest first; those only the arena refers to are free.
    full: VecDeque<Chunk>,
    spare: Vec<Chunk>,
    /// Bytes of all chunks held: current, full and spare.
    held_bytes: usize,
    keep_bytes_max: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            cur: None,
            used: 0,
            full: VecDeque::new(),
            spare: Vec::new(),
            held_bytes: 0,
            keep_bytes_max: SPARE_CHUNKS_MIN * CHUNK_BYTES,
        }
    }
}

impl Arena {
    /// Sets the bound on the bytes the arena holds with its spare chunks (live chunks
    /// are never freed, whatever the bound).
    pub fn set_keep_bytes_max(&mut self, bytes: usize) {
        self.keep_bytes_max = bytes.max(SPARE_CHUNKS_MIN * CHUNK_BYTES);
    }

    /// Bytes of all chunks held (live and spare).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// A record of `len` bytes, written by `fill`. `fill` gets memory with stale
    /// contents and must write every byte of it.
    pub fn alloc(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> RecRef {
        let fits = self
            .cur
            .as_ref()
            .is_some_and(|c| c.borrow().len() - self.used >= len);
        if !fits {
            if let Some(c) = self.cur.take() {
                self.full.push_back(c);
            }
            self.reclaim();
            // The spare filled most recently first: the likeliest to be still cached.
            let chunk = match self.spare.iter().rposition(|c| c.borrow().len() >= len) {
                Some(i) => self.spare.remove(i),
                None => {
                    let cap = len.max(CHUNK_BYTES);
                    self.held_bytes += cap;
                    Rc::new(RefCell::new(vec![0u8; cap].into_boxed_slice()))
                }
            };
            self.cur = Some(chunk);
            self.used = 0;
        }
        let chunk = self.cur.clone().expect("current chunk");
        let at = self.used;
        self.used += len;
        fill(&mut chunk.borrow_mut()[at..at + len]);
        RecRef {
            chunk,
            at: u32::try_from(at).expect("chunk over 4 GiB"),
            len: u32::try_from(len).expect("record over 4 GiB"),
        }
    }

    /// Moves the full chunks nothing refers to any more to the spares, or frees them
    /// once the arena holds more than `keep_bytes_max` (keeping at least
    /// [`SPARE_CHUNKS_MIN`]).
    fn reclaim(&mut self) {
        let mut i = 0;
        while i < self.full.len() {
            if Rc::strong_count(&self.full[i]) > 1 {
                i += 1;
                continue;
            }
            let c = self.full.remove(i).expect("index checked");
            if self.held_bytes <= self.keep_bytes_max || self.spare.len() < SPARE_CHUNKS_MIN {
                self.spare.push(c);
            } else {
                self.held_bytes -= c.borrow().len();
            }
        }
    }
}

/// One encoded record in an [`Arena`].
#[derive(Clone, Debug)]
pub struct RecRef {
    chunk: Chunk,
    at: u32,
    len: u32,
}

impl RecRef {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Calls `f` with the record's bytes.
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        let c = self.chunk.borrow();
        f(&c[self.at as usize..(self.at + self.len) as usize])
    }
}

/// A cached entry: where its data lies inside the encoded Append record that holds it
/// (in the [`Arena`]: caching it costs no allocation or copy; reads build an
/// [`Entry`]). Its index is its position in the cache (a suffix of the log), its term
/// is in [`LogIndex::terms`], and the arena chunk holding its record is referenced
/// once per record (a cache run), not per entry: 12 bytes and no reference count per
/// entry.
#[derive(Clone, Copy, Debug)]
pub struct CachedEntry {
    data_at: u32,
    data_len: u32,
    pub kind: EntryKind,
}

impl CachedEntry {
    /// Same as [`Entry::size_bytes`].
    pub fn size_bytes(&self) -> u64 {
        self.data_len as u64 + 24
    }
}

/// Where the record holding some entries lies: segment, offset, record length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLoc {
    pub seq: u64,
    pub offset: u64,
    pub len: u32,
}

/// A run of live entries `first..first+count` that one Append record holds.
#[derive(Clone, Debug)]
pub struct RecLoc {
    pub id: u64,
    pub first: u64,
    pub count: u64,
    /// None until the record has been written (it is still pending).
    pub at: Option<DiskLoc>,
}

#[derive(Debug, Default)]
pub struct LogIndex {
    pub snapshot: SnapshotMeta,
    pub hard_state: HardState,
    /// False while replaying a log whose first segments were removed, until the end of
    /// replay (see [`LogIndex::finish_replay`]): the entries then form a provisional run
    /// `snapshot.index + 1 ..` whose start is only known once the last snapshot record
    /// (the one that justified removing those segments) has been seen.
    pub base_known: bool,
    /// The last snapshot record seen in provisional mode.
    pub last_snap: Option<SnapshotMeta>,
    /// Term of entry `snapshot.index + 1 + i`.
    pub terms: VecDeque<u64>,
    pub recs: VecDeque<RecLoc>,
    next_rec_id: u64,
    /// The most recent entries, always a suffix of the log.
    pub cache: VecDeque<CachedEntry>,
    /// (first index, chunk) of each record holding cached entries, in order: entry `i`
    /// of the cache lies in the chunk of the last run whose first index is <= `i`. The
    /// first run may start below the cache (its first entries were dropped).
    cache_runs: VecDeque<(u64, Chunk)>,
    /// Copies of the encoded records holding cached entries.
    pub arena: Arena,
    pub cache_bytes: u64,
}

impl LogIndex {
    pub fn new() -> LogIndex {
        LogIndex {
            base_known: true,
            ..LogIndex::default()
        }
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.snapshot.index + self.terms.len() as u64
    }

    pub fn cache_first(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last_index() {
            return None;
        }
        Some(self.terms[(index - self.snapshot.index - 1) as usize])
    }

    /// Checks that `entries` may be appended (contiguous, no gap, no truncation of
    /// committed or compacted entries, terms non-decreasing). Err says why.
    pub fn check_append(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(e0) = entries.first() else {
            return Ok(());
        };
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 || w[1].term < w[0].term {
                return Err(format!(
                    "entries not contiguous: index {} term {} after index {} term {}",
                    w[1].index, w[1].term, w[0].index, w[0].term
                ));
            }
        }
        if !self.base_known {
            // Provisional replay: a gap or a step back restarts the run (the entries in
            // between were in removed segments); only the commit rule can be checked.
            if e0.index <= self.hard_state.commit {
                return Err(format!(
                    "index regression: entry {} would replace committed index {}",
                    e0.index, self.hard_state.commit
                ));
            }
            return Ok(());
        }
        let last = self.last_index();
        if e0.index > last + 1 {
            return Err(format!(
                "index gap: entry {} after last index {last}",
                e0.index
            ));
        }
        let floor = self.hard_state.commit.max(self.snapshot.index);
        if e0.index <= floor {
            return Err(format!(
                "index regression: entry {} would replace committed or compacted index {floor}",
                e0.index
            ));
        }
        match self.term(e0.index - 1) {
            Some(prev) if e0.term < prev => {
                return Err(format!(
                    "term regression: entry {} term {} after term {prev}",
                    e0.index, e0.term
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// Appends (after `check_append` passed), truncating any conflicting suffix.
    /// `rec` is the encoded Append record of `entries` (header included; wsn and crc
    /// may be unset): the cache keeps the entries' data there. Returns the record id
    /// the entries were filed under.
    pub fn append(&mut self, entries: &[Entry], rec: Option<&RecRef>, at: Option<DiskLoc>) -> u64 {
        let id = self.next_rec_id;
        self.next_rec_id += 1;
        let Some(e0) = entries.first() else {
            return id;
        };
        let rec = rec.expect("entries without their record");
        if !self.base_known
            && (self.terms.is_empty()
                || e0.index <= self.snapshot.index
                || e0.index > self.last_index() + 1)
        {
            self.terms.clear();
            self.recs.clear();
            self.clear_cache();
            self.snapshot.index = e0.index - 1;
        }
        assert!(e0.index > self.snapshot.index && e0.index <= self.last_index() + 1);
        self.truncate_from(e0.index);
        debug_assert!(rec.with(|b| append_data_offsets(entries)
            .zip(entries)
            .all(|((at, len), e)| b[at..at + len] == e.data[..])));
        for (e, (data_at, data_len)) in entries.iter().zip(append_data_offsets(entries)) {
            self.terms.push_back(e.term);
            self.cache_bytes += e.size_bytes();
            self.cache.push_back(CachedEntry {
                data_at: rec.at + data_at as u32,
                data_len: data_len as u32,
                kind: e.kind,
            });
        }
        self.cache_runs.push_back((e0.index, rec.chunk.clone()));
        self.recs.push_back(RecLoc {
            id,
            first: e0.index,
            count: entries.len() as u64,
            at,
        });
        id
    }

    /// Drops entries `index..` (a conflicting suffix).
    fn truncate_from(&mut self, index: u64) {
        let last = self.last_index();
        if index > last {
            return;
        }
        let keep = (index - self.snapshot.index - 1) as usize;
        self.terms.truncate(keep);
        let drop_cache = (last + 1 - index).min(self.cache.len() as u64) as usize;
        for _ in 0..drop_cache {
            let e = self.cache.pop_back().expect("cache shorter than counted");
            self.cache_bytes -= e.size_bytes();
        }
        while self.cache_runs.back().is_some_and(|r| r.0 >= index) {
            self.cache_runs.pop_back();
        }
        if self.cache.is_empty() {
            self.cache_runs.clear();
        }
        while let Some(r) = self.recs.back_mut() {
            if r.first >= index {
                self.recs.pop_back();
            } else {
                r.count = r.count.min(index - r.first);
                break;
            }
        }
    }

    /// Applies a snapshot (compaction or installed snapshot): entries up to
    /// `meta.index` go; if the log does not hold `meta.index` with `meta.term`, all go.
    pub fn apply_snapshot(&mut self, hs: HardState, meta: &SnapshotMeta) -> Result<(), String> {
        if !self.base_known {
            self.hard_state = hs;
            self.last_snap = Some(meta.clone());
            if meta.index < self.snapshot.index {
                return Ok(()); // the run starts after it
            }
            let keep = self.terms.is_empty()
                || meta.index == self.snapshot.index
                || self.term(meta.index) == Some(meta.term);
            let to = if keep { meta.index } else { self.last_index() };
            self.drop_through(to.min(self.last_index()));
            if self.terms.is_empty() {
                self.snapshot.index = meta.index;
            }
            self.snapshot.term = meta.term;
            return Ok(());
        }
        if meta.index < self.snapshot.index {
            return Err(format!(
                "snapshot index {} is below the current snapshot/first index {}",
                meta.index, self.snapshot.index
            ));
        }
        if self.term(meta.index) == Some(meta.term) {
            self.drop_through(meta.index);
        } else {
            self.terms.clear();
            self.recs.clear();
            self.clear_cache();
        }
        self.snapshot = meta.clone();
        self.hard_state = hs;
        Ok(())
    }

    /// Drops entries up to and including `index` from the front (`index` is the
    /// snapshot index or one the log holds); the snapshot index becomes `index`.
    fn drop_through(&mut self, index: u64) {
        assert!(index >= self.snapshot.index && index <= self.last_index());
        let cache_first = self.cache_first();
        let n = (index - self.snapshot.index) as usize;
        self.terms.drain(..n);
        if index >= cache_first {
            let n = (index + 1 - cache_first) as usize;
            assert!(n <= self.cache.len(), "cache shorter than counted");
            for e in self.cache.drain(..n) {
                self.cache_bytes -= e.size_bytes();
            }
            self.drop_cache_runs(index + 1);
        }
        while let Some(r) = self.recs.front_mut() {
            if r.first + r.count <= index + 1 {
                self.recs.pop_front();
            } else {
                if r.first <= index {
                    r.count -= index + 1 - r.first;
                    r.first = index + 1;
                }
                break;
            }
        }
        self.snapshot.index = index;
    }

    /// Ends a replay: a provisional log (first segments removed) must have met a
    /// snapshot record, and its entries must start right after the last one.
    pub fn finish_replay(&mut self) -> Result<(), String> {
        if self.base_known {
            return Ok(());
        }
        let Some(meta) = self.last_snap.take() else {
            return Err("earlier segments are gone but no snapshot record covers them".into());
        };
        if self.snapshot.index != meta.index {
            return Err(format!(
                "entries {}..={} are missing after the snapshot at {}",
                meta.index + 1,
                self.snapshot.index,
                meta.index
            ));
        }
        self.snapshot = meta;
        self.base_known = true;
        Ok(())
    }

    /// Evicts cached entries from the front while over `max_bytes`, never entries
    /// above `located_upto` (their records are not yet on disk).
    pub fn evict(&mut self, max_bytes: u64, located_upto: u64) {
        let mut index = self.cache_first();
        if self.cache_bytes <= max_bytes || index > located_upto {
            return;
        }
        while self.cache_bytes > max_bytes && index <= located_upto {
            let Some(e) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= e.size_bytes();
            index += 1;
        }
        self.drop_cache_runs(index);
    }

    /// Empties the cache.
    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_runs.clear();
        self.cache_bytes = 0;
    }

    /// Drops the cache runs wholly below `cache_first` (the new first cached index).
    fn drop_cache_runs(&mut self, cache_first: u64) {
        if self.cache.is_empty() {
            self.cache_runs.clear();
            return;
        }
        while self.cache_runs.get(1).is_some_and(|r| r.0 <= cache_first) {
            self.cache_runs.pop_front();
        }
    }

    /// Bytes (as [`Entry::size_bytes`]) of cached entry `index`.
    pub fn cached_size(&self, index: u64) -> u64 {
        self.cache[(index - self.cache_first()) as usize].size_bytes()
    }

    /// Cached entry `index` (at least [`LogIndex::cache_first`], at most the last).
    pub fn cached_entry(&self, index: u64) -> Entry {
        let e = &self.cache[(index - self.cache_first()) as usize];
        let run = self.cache_runs.partition_point(|r| r.0 <= index);
        assert!(run > 0, "cached entry {index} below the first cache run");
        let chunk = self.cache_runs[run - 1].1.borrow();
        Entry {
            term: self.term(index).expect("cached entry has a term"),
            index,
            kind: e.kind,
            data: chunk[e.data_at as usize..(e.data_at + e.data_len) as usize].to_vec(),
        }
    }

    /// All cached entries, in order.
    pub fn cached_entries(&self) -> Vec<Entry> {
        (self.cache_first()..=self.last_index())
            .map(|i| self.cached_entry(i))
            .collect()
    }

    /// The record that holds `index`, if retained.
    pub fn rec_for(&self, index: u64) -> Option<&RecLoc> {
        let i = self.recs.partition_point(|r| r.first + r.count <= index);
        self.recs
            .get(i)
            .filter(|r| r.first <= index && index < r.first + r.count)
    }

    /// Sets the disk location of record `id` once it has been written, and returns the
    /// position to pass as `hint` for the next record of the same group commit (ids
    /// increase along `recs`, so that one is usually right there: no search). Any
    /// `hint` is correct; a record truncated away meanwhile is skipped.
    pub fn locate(&mut self, hint: usize, id: u64, at: DiskLoc) -> usize {
        let i = if self.recs.get(hint).is_some_and(|r| r.id == id) {
            hint
        } else {
            self.recs.partition_point(|r| r.id < id)
        };
        match self.recs.get_mut(i) {
            Some(r) if r.id == id => {
                r.at = Some(at);
                i + 1
            }
            _ => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn at(offset: u64) -> DiskLoc {
        DiskLoc {
            seq: 0,
            offset,
            len: 1,
        }
    }

    /// One group commit locates its records in id order with the returned hint; a
    /// record truncated away while its write was in flight is skipped, and a stale or
    /// wrong hint still finds the right record.
    #[test]
    fn locate_follows_hints_and_skips_truncated_records() {
        let mut log = LogIndex::new();
        let rec = |log: &mut LogIndex, e: &Entry| -> RecRef {
            let mut b = Vec::new();
            crate::wal::format::encode_append(&mut b, 0, None, std::slice::from_ref(e));
            log.arena.alloc(b.len(), |out| out.copy_from_slice(&b))
        };
        let ids: Vec<u64> = (1..=5)
            .map(|i| {
                let r = rec(&mut log, &ent(i, 1));
                log.append(&[ent(i, 1)], Some(&r), None)
            })
            .collect();
        // Entry 4 is replaced (term 2) while records 1..=5 are being written: records
        // of entries 4 and 5 are gone, a new one (not in this write) takes their place.
        let r = rec(&mut log, &ent(4, 2));
        let new_id = log.append(&[ent(4, 2)], Some(&r), None);
        assert_eq!(log.cached_entry(4), ent(4, 2));
        assert_eq!(log.cached_entry(3), ent(3, 1));
        let mut hint = 0;
        for (k, &id) in ids.iter().enumerate() {
            hint = log.locate(hint, id, at(k as u64));
        }
        let located: Vec<Option<u64>> = log.recs.iter().map(|r| r.at.map(|a| a.offset)).collect();
        assert_eq!(located, vec![Some(0), Some(1), Some(2), None]);
        assert_eq!(log.recs[3].id, new_id);
        // Any hint is correct, also one past the end or pointing at another record.
        assert_eq!(log.locate(99, new_id, at(7)), 4);
        assert_eq!(log.locate(0, ids[2], at(8)), 3);
        assert_eq!(log.rec_for(3).unwrap().at, Some(at(8)));
        assert_eq!(log.rec_for(4).unwrap().at, Some(at(7)));
    }

    /// Records keep their bytes while referenced; a chunk nothing refers to is reused
    /// (no new allocation, no zeroing: stale bytes are overwritten by the record),
    /// spares are kept within the byte bound and freed beyond it.
    #[test]
    fn arena_reuses_unreferenced_chunks() {
        let mut a = Arena::default();
        a.set_keep_bytes_max(4 * CHUNK_BYTES);
        let third = CHUNK_BYTES / 3;
        let mut recs: Vec<RecRef> = (0..9u8)
            .map(|k| a.alloc(third, |b| b.fill(k + 1)))
            .collect();
        // 3 records per chunk: chunks 0, 1 full, chunk 2 current.
        assert_eq!(a.full.len(), 2);
        assert_eq!(a.held_bytes(), 3 * CHUNK_BYTES);
        for (k, r) in recs.iter().enumerate() {
            assert_eq!(r.len(), third);
            r.with(|b| assert!(b.iter().all(|&x| x == k as u8 + 1)));
        }
        let first_chunk = Rc::as_ptr(&recs[0].chunk);
        let keep: Vec<RecRef> = recs.drain(..3).collect(); // chunk 0 stays referenced
        drop(recs);
        // Chunk 2 is full; a new chunk is needed: chunks 1 and 2 are free, and the one
        // filled last (2, the likeliest to be in the CPU cache) is reused, with its old
        // bytes handed out as they are.
        let third_chunk = Rc::as_ptr(a.cur.as_ref().unwrap());
        let r = a.alloc(CHUNK_BYTES / 2, |b| {
            assert!(
                b[..third].iter().all(|&x| x == 7),
                "stale bytes of record 6"
            );
            b.fill(0xee)
        });
        assert_eq!(Rc::as_ptr(&r.chunk), third_chunk);
        assert_eq!(a.held_bytes(), 3 * CHUNK_BYTES);
        r.with(|b| assert!(b.iter().all(|&x| x == 0xee)));
        assert!(a.full.iter().any(|c| Rc::as_ptr(c) == first_chunk));
        // A record bigger than a chunk gets one of its own.
        let big = a.alloc(CHUNK_BYTES + 1, |b| b.fill(1));
        assert!(big.chunk.borrow().len() > CHUNK_BYTES);
        assert_eq!(a.held_bytes(), 4 * CHUNK_BYTES + 1);
        keep[0].with(|b| assert!(b.iter().all(|&x| x == 1)));
        // Everything released at once (a compaction): within the bound the chunks are
        // kept as spares and the next records reuse them (nothing new is allocated);
        // beyond it they are freed.
        drop((keep, r, big));
        let small: Vec<RecRef> = (0..4)
            .map(|_| a.alloc(CHUNK_BYTES, |b| b.fill(2)))
            .collect();
        assert!(a.held_bytes() <= 4 * CHUNK_BYTES + CHUNK_BYTES + 1);
        let held = a.held_bytes();
        let more: Vec<RecRef> = (0..2)
            .map(|_| a.alloc(CHUNK_BYTES, |b| b.fill(3)))
            .collect();
        assert!(a.held_bytes() <= held + 2 * CHUNK_BYTES);
        drop((small, more));
        for _ in 0..3 {
            a.alloc(CHUNK_BYTES, |b| b.fill(4));
        }
        assert!(
            a.held_bytes() <= 4 * CHUNK_BYTES + CHUNK_BYTES + 1,
            "spares beyond the bound are freed: {} held",
            a.held_bytes()
        );
        assert!(a.spare.len() + a.full.len() + 1 >= SPARE_CHUNKS_MIN);
    }

    /// Cache runs (one chunk reference per record) stay consistent with the cached
    /// entries through random appends (records of several entries), conflicting-suffix
    /// truncations (also in the middle of a record), compactions and evictions: every
    /// cached entry reads back as the model's, and no run outlives its entries.
    #[test]
    fn cache_runs_follow_appends_truncations_compactions_and_evictions() {
        let mut rng = crate::wal::sim::Rng::new(7);
        let mut log = LogIndex::new();
        let mut model: Vec<Entry> = Vec::new(); // entries snapshot.index+1 ..= last
        let mut term = 1;
        for step in 0..3000 {
            match rng.below(10) {
                0..=5 => {
                    // Append 1..6 entries, sometimes replacing a suffix.
                    let last = log.last_index();
                    let first = if rng.chance(20) && last > log.snapshot.index {
                        last - rng.below((last - log.snapshot.index).min(4))
                    } else {
                        last + 1
                    };
                    if first <= last {
                        term += 1;
                    }
                    let n = 1 + rng.below(6);
                    let entries: Vec<Entry> = (first..first + n)
                        .map(|i| Entry {
                            term,
                            index: i,
                            kind: EntryKind::Normal,
                            data: vec![(i ^ step) as u8; rng.below(40) as usize],
                        })
                        .collect();
                    log.check_append(&entries).unwrap();
                    let mut b = Vec::new();
                    crate::wal::format::encode_append(&mut b, 0, None, &entries);
                    let rec = log.arena.alloc(b.len(), |out| out.copy_from_slice(&b));
                    log.append(&entries, Some(&rec), None);
                    model.truncate((first - log.snapshot.index - 1) as usize);
                    model.extend(entries);
                }
                6 | 7 => {
                    let max = rng.below(2000);
                    log.evict(max, log.last_index());
                }
                _ => {
                    // Compact to a held index.
                    let last = log.last_index();
                    if last > log.snapshot.index {
                        let to = log.snapshot.index + 1 + rng.below(last - log.snapshot.index);
                        let meta = SnapshotMeta {
                            index: to,
                            term: log.term(to).unwrap(),
                            ..SnapshotMeta::default()
                        };
                        let n = (to - log.snapshot.index) as usize;
                        log.apply_snapshot(log.hard_state, &meta).unwrap();
                        model.drain(..n);
                    }
                }
            }
            let first = log.cache_first();
            let bytes: u64 = log.cache.iter().map(CachedEntry::size_bytes).sum();
            assert_eq!(bytes, log.cache_bytes, "step {step}");
            if log.cache.is_empty() {
                assert!(
                    log.cache_runs.is_empty(),
                    "step {step}: runs without entries"
                );
            } else {
                assert!(log.cache_runs[0].0 <= first, "step {step}");
                assert!(
                    log.cache_runs.len() == 1 || log.cache_runs[1].0 > first,
                    "step {step}: a run below the cache outlived its entries"
                );
                assert!(
                    log.cache_runs
                        .iter()
                        .zip(log.cache_runs.iter().skip(1))
                        .all(|(a, b)| a.0 < b.0)
                        && log.cache_runs.back().unwrap().0 <= log.last_index(),
                    "step {step}: a truncated run outlived its entries"
                );
            }
            for i in first..=log.last_index() {
                let want = &model[(i - log.snapshot.index - 1) as usize];
                assert_eq!(&log.cached_entry(i), want, "step {step} entry {i}");
            }
        }
    }
}
