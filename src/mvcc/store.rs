//! The write side: [`Store::apply`] turns one committed Raft entry into backend writes.
//!
//! Invariants:
//! - `state` in memory is the state after the last apply; the `meta/state` record is
//!   written into the backend just before every commit (see "Deferred writes"), so a
//!   commit holds the data of exactly the entries up to the applied index it records,
//!   and `applied_index()` after a reopen is exactly where WAL replay must resume. A
//!   two-phase commit ([`Store::begin_commit`]) seals the state as of the last apply;
//!   applies during its job go into the next version.
//! - An entry's user errors (`KeyNotFound`, `LeaseNotFound`, `Compacted`...) are all
//!   found before its first data write, so a failed request writes nothing but the
//!   applied index (asserted). A backend error in the middle of an apply leaves a
//!   partial write set in the live state: the store then refuses every further apply and
//!   commit ("poisoned"); reopening from the last commit and replaying the WAL recovers.
//! - Every write of one entry has main revision `rev + 1` and sub revisions 0, 1, ...
//!   in execution order; an entry that changes nothing does not consume a revision
//!   (etcd).
//! - Compaction: `state.compacted` moves at apply; rev-tree entries below
//!   `state.compact_cursor` (<= `(compacted + 1, 0)`) have been physically compacted.
//!   Entries between the cursor and the compacted revision are still present but only
//!   reachable by reads below the compacted revision, which are refused.
//!
//! Dedup sessions (tree `sess`: session → seq:8 index:8 rkyv(StoredOutcome); tree
//! `sess_age`: index:8 session:8 → empty): for each client session the store keeps the
//! last applied sequence number and its outcome. The same seq again returns the stored
//! outcome without applying; a lower seq returns `StaleSequence(last)` (so does a
//! retry whose outcome was over `session_outcome_bytes_max` to keep). At most
//! `sessions_max` sessions are kept; beyond that the session whose last write has the
//! lowest log index is evicted — deterministic on every replica, since it depends on
//! log indices only. A retry from an evicted session applies again: clients must not
//! retry a write after more than `sessions_max` other sessions have written since.
//!
//! Deferred writes: the state record and the session records change with every apply
//! but only the last version before a commit matters (nothing reads them from the
//! backend's live state: reads take the state from memory, dedup checks the pending
//! sessions first). So applies keep them in memory (`state`, `pending_sessions`: a
//! session's last outcome, encoded only when written or asked for by a retry) and
//! [`Store::begin_commit`] writes them into the backend's transaction first: per put, one
//! B+tree write (the rev tree; the key index is in memory) instead of five. Session eviction still happens at
//! the write that goes over `sessions_max`, choosing the same session as before.

use std::collections::hash_map::{Entry, HashMap};

use rkyv::{Archive, Deserialize, Serialize};

use super::backend::{Backend, BackendError, BackendJob, ReadView};
use super::index::{Entry as IndexEntry, Index};
use super::keys::*;
use super::read::{span, HashKv, Reader};
use super::types::*;
use super::validate::{validate_range, validate_write, Limits};

/// Revisions compacted per scan of the rev tree (bounds compaction's memory).
const COMPACT_BATCH: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub limits: Limits,
    /// Dedup sessions kept (>= 1).
    pub sessions_max: u64,
    /// Compacted revisions physically removed inside the apply of a Compact; the rest
    /// is left to [`Store::compact_step`].
    pub compact_inline_revisions: usize,
    /// Largest encoded outcome kept for dedup; a larger one (a Txn with big ranges) is
    /// replaced by `StaleSequence(seq)`, so its retry is still not applied twice.
    pub session_outcome_bytes_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            limits: Limits::default(),
            sessions_max: 16 * 1024,
            compact_inline_revisions: COMPACT_BATCH,
            session_outcome_bytes_max: 64 * 1024,
        }
    }
}

/// What applying one entry produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The store revision to report in the response header (the entry's revision if it
    /// wrote, else the current one; for a duplicate, the original one).
    pub revision: i64,
    pub response: Result<WriteResponse, KvError>,
    /// Not applied now: answered from the dedup record.
    pub duplicate: bool,
}

/// Why an entry could not be applied at all (the applied index did not move).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// `index <= applied`: refused, nothing changed. Replaying the WAL from
    /// `applied_index() + 1` never hits this.
    AlreadyApplied { index: u64, applied: u64 },
    /// The backend failed; the store is poisoned (see module docs).
    Storage(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::AlreadyApplied { index, applied } => {
                write!(
                    f,
                    "entry {index} refused: entries up to {applied} are applied"
                )
            }
            ApplyError::Storage(m) => write!(f, "apply failed: {m}"),
        }
    }
}

impl std::error::Error for ApplyError {}

#[derive(Archive, Serialize, Deserialize)]
struct StoredOutcome {
    revision: i64,
    response: Option<WriteResponse>,
    error: Option<KvError>,
}

/// Writes of the entry being applied.
struct WriteCtx {
    /// The revision this entry writes at.
    main: i64,
    /// Writes so far (the next sub revision).
    sub: i64,
    live_delta: i64,
}

pub struct Store<B: Backend> {
    backend: B,
    /// Every revision in the rev tree, by key (see [`super::index`]).
    index: Index,
    state: State,
    config: StoreConfig,
    poisoned: Option<String>,
    /// Session records written since the last commit, not yet in the backend (see
    /// "Deferred writes" in the module docs).
    pending_sessions: HashMap<u64, PendingSession>,
    /// The state record differs from the backend's copy (set by every apply and
    /// compaction step; written at the next commit).
    state_dirty: bool,
    /// The applied index sealed into the backend commit in flight.
    committing: Option<u64>,
    /// Opened in format [`FORMAT_V1`]: the next state write also rewrites the format
    /// record.
    upgrade: bool,
}

/// A session's newest write, held until the next commit. Its record is encoded only
/// then (or when a retry asks for it): a session usually writes many times between
/// two commits and only the last record is kept (encoding every one was ~4% of a
/// server's CPU under puts).
struct PendingSession {
    seq: u64,
    /// The log index of that write (its `sess_age` key).
    index: u64,
    revision: i64,
    response: Result<WriteResponse, KvError>,
    /// The index of the session's record in the backend, if it has one.
    backend_index: Option<u64>,
}

fn age_key(index: u64, session: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&index.to_be_bytes());
    k[8..].copy_from_slice(&session.to_be_bytes());
    k
}

/// A store commit in flight (see [`Store::begin_commit`]): run `job` (in any task; it
/// borrows nothing from the store), then hand its outcome to [`Store::finish_commit`].
pub struct StoreCommit<J> {
    /// The applied index inside the sealed version: durable once the job succeeds.
    pub applied_index: u64,
    pub job: J,
}

fn storage(op: &str, e: BackendError) -> KvError {
    KvError::Storage(format!("{op}: {e}"))
}

impl<B: Backend> Store<B> {
    pub fn open(backend: B) -> Result<Self, KvError> {
        Self::open_with(backend, StoreConfig::default())
    }

    /// Opens the store in `backend`, initializing an empty one: reads the meta records
    /// and rebuilds the key index with one scan of the rev tree (checked against the
    /// stored key count).
    pub fn open_with(mut backend: B, config: StoreConfig) -> Result<Self, KvError> {
        assert!(config.sessions_max >= 1, "sessions_max must be >= 1");
        let format = backend
            .get(TREE_META, META_FORMAT_KEY)
            .map_err(|e| storage("open: read meta format", e))?;
        match &format {
            Some(f) if f == FORMAT || f == FORMAT_V1 => {}
            Some(f) => {
                return Err(KvError::Storage(format!(
                    "open: meta format is {:?}, expected {:?}",
                    String::from_utf8_lossy(f),
                    String::from_utf8_lossy(FORMAT)
                )))
            }
            None => {
                let mut nonempty = false;
                for tree in [TREE_META, TREE_REV] {
                    backend
                        .scan(tree, b"", None, false, &mut |_, _| {
                            nonempty = true;
                            false
                        })
                        .map_err(|e| storage("open: probe trees", e))?;
                }
                if nonempty {
                    return Err(KvError::Storage(
                        "open: backend holds data but no mvcc format record".into(),
                    ));
                }
                backend
                    .put(TREE_META, META_FORMAT_KEY, FORMAT)
                    .and_then(|_| backend.put(TREE_META, META_STATE_KEY, &State::INITIAL.encode()))
                    .map_err(|e| storage("open: initialize meta", e))?;
            }
        }
        let raw = backend
            .get(TREE_META, META_STATE_KEY)
            .map_err(|e| storage("open: read meta state", e))?
            .ok_or_else(|| KvError::Storage("open: meta state record missing".into()))?;
        let state = State::decode(&raw)?;
        let index = Index::load(&backend)?;
        let live = index.live_keys() as i64;
        if live != state.live_count {
            return Err(corrupt(
                TREE_META,
                META_STATE_KEY,
                &format!(
                    "the state counts {} live keys, the rev tree holds {live}",
                    state.live_count
                ),
            ));
        }
        let upgrade = format.as_deref() == Some(FORMAT_V1);
        Ok(Store {
            backend,
            index,
            state,
            config,
            poisoned: None,
            pending_sessions: HashMap::new(),
            state_dirty: upgrade,
            upgrade,
            committing: None,
        })
    }

    pub fn applied_index(&self) -> u64 {
        self.state.applied
    }
    pub fn revision(&self) -> i64 {
        self.state.rev
    }
    pub fn compacted_revision(&self) -> i64 {
        self.state.compacted
    }
    /// Keys that exist at the current revision.
    pub fn key_count(&self) -> i64 {
        self.state.live_count
    }
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }
    /// The backend. Its live state lacks the deferred writes (session and state
    /// records) until the next commit or [`Store::write_deferred`].
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The key index (for tests: it must list exactly the rev tree's entries).
    #[cfg(test)]
    pub(crate) fn index(&self) -> &Index {
        &self.index
    }
    /// The backend, to damage it in tests.
    #[cfg(test)]
    pub(crate) fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }
    /// The backend, as of the last commit or [`Store::write_deferred`].
    pub fn into_backend(self) -> B {
        self.backend
    }
    /// A read view of the last commit; read it with [`Reader::open`] or [`range_on`].
    pub fn snapshot(&self) -> B::Snapshot {
        self.backend.snapshot()
    }

    /// A reader of the latest applied state (committed or not).
    pub fn reader(&self) -> Reader<'_, B> {
        Reader {
            view: &self.backend,
            index: &self.index,
            rev: self.state.rev,
            compacted: self.state.compacted,
            live_count: self.state.live_count,
        }
    }

    /// Serves a Range on the latest applied state: (header revision, response).
    pub fn range(&self, req: &RangeRequest) -> Result<(i64, RangeResponse), KvError> {
        validate_range(req, &self.config.limits)?;
        Ok((self.state.rev, self.reader().range(req)?))
    }

    pub fn changes_since(&self, from: i64, limit: usize) -> Result<Vec<Event>, KvError> {
        self.reader().changes_since(from, limit)
    }

    pub fn hash(&self, rev: i64) -> Result<HashKv, KvError> {
        self.reader().hash(rev)
    }

    /// Makes every apply so far durable (one backend commit): begin, run, finish.
    pub async fn commit(&mut self) -> Result<(), KvError> {
        let Some(c) = self.begin_commit()? else {
            return Ok(());
        };
        let done = c.job.run().await;
        self.finish_commit(done).map(|_| ())
    }

    /// Seals every apply so far (the applied index and state record with them) as the
    /// backend's next version and returns its job; applies go on at once on top of it.
    /// `None`: nothing to commit. Panics if a commit is already in flight.
    pub fn begin_commit(&mut self) -> Result<Option<StoreCommit<B::Job>>, KvError> {
        if let Some(p) = &self.poisoned {
            return Err(KvError::Storage(format!(
                "commit refused after an earlier storage failure: {p}"
            )));
        }
        self.write_deferred()?;
        assert!(
            self.committing.is_none(),
            "begin_commit while the commit of applied index {:?} is in flight",
            self.committing
        );
        match self.backend.begin_commit() {
            Ok(None) => Ok(None),
            Ok(Some(job)) => {
                let applied_index = self.state.applied;
                self.committing = Some(applied_index);
                Ok(Some(StoreCommit { applied_index, job }))
            }
            Err(e) => Err(self.poison_commit(e)),
        }
    }

    /// Takes the outcome of the job in flight: Ok(the applied index now durable), or
    /// the failure, after which the store refuses every apply and commit (reopen).
    pub fn finish_commit(&mut self, done: <B::Job as BackendJob>::Done) -> Result<u64, KvError> {
        let applied = self
            .committing
            .take()
            .expect("finish_commit with no commit in flight");
        match self.backend.finish_commit(done) {
            Ok(()) => Ok(applied),
            Err(e) => Err(self.poison_commit(e)),
        }
    }

    /// Whether a commit's job is in flight.
    pub fn commit_in_flight(&self) -> bool {
        self.committing.is_some()
    }

    fn poison_commit(&mut self, e: BackendError) -> KvError {
        let msg = format!("commit: {e}");
        self.poisoned = Some(msg.clone());
        KvError::Storage(msg)
    }

    fn check_apply(&self, index: u64) -> Result<(), ApplyError> {
        if let Some(p) = &self.poisoned {
            return Err(ApplyError::Storage(format!(
                "apply refused after an earlier storage failure: {p}"
            )));
        }
        if index <= self.state.applied {
            return Err(ApplyError::AlreadyApplied {
                index,
                applied: self.state.applied,
            });
        }
        Ok(())
    }

    fn poison(&mut self, e: KvError) -> ApplyError {
        let msg = e.to_string();
        self.poisoned = Some(msg.clone());
        ApplyError::Storage(msg)
    }

    /// Records entry `index` as applied without a KV write (conf changes, empty
    /// entries).
    pub fn advance_applied(&mut self, index: u64) -> Result<(), ApplyError> {
        self.check_apply(index)?;
        self.state.applied = index;
        self.state_dirty = true;
        Ok(())
    }

    /// A hint that `reqs` will be applied soon: brings the index state of the keys their
    /// puts write into the CPU cache. Changes nothing; calling it for a batch of requests
    /// before applying them lets their lookups' cache misses overlap.
    pub fn prefetch<'a>(&self, reqs: impl IntoIterator<Item = &'a WriteRequest>) {
        let keys: Vec<&[u8]> = reqs
            .into_iter()
            .filter_map(|r| match r {
                WriteRequest::Put(p) => Some(&p.key[..]),
                _ => None,
            })
            .collect();
        self.index.prefetch(&keys);
    }

    /// Applies Raft entry `index` carrying `req`. `dedup` = (client session, seq).
    pub fn apply(
        &mut self,
        index: u64,
        req: &WriteRequest,
        dedup: Option<(u64, u64)>,
    ) -> Result<ApplyOutcome, ApplyError> {
        self.check_apply(index)?;
        match self.apply_inner(index, req, dedup) {
            Ok(o) => Ok(o),
            Err(e) => Err(self.poison(e)),
        }
    }

    /// Errors returned are storage failures only.
    fn apply_inner(
        &mut self,
        index: u64,
        req: &WriteRequest,
        dedup: Option<(u64, u64)>,
    ) -> Result<ApplyOutcome, KvError> {
        let mut old_index = None;
        if let Some((session, seq)) = dedup {
            if let Some((last_seq, last_index)) = self.session_header(session)? {
                let outcome = if seq == last_seq {
                    Some(ApplyOutcome {
                        duplicate: true,
                        ..self.load_outcome(session)?
                    })
                } else if seq < last_seq {
                    Some(ApplyOutcome {
                        revision: self.state.rev,
                        response: Err(KvError::StaleSequence(last_seq)),
                        duplicate: true,
                    })
                } else {
                    None
                };
                if let Some(o) = outcome {
                    self.state.applied = index;
                    self.state_dirty = true;
                    return Ok(o);
                }
                old_index = Some(last_index);
            }
        }
        let response = match self.execute(req) {
            Err(KvError::Storage(m)) => return Err(KvError::Storage(m)),
            r => r,
        };
        let outcome = ApplyOutcome {
            revision: self.state.rev,
            response,
            duplicate: false,
        };
        if let Some((session, seq)) = dedup {
            self.save_session(session, seq, index, old_index, &outcome)?;
        }
        self.state.applied = index;
        self.state_dirty = true;
        Ok(outcome)
    }

    /// Writes what applies deferred (session records, the state record) into the
    /// backend's open transaction: [`Store::commit`] does this first. Call it before
    /// [`Store::into_backend`] to keep the live state of everything applied.
    pub fn write_deferred(&mut self) -> Result<(), KvError> {
        if let Some(p) = &self.poisoned {
            return Err(KvError::Storage(format!(
                "write refused after an earlier storage failure: {p}"
            )));
        }
        self.write_deferred_inner().map_err(|e| {
            let msg = e.to_string();
            self.poisoned = Some(msg.clone());
            KvError::Storage(msg)
        })
    }

    fn write_deferred_inner(&mut self) -> Result<(), KvError> {
        let mut pending: Vec<(u64, PendingSession)> = self.pending_sessions.drain().collect();
        // Sessions in index order: the backend sees the writes in apply order.
        pending.sort_unstable_by_key(|(_, p)| p.index);
        for (session, p) in pending {
            if let Some(old) = p.backend_index {
                self.delete_backend(TREE_SESSION_AGE, &age_key(old, session))?;
            }
            let record = self.session_bytes(session, &p)?;
            self.put_backend(TREE_SESSION, &session.to_be_bytes(), &record)?;
            self.put_backend(TREE_SESSION_AGE, &age_key(p.index, session), b"")?;
        }
        if std::mem::take(&mut self.state_dirty) {
            self.backend
                .put(TREE_META, META_STATE_KEY, &self.state.encode())
                .map_err(|e| storage("write meta state", e))?;
            if self.upgrade {
                self.backend
                    .put(TREE_META, META_FORMAT_KEY, FORMAT)
                    .map_err(|e| storage("write meta format", e))?;
                self.upgrade = false;
            }
        }
        Ok(())
    }

    fn execute(&mut self, req: &WriteRequest) -> Result<WriteResponse, KvError> {
        validate_write(req, &self.config.limits)?;
        let mut ctx = WriteCtx {
            main: self.state.rev + 1,
            sub: 0,
            live_delta: 0,
        };
        let r = match req {
            WriteRequest::Put(p) => {
                self.check_put(&self.reader(), p)?;
                self.exec_put(&mut ctx, p).map(WriteResponse::Put)
            }
            WriteRequest::DeleteRange(d) => self
                .exec_delete(&mut ctx, d)
                .map(WriteResponse::DeleteRange),
            WriteRequest::Txn(t) => self.exec_txn_top(&mut ctx, t).map(WriteResponse::Txn),
            WriteRequest::Compact(c) => self.exec_compact(c).map(WriteResponse::Compact),
        };
        if let Err(e) = &r {
            assert!(
                ctx.sub == 0 || matches!(e, KvError::Storage(_)),
                "user error {e:?} after {} writes of revision {}",
                ctx.sub,
                ctx.main
            );
        }
        if ctx.sub > 0 {
            self.state.rev = ctx.main;
            self.state.live_count += ctx.live_delta;
            if self.state.live_count < 0 {
                // Only a count that disagrees with the key index gets here (open checks
                // them against each other).
                return Err(corrupt(
                    TREE_META,
                    META_STATE_KEY,
                    "live key count below zero",
                ));
            }
        }
        r
    }

    /// Reads as of the entry being applied: its own writes so far included.
    fn reader_in(&self, ctx: &WriteCtx) -> Reader<'_, B> {
        Reader {
            view: &self.backend,
            index: &self.index,
            rev: if ctx.sub > 0 { ctx.main } else { ctx.main - 1 },
            compacted: self.state.compacted,
            live_count: self.state.live_count + ctx.live_delta,
        }
    }

    /// etcd's `checkRequestPut`, on the state before the entry.
    fn check_put(&self, r: &Reader<'_, B>, p: &PutRequest) -> Result<(), KvError> {
        if (p.ignore_value || p.ignore_lease) && r.get_at(&p.key, r.rev).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if p.lease != 0 {
            // No leases exist yet.
            return Err(KvError::LeaseNotFound(p.lease));
        }
        Ok(())
    }

    fn put_backend(&mut self, tree: &str, k: &[u8], v: &[u8]) -> Result<(), KvError> {
        self.backend
            .put(tree, k, v)
            .map_err(|e| storage(&format!("put into tree {tree:?}"), e))
    }

    fn delete_backend(&mut self, tree: &str, k: &[u8]) -> Result<(), KvError> {
        let existed = self
            .backend
            .delete(tree, k)
            .map_err(|e| storage(&format!("delete from tree {tree:?}"), e))?;
        if !existed {
            return Err(corrupt(tree, k, "entry to delete is missing"));
        }
        Ok(())
    }

    fn exec_put(&mut self, ctx: &mut WriteCtx, p: &PutRequest) -> Result<PutResponse, KvError> {
        // The entry's reads see its own writes: the key's newest revision is its state.
        let found = self.index.find(&p.key);
        let (prev, prev_value) = {
            let r = self.reader_in(ctx);
            let prev = found.newest.and_then(|e| e.live());
            let value = match prev {
                Some(lm) if p.prev_kv || p.ignore_value => Some(r.value_at(lm.rev)?),
                _ => None,
            };
            (prev, value)
        };
        let rev = Rev {
            main: ctx.main,
            sub: ctx.sub,
        };
        let meta = match prev {
            Some(lm) => Meta {
                create: lm.meta.create,
                version: lm.meta.version + 1,
                lease: if p.ignore_lease {
                    lm.meta.lease
                } else {
                    p.lease
                },
            },
            None => {
                assert!(
                    !p.ignore_value && !p.ignore_lease,
                    "ignore_* on a missing key passed the checks"
                );
                ctx.live_delta += 1;
                Meta {
                    create: ctx.main,
                    version: 1,
                    lease: p.lease,
                }
            }
        };
        let value: &[u8] = if p.ignore_value {
            prev_value
                .as_deref()
                .expect("ignore_value: previous value fetched")
        } else {
            &p.value
        };
        self.put_backend(
            TREE_REV,
            &rev.encode(),
            &encode_rev_record(KIND_PUT, meta, &p.key, value),
        )?;
        self.index.push_found(
            found,
            &p.key,
            IndexEntry {
                rev,
                kind: KIND_PUT,
                meta,
            },
        );
        ctx.sub += 1;
        let prev_kv = match (p.prev_kv, prev) {
            (true, Some(lm)) => Some(KeyValue {
                key: p.key.clone(),
                create_revision: lm.meta.create,
                mod_revision: lm.rev.main,
                version: lm.meta.version,
                value: prev_value.expect("prev_kv: previous value fetched"),
                lease: lm.meta.lease,
            }),
            _ => None,
        };
        Ok(PutResponse { prev_kv })
    }

    fn exec_delete(
        &mut self,
        ctx: &mut WriteCtx,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, KvError> {
        let (victims, prev_kvs) = {
            let r = self.reader_in(ctx);
            let mut victims = Vec::new();
            r.visit(span(&d.key, &d.range_end), r.rev, false, &mut |k, lm| {
                victims.push((k.to_vec(), lm));
                true
            });
            let mut prev_kvs = Vec::new();
            if d.prev_kv {
                for (k, lm) in &victims {
                    prev_kvs.push(r.key_value(k, *lm, true)?);
                }
            }
            (victims, prev_kvs)
        };
        for (k, _) in &victims {
            let rev = Rev {
                main: ctx.main,
                sub: ctx.sub,
            };
            self.put_backend(
                TREE_REV,
                &rev.encode(),
                &encode_rev_record(KIND_TOMBSTONE, Meta::default(), k, b""),
            )?;
            self.index.push(
                k,
                IndexEntry {
                    rev,
                    kind: KIND_TOMBSTONE,
                    meta: Meta::default(),
                },
            );
            ctx.sub += 1;
            ctx.live_delta -= 1;
        }
        Ok(DeleteRangeResponse {
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    /// etcd's Txn: every compare (nested ones too) is evaluated on the state before the
    /// Txn, then the chosen ops are checked (puts' keys and leases, ranges' revisions),
    /// then executed in order, each op seeing the writes of the ops before it.
    fn exec_txn_top(&mut self, ctx: &mut WriteCtx, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        let mut path = Vec::new();
        {
            let r = self.reader_in(ctx);
            txn_path(&r, t, &mut path)?;
            self.check_txn(&r, t, &path, &mut 0)?;
        }
        let mut pos = 0;
        let resp = self.exec_txn(ctx, t, &path, &mut pos)?;
        assert_eq!(pos, path.len(), "txn path not fully walked");
        Ok(resp)
    }

    fn check_txn(
        &self,
        r: &Reader<'_, B>,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<(), KvError> {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match op {
                RequestOp::Range(q) => {
                    r.resolve(q.revision)?;
                }
                RequestOp::Put(p) => self.check_put(r, p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(n) => self.check_txn(r, n, path, pos)?,
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        ctx: &mut WriteCtx,
        t: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, KvError> {
        let succeeded = path[*pos];
        *pos += 1;
        let ops = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(q) => ResponseOp::Range(self.reader_in(ctx).range(q)?),
                RequestOp::Put(p) => ResponseOp::Put(self.exec_put(ctx, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.exec_delete(ctx, d)?),
                RequestOp::Txn(n) => ResponseOp::Txn(self.exec_txn(ctx, n, path, pos)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
        })
    }

    fn exec_compact(&mut self, c: &CompactRequest) -> Result<CompactResponse, KvError> {
        if c.revision <= self.state.compacted {
            return Err(KvError::Compacted(self.state.compacted));
        }
        if c.revision > self.state.rev {
            return Err(KvError::FutureRevision(self.state.rev));
        }
        // Logical compaction is immediate; physical removal is sliced (see compact_step).
        self.state.compacted = c.revision;
        self.compact_slice(self.config.compact_inline_revisions)?;
        Ok(CompactResponse {})
    }

    /// Whether compacted history is still physically present (see [`Self::compact_step`]).
    pub fn compaction_pending(&self) -> bool {
        self.state.compact_cursor
            < Rev {
                main: self.state.compacted + 1,
                sub: 0,
            }
    }

    /// Physically removes up to `max_revisions` more compacted revisions and returns
    /// whether work remains. Apply of a Compact only moves the compacted revision (and
    /// does `compact_inline_revisions` of this work); the server calls this between
    /// apply batches, from a low-priority task, until it returns `false`. Removal is
    /// invisible to every read at or above the compacted revision, so replicas that
    /// slice it differently answer alike (their `hash` agrees). The cursor is part of
    /// the state written with each apply and step, so a restart resumes it.
    pub fn compact_step(&mut self, max_revisions: usize) -> Result<bool, KvError> {
        if let Some(p) = &self.poisoned {
            return Err(KvError::Storage(format!(
                "compaction refused after an earlier storage failure: {p}"
            )));
        }
        match self.compact_slice(max_revisions) {
            Ok(()) => {
                self.state_dirty = true;
                Ok(self.compaction_pending())
            }
            Err(e) => {
                let ApplyError::Storage(m) = self.poison(e) else {
                    unreachable!()
                };
                Err(KvError::Storage(m))
            }
        }
    }

    /// Processes up to `budget` rev-tree entries from the compaction cursor up to the
    /// compacted revision. Each entry deletes the key's previous entry (superseded by
    /// it, both <= compacted) and, if it is a tombstone, itself; so what survives at or
    /// below the compacted revision is each key's newest revision unless a tombstone.
    /// A key untouched since the last compaction keeps its one surviving entry.
    fn compact_slice(&mut self, budget: usize) -> Result<(), KvError> {
        let end = Rev {
            main: self.state.compacted + 1,
            sub: 0,
        };
        let hi = end.encode();
        let mut left = budget;
        while left > 0 && self.state.compact_cursor < end {
            let want = left.min(COMPACT_BATCH);
            let mut batch: Vec<(Rev, Vec<u8>, u8)> = Vec::new();
            let mut err = None;
            let lo = self.state.compact_cursor.encode();
            self.backend
                .scan(TREE_REV, &lo, Some(&hi), false, &mut |k, v| {
                    match Rev::decode(k, TREE_REV).and_then(|r| Ok((r, decode_rev_record(k, v)?))) {
                        Ok((r, rec)) => batch.push((r, rec.key.to_vec(), rec.kind)),
                        Err(e) => {
                            err = Some(e);
                            return false;
                        }
                    }
                    batch.len() < want
                })
                .map_err(|e| storage("compact: scan rev", e))?;
            if let Some(e) = err {
                return Err(e);
            }
            for (r, key, kind) in &batch {
                if let Some(p) = self.index.before(key, *r) {
                    self.remove_revision(key, p)?;
                }
                if *kind == KIND_TOMBSTONE {
                    self.remove_revision(key, *r)?;
                }
            }
            self.state.compact_cursor = match batch.last() {
                Some(&(last, _, _)) if batch.len() == want => Rev {
                    main: last.main,
                    sub: last.sub + 1,
                },
                _ => end,
            };
            left -= batch.len().max(1).min(left);
        }
        Ok(())
    }

    /// Removes revision `rev` of `key` from the rev tree and the index.
    fn remove_revision(&mut self, key: &[u8], rev: Rev) -> Result<(), KvError> {
        self.delete_backend(TREE_REV, &rev.encode())?;
        if !self.index.remove(key, rev) {
            return Err(corrupt(
                TREE_REV,
                &rev.encode(),
                "revision missing from the key index",
            ));
        }
        Ok(())
    }

    fn session_record(&self, session: u64) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(p) = self.pending_sessions.get(&session) {
            return self.session_bytes(session, p).map(Some);
        }
        let key = session.to_be_bytes();
        let v = self
            .backend
            .get(TREE_SESSION, &key)
            .map_err(|e| storage("get session", e))?;
        match v {
            Some(v) if v.len() < 16 => Err(corrupt(TREE_SESSION, &key, "session record too short")),
            v => Ok(v),
        }
    }

    /// (last applied seq, its log index) of a session.
    fn session_header(&self, session: u64) -> Result<Option<(u64, u64)>, KvError> {
        if let Some(p) = self.pending_sessions.get(&session) {
            return Ok(Some((p.seq, p.index)));
        }
        Ok(self.session_record(session)?.map(|v| {
            (
                u64::from_be_bytes(v[..8].try_into().unwrap()),
                u64::from_be_bytes(v[8..16].try_into().unwrap()),
            )
        }))
    }

    /// The stored outcome of a session's last write.
    fn load_outcome(&self, session: u64) -> Result<ApplyOutcome, KvError> {
        let key = session.to_be_bytes();
        let v = self
            .session_record(session)?
            .ok_or_else(|| corrupt(TREE_SESSION, &key, "session vanished"))?;
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(&v[16..]);
        let stored: StoredOutcome =
            rkyv::from_bytes::<StoredOutcome, rkyv::rancor::Error>(&aligned)
                .map_err(|e| corrupt(TREE_SESSION, &key, &format!("stored outcome: {e}")))?;
        let response = match (stored.response, stored.error) {
            (Some(r), None) => Ok(r),
            (None, Some(e)) => Err(e),
            _ => {
                return Err(corrupt(
                    TREE_SESSION,
                    &key,
                    "stored outcome is neither response nor error",
                ))
            }
        };
        Ok(ApplyOutcome {
            revision: stored.revision,
            response,
            duplicate: false,
        })
    }

    /// A pending session's record as it goes into `sess`: seq:8 index:8 outcome (an
    /// outcome over `session_outcome_bytes_max` is replaced by `StaleSequence`).
    fn session_bytes(&self, session: u64, p: &PendingSession) -> Result<Vec<u8>, KvError> {
        let encode = |stored: &StoredOutcome| {
            rkyv::to_bytes::<rkyv::rancor::Error>(stored)
                .map_err(|e| KvError::Storage(format!("encode session {session} outcome: {e}")))
        };
        let mut bytes = encode(&StoredOutcome {
            revision: p.revision,
            response: p.response.as_ref().ok().cloned(),
            error: p.response.as_ref().err().cloned(),
        })?;
        if bytes.len() > self.config.session_outcome_bytes_max {
            bytes = encode(&StoredOutcome {
                revision: p.revision,
                response: None,
                error: Some(KvError::StaleSequence(p.seq)),
            })?;
        }
        let mut record = Vec::with_capacity(16 + bytes.len());
        record.extend_from_slice(&p.seq.to_be_bytes());
        record.extend_from_slice(&p.index.to_be_bytes());
        record.extend_from_slice(&bytes);
        Ok(record)
    }

    fn save_session(
        &mut self,
        session: u64,
        seq: u64,
        index: u64,
        old_index: Option<u64>,
        o: &ApplyOutcome,
    ) -> Result<(), KvError> {
        match self.pending_sessions.entry(session) {
            Entry::Occupied(mut e) => {
                let p = e.get_mut();
                p.seq = seq;
                p.index = index;
                p.revision = o.revision;
                p.response = o.response.clone();
            }
            Entry::Vacant(e) => {
                // Not pending: `old_index` came from the backend's record.
                if old_index.is_none() {
                    self.state.sessions += 1;
                }
                e.insert(PendingSession {
                    seq,
                    index,
                    revision: o.revision,
                    response: o.response.clone(),
                    backend_index: old_index,
                });
            }
        }
        while self.state.sessions > self.config.sessions_max {
            self.evict_oldest_session()?;
        }
        Ok(())
    }

    /// Forgets the session whose last write has the lowest log index. Every pending
    /// session wrote after every session that is only in the backend (pending ones
    /// wrote since the last commit), so the oldest is the first `sess_age` entry whose
    /// session is not pending (a pending session's entry there is stale), or else the
    /// oldest pending one. The same choice as evicting at every write, so replicas
    /// that commit at different moments keep the same sessions.
    fn evict_oldest_session(&mut self) -> Result<(), KvError> {
        let mut oldest = None;
        let mut bad = None;
        let pending = &self.pending_sessions;
        self.backend
            .scan(TREE_SESSION_AGE, b"", None, false, &mut |k, _| {
                if k.len() != 16 {
                    bad = Some(k.to_vec());
                    return false;
                }
                let session = u64::from_be_bytes(k[8..].try_into().unwrap());
                if pending.contains_key(&session) {
                    return true;
                }
                oldest = Some(k.to_vec());
                false
            })
            .map_err(|e| storage("scan session ages", e))?;
        if let Some(k) = bad {
            return Err(corrupt(TREE_SESSION_AGE, &k, "age key is not 16 bytes"));
        }
        match oldest {
            Some(k) => {
                self.delete_backend(TREE_SESSION_AGE, &k)?;
                self.delete_backend(TREE_SESSION, &k[8..])?;
            }
            None => {
                let session = self
                    .pending_sessions
                    .iter()
                    .min_by_key(|(_, p)| p.index)
                    .map(|(s, _)| *s)
                    .ok_or_else(|| corrupt(TREE_SESSION_AGE, b"", "fewer sessions than counted"))?;
                let p = self.pending_sessions.remove(&session).unwrap();
                if let Some(old) = p.backend_index {
                    self.delete_backend(TREE_SESSION_AGE, &age_key(old, session))?;
                    self.delete_backend(TREE_SESSION, &session.to_be_bytes())?;
                }
            }
        }
        self.state.sessions -= 1;
        Ok(())
    }
}

/// Evaluates the compares of `t` and of every Txn nested in the chosen branches, in
/// execution order (etcd's `compareToPath`).
fn txn_path<V: ReadView + ?Sized>(
    r: &Reader<'_, V>,
    t: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), KvError> {
    let mut ok = true;
    for c in &t.compare {
        if !r.compare(c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    for op in if ok { &t.success } else { &t.failure } {
        if let RequestOp::Txn(n) = op {
            txn_path(r, n, path)?;
        }
    }
    Ok(())
}

/// Range on any view holding a store (e.g. [`Store::snapshot`]): (header revision,
/// response). Builds the view's key index first (one scan of its rev tree), so it costs
/// O(history): for tests and tools, not for serving.
pub fn range_on<V: ReadView + ?Sized>(
    view: &V,
    req: &RangeRequest,
    limits: &Limits,
) -> Result<(i64, RangeResponse), KvError> {
    validate_range(req, limits)?;
    let index = Index::load(view)?;
    let r = Reader::open(view, &index)?;
    Ok((r.revision(), r.range(req)?))
}
