//! Types shared by the Raft core, the WAL and the wire protocol.
//!
//! All derive rkyv so that the WAL and the peer protocol can store and send them
//! without a second encoding.

use rkyv::{Archive, Deserialize, Serialize};

pub use super::payload::Payload;

/// A Raft node (replica) id. 0 is never a valid id: it means "none".
pub type NodeId = u64;

/// What a log entry carries.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EntryKind {
    /// Application data (a serialized request); may be empty (a new leader's no-op).
    Normal,
    /// A serialized membership change; applied by the Raft core itself.
    ConfChange,
}

/// One Raft log entry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    /// The payload, shared rather than copied: the Raft core's log, the WAL's cache,
    /// Ready and replication messages all hold the same bytes (see [`Payload`]).
    pub data: Payload,
}

impl Entry {
    /// Bytes this entry counts for in every size limit (payload plus a fixed header).
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// The state that must be durable before a node answers any message (Raft Figure 2:
/// "persistent state on all servers"), plus the commit index for faster restart.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HardState {
    pub term: u64,
    /// The node voted for in `term`; 0 = none.
    pub vote: NodeId,
    pub commit: u64,
}

/// Cluster membership as of some log index.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfState {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Non-empty only while a joint configuration (old ∪ new) is in force.
    pub voters_outgoing: Vec<NodeId>,
}

/// Describes the state a snapshot captures: everything up to and including `index`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// Errors a [`Storage`] read may return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index is below the first retained index (compacted into a snapshot).
    Compacted,
    /// The requested index is above the last index.
    Unavailable,
    /// The entries exist but are not in memory; the storage has started fetching them
    /// asynchronously and the caller should retry later (e.g. at the next heartbeat
    /// response). The Raft core must treat this as "not now", never as an error.
    TemporarilyUnavailable,
    /// An I/O or corruption error; the message names the file and offset.
    Io(String),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageError::Compacted => write!(f, "log index compacted"),
            StorageError::Unavailable => write!(f, "log index unavailable"),
            StorageError::TemporarilyUnavailable => write!(f, "log entries being fetched"),
            StorageError::Io(m) => write!(f, "storage I/O error: {m}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// The durable log as the Raft core reads it. The Raft core never writes through this
/// trait: the driver persists what a `Ready` hands it (WAL) and then tells the core.
///
/// Invariants: `first_index() == snapshot_meta().index + 1`; entries in
/// `first_index()..=last_index()` are contiguous; `term(snapshot_meta().index)` is the
/// snapshot's term.
pub trait Storage {
    /// Hard state and membership at start-up.
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError>;
    /// Entries in `[lo, hi)`, at most `max_bytes` in total but always at least one if
    /// any are in range.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// Term of the entry at `index` (also defined for the snapshot's index).
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    fn first_index(&self) -> Result<u64, StorageError>;
    fn last_index(&self) -> Result<u64, StorageError>;
    /// Metadata of the latest snapshot (index 0 when there is none).
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;
}
