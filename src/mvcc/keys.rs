//! Byte layouts of everything the MVCC store keeps in the backend's trees.
//!
//! All integers are big-endian so that byte order is numeric order. Revisions are
//! `(main, sub)`: `main` is the store revision of a write transaction, `sub` the
//! position of the write inside it (0 for a plain Put).
//!
//! ```text
//! tree "rev"   key   main:8 sub:8                               (16 bytes)
//!              value kind:1 create:8 version:8 lease:8 klen:4 key:klen value:rest
//! tree "meta"  "format" -> FORMAT;  "state" -> applied:8 rev:8 compacted:8
//!              live_count:8 sessions:8 cursor_main:8 cursor_sub:8 (56 bytes)
//! ```
//!
//! The rev tree is the whole history; the per-key index is rebuilt from it in memory at
//! open ([`super::index`]). Format v1 (`corekv-mvcc-v1`) also kept that index on disk,
//! in trees `idx` (escaped key ‖ revision → kind, metadata) and `live` (key → newest
//! revision and metadata). Its rev and meta trees are the same as v2's, so a v1 store
//! opens as is: the two old trees are no longer read or written (their pages stay
//! allocated in the file), and the format record becomes v2 at the next commit.
//!
//! Kinds: 0 = put, 1 = tombstone (delete). A tombstone's create/version/lease are 0.
//! Bytes read back are checked (lengths, kinds) and a mismatch is a `KvError::Storage`
//! naming the tree and key, never a panic.

use super::types::KvError;

pub const TREE_REV: &str = "rev";
pub const TREE_META: &str = "meta";
pub const TREE_SESSION: &str = "sess";
pub const TREE_SESSION_AGE: &str = "sess_age";

pub const META_FORMAT_KEY: &[u8] = b"format";
pub const META_STATE_KEY: &[u8] = b"state";
/// Magic and format version of the MVCC layout.
pub const FORMAT: &[u8] = b"corekv-mvcc-v2";
/// The previous layout, still opened (see the module docs).
pub const FORMAT_V1: &[u8] = b"corekv-mvcc-v1";

pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;

pub const REV_KEY_LEN: usize = 16;
pub const STATE_LEN: usize = 8 * 7;
const REV_HEADER_LEN: usize = 1 + 8 * 3 + 4;

const _: () = assert!(REV_HEADER_LEN == 29);

/// A write's position in history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub fn encode(self) -> [u8; REV_KEY_LEN] {
        debug_assert!(
            self.main >= 0 && self.sub >= 0,
            "negative revision {self:?}"
        );
        let mut b = [0u8; REV_KEY_LEN];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }
    pub fn decode(b: &[u8], tree: &str) -> Result<Rev, KvError> {
        if b.len() != REV_KEY_LEN {
            return Err(corrupt(tree, b, "revision key is not 16 bytes"));
        }
        let main = u64::from_be_bytes(b[..8].try_into().unwrap());
        let sub = u64::from_be_bytes(b[8..].try_into().unwrap());
        if main > i64::MAX as u64 || sub > i64::MAX as u64 {
            return Err(corrupt(tree, b, "revision out of range"));
        }
        Ok(Rev {
            main: main as i64,
            sub: sub as i64,
        })
    }
}

/// The per-revision metadata of a key (everything in a KeyValue but key and value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

/// A live key's state: where its value lies and its metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveMeta {
    pub rev: Rev,
    pub meta: Meta,
}

pub(crate) fn corrupt(tree: &str, key: &[u8], what: &str) -> KvError {
    let shown: Vec<u8> = key.iter().take(64).copied().collect();
    KvError::Storage(format!(
        "corrupt mvcc record in tree {tree:?} at key {shown:02x?}: {what}"
    ))
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn get_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// A decoded rev-tree record.
pub struct RevRecord<'a> {
    pub kind: u8,
    pub meta: Meta,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

pub fn encode_rev_record(kind: u8, meta: Meta, key: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(
        kind == KIND_PUT || value.is_empty(),
        "tombstone with a value"
    );
    let mut out = Vec::with_capacity(REV_HEADER_LEN + key.len() + value.len());
    out.push(kind);
    put_i64(&mut out, meta.create);
    put_i64(&mut out, meta.version);
    put_i64(&mut out, meta.lease);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

pub fn decode_rev_record<'a>(k: &[u8], v: &'a [u8]) -> Result<RevRecord<'a>, KvError> {
    if v.len() < REV_HEADER_LEN || v[0] > KIND_TOMBSTONE {
        return Err(corrupt(
            TREE_REV,
            k,
            "rev record header too short or bad kind",
        ));
    }
    let klen = u32::from_be_bytes(v[25..29].try_into().unwrap()) as usize;
    if v.len() - REV_HEADER_LEN < klen {
        return Err(corrupt(TREE_REV, k, "rev record key length beyond record"));
    }
    Ok(RevRecord {
        kind: v[0],
        meta: Meta {
            create: get_i64(v, 1),
            version: get_i64(v, 9),
            lease: get_i64(v, 17),
        },
        key: &v[REV_HEADER_LEN..REV_HEADER_LEN + klen],
        value: &v[REV_HEADER_LEN + klen..],
    })
}

/// The O(1) state kept in memory and written with every apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct State {
    pub applied: u64,
    pub rev: i64,
    /// Logical compaction: reads below it fail.
    pub compacted: i64,
    pub live_count: i64,
    pub sessions: u64,
    /// Physical compaction: every rev-tree entry below the cursor has been processed.
    /// Work remains while `compact_cursor < (compacted + 1, 0)`.
    pub compact_cursor: Rev,
}

impl State {
    /// A fresh store: revision 1 as in etcd (the first write gets revision 2).
    pub const INITIAL: State = State {
        applied: 0,
        rev: 1,
        compacted: 0,
        live_count: 0,
        sessions: 0,
        compact_cursor: Rev { main: 1, sub: 0 },
    };
    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut b = [0u8; STATE_LEN];
        b[..8].copy_from_slice(&self.applied.to_be_bytes());
        b[8..16].copy_from_slice(&self.rev.to_be_bytes());
        b[16..24].copy_from_slice(&self.compacted.to_be_bytes());
        b[24..32].copy_from_slice(&self.live_count.to_be_bytes());
        b[32..40].copy_from_slice(&self.sessions.to_be_bytes());
        b[40..56].copy_from_slice(&self.compact_cursor.encode());
        b
    }
    pub fn decode(v: &[u8]) -> Result<State, KvError> {
        if v.len() != STATE_LEN {
            return Err(corrupt(TREE_META, META_STATE_KEY, "state is not 56 bytes"));
        }
        let s = State {
            applied: u64::from_be_bytes(v[..8].try_into().unwrap()),
            rev: get_i64(v, 8),
            compacted: get_i64(v, 16),
            live_count: get_i64(v, 24),
            sessions: u64::from_be_bytes(v[32..40].try_into().unwrap()),
            compact_cursor: Rev::decode(&v[40..56], TREE_META)?,
        };
        if s.rev < 1
            || s.compacted < 0
            || s.compacted > s.rev
            || s.live_count < 0
            || s.compact_cursor.main > s.compacted + 1
        {
            return Err(corrupt(TREE_META, META_STATE_KEY, "inconsistent state"));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let m = Meta {
            create: 3,
            version: 7,
            lease: 0,
        };
        let v = encode_rev_record(KIND_PUT, m, b"key", b"value");
        let r = decode_rev_record(b"k", &v).unwrap();
        assert_eq!(
            (r.kind, r.meta, r.key, r.value),
            (KIND_PUT, m, &b"key"[..], &b"value"[..])
        );
        assert!(decode_rev_record(b"k", &v[..10]).is_err());
        let mut bad = v.clone();
        bad[25..29].copy_from_slice(&1000u32.to_be_bytes());
        assert!(decode_rev_record(b"k", &bad).is_err());
        let s = State {
            applied: 5,
            rev: 9,
            compacted: 4,
            live_count: 2,
            sessions: 1,
            compact_cursor: Rev { main: 3, sub: 1 },
        };
        assert_eq!(State::decode(&s.encode()).unwrap(), s);
        let ahead = State {
            compact_cursor: Rev { main: 6, sub: 0 },
            ..s
        };
        assert!(State::decode(&ahead.encode()).is_err());
        let broken = State { compacted: 10, ..s };
        assert!(State::decode(&broken.encode()).is_err());
    }
}
