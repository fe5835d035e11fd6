//! The in-memory index of the Raft log the WAL holds: snapshot metadata, hard state,
//! the term of every retained entry, where each entry's record lies on disk, and a
//! cache of the most recent entries (their data shared with the caller, not copied).
//! The same rules apply when appending live and when replaying at recovery, so the WAL
//! never writes what it would refuse to read.

use std::collections::VecDeque;

use crate::raft::types::{Entry, EntryKind, HardState, Payload, SnapshotMeta};

/// A compaction dropping at least this many cached entries (and at least half of the
/// cache) sets them aside for [`LogIndex::reap`] instead of releasing them at once.
pub const RETIRE_MIN: usize = 4096;

/// A cached entry: its kind and its data, shared with whoever appended it (the Raft
/// core's log, Ready, replication messages) or, after recovery or a read from disk,
/// with the decoded record; caching it copies no payload byte. Its index is its
/// position in the cache (a suffix of the log) and its term is in [`LogIndex::terms`].
#[derive(Clone, Debug)]
pub struct CachedEntry {
    data: Payload,
    pub kind: EntryKind,
}

impl CachedEntry {
    /// Same as [`Entry::size_bytes`].
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The terms of a run of consecutive entries, by position (0 = the first retained
/// entry), stored as runs of equal terms: a term changes only at an election, so a
/// batch of appended entries is usually one comparison and no per-entry store, and
/// dropping a compacted prefix touches only the runs it ends.
#[derive(Debug, Default)]
pub struct Terms {
    /// `(start, term)`: entries from virtual position `start` up to the next run's
    /// start (or `end`) have `term`. Starts increase; the first run starts at or
    /// before `start` of the whole when not empty.
    runs: VecDeque<(u64, u64)>,
    /// Virtual position of entry 0 (grows as a prefix is dropped).
    start: u64,
    /// Virtual position one past the last entry.
    end: u64,
}

impl Terms {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Term of entry `i` (panics if out of range).
    pub fn get(&self, i: usize) -> u64 {
        let v = self.start + i as u64;
        assert!(v < self.end, "term of position {i} of {}", self.len());
        // Most lookups are near the end, in the last run.
        match self.runs.back() {
            Some(&(s, t)) if s <= v => t,
            _ => self.runs[self.runs.partition_point(|r| r.0 <= v) - 1].1,
        }
    }

    /// Appends `n` entries of `term`.
    pub fn push_n(&mut self, term: u64, n: u64) {
        if n == 0 {
            return;
        }
        if self.is_empty() || self.runs.back().is_none_or(|r| r.1 != term) {
            self.runs.push_back((self.end, term));
        }
        self.end += n;
    }

    /// Appends the terms of `entries`.
    pub fn extend(&mut self, entries: &[Entry]) {
        match (entries.first(), entries.last()) {
            // Terms never decrease within an append (check_append), so equal ends
            // mean one term throughout.
            (Some(a), Some(b)) if a.term == b.term => self.push_n(a.term, entries.len() as u64),
            _ => entries.iter().for_each(|e| self.push_n(e.term, 1)),
        }
    }

    /// Keeps the first `keep` entries.
    pub fn truncate(&mut self, keep: usize) {
        let end = self.start + keep as u64;
        if end >= self.end {
            return;
        }
        while self.runs.back().is_some_and(|r| r.0 >= end) {
            self.runs.pop_back();
        }
        self.end = end;
    }

    /// Drops the first `n` entries.
    pub fn drop_front(&mut self, n: usize) {
        assert!(n <= self.len(), "drop {n} terms of {}", self.len());
        self.start += n as u64;
        if self.is_empty() {
            self.runs.clear();
            return;
        }
        while self.runs.get(1).is_some_and(|r| r.0 <= self.start) {
            self.runs.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.runs.clear();
        self.start = self.end;
    }

    /// How many runs of equal terms are stored.
    #[cfg(test)]
    pub fn runs(&self) -> usize {
        self.runs.len()
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
    pub terms: Terms,
    pub recs: VecDeque<RecLoc>,
    next_rec_id: u64,
    /// The most recent entries, always a suffix of the log.
    pub cache: VecDeque<CachedEntry>,
    pub cache_bytes: u64,
    /// Cached entries a compaction dropped, not yet released (see [`LogIndex::reap`]).
    retired: Vec<VecDeque<CachedEntry>>,
    /// The storage of a fully reaped batch, kept for the next compaction's kept part:
    /// the cache then goes on in a deque as big as the one it had, instead of growing
    /// again from the kept part's size by doubling (a copy of the whole cache at each
    /// step: ~1.4 µs per batch-1024 write in `wal_cpu`, where the log is compacted
    /// every 80 writes).
    spare: VecDeque<CachedEntry>,
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
        Some(self.terms.get((index - self.snapshot.index - 1) as usize))
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

    /// Appends (after `check_append` passed), truncating any conflicting suffix; the
    /// cache shares the entries' data. Returns the record id the entries were filed
    /// under.
    pub fn append(&mut self, entries: &[Entry], at: Option<DiskLoc>) -> u64 {
        let id = self.next_rec_id;
        self.next_rec_id += 1;
        let Some(e0) = entries.first() else {
            return id;
        };
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
        self.terms.extend(entries);
        self.cache_bytes += entries.iter().map(Entry::size_bytes).sum::<u64>();
        self.cache.extend(entries.iter().map(|e| CachedEntry {
            data: e.data.clone(),
            kind: e.kind,
        }));
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
        self.terms.drop_front(n);
        if index >= cache_first {
            let n = (index + 1 - cache_first) as usize;
            assert!(n <= self.cache.len(), "cache shorter than counted");
            if n >= RETIRE_MIN && 2 * n >= self.cache.len() {
                // Move the (shorter) rest into the spare deque and set the dropped
                // prefix aside whole: releasing tens of thousands of payloads one by
                // one takes a fraction of a millisecond, which `reap` spreads out (the
                // WAL calls it while its writes are in flight) instead of stalling
                // every other task now. The byte count is that of the rest (the
                // shorter part to sum). `append` moves the entries with a memcpy (an
                // `extend` from a drain moves them one by one: slower than the
                // regrowth it saves).
                let mut kept = std::mem::take(&mut self.spare);
                kept.append(&mut self.cache.split_off(n));
                self.cache_bytes = kept.iter().map(CachedEntry::size_bytes).sum();
                self.retired.push(std::mem::replace(&mut self.cache, kept));
            } else {
                let bytes: u64 = self.cache.range(..n).map(CachedEntry::size_bytes).sum();
                self.cache_bytes -= bytes;
                self.cache.drain(..n);
            }
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

    /// Releases up to `max` of the cached entries compactions set aside; returns how
    /// many are still waiting.
    pub fn reap(&mut self, max: usize) -> usize {
        let mut left = max;
        while left > 0 {
            let Some(batch) = self.retired.last_mut() else {
                break;
            };
            let k = left.min(batch.len());
            batch.drain(..k);
            left -= k;
            if batch.is_empty() {
                let empty = self.retired.pop().expect("the batch just drained");
                if empty.capacity() > self.spare.capacity() {
                    self.spare = empty;
                }
            }
        }
        self.retired_len()
    }

    /// Cached entries set aside by compactions and not yet released.
    pub fn retired_len(&self) -> usize {
        self.retired.iter().map(VecDeque::len).sum()
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
    }

    /// Empties the cache.
    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }

    /// Bytes (as [`Entry::size_bytes`]) of cached entry `index`.
    pub fn cached_size(&self, index: u64) -> u64 {
        self.cache[(index - self.cache_first()) as usize].size_bytes()
    }

    /// Cached entry `index` (at least [`LogIndex::cache_first`], at most the last).
    pub fn cached_entry(&self, index: u64) -> Entry {
        let e = &self.cache[(index - self.cache_first()) as usize];
        Entry {
            term: self.term(index).expect("cached entry has a term"),
            index,
            kind: e.kind,
            data: e.data.clone(),
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
            data: vec![index as u8].into(),
        }
    }

    fn at(offset: u64) -> DiskLoc {
        DiskLoc {
            seq: 0,
            offset,
            len: 1,
        }
    }

    /// The run-length terms read back like a plain vector of terms through random
    /// appends (one term or several per batch), truncations, dropped prefixes and
    /// clears, and keep one run per change of term.
    #[test]
    fn terms_match_a_vector_model() {
        let mut rng = crate::wal::sim::Rng::new(11);
        let mut terms = Terms::default();
        let mut model: Vec<u64> = Vec::new();
        let mut term = 1;
        for step in 0..20_000 {
            match rng.below(10) {
                0..=4 => {
                    let n = rng.below(8);
                    let mut batch = Vec::new();
                    for k in 0..n {
                        if rng.chance(10) {
                            term += 1;
                        }
                        batch.push(ent(k, term));
                    }
                    terms.extend(&batch);
                    model.extend(batch.iter().map(|e| e.term));
                }
                5 | 6 => {
                    let keep = rng.below(model.len() as u64 + 2) as usize;
                    terms.truncate(keep);
                    model.truncate(keep);
                }
                7 | 8 => {
                    let n = rng.below(model.len() as u64 + 1) as usize;
                    terms.drop_front(n);
                    model.drain(..n);
                }
                _ => {
                    if rng.chance(5) {
                        terms.clear();
                        model.clear();
                    }
                }
            }
            assert_eq!(terms.len(), model.len(), "step {step}");
            for (i, t) in model.iter().enumerate() {
                assert_eq!(terms.get(i), *t, "step {step} position {i}");
            }
            let changes = model.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(
                terms.runs() <= changes + 2,
                "step {step}: {} runs",
                terms.runs()
            );
        }
    }

    /// One group commit locates its records in id order with the returned hint; a
    /// record truncated away while its write was in flight is skipped, and a stale or
    /// wrong hint still finds the right record.
    #[test]
    fn locate_follows_hints_and_skips_truncated_records() {
        let mut log = LogIndex::new();
        let ids: Vec<u64> = (1..=5).map(|i| log.append(&[ent(i, 1)], None)).collect();
        // Entry 4 is replaced (term 2) while records 1..=5 are being written: records
        // of entries 4 and 5 are gone, a new one (not in this write) takes their place.
        let new_id = log.append(&[ent(4, 2)], None);
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

    /// The cache stays consistent with the log through random appends (several
    /// entries at a time), conflicting-suffix truncations (also in the middle of an
    /// append), compactions and evictions: every cached entry reads back as the
    /// model's, and the byte count matches.
    #[test]
    fn cache_follows_appends_truncations_compactions_and_evictions() {
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
                            data: vec![(i ^ step) as u8; rng.below(40) as usize].into(),
                        })
                        .collect();
                    log.check_append(&entries).unwrap();
                    log.append(&entries, None);
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
                        if rng.chance(50) {
                            log.reap(1 + rng.below(3000) as usize);
                        }
                    }
                }
            }
            let first = log.cache_first();
            let bytes: u64 = log.cache.iter().map(CachedEntry::size_bytes).sum();
            assert_eq!(bytes, log.cache_bytes, "step {step}");
            for i in first..=log.last_index() {
                let want = &model[(i - log.snapshot.index - 1) as usize];
                assert_eq!(&log.cached_entry(i), want, "step {step} entry {i}");
            }
        }
    }

    /// A compaction dropping many cached entries sets them aside whole; `reap` releases
    /// them in slices (the payloads' counts go back down), while the entries kept read
    /// back unchanged and the byte count is right at once.
    #[test]
    fn a_big_compaction_retires_entries_for_reap() {
        let shared = Payload::from(vec![7u8; 100]);
        let mut log = LogIndex::new();
        for first in (1..=10_000u64).step_by(100) {
            let batch: Vec<Entry> = (first..first + 100)
                .map(|i| Entry {
                    term: 1,
                    index: i,
                    kind: EntryKind::Normal,
                    data: shared.slice(0..(i % 100) as usize),
                })
                .collect();
            log.append(&batch, None);
        }
        let bytes = |log: &LogIndex| log.cache.iter().map(CachedEntry::size_bytes).sum::<u64>();
        assert_eq!(log.cache_bytes, bytes(&log));
        let meta = SnapshotMeta {
            index: 8_000,
            term: 1,
            ..SnapshotMeta::default()
        };
        log.apply_snapshot(log.hard_state, &meta).unwrap();
        assert_eq!((log.cache_first(), log.cache.len()), (8_001, 2_000));
        assert_eq!(log.cache_bytes, bytes(&log));
        assert_eq!(log.cached_entry(8_001).data, shared.slice(0..1));
        assert_eq!(log.cached_entry(10_000).data.len(), 0);
        let before = shared.shares();
        assert_eq!(log.reap(3_000), 5_000, "sliced, not all at once");
        assert!(shared.shares() < before);
        assert_eq!(log.reap(usize::MAX), 0);
        assert_eq!(log.cache.len(), 2_000);
        // A small compaction releases at once.
        let meta = SnapshotMeta {
            index: 8_010,
            term: 1,
            ..SnapshotMeta::default()
        };
        log.apply_snapshot(log.hard_state, &meta).unwrap();
        assert_eq!(log.reap(0), 0);
        assert_eq!(log.cache_bytes, bytes(&log));
    }

    /// A fully reaped batch's storage carries the next big compaction's kept part, so
    /// the cache does not grow again from the kept part's size.
    #[test]
    fn a_reaped_batch_holds_the_next_kept_part() {
        let data = Payload::from(vec![1u8; 8]);
        let mut log = LogIndex::new();
        let mut next = 1u64;
        let mut append = |log: &mut LogIndex, n: u64| {
            let batch: Vec<Entry> = (next..next + n)
                .map(|i| Entry {
                    term: 1,
                    index: i,
                    kind: EntryKind::Normal,
                    data: data.clone(),
                })
                .collect();
            log.append(&batch, None);
            next += n;
        };
        let compact = |log: &mut LogIndex, index: u64| {
            let meta = SnapshotMeta {
                index,
                term: 1,
                ..SnapshotMeta::default()
            };
            log.apply_snapshot(log.hard_state, &meta).unwrap();
        };
        append(&mut log, 10_000);
        let cap = log.cache.capacity();
        compact(&mut log, 8_000);
        assert_eq!(log.reap(usize::MAX), 0);
        assert_eq!(log.spare.capacity(), cap, "the reaped deque is kept");
        append(&mut log, 8_000);
        compact(&mut log, 16_000);
        assert_eq!(log.cache.capacity(), cap, "the kept part went into it");
        assert_eq!((log.cache_first(), log.last_index()), (16_001, 18_000));
        for i in 16_001..=18_000 {
            assert_eq!(log.cached_entry(i).data, data);
        }
        assert_eq!(log.reap(usize::MAX), 0);
    }
}
