//! Requests and responses of etcd v3's KV API, in corekv's terms.
//!
//! These are what a Raft entry carries (a serialized [`WriteRequest`]) and what the client
//! protocol embeds. Field meanings follow etcd's `rpc.proto`; where corekv differs it
//! says so.

use rkyv::{Archive, Deserialize, Serialize};

/// A key's state at one revision (etcd `mvccpb.KeyValue`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Revision of the last creation of this key (reset by a delete).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of modifications since creation (1 after the creating put).
    pub version: i64,
    pub value: Vec<u8>,
    /// Lease attached to the key; 0 = none.
    pub lease: i64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// etcd `RangeRequest`. `range_end` empty = the single key; `[0]` with key `[0]` = all
/// keys; `[0]` otherwise = every key >= key; else the half-open range [key, range_end).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 = no limit.
    pub limit: i64,
    /// 0 = the current revision.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Serve from the local store without a ReadIndex round (may be stale).
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// 0 = no bound.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Number of keys in the range (before `limit`).
    pub count: i64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// 0 = no lease.
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (error `KeyNotFound` if the key does not exist).
    pub ignore_value: bool,
    /// Keep the current lease.
    pub ignore_lease: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    /// Same conventions as [`RangeRequest::range_end`].
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a [`Compare`] looks at, with the operand to compare it to.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(i64),
}

/// etcd `Compare`: applies to `key`, or to every key in [key, range_end) when
/// `range_end` is set (all must satisfy it).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Compare {
    pub op: CompareOp,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// One operation inside a Txn branch (etcd `RequestOp`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(#[rkyv(omit_bounds)] TxnRequest),
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(#[rkyv(omit_bounds)] TxnResponse),
}

/// etcd `TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    #[rkyv(omit_bounds)]
    pub success: Vec<RequestOp>,
    #[rkyv(omit_bounds)]
    pub failure: Vec<RequestOp>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(serialize_bounds(
    __S: rkyv::ser::Writer + rkyv::ser::Allocator,
    __S::Error: rkyv::rancor::Source,
))]
#[rkyv(deserialize_bounds(__D::Error: rkyv::rancor::Source))]
#[rkyv(bytecheck(bounds(
    __C: rkyv::validation::ArchiveContext,
    __C::Error: rkyv::rancor::Source,
)))]
pub struct TxnResponse {
    pub succeeded: bool,
    #[rkyv(omit_bounds)]
    pub responses: Vec<ResponseOp>,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CompactRequest {
    pub revision: i64,
}

/// A write that goes through Raft: the payload of a Normal log entry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum WriteRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CompactResponse {}

/// The result of applying one [`WriteRequest`] (same variant as the request).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum WriteResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum EventKind {
    Put,
    Delete,
}

/// One change in history (etcd `mvccpb.Event` without prev_kv). For a delete, `kv`
/// carries only the key and `mod_revision` (the revision of the delete).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Errors of the KV operations, named as in `../shared/reference/bad-inputs.md`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum KvError {
    EmptyKey,
    /// Read at a revision below the compacted one; carries the compacted revision.
    Compacted(i64),
    /// Read or compact at a revision above the current one; carries the current one.
    FutureRevision(i64),
    InvalidRange,
    TooManyOps,
    DuplicateKey,
    KeyNotFound,
    ValueProvided,
    LeaseProvided,
    LeaseNotFound(i64),
    RequestTooLarge,
    NoSpace,
    /// The store could not be read or written; the message names what failed.
    Storage(String),
    /// A deduplicated write that was applied before but whose response is not kept:
    /// its sequence number is below the last one applied for its session, or its
    /// response was too large to keep. Carries the session's last applied sequence.
    StaleSequence(u64),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::EmptyKey => write!(f, "key is not provided"),
            KvError::Compacted(r) => {
                write!(f, "required revision has been compacted (compacted at {r})")
            }
            KvError::FutureRevision(r) => {
                write!(f, "required revision is a future revision (current {r})")
            }
            KvError::InvalidRange => write!(f, "range_end is before key"),
            KvError::TooManyOps => write!(f, "too many operations in txn request"),
            KvError::DuplicateKey => write!(f, "duplicate key given in txn request"),
            KvError::KeyNotFound => write!(f, "key not found"),
            KvError::ValueProvided => write!(f, "value is provided with ignore_value"),
            KvError::LeaseProvided => write!(f, "lease is provided with ignore_lease"),
            KvError::LeaseNotFound(id) => write!(f, "lease {id} not found"),
            KvError::RequestTooLarge => write!(f, "request is too large"),
            KvError::NoSpace => write!(f, "database space exceeded"),
            KvError::Storage(m) => write!(f, "storage error: {m}"),
            KvError::StaleSequence(last) => write!(
                f,
                "request already applied, its response is not kept (session's last applied sequence {last})"
            ),
        }
    }
}

impl std::error::Error for KvError {}
