//! Table tests of the store against etcd's documented behaviour, and the model-based
//! random test (in `model_test`).

mod model_test;

use super::keys::*;
use super::*;
use futures_lite::future::block_on;

/// A store plus the next log index to apply at.
pub(super) struct H {
    pub s: Store<MemBackend>,
    pub index: u64,
}

impl H {
    pub fn new() -> H {
        H {
            s: Store::open(MemBackend::default()).unwrap(),
            index: 0,
        }
    }
    pub fn apply(&mut self, req: WriteRequest) -> ApplyOutcome {
        self.index += 1;
        self.s.apply(self.index, &req, None).unwrap()
    }
    pub fn put_req(&mut self, p: PutRequest) -> Result<(i64, PutResponse), KvError> {
        let o = self.apply(WriteRequest::Put(p));
        o.response.map(|r| match r {
            WriteResponse::Put(p) => (o.revision, p),
            r => panic!("{r:?}"),
        })
    }
    pub fn put(&mut self, k: &str, v: &str) -> i64 {
        self.put_req(put(k, v)).unwrap().0
    }
    pub fn del(&mut self, k: &str, end: &str) -> (i64, DeleteRangeResponse) {
        let o = self.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: true,
        }));
        match o.response.unwrap() {
            WriteResponse::DeleteRange(d) => (o.revision, d),
            r => panic!("{r:?}"),
        }
    }
    pub fn txn(&mut self, t: TxnRequest) -> Result<(i64, TxnResponse), KvError> {
        let o = self.apply(WriteRequest::Txn(t));
        o.response.map(|r| match r {
            WriteResponse::Txn(t) => (o.revision, t),
            r => panic!("{r:?}"),
        })
    }
    pub fn compact(&mut self, rev: i64) -> Result<(), KvError> {
        self.apply(WriteRequest::Compact(CompactRequest { revision: rev }))
            .response
            .map(|_| ())
    }
    pub fn range(&self, r: RangeRequest) -> Result<RangeResponse, KvError> {
        self.s.range(&r).map(|(_, r)| r)
    }
    pub fn get(&self, k: &str) -> Option<KeyValue> {
        let mut r = self.range(rr(k, "")).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.pop()
    }
    pub fn keys(&self, r: RangeRequest) -> Vec<String> {
        self.range(r)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| String::from_utf8(kv.key).unwrap())
            .collect()
    }
}

pub(super) fn put(k: &str, v: &str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

pub(super) fn rr(k: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn cmp(k: &str, op: CompareOp, target: CompareTarget) -> Compare {
    Compare {
        op,
        target,
        key: k.into(),
        range_end: vec![],
    }
}

fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

#[test]
fn revisions_and_versions_across_delete_and_recreate() {
    let mut h = H::new();
    assert_eq!(h.s.revision(), 1, "a fresh store is at revision 1, as etcd");
    assert_eq!(h.put("foo", "a"), 2);
    assert_eq!(h.put("foo", "b"), 3);
    let kv = h.get("foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"b");
    let (rev, d) = h.del("foo", "");
    assert_eq!((rev, d.deleted), (4, 1));
    assert_eq!(d.prev_kvs[0].value, b"b");
    assert!(h.get("foo").is_none());
    // A delete of nothing does not consume a revision.
    let (rev, d) = h.del("foo", "");
    assert_eq!((rev, d.deleted), (4, 0));
    assert_eq!(h.put("foo", "c"), 5);
    let kv = h.get("foo").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // History is still readable.
    let at = |rev| {
        let mut r = rr("foo", "");
        r.revision = rev;
        h.range(r).unwrap().kvs
    };
    assert_eq!(at(1), vec![]);
    assert_eq!(at(3)[0].value, b"b");
    assert_eq!((at(3)[0].version, at(3)[0].create_revision), (2, 2));
    assert_eq!(at(4), vec![]);
    assert_eq!(at(5)[0].value, b"c");
    assert_eq!(h.s.key_count(), 1);
}

fn seeded() -> H {
    // rev 2..=7: a=1 b=2 c=3 d=4 (then a rewritten twice) : versions a=3
    let mut h = H::new();
    h.put("a", "3");
    h.put("b", "2");
    h.put("c", "1");
    h.put("d", "0");
    h.put("a", "1");
    h.put("a", "9");
    h.put("e\0x", "5");
    h
}

#[test]
fn range_key_selection() {
    let h = seeded();
    assert_eq!(h.keys(rr("a", "")), ["a"]);
    assert_eq!(h.keys(rr("a", "c")), ["a", "b"]);
    assert_eq!(h.keys(rr("b", "\0")), ["b", "c", "d", "e\0x"]);
    assert_eq!(h.keys(rr("\0", "\0")), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(h.keys(rr("e", "f")), ["e\0x"]);
    assert_eq!(h.keys(rr("e\0", "e\0y")), ["e\0x"]);
    assert_eq!(
        h.keys(rr("b", "b")),
        Vec::<String>::new(),
        "range_end == key is empty"
    );
    assert_eq!(h.keys(rr("zz", "")), Vec::<String>::new());
    assert_eq!(h.range(rr("b", "a")), Err(KvError::InvalidRange));
    assert_eq!(h.range(rr("", "")), Err(KvError::EmptyKey));
}

#[test]
fn range_limit_more_count_and_count_only() {
    let h = seeded();
    let mut r = rr("a", "\0");
    r.limit = 2;
    let resp = h.range(r.clone()).unwrap();
    assert_eq!(resp.kvs.len(), 2);
    assert!(resp.more);
    assert_eq!(resp.count, 5);
    r.limit = 5;
    let resp = h.range(r.clone()).unwrap();
    assert!(!resp.more);
    assert_eq!(resp.count, 5);
    r.limit = -3;
    assert_eq!(
        h.range(r.clone()).unwrap().kvs.len(),
        5,
        "limit <= 0 = no limit"
    );
    let mut c = rr("b", "d");
    c.count_only = true;
    assert_eq!(
        h.range(c).unwrap(),
        RangeResponse {
            kvs: vec![],
            more: false,
            count: 2
        }
    );
    let mut all = rr("\0", "\0");
    all.count_only = true;
    assert_eq!(h.range(all.clone()).unwrap().count, 5, "kept count");
    all.revision = 4;
    assert_eq!(h.range(all).unwrap().count, 3, "counted at a past revision");
    let mut k = rr("a", "c");
    k.keys_only = true;
    let resp = h.range(k).unwrap();
    assert!(resp
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version > 0));
}

#[test]
fn range_sort_orders_and_targets() {
    let h = seeded();
    let sorted = |order, target, limit| {
        let mut r = rr("a", "\0");
        r.sort_order = order;
        r.sort_target = target;
        r.limit = limit;
        h.keys(r)
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key, 0), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(sorted(Ascend, Key, 0), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(sorted(Descend, Key, 0), ["e\0x", "d", "c", "b", "a"]);
    assert_eq!(sorted(Descend, Key, 2), ["e\0x", "d"]);
    // Non-key target with order None sorts ascending (etcd).
    assert_eq!(sorted(None, Value, 0), ["d", "c", "b", "e\0x", "a"]);
    assert_eq!(sorted(Descend, Value, 2), ["a", "e\0x"]);
    // Version: a=3, the rest 1: ties keep key order in both directions.
    assert_eq!(sorted(Ascend, Version, 0), ["b", "c", "d", "e\0x", "a"]);
    assert_eq!(sorted(Descend, Version, 0), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(sorted(Ascend, Create, 0), ["a", "b", "c", "d", "e\0x"]);
    assert_eq!(sorted(Descend, Create, 0), ["e\0x", "d", "c", "b", "a"]);
    assert_eq!(sorted(Descend, Mod, 3), ["e\0x", "a", "d"]);
    let mut r = rr("a", "\0");
    r.sort_order = Descend;
    r.limit = 2;
    r.revision = 4;
    assert_eq!(
        h.keys(r.clone()),
        ["c", "b"],
        "descending at a past revision"
    );
    assert!(h.range(r).unwrap().more);
}

#[test]
fn range_revision_filters() {
    let h = seeded();
    let f = |min_mod, max_mod, min_create, max_create| {
        let mut r = rr("a", "\0");
        r.min_mod_revision = min_mod;
        r.max_mod_revision = max_mod;
        r.min_create_revision = min_create;
        r.max_create_revision = max_create;
        r.limit = 2;
        let resp = h.range(r).unwrap();
        assert_eq!(resp.count, 5, "count ignores filters (etcd)");
        let keys: Vec<String> = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect();
        (keys, resp.more)
    };
    // mod: a=7 b=3 c=4 d=5 e=8; create: a=2 b=3 c=4 d=5 e=8
    assert_eq!(f(5, 0, 0, 0), (vec!["a".into(), "d".into()], true));
    assert_eq!(f(0, 4, 0, 0), (vec!["b".into(), "c".into()], false));
    assert_eq!(f(0, 0, 4, 0), (vec!["c".into(), "d".into()], true));
    assert_eq!(f(0, 0, 0, 3), (vec!["a".into(), "b".into()], false));
    assert_eq!(f(4, 7, 3, 4), (vec!["c".into()], false));
}

#[test]
fn range_history_future_and_compacted() {
    let mut h = seeded();
    let at = |h: &H, rev| {
        let mut r = rr("a", "\0");
        r.revision = rev;
        h.range(r).map(|r| {
            r.kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        at(&h, 3).unwrap(),
        vec![
            (b"a".to_vec(), b"3".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
    assert_eq!(at(&h, 9), Err(KvError::FutureRevision(8)));
    h.compact(4).unwrap();
    assert_eq!(at(&h, 3), Err(KvError::Compacted(4)));
    assert_eq!(
        at(&h, 4).unwrap().len(),
        3,
        "reading at the compacted revision is allowed"
    );
    assert_eq!(at(&h, 6).unwrap()[0], (b"a".to_vec(), b"1".to_vec()));
    let (rev, _) = h.s.range(&rr("a", "")).unwrap();
    assert_eq!(rev, 8, "header revision is the current one");
}

#[test]
fn put_options() {
    let mut h = H::new();
    let mut p = put("k", "");
    p.ignore_value = true;
    assert_eq!(h.put_req(p.clone()), Err(KvError::KeyNotFound));
    let mut l = put("k", "");
    l.ignore_lease = true;
    assert_eq!(h.put_req(l.clone()), Err(KvError::KeyNotFound));
    assert_eq!(h.s.revision(), 1, "failed puts consume no revision");
    let mut with_lease = put("k", "v");
    with_lease.lease = 7;
    assert_eq!(h.put_req(with_lease), Err(KvError::LeaseNotFound(7)));
    let mut both = put("k", "v");
    both.ignore_value = true;
    assert_eq!(h.put_req(both), Err(KvError::ValueProvided));
    let mut both = put("k", "");
    both.ignore_lease = true;
    both.lease = 3;
    assert_eq!(h.put_req(both), Err(KvError::LeaseProvided));
    assert_eq!(h.put_req(put("", "v")), Err(KvError::EmptyKey));
    assert_eq!(h.s.revision(), 1);
    assert_eq!(h.s.applied_index(), 6, "failed entries are still applied");

    let mut pk = put("k", "v1");
    pk.prev_kv = true;
    assert_eq!(
        h.put_req(pk.clone()).unwrap(),
        (2, PutResponse { prev_kv: None })
    );
    pk.value = b"v2".to_vec();
    let (rev, resp) = h.put_req(pk).unwrap();
    assert_eq!(rev, 3);
    let prev = resp.prev_kv.unwrap();
    assert_eq!(
        (prev.value, prev.version, prev.mod_revision),
        (b"v1".to_vec(), 1, 2)
    );
    let (rev, resp) = h.put_req(p).unwrap();
    assert_eq!((rev, resp.prev_kv), (4, None));
    let kv = h.get("k").unwrap();
    assert_eq!(
        (kv.value, kv.version),
        (b"v2".to_vec(), 3),
        "ignore_value keeps the value"
    );
    let mut l2 = l.clone();
    l2.value = b"v3".to_vec();
    h.put_req(l2).unwrap();
    assert_eq!(h.get("k").unwrap().value, b"v3");
}

#[test]
fn delete_ranges_with_prev_kv() {
    let mut h = seeded();
    let (rev, d) = h.del("b", "d");
    assert_eq!((rev, d.deleted), (9, 2));
    assert_eq!(
        d.prev_kvs
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>(),
        [b"2".to_vec(), b"1".to_vec()]
    );
    let ev = h.s.changes_since(9, 100).unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 9));
    let (_, d) = h.del("\0", "\0");
    assert_eq!(d.deleted, 3);
    assert_eq!(h.s.key_count(), 0);
    assert_eq!(h.range(rr("\0", "\0")).unwrap().count, 0);
}

fn txn_compare_holds(h: &mut H, c: Compare) -> bool {
    let t = txn(vec![c], vec![], vec![]);
    h.txn(t).unwrap().1.succeeded
}

#[test]
fn txn_compares_every_target_and_op() {
    let mut h = seeded(); // a: create 2, mod 7, version 3, value "9"
    use CompareOp::*;
    use CompareTarget as T;
    let table: Vec<(CompareTarget, [bool; 4])> = vec![
        // [Equal, NotEqual, Greater, Less] against a's field
        (T::Version(3), [true, false, false, false]),
        (T::Version(2), [false, true, true, false]),
        (T::Create(2), [true, false, false, false]),
        (T::Create(5), [false, true, false, true]),
        (T::Mod(7), [true, false, false, false]),
        (T::Mod(1), [false, true, true, false]),
        (T::Value(b"9".to_vec()), [true, false, false, false]),
        (T::Value(b"10".to_vec()), [false, true, true, false]),
        (T::Value(b"99".to_vec()), [false, true, false, true]),
        (T::Lease(0), [true, false, false, false]),
        (T::Lease(1), [false, true, false, true]),
    ];
    for (target, want) in table {
        for (op, w) in [Equal, NotEqual, Greater, Less].into_iter().zip(want) {
            assert_eq!(
                txn_compare_holds(&mut h, cmp("a", op, target.clone())),
                w,
                "{op:?} {target:?}"
            );
        }
    }
    // Missing key: compares a zero KeyValue, but a Value compare always fails.
    assert!(txn_compare_holds(&mut h, cmp("nope", Equal, T::Version(0))));
    assert!(txn_compare_holds(&mut h, cmp("nope", Equal, T::Create(0))));
    assert!(!txn_compare_holds(
        &mut h,
        cmp("nope", Equal, T::Value(vec![]))
    ));
    assert!(!txn_compare_holds(
        &mut h,
        cmp("nope", NotEqual, T::Value(b"x".to_vec()))
    ));
    // Ranged: every key in the range must satisfy it.
    let ranged = |op, target, end: &str| Compare {
        op,
        target,
        key: b"b".to_vec(),
        range_end: end.into(),
    };
    assert!(txn_compare_holds(&mut h, ranged(Equal, T::Version(1), "e")));
    assert!(
        !txn_compare_holds(&mut h, ranged(Less, T::Mod(5), "e")),
        "d has mod 5"
    );
    assert!(txn_compare_holds(&mut h, ranged(Less, T::Mod(6), "e")));
    assert!(txn_compare_holds(
        &mut h,
        ranged(Greater, T::Create(2), "\0")
    ));
    assert!(
        txn_compare_holds(&mut h, ranged(Equal, T::Version(0), "b")),
        "empty range"
    );
    // Several compares: all must hold.
    let t = txn(
        vec![
            cmp("a", Equal, T::Version(3)),
            cmp("b", Equal, T::Version(2)),
        ],
        vec![],
        vec![],
    );
    assert!(!h.txn(t).unwrap().1.succeeded);
    assert_eq!(h.s.revision(), 8, "read-only txns consume no revision");
}

#[test]
fn txn_branches_subrevisions_and_nesting() {
    let mut h = seeded();
    use CompareOp::*;
    let t = txn(
        vec![cmp("a", Equal, CompareTarget::Value(b"9".to_vec()))],
        vec![
            RequestOp::Put(put("x", "1")),
            RequestOp::Range(rr("x", "")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                range_end: b"d".to_vec(),
                prev_kv: false,
            }),
            RequestOp::Txn(txn(
                // Evaluated before the Txn: x does not exist yet.
                vec![cmp("x", Equal, CompareTarget::Version(0))],
                vec![RequestOp::Put(put("y", "nested"))],
                vec![RequestOp::Put(put("z", "nested"))],
            )),
            RequestOp::Range(RangeRequest {
                revision: 8,
                ..rr("x", "z")
            }),
        ],
        vec![RequestOp::Put(put("never", "1"))],
    );
    let (rev, resp) = h.txn(t).unwrap();
    assert_eq!(rev, 9);
    assert!(resp.succeeded);
    let ResponseOp::Range(r) = &resp.responses[1] else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, b"1", "a txn reads its own writes");
    let ResponseOp::DeleteRange(d) = &resp.responses[2] else {
        panic!()
    };
    assert_eq!(d.deleted, 2);
    let ResponseOp::Txn(n) = &resp.responses[3] else {
        panic!()
    };
    assert!(n.succeeded);
    let ResponseOp::Range(r) = &resp.responses[4] else {
        panic!()
    };
    assert_eq!(r.kvs.len(), 0, "revision 8 is before the txn's writes");
    assert!(h.get("never").is_none() && h.get("z").is_none());
    // One revision, sub-revisions in execution order.
    let ev = h.s.changes_since(9, 1).unwrap();
    let got: Vec<(EventKind, Vec<u8>)> = ev.iter().map(|e| (e.kind, e.kv.key.clone())).collect();
    assert_eq!(
        got,
        vec![
            (EventKind::Put, b"x".to_vec()),
            (EventKind::Delete, b"b".to_vec()),
            (EventKind::Delete, b"c".to_vec()),
            (EventKind::Put, b"y".to_vec()),
        ],
        "limit 1 still returns the whole revision"
    );
    assert!(ev.iter().all(|e| e.kv.mod_revision == 9));
    assert_eq!(h.get("y").unwrap().create_revision, 9);
    // Failure branch.
    let t = txn(
        vec![cmp("a", Equal, CompareTarget::Value(b"0".to_vec()))],
        vec![],
        vec![RequestOp::Put(put("f", "1"))],
    );
    let (rev, resp) = h.txn(t).unwrap();
    assert!(!resp.succeeded);
    assert_eq!((rev, h.get("f").unwrap().mod_revision), (10, 10));
}

#[test]
fn txn_errors_apply_nothing() {
    let mut h = seeded();
    let before = h.s.hash(0).unwrap();
    let mut leased = put("q", "1");
    leased.lease = 5;
    let mut ignore = put("missing", "");
    ignore.ignore_value = true;
    let cases = [
        (
            txn(
                vec![],
                vec![RequestOp::Put(put("p", "1")), RequestOp::Put(leased)],
                vec![],
            ),
            KvError::LeaseNotFound(5),
        ),
        (
            txn(
                vec![],
                vec![RequestOp::Put(put("p", "1")), RequestOp::Put(ignore)],
                vec![],
            ),
            KvError::KeyNotFound,
        ),
        (
            txn(
                vec![],
                vec![
                    RequestOp::Put(put("p", "1")),
                    RequestOp::Range(RangeRequest {
                        revision: 99,
                        ..rr("a", "")
                    }),
                ],
                vec![],
            ),
            KvError::FutureRevision(8),
        ),
        (
            txn(
                vec![],
                vec![RequestOp::Put(put("p", "1")), RequestOp::Put(put("p", "2"))],
                vec![],
            ),
            KvError::DuplicateKey,
        ),
        (
            txn(
                vec![],
                (0..129)
                    .map(|i| RequestOp::Put(put(&format!("k{i}"), "")))
                    .collect(),
                vec![],
            ),
            KvError::TooManyOps,
        ),
    ];
    for (t, err) in cases {
        assert_eq!(h.txn(t), Err(err.clone()));
        assert_eq!(h.s.revision(), 8, "{err:?}");
        assert_eq!(h.s.hash(0).unwrap(), before);
    }
    h.compact(5).unwrap();
    let t = txn(
        vec![],
        vec![
            RequestOp::Put(put("p", "1")),
            RequestOp::Range(RangeRequest {
                revision: 3,
                ..rr("a", "")
            }),
        ],
        vec![],
    );
    assert_eq!(h.txn(t), Err(KvError::Compacted(5)));
    assert!(h.get("p").is_none());
}

/// Entries in the rev tree at or below `rev` (what compaction must have removed).
fn rev_entries_upto(h: &H, rev: i64) -> usize {
    let mut n = 0;
    let hi = Rev {
        main: rev + 1,
        sub: 0,
    }
    .encode();
    h.s.backend()
        .scan(TREE_REV, b"", Some(&hi), false, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

fn tree_len(h: &H, tree: &str) -> usize {
    let mut n = 0;
    h.s.backend()
        .scan(tree, b"", None, false, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
    n
}

#[test]
fn compaction_edge_cases() {
    let mut h = H::new();
    assert_eq!(h.compact(0), Err(KvError::Compacted(0)));
    assert_eq!(h.compact(2), Err(KvError::FutureRevision(1)));
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    h.del("b", ""); // 5
    h.put("c", "1"); // 6
    h.del("c", ""); // 7
    h.put("c", "2"); // 8
    assert_eq!(h.compact(5), Ok(()));
    // Kept: a@3 (newest <= 5). Removed: a@2, b@4, b's tombstone @5.
    assert_eq!(rev_entries_upto(&h, 5), 1);
    assert_eq!(h.s.index().len(), 1 + 3);
    assert_eq!(h.compact(5), Err(KvError::Compacted(5)));
    assert_eq!(h.compact(4), Err(KvError::Compacted(5)));
    assert_eq!(h.compact(9), Err(KvError::FutureRevision(8)));
    assert_eq!(h.s.changes_since(5, 10), Err(KvError::Compacted(5)));
    assert_eq!(h.s.changes_since(6, 10).unwrap().len(), 3);
    let mut r = rr("\0", "\0");
    r.revision = 5;
    assert_eq!(h.keys(r.clone()), ["a"]);
    r.revision = 7;
    assert_eq!(h.keys(r), ["a"]);
    // Compact at the current revision: the tombstone of c@7 goes, c@8 stays.
    assert_eq!(h.compact(8), Ok(()));
    assert_eq!(rev_entries_upto(&h, 8), 2);
    assert_eq!(h.s.index().len(), 2);
    let a = h.get("a").unwrap();
    assert_eq!(
        (a.version, a.create_revision, a.mod_revision),
        (2, 2, 3),
        "metadata survives compaction"
    );
    assert_eq!(h.s.revision(), 8, "compaction is not a revision");
    // Deleting after compaction, then compacting again, removes the key entirely.
    h.del("a", ""); // 9
    h.compact(9).unwrap();
    assert_eq!(tree_len(&h, TREE_REV), 1);
    assert_eq!(h.keys(rr("\0", "\0")), ["c"]);
}

#[test]
fn compaction_is_sliced_and_survives_a_crash_midway() {
    let config = StoreConfig {
        compact_inline_revisions: 100,
        ..Default::default()
    };
    let mut h = H {
        s: Store::open_with(MemBackend::default(), config).unwrap(),
        index: 0,
    };
    // More revisions than one compaction batch, on few keys.
    for i in 0..2500 {
        h.put(&format!("k{}", i % 7), &i.to_string());
    }
    h.del("k3", "");
    let rev = h.s.revision();
    let hash = h.s.hash(0).unwrap();
    let hist = |h: &H| {
        let mut r = rr("\0", "\0");
        r.revision = rev;
        h.range(r).unwrap()
    };
    let before = hist(&h);
    h.compact(rev).unwrap();
    assert!(h.s.compaction_pending());
    // 100 entries processed; the first of each of the 7 keys had nothing to supersede.
    assert_eq!(
        tree_len(&h, TREE_REV),
        2501 - 93,
        "only the inline slice is done"
    );
    assert_eq!(hist(&h), before, "pending removal is invisible");
    assert_eq!(h.s.compact_step(1000), Ok(true));
    block_on(h.s.commit()).unwrap();
    assert_eq!(h.s.compact_step(1000), Ok(true));
    // Crash: the second step was not committed; the cursor comes back from the commit.
    let mut s = Store::open_with(h.s.backend().reopen_committed(), config).unwrap();
    assert!(s.compaction_pending());
    let mut steps = 0;
    while s.compact_step(300).unwrap() {
        steps += 1;
    }
    assert_eq!(steps, 4, "1401 revisions left, 300 a step");
    assert!(!s.compaction_pending());
    assert_eq!(s.compact_step(300), Ok(false));
    let h = H { s, index: 2503 };
    assert_eq!(tree_len(&h, TREE_REV), 6);
    assert_eq!(h.s.index().len(), 6);
    assert_eq!(h.s.hash(0).unwrap().hash, hash.hash);
    assert_eq!(hist(&h), before);
}

#[test]
fn deep_history_reads() {
    let mut h = H::new();
    for i in 0..40 {
        for k in ["a", "b", "c"] {
            h.put(k, &format!("{k}{i}"));
        }
    }
    h.del("b", "");
    let mut r = rr("a", "z");
    r.revision = 122;
    assert_eq!(h.keys(r), ["a", "c"]);
    for rev in [2, 3, 4, 50, 60, 100, 120, 121] {
        let mut r = rr("a", "z");
        r.revision = rev;
        let got: Vec<Vec<u8>> = h
            .range(r)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| kv.value)
            .collect();
        let i = (rev - 2) / 3;
        let mut want = vec![];
        for (j, k) in ["a", "b", "c"].iter().enumerate() {
            let done = (rev - 2) % 3 >= j as i64;
            if done {
                want.push(format!("{k}{i}").into_bytes());
            } else if i > 0 {
                want.push(format!("{k}{}", i - 1).into_bytes());
            }
        }
        assert_eq!(got, want, "rev {rev}");
    }
}

#[test]
fn applying_an_old_index_is_refused() {
    let mut h = H::new();
    h.put("a", "1");
    h.put("a", "2");
    let hash = h.s.hash(0).unwrap();
    for index in [0, 1, 2] {
        assert_eq!(
            h.s.apply(index, &WriteRequest::Put(put("a", "x")), None),
            Err(ApplyError::AlreadyApplied { index, applied: 2 })
        );
    }
    assert_eq!(h.s.hash(0).unwrap(), hash);
    assert_eq!((h.s.applied_index(), h.s.revision()), (2, 3));
    // Gaps are allowed (entries without a KV write), and advance_applied records them.
    h.s.advance_applied(5).unwrap();
    assert_eq!(
        h.s.advance_applied(5),
        Err(ApplyError::AlreadyApplied {
            index: 5,
            applied: 5
        })
    );
    assert!(h
        .s
        .apply(7, &WriteRequest::Put(put("b", "1")), None)
        .is_ok());
    assert_eq!(h.s.applied_index(), 7);
}

#[test]
fn dedup_returns_the_stored_outcome() {
    let mut s = Store::open_with(
        MemBackend::default(),
        StoreConfig {
            sessions_max: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut pk = put("k", "v1");
    pk.prev_kv = true;
    let first = s
        .apply(1, &WriteRequest::Put(pk.clone()), Some((10, 1)))
        .unwrap();
    assert!(!first.duplicate);
    // The same (session, seq) again, with a different body even: not applied.
    let again = s
        .apply(2, &WriteRequest::Put(put("k", "other")), Some((10, 1)))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.revision, &again.response),
        (first.revision, &first.response)
    );
    assert_eq!(s.revision(), 2);
    assert_eq!(s.applied_index(), 2);
    // The next seq applies; an older one is stale.
    pk.value = b"v2".to_vec();
    let second = s
        .apply(3, &WriteRequest::Put(pk.clone()), Some((10, 2)))
        .unwrap();
    assert_eq!(second.revision, 3);
    let stale = s
        .apply(4, &WriteRequest::Put(pk.clone()), Some((10, 1)))
        .unwrap();
    assert_eq!(stale.response, Err(KvError::StaleSequence(2)));
    assert_eq!(s.revision(), 3);
    // Errors are outcomes too: a retry gets the same error even if it would now pass.
    let mut iv = put("new", "");
    iv.ignore_value = true;
    let err = s
        .apply(5, &WriteRequest::Put(iv.clone()), Some((11, 1)))
        .unwrap();
    assert_eq!(err.response, Err(KvError::KeyNotFound));
    s.apply(6, &WriteRequest::Put(put("new", "x")), None)
        .unwrap();
    let retry = s.apply(7, &WriteRequest::Put(iv), Some((11, 1))).unwrap();
    assert_eq!(
        (retry.response, retry.duplicate),
        (Err(KvError::KeyNotFound), true)
    );
    // A Txn outcome survives the round trip through the store, and across a restart.
    let t = txn(
        vec![],
        vec![RequestOp::Range(rr("k", "")), RequestOp::Put(put("t", "1"))],
        vec![],
    );
    let tx = s
        .apply(8, &WriteRequest::Txn(t.clone()), Some((12, 1)))
        .unwrap();
    block_on(s.commit()).unwrap();
    let mut s = Store::open_with(
        s.into_backend().reopen_committed(),
        StoreConfig {
            sessions_max: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let tx2 = s.apply(9, &WriteRequest::Txn(t), Some((12, 1))).unwrap();
    assert_eq!(
        (tx2.revision, tx2.response, tx2.duplicate),
        (tx.revision, tx.response, true)
    );
    // sessions_max = 2: session 10 wrote least recently (index 3) and was evicted when
    // 12 arrived; 11 (index 5) and 12 remain.
    let applied_again = s.apply(10, &WriteRequest::Put(pk), Some((10, 2))).unwrap();
    assert!(
        !applied_again.duplicate,
        "an evicted session's retry applies again"
    );
    s.write_deferred().unwrap();
    assert_eq!(tree_len_of(s.backend(), TREE_SESSION), 2);
    assert_eq!(tree_len_of(s.backend(), TREE_SESSION_AGE), 2);
}

#[test]
fn dedup_of_a_large_outcome_still_applies_once() {
    let config = StoreConfig {
        session_outcome_bytes_max: 200,
        ..Default::default()
    };
    let mut s = Store::open_with(MemBackend::default(), config).unwrap();
    s.apply(1, &WriteRequest::Put(put("big", &"x".repeat(500))), None)
        .unwrap();
    let t = txn(
        vec![],
        vec![
            RequestOp::Range(rr("big", "")),
            RequestOp::Put(put("t", "1")),
        ],
        vec![],
    );
    let first = s
        .apply(2, &WriteRequest::Txn(t.clone()), Some((1, 1)))
        .unwrap();
    assert!(first.response.is_ok());
    let again = s.apply(3, &WriteRequest::Txn(t), Some((1, 1))).unwrap();
    assert_eq!(
        (again.revision, again.response, again.duplicate),
        (3, Err(KvError::StaleSequence(1)), true)
    );
    assert_eq!(s.revision(), 3, "not applied twice");
}

/// As a backend, [`Counting`] shows what `open` reads.
impl Backend for Counting<MemBackend> {
    type Snapshot = backend::MemSnapshot;
    type Job = backend::MemJob;
    fn snapshot(&self) -> Self::Snapshot {
        self.inner.snapshot()
    }
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> backend::BackendResult<()> {
        self.inner.put(tree, key, value)
    }
    fn delete(&mut self, tree: &str, key: &[u8]) -> backend::BackendResult<bool> {
        self.inner.delete(tree, key)
    }
    fn begin_commit(&mut self) -> backend::BackendResult<Option<backend::MemJob>> {
        self.inner.begin_commit()
    }
    fn finish_commit(
        &mut self,
        done: <backend::MemJob as backend::BackendJob>::Done,
    ) -> backend::BackendResult<()> {
        self.inner.finish_commit(done)
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
}

#[test]
fn open_reads_metadata_and_the_rev_tree_once() {
    let mut h = H::new();
    for i in 0..500 {
        h.put(&format!("k{i}"), "v");
    }
    let (_, d) = h.del("k1", "k3");
    assert_eq!(d.deleted, 222);
    h.s.write_deferred().unwrap();
    let s = Store::open(Counting::new(h.s.into_backend())).unwrap();
    let b = s.backend();
    assert_eq!(
        (b.total_gets(), b.total_scanned(), b.scanned(TREE_REV)),
        (2, 500 + 222, 500 + 222),
        "format, state, and each revision once"
    );
    assert_eq!(s.index().len(), 500 + 222);
    assert_eq!(
        (s.revision(), s.key_count(), s.applied_index()),
        (502, 278, 501)
    );
}

fn tree_len_of(b: &MemBackend, tree: &str) -> usize {
    let mut n = 0;
    b.scan(tree, b"", None, false, &mut |_, _| {
        n += 1;
        true
    })
    .unwrap();
    n
}

#[test]
fn restart_resumes_from_the_committed_applied_index() {
    let mut h = seeded();
    block_on(h.s.commit()).unwrap();
    let committed_hash = h.s.hash(0).unwrap();
    h.put("late", "1");
    h.s.write_deferred().unwrap();
    let s = Store::open(h.s.backend().reopen_committed()).unwrap();
    assert_eq!((s.applied_index(), s.revision()), (7, 8));
    assert_eq!(s.hash(0).unwrap(), committed_hash);
    let s = Store::open(h.s.into_backend()).unwrap();
    assert_eq!((s.applied_index(), s.revision()), (8, 9));
}

#[test]
fn snapshot_reads_the_last_commit() {
    let mut h = seeded();
    block_on(h.s.commit()).unwrap();
    h.put("a", "new");
    let snap = h.s.snapshot();
    let (rev, r) = range_on(&snap, &rr("a", ""), h.s.limits()).unwrap();
    assert_eq!((rev, r.kvs[0].value.clone()), (8, b"9".to_vec()));
    assert_eq!(h.range(rr("a", "")).unwrap().kvs[0].value, b"new");
    let mut hist = rr("a", "");
    hist.revision = 3;
    assert_eq!(
        range_on(&snap, &hist, h.s.limits()).unwrap().1.kvs[0].value,
        b"3"
    );
}

/// A store written by format v1 (which also kept `idx` and `live` trees on disk) opens
/// as is, ignores those trees, and is marked v2 by its next commit.
#[test]
fn a_v1_store_opens_and_is_upgraded_at_the_next_commit() {
    let mut h = seeded();
    let want = h.range(rr("\0", "\0")).unwrap();
    h.s.write_deferred().unwrap();
    let mut b = h.s.into_backend();
    b.put(TREE_META, META_FORMAT_KEY, FORMAT_V1).unwrap();
    b.put("idx", b"stale", b"not read").unwrap();
    b.put("live", b"a", b"not read").unwrap();
    let mut s = Store::open(b).unwrap();
    assert_eq!(s.range(&rr("\0", "\0")).unwrap().1, want);
    s.apply(8, &WriteRequest::Put(put("z", "1")), None).unwrap();
    block_on(s.commit()).unwrap();
    let b = s.into_backend();
    assert_eq!(
        b.get(TREE_META, META_FORMAT_KEY).unwrap().as_deref(),
        Some(FORMAT)
    );
    let s = Store::open(b).unwrap();
    assert_eq!(s.range(&rr("\0", "\0")).unwrap().1.count, want.count + 1);
}

#[test]
fn hash_agrees_across_compaction_and_differs_on_data() {
    let mut a = seeded();
    let mut b = seeded();
    b.compact(6).unwrap();
    assert_eq!(a.s.hash(0).unwrap().hash, b.s.hash(0).unwrap().hash);
    assert_eq!(a.s.hash(7).unwrap().hash, b.s.hash(7).unwrap().hash);
    assert_ne!(a.s.hash(7).unwrap().hash, a.s.hash(8).unwrap().hash);
    a.put("a", "x");
    b.put("a", "y");
    assert_ne!(a.s.hash(0).unwrap().hash, b.s.hash(0).unwrap().hash);
    assert_eq!(b.s.hash(3), Err(KvError::Compacted(6)));
}

#[test]
fn corrupt_records_are_errors_and_poison_the_store() {
    let mut h = seeded();
    h.s.write_deferred().unwrap();
    // A rev record that does not decode: open refuses, naming the tree.
    let mut b = h.s.backend().clone();
    b.put(TREE_REV, &Rev { main: 50, sub: 0 }.encode(), b"garbage")
        .unwrap();
    assert!(matches!(Store::open(b), Err(KvError::Storage(m)) if m.contains("\"rev\"")));
    // A state whose key count disagrees with the rev tree: open refuses.
    let mut b = h.s.backend().clone();
    let mut state = State::decode(&b.get(TREE_META, META_STATE_KEY).unwrap().unwrap()).unwrap();
    state.live_count += 1;
    b.put(TREE_META, META_STATE_KEY, &state.encode()).unwrap();
    assert!(matches!(Store::open(b), Err(KvError::Storage(m)) if m.contains("live keys")));
    // A revision the index lists vanishes from the rev tree: reads that need its value
    // fail, and so does the apply that meets it; the store then refuses writes.
    let mut s = Store::open(h.s.backend().clone()).unwrap();
    let b_rev = Rev { main: 3, sub: 0 }.encode();
    assert!(s.backend_mut().delete(TREE_REV, &b_rev).unwrap());
    assert!(
        matches!(s.range(&rr("a", "z")), Err(KvError::Storage(m)) if m.contains("indexed revision missing"))
    );
    let mut p = put("b", "x");
    p.prev_kv = true;
    let e = s.apply(8, &WriteRequest::Put(p), None).unwrap_err();
    assert!(matches!(e, ApplyError::Storage(_)));
    assert!(matches!(
        s.apply(9, &WriteRequest::Put(put("zz", "x")), None),
        Err(ApplyError::Storage(_))
    ));
    assert!(block_on(s.commit()).is_err());
    // Bad format / missing format.
    let mut b = MemBackend::default();
    b.put(TREE_META, META_FORMAT_KEY, b"other").unwrap();
    assert!(matches!(Store::open(b), Err(KvError::Storage(_))));
    let mut b = MemBackend::default();
    b.put(TREE_REV, b"x", b"y").unwrap();
    assert!(matches!(Store::open(b), Err(KvError::Storage(_))));
    h.put("ok", "1");
}

#[test]
fn invalid_requests_at_apply_consume_the_index_only() {
    let mut h = seeded();
    let o = h.apply(WriteRequest::DeleteRange(DeleteRangeRequest {
        key: b"b".to_vec(),
        range_end: b"a".to_vec(),
        prev_kv: false,
    }));
    assert_eq!((o.revision, o.response), (8, Err(KvError::InvalidRange)));
    assert_eq!(h.s.applied_index(), 8);
    let mut big = put("k", "");
    big.key = vec![b'k'; 5000];
    assert_eq!(h.put_req(big), Err(KvError::RequestTooLarge));
    assert_eq!(h.s.revision(), 8);
}

/// A view (or, owning a [`MemBackend`], a backend) that counts point gets and scanned
/// entries per tree.
struct Counting<B> {
    inner: B,
    gets: std::cell::RefCell<std::collections::BTreeMap<String, usize>>,
    scanned: std::cell::RefCell<std::collections::BTreeMap<String, usize>>,
}

impl<B: std::borrow::Borrow<MemBackend>> Counting<B> {
    fn new(inner: B) -> Self {
        Counting {
            inner,
            gets: Default::default(),
            scanned: Default::default(),
        }
    }
    fn reset(&self) {
        self.gets.borrow_mut().clear();
        self.scanned.borrow_mut().clear();
    }
    fn gets(&self, tree: &str) -> usize {
        self.gets.borrow().get(tree).copied().unwrap_or(0)
    }
    fn scanned(&self, tree: &str) -> usize {
        self.scanned.borrow().get(tree).copied().unwrap_or(0)
    }
    fn total_gets(&self) -> usize {
        self.gets.borrow().values().sum()
    }
    fn total_scanned(&self) -> usize {
        self.scanned.borrow().values().sum()
    }
}

impl<B: std::borrow::Borrow<MemBackend>> ReadView for Counting<B> {
    fn get(&self, tree: &str, key: &[u8]) -> backend::BackendResult<Option<Vec<u8>>> {
        *self.gets.borrow_mut().entry(tree.into()).or_default() += 1;
        self.inner.borrow().get(tree, key)
    }
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> backend::BackendResult<()> {
        let mut n = 0;
        let r = self
            .inner
            .borrow()
            .scan(tree, lo, hi, reverse, &mut |k, v| {
                n += 1;
                f(k, v)
            });
        *self.scanned.borrow_mut().entry(tree.into()).or_default() += n;
        r
    }
}

#[test]
fn limit_count_and_keys_only_read_no_more_values_than_returned() {
    let mut h = H::new();
    for i in 0..1000 {
        h.put(&format!("k{i:04}"), "some value");
    }
    for i in 0..1000 {
        h.put(&format!("k{i:04}"), "newer value");
    }
    let mid = h.s.revision() - 500; // half the keys rewritten at mid
    h.s.write_deferred().unwrap();
    let s = Store::open(Counting::new(h.s.into_backend())).unwrap();
    let view = s.backend();
    let run = |req: RangeRequest| {
        view.reset();
        let resp = s.range(&req).unwrap().1;
        assert_eq!(view.total_scanned(), 0, "keys are walked in the index");
        resp
    };
    let mut r = rr("k", "l");
    r.limit = 10;
    let resp = run(r.clone());
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (10, 1000, true));
    assert_eq!(
        view.gets(TREE_REV),
        10,
        "values read for returned keys only"
    );
    r.revision = mid;
    let resp = run(r.clone());
    assert_eq!((resp.kvs.len(), resp.count), (10, 1000));
    assert_eq!(resp.kvs[0].value, b"newer value");
    assert_eq!(view.gets(TREE_REV), 10);
    r.revision = 0;
    r.limit = 0;
    r.keys_only = true;
    assert_eq!(run(r.clone()).kvs.len(), 1000);
    assert_eq!(view.gets(TREE_REV), 0, "keys_only reads no value");
    r.count_only = true;
    assert_eq!(run(r.clone()).count, 1000);
    assert_eq!(view.gets(TREE_REV), 0, "count_only reads no value");
    let mut all = rr("\0", "\0");
    all.count_only = true;
    assert_eq!(run(all).count, 1000);
    let mut all = rr("\0", "\0");
    all.limit = 10;
    let resp = run(all.clone());
    assert_eq!((resp.kvs.len(), resp.count, resp.more), (10, 1000, true));
    assert_eq!(view.gets(TREE_REV), 10);
    all.sort_order = SortOrder::Descend;
    assert_eq!(run(all).kvs[0].key, b"k0999");
    let mut desc = rr("k", "l");
    desc.sort_order = SortOrder::Descend;
    desc.limit = 3;
    let resp = run(desc);
    assert_eq!(resp.kvs[0].key, b"k0999");
    assert_eq!(view.gets(TREE_REV), 3);
    run(rr("k0500", ""));
    assert_eq!(
        (view.total_gets(), view.gets(TREE_REV)),
        (1, 1),
        "a point read is one get, of its value"
    );
}

/// Rough per-operation cost of the MVCC layer on MemBackend (a BTreeMap: the numbers
/// measure this module's overhead, not a disk). Run with
/// `cargo test --lib mvcc::tests::measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_mvcc_overhead() {
    use std::time::Instant;
    let n = 100_000;
    let mut h = H::new();
    let value = vec![b'v'; 100];
    let key = |i: usize| format!("key{:012}", (i * 7919) % n);
    let t = Instant::now();
    for i in 0..n {
        h.put_req(PutRequest {
            key: key(i).into_bytes(),
            value: value.clone(),
            ..Default::default()
        })
        .unwrap();
    }
    let put_ns = t.elapsed().as_nanos() / n as u128;
    let t = Instant::now();
    for i in 0..n {
        assert!(h.get(&key(i)).is_some());
    }
    let get_ns = t.elapsed().as_nanos() / n as u128;
    let t = Instant::now();
    let scans = 200;
    for i in 0..scans {
        let mut r = rr(&key(i), "key~");
        r.limit = 100;
        assert_eq!(h.range(r).unwrap().kvs.len().min(1), 1);
    }
    let scan_ns = t.elapsed().as_nanos() / scans as u128;
    let t = Instant::now();
    for _ in 0..scans {
        let mut r = rr("\0", "\0");
        r.limit = 100;
        assert_eq!(h.range(r).unwrap().kvs.len(), 100);
    }
    let page_ns = t.elapsed().as_nanos() / scans as u128;
    let t = Instant::now();
    for i in 0..n {
        let mut r = rr(&key(i), "");
        r.revision = n as i64 / 2;
        h.range(r).unwrap();
    }
    let hist_ns = t.elapsed().as_nanos() / n as u128;
    let t = Instant::now();
    h.compact(n as i64 / 2).unwrap();
    let inline_us = t.elapsed().as_micros();
    let t = Instant::now();
    while h.s.compact_step(1024).unwrap() {}
    let compact_ms = t.elapsed().as_millis();
    eprintln!(
        "MemBackend, {n} keys, 16 B keys, 100 B values: put {put_ns} ns, get {get_ns} ns, \
         range limit 100 (count walks the rest) {scan_ns} ns, first 100 of the whole \
         keyspace {page_ns} ns, historical get {hist_ns} ns, \
         compact {} revisions: apply {inline_us} us + steps {compact_ms} ms",
        n / 2
    );
}

/// Session records are written at commit time, but which session is evicted (and so
/// whether a retry is a duplicate) must not depend on when a replica commits: a store
/// committing after every apply and one committing rarely answer every retry alike and
/// end with the same session trees.
#[test]
fn session_eviction_does_not_depend_on_commit_timing() {
    let config = StoreConfig {
        sessions_max: 3,
        ..Default::default()
    };
    let mut often = Store::open_with(MemBackend::default(), config).unwrap();
    let mut rarely = Store::open_with(MemBackend::default(), config).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut seqs = [0u64; 6];
    for index in 1..=400u64 {
        let session = next(6);
        // Mostly a fresh write; sometimes a retry of the last seq or an older one.
        let seq = match next(4) {
            0 => seqs[session as usize].saturating_sub(next(2)).max(1),
            _ => {
                seqs[session as usize] += 1;
                seqs[session as usize]
            }
        };
        let req = WriteRequest::Put(put(&format!("k{}", next(10)), &format!("v{index}")));
        let a = often.apply(index, &req, Some((session + 1, seq))).unwrap();
        let b = rarely.apply(index, &req, Some((session + 1, seq))).unwrap();
        assert_eq!(
            (a.revision, a.duplicate, &a.response),
            (b.revision, b.duplicate, &b.response),
            "index {index} session {session} seq {seq}"
        );
        block_on(often.commit()).unwrap();
        if next(25) == 0 {
            block_on(rarely.commit()).unwrap();
        }
    }
    block_on(rarely.commit()).unwrap();
    for tree in [TREE_SESSION, TREE_SESSION_AGE, TREE_META] {
        let dump = |s: &Store<MemBackend>| {
            let mut v = Vec::new();
            s.backend()
                .scan(tree, b"", None, false, &mut |k, val| {
                    v.push((k.to_vec(), val.to_vec()));
                    true
                })
                .unwrap();
            v
        };
        assert_eq!(dump(&often), dump(&rarely), "tree {tree}");
    }
    assert_eq!(tree_len_of(often.backend(), TREE_SESSION), 3);
}
