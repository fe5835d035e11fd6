//! Which Raft group owns a key: `group_for(key, shards) = fnv1a64(hash_tag(key)) % shards`.
//!
//! The hash is FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) over the
//! key's hash tag: the bytes between the first `{` and the next `}` after it when that is
//! non-empty, else the whole key (Redis Cluster's rule). This function decides where data
//! lives on disk: it must never change. Tests pin concrete values.

/// FNV-1a 64 offset basis.
pub const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
pub const FNV1A64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = FNV1A64_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV1A64_PRIME);
    }
    h
}

/// Position of the hash tag in `key`: `Some((open, close))` with `key[open] == b'{'`,
/// `key[close] == b'}'`, `close > open + 1`, when the key has a non-empty tag.
fn tag_bounds(key: &[u8]) -> Option<(usize, usize)> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = open + 1 + key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > open + 1).then_some((open, close))
}

/// The part of `key` that is hashed: the non-empty content of the first `{...}`, else
/// the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    match tag_bounds(key) {
        Some((open, close)) => &key[open + 1..close],
        None => key,
    }
}

/// The group (= shard index) that owns `key` in a cluster of `shards` shards per node.
///
/// # Panics
/// If `shards` is 0 (a configuration that cannot exist).
pub fn group_for(key: &[u8], shards: u32) -> u32 {
    assert!(shards > 0, "group_for: shard count must be positive");
    (fnv1a64(hash_tag(key)) % u64::from(shards)) as u32
}

/// The groups a key range touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSpan {
    /// Exactly one group holds every key of the range.
    One(u32),
    /// Keys of the range may live in any group.
    All,
}

impl GroupSpan {
    /// The groups, in order.
    pub fn groups(self, shards: u32) -> impl Iterator<Item = u32> {
        let r = match self {
            GroupSpan::One(g) => g..g + 1,
            GroupSpan::All => 0..shards,
        };
        r.into_iter()
    }
}

/// The groups holding keys of the range `key`/`range_end` (etcd conventions: empty
/// `range_end` = the single key `key`; `"\0"` = every key >= `key`; else [key,
/// range_end)).
///
/// A range generally touches every group. It touches one group only when it is a
/// single key, or when `key` and `range_end` share a prefix that contains a complete
/// non-empty hash tag: every key between them then starts with that prefix, so has that
/// tag. With one shard everything is group 0.
pub fn groups_for_range(key: &[u8], range_end: &[u8], shards: u32) -> GroupSpan {
    assert!(shards > 0, "groups_for_range: shard count must be positive");
    if shards == 1 {
        return GroupSpan::One(0);
    }
    if range_end.is_empty() {
        return GroupSpan::One(group_for(key, shards));
    }
    if range_end == [0] {
        return GroupSpan::All;
    }
    let common = key
        .iter()
        .zip(range_end)
        .take_while(|(a, b)| a == b)
        .count();
    // The tag of every key with prefix key[..common] is decided inside that prefix iff
    // the prefix itself contains a complete non-empty tag.
    match tag_bounds(&key[..common]) {
        Some(_) => GroupSpan::One(group_for(key, shards)),
        None => GroupSpan::All,
    }
}
