//! The Raft state machine proper: roles, terms, ticks and message dispatch.
//! Election logic lives in `election.rs`, log replication in `replication.rs`,
//! ReadIndex in `read_index.rs`, membership in `membership.rs`.
//!
//! Messages produced while handling input go to `msgs` (may leave at once) or to
//! `msgs_after_append` (may leave only once everything handed out so far is durable:
//! vote requests and grants, append acknowledgements).

use super::config::Config;
use super::election::Campaign;
use super::error::RaftError;
use super::log::RaftLog;
use super::message::{Message, MessageType, ReadState};
use super::progress::Progress;
use super::read_index::ReadIndexState;
use super::rng::Rng;
use super::types::{ConfState, HardState, NodeId, Storage, StorageError};
use std::collections::{BTreeMap, VecDeque};

/// A node's role (Raft §5.1, plus the pre-vote phase of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

pub(crate) struct Raft<S: Storage> {
    pub id: NodeId,
    pub cfg: Config,
    pub term: u64,
    pub vote: NodeId,
    pub role: Role,
    pub leader: NodeId,
    pub log: RaftLog<S>,
    /// Membership: the latest configuration in the log (thesis §4.1: a server uses
    /// the latest configuration in its log, committed or not).
    pub conf: ConfState,
    /// Configuration as of the snapshot (or bootstrap) and the changes after it.
    pub conf_base: (u64, ConfState),
    pub conf_history: Vec<(u64, ConfState)>,
    pub prs: BTreeMap<NodeId, Progress>,
    pub votes: BTreeMap<NodeId, bool>,
    pub election_elapsed: u64,
    pub heartbeat_elapsed: u64,
    pub randomized_election_timeout: u64,
    pub rng: Rng,
    pub msgs: Vec<Message>,
    pub msgs_after_append: Vec<Message>,
    pub lead_transferee: NodeId,
    /// Index of the latest membership change appended by this leader.
    pub pending_conf_index: u64,
    /// This leader's proposals not yet committed: (last index, bytes).
    pub uncommitted: VecDeque<(u64, u64)>,
    pub uncommitted_bytes: u64,
    pub read_states: Vec<ReadState>,
    pub reads: ReadIndexState,
}

impl<S: Storage> Raft<S> {
    pub fn new(cfg: Config, storage: S) -> Result<Self, RaftError> {
        cfg.validate().map_err(RaftError::Config)?;
        let (hs, boot_conf) = storage.initial_state()?;
        let snap = storage.snapshot_meta()?;
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        if first != snap.index + 1 {
            return Err(RaftError::Corrupt(format!(
                "first index {first} but snapshot index {}",
                snap.index
            )));
        }
        let commit = hs.commit.max(snap.index);
        if commit > last {
            return Err(RaftError::Corrupt(format!(
                "hard state commit {commit} beyond last index {last}"
            )));
        }
        let applied = cfg.applied.max(snap.index);
        if applied > commit {
            return Err(RaftError::Corrupt(format!(
                "applied {applied} beyond commit {commit}"
            )));
        }
        let conf_base = if snap.index > 0 {
            (snap.index, snap.conf_state.clone())
        } else {
            (0, boot_conf)
        };
        let log = RaftLog::new(storage, commit, applied)?;
        let mut r = Raft {
            id: cfg.id,
            rng: Rng::new(cfg.seed),
            cfg,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: 0,
            log,
            conf: conf_base.1.clone(),
            conf_base,
            conf_history: Vec::new(),
            prs: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            msgs: Vec::new(),
            msgs_after_append: Vec::new(),
            lead_transferee: 0,
            pending_conf_index: 0,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            read_states: Vec::new(),
            reads: ReadIndexState::default(),
        };
        // Replay membership changes after the snapshot (append-time configuration).
        if last >= first {
            // A storage may be fetching entries (TemporarilyUnavailable): retry a few
            // times; start-up has nothing else to do meanwhile.
            let mut tries = 0;
            let ents = loop {
                match r.log.storage.entries(first, last + 1, u64::MAX) {
                    Err(StorageError::TemporarilyUnavailable) if tries < 16 => tries += 1,
                    other => break other?,
                }
            };
            r.record_conf_changes(&ents);
        }
        r.apply_conf();
        r.reset_timers();
        Ok(r)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    pub fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.conf.voters.contains(&id)
    }

    /// May this node campaign? Voters of the latest configuration may, and so may a
    /// node whose removal (or demotion) is the latest change but not yet committed: it
    /// may hold the most up-to-date log, and the remaining voters may be unable to
    /// elect anyone else. It then needs a majority of the latest configuration (it
    /// does not count itself) and steps down once the change commits, like a leader
    /// that removed itself (thesis §4.2.2).
    pub fn promotable(&self) -> bool {
        if self.is_voter(self.id) {
            return true;
        }
        if self.log.commit >= self.latest_conf_index() {
            return false;
        }
        let n = self.conf_history.len();
        let previous = if n >= 2 {
            &self.conf_history[n - 2].1
        } else {
            &self.conf_base.1
        };
        previous.voters.contains(&self.id)
    }

    pub fn send(&mut self, mut m: Message) {
        m.from = self.id;
        let durable_first = match m.kind {
            MessageType::Vote | MessageType::VoteResp => true,
            MessageType::AppendResp => !self.cfg.bugs().ack_before_durable,
            _ => false,
        };
        if durable_first {
            self.msgs_after_append.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    pub(crate) fn reset_timers(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let e = self.cfg.election_ticks;
        self.randomized_election_timeout = self.rng.range(e, 2 * e);
    }

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.reset_timers();
        self.votes.clear();
        self.lead_transferee = 0;
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
        self.reads = ReadIndexState::default();
        let last = self.log.last_index();
        for (_, pr) in self.prs.iter_mut() {
            let learner = pr.is_learner;
            *pr = Progress::new(
                last + 1,
                self.cfg.max_inflight_msgs,
                self.cfg.max_inflight_bytes,
                learner,
            );
        }
    }

    pub fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    pub fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "leader cannot become pre-candidate"
        );
        // Pre-vote does not raise the term nor change the vote.
        self.votes.clear();
        self.reset_timers();
        self.role = Role::PreCandidate;
        self.leader = 0;
    }

    pub fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader, "leader cannot become candidate");
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    pub fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "become_leader from {:?}",
            self.role
        );
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.id;
        let persisted = self.log.persisted;
        if let Some(pr) = self.prs.get_mut(&self.id) {
            pr.match_index = persisted;
            pr.become_replicate();
            pr.recent_active = true;
        }
        // Any membership change in the log may be uncommitted: allow no new one until
        // everything up to here is committed.
        self.pending_conf_index = self.log.last_index();
        // Thesis §6.4: a new leader commits a no-op entry of its term so it knows its
        // commit index, and serves reads only after that.
        self.append_entries_as_leader(vec![(super::types::EntryKind::Normal, Vec::new())]);
        self.bcast_append();
    }

    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed += 1;
                if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
                    self.election_elapsed = 0;
                    self.campaign(Campaign::PreElection);
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, 0);
                return;
            }
            for (&id, pr) in self.prs.iter_mut() {
                pr.recent_active = id == self.id;
            }
            // Thesis §3.10: abort a transfer that did not finish in an election timeout.
            self.lead_transferee = 0;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    fn quorum_active(&self) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|&&v| v == self.id || self.prs.get(&v).is_some_and(|p| p.recent_active))
            .count();
        active >= self.quorum()
    }

    /// Validates what the network cannot be trusted with.
    fn validate(&self, m: &Message) -> Result<(), RaftError> {
        if m.to != self.id {
            return Err(RaftError::InvalidMessage(format!(
                "{:?} for node {} delivered to node {}",
                m.kind, m.to, self.id
            )));
        }
        if m.from == 0 || m.from == self.id {
            return Err(RaftError::InvalidMessage(format!(
                "{:?} from node {} at node {}",
                m.kind, m.from, self.id
            )));
        }
        if m.kind == MessageType::Append {
            for (k, e) in m.entries.iter().enumerate() {
                if m.index.checked_add(1 + k as u64) != Some(e.index)
                    || e.term > m.term
                    || e.term < m.log_term
                {
                    return Err(RaftError::InvalidMessage(format!(
                        "Append from {} term {} prev {}/{}: entry {k} is {}/{}",
                        m.from, m.term, m.index, m.log_term, e.index, e.term
                    )));
                }
            }
        }
        if m.kind == MessageType::Heartbeat
            && m.term >= self.term
            && m.commit > self.log.last_index()
        {
            // A leader only sends min(match_index, commit): beyond our log means the
            // sender (or our disk) broke the protocol.
            return Err(RaftError::InvalidMessage(format!(
                "Heartbeat from {} term {} commits {} beyond our last index {}",
                m.from,
                m.term,
                m.commit,
                self.log.last_index()
            )));
        }
        if self.role == Role::Leader && m.term == self.term {
            let bad = match m.kind {
                MessageType::AppendResp => !m.reject && m.index > self.log.last_index(),
                MessageType::HeartbeatResp => m.read_round > self.reads.rounds_sent,
                _ => false,
            };
            if bad {
                return Err(RaftError::InvalidMessage(format!(
                    "{:?} from {} acknowledges index {} / round {} beyond what was sent",
                    m.kind, m.from, m.index, m.read_round
                )));
            }
        }
        if m.kind == MessageType::Snapshot && m.snapshot.is_none() {
            return Err(RaftError::InvalidMessage(format!(
                "Snapshot message from {} without a snapshot",
                m.from
            )));
        }
        let local = matches!(m.kind, MessageType::ReadIndex | MessageType::TransferLeader);
        if m.term == 0 && !local {
            return Err(RaftError::InvalidMessage(format!(
                "{:?} from {} with term 0",
                m.kind, m.from
            )));
        }
        Ok(())
    }

    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        self.validate(&m)?;
        if m.term > self.term {
            if matches!(m.kind, MessageType::Vote | MessageType::PreVote) {
                // Leader lease (thesis §4.2.3): a node that heard from a live leader
                // within the minimum election timeout ignores vote requests.
                // Only with check-quorum: otherwise a leader never learns it lost
                // its quorum and a lease could keep a higher-term node out forever.
                let in_lease = self.cfg.check_quorum
                    && self.leader != 0
                    && self.election_elapsed < self.cfg.election_ticks;
                if in_lease && !m.force {
                    return Ok(());
                }
            }
            match m.kind {
                MessageType::PreVote => {}
                MessageType::PreVoteResp if !m.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term != 0 && m.term < self.term {
            match m.kind {
                MessageType::Append | MessageType::Heartbeat
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader (e.g. partitioned, or whose followers ran pre-vote
                    // elections) learns the new term from this and steps down.
                    let mut r = Message::new(MessageType::AppendResp, self.id, m.from, self.term);
                    r.index = self.log.last_index();
                    self.msgs.push(r);
                }
                MessageType::PreVote => {
                    let mut r = Message::new(MessageType::PreVoteResp, self.id, m.from, self.term);
                    r.reject = true;
                    self.send(r);
                }
                _ => {}
            }
            return Ok(());
        }
        match m.kind {
            MessageType::Vote | MessageType::PreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader = m.from;
                return self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_heartbeat(m);
            }
            MessageType::Snapshot => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m);
            }
            // Thesis §3.10: the target starts an election at once, and its vote
            // requests override the voters' leases.
            MessageType::TimeoutNow if self.promotable() => self.campaign(Campaign::Transfer),
            MessageType::ReadIndexResp => self.read_states.push(ReadState {
                index: m.index,
                ctx: m.context,
            }),
            MessageType::ReadIndex | MessageType::TransferLeader if self.leader != 0 => {
                let mut f = m;
                f.to = self.leader;
                self.msgs.push(f);
            }
            _ => {}
        }
        Ok(())
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageType::Append | MessageType::Heartbeat | MessageType::Snapshot => {
                // Raft §5.2: "If the AppendEntries RPC is from another server claiming
                // to be leader whose term is at least as large as the candidate's
                // current term, then the candidate ... returns to follower state."
                self.become_follower(m.term, m.from);
                self.step_follower(m)
            }
            MessageType::VoteResp if self.role == Role::Candidate => {
                self.handle_vote_response(m);
                Ok(())
            }
            MessageType::PreVoteResp if self.role == Role::PreCandidate => {
                self.handle_vote_response(m);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageType::AppendResp => self.handle_append_response(m),
            MessageType::HeartbeatResp => self.handle_heartbeat_response(m),
            MessageType::ReadIndex => self.handle_read_index(m.context, m.from),
            MessageType::TransferLeader => self.transfer_leader(m.index),
            _ => {}
        }
        Ok(())
    }

    /// Thesis §3.10: leadership transfer. Brings `to` up to date, then sends it
    /// TimeoutNow; proposals are refused meanwhile; aborted after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) {
        if self.role != Role::Leader {
            if self.leader != 0 && self.leader != self.id {
                let mut m = Message::new(MessageType::TransferLeader, self.id, self.leader, 0);
                m.index = to;
                self.msgs.push(m);
            }
            return;
        }
        if to == self.id || !self.is_voter(to) || self.lead_transferee == to {
            return;
        }
        self.lead_transferee = to;
        self.election_elapsed = 0;
        let last = self.log.last_index();
        if self.prs.get(&to).is_some_and(|p| p.match_index == last) {
            self.send_timeout_now(to);
        } else {
            self.maybe_send_append(to, true);
        }
    }

    pub fn send_timeout_now(&mut self, to: NodeId) {
        let m = Message::new(MessageType::TimeoutNow, self.id, to, self.term);
        self.send(m);
    }
}
