//! ReadIndex (thesis §6.4), batched: every read that arrived before a heartbeat round
//! was sent is confirmed by a quorum answering that round.
//!
//! 1. A read arriving at the leader records `index = commit` and the number of a
//!    heartbeat round whose messages have not yet left (the latest round if its
//!    heartbeats are still in the outgoing buffer, else the next one): a heartbeat that
//!    left before the read arrived proves nothing about leadership after it.
//! 2. If no round is in flight, one is broadcast at once; otherwise the read waits for
//!    the following round, which starts when the current one is confirmed (or at the
//!    next heartbeat tick).
//! 3. Round `r` is confirmed when a quorum of voters (the leader included) answered a
//!    heartbeat of round `>= r`; all reads of rounds `<= r` are released.
//! 4. A new leader releases nothing before it has committed an entry of its own term;
//!    reads arriving before that wait (they are not dropped).

use super::message::{Message, MessageType, ReadState};
use super::raft::{Raft, Role};
use super::types::{NodeId, Storage};
use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub(crate) struct PendingRead {
    pub ctx: Vec<u8>,
    pub from: NodeId,
    pub index: u64,
    pub round: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ReadIndexState {
    /// Rounds started so far (the last one started has this number).
    pub rounds_sent: u64,
    /// Highest round whose heartbeats the driver has taken (left in a Ready). A read
    /// arriving while the latest round's heartbeats are still buffered joins it.
    pub rounds_left: u64,
    /// Highest confirmed round.
    pub confirmed: u64,
    pub pending: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    pub waiting_for_commit: Vec<(Vec<u8>, NodeId)>,
}

impl ReadIndexState {
    pub fn start_round(&mut self) -> u64 {
        self.rounds_sent += 1;
        self.rounds_sent
    }
}

impl<S: Storage> Raft<S> {
    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Ok(self.term)
    }

    pub fn handle_read_index(&mut self, ctx: Vec<u8>, from: NodeId) {
        debug_assert_eq!(self.role, Role::Leader);
        if !self.committed_in_term() {
            self.reads.waiting_for_commit.push((ctx, from));
            return;
        }
        let index = self.log.commit;
        if self.cfg.bugs().read_without_round {
            self.release_read(PendingRead {
                ctx,
                from,
                index,
                round: 0,
            });
            return;
        }
        let round = if self.reads.rounds_sent > self.reads.rounds_left {
            self.reads.rounds_sent // its heartbeats have not left yet
        } else {
            self.reads.rounds_sent + 1
        };
        self.reads.pending.push_back(PendingRead {
            ctx,
            from,
            index,
            round,
        });
        if round > self.reads.rounds_sent {
            // The round this read needs has not started: start it now rather than at
            // the next heartbeat tick (a read must not wait a heartbeat interval).
            self.bcast_heartbeat();
        } else {
            // Its round is the one whose heartbeats leave with this Ready; a lone voter
            // confirms it at once.
            self.advance_reads();
        }
    }

    pub fn on_commit_for_reads(&mut self) {
        if self.reads.waiting_for_commit.is_empty() || !self.committed_in_term() {
            return;
        }
        for (ctx, from) in std::mem::take(&mut self.reads.waiting_for_commit) {
            self.handle_read_index(ctx, from);
        }
    }

    /// Releases the reads whose round a quorum has confirmed.
    pub fn advance_reads(&mut self) {
        if self.role != Role::Leader || self.reads.pending.is_empty() {
            return;
        }
        let mut acks: Vec<u64> = self
            .conf
            .voters
            .iter()
            .map(|v| {
                if *v == self.id {
                    self.reads.rounds_sent
                } else {
                    self.prs.get(v).map_or(0, |p| p.read_round_acked)
                }
            })
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let confirmed = acks[self.quorum() - 1];
        if confirmed <= self.reads.confirmed {
            return;
        }
        self.reads.confirmed = confirmed;
        while self
            .reads
            .pending
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            let r = self.reads.pending.pop_front().expect("checked");
            self.release_read(r);
        }
        if !self.reads.pending.is_empty() && self.reads.confirmed >= self.reads.rounds_sent {
            self.bcast_heartbeat();
        }
    }

    fn release_read(&mut self, r: PendingRead) {
        if r.from == self.id {
            self.read_states.push(ReadState {
                index: r.index,
                ctx: r.ctx,
            });
        } else {
            let mut m = Message::new(MessageType::ReadIndexResp, self.id, r.from, self.term);
            m.index = r.index;
            m.context = r.ctx;
            self.send(m);
        }
    }

    /// API entry: a read at this node (forwarded to the leader from a follower).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), super::error::ProposeError> {
        match self.role {
            Role::Leader => {
                self.handle_read_index(ctx, self.id);
                Ok(())
            }
            _ if self.leader != 0 => {
                let mut m = Message::new(MessageType::ReadIndex, self.id, self.leader, 0);
                m.context = ctx;
                self.msgs.push(m);
                Ok(())
            }
            _ => Err(super::error::ProposeError::NotLeader { leader: 0 }),
        }
    }
}
