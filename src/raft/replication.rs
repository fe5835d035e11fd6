//! Log replication (Raft §5.3): the leader's Append/heartbeat sending with
//! per-follower flow control, the follower's consistency check with fast
//! backtracking, snapshots for followers behind the log, and commit (§5.4.2).

use super::error::{ProposeError, RaftError};
use super::message::{Message, MessageType, Snapshot};
use super::progress::ProgressState;
use super::raft::{Raft, Role};
use super::types::{Entry, EntryKind, NodeId, Storage, StorageError};

impl<S: Storage> Raft<S> {
    /// Leader: appends new entries of the current term; returns the new last index.
    pub fn append_entries_as_leader(&mut self, items: Vec<(EntryKind, Vec<u8>)>) -> u64 {
        assert_eq!(self.role, Role::Leader, "only a leader appends new entries");
        let last = self.log.last_index();
        let term = self.term;
        let ents: Vec<Entry> = items
            .into_iter()
            .enumerate()
            .map(|(k, (kind, data))| Entry {
                term,
                index: last + 1 + k as u64,
                kind,
                data: data.into(),
            })
            .collect();
        self.append_to_log(ents)
    }

    /// Appends to the log (leader or follower) and tracks membership changes in it.
    pub fn append_to_log(&mut self, ents: Vec<Entry>) -> u64 {
        let Some(first) = ents.first() else {
            return self.log.last_index();
        };
        let first_index = first.index;
        let conf_truncated = self.truncate_conf_history(first_index);
        let has_conf = ents.iter().any(|e| e.kind == EntryKind::ConfChange);
        if has_conf {
            self.record_conf_changes(&ents);
        }
        let last = self.log.append(ents);
        if conf_truncated || has_conf {
            self.apply_conf();
        }
        last
    }

    pub fn propose(&mut self, batch: Vec<Vec<u8>>) -> Result<u64, ProposeError> {
        self.check_can_propose()?;
        if batch.is_empty() {
            return Err(ProposeError::EmptyBatch);
        }
        let bytes: u64 = batch.iter().map(|d| d.len() as u64 + 24).sum();
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + bytes > self.cfg.max_uncommitted_bytes
        {
            return Err(ProposeError::TooManyUncommitted {
                uncommitted_bytes: self.uncommitted_bytes,
                max_uncommitted_bytes: self.cfg.max_uncommitted_bytes,
            });
        }
        let last = self
            .append_entries_as_leader(batch.into_iter().map(|d| (EntryKind::Normal, d)).collect());
        self.uncommitted.push_back((last, bytes));
        self.uncommitted_bytes += bytes;
        self.bcast_append();
        Ok(last)
    }

    pub fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee != 0 {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    pub fn bcast_append(&mut self) {
        let peers: Vec<NodeId> = self.prs.keys().copied().filter(|&p| p != self.id).collect();
        for p in peers {
            self.maybe_send_append(p, true);
        }
    }

    /// Sends `to` the entries from its `next_index` (bounded by `max_msg_bytes`), or a
    /// snapshot if they are compacted. Returns whether a message was sent. When the
    /// storage is fetching entries (`TemporarilyUnavailable`) nothing is sent now; the
    /// next heartbeat response or ack retries.
    pub fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.prs.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let prev = next - 1;
        let prev_term = match self.log.term(prev) {
            Ok(t) => t,
            Err(StorageError::Compacted) => return self.send_snapshot(to),
            Err(_) => return false,
        };
        let last = self.log.last_index();
        let ents = if next <= last {
            match self.log.entries(next, last + 1, self.cfg.max_msg_bytes) {
                Ok(e) => e,
                Err(StorageError::Compacted) => return self.send_snapshot(to),
                Err(_) => return false,
            }
        } else {
            Vec::new()
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        let mut m = Message::new(MessageType::Append, self.id, to, self.term);
        m.index = prev;
        m.log_term = prev_term;
        m.commit = self.log.commit;
        let pr = self.prs.get_mut(&to).expect("checked above");
        if let Some(l) = ents.last() {
            let bytes = ents.iter().map(Entry::size_bytes).sum();
            pr.sent_entries(l.index, bytes);
        } else if pr.state == ProgressState::Probe {
            pr.probe_sent = true;
        }
        m.entries = ents;
        self.send(m);
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let pr = self.prs.get(&to).expect("send_snapshot to a tracked peer");
        if !pr.recent_active || self.log.unstable_snapshot.is_some() {
            return false;
        }
        let meta = match self.log.storage.snapshot_meta() {
            Ok(m) if m.index > 0 => m,
            _ => return false,
        };
        let idx = meta.index;
        let mut m = Message::new(MessageType::Snapshot, self.id, to, self.term);
        m.snapshot = Some(Snapshot {
            meta,
            data: Vec::new(),
        });
        self.prs.get_mut(&to).expect("checked").become_snapshot(idx);
        self.send(m);
        true
    }

    pub fn bcast_heartbeat(&mut self) {
        let round = self.reads.start_round();
        let peers: Vec<(NodeId, u64)> = self
            .prs
            .iter()
            .filter(|(&p, _)| p != self.id)
            .map(|(&p, pr)| (p, pr.match_index))
            .collect();
        for (p, matched) in peers {
            let mut m = Message::new(MessageType::Heartbeat, self.id, p, self.term);
            // Never tell a follower to commit beyond what it is known to hold.
            m.commit = matched.min(self.log.commit);
            m.read_round = round;
            self.send(m);
        }
        self.advance_reads();
    }

    /// Follower: Raft §5.3 consistency check and append.
    pub fn handle_append(&mut self, m: Message) -> Result<(), RaftError> {
        if m.index < self.log.commit {
            let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
            r.index = self.log.commit;
            self.send(r);
            return Ok(());
        }
        match self.log.term(m.index) {
            Ok(t) if t == m.log_term => {
                let conflict = self.log.find_conflict(&m.entries);
                let last_new = m.index + m.entries.len() as u64;
                if conflict != 0 {
                    if conflict <= self.log.commit {
                        // Leader Completeness says this cannot happen: refuse it.
                        return Err(RaftError::InvalidMessage(format!(
                            "Append from {} term {} conflicts at {conflict} with our committed log (commit {})",
                            m.from, m.term, self.log.commit
                        )));
                    }
                    let start = (conflict - m.index - 1) as usize;
                    let mut ents = m.entries;
                    self.append_to_log(ents.split_off(start));
                }
                self.log.commit_to(m.commit.min(last_new));
                let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
                r.index = last_new;
                self.send(r);
            }
            Ok(_) | Err(StorageError::Unavailable) => {
                let (hint_index, hint_term) = self.reject_hint(m.index);
                let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
                r.reject = true;
                r.index = m.index;
                r.reject_hint = hint_index;
                r.log_term = hint_term;
                self.send(r);
            }
            Err(StorageError::Compacted) => {
                let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
                r.index = self.log.commit;
                self.send(r);
            }
            Err(_) => {} // not readable now; the leader retries
        }
        Ok(())
    }

    /// Raft §5.3: "when rejecting an AppendEntries request, the follower can include the
    /// term of the conflicting entry and the first index it stores for that term."
    /// Term 0 means our log is too short; the index is then our last index + 1.
    fn reject_hint(&self, rejected: u64) -> (u64, u64) {
        let last = self.log.last_index();
        if rejected > last {
            return (last + 1, 0);
        }
        let t = match self.log.term(rejected) {
            Ok(t) => t,
            Err(_) => return (self.log.commit + 1, 0),
        };
        let first = self.log.first_index();
        let mut i = rejected;
        while i > first && self.log.term(i - 1) == Ok(t) {
            i -= 1;
        }
        (i, t)
    }

    pub fn handle_heartbeat(&mut self, m: Message) {
        self.log.commit_to(m.commit);
        let mut r = Message::new(MessageType::HeartbeatResp, self.id, m.from, self.term);
        r.read_round = m.read_round;
        self.send(r);
    }

    pub fn handle_snapshot(&mut self, m: Message) {
        let snap = m.snapshot.expect("validated: Snapshot carries a snapshot");
        let (idx, term) = (snap.meta.index, snap.meta.term);
        let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
        if idx <= self.log.commit {
            r.index = self.log.commit;
        } else if self.log.match_term(idx, term) {
            // We already hold the snapshot's last entry: just learn it is committed.
            self.log.commit_to(idx);
            r.index = self.log.commit;
        } else {
            self.conf_base = (idx, snap.meta.conf_state.clone());
            self.conf_history.clear();
            self.log.restore(snap);
            self.apply_conf();
            r.index = idx;
        }
        self.send(r);
    }

    pub fn handle_append_response(&mut self, m: Message) {
        let last = self.log.last_index();
        if m.reject {
            let next = self.next_from_hint(&m);
            let Some(pr) = self.prs.get_mut(&m.from) else {
                return;
            };
            pr.recent_active = true;
            if pr.maybe_decr_to(m.index, next) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(m.from, true);
            }
            return;
        }
        let Some(pr) = self.prs.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        let old_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr.match_index >= pr.pending_snapshot {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.inflights.free_le(m.index),
        }
        if self.maybe_commit() {
            if self.role != Role::Leader {
                return;
            }
            self.bcast_append();
        } else if old_paused {
            self.maybe_send_append(m.from, false);
        }
        while self.maybe_send_append(m.from, false) {}
        if m.from == self.lead_transferee
            && self.prs.get(&m.from).is_some_and(|p| p.match_index == last)
        {
            self.send_timeout_now(m.from);
        }
    }

    /// Where to probe next after a rejection: past the last entry of the follower's
    /// conflicting term in our log, or the first index of that term at the follower.
    fn next_from_hint(&self, m: &Message) -> u64 {
        if m.log_term == 0 {
            return m.reject_hint;
        }
        let mut j = m.index.min(self.log.last_index());
        let first = self.log.first_index();
        while j >= first {
            match self.log.term(j) {
                Ok(t) if t > m.log_term => j -= 1,
                Ok(t) if t == m.log_term => return j + 1,
                _ => break,
            }
        }
        m.reject_hint
    }

    pub fn handle_heartbeat_response(&mut self, m: Message) {
        let last = self.log.last_index();
        let Some(pr) = self.prs.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        pr.read_round_acked = pr.read_round_acked.max(m.read_round);
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            // The window is stuck (an Append may be lost): let one more through; if a
            // message was lost the follower rejects the next one and we probe.
            pr.inflights.free_first_one();
        }
        let behind = pr.match_index < last;
        if behind {
            self.maybe_send_append(m.from, true);
        }
        self.advance_reads();
    }

    /// Raft §5.4.2: "only log entries from the leader's current term are committed by
    /// counting replicas". The leader's own entries count once durable here.
    pub fn maybe_commit(&mut self) -> bool {
        let last = self.log.last_index();
        let mut matches: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.log.persisted.min(last)
                } else {
                    self.prs.get(v).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return false;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let mci = matches[self.quorum() - 1];
        if mci <= self.log.commit {
            return false;
        }
        let term_ok = self.log.term(mci) == Ok(self.term);
        if !term_ok && !self.cfg.bugs().commit_old_term {
            return false;
        }
        self.log.commit_to(mci);
        while let Some(&(idx, bytes)) = self.uncommitted.front() {
            if idx > mci {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= bytes;
        }
        self.on_commit_advanced();
        true
    }
}
