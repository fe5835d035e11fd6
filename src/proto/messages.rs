//! The rkyv message types carried in frame payloads.
//!
//! Client → server: [`Request`] (kind `Request`). Server → client: [`Response`] (kind
//! `Response`) or [`crate::proto::ProtoError`] (kind `Error`). Peer ↔ peer: [`PeerFrame`]
//! (kind `Raft`), [`SnapshotChunk`] and [`SnapshotAck`].
//!
//! The KV shapes are mvcc's (etcd's): this module only wraps them. Every type's archived
//! form has an alignment of at most [`crate::proto::FRAME_ALIGN`] (asserted at compile
//! time in `frame.rs`), which is what lets a receiver validate a payload in place.

use rkyv::{
    rancor::Fallible,
    ser::{Allocator, Writer, WriterExt},
    vec::{ArchivedVec, VecResolver},
    with::{ArchiveWith, DeserializeWith, SerializeWith},
    Archive, Deserialize, Place, Serialize,
};

use crate::mvcc::{
    CompactRequest, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, TxnRequest, TxnResponse,
};

/// `ResponseHeader::group` of a response merged from several groups (a multi-group
/// range): the per-group revisions are in [`RangeResult::groups`].
pub const MULTI_GROUP: u32 = u32::MAX;

/// A client request. `session` (chosen by the client, unique per client process, e.g.
/// random) and `seq` (increasing per session) let the state machine recognise a retried
/// write and answer it without applying it twice; reads may use seq 0.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub session: u64,
    pub seq: u64,
    pub op: Op,
}

/// What a [`Request`] asks for. Wire tags: Put 0, Range 1, DeleteRange 2, Txn 3,
/// Compact 4, Status 5, Topology 6, HashKv 7, MemberList 8, MemberAdd 9,
/// MemberPromote 10, MemberRemove 11.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(PutRequest),
    Range(RangeRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// Revisions are per group, so a compaction names its group.
    Compact {
        group: u32,
        request: CompactRequest,
    },
    /// Every group of the node that receives it.
    Status,
    Topology,
    /// The hash of `group`'s key-values at `revision` (0 = current), computed by the
    /// receiving node's own replica (no ReadIndex): comparing the answers of every node
    /// checks that the replicas agree.
    HashKv {
        group: u32,
        revision: i64,
    },
    /// The cluster's members as the receiving node knows them.
    MemberList,
    /// Adds a member (served by group 0's leader); it gets the next node id.
    MemberAdd(MemberAddRequest),
    /// Makes a learner a voter (each group promotes it once it has caught up).
    MemberPromote {
        node_id: u64,
    },
    /// Removes a member: every group drops it; the removed node stops serving.
    MemberRemove {
        node_id: u64,
    },
}

/// A member to add: where it listens, and whether it starts as a learner (it should:
/// a learner catches up before it counts in quorums).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberAddRequest {
    pub name: String,
    /// An IP address.
    pub host: String,
    pub peer_port_base: u16,
    pub client_port_base: u16,
    pub learner: bool,
}

/// One member of the cluster.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberInfo {
    pub node_id: u64,
    pub name: String,
    pub host: String,
    pub peer_port_base: u16,
    pub client_port_base: u16,
    pub learner: bool,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct MemberListResponse {
    pub members: Vec<MemberInfo>,
}

/// Names who answered and at which state. For a multi-group range `group` is
/// [`MULTI_GROUP`] and `revision` is 0: see [`RangeResult::groups`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ResponseHeader {
    pub group: u32,
    /// The group's revision when the request was served.
    pub revision: i64,
    pub raft_term: u64,
    pub node_id: u64,
}

/// A successful answer.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub header: ResponseHeader,
    pub body: ResponseBody,
}

/// Wire tags: Put 0, Range 1, DeleteRange 2, Txn 3, Compact 4, Status 5, Topology 6,
/// HashKv 7, Members 8 (answers every member operation: the list after it).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    Put(PutResponse),
    Range(RangeResult),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    Status(StatusResponse),
    Topology(TopologyResponse),
    HashKv(HashKvResult),
    Members(MemberListResponse),
}

/// A replica's hash of its group's key-values (etcd's HashKV): crc32 over every live
/// key-value at `revision`, in key order. Equal on replicas that applied the same
/// entries, whatever their compaction.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HashKvResult {
    pub hash: u32,
    pub revision: i64,
    pub compact_revision: i64,
}

/// The revision of one group at which it served its part of a request.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupRevision {
    pub group: u32,
    pub revision: i64,
}

/// A range answer, possibly merged from several groups: `groups` lists every group that
/// contributed and its revision (one entry for a single-group range).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeResult {
    pub range: RangeResponse,
    pub groups: Vec<GroupRevision>,
}

/// A replica's role in its Raft group. Wire tags in declaration order.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum RaftRole {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

/// One group's state as seen by the replica on the answering node.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupStatus {
    pub group: u32,
    pub role: RaftRole,
    /// Leader's node id; 0 = unknown.
    pub leader: u64,
    pub term: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub db_size_bytes: u64,
    pub wal_size_bytes: u64,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StatusResponse {
    pub node_id: u64,
    pub cluster_id: u64,
    pub groups: Vec<GroupStatus>,
}

/// Where a group is served on the answering node, and who leads it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GroupTopology {
    pub group: u32,
    pub shard: u32,
    /// The answering node's client port for this shard.
    pub client_port: u16,
    /// Leader's node id; 0 = unknown.
    pub leader: u64,
}

/// A cluster member's address: shard s listens on `client_port_base + s`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct NodeAddr {
    pub node_id: u64,
    pub host: String,
    pub client_port_base: u16,
    pub peer_port_base: u16,
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct TopologyResponse {
    pub node_id: u64,
    pub cluster_id: u64,
    pub shard_count: u32,
    pub groups: Vec<GroupTopology>,
    /// Every member the node knows of (may be empty while it does not know).
    pub nodes: Vec<NodeAddr>,
}

/// One Raft message between the replicas of `group` on two nodes. `raft_message` is an
/// rkyv archive of the Raft `Message` type, opaque here; it starts 8-aligned inside the
/// payload (see [`Aligned8`]) so the receiver can validate it in place.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PeerFrame {
    pub cluster_id: u64,
    pub from_node: u64,
    pub to_node: u64,
    pub group: u32,
    #[rkyv(with = Aligned8)]
    pub raft_message: Vec<u8>,
}

/// A piece of a snapshot of `group` at (`snapshot_index`, `snapshot_term`): `data` is
/// the bytes at `offset` of the snapshot file, `crc` is crc32 of `data`, `last` marks
/// the final chunk.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotChunk {
    pub cluster_id: u64,
    pub from_node: u64,
    pub to_node: u64,
    pub group: u32,
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    pub offset: u64,
    #[rkyv(with = Aligned8)]
    pub data: Vec<u8>,
    pub crc: u32,
    pub last: bool,
}

/// The receiver's answer to chunks: it has everything before `next_offset`; `rejected`
/// tells the sender to stop (e.g. the snapshot is stale).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotAck {
    pub cluster_id: u64,
    pub from_node: u64,
    pub to_node: u64,
    pub group: u32,
    pub snapshot_index: u64,
    pub next_offset: u64,
    pub rejected: bool,
}

/// rkyv wrapper for `Vec<u8>`: archived as a plain `ArchivedVec<u8>` (same layout), but
/// the bytes are written at an 8-aligned position of the archive, so that bytes which
/// are themselves an rkyv archive can be accessed without copying.
pub struct Aligned8;

impl ArchiveWith<Vec<u8>> for Aligned8 {
    type Archived = ArchivedVec<u8>;
    type Resolver = VecResolver;

    fn resolve_with(field: &Vec<u8>, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<S> SerializeWith<Vec<u8>, S> for Aligned8
where
    S: Fallible + Writer + Allocator + ?Sized,
{
    fn serialize_with(field: &Vec<u8>, serializer: &mut S) -> Result<VecResolver, S::Error> {
        serializer.align(8)?;
        ArchivedVec::<u8>::serialize_from_slice(field.as_slice(), serializer)
    }
}

impl<D: Fallible + ?Sized> DeserializeWith<ArchivedVec<u8>, Vec<u8>, D> for Aligned8 {
    fn deserialize_with(field: &ArchivedVec<u8>, _: &mut D) -> Result<Vec<u8>, D::Error> {
        Ok(field.as_slice().to_vec())
    }
}

/// `bytes` at an address aligned for any archived type (8), ready for
/// [`crate::proto::access_payload`]: in place when already aligned (what [`Aligned8`]
/// guarantees for frames this crate encodes), else copied into `scratch`.
pub fn aligned_bytes<'a>(bytes: &'a [u8], scratch: &'a mut rkyv::util::AlignedVec<16>) -> &'a [u8] {
    if (bytes.as_ptr() as usize).is_multiple_of(crate::proto::FRAME_ALIGN) {
        bytes
    } else {
        scratch.clear();
        scratch.extend_from_slice(bytes);
        scratch.as_slice()
    }
}

/// Checks a peer message's addressing (`cluster_id`, `to_node` of a [`PeerFrame`],
/// [`SnapshotChunk`] or [`SnapshotAck`]) against the receiving node: another cluster →
/// `ClusterIdMismatch` (fatal: close the connection); another destination node →
/// `InvalidArgument` (drop the message).
pub fn check_peer_addressing(
    cluster_id: u64,
    from_node: u64,
    to_node: u64,
    my_cluster_id: u64,
    my_node_id: u64,
) -> Result<(), crate::proto::ProtoError> {
    use crate::proto::{ErrorCode, ProtoError};
    if cluster_id != my_cluster_id {
        return Err(ProtoError::new(
            ErrorCode::ClusterIdMismatch,
            format!("peer message from node {from_node} names cluster {cluster_id:#x}, this is cluster {my_cluster_id:#x}"),
        ));
    }
    if to_node != my_node_id {
        return Err(ProtoError::new(
            ErrorCode::InvalidArgument,
            format!("peer message from node {from_node} is addressed to node {to_node}, this is node {my_node_id}"),
        ));
    }
    Ok(())
}
