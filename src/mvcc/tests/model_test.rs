//! Model-based random test: random puts, deletes, txns (nested, with compares),
//! compactions and ranges (every option, random revisions) against a model that keeps
//! the whole keyspace at every revision in a `Vec<BTreeMap>`. Every response is
//! compared; history (`changes_since`) too; compaction must physically remove what it
//! should. In between, the store is committed, reopened, or crashed (reopened from the
//! last commit) and the lost entries are replayed from the test's log from
//! `applied_index() + 1`, which must reproduce the same responses.

use std::collections::BTreeMap;

use super::super::keys::*;
use super::super::*;
use futures_lite::future::block_on;

/// splitmix64: small, seeded, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

const KEYS: &[&[u8]] = &[
    b"\0", b"a", b"ab", b"abc", b"b", b"b\0", b"b\0c", b"ba", b"c", b"d", b"d\xff", b"e",
];
const VALUES: &[&[u8]] = &[b"", b"x", b"y", b"zz", b"v1", b"v2", b"v3", b"\0"];

type Map = BTreeMap<Vec<u8>, KeyValue>;

fn in_span(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

struct Model {
    /// hist[r] = the keyspace at revision r (hist[0] unused, hist[1] empty).
    hist: Vec<Map>,
    compacted: i64,
    events: Vec<Event>,
}

/// The writes of the entry being applied.
struct Work {
    map: Map,
    rev: i64,
    wrote: bool,
    events: Vec<Event>,
}

impl Model {
    fn new() -> Model {
        Model {
            hist: vec![Map::new(), Map::new()],
            compacted: 0,
            events: vec![],
        }
    }
    fn rev(&self) -> i64 {
        self.hist.len() as i64 - 1
    }
    fn latest(&self) -> &Map {
        self.hist.last().unwrap()
    }

    /// Range with `cur` as the newest state (`cur_rev`).
    fn range(&self, cur: &Map, cur_rev: i64, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        validate_range(req, &Limits::default())?;
        let rev = if req.revision > cur_rev {
            return Err(KvError::FutureRevision(cur_rev));
        } else if req.revision <= 0 {
            cur_rev
        } else if req.revision < self.compacted {
            return Err(KvError::Compacted(self.compacted));
        } else {
            req.revision
        };
        let map = if rev == cur_rev {
            cur
        } else {
            &self.hist[rev as usize]
        };
        let mut kvs: Vec<KeyValue> = map
            .values()
            .filter(|kv| in_span(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        let count = kvs.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                kvs: vec![],
                more: false,
                count,
            });
        }
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        let mut order = req.sort_order;
        if req.sort_target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            kvs.sort_by(|a, b| {
                let o = match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .latest()
            .values()
            .filter(|kv| in_span(&kv.key, &c.key, &c.range_end))
            .collect();
        let zero = KeyValue::default();
        if kvs.is_empty() && matches!(c.target, CompareTarget::Value(_)) {
            return false;
        }
        let kvs = if kvs.is_empty() { vec![&zero] } else { kvs };
        kvs.iter().all(|kv| {
            let o = match &c.target {
                CompareTarget::Version(x) => kv.version.cmp(x),
                CompareTarget::Create(x) => kv.create_revision.cmp(x),
                CompareTarget::Mod(x) => kv.mod_revision.cmp(x),
                CompareTarget::Lease(x) => kv.lease.cmp(x),
                CompareTarget::Value(x) => kv.value.cmp(x),
            };
            match c.op {
                CompareOp::Equal => o.is_eq(),
                CompareOp::NotEqual => o.is_ne(),
                CompareOp::Greater => o.is_gt(),
                CompareOp::Less => o.is_lt(),
            }
        })
    }

    fn put(&self, w: &mut Work, p: &PutRequest) -> Result<PutResponse, KvError> {
        let prev = w.map.get(&p.key).cloned();
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        if p.lease != 0 {
            return Err(KvError::LeaseNotFound(p.lease));
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(w.rev, |p| p.create_revision),
            mod_revision: w.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: if p.ignore_value {
                prev.as_ref().unwrap().value.clone()
            } else {
                p.value.clone()
            },
            lease: 0,
        };
        w.map.insert(p.key.clone(), kv.clone());
        w.events.push(Event {
            kind: EventKind::Put,
            kv,
        });
        w.wrote = true;
        Ok(PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&self, w: &mut Work, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let victims: Vec<Vec<u8>> = w
            .map
            .keys()
            .filter(|k| in_span(k, &d.key, &d.range_end))
            .cloned()
            .collect();
        let mut prev_kvs = vec![];
        for k in &victims {
            let kv = w.map.remove(k).unwrap();
            if d.prev_kv {
                prev_kvs.push(kv);
            }
            w.events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: k.clone(),
                    mod_revision: w.rev,
                    ..Default::default()
                },
            });
            w.wrote = true;
        }
        DeleteRangeResponse {
            deleted: victims.len() as i64,
            prev_kvs,
        }
    }

    fn txn(&self, w: &mut Work, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        // Compares see the state before the Txn.
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        let mut responses = vec![];
        for op in if succeeded { &t.success } else { &t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // Checked against the revision before the Txn (etcd's checkRequests).
                    if r.revision > self.rev() {
                        return Err(KvError::FutureRevision(self.rev()));
                    }
                    let (map, rev) = if w.wrote {
                        (&w.map, w.rev)
                    } else {
                        (self.latest(), self.rev())
                    };
                    ResponseOp::Range(self.range(map, rev, r)?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(w, d)),
                RequestOp::Txn(n) => ResponseOp::Txn(self.txn(w, n)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    fn apply(&mut self, req: &WriteRequest) -> (i64, Result<WriteResponse, KvError>) {
        if let Err(e) = validate_write(req, &Limits::default()) {
            return (self.rev(), Err(e));
        }
        let mut w = Work {
            map: self.latest().clone(),
            rev: self.rev() + 1,
            wrote: false,
            events: vec![],
        };
        let r = match req {
            WriteRequest::Put(p) => self.put(&mut w, p).map(WriteResponse::Put),
            WriteRequest::DeleteRange(d) => Ok(WriteResponse::DeleteRange(self.delete(&mut w, d))),
            WriteRequest::Txn(t) => self.txn(&mut w, t).map(WriteResponse::Txn),
            WriteRequest::Compact(c) => {
                if c.revision <= self.compacted {
                    Err(KvError::Compacted(self.compacted))
                } else if c.revision > self.rev() {
                    Err(KvError::FutureRevision(self.rev()))
                } else {
                    self.compacted = c.revision;
                    Ok(WriteResponse::Compact(CompactResponse {}))
                }
            }
        };
        if r.is_ok() && w.wrote {
            self.hist.push(w.map);
            self.events.extend(w.events);
        }
        (self.rev(), r)
    }

    fn changes_since(&self, from: i64, limit: usize) -> Result<Vec<Event>, KvError> {
        if from <= self.compacted {
            return Err(KvError::Compacted(self.compacted));
        }
        let mut out: Vec<Event> = vec![];
        for e in self.events.iter().filter(|e| e.kv.mod_revision >= from) {
            if out.len() >= limit && out.last().unwrap().kv.mod_revision != e.kv.mod_revision {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }
}

struct Gen<'a> {
    rng: &'a mut Rng,
    rev: i64,
    compacted: i64,
}

impl Gen<'_> {
    fn key(&mut self) -> Vec<u8> {
        self.rng.pick(KEYS).to_vec()
    }
    fn end(&mut self) -> Vec<u8> {
        match self.rng.below(10) {
            0..=3 => vec![],
            4 => vec![0],
            _ => self.key(),
        }
    }
    fn revision(&mut self) -> i64 {
        if self.rng.chance(50) {
            0
        } else {
            self.rng.int(self.compacted - 1, self.rev + 1)
        }
    }
    fn put(&mut self) -> PutRequest {
        let ignore_value = self.rng.chance(10);
        let ignore_lease = self.rng.chance(10);
        PutRequest {
            key: self.key(),
            value: if ignore_value && !self.rng.chance(5) {
                vec![]
            } else {
                self.rng.pick(VALUES).to_vec()
            },
            lease: if self.rng.chance(3) { 7 } else { 0 },
            prev_kv: self.rng.chance(50),
            ignore_value,
            ignore_lease,
        }
    }
    fn delete(&mut self) -> DeleteRangeRequest {
        DeleteRangeRequest {
            key: self.key(),
            range_end: self.end(),
            prev_kv: self.rng.chance(50),
        }
    }
    fn range(&mut self) -> RangeRequest {
        let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
        let targets = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ];
        let bound = |rng: &mut Rng, rev: i64| if rng.chance(15) { rng.int(1, rev) } else { 0 };
        let (key, range_end) = if self.rng.chance(8) {
            (vec![0], vec![0]) // the whole keyspace
        } else {
            (self.key(), self.end())
        };
        RangeRequest {
            key,
            range_end,
            limit: if self.rng.chance(50) {
                self.rng.int(-1, 4)
            } else {
                0
            },
            revision: self.revision(),
            sort_order: *self.rng.pick(&orders),
            sort_target: if self.rng.chance(50) {
                SortTarget::Key
            } else {
                *self.rng.pick(&targets)
            },
            serializable: false,
            keys_only: self.rng.chance(20),
            count_only: self.rng.chance(10),
            min_mod_revision: bound(self.rng, self.rev),
            max_mod_revision: bound(self.rng, self.rev),
            min_create_revision: bound(self.rng, self.rev),
            max_create_revision: bound(self.rng, self.rev),
        }
    }
    fn compare(&mut self) -> Compare {
        let ops = [
            CompareOp::Equal,
            CompareOp::NotEqual,
            CompareOp::Greater,
            CompareOp::Less,
        ];
        let n = self.rng.int(0, 6);
        let target = match self.rng.below(5) {
            0 => CompareTarget::Version(n),
            1 => CompareTarget::Create(n + self.rev / 2),
            2 => CompareTarget::Mod(n + self.rev / 2),
            3 => CompareTarget::Lease(n / 4),
            _ => CompareTarget::Value(self.rng.pick(VALUES).to_vec()),
        };
        Compare {
            op: *self.rng.pick(&ops),
            target,
            key: self.key(),
            range_end: if self.rng.chance(70) {
                vec![]
            } else {
                self.end()
            },
        }
    }
    fn ops(&mut self, depth: u32) -> Vec<RequestOp> {
        (0..self.rng.below(4))
            .map(|_| match self.rng.below(if depth < 2 { 4 } else { 3 }) {
                0 => RequestOp::Put(self.put()),
                1 => RequestOp::DeleteRange(self.delete()),
                2 => RequestOp::Range(self.range()),
                _ => RequestOp::Txn(self.txn(depth + 1)),
            })
            .collect()
    }
    fn txn(&mut self, depth: u32) -> TxnRequest {
        TxnRequest {
            compare: (0..self.rng.below(3)).map(|_| self.compare()).collect(),
            success: self.ops(depth),
            failure: self.ops(depth),
        }
    }
    fn write(&mut self) -> WriteRequest {
        match self.rng.below(100) {
            0..=44 => WriteRequest::Put(self.put()),
            45..=59 => WriteRequest::DeleteRange(self.delete()),
            60..=94 => WriteRequest::Txn(self.txn(0)),
            _ => WriteRequest::Compact(CompactRequest {
                revision: self.rng.int(self.compacted - 1, self.rev + 1),
            }),
        }
    }
}

fn rev_tree_entries(b: &MemBackend, upto: Option<i64>) -> usize {
    let hi = upto.map(|r| {
        Rev {
            main: r + 1,
            sub: 0,
        }
        .encode()
    });
    let mut n = 0;
    b.scan(
        TREE_REV,
        b"",
        hi.as_ref().map(|h| &h[..]),
        false,
        &mut |_, _| {
            n += 1;
            true
        },
    )
    .unwrap();
    n
}

#[derive(Default, Debug)]
struct Stats {
    writes_ok: usize,
    write_errors: usize,
    txns: usize,
    compactions: usize,
    ranges: usize,
    crashes: usize,
    replayed: usize,
}

fn run(seed: u64, steps: usize) -> Stats {
    let mut rng = Rng(seed);
    let mut model = Model::new();
    // Compaction done inside the apply, or left to random compact_step slices.
    let config = StoreConfig {
        compact_inline_revisions: [0, 1, 3, 1024][seed as usize % 4],
        ..Default::default()
    };
    let mut store = Store::open_with(MemBackend::default(), config).unwrap();
    let mut log: Vec<(WriteRequest, ApplyOutcome)> = vec![];
    let mut stats = Stats::default();
    for step in 0..steps {
        let ctx = format!("seed {seed} step {step}");
        let mut g = Gen {
            rng: &mut rng,
            rev: model.rev(),
            compacted: model.compacted,
        };
        if g.rng.chance(45) {
            let req = g.range();
            let want = model.range(model.latest(), model.rev(), &req);
            let got = store.range(&req);
            assert_eq!(got.as_ref().map(|r| &r.1), want.as_ref(), "{ctx}: {req:?}");
            if let Ok((rev, _)) = got {
                assert_eq!(rev, model.rev(), "{ctx}");
            }
            stats.ranges += 1;
        } else {
            let req = g.write();
            let (want_rev, want) = model.apply(&req);
            let index = log.len() as u64 + 1;
            let got = store.apply(index, &req, None).unwrap();
            assert_eq!(
                (got.revision, &got.response),
                (want_rev, &want),
                "{ctx}: {req:?}"
            );
            match (&req, &want) {
                (_, Err(_)) => stats.write_errors += 1,
                (WriteRequest::Compact(_), Ok(_)) if rng.chance(50) => {
                    stats.compactions += 1;
                }
                (WriteRequest::Compact(c), Ok(_)) => {
                    stats.compactions += 1;
                    while store.compact_step(rng.int(1, 50) as usize).unwrap() {}
                    // Physically removed: only each live key's newest revision remains.
                    let kept = model.hist[c.revision as usize].len();
                    assert_eq!(
                        rev_tree_entries(store.backend(), Some(c.revision)),
                        kept,
                        "{ctx}"
                    );
                    let newer = model
                        .events
                        .iter()
                        .filter(|e| e.kv.mod_revision > c.revision)
                        .count();
                    assert_eq!(
                        rev_tree_entries(store.backend(), None),
                        kept + newer,
                        "{ctx}"
                    );
                }
                (WriteRequest::Txn(_), Ok(_)) => stats.txns += 1,
                _ => stats.writes_ok += 1,
            }
            log.push((req, got));
        }
        assert_eq!(store.revision(), model.rev(), "{ctx}");
        assert_eq!(store.key_count(), model.latest().len() as i64, "{ctx}");
        if rng.chance(20) {
            store.compact_step(rng.int(1, 4) as usize).unwrap();
        }
        if rng.chance(10) {
            let from = rng.int(model.compacted - 1, model.rev() + 1);
            let limit = rng.int(1, 12) as usize;
            assert_eq!(
                store.changes_since(from, limit),
                model.changes_since(from, limit),
                "{ctx}: from {from}"
            );
        }
        match rng.below(100) {
            0..=7 => block_on(store.commit()).unwrap(),
            8 => {
                // Clean restart.
                store.write_deferred().unwrap();
                store = Store::open_with(store.into_backend(), config).unwrap();
                assert_eq!(store.applied_index(), log.len() as u64, "{ctx}");
            }
            9..=10 => {
                // Crash: what was not committed is lost; replay the log from the
                // applied index stored in the last commit.
                let hash = store.hash(0).unwrap();
                store = Store::open_with(store.backend().reopen_committed(), config).unwrap();
                stats.crashes += 1;
                for (i, (req, outcome)) in
                    log.iter().enumerate().skip(store.applied_index() as usize)
                {
                    let again = store.apply(i as u64 + 1, req, None).unwrap();
                    assert_eq!(&again, outcome, "{ctx}: replay of entry {}", i + 1);
                    stats.replayed += 1;
                }
                assert_eq!(store.hash(0).unwrap(), hash, "{ctx}");
                assert_eq!(store.revision(), model.rev(), "{ctx}");
            }
            _ => {}
        }
    }
    while store.compact_step(100).unwrap() {}
    assert_eq!(
        rev_tree_entries(store.backend(), Some(model.compacted)),
        model.hist[model.compacted.max(1) as usize].len(),
        "seed {seed}: after the last compaction step"
    );
    assert_eq!(
        store.index().len(),
        rev_tree_entries(store.backend(), None),
        "seed {seed}: the key index lists exactly the rev tree"
    );
    // Every revision that is still readable, in full.
    for rev in model.compacted.max(1)..=model.rev() {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        };
        let want: Vec<KeyValue> = model.hist[rev as usize].values().cloned().collect();
        assert_eq!(
            store.range(&req).unwrap().1.kvs,
            want,
            "seed {seed}: final read at {rev}"
        );
    }
    stats
}

#[test]
fn random_operations_match_the_model() {
    for seed in 1..=8 {
        let stats = run(seed, 4000);
        assert!(
            stats.txns > 100 && stats.compactions > 5 && stats.crashes > 5,
            "{stats:?}"
        );
        assert!(
            stats.writes_ok > 100 && stats.write_errors > 20 && stats.replayed > 0,
            "{stats:?}"
        );
    }
}
