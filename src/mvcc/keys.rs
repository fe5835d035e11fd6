//! Byte layouts of everything the MVCC store keeps in the backend's trees.
//!
//! All integers are big-endian so that byte order is numeric order. Revisions are
//! `(main, sub)`: `main` is the store revision of a write transaction, `sub` the
//! position of the write inside it (0 for a plain Put).
//!
//! ```text
//! tree "rev"   key   main:8 sub:8                               (16 bytes)
//!              value kind:1 create:8 version:8 lease:8 klen:4 key:klen value:rest
//! tree "idx"   key   esc(user key) 00 01 main:8 sub:8
//!              value kind:1 create:8 version:8 lease:8          (25 bytes)
//! tree "live"  key   user key (raw)
//!              value main:8 sub:8 create:8 version:8 lease:8    (40 bytes)
//! tree "meta"  "format" -> FORMAT;  "state" -> applied:8 rev:8 compacted:8
//!              live_count:8 sessions:8 cursor_main:8 cursor_sub:8 (56 bytes)
//! ```
//!
//! `esc` doubles as an order-preserving, prefix-free encoding: each 0x00 byte of the user
//! key becomes `00 FF`, and `00 01` terminates it. For user keys `a < b`, every idx key
//! of `a` sorts before every idx key of `b` (a proper prefix ends with `00 01`, which is
//! below `00 FF` and below any non-zero byte), and `esc(k) 00 02` sorts after all idx keys
//! of `k` and before those of any longer key. Worst case `esc` doubles the key (all zero
//! bytes): an idx key is at most `2 * key_len + 18` bytes.
//!
//! Kinds: 0 = put, 1 = tombstone (delete). A tombstone's create/version/lease are 0.
//! Bytes read back are checked (lengths, kinds) and a mismatch is a `KvError::Storage`
//! naming the tree and key, never a panic.

use super::types::KvError;

pub const TREE_REV: &str = "rev";
pub const TREE_IDX: &str = "idx";
pub const TREE_LIVE: &str = "live";
pub const TREE_META: &str = "meta";
pub const TREE_SESSION: &str = "sess";
pub const TREE_SESSION_AGE: &str = "sess_age";

pub const META_FORMAT_KEY: &[u8] = b"format";
pub const META_STATE_KEY: &[u8] = b"state";
/// Magic and format version of the MVCC layout.
pub const FORMAT: &[u8] = b"corekv-mvcc-v1";

pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;

pub const REV_KEY_LEN: usize = 16;
const KEY_TERM: [u8; 2] = [0x00, 0x01];
const KEY_AFTER: [u8; 2] = [0x00, 0x02];
pub const IDX_SUFFIX_LEN: usize = KEY_TERM.len() + REV_KEY_LEN;
pub const IDX_VALUE_LEN: usize = 1 + 8 * 3;
pub const LIVE_VALUE_LEN: usize = 8 * 5;
pub const STATE_LEN: usize = 8 * 7;
const REV_HEADER_LEN: usize = 1 + 8 * 3 + 4;

const _: () = assert!(IDX_SUFFIX_LEN == 18);
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

/// `esc(key)` without the terminator.
pub fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &c in key {
        out.push(c);
        if c == 0 {
            out.push(0xFF);
        }
    }
}

/// `esc(key) 00 01`: the common prefix of every idx key of `key`.
pub fn idx_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + IDX_SUFFIX_LEN);
    escape_into(&mut out, key);
    out.extend_from_slice(&KEY_TERM);
    out
}

/// The lower bound of every idx key of user keys `>= key`.
pub fn idx_lower(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(&mut out, key);
    out
}

/// Given `idx_prefix(k)`, the smallest idx key after every idx key of `k`.
pub fn idx_after(prefix: &[u8]) -> Vec<u8> {
    debug_assert!(prefix.ends_with(&KEY_TERM));
    let mut out = prefix[..prefix.len() - 2].to_vec();
    out.extend_from_slice(&KEY_AFTER);
    out
}

pub fn idx_key(key: &[u8], rev: Rev) -> Vec<u8> {
    let mut out = idx_prefix(key);
    out.extend_from_slice(&rev.encode());
    out
}

/// Splits an idx key into (prefix incl. terminator, revision).
pub fn split_idx_key(k: &[u8]) -> Result<(&[u8], Rev), KvError> {
    if k.len() < IDX_SUFFIX_LEN || k[k.len() - IDX_SUFFIX_LEN..k.len() - REV_KEY_LEN] != KEY_TERM {
        return Err(corrupt(TREE_IDX, k, "idx key lacks its terminator"));
    }
    let (prefix, rev) = k.split_at(k.len() - REV_KEY_LEN);
    Ok((prefix, Rev::decode(rev, TREE_IDX)?))
}

/// The user key of an idx prefix (`esc(key) 00 01`).
pub fn unescape_prefix(prefix: &[u8]) -> Result<Vec<u8>, KvError> {
    let body = &prefix[..prefix.len() - KEY_TERM.len()];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        out.push(c);
        if c == 0 {
            if body.get(i + 1) != Some(&0xFF) {
                return Err(corrupt(TREE_IDX, prefix, "bad escape in idx key"));
            }
            i += 1;
        }
        i += 1;
    }
    Ok(out)
}

/// An idx entry's value: whether the revision is a tombstone, and its metadata.
pub fn encode_idx_value(kind: u8, meta: Meta) -> [u8; IDX_VALUE_LEN] {
    let mut b = [0u8; IDX_VALUE_LEN];
    b[0] = kind;
    b[1..9].copy_from_slice(&meta.create.to_be_bytes());
    b[9..17].copy_from_slice(&meta.version.to_be_bytes());
    b[17..25].copy_from_slice(&meta.lease.to_be_bytes());
    b
}

pub fn decode_idx_value(k: &[u8], v: &[u8]) -> Result<(u8, Meta), KvError> {
    if v.len() != IDX_VALUE_LEN || v[0] > KIND_TOMBSTONE {
        return Err(corrupt(TREE_IDX, k, "bad idx value"));
    }
    Ok((
        v[0],
        Meta {
            create: get_i64(v, 1),
            version: get_i64(v, 9),
            lease: get_i64(v, 17),
        },
    ))
}

pub fn encode_live(m: LiveMeta) -> [u8; LIVE_VALUE_LEN] {
    let mut b = [0u8; LIVE_VALUE_LEN];
    b[..16].copy_from_slice(&m.rev.encode());
    b[16..24].copy_from_slice(&m.meta.create.to_be_bytes());
    b[24..32].copy_from_slice(&m.meta.version.to_be_bytes());
    b[32..40].copy_from_slice(&m.meta.lease.to_be_bytes());
    b
}

pub fn decode_live(k: &[u8], v: &[u8]) -> Result<LiveMeta, KvError> {
    if v.len() != LIVE_VALUE_LEN {
        return Err(corrupt(TREE_LIVE, k, "live value is not 40 bytes"));
    }
    Ok(LiveMeta {
        rev: Rev::decode(&v[..16], TREE_LIVE)?,
        meta: Meta {
            create: get_i64(v, 16),
            version: get_i64(v, 24),
            lease: get_i64(v, 32),
        },
    })
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
    fn idx_keys_sort_by_user_key_then_revision() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"\x01", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        let revs = [
            Rev { main: 1, sub: 0 },
            Rev { main: 1, sub: 3 },
            Rev { main: 300, sub: 0 },
        ];
        let mut all = vec![];
        for k in &keys {
            for r in &revs {
                all.push(idx_key(k, *r));
            }
        }
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted, "encoding must preserve (key, rev) order");
        for (i, k) in keys.iter().enumerate() {
            let p = idx_prefix(k);
            let after = idx_after(&p);
            for (j, k2) in keys.iter().enumerate() {
                let e = idx_key(k2, Rev { main: 5, sub: 0 });
                assert_eq!(e < after, j <= i, "{k:?} {k2:?}");
                assert_eq!(e >= idx_lower(k), j >= i, "{k:?} {k2:?}");
            }
            let ik = idx_key(k, revs[1]);
            let (pre, r) = split_idx_key(&ik).unwrap();
            assert_eq!(pre, &p[..]);
            assert_eq!(r, revs[1]);
            assert_eq!(unescape_prefix(pre).unwrap(), k.to_vec());
        }
    }

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
        let lm = LiveMeta {
            rev: Rev { main: 9, sub: 2 },
            meta: m,
        };
        assert_eq!(decode_live(b"k", &encode_live(lm)).unwrap(), lm);
        assert!(decode_live(b"k", b"short").is_err());
        assert_eq!(
            decode_idx_value(b"k", &encode_idx_value(KIND_TOMBSTONE, Meta::default()))
                .unwrap()
                .0,
            KIND_TOMBSTONE
        );
        assert!(decode_idx_value(b"k", &[7u8; IDX_VALUE_LEN]).is_err());
        assert!(split_idx_key(b"abc").is_err());
        assert!(unescape_prefix(b"a\0b\0\x01").is_err());
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
