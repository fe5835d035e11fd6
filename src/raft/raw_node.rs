//! [`RawNode`]: the driver's handle on a Raft node. Input: `tick`, `step`, `propose`,
//! `read_index`, ...; output: numbered [`Ready`]s; feedback: `on_persisted`,
//! `advance_apply`.
//!
//! Ready numbering: each `ready()` returns the next number. `on_persisted(n)` says
//! "everything handed out in Readies `<= n` is durable", so the driver may write
//! several Readies in one group commit and report once. Only then does the core
//! count its own new entries toward the quorum, and only then may the Ready's
//! `persisted_messages` leave.

use super::config::Config;
use super::election::Campaign;
use super::error::{ProposeError, RaftError};
use super::message::{ConfChange, Message, ReadState, Snapshot};
use super::progress::ProgressState;
use super::raft::{Raft, Role};
use super::types::{ConfState, Entry, HardState, NodeId, Storage};
use std::collections::{BTreeMap, VecDeque};

/// Volatile state the driver may want to observe (leader changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: NodeId,
    pub role: Role,
}

/// Everything the driver has to do, in this order: append `snapshot` then `entries`
/// and `hard_state` to the log (truncating any conflicting suffix); send `messages` at
/// once; send `persisted_messages` once this Ready is durable; apply
/// `committed_entries`; serve `read_states` once applied up to their index.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub number: u64,
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    /// To append; may start at an index `<=` the last one written: the driver drops
    /// the conflicting suffix first.
    pub entries: Vec<Entry>,
    /// To install (a snapshot from the leader); data as the leader's driver attached it.
    pub snapshot: Option<Snapshot>,
    /// May leave now.
    pub messages: Vec<Message>,
    /// May leave only after Ready `number` is durable.
    pub persisted_messages: Vec<Message>,
    /// To apply in order; all are durable here.
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// Per-follower replication state, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressStatus {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    pub is_learner: bool,
    pub inflight_msgs: usize,
    pub inflight_bytes: u64,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub vote: NodeId,
    pub leader: NodeId,
    pub commit: u64,
    pub applied: u64,
    pub persisted: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub conf: ConfState,
    pub lead_transferee: NodeId,
    /// Empty unless leader.
    pub progress: BTreeMap<NodeId, ProgressStatus>,
}

/// What one Ready handed out, kept until it is reported durable.
struct InFlightReady {
    number: u64,
    snapshot: Option<u64>,
    last_entry: Option<(u64, u64)>,
}

pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    next_ready: u64,
    prev_soft: SoftState,
    prev_hard: HardState,
    in_flight: VecDeque<InFlightReady>,
}

impl<S: Storage> RawNode<S> {
    /// Starts (or restarts) a node from what `storage` holds; `cfg.applied` is where the
    /// application's state machine stands.
    pub fn new(cfg: Config, storage: S) -> Result<Self, RaftError> {
        let raft = Raft::new(cfg, storage)?;
        let prev_hard = raft.hard_state();
        let prev_soft = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        Ok(RawNode {
            raft,
            next_ready: 1,
            prev_soft,
            prev_hard,
            in_flight: VecDeque::new(),
        })
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Starts an election now (tests, or an operator's "campaign").
    pub fn campaign(&mut self) {
        if self.raft.role != Role::Leader {
            self.raft.campaign(Campaign::PreElection);
        }
    }

    /// Feeds a message from a peer. Malformed messages are an error and change nothing.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        self.raft.step(m)
    }

    /// Appends a batch of entries (leader only); returns the index of the last one.
    pub fn propose(&mut self, batch: Vec<Vec<u8>>) -> Result<u64, ProposeError> {
        self.raft.propose(batch)
    }

    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<u64, ProposeError> {
        self.raft.propose_conf_change(cc)
    }

    /// Asks for a linearizable read point; the answer is a [`ReadState`] with `ctx` in a
    /// later Ready (forwarded to the leader when called on a follower). If leadership
    /// changes before the read is confirmed no answer ever comes: the driver times the
    /// read out and retries it.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        self.raft.read_index(ctx)
    }

    pub fn transfer_leader(&mut self, to: NodeId) {
        self.raft.transfer_leader(to);
    }

    /// The driver's snapshot to `to` was delivered (`ok`) or failed.
    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        if self.raft.role != Role::Leader {
            return;
        }
        if let Some(pr) = self.raft.prs.get_mut(&to) {
            if pr.state == ProgressState::Snapshot {
                if !ok {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for the next heartbeat answer before probing again.
                pr.probe_sent = true;
            }
        }
    }

    /// A peer seems unreachable: stop pipelining to it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.raft.prs.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        let soft = SoftState {
            leader: r.leader,
            role: r.role,
        };
        soft != self.prev_soft
            || r.hard_state() != self.prev_hard
            || !r.msgs.is_empty()
            || !r.msgs_after_append.is_empty()
            || !r.log.next_unhanded().is_empty()
            || (r.log.unstable_snapshot.is_some() && !r.log.snapshot_handed)
            || r.log.has_next_committed()
            || !r.read_states.is_empty()
    }

    pub fn ready(&mut self) -> Ready {
        let number = self.next_ready;
        self.next_ready += 1;
        let r = &mut self.raft;
        let mut rd = Ready {
            number,
            ..Default::default()
        };
        let soft = SoftState {
            leader: r.leader,
            role: r.role,
        };
        if soft != self.prev_soft {
            rd.soft_state = Some(soft);
            self.prev_soft = soft;
        }
        let hs = r.hard_state();
        if hs != self.prev_hard {
            rd.hard_state = Some(hs);
            self.prev_hard = hs;
        }
        let mut rec = InFlightReady {
            number,
            snapshot: None,
            last_entry: None,
        };
        if let Some(s) = &r.log.unstable_snapshot {
            if !r.log.snapshot_handed {
                rec.snapshot = Some(s.meta.index);
                rd.snapshot = Some(s.clone());
                r.log.snapshot_handed = true;
                r.log.applying = r.log.applying.max(s.meta.index);
            }
        }
        rd.entries = r.log.next_unhanded().to_vec();
        if let Some(e) = rd.entries.last() {
            rec.last_entry = Some((e.index, e.term));
            r.log.handed_offset = e.index + 1;
        }
        if r.log.has_next_committed() {
            let lo = r.log.applying + 1;
            let hi = r.log.apply_limit() + 1;
            match r.log.entries(lo, hi, r.cfg.max_committed_bytes_per_ready) {
                Ok(ents) => {
                    if let Some(e) = ents.last() {
                        r.log.applying = e.index;
                    }
                    rd.committed_entries = ents;
                }
                Err(super::types::StorageError::TemporarilyUnavailable) => {}
                Err(e) => panic!(
                    "node {}: committed entries [{lo}, {hi}) unreadable: {e} (compacted beyond applied?)",
                    r.id
                ),
            }
        }
        rd.messages = std::mem::take(&mut r.msgs);
        r.reads.rounds_left = r.reads.rounds_sent;
        rd.persisted_messages = std::mem::take(&mut r.msgs_after_append);
        rd.read_states = std::mem::take(&mut r.read_states);
        self.in_flight.push_back(rec);
        rd
    }

    /// Everything handed out in Readies `<= number` is durable.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(
            number < self.next_ready,
            "on_persisted({number}) but only {} Readies were handed out",
            self.next_ready - 1
        );
        while self.in_flight.front().is_some_and(|r| r.number <= number) {
            let rec = self.in_flight.pop_front().expect("checked");
            if let Some(idx) = rec.snapshot {
                self.raft.log.stable_snap_to(idx);
            }
            if let Some((idx, term)) = rec.last_entry {
                self.raft.log.stable_to(idx, term);
            }
        }
        let r = &mut self.raft;
        if r.role == Role::Leader {
            let persisted = r.log.persisted;
            let id = r.id;
            if let Some(pr) = r.prs.get_mut(&id) {
                pr.match_index = pr.match_index.max(persisted);
                pr.next_index = pr.next_index.max(pr.match_index + 1);
            }
            if r.maybe_commit() && r.role == Role::Leader {
                r.bcast_append();
            }
        }
    }

    /// The application applied everything up to `applied`.
    pub fn advance_apply(&mut self, applied: u64) {
        let log = &mut self.raft.log;
        assert!(
            applied <= log.applying,
            "advance_apply({applied}) beyond handed-out {}",
            log.applying
        );
        log.applied = log.applied.max(applied);
    }

    /// Configuration in force after applying entries up to `index` (for snapshots).
    pub fn conf_state_at(&self, index: u64) -> Option<ConfState> {
        self.raft.conf_state_at(index)
    }

    /// The latest configuration in the log.
    pub fn conf_state(&self) -> &ConfState {
        &self.raft.conf
    }

    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The driver writes what Readies hand out through this (and compacts it).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    pub fn into_storage(self) -> S {
        self.raft.log.storage
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == Role::Leader {
            r.prs
                .iter()
                .map(|(&id, p)| {
                    (
                        id,
                        ProgressStatus {
                            match_index: p.match_index,
                            next_index: p.next_index,
                            state: p.state,
                            is_learner: p.is_learner,
                            inflight_msgs: p.inflights.count(),
                            inflight_bytes: p.inflights.bytes(),
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: r.id,
            role: r.role,
            term: r.term,
            vote: r.vote,
            leader: r.leader,
            commit: r.log.commit,
            applied: r.log.applied,
            persisted: r.log.persisted,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            conf: r.conf.clone(),
            lead_transferee: r.lead_transferee,
            progress,
        }
    }

    /// Term of the entry at `index`, if this node can tell.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        self.raft.log.term(index).ok()
    }
}
