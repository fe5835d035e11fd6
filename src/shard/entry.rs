//! The payload of a Normal Raft entry: one client write, with the ids that route its
//! result back (`request_id`, to the wait table of the shard that proposed it) and that
//! deduplicate a retry (`session`, `seq`; 0 = no dedup).

use rkyv::{Archive, Deserialize, Serialize};

use crate::mvcc::WriteRequest;

#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ShardEntry {
    pub request_id: u64,
    pub session: u64,
    pub seq: u64,
    pub write: WriteRequest,
}

impl ShardEntry {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("serializing an entry into memory cannot fail")
            .into_vec()
    }

    /// Decodes and validates an entry. Entries may come from peers, so a bad one is an
    /// error, never a panic.
    pub fn decode(data: &[u8]) -> Result<ShardEntry, String> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
        aligned.extend_from_slice(data);
        rkyv::from_bytes::<ShardEntry, rkyv::rancor::Error>(&aligned)
            .map_err(|e| format!("invalid log entry payload: {e}"))
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
    }
}
