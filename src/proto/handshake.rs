//! The connection handshake: fixed-layout little-endian records, deliberately not rkyv,
//! so that version negotiation never depends on the payload format it negotiates.
//!
//! The connecting side sends one [`Hello`] ([`HELLO_LEN`] bytes); the server answers one
//! [`HelloAck`] ([`HELLO_ACK_LEN`] bytes). When the ack's status is not `Ok` the server
//! closes the connection after sending it. Both records end with a crc32 over the bytes
//! before it. Layouts (offsets in bytes):
//!
//! ```text
//! Hello:    0 magic "CKV1" | 4 version u16 | 6 role u8 | 7 reserved u8 (0)
//!           8 cluster_id u64 (0 = any; peers must match) | 16 node_id u64 (0 for clients)
//!           24 reserved u32 (0) | 28 crc32 of [0,28) u32                     = 32 bytes
//! HelloAck: 0 magic "CKV1" | 4 version u16 (the server's) | 6 status u8 | 7 role u8 (echo)
//!           8 cluster_id u64 | 16 node_id u64 | 24 shard u32 | 28 shard_count u32
//!           32 reserved u32 (0) | 36 crc32 of [0,36) u32                     = 40 bytes
//! ```

use super::error::{ErrorCode, ProtoError};

/// First bytes of every handshake record.
pub const MAGIC: [u8; 4] = *b"CKV1";
/// The protocol version this code speaks (frames, kinds and payload types).
pub const PROTOCOL_VERSION: u16 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const ROLE_OR_STATUS_OFFSET: usize = VERSION_OFFSET + 2;
const BYTE7_OFFSET: usize = ROLE_OR_STATUS_OFFSET + 1;
const CLUSTER_ID_OFFSET: usize = BYTE7_OFFSET + 1;
const NODE_ID_OFFSET: usize = CLUSTER_ID_OFFSET + 8;
const HELLO_RESERVED_OFFSET: usize = NODE_ID_OFFSET + 8;
const HELLO_CRC_OFFSET: usize = HELLO_RESERVED_OFFSET + 4;
/// Size of a [`Hello`] on the wire.
pub const HELLO_LEN: usize = HELLO_CRC_OFFSET + 4;
const ACK_SHARD_OFFSET: usize = NODE_ID_OFFSET + 8;
const ACK_SHARD_COUNT_OFFSET: usize = ACK_SHARD_OFFSET + 4;
const ACK_RESERVED_OFFSET: usize = ACK_SHARD_COUNT_OFFSET + 4;
const ACK_CRC_OFFSET: usize = ACK_RESERVED_OFFSET + 4;
/// Size of a [`HelloAck`] on the wire.
pub const HELLO_ACK_LEN: usize = ACK_CRC_OFFSET + 4;

const _: () = assert!(HELLO_LEN == 32);
const _: () = assert!(HELLO_ACK_LEN == 40);
const _: () = assert!(CLUSTER_ID_OFFSET.is_multiple_of(8) && NODE_ID_OFFSET.is_multiple_of(8));

/// Who is connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    Client = 1,
    Peer = 2,
}

/// The connecting side's first record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    /// 0 = any (clients); a peer must name the cluster.
    pub cluster_id: u64,
    /// The sender's node id; 0 for clients.
    pub node_id: u64,
}

/// The handshake outcome the server reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HelloStatus {
    Ok = 0,
    UnsupportedVersion = 1,
    ClusterIdMismatch = 2,
    BadHello = 3,
}

/// The server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloAck {
    /// The server's protocol version.
    pub version: u16,
    pub status: HelloStatus,
    pub role: Role,
    pub cluster_id: u64,
    pub node_id: u64,
    /// The shard (= group) behind the port that was connected to.
    pub shard: u32,
    pub shard_count: u32,
}

/// What the server says about itself in every ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerIdentity {
    pub cluster_id: u64,
    pub node_id: u64,
    pub shard: u32,
    pub shard_count: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(what: &str, detail: String) -> ProtoError {
    ProtoError::new(ErrorCode::BadFrame, format!("handshake {what}: {detail}"))
}

fn check_common(b: &[u8], crc_at: usize, what: &str) -> Result<(), ProtoError> {
    if b[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Err(bad(
            what,
            format!("bad magic {:02x?} at offset 0", &b[0..4]),
        ));
    }
    let want = u32_at(b, crc_at);
    let got = crc32fast::hash(&b[..crc_at]);
    if want != got {
        return Err(ProtoError::new(
            ErrorCode::BadChecksum,
            format!("handshake {what}: crc32 at offset {crc_at} is {want:#010x}, bytes give {got:#010x}"),
        ));
    }
    Ok(())
}

impl Hello {
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&self.version.to_le_bytes());
        b[ROLE_OR_STATUS_OFFSET] = self.role as u8;
        b[CLUSTER_ID_OFFSET..CLUSTER_ID_OFFSET + 8].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[NODE_ID_OFFSET..NODE_ID_OFFSET + 8].copy_from_slice(&self.node_id.to_le_bytes());
        let crc = crc32fast::hash(&b[..HELLO_CRC_OFFSET]);
        b[HELLO_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a hello. Bad magic, reserved bytes, role → `BadFrame`; bad crc →
    /// `BadChecksum`. The version is not judged here (see [`answer_hello`]).
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, ProtoError> {
        check_common(b, HELLO_CRC_OFFSET, "hello")?;
        if b[BYTE7_OFFSET] != 0 || u32_at(b, HELLO_RESERVED_OFFSET) != 0 {
            return Err(bad("hello", "reserved bytes 7 or 24..28 not zero".into()));
        }
        let role = match b[ROLE_OR_STATUS_OFFSET] {
            1 => Role::Client,
            2 => Role::Peer,
            r => return Err(bad("hello", format!("unknown role {r} at offset 6"))),
        };
        Ok(Hello {
            version: u16_at(b, VERSION_OFFSET),
            role,
            cluster_id: u64_at(b, CLUSTER_ID_OFFSET),
            node_id: u64_at(b, NODE_ID_OFFSET),
        })
    }
}

impl HelloAck {
    pub fn encode(&self) -> [u8; HELLO_ACK_LEN] {
        let mut b = [0u8; HELLO_ACK_LEN];
        b[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(&MAGIC);
        b[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&self.version.to_le_bytes());
        b[ROLE_OR_STATUS_OFFSET] = self.status as u8;
        b[BYTE7_OFFSET] = self.role as u8;
        b[CLUSTER_ID_OFFSET..CLUSTER_ID_OFFSET + 8].copy_from_slice(&self.cluster_id.to_le_bytes());
        b[NODE_ID_OFFSET..NODE_ID_OFFSET + 8].copy_from_slice(&self.node_id.to_le_bytes());
        b[ACK_SHARD_OFFSET..ACK_SHARD_OFFSET + 4].copy_from_slice(&self.shard.to_le_bytes());
        b[ACK_SHARD_COUNT_OFFSET..ACK_SHARD_COUNT_OFFSET + 4]
            .copy_from_slice(&self.shard_count.to_le_bytes());
        let crc = crc32fast::hash(&b[..ACK_CRC_OFFSET]);
        b[ACK_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses an ack and turns a non-`Ok` status into the matching error
    /// (`UnsupportedVersion`, `ClusterIdMismatch`, `BadFrame`), naming the server's version.
    pub fn decode(b: &[u8; HELLO_ACK_LEN]) -> Result<HelloAck, ProtoError> {
        check_common(b, ACK_CRC_OFFSET, "ack")?;
        if u32_at(b, ACK_RESERVED_OFFSET) != 0 {
            return Err(bad("ack", "reserved bytes 32..36 not zero".into()));
        }
        let version = u16_at(b, VERSION_OFFSET);
        let status = match b[ROLE_OR_STATUS_OFFSET] {
            0 => HelloStatus::Ok,
            1 => HelloStatus::UnsupportedVersion,
            2 => HelloStatus::ClusterIdMismatch,
            3 => HelloStatus::BadHello,
            s => return Err(bad("ack", format!("unknown status {s} at offset 6"))),
        };
        let role = match b[BYTE7_OFFSET] {
            1 => Role::Client,
            2 => Role::Peer,
            r => return Err(bad("ack", format!("unknown role {r} at offset 7"))),
        };
        let cluster_id = u64_at(b, CLUSTER_ID_OFFSET);
        match status {
            HelloStatus::Ok => {}
            HelloStatus::UnsupportedVersion => {
                return Err(ProtoError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "server speaks protocol version {version}, we speak {PROTOCOL_VERSION}"
                    ),
                ))
            }
            HelloStatus::ClusterIdMismatch => {
                return Err(ProtoError::new(
                    ErrorCode::ClusterIdMismatch,
                    format!("server belongs to cluster {cluster_id:#x}"),
                ))
            }
            HelloStatus::BadHello => {
                return Err(bad("ack", "server could not parse our hello".into()))
            }
        }
        Ok(HelloAck {
            version,
            status,
            role,
            cluster_id,
            node_id: u64_at(b, NODE_ID_OFFSET),
            shard: u32_at(b, ACK_SHARD_OFFSET),
            shard_count: u32_at(b, ACK_SHARD_COUNT_OFFSET),
        })
    }
}

/// The server's side of the handshake: given the received bytes, the ack to send and
/// either the accepted hello or the error (after which the server sends the ack and
/// closes the connection).
pub fn answer_hello(
    bytes: &[u8; HELLO_LEN],
    me: &ServerIdentity,
) -> (HelloAck, Result<Hello, ProtoError>) {
    let mut ack = HelloAck {
        version: PROTOCOL_VERSION,
        status: HelloStatus::Ok,
        role: Role::Client,
        cluster_id: me.cluster_id,
        node_id: me.node_id,
        shard: me.shard,
        shard_count: me.shard_count,
    };
    let hello = match Hello::decode(bytes) {
        Ok(h) => h,
        Err(e) => {
            ack.status = HelloStatus::BadHello;
            return (ack, Err(e));
        }
    };
    ack.role = hello.role;
    if hello.version != PROTOCOL_VERSION {
        ack.status = HelloStatus::UnsupportedVersion;
        let e = ProtoError::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "hello asks for protocol version {}, this node speaks {PROTOCOL_VERSION}",
                hello.version
            ),
        );
        return (ack, Err(e));
    }
    let cluster_ok = match hello.role {
        Role::Client => hello.cluster_id == 0 || hello.cluster_id == me.cluster_id,
        Role::Peer => hello.cluster_id == me.cluster_id,
    };
    if !cluster_ok {
        ack.status = HelloStatus::ClusterIdMismatch;
        let e = ProtoError::new(
            ErrorCode::ClusterIdMismatch,
            format!(
                "hello from node {} names cluster {:#x}, this is cluster {:#x}",
                hello.node_id, hello.cluster_id, me.cluster_id
            ),
        );
        return (ack, Err(e));
    }
    (ack, Ok(hello))
}
