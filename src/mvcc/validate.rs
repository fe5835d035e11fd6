//! Request checks that need no state: the server runs them before proposing, and
//! [`super::Store::apply`] runs them again (an entry in the log may come from an older
//! or buggy leader).
//!
//! Rules (etcd's `checkRangeRequest`/`checkPutRequest`/`checkTxnRequest`/
//! `checkIntervals`, with corekv's additions):
//! - every key (request, compare, op) non-empty → else `EmptyKey`;
//! - `range_end` empty (single key), `[0]` (every key >= key), or `>= key` → else
//!   `InvalidRange` (`range_end == key` is an empty range, as in etcd);
//! - key longer than `key_bytes_max` or value longer than `value_bytes_max` →
//!   `RequestTooLarge`;
//! - Put: `ignore_value` with a value → `ValueProvided`; `ignore_lease` with a lease →
//!   `LeaseProvided`;
//! - Txn: `max(compares, success ops, failure ops)` > the budget → `TooManyOps`; the
//!   budget starts at [`TXN_OPS_MAX`] and a nested Txn gets what its parent left
//!   (etcd's rule, which also bounds nesting depth);
//! - Txn: a key put twice, or put and inside a deleted range, across one Txn and its
//!   nested Txns → `DuplicateKey`. As in etcd, the success and failure branches of a
//!   nested Txn may put the same key (only one runs), and overlapping deletes are
//!   allowed (the second deletes nothing).

use super::types::*;

/// Most operations in one Txn list (etcd's `--max-txn-ops` default).
pub const TXN_OPS_MAX: usize = 128;

/// Size limits of keys and values, fixed per store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// An idx-tree key is at most `2 * key_bytes_max + 18` bytes: keep that under the
    /// backend's maximum key size.
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 2048,
            value_bytes_max: 1536 * 1024,
        }
    }
}

fn check_key(key: &[u8], limits: &Limits) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > limits.key_bytes_max {
        return Err(KvError::RequestTooLarge);
    }
    Ok(())
}

fn check_span(key: &[u8], range_end: &[u8], limits: &Limits) -> Result<(), KvError> {
    check_key(key, limits)?;
    if range_end.len() > limits.key_bytes_max {
        return Err(KvError::RequestTooLarge);
    }
    if !range_end.is_empty() && range_end != [0] && range_end < key {
        return Err(KvError::InvalidRange);
    }
    Ok(())
}

pub fn validate_range(req: &RangeRequest, limits: &Limits) -> Result<(), KvError> {
    check_span(&req.key, &req.range_end, limits)
}

pub fn validate_put(req: &PutRequest, limits: &Limits) -> Result<(), KvError> {
    check_key(&req.key, limits)?;
    if req.value.len() > limits.value_bytes_max {
        return Err(KvError::RequestTooLarge);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

pub fn validate_delete(req: &DeleteRangeRequest, limits: &Limits) -> Result<(), KvError> {
    check_span(&req.key, &req.range_end, limits)
}

pub fn validate_txn(req: &TxnRequest, limits: &Limits) -> Result<(), KvError> {
    check_txn_ops(req, TXN_OPS_MAX, limits)?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

pub fn validate_write(req: &WriteRequest, limits: &Limits) -> Result<(), KvError> {
    match req {
        WriteRequest::Put(p) => validate_put(p, limits),
        WriteRequest::DeleteRange(d) => validate_delete(d, limits),
        WriteRequest::Txn(t) => validate_txn(t, limits),
        // Whether the revision is compacted or in the future depends on state.
        WriteRequest::Compact(_) => Ok(()),
    }
}

fn check_txn_ops(req: &TxnRequest, budget: usize, limits: &Limits) -> Result<(), KvError> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if opc > budget {
        return Err(KvError::TooManyOps);
    }
    for c in &req.compare {
        check_span(&c.key, &c.range_end, limits)?;
        if let CompareTarget::Value(v) = &c.target {
            if v.len() > limits.value_bytes_max {
                return Err(KvError::RequestTooLarge);
            }
        }
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => validate_range(r, limits)?,
            RequestOp::Put(p) => validate_put(p, limits)?,
            RequestOp::DeleteRange(d) => validate_delete(d, limits)?,
            RequestOp::Txn(t) => check_txn_ops(t, budget - opc, limits)?,
        }
    }
    Ok(())
}

/// A deleted span: `[start, end)`, `end == None` for "every key >= start", or the single
/// key `start` when `point`.
struct Del {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    point: bool,
}

impl Del {
    fn contains(&self, k: &[u8]) -> bool {
        if self.point {
            return k == self.start;
        }
        k >= &self.start[..] && self.end.as_ref().is_none_or(|e| k < &e[..])
    }
}

fn hit(dels: &[Del], k: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(k))
}

/// etcd's `checkIntervals`: returns the keys put and spans deleted by `reqs` and the
/// Txns nested in them.
fn check_intervals(reqs: &[RequestOp]) -> Result<(Vec<Vec<u8>>, Vec<Del>), KvError> {
    let mut dels: Vec<Del> = reqs
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Del {
                start: d.key.clone(),
                end: match &d.range_end[..] {
                    [] => None,
                    [0] => None,
                    e => Some(e.to_vec()),
                },
                point: d.range_end.is_empty(),
            }),
            _ => None,
        })
        .collect();
    let mut puts: Vec<Vec<u8>> = Vec::new();
    for op in reqs {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hit(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            // A key in both branches is fine: only one of them runs.
            let safe = puts_then.contains(&k);
            if (puts.contains(&k) && !safe) || hit(&dels, &k) {
                return Err(KvError::DuplicateKey);
            }
            if !safe {
                puts.push(k);
            }
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in reqs {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || hit(&dels, &p.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.push(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: k.into(),
            ..Default::default()
        })
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        })
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }
    fn check(t: TxnRequest) -> Result<(), KvError> {
        validate_txn(&t, &Limits::default())
    }

    #[test]
    fn simple_requests() {
        let l = Limits::default();
        let r = |k: &[u8], e: &[u8]| RangeRequest {
            key: k.to_vec(),
            range_end: e.to_vec(),
            ..Default::default()
        };
        assert_eq!(validate_range(&r(b"", b""), &l), Err(KvError::EmptyKey));
        assert_eq!(
            validate_range(&r(b"b", b"a"), &l),
            Err(KvError::InvalidRange)
        );
        assert_eq!(validate_range(&r(b"b", b"b"), &l), Ok(()));
        assert_eq!(validate_range(&r(b"b", b"\0"), &l), Ok(()));
        assert_eq!(validate_range(&r(b"\0", b"\0"), &l), Ok(()));
        assert_eq!(
            validate_range(&r(&[b'x'; 2049], b""), &l),
            Err(KvError::RequestTooLarge)
        );
        let p = |v: &str, lease: i64, iv: bool, il: bool| PutRequest {
            key: b"k".to_vec(),
            value: v.into(),
            lease,
            prev_kv: false,
            ignore_value: iv,
            ignore_lease: il,
        };
        assert_eq!(
            validate_put(&p("v", 0, true, false), &l),
            Err(KvError::ValueProvided)
        );
        assert_eq!(
            validate_put(&p("", 5, false, true), &l),
            Err(KvError::LeaseProvided)
        );
        assert_eq!(validate_put(&p("", 0, true, true), &l), Ok(()));
        let small = Limits {
            key_bytes_max: 4,
            value_bytes_max: 3,
        };
        assert_eq!(
            validate_put(&p("abcd", 0, false, false), &small),
            Err(KvError::RequestTooLarge)
        );
        assert_eq!(
            validate_delete(
                &DeleteRangeRequest {
                    key: vec![],
                    range_end: vec![],
                    prev_kv: false
                },
                &l
            ),
            Err(KvError::EmptyKey)
        );
    }

    #[test]
    fn txn_op_budget_is_etcds() {
        let many: Vec<RequestOp> = (0..128).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(check(txn(many.clone(), vec![])), Ok(()));
        let mut too_many = many.clone();
        too_many.push(put("x"));
        assert_eq!(check(txn(too_many, vec![])), Err(KvError::TooManyOps));
        // Parent uses 2, a nested txn may use 126 but not 127.
        let nested = |n: usize| {
            let ops: Vec<RequestOp> = (0..n).map(|i| put(&format!("n{i}"))).collect();
            txn(vec![put("a"), RequestOp::Txn(txn(ops, vec![]))], vec![])
        };
        assert_eq!(check(nested(126)), Ok(()));
        assert_eq!(check(nested(127)), Err(KvError::TooManyOps));
        let empty_cmp = TxnRequest {
            compare: vec![Compare {
                op: CompareOp::Equal,
                target: CompareTarget::Version(0),
                key: vec![],
                range_end: vec![],
            }],
            success: vec![],
            failure: vec![],
        };
        assert_eq!(check(empty_cmp), Err(KvError::EmptyKey));
    }

    #[test]
    fn duplicate_keys_follow_etcds_check_intervals() {
        assert_eq!(
            check(txn(vec![put("a"), put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // The two branches of one Txn are independent.
        assert_eq!(check(txn(vec![put("a")], vec![put("a")])), Ok(()));
        assert_eq!(
            check(txn(vec![put("b"), del("a", "c")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(check(txn(vec![put("c"), del("a", "c")], vec![])), Ok(()));
        assert_eq!(
            check(txn(vec![put("z"), del("a", "\0")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            check(txn(vec![del("a", "c"), del("b", "d")], vec![])),
            Ok(())
        );
        assert_eq!(
            check(txn(vec![put("a"), del("a", "")], vec![])),
            Err(KvError::DuplicateKey)
        );
        // Nested: a put in a nested Txn against a put or delete outside it.
        let inner = RequestOp::Txn(txn(vec![put("a")], vec![put("a")]));
        assert_eq!(check(txn(vec![inner.clone()], vec![])), Ok(()));
        assert_eq!(
            check(txn(vec![inner.clone(), put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            check(txn(vec![inner.clone(), del("a", "b")], vec![])),
            Err(KvError::DuplicateKey)
        );
        let inner_else_only = RequestOp::Txn(txn(vec![], vec![put("a")]));
        assert_eq!(
            check(txn(vec![inner_else_only, inner], vec![])),
            Err(KvError::DuplicateKey)
        );
        // A delete in a nested Txn against a put outside it.
        let inner_del = RequestOp::Txn(txn(vec![del("a", "b")], vec![]));
        assert_eq!(
            check(txn(vec![inner_del, put("a")], vec![])),
            Err(KvError::DuplicateKey)
        );
    }
}
