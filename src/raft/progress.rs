//! What the leader knows about each follower: `match_index`, `next_index`, the
//! replication state (probe / replicate / snapshot) and the in-flight window.
//!
//! - Probe: one Append at a time; wait for its answer (or a heartbeat answer).
//! - Replicate: pipelined Appends; `next_index` advances optimistically; bounded by
//!   `Inflights` (messages and bytes).
//! - Snapshot: a snapshot is on its way; nothing else is sent until it is reported.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

/// Appends sent but not acknowledged: their last index and entry bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    buf: VecDeque<(u64, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    pub fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights {
            buf: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    pub fn full(&self) -> bool {
        self.buf.len() >= self.max_count || self.bytes >= self.max_bytes
    }

    pub fn add(&mut self, last_index: u64, bytes: u64) {
        assert!(!self.full(), "inflights add while full");
        if let Some(&(l, _)) = self.buf.back() {
            assert!(
                last_index > l,
                "inflights out of order: {last_index} after {l}"
            );
        }
        self.buf.push_back((last_index, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose last index is `<= index`.
    pub fn free_le(&mut self, index: u64) {
        while let Some(&(l, b)) = self.buf.front() {
            if l > index {
                break;
            }
            self.buf.pop_front();
            self.bytes -= b;
        }
    }

    /// Frees the oldest message (the heartbeat answer suggests it may be lost).
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.buf.pop_front() {
            self.bytes -= b;
        }
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.bytes = 0;
    }

    pub fn count(&self) -> usize {
        self.buf.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// Probe state: an Append is out; wait for its answer.
    pub probe_sent: bool,
    /// Snapshot state: index of the snapshot sent.
    pub pending_snapshot: u64,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    pub is_learner: bool,
    /// Highest ReadIndex round this follower answered.
    pub read_round_acked: u64,
    pub inflights: Inflights,
}

impl Progress {
    pub fn new(next_index: u64, max_count: usize, max_bytes: u64, is_learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            recent_active: false,
            is_learner,
            read_round_acked: 0,
            inflights: Inflights::new(max_count, max_bytes),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_index = (self.match_index + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_index = self.match_index + 1;
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// An acknowledgement up to `index`; false if it was stale.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// A rejection of the Append whose previous index was `rejected`; `next` is where
    /// the leader's hint analysis says to probe next. False if the rejection was stale.
    pub fn maybe_decr_to(&mut self, rejected: u64, next: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = next.min(rejected).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Records that an Append with entries up to `last` (`bytes` of them) was sent.
    pub fn sent_entries(&mut self, last: u64, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflights.add(last, bytes);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => panic!("sending entries in snapshot state"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_limit_messages_and_bytes() {
        let mut f = Inflights::new(3, 100);
        f.add(1, 10);
        f.add(2, 10);
        assert!(!f.full());
        f.add(5, 90); // 110 bytes >= 100
        assert!(f.full());
        f.free_le(2);
        assert_eq!((f.count(), f.bytes()), (1, 90));
        assert!(!f.full());
        f.free_le(5);
        assert_eq!((f.count(), f.bytes()), (0, 0));
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(10, 4, 1000, false);
        // Probe: only a rejection of exactly next-1 counts.
        assert!(!p.maybe_decr_to(5, 3));
        assert!(p.maybe_decr_to(9, 4));
        assert_eq!(p.next_index, 4);
        p.maybe_update(6);
        p.become_replicate();
        assert_eq!(p.next_index, 7);
        assert!(
            !p.maybe_decr_to(6, 1),
            "rejection at or below match is stale"
        );
        assert!(p.maybe_decr_to(8, 1));
        assert_eq!(p.next_index, 7);
    }
}
