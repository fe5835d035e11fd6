//! The payload of a Normal Raft entry: one client write, with the ids that route its
//! result back (`request_id`, to the wait table of the shard that proposed it) and that
//! deduplicate a retry (`session`, `seq`; 0 = no dedup) — or, in group 0 only, a change
//! of the cluster's members ([`MemberEntry`]).
//!
//! Format: an 8-byte header (byte 0: [`TAG_WRITE`] or [`TAG_MEMBER`], bytes 1..8 zero)
//! and the rkyv archive of the payload. The tag is outside the archive, so no client
//! bytes (keys and values come first in an archive) can pass for another kind.

use rkyv::{Archive, Deserialize, Serialize};

use crate::mvcc::WriteRequest;
use crate::proto::MemberAddRequest;

/// Header tag of a client write.
pub const TAG_WRITE: u8 = 1;
/// Header tag of a member change.
pub const TAG_MEMBER: u8 = 2;
const HEADER_BYTES: usize = 8;

/// A change of the cluster's members, replicated through group 0's log.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Add(MemberAddRequest),
    Promote(u64),
    Remove(u64),
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    pub request_id: u64,
    pub change: MemberChange,
}

/// A decoded entry payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Write(ShardEntry),
    Member(MemberEntry),
}

fn with_header(tag: u8, archive: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + archive.len());
    out.push(tag);
    out.extend_from_slice(&[0; HEADER_BYTES - 1]);
    out.extend_from_slice(archive);
    out
}

impl MemberEntry {
    pub fn encode(&self) -> Vec<u8> {
        let a = rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serializing an entry into memory cannot fail");
        with_header(TAG_MEMBER, &a)
    }
}

/// Decodes and validates an entry payload of either kind (bad bytes are an error).
pub fn decode_payload(data: &[u8]) -> Result<Payload, String> {
    if data.len() < HEADER_BYTES || data[1..HEADER_BYTES].iter().any(|&b| b != 0) {
        return Err(format!(
            "log entry payload of {} bytes has no valid header",
            data.len()
        ));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(&data[HEADER_BYTES..]);
    match data[0] {
        TAG_WRITE => rkyv::from_bytes::<ShardEntry, rkyv::rancor::Error>(&aligned)
            .map(Payload::Write)
            .map_err(|e| format!("invalid write entry payload: {e}")),
        TAG_MEMBER => rkyv::from_bytes::<MemberEntry, rkyv::rancor::Error>(&aligned)
            .map(Payload::Member)
            .map_err(|e| format!("invalid member entry payload: {e}")),
        t => Err(format!("log entry payload tag {t} unknown")),
    }
}

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    pub request_id: u64,
    pub session: u64,
    pub seq: u64,
    pub write: WriteRequest,
}

impl ShardEntry {
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: a put's archive is its key and value plus fixed fields, and a
        // buffer that grows by doubling from empty costs several reallocations a write.
        let hint = match &self.write {
            WriteRequest::Put(p) => p.key.len() + p.value.len(),
            _ => 0,
        } + 256;
        let a = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(
            self,
            rkyv::util::AlignedVec::<16>::with_capacity(hint),
        )
        .expect("serializing an entry into memory cannot fail");
        with_header(TAG_WRITE, &a)
    }

    /// Decodes and validates a write entry. Entries may come from peers, so a bad one
    /// is an error, never a panic.
    pub fn decode(data: &[u8]) -> Result<ShardEntry, String> {
        match decode_payload(data)? {
            Payload::Write(w) => Ok(w),
            Payload::Member(_) => Err("a member entry, not a write".into()),
        }
    }

    /// The dedup key, if the client asked for one.
    pub fn dedup(&self) -> Option<(u64, u64)> {
        (self.session != 0).then_some((self.session, self.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::PutRequest;

    #[test]
    fn round_trip_and_garbage_is_an_error() {
        let e = ShardEntry {
            request_id: 42,
            session: 7,
            seq: 3,
            write: WriteRequest::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
        };
        let bytes = e.encode();
        assert_eq!(ShardEntry::decode(&bytes).unwrap(), e);
        assert_eq!(e.dedup(), Some((7, 3)));
        assert!(ShardEntry::decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(ShardEntry::decode(&[0xff; 64]).is_err());
        let m = MemberEntry {
            request_id: 9,
            change: MemberChange::Remove(3),
        };
        assert_eq!(
            decode_payload(&m.encode()).unwrap(),
            Payload::Member(m.clone())
        );
        assert!(ShardEntry::decode(&m.encode()).is_err());
        let mut bad = bytes.clone();
        bad[0] = 7;
        assert!(decode_payload(&bad).is_err());
    }
}
