//! Membership changes, one server at a time (Raft thesis §4.1).
//!
//! - A configuration takes effect as soon as its entry is appended to a server's log,
//!   committed or not; if the entry is truncated the previous configuration returns.
//!   `conf_base` is the configuration at the snapshot (or bootstrap), `conf_history`
//!   the changes after it, so truncation just pops.
//! - A leader appends a change only when no earlier change is uncommitted and it has
//!   committed an entry of its own term (the correction to §4.1 posted in 2015:
//!   otherwise two leaders of different configurations could both commit).
//! - Learners receive the log but neither vote nor count for commit.
//! - A leader that is not a voter of the latest configuration keeps replicating until
//!   that configuration commits, then steps down (thesis §4.2.2).

use super::error::ProposeError;
use super::message::{ConfChange, ConfChangeKind};
use super::progress::Progress;
use super::raft::{Raft, Role};
use super::types::{ConfState, Entry, EntryKind, Storage};

impl<S: Storage> Raft<S> {
    /// Records the configurations that `ents` (being appended) introduce. Undecodable
    /// payloads change nothing (they came from a leader; every node decodes alike).
    pub fn record_conf_changes(&mut self, ents: &[Entry]) {
        for e in ents.iter().filter(|e| e.kind == EntryKind::ConfChange) {
            if let Ok(cc) = ConfChange::decode(&e.data) {
                let cur = self.latest_conf().clone();
                self.conf_history.push((e.index, cc.apply_to(&cur)));
            }
        }
    }

    fn latest_conf(&self) -> &ConfState {
        self.conf_history
            .last()
            .map(|(_, c)| c)
            .unwrap_or(&self.conf_base.1)
    }

    /// Index of the entry that introduced the current configuration.
    pub fn latest_conf_index(&self) -> u64 {
        self.conf_history
            .last()
            .map(|(i, _)| *i)
            .unwrap_or(self.conf_base.0)
    }

    /// Forgets configurations from entries at or after `from` (being overwritten).
    pub fn truncate_conf_history(&mut self, from: u64) -> bool {
        let before = self.conf_history.len();
        self.conf_history.retain(|(i, _)| *i < from);
        before != self.conf_history.len()
    }

    /// The configuration in force after applying entries up to `index`, if this node
    /// still knows it (`index` at or after the snapshot).
    pub fn conf_state_at(&self, index: u64) -> Option<ConfState> {
        if index < self.conf_base.0 {
            return None;
        }
        let mut c = &self.conf_base.1;
        for (i, cs) in &self.conf_history {
            if *i <= index {
                c = cs;
            }
        }
        Some(c.clone())
    }

    /// Makes the latest configuration current: progress for new members, none for
    /// removed ones.
    pub fn apply_conf(&mut self) {
        self.conf = self.latest_conf().clone();
        let last = self.log.last_index();
        let (max_msgs, max_bytes) = (self.cfg.max_inflight_msgs, self.cfg.max_inflight_bytes);
        let members: Vec<(u64, bool)> = self
            .conf
            .voters
            .iter()
            .map(|&v| (v, false))
            .chain(self.conf.learners.iter().map(|&l| (l, true)))
            .collect();
        self.prs
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
        for (id, learner) in members {
            let pr = self
                .prs
                .entry(id)
                .or_insert_with(|| Progress::new(last + 1, max_msgs, max_bytes, learner));
            pr.is_learner = learner;
        }
        if self.role == Role::Leader {
            if let Some(pr) = self.prs.get_mut(&self.id) {
                pr.recent_active = true;
            }
            if self.lead_transferee != 0 && !self.is_voter(self.lead_transferee) {
                self.lead_transferee = 0;
            }
            // The quorum may have shrunk.
            if self.maybe_commit() && self.role == Role::Leader {
                self.bcast_append();
            }
        } else if !self.promotable() && matches!(self.role, Role::Candidate | Role::PreCandidate) {
            self.become_follower(self.term, 0);
        }
    }

    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<u64, ProposeError> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.commit
            || self.log.term(self.log.commit) != Ok(self.term)
        {
            return Err(ProposeError::ConfChangePending);
        }
        if cc.node == 0 {
            return Err(ProposeError::InvalidConfChange("node 0".into()));
        }
        let next = cc.apply_to(&self.conf);
        if next == self.conf {
            return Err(ProposeError::InvalidConfChange(format!(
                "{cc} changes nothing in voters {:?} learners {:?}",
                self.conf.voters, self.conf.learners
            )));
        }
        if next.voters.is_empty() {
            return Err(ProposeError::InvalidConfChange(format!(
                "{cc} would leave no voter"
            )));
        }
        let idx = self.append_entries_as_leader(vec![(EntryKind::ConfChange, cc.encode())]);
        self.pending_conf_index = idx;
        self.bcast_append();
        Ok(idx)
    }

    /// Called when the commit index advanced on a leader.
    pub fn on_commit_advanced(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if !self.is_voter(self.id) && self.log.commit >= self.latest_conf_index() {
            // Tell the followers the commit index before leaving.
            self.bcast_append();
            self.become_follower(self.term, 0);
            return;
        }
        self.on_commit_for_reads();
    }

    #[allow(dead_code)]
    pub(crate) fn is_removed_change(cc: &ConfChange) -> bool {
        cc.kind == ConfChangeKind::RemoveNode
    }
}
