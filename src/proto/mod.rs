//! corekv's wire protocol, sans I/O: frames, rkyv message types for clients and peers,
//! and validation of untrusted bytes. The server (glommio) and clients (glommio, tokio)
//! do the I/O; this module turns bytes into validated messages and messages into bytes.
//! `docs/protocol.md` is the full specification, with byte diagrams and a worked
//! example.
//!
//! - [`handshake`]: the first bytes of a connection: magic, protocol version, role;
//!   the server's answer names its node id, shard, shard count and cluster id. Fixed
//!   layout, not rkyv.
//! - [`frame`]: everything after the handshake is frames: a 24-byte little-endian header
//!   (length, crc32, request id, kind, flags, payload length) and an rkyv payload padded
//!   to 8 bytes. [`Decoder`] checks length (before allocating), crc, header, rkyv
//!   validity, kind, in that order; [`encode_frame`] serializes in place.
//! - [`messages`]: the payload types ([`Request`], [`Response`], [`PeerFrame`], ...),
//!   embedding mvcc's etcd-shaped request and response types.
//! - [`error`]: [`ProtoError`] = typed [`ErrorCode`] + message, also the `Error` frame's
//!   payload; mvcc's `KvError` maps onto it.
//! - [`route`]: [`group_for`]: FNV-1a 64 of the key's hash tag, modulo the shard count.
//! - [`validate`]: [`validate_request`] checks a request against [`Limits`] and etcd's
//!   rules in place and returns its [`Route`].
//!
//! Invariants: every input byte is untrusted: sizes are bounded before allocation,
//! checksums checked, archives validated with a bounded depth; bad input yields an
//! `Err`, never a panic. Requests are matched to answers by request id only, so many may
//! be in flight per connection and be answered in any order.

pub mod error;
pub mod frame;
pub mod handshake;
pub mod messages;
pub mod route;
pub mod validate;

#[cfg(test)]
mod tests;

pub use error::{ArchivedErrorCode, ArchivedProtoError, ErrorCode, ProtoError};
pub use frame::{
    access_payload, deserialize, encode_frame, DecodeError, Decoder, DecoderConfig, Endpoint,
    FrameKind, FramePayload, Inbound, Message, DEFAULT_MAX_FRAME_BYTES, FRAME_ALIGN,
    FRAME_HEADER_LEN, MAX_ARCHIVE_DEPTH,
};
pub use handshake::{
    answer_hello, Hello, HelloAck, HelloStatus, Role, ServerIdentity, HELLO_ACK_LEN, HELLO_LEN,
    PROTOCOL_VERSION,
};
pub use messages::*;
pub use route::{fnv1a64, group_for, groups_for_range, hash_tag, GroupSpan};
pub use validate::{validate_request, Limits, Route};
