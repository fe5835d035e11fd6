//! Reads at a revision: the key index (in memory, [`super::index`]) says which keys exist
//! at the revision read and with what metadata; values are fetched from the `rev` tree
//! only for the key-values a response returns, so `count_only`, `keys_only` and `limit`
//! never read the values of the rest of the range. A read at an older revision costs the
//! same walk as one at the current revision (a binary search per key in its revisions).

use super::backend::ReadView;
use super::index::Index;
use super::keys::*;
use super::types::*;

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

/// A read view, the key index that describes it, and the three numbers that give it
/// meaning: the latest revision it holds (`rev`), the compacted revision and the live key
/// count. Cheap to make; borrows both.
pub struct Reader<'a, V: ReadView + ?Sized> {
    pub(crate) view: &'a V,
    pub(crate) index: &'a Index,
    /// The newest revision the view holds.
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
    /// A reader over any view holding a store (e.g. a backend snapshot), with `index`
    /// built from that view ([`Index::load`]): reads the store's state from the view's
    /// `meta` tree.
    pub fn open(view: &'a V, index: &'a Index) -> Result<Self, KvError> {
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
            index,
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

    /// The key's state at `rev` (already resolved), if it exists then.
    pub(crate) fn get_at(&self, key: &[u8], rev: i64) -> Option<LiveMeta> {
        self.index.at(key, rev).and_then(|e| e.live())
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
    /// key order (descending if `reverse`), until `f` returns `false`.
    pub(crate) fn visit(
        &self,
        sp: Span<'_>,
        rev: i64,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], LiveMeta) -> bool,
    ) {
        match sp {
            Span::Key(k) => {
                if let Some(lm) = self.get_at(k, rev) {
                    f(k, lm);
                }
            }
            Span::Range { start, end } => self.index.visit(start, end, rev, reverse, f),
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
        if let (true, Some(count)) = (req.count_only, known_count) {
            return Ok(RangeResponse {
                kvs: vec![],
                more: false,
                count,
            });
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
        let streaming = order == SortOrder::None || key_desc;
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
        self.visit(sp, rev, key_desc, &mut |k, lm| {
            count += 1;
            if !req.count_only && keep(&lm) && (!streaming || picked.len() <= limit) {
                picked.push((k.to_vec(), lm, None));
            }
            // limit + 1 found: what is left only needs counting, unless it is known.
            !(streaming && picked.len() > limit && known_count.is_some())
        });
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
        });
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
        });
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
