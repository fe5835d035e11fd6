//! The Raft log as the core sees it: the durable part (read through [`Storage`]) plus
//! an in-memory `unstable` tail not yet reported durable, plus the commit, persisted
//! and apply cursors.
//!
//! Invariants:
//! - `unstable[k].index == unstable_offset + k`; indexes below `unstable_offset` are
//!   read from storage (or the pending `unstable_snapshot`).
//! - `unstable_offset <= handed_offset <= last_index() + 1`: entries below
//!   `handed_offset` were given to the driver in some Ready.
//! - `persisted` is the highest index such that the current log's prefix `[.., persisted]`
//!   is durable on this node; it only counts toward the leader's quorum and apply.
//! - `applied <= applying <= min(commit, max(persisted, snapshot index))`, `commit <= last_index()`.

use super::message::Snapshot;
use super::types::{Entry, Storage, StorageError};

pub(crate) struct RaftLog<S: Storage> {
    pub storage: S,
    pub unstable: Vec<Entry>,
    pub unstable_offset: u64,
    /// A snapshot received from the leader and not yet durable.
    pub unstable_snapshot: Option<Snapshot>,
    pub snapshot_handed: bool,
    pub handed_offset: u64,
    pub commit: u64,
    pub persisted: u64,
    pub applying: u64,
    pub applied: u64,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, commit: u64, applied: u64) -> Result<Self, StorageError> {
        let last = storage.last_index()?;
        Ok(RaftLog {
            storage,
            unstable: Vec::new(),
            unstable_offset: last + 1,
            unstable_snapshot: None,
            snapshot_handed: false,
            handed_offset: last + 1,
            commit,
            persisted: last,
            applying: applied,
            applied,
        })
    }

    /// Index of the entry just before the first retained one (the snapshot's index).
    pub fn snapshot_index(&self) -> u64 {
        match &self.unstable_snapshot {
            Some(s) => s.meta.index,
            None => self.storage.first_index().map(|f| f - 1).unwrap_or(0),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        if let Some(e) = self.unstable.last() {
            return e.index;
        }
        if let Some(s) = &self.unstable_snapshot {
            return s.meta.index;
        }
        // Storage never holds a stale suffix beyond unstable_offset here: the driver
        // truncates conflicting entries when it persists a Ready.
        self.storage
            .last_index()
            .unwrap_or(self.unstable_offset - 1)
            .min(self.unstable_offset - 1)
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index >= self.unstable_offset {
            return match self.unstable.get((index - self.unstable_offset) as usize) {
                Some(e) => Ok(e.term),
                None => match &self.unstable_snapshot {
                    Some(s) if s.meta.index == index => Ok(s.meta.term),
                    _ => Err(StorageError::Unavailable),
                },
            };
        }
        if let Some(s) = &self.unstable_snapshot {
            if index == s.meta.index {
                return Ok(s.meta.term);
            }
            return Err(StorageError::Compacted);
        }
        if index == 0 {
            return Ok(0);
        }
        self.storage.term(index)
    }

    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Raft §5.4.1: "the log with the later term is more up-to-date; if the logs end
    /// with the same term, the longer log is more up-to-date".
    pub fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// Entries in `[lo, hi)`, at most `max_bytes` (but at least one).
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        assert!(
            hi <= self.last_index() + 1,
            "entries [{lo}, {hi}) beyond last index {}",
            self.last_index()
        );
        let mut out = Vec::new();
        let mut bytes = 0u64;
        if lo < self.unstable_offset {
            let stable_hi = hi.min(self.unstable_offset);
            out = self.storage.entries(lo, stable_hi, max_bytes)?;
            bytes = out.iter().map(Entry::size_bytes).sum();
            if (out.len() as u64) < stable_hi - lo {
                return Ok(out);
            }
        }
        let start = lo.max(self.unstable_offset);
        for i in start..hi {
            let e = &self.unstable[(i - self.unstable_offset) as usize];
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Appends `ents` (contiguous), truncating any entries at or after `ents[0].index`.
    /// Returns the new last index. Never truncates committed entries.
    pub fn append(&mut self, ents: Vec<Entry>) -> u64 {
        let Some(first) = ents.first() else {
            return self.last_index();
        };
        let after = first.index;
        assert!(
            after > self.commit,
            "append at {after} would overwrite committed entries (commit {})",
            self.commit
        );
        assert!(
            after <= self.last_index() + 1,
            "append at {after} leaves a gap after {}",
            self.last_index()
        );
        if after == self.unstable_offset + self.unstable.len() as u64 {
            self.unstable.extend(ents);
        } else if after <= self.unstable_offset {
            self.unstable_offset = after;
            self.unstable = ents;
        } else {
            self.unstable
                .truncate((after - self.unstable_offset) as usize);
            self.unstable.extend(ents);
        }
        self.handed_offset = self.handed_offset.min(after);
        self.persisted = self.persisted.min(after - 1);
        self.last_index()
    }

    /// The first entry of `ents` whose term differs from ours (or that we lack);
    /// 0 when all match.
    pub fn find_conflict(&self, ents: &[Entry]) -> u64 {
        for e in ents {
            if !self.match_term(e.index, e.term) {
                return e.index;
            }
        }
        0
    }

    pub fn commit_to(&mut self, commit: u64) {
        if commit > self.commit {
            assert!(
                commit <= self.last_index(),
                "commit {commit} beyond last index {} (log lost or corrupt)",
                self.last_index()
            );
            self.commit = commit;
        }
    }

    /// Replaces the log by a snapshot from the leader.
    pub fn restore(&mut self, snap: Snapshot) {
        let idx = snap.meta.index;
        // The durable entries up to the old commit index are committed, hence part of
        // every future log; beyond that the durable log may disagree with the snapshot.
        self.persisted = self.persisted.min(self.commit);
        self.commit = idx;
        self.unstable.clear();
        self.unstable_offset = idx + 1;
        self.handed_offset = idx + 1;
        self.unstable_snapshot = Some(snap);
        self.snapshot_handed = false;
    }

    /// Ready `number` (holding entries up to `index` of `term`) is durable.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if !self.match_term(index, term) {
            return; // overwritten since; a later Ready carries the replacement
        }
        if index >= self.unstable_offset && self.unstable_snapshot.is_none() {
            let n = (index + 1 - self.unstable_offset) as usize;
            self.unstable.drain(..n);
            self.unstable_offset = index + 1;
        }
        self.persisted = self.persisted.max(index);
    }

    pub fn stable_snap_to(&mut self, index: u64) {
        if let Some(s) = &self.unstable_snapshot {
            if s.meta.index == index {
                self.unstable_snapshot = None;
                self.persisted = self.persisted.max(index);
            }
        }
    }

    /// Unstable entries not yet handed out.
    pub fn next_unhanded(&self) -> &[Entry] {
        &self.unstable[(self.handed_offset - self.unstable_offset) as usize..]
    }

    /// The highest index that may be applied: committed and durable here.
    pub fn apply_limit(&self) -> u64 {
        self.commit.min(self.persisted)
    }

    pub fn has_next_committed(&self) -> bool {
        self.unstable_snapshot.is_none() && self.applying < self.apply_limit()
    }
}
