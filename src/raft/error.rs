//! Errors of the Raft core's API.

use super::types::{NodeId, StorageError};

/// Errors of [`super::RawNode::new`] and [`super::RawNode::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftError {
    /// The configuration is inconsistent (the message says which limit).
    Config(String),
    /// The storage failed while the core read it.
    Storage(StorageError),
    /// The storage's state contradicts itself (e.g. commit beyond the last index).
    Corrupt(String),
    /// A message from the network is malformed (the message says how); it was dropped.
    InvalidMessage(String),
}

impl std::fmt::Display for RaftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftError::Config(m) => write!(f, "raft config: {m}"),
            RaftError::Storage(e) => write!(f, "raft storage: {e}"),
            RaftError::Corrupt(m) => write!(f, "raft storage state corrupt: {m}"),
            RaftError::InvalidMessage(m) => write!(f, "raft message invalid: {m}"),
        }
    }
}

impl std::error::Error for RaftError {}

impl From<StorageError> for RaftError {
    fn from(e: StorageError) -> Self {
        RaftError::Storage(e)
    }
}

/// Why a proposal, read or membership change was refused. Nothing was queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows of (0: none).
    NotLeader { leader: NodeId },
    /// A leader transfer is in progress; proposals resume when it ends.
    TransferInProgress,
    /// Uncommitted entries already hold `uncommitted_bytes` of `max_uncommitted_bytes`.
    TooManyUncommitted {
        uncommitted_bytes: u64,
        max_uncommitted_bytes: u64,
    },
    /// Another membership change is not committed yet, or the leader has not yet
    /// committed an entry of its own term (thesis §4.1 and its 2015 correction).
    ConfChangePending,
    /// The membership change makes no sense (the message says why).
    InvalidConfChange(String),
    /// An empty batch was proposed.
    EmptyBatch,
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader } => write!(f, "not the leader (leader: {leader})"),
            ProposeError::TransferInProgress => write!(f, "leader transfer in progress"),
            ProposeError::TooManyUncommitted {
                uncommitted_bytes,
                max_uncommitted_bytes,
            } => write!(
                f,
                "too many uncommitted bytes ({uncommitted_bytes} of {max_uncommitted_bytes})"
            ),
            ProposeError::ConfChangePending => write!(f, "a membership change is pending"),
            ProposeError::InvalidConfChange(m) => write!(f, "invalid membership change: {m}"),
            ProposeError::EmptyBatch => write!(f, "empty proposal batch"),
        }
    }
}

impl std::error::Error for ProposeError {}
