//! The error every frame, handshake and validation step can answer with.
//!
//! [`ProtoError`] is both the Rust error type of this module and the payload of an
//! `Error` frame (kind [`crate::proto::FrameKind::Error`]): a typed [`ErrorCode`] plus a
//! human-readable message. The numeric value of each code on the wire is the rkyv enum
//! tag, i.e. the variant's position in the declaration below; new codes are only ever
//! appended (a test pins the existing numbers).

use rkyv::{Archive, Deserialize, Serialize};

use crate::mvcc::KvError;

/// What went wrong. The wire tag of a variant is its position here (0-based).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ErrorCode {
    /// 0: the request is larger than `Limits::max_request_bytes`, or a key or value is
    /// larger than its limit.
    RequestTooLarge,
    /// 1: too many requests in flight (connection or apply gap).
    TooManyRequests,
    /// 2: the store is over its space quota.
    NoSpace,
    /// 3: the revision asked for has been compacted; carries the compacted revision.
    Compacted(i64),
    /// 4: the revision asked for is in the future; carries the current revision.
    FutureRevision(i64),
    /// 5: the request's group lives on another shard of this node: connect to
    /// `client_port` (this node's port of `shard`).
    WrongShard {
        group: u32,
        shard: u32,
        client_port: u16,
    },
    /// 6: this replica is not the group's leader; `leader` is the leader's node id, 0
    /// when unknown.
    NotLeader { leader: u64 },
    /// 7: a field has a value outside its domain; the message says which.
    InvalidArgument,
    /// 8
    EmptyKey,
    /// 9: a Txn has more compares, or a branch more operations, than allowed.
    TooManyOps,
    /// 10: a Txn writes one key twice (put/put, put/delete) or has overlapping deletes.
    DuplicateKey,
    /// 11: range_end is before key.
    InvalidRange,
    /// 12: a Txn touches keys of two groups.
    CrossGroupTxn,
    /// 13
    KeyNotFound,
    /// 14
    ValueProvided,
    /// 15
    LeaseProvided,
    /// 16: carries the lease id.
    LeaseNotFound(i64),
    /// 17: the frame kind is unknown or not valid on this connection.
    UnknownRequest,
    /// 18: the handshake named a protocol version this node does not speak.
    UnsupportedVersion,
    /// 19: the frame (or handshake) is malformed: length under the header, bad magic,
    /// reserved bits set, payload length inconsistent, end of stream mid-frame.
    BadFrame,
    /// 20: the frame's length field exceeds the receiver's maximum frame size.
    FrameTooLarge,
    /// 21: the frame's crc32 does not match.
    BadChecksum,
    /// 22: the payload is not a valid rkyv archive of the type its kind names.
    InvalidMessage,
    /// 23: the group has no leader / the node is shutting down; retry later.
    Unavailable,
    /// 24: a bug or a storage failure on the server; the message says what.
    Internal,
    /// 25: a peer frame names another cluster.
    ClusterIdMismatch,
}

impl ErrorCode {
    /// Whether the connection must be closed after this error: the byte stream itself
    /// can no longer be trusted (framing lost) or the handshake failed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::FrameTooLarge
                | ErrorCode::BadChecksum
                | ErrorCode::UnsupportedVersion
                | ErrorCode::ClusterIdMismatch
        )
    }
}

/// An error with its code and a message saying what happened (operation, offsets,
/// sizes). The payload of an `Error` frame.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ProtoError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtoError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }

    /// See [`ErrorCode::is_fatal`].
    pub fn is_fatal(&self) -> bool {
        self.code.is_fatal()
    }
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for ProtoError {}

impl From<KvError> for ProtoError {
    fn from(e: KvError) -> Self {
        let message = e.to_string();
        let code = match e {
            KvError::EmptyKey => ErrorCode::EmptyKey,
            KvError::Compacted(r) => ErrorCode::Compacted(r),
            KvError::FutureRevision(r) => ErrorCode::FutureRevision(r),
            KvError::InvalidRange => ErrorCode::InvalidRange,
            KvError::TooManyOps => ErrorCode::TooManyOps,
            KvError::DuplicateKey => ErrorCode::DuplicateKey,
            KvError::KeyNotFound => ErrorCode::KeyNotFound,
            KvError::ValueProvided => ErrorCode::ValueProvided,
            KvError::LeaseProvided => ErrorCode::LeaseProvided,
            KvError::LeaseNotFound(id) => ErrorCode::LeaseNotFound(id),
            KvError::RequestTooLarge => ErrorCode::RequestTooLarge,
            KvError::NoSpace => ErrorCode::NoSpace,
            KvError::Storage(_) => ErrorCode::Internal,
            KvError::StaleSequence(_) => ErrorCode::InvalidArgument,
        };
        ProtoError { code, message }
    }
}
