//! Reads at a revision, answered straight from the backend's ordered trees.
//!
//! A [`Reader`] is a read view plus the three numbers that give it meaning: the latest
//! revision it holds (`rev`), the compacted revision and the live key count. At `rev`
//! itself a read walks the `live` tree (one entry per existing key, 40 bytes of
//! metadata); below it, the `idx` tree (every kept revision of every key, ordered by
//! (key, revision)). Values are fetched from the `rev` tree only for the key-values a
//! response returns, so `count_only`, `keys_only` and `limit` never read the values
//! of the rest of the range.
//!
//! Historical walk: a forward scan of `idx` from the range start keeps, for the key
//! under the cursor, the newest entry with `main <= rev`. It leaves a key early — and
//! re-seeks just past it — when it meets a newer entry or when the key has more than
//! [`DEEP_HISTORY`] old entries (then one reverse seek finds the newest one), so a key
//! with a long history costs O(log n), and a compacted range is one sequential scan.

use super::backend::ReadView;
use super::keys::*;
use super::types::*;

/// Entries of one key read sequentially before switching to a reverse seek.
pub const DEEP_HISTORY: usize = 8;

/// Which keys a request names (etcd's `key`/`range_end` conventions).
#[derive(Clone, Copy, Debug)]
pub enum Span<'k> {
    Key(&'k [u8]),
    /// `[start, end)`; `end == None`: every key `>= start`.
    Range {
        start: &'k [u8],
        end: Option<&'k [u8]>,
    },
}

pub fn span<'k>(key: &'k [u8], range_end: &'k [u8]) -> Span<'k> {
    match range_end {
        [] => Span::Key(key),
        [0] => Span::Range {
            start: key,
            end: None,
        },
        end => Span::Range {
            start: key,
            end: Some(end),
        },
    }
}

/// A HashKV-like digest of the keyspace at one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// crc32 over every live key-value at `revision`, in key order.
    pub hash: u32,
    pub revision: i64,
    pub compact_revision: i64,
}

/// A read view with its revision bounds. Cheap to make; borrows the view.
pub struct Reader<'a, V: ReadView + ?Sized> {
    pub(crate) view: &'a V,
    /// The newest revision the view holds; the `live` tree reflects exactly it.
    pub(crate) rev: i64,
    pub(crate) compacted: i64,
    pub(crate) live_count: i64,
}

fn storage(op: &str, e: super::backend::BackendError) -> KvError {
    KvError::Storage(format!("{op}: {e}"))
}

fn cmp_holds(op: CompareOp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CompareOp::Equal => o == Equal,
        CompareOp::NotEqual => o != Equal,
        CompareOp::Greater => o == Greater,
        CompareOp::Less => o == Less,
    }
}

/// Key-value under construction in a range: key, metadata, value once fetched.
type Picked = (Vec<u8>, LiveMeta, Option<Vec<u8>>);

impl<'a, V: ReadView + ?Sized> Reader<'a, V> {
    /// A reader over any view holding a store (e.g. a backend snapshot): reads the
    /// store's state from the view's `meta` tree.
    pub fn open(view: &'a V) -> Result<Self, KvError> {
        let Some(v) = view
            .get(TREE_META, META_STATE_KEY)
            .map_err(|e| storage("read meta state", e))?
        else {
            return Err(KvError::Storage(
                "read meta state: the view holds no mvcc store".into(),
            ));
        };
        let s = State::decode(&v)?;
        Ok(Reader {
            view,
            rev: s.rev,
            compacted: s.compacted,
            live_count: s.live_count,
        })
    }

    pub fn revision(&self) -> i64 {
        self.rev
    }

    /// etcd's rules: above the current revision → `FutureRevision`; `<= 0` → current;
    /// below the compacted revision → `Compacted`.
    pub fn resolve(&self, rev: i64) -> Result<i64, KvError> {
        if rev > self.rev {
            Err(KvError::FutureRevision(self.rev))
        } else if rev <= 0 {
            Ok(self.rev)
        } else if rev < self.compacted {
            Err(KvError::Compacted(self.compacted))
        } else {
            Ok(rev)
        }
    }

    /// The newest idx entry of the key with prefix `prefix` at or below `rev`.
    fn idx_latest(&self, prefix: &[u8], rev: i64) -> Result<Option<(Rev, u8, Meta)>, KvError> {
        let mut hi = prefix.to_vec();
        hi.extend_from_slice(
            &Rev {
                main: rev + 1,
                sub: 0,
            }
            .encode(),
        );
        let mut found = None;
        self.view
            .scan(TREE_IDX, prefix, Some(&hi), true, &mut |k, v| {
                found = Some(split_idx_key(k).and_then(|(_, r)| {
                    let (kind, meta) = decode_idx_value(k, v)?;
                    Ok((r, kind, meta))
                }));
                false
            })
            .map_err(|e| storage("scan idx", e))?;
        found.transpose()
    }

    /// The key's state at `rev` (already resolved), if it exists then.
    pub(crate) fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<LiveMeta>, KvError> {
        if rev == self.rev {
            let v = self
                .view
                .get(TREE_LIVE, key)
                .map_err(|e| storage("get live", e))?;
            return v.map(|v| decode_live(key, &v)).transpose();
        }
        Ok(match self.idx_latest(&idx_prefix(key), rev)? {
            Some((r, KIND_PUT, meta)) => Some(LiveMeta { rev: r, meta }),
            _ => None,
        })
    }

    /// The value written at `rev`.
    pub(crate) fn value_at(&self, rev: Rev) -> Result<Vec<u8>, KvError> {
        let k = rev.encode();
        let v = self
            .view
            .get(TREE_REV, &k)
            .map_err(|e| storage("get rev", e))?
            .ok_or_else(|| corrupt(TREE_REV, &k, "indexed revision missing"))?;
        let r = decode_rev_record(&k, &v)?;
        if r.kind != KIND_PUT {
            return Err(corrupt(TREE_REV, &k, "value of a tombstone requested"));
        }
        Ok(r.value.to_vec())
    }

    pub(crate) fn key_value(
        &self,
        key: &[u8],
        lm: LiveMeta,
        with_value: bool,
    ) -> Result<KeyValue, KvError> {
        Ok(KeyValue {
            key: key.to_vec(),
            create_revision: lm.meta.create,
            mod_revision: lm.rev.main,
            version: lm.meta.version,
            value: if with_value {
                self.value_at(lm.rev)?
            } else {
                Vec::new()
            },
            lease: lm.meta.lease,
        })
    }

    /// Calls `f(key, state)` for every key of `sp` that exists at `rev` (resolved), in
    /// key order (descending if `reverse`, which needs `rev == self.rev`), until `f`
    /// returns `false`.
    pub(crate) fn visit(
        &self,
        sp: Span<'_>,
        rev: i64,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], LiveMeta) -> bool,
    ) -> Result<(), KvError> {
        assert!(
            !reverse || rev == self.rev,
            "reverse walk below the live revision"
        );
        match sp {
            Span::Key(k) => {
                if let Some(lm) = self.get_at(k, rev)? {
                    f(k, lm);
                }
                Ok(())
            }
            Span::Range { start, end } if rev == self.rev => {
                let mut err = None;
                self.view
                    .scan(
                        TREE_LIVE,
                        start,
                        end,
                        reverse,
                        &mut |k, v| match decode_live(k, v) {
                            Ok(lm) => f(k, lm),
                            Err(e) => {
                                err = Some(e);
                                false
                            }
                        },
                    )
                    .map_err(|e| storage("scan live", e))?;
                err.map_or(Ok(()), Err)
            }
            Span::Range { start, end } => self.visit_history(start, end, rev, f),
        }
    }

    fn visit_history(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        rev: i64,
        f: &mut dyn FnMut(&[u8], LiveMeta) -> bool,
    ) -> Result<(), KvError> {
        // Emits a key's newest entry <= rev unless it is a tombstone; false = stop.
        fn emit(
            f: &mut dyn FnMut(&[u8], LiveMeta) -> bool,
            prefix: &[u8],
            best: Option<(Rev, u8, Meta)>,
        ) -> Result<bool, KvError> {
            match best {
                Some((r, KIND_PUT, meta)) => {
                    Ok(f(&unescape_prefix(prefix)?, LiveMeta { rev: r, meta }))
                }
                _ => Ok(true),
            }
        }
        let hi = end.map(idx_lower);
        let mut cursor = idx_lower(start);
        loop {
            let mut prefix: Vec<u8> = Vec::new();
            let mut best: Option<(Rev, u8, Meta)> = None;
            let mut steps = 0usize;
            // Set when the scan stopped early: where to go on, and whether to look the
            // current key up with a reverse seek first.
            let mut resume: Option<(Vec<u8>, bool)> = None;
            let mut stopped = false;
            let mut err: Option<KvError> = None;
            let mut step = |k: &[u8], v: &[u8]| -> Result<bool, KvError> {
                let (p, r) = split_idx_key(k)?;
                if p != &prefix[..] {
                    if !emit(f, &prefix, best.take())? {
                        stopped = true;
                        return Ok(false);
                    }
                    prefix.clear();
                    prefix.extend_from_slice(p);
                    steps = 0;
                }
                if r.main > rev {
                    // The rest of this key is newer than rev.
                    if !emit(f, &prefix, best.take())? {
                        stopped = true;
                        return Ok(false);
                    }
                    resume = Some((idx_after(&prefix), false));
                    return Ok(false);
                }
                let (kind, meta) = decode_idx_value(k, v)?;
                best = Some((r, kind, meta));
                steps += 1;
                if steps >= DEEP_HISTORY {
                    resume = Some((idx_after(&prefix), true));
                    return Ok(false);
                }
                Ok(true)
            };
            self.view
                .scan(
                    TREE_IDX,
                    &cursor,
                    hi.as_deref(),
                    false,
                    &mut |k, v| match step(k, v) {
                        Ok(go) => go,
                        Err(e) => {
                            err = Some(e);
                            false
                        }
                    },
                )
                .map_err(|e| storage("scan idx", e))?;
            if let Some(e) = err {
                return Err(e);
            }
            if stopped {
                return Ok(());
            }
            match resume {
                None => {
                    emit(f, &prefix, best)?;
                    return Ok(());
                }
                Some((next, deep)) => {
                    if deep && !emit(f, &prefix, self.idx_latest(&prefix, rev)?)? {
                        return Ok(());
                    }
                    cursor = next;
                }
            }
        }
    }

    /// etcd's Range (see the module docs of `super` for the rules). Returns the
    /// response; its header revision is `self.rev`, whatever revision was read.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let rev = self.resolve(req.revision)?;
        let sp = span(&req.key, &req.range_end);
        // Every key is >= "\0" (keys are non-empty): the whole keyspace's count at the
        // current revision is kept, so nothing needs walking just to count it.
        let known_count = match sp {
            Span::Range {
                start: [0],
                end: None,
            } if rev == self.rev => Some(self.live_count),
            _ => None,
        };
        // At the current revision the live tree holds one entry per key: counting is a
        // plain scan, with nothing decoded.
        let live_range = match sp {
            Span::Range { start, end } if rev == self.rev => Some((start, end)),
            _ => None,
        };
        if req.count_only {
            let count = match (known_count, live_range) {
                (Some(c), _) => Some(c),
                (None, Some((start, end))) => Some(self.count_live(start, end)?),
                _ => None,
            };
            if let Some(count) = count {
                return Ok(RangeResponse {
                    kvs: vec![],
                    more: false,
                    count,
                });
            }
        }
        // etcd: a non-key target sorts ascending by default; key ascending is the
        // natural order.
        let order = match (req.sort_target, req.sort_order) {
            (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
            (t, SortOrder::None) if t != SortTarget::Key => SortOrder::Ascend,
            (_, o) => o,
        };
        let key_desc = order == SortOrder::Descend && req.sort_target == SortTarget::Key;
        // Streaming: the walk's order is the answer's, so only limit+1 are kept.
        let streaming = order == SortOrder::None || (key_desc && rev == self.rev);
        let limit = if req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };
        let keep = |lm: &LiveMeta| {
            (req.max_mod_revision == 0 || lm.rev.main <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || lm.rev.main >= req.min_mod_revision)
                && (req.max_create_revision == 0 || lm.meta.create <= req.max_create_revision)
                && (req.min_create_revision == 0 || lm.meta.create >= req.min_create_revision)
        };
        let mut count = 0i64;
        let mut picked: Vec<Picked> = Vec::new();
        let mut stopped_at: Option<Vec<u8>> = None;
        self.visit(sp, rev, streaming && key_desc, &mut |k, lm| {
            count += 1;
            if !req.count_only && keep(&lm) && (!streaming || picked.len() <= limit) {
                picked.push((k.to_vec(), lm, None));
            }
            if streaming && picked.len() > limit {
                // limit + 1 found: what is left only needs counting, if that.
                if known_count.is_some() {
                    return false;
                }
                if live_range.is_some() {
                    stopped_at = Some(k.to_vec());
                    return false;
                }
            }
            true
        })?;
        if let (Some(k), Some((start, end))) = (stopped_at, live_range) {
            count += if key_desc {
                self.count_live(start, Some(&k))?
            } else {
                let mut after = k;
                after.push(0);
                self.count_live(&after, end)?
            };
        }
        let count = known_count.unwrap_or(count);
        if req.count_only {
            return Ok(RangeResponse {
                kvs: vec![],
                more: false,
                count,
            });
        }
        if !streaming {
            self.sort(&mut picked, req.sort_target, order == SortOrder::Descend)?;
        }
        let more = picked.len() > limit;
        picked.truncate(limit);
        let mut kvs = Vec::with_capacity(picked.len());
        for (key, lm, value) in picked {
            let mut kv = self.key_value(&key, lm, false)?;
            if !req.keys_only {
                kv.value = match value {
                    Some(v) => v,
                    None => self.value_at(lm.rev)?,
                };
            }
            kvs.push(kv);
        }
        Ok(RangeResponse { kvs, more, count })
    }

    /// Keys in `[start, end)` at `self.rev`.
    fn count_live(&self, start: &[u8], end: Option<&[u8]>) -> Result<i64, KvError> {
        let mut n = 0i64;
        self.view
            .scan(TREE_LIVE, start, end, false, &mut |_, _| {
                n += 1;
                true
            })
            .map_err(|e| storage("count live", e))?;
        Ok(n)
    }

    /// Stable sort of key-ordered input: ties keep ascending key order.
    fn sort(&self, picked: &mut [Picked], target: SortTarget, desc: bool) -> Result<(), KvError> {
        if target == SortTarget::Value {
            for p in picked.iter_mut() {
                p.2 = Some(self.value_at(p.1.rev)?);
            }
        }
        picked.sort_by(|a, b| {
            let o = match target {
                SortTarget::Key => a.0.cmp(&b.0),
                SortTarget::Version => a.1.meta.version.cmp(&b.1.meta.version),
                SortTarget::Create => a.1.meta.create.cmp(&b.1.meta.create),
                SortTarget::Mod => a.1.rev.main.cmp(&b.1.rev.main),
                SortTarget::Value => a.2.cmp(&b.2),
            };
            if desc {
                o.reverse()
            } else {
                o
            }
        });
        Ok(())
    }

    /// etcd's `applyCompare` at `self.rev`: every key in the span must satisfy it; an
    /// empty span compares a zero KeyValue, except that a Value compare then fails.
    pub fn compare(&self, c: &Compare) -> Result<bool, KvError> {
        let sp = span(&c.key, &c.range_end);
        let mut any = false;
        let mut holds = true;
        let mut err = None;
        let judge = |lm: Option<LiveMeta>, value: &[u8]| {
            let lm = lm.unwrap_or(LiveMeta {
                rev: Rev { main: 0, sub: 0 },
                meta: Meta::default(),
            });
            let o = match &c.target {
                CompareTarget::Version(x) => lm.meta.version.cmp(x),
                CompareTarget::Create(x) => lm.meta.create.cmp(x),
                CompareTarget::Mod(x) => lm.rev.main.cmp(x),
                CompareTarget::Lease(x) => lm.meta.lease.cmp(x),
                CompareTarget::Value(x) => value.cmp(&x[..]),
            };
            cmp_holds(c.op, o)
        };
        self.visit(sp, self.rev, false, &mut |_, lm| {
            any = true;
            let value = if matches!(c.target, CompareTarget::Value(_)) {
                match self.value_at(lm.rev) {
                    Ok(v) => v,
                    Err(e) => {
                        err = Some(e);
                        return false;
                    }
                }
            } else {
                Vec::new()
            };
            holds = judge(Some(lm), &value);
            holds
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        if !any {
            return Ok(!matches!(c.target, CompareTarget::Value(_)) && judge(None, b""));
        }
        Ok(holds)
    }

    /// Events with revision `>= from` in revision order. Returns at least `limit`
    /// events when there are that many, and never splits one revision's events (a Txn)
    /// between two calls, so the next call starts at the last event's revision + 1.
    /// `from <= compacted` → `Compacted` (history there is incomplete).
    pub fn changes_since(&self, from: i64, limit: usize) -> Result<Vec<Event>, KvError> {
        if from <= self.compacted {
            return Err(KvError::Compacted(self.compacted));
        }
        let mut out = Vec::new();
        if from > self.rev {
            return Ok(out);
        }
        let lo = Rev { main: from, sub: 0 }.encode();
        let mut err = None;
        let mut step = |k: &[u8], v: &[u8]| -> Result<bool, KvError> {
            let r = Rev::decode(k, TREE_REV)?;
            if out.len() >= limit
                && out
                    .last()
                    .is_some_and(|e: &Event| e.kv.mod_revision != r.main)
            {
                return Ok(false);
            }
            let rec = decode_rev_record(k, v)?;
            let (kind, kv) = if rec.kind == KIND_PUT {
                (
                    EventKind::Put,
                    KeyValue {
                        key: rec.key.to_vec(),
                        create_revision: rec.meta.create,
                        mod_revision: r.main,
                        version: rec.meta.version,
                        value: rec.value.to_vec(),
                        lease: rec.meta.lease,
                    },
                )
            } else {
                (
                    EventKind::Delete,
                    KeyValue {
                        key: rec.key.to_vec(),
                        mod_revision: r.main,
                        ..Default::default()
                    },
                )
            };
            out.push(Event { kind, kv });
            Ok(true)
        };
        self.view
            .scan(TREE_REV, &lo, None, false, &mut |k, v| match step(k, v) {
                Ok(go) => go,
                Err(e) => {
                    err = Some(e);
                    false
                }
            })
            .map_err(|e| storage("scan rev", e))?;
        err.map_or(Ok(out), Err)
    }

    /// crc32 over every key-value alive at `rev` (0 = current), in key order: key,
    /// create, mod, version, lease and value, lengths first. Equal on replicas that
    /// applied the same entries, whatever their compaction.
    pub fn hash(&self, rev: i64) -> Result<HashKv, KvError> {
        let rev = self.resolve(rev)?;
        let mut h = crc32fast::Hasher::new();
        let mut err = None;
        let sp = Span::Range {
            start: b"",
            end: None,
        };
        self.visit(sp, rev, false, &mut |k, lm| {
            let value = match self.value_at(lm.rev) {
                Ok(v) => v,
                Err(e) => {
                    err = Some(e);
                    return false;
                }
            };
            h.update(&(k.len() as u64).to_be_bytes());
            h.update(k);
            for x in [lm.meta.create, lm.rev.main, lm.meta.version, lm.meta.lease] {
                h.update(&x.to_be_bytes());
            }
            h.update(&(value.len() as u64).to_be_bytes());
            h.update(&value);
            true
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        Ok(HashKv {
            hash: h.finalize(),
            revision: rev,
            compact_revision: self.compacted,
        })
    }
}
