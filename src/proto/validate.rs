//! Checks a validated (archived) client request against the limits and etcd's rules
//! before it is proposed, and says which group(s) it goes to.
//!
//! Order of checks: request size; then per operation key / value sizes, empty keys,
//! ranges and numeric domains (in the order the request lists them, depth first); then,
//! for a Txn, duplicate writes; then the group rule (one group per Txn). Works on the
//! archived request in place: nothing is deserialized.

use super::error::{ErrorCode, ProtoError};
use super::messages::{ArchivedOp, ArchivedRequest};
use super::route::{group_for, groups_for_range, GroupSpan};
use crate::mvcc::{
    ArchivedCompare, ArchivedCompareTarget, ArchivedDeleteRangeRequest, ArchivedPutRequest,
    ArchivedRangeRequest, ArchivedRequestOp, ArchivedTxnRequest,
};

/// Limits on client requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request payload (the rkyv archive) accepted.
    pub max_request_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Most compares, and most operations per branch, in one Txn (nested Txns each).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 3 << 19, // 1.5 MiB, etcd's default
            max_key_bytes: 32 << 10,
            max_value_bytes: 1 << 20,
            max_txn_ops: 128,
        }
    }
}

/// Where a valid request must be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// By the leader of this group.
    Group(u32),
    /// By every group (a range over several groups: scatter, then merge).
    AllGroups,
    /// By any one group (a Txn that touches no key: it only reads a revision).
    AnyGroup,
    /// By the receiving node itself (Status, Topology).
    Node,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

/// Validates `req` (whose archive is `payload_len` bytes) for a cluster of `shards`
/// shards per node and returns its route.
pub fn validate_request(
    req: &ArchivedRequest,
    payload_len: usize,
    limits: &Limits,
    shards: u32,
) -> Result<Route, ProtoError> {
    assert!(shards > 0, "validate_request: shard count must be positive");
    if payload_len > limits.max_request_bytes {
        return Err(err(
            ErrorCode::RequestTooLarge,
            format!(
                "request of {payload_len} bytes exceeds the limit of {}",
                limits.max_request_bytes
            ),
        ));
    }
    let span_route = |span: GroupSpan| match span {
        GroupSpan::One(g) => Route::Group(g),
        GroupSpan::All => Route::AllGroups,
    };
    match &req.op {
        ArchivedOp::Put(p) => {
            check_put(p, limits)?;
            Ok(Route::Group(group_for(p.key.as_slice(), shards)))
        }
        ArchivedOp::Range(r) => {
            check_range(r, limits)?;
            Ok(span_route(groups_for_range(
                r.key.as_slice(),
                r.range_end.as_slice(),
                shards,
            )))
        }
        ArchivedOp::DeleteRange(d) => {
            check_delete(d, limits)?;
            Ok(span_route(groups_for_range(
                d.key.as_slice(),
                d.range_end.as_slice(),
                shards,
            )))
        }
        ArchivedOp::Txn(t) => {
            check_txn(t, limits)?;
            let mut group = None;
            txn_group(t, shards, &mut group)?;
            Ok(group.map_or(Route::AnyGroup, Route::Group))
        }
        ArchivedOp::Compact { group, request } => {
            let (group, revision) = (group.to_native(), request.revision.to_native());
            if group >= shards {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("compact names group {group}, the cluster has {shards}"),
                ));
            }
            if revision <= 0 {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("compact revision {revision} must be positive"),
                ));
            }
            Ok(Route::Group(group))
        }
        ArchivedOp::Status | ArchivedOp::Topology => Ok(Route::Node),
        ArchivedOp::HashKv { group, revision } => {
            let (group, revision) = (group.to_native(), revision.to_native());
            if group >= shards {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("hash names group {group}, the cluster has {shards}"),
                ));
            }
            if revision < 0 {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!("hash revision {revision} is negative"),
                ));
            }
            Ok(Route::Group(group))
        }
        ArchivedOp::MemberList => Ok(Route::Node),
        ArchivedOp::MemberAdd(m) => {
            if m.name.is_empty()
                || m.name.len() > 255
                || m.name
                    .as_str()
                    .chars()
                    .any(|c| c.is_control() || c == ',' || c == '=')
            {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    "member add: the name must be 1..=255 bytes, without ',', '=' or \
                     control characters",
                ));
            }
            if m.host.as_str().parse::<std::net::IpAddr>().is_err() {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    format!(
                        "member add: host '{}' is not an IP address",
                        m.host.as_str()
                    ),
                ));
            }
            if m.peer_port_base.to_native() == 0 || m.client_port_base.to_native() == 0 {
                return Err(err(
                    ErrorCode::InvalidArgument,
                    "member add: ports must be non-zero",
                ));
            }
            Ok(Route::Group(0))
        }
        ArchivedOp::MemberPromote { node_id } | ArchivedOp::MemberRemove { node_id } => {
            if node_id.to_native() == 0 {
                return Err(err(ErrorCode::InvalidArgument, "member: node id 0"));
            }
            Ok(Route::Group(0))
        }
    }
}

fn check_key(key: &[u8], what: &str, limits: &Limits) -> Result<(), ProtoError> {
    if key.is_empty() {
        return Err(err(
            ErrorCode::EmptyKey,
            format!("{what}: key is not provided"),
        ));
    }
    if key.len() > limits.max_key_bytes {
        return Err(err(
            ErrorCode::RequestTooLarge,
            format!(
                "{what}: key of {} bytes exceeds the limit of {}",
                key.len(),
                limits.max_key_bytes
            ),
        ));
    }
    Ok(())
}

fn check_range_end(
    key: &[u8],
    range_end: &[u8],
    what: &str,
    limits: &Limits,
) -> Result<(), ProtoError> {
    if range_end.len() > limits.max_key_bytes {
        return Err(err(
            ErrorCode::RequestTooLarge,
            format!(
                "{what}: range_end of {} bytes exceeds the limit of {}",
                range_end.len(),
                limits.max_key_bytes
            ),
        ));
    }
    if !range_end.is_empty() && range_end != [0] && range_end < key {
        return Err(err(
            ErrorCode::InvalidRange,
            format!("{what}: range_end is before key"),
        ));
    }
    Ok(())
}

fn check_put(p: &ArchivedPutRequest, limits: &Limits) -> Result<(), ProtoError> {
    check_key(p.key.as_slice(), "put", limits)?;
    if p.value.len() > limits.max_value_bytes {
        return Err(err(
            ErrorCode::RequestTooLarge,
            format!(
                "put: value of {} bytes exceeds the limit of {}",
                p.value.len(),
                limits.max_value_bytes
            ),
        ));
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(err(
            ErrorCode::ValueProvided,
            "put: value is provided with ignore_value",
        ));
    }
    if p.ignore_lease && p.lease.to_native() != 0 {
        return Err(err(
            ErrorCode::LeaseProvided,
            "put: lease is provided with ignore_lease",
        ));
    }
    Ok(())
}

fn check_range(r: &ArchivedRangeRequest, limits: &Limits) -> Result<(), ProtoError> {
    check_key(r.key.as_slice(), "range", limits)?;
    check_range_end(r.key.as_slice(), r.range_end.as_slice(), "range", limits)?;
    for (name, v) in [
        ("limit", r.limit.to_native()),
        ("revision", r.revision.to_native()),
        ("min_mod_revision", r.min_mod_revision.to_native()),
        ("max_mod_revision", r.max_mod_revision.to_native()),
        ("min_create_revision", r.min_create_revision.to_native()),
        ("max_create_revision", r.max_create_revision.to_native()),
    ] {
        if v < 0 {
            return Err(err(
                ErrorCode::InvalidArgument,
                format!("range: {name} {v} is negative"),
            ));
        }
    }
    // Sort order and target are enums: an out-of-range value already failed archive
    // validation (InvalidMessage). A target without an order sorts ascending (etcd).
    Ok(())
}

fn check_delete(d: &ArchivedDeleteRangeRequest, limits: &Limits) -> Result<(), ProtoError> {
    check_key(d.key.as_slice(), "delete_range", limits)?;
    check_range_end(
        d.key.as_slice(),
        d.range_end.as_slice(),
        "delete_range",
        limits,
    )
}

fn check_compare(c: &ArchivedCompare, limits: &Limits) -> Result<(), ProtoError> {
    check_key(c.key.as_slice(), "txn compare", limits)?;
    check_range_end(
        c.key.as_slice(),
        c.range_end.as_slice(),
        "txn compare",
        limits,
    )?;
    if let ArchivedCompareTarget::Value(v) = &c.target {
        if v.len() > limits.max_value_bytes {
            return Err(err(
                ErrorCode::RequestTooLarge,
                format!(
                    "txn compare: value of {} bytes exceeds the limit of {}",
                    v.len(),
                    limits.max_value_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// Structural checks and duplicate writes of a Txn (recursively).
fn check_txn(t: &ArchivedTxnRequest, limits: &Limits) -> Result<(), ProtoError> {
    check_txn_shape(t, limits)?;
    txn_writes(t)?;
    Ok(())
}

fn check_txn_shape(t: &ArchivedTxnRequest, limits: &Limits) -> Result<(), ProtoError> {
    for (name, n) in [
        ("compares", t.compare.len()),
        ("success ops", t.success.len()),
        ("failure ops", t.failure.len()),
    ] {
        if n > limits.max_txn_ops {
            return Err(err(
                ErrorCode::TooManyOps,
                format!("txn has {n} {name}, the limit is {}", limits.max_txn_ops),
            ));
        }
    }
    for c in t.compare.iter() {
        check_compare(c, limits)?;
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        match op {
            ArchivedRequestOp::Range(r) => check_range(r, limits)?,
            ArchivedRequestOp::Put(p) => check_put(p, limits)?,
            ArchivedRequestOp::DeleteRange(d) => check_delete(d, limits)?,
            ArchivedRequestOp::Txn(n) => check_txn_shape(n, limits)?,
        }
    }
    Ok(())
}

/// The end of a half-open key interval.
#[derive(Clone, Copy, Debug)]
enum End<'a> {
    /// The interval is the single key (exclusive end = key + "\0").
    Point(&'a [u8]),
    Before(&'a [u8]),
    Unbounded,
}

/// A key interval [start, end) written by one operation.
#[derive(Clone, Copy, Debug)]
struct Write<'a> {
    start: &'a [u8],
    end: End<'a>,
}

/// Whether `key` is below `end` (i.e. inside an interval starting at or before it).
fn below(key: &[u8], end: End<'_>) -> bool {
    match end {
        End::Point(p) => key <= p,
        End::Before(e) => key < e,
        End::Unbounded => true,
    }
}

/// Orders interval ends.
fn end_cmp(a: End<'_>, b: End<'_>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (End::Unbounded, End::Unbounded) => Equal,
        (End::Unbounded, _) => Greater,
        (_, End::Unbounded) => Less,
        (End::Point(x), End::Point(y)) | (End::Before(x), End::Before(y)) => x.cmp(y),
        // Point(x) = Before(x + "\0"): Before(y) < Point(x) iff y <= x.
        (End::Point(x), End::Before(y)) => {
            if y <= x {
                Greater
            } else {
                Less
            }
        }
        (End::Before(y), End::Point(x)) => {
            if y <= x {
                Less
            } else {
                Greater
            }
        }
    }
}

fn delete_write<'a>(key: &'a [u8], range_end: &'a [u8]) -> Option<Write<'a>> {
    let end = match range_end {
        [] => End::Point(key),
        [0] => End::Unbounded,
        e if e <= key => return None, // empty interval: writes nothing
        e => End::Before(e),
    };
    Some(Write { start: key, end })
}

/// The writes a branch may make, after checking that no two of its operations write a
/// common key. The two branches of a nested Txn exclude each other, so they may overlap
/// each other, but neither may overlap a sibling of that Txn.
fn branch_writes<'a>(ops: &'a [ArchivedRequestOp]) -> Result<Vec<Write<'a>>, ProtoError> {
    let mut tagged: Vec<(usize, Write<'a>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            ArchivedRequestOp::Range(_) => {}
            ArchivedRequestOp::Put(p) => tagged.push((
                i,
                Write {
                    start: p.key.as_slice(),
                    end: End::Point(p.key.as_slice()),
                },
            )),
            ArchivedRequestOp::DeleteRange(d) => {
                if let Some(w) = delete_write(d.key.as_slice(), d.range_end.as_slice()) {
                    tagged.push((i, w));
                }
            }
            ArchivedRequestOp::Txn(t) => {
                for w in txn_writes(t)? {
                    tagged.push((i, w));
                }
            }
        }
    }
    tagged.sort_by(|a, b| a.1.start.cmp(b.1.start));
    // Sweep: an interval conflicts with an earlier one (start <= its start) of another
    // operation whose end lies beyond its start. Keep the furthest end, and the furthest
    // end among operations other than the furthest one's.
    let mut best: Option<(End<'a>, usize)> = None;
    let mut other: Option<End<'a>> = None;
    for &(op, w) in &tagged {
        let conflict = match best {
            Some((e, o)) if o != op => below(w.start, e),
            Some(_) => other.is_some_and(|e| below(w.start, e)),
            None => false,
        };
        if conflict {
            return Err(err(
                ErrorCode::DuplicateKey,
                format!(
                    "duplicate key given in txn request: operation {op} writes {:?}, which an earlier operation of the same branch also writes",
                    String::from_utf8_lossy(w.start)
                ),
            ));
        }
        match best {
            None => best = Some((w.end, op)),
            Some((e, o)) if o == op => {
                if end_cmp(w.end, e).is_gt() {
                    best = Some((w.end, op));
                }
            }
            Some((e, _)) => {
                if end_cmp(w.end, e).is_gt() {
                    best = Some((w.end, op));
                    other = Some(e);
                } else if other.is_none_or(|x| end_cmp(w.end, x).is_gt()) {
                    other = Some(w.end);
                }
            }
        }
    }
    Ok(tagged.into_iter().map(|(_, w)| w).collect())
}

fn txn_writes(t: &ArchivedTxnRequest) -> Result<Vec<Write<'_>>, ProtoError> {
    let mut w = branch_writes(t.success.as_slice())?;
    w.extend(branch_writes(t.failure.as_slice())?);
    Ok(w)
}

/// Records the group of one key range in `group`; refuses a second group.
fn note_group(
    key: &[u8],
    range_end: &[u8],
    shards: u32,
    group: &mut Option<u32>,
) -> Result<(), ProtoError> {
    let g = match groups_for_range(key, range_end, shards) {
        GroupSpan::One(g) => g,
        GroupSpan::All => {
            return Err(err(
                ErrorCode::CrossGroupTxn,
                format!(
                    "txn ranges over {:?}..{:?}, which spans every group; a txn must stay in one group (use a hash tag)",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(range_end)
                ),
            ))
        }
    };
    match *group {
        None => *group = Some(g),
        Some(prev) if prev != g => {
            return Err(err(
                ErrorCode::CrossGroupTxn,
                format!(
                    "txn touches groups {prev} and {g} (key {:?}); a txn must stay in one group (use a hash tag)",
                    String::from_utf8_lossy(key)
                ),
            ))
        }
        Some(_) => {}
    }
    Ok(())
}

fn txn_group(
    t: &ArchivedTxnRequest,
    shards: u32,
    group: &mut Option<u32>,
) -> Result<(), ProtoError> {
    for c in t.compare.iter() {
        note_group(c.key.as_slice(), c.range_end.as_slice(), shards, group)?;
    }
    for op in t.success.iter().chain(t.failure.iter()) {
        match op {
            ArchivedRequestOp::Range(r) => {
                note_group(r.key.as_slice(), r.range_end.as_slice(), shards, group)?
            }
            ArchivedRequestOp::Put(p) => note_group(p.key.as_slice(), &[], shards, group)?,
            ArchivedRequestOp::DeleteRange(d) => {
                note_group(d.key.as_slice(), d.range_end.as_slice(), shards, group)?
            }
            ArchivedRequestOp::Txn(n) => txn_group(n, shards, group)?,
        }
    }
    Ok(())
}
