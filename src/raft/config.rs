//! Configuration of one Raft node, and the test-only switches that break one rule
//! at a time (so the simulator can show that it notices).

use super::types::NodeId;

/// Limits and timing of one Raft node. Times are counted in ticks.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// A follower starts an election after a random timeout in
    /// `[election_ticks, 2 * election_ticks)` without hearing from a leader.
    pub election_ticks: u64,
    /// A leader sends heartbeats every `heartbeat_ticks`.
    pub heartbeat_ticks: u64,
    /// Seed of the node's private RNG (election timeouts).
    pub seed: u64,
    /// Run a pre-vote round before raising the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down if it has not heard from a quorum within an election timeout.
    pub check_quorum: bool,
    /// Most entry bytes in one Append message (at least one entry is always sent).
    pub max_msg_bytes: u64,
    /// Most Append messages in flight to one follower in replicate state.
    pub max_inflight_msgs: usize,
    /// Most entry bytes in flight to one follower in replicate state.
    pub max_inflight_bytes: u64,
    /// Proposals are refused while the leader's uncommitted entries exceed this.
    pub max_uncommitted_bytes: u64,
    /// Most committed-entry bytes handed out in one Ready (at least one entry).
    pub max_committed_bytes_per_ready: u64,
    /// Index the application has applied (the restart point); entries up to it are
    /// not handed out again.
    pub applied: u64,
    /// Test-only: rules to break on purpose.
    #[cfg(any(test, feature = "raft-bugs"))]
    pub bugs: Bugs,
}

/// Test-only switches, each breaking one Raft rule.
#[cfg(any(test, feature = "raft-bugs"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Count replicas of an older-term entry toward commit (Raft §5.4.2 violated).
    pub commit_old_term: bool,
    /// Grant votes without the log up-to-date check (§5.4.1 violated).
    pub vote_ignores_log: bool,
    /// Serve ReadIndex without a heartbeat round confirming leadership.
    pub read_without_round: bool,
    /// A follower acknowledges an append before it is durable.
    pub ack_before_durable: bool,
}

impl Config {
    /// Defaults suited to a LAN cluster with ~100 ms ticks: elections after 10 ticks,
    /// heartbeats every tick, 1 MiB messages.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            seed: id,
            pre_vote: true,
            check_quorum: true,
            max_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_uncommitted_bytes: 64 << 20,
            max_committed_bytes_per_ready: 4 << 20,
            applied: 0,
            #[cfg(any(test, feature = "raft-bugs"))]
            bugs: Bugs::default(),
        }
    }

    /// Checks the relationships between the limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("config: id 0 is reserved for \"none\"".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(format!(
                "config: need 0 < heartbeat_ticks ({}) < election_ticks ({})",
                self.heartbeat_ticks, self.election_ticks
            ));
        }
        if self.max_msg_bytes == 0
            || self.max_inflight_msgs == 0
            || self.max_inflight_bytes == 0
            || self.max_uncommitted_bytes == 0
            || self.max_committed_bytes_per_ready == 0
        {
            return Err("config: every size limit must be > 0".into());
        }
        Ok(())
    }

    #[cfg(any(test, feature = "raft-bugs"))]
    pub(crate) fn bugs(&self) -> Bugs {
        self.bugs
    }

    #[cfg(not(any(test, feature = "raft-bugs")))]
    #[inline(always)]
    pub(crate) fn bugs(&self) -> Bugs {
        Bugs::default()
    }
}

/// Without the test switches every rule is kept.
#[cfg(not(any(test, feature = "raft-bugs")))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bugs {
    pub commit_old_term: bool,
    pub vote_ignores_log: bool,
    pub read_without_round: bool,
    pub ack_before_durable: bool,
}
