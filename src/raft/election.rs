//! Leader election (Raft §5.2), pre-vote (thesis §9.6) and the vote rule (§5.4.1).

use super::message::{Message, MessageType};
use super::raft::{Raft, Role};
use super::types::{NodeId, Storage};

/// Which kind of election to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Campaign {
    /// Election timeout: pre-vote first (when enabled).
    PreElection,
    /// A real election (pre-vote won, or pre-vote disabled).
    Election,
    /// Asked by the leader's TimeoutNow: skip pre-vote, override leases.
    Transfer,
}

pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl<S: Storage> Raft<S> {
    /// Starts an election (Raft §5.2: "a follower increments its current term and
    /// transitions to candidate state"), after a pre-vote round unless disabled.
    pub fn campaign(&mut self, c: Campaign) {
        if !self.promotable() {
            return;
        }
        let transfer = c == Campaign::Transfer;
        let pre = self.cfg.pre_vote && c == Campaign::PreElection;
        let (kind, term) = if pre {
            self.become_pre_candidate();
            (MessageType::PreVote, self.term + 1)
        } else {
            self.become_candidate();
            (MessageType::Vote, self.term)
        };
        match self.poll(self.id, true) {
            VoteResult::Won => {
                if pre {
                    self.campaign(Campaign::Election);
                } else {
                    self.become_leader();
                }
                return;
            }
            VoteResult::Lost | VoteResult::Pending => {}
        }
        let last_index = self.log.last_index();
        let last_term = self.log.last_term();
        let voters: Vec<NodeId> = self.conf.voters.clone();
        for v in voters {
            if v == self.id {
                continue;
            }
            let mut m = Message::new(kind, self.id, v, term);
            m.index = last_index;
            m.log_term = last_term;
            m.force = transfer;
            // A Vote request leaves only after our own vote is durable (Ready
            // persisted_messages): a candidate that forgot its vote could be elected
            // twice in one term.
            self.send(m);
        }
    }

    /// Records a vote and tallies the voters of the current configuration.
    pub fn poll(&mut self, from: NodeId, granted: bool) -> VoteResult {
        self.votes.entry(from).or_insert(granted);
        let mut yes = 0;
        let mut no = 0;
        for v in &self.conf.voters {
            match self.votes.get(v) {
                Some(true) => yes += 1,
                Some(false) => no += 1,
                None => {}
            }
        }
        let q = self.quorum();
        if yes >= q {
            VoteResult::Won
        } else if no > self.conf.voters.len() - q {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// Raft §5.2/§5.4.1: "Each server will vote for at most one candidate in a given
    /// term, on a first-come-first-served basis"; "the voter denies its vote if its own
    /// log is more up-to-date than that of the candidate."
    pub fn handle_vote_request(&mut self, m: Message) {
        let pre = m.kind == MessageType::PreVote;
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader == 0)
            || (pre && m.term > self.term);
        let log_ok =
            self.cfg.bugs().vote_ignores_log || self.log.is_up_to_date(m.index, m.log_term);
        let resp_kind = if pre {
            MessageType::PreVoteResp
        } else {
            MessageType::VoteResp
        };
        if can_vote && log_ok {
            // A pre-vote grant answers in the term asked about (the candidate's future term).
            let mut r = Message::new(resp_kind, self.id, m.from, m.term);
            r.reject = false;
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
            self.send(r);
        } else {
            let mut r = Message::new(resp_kind, self.id, m.from, self.term);
            r.reject = true;
            self.send(r);
        }
    }

    pub fn handle_vote_response(&mut self, m: Message) {
        match self.poll(m.from, !m.reject) {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign(Campaign::Election);
                } else {
                    self.become_leader();
                }
            }
            VoteResult::Lost => self.become_follower(self.term, 0),
            VoteResult::Pending => {}
        }
    }
}
