//! [`MemStorage`]: an in-memory [`Storage`] for tests, the simulator and benchmarks.
//!
//! Layout: `snapshot` holds everything up to `snapshot.meta.index`; `entries[0]` (if
//! any) has index `snapshot.meta.index + 1` and the rest follow contiguously. The
//! driver writes into it what a `Ready` hands out (`append`, `set_hard_state`,
//! `apply_snapshot`) and compacts it (`compact`) once the application has a snapshot.

use super::message::Snapshot;
use super::types::{ConfState, Entry, HardState, SnapshotMeta, Storage, StorageError};
use std::cell::Cell;

#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    /// Membership at bootstrap (used only while there is no snapshot).
    bootstrap_conf: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    /// Fault injection: every `unavailable_every`-th `entries()` call returns
    /// `TemporarilyUnavailable` (0 = never), as a WAL fetching from disk would.
    unavailable_every: u64,
    entries_calls: Cell<u64>,
}

impl MemStorage {
    /// An empty log whose cluster starts as `conf`.
    pub fn new(conf: ConfState) -> MemStorage {
        MemStorage {
            bootstrap_conf: conf,
            ..Default::default()
        }
    }

    /// Make every `n`-th `entries()` call answer `TemporarilyUnavailable` (0 = never).
    pub fn set_unavailable_every(&mut self, n: u64) {
        self.unavailable_every = n;
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The latest snapshot, data included.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    fn offset(&self) -> u64 {
        self.snapshot.meta.index + 1
    }

    /// Appends `ents`, first dropping any existing entries at or after `ents[0].index`
    /// (the conflicting suffix a new leader overwrote).
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        let last = self.offset() + self.entries.len() as u64 - 1;
        assert!(
            first.index >= self.offset() && first.index <= last + 1,
            "MemStorage::append: entries start at {} but the log holds [{}, {}]",
            first.index,
            self.offset(),
            last
        );
        self.entries
            .truncate((first.index - self.offset()) as usize);
        self.entries.extend_from_slice(ents);
    }

    /// Installs a snapshot received from the leader. Entries after it are kept only if
    /// the log holds the snapshot's last entry with the same term.
    pub fn apply_snapshot(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        if idx <= self.snapshot.meta.index {
            return;
        }
        let keep = self.term(idx) == Ok(snap.meta.term);
        if keep {
            self.entries.drain(..(idx - self.offset() + 1) as usize);
        } else {
            self.entries.clear();
        }
        self.snapshot = snap;
        if self.hard_state.commit < idx {
            self.hard_state.commit = idx;
        }
    }

    /// Records the application's snapshot of everything up to `index` and drops the
    /// entries it covers. `index` must be in the log.
    pub fn compact(&mut self, index: u64, conf_state: ConfState, data: Vec<u8>) {
        if index <= self.snapshot.meta.index {
            return;
        }
        let term = self
            .term(index)
            .unwrap_or_else(|e| panic!("MemStorage::compact({index}): {e}"));
        self.entries.drain(..(index - self.offset() + 1) as usize);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        let conf = if self.snapshot.meta.index > 0 {
            self.snapshot.meta.conf_state.clone()
        } else {
            self.bootstrap_conf.clone()
        };
        Ok((self.hard_state, conf))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.offset() {
            return Err(StorageError::Compacted);
        }
        let last = self.offset() + self.entries.len() as u64 - 1;
        if hi > last + 1 || lo > hi {
            return Err(StorageError::Unavailable);
        }
        if self.unavailable_every > 0 {
            let n = self.entries_calls.get() + 1;
            self.entries_calls.set(n);
            if n.is_multiple_of(self.unavailable_every) {
                return Err(StorageError::TemporarilyUnavailable);
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[(lo - self.offset()) as usize..(hi - self.offset()) as usize] {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snapshot.meta.index {
            return Ok(self.snapshot.meta.term);
        }
        if index < self.offset() {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((index - self.offset()) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.offset())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.offset() + self.entries.len() as u64 - 1)
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.meta.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8; 10].into(),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix_and_compact_keeps_terms() {
        let mut s = MemStorage::new(ConfState::default());
        s.append(&[e(1, 1), e(2, 1), e(3, 1)]);
        s.append(&[e(2, 2)]);
        assert_eq!(s.last_index(), Ok(2));
        assert_eq!(s.term(2), Ok(2));
        s.append(&[e(3, 2), e(4, 2)]);
        s.compact(2, ConfState::default(), b"sm".to_vec());
        assert_eq!(s.first_index(), Ok(3));
        assert_eq!(s.term(2), Ok(2), "snapshot index keeps its term");
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(1, 3, 100), Err(StorageError::Compacted));
        // max_bytes: at least one entry, then stop before exceeding.
        assert_eq!(s.entries(3, 5, 1).unwrap().len(), 1);
        assert_eq!(s.entries(3, 5, 1000).unwrap().len(), 2);
    }

    #[test]
    fn unavailable_every_n_calls() {
        let mut s = MemStorage::new(ConfState::default());
        s.append(&[e(1, 1)]);
        s.set_unavailable_every(2);
        assert!(s.entries(1, 2, 100).is_ok());
        assert_eq!(
            s.entries(1, 2, 100),
            Err(StorageError::TemporarilyUnavailable)
        );
        assert!(s.entries(1, 2, 100).is_ok());
    }

    #[test]
    fn snapshot_install_replaces_conflicting_log() {
        let mut s = MemStorage::new(ConfState::default());
        s.append(&[e(1, 1), e(2, 1)]);
        let snap = Snapshot {
            meta: SnapshotMeta {
                index: 5,
                term: 3,
                conf_state: ConfState {
                    voters: vec![1],
                    ..Default::default()
                },
            },
            data: b"x".to_vec(),
        };
        s.apply_snapshot(snap);
        assert_eq!((s.first_index(), s.last_index()), (Ok(6), Ok(5)));
        assert_eq!(s.hard_state().commit, 5);
        assert_eq!(s.initial_state().unwrap().1.voters, vec![1]);
    }
}
