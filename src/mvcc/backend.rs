//! The narrow storage interface the MVCC store needs from its B+tree.
//!
//! One writer, owned by one shard: writes are applied to an open, in-memory write
//! transaction (sync, cheap) and made durable by a commit in two phases:
//! [`Backend::begin_commit`] (sync, cheap) seals everything written so far and returns
//! a [`BackendJob`] whose future does the I/O (page writes and fdatasync through
//! glommio) without borrowing the backend, so it can run in another task while the
//! backend takes the next writes; its outcome goes to [`Backend::finish_commit`], which
//! publishes the sealed version. At most one job is in flight. [`Backend::commit`] is
//! the three in a row. Reads through the backend itself see the latest applied state,
//! committed or not; [`Backend::snapshot`] gives a read view of the last committed
//! (finished) version that stays valid while later writes and commits happen.
//!
//! Implementations: `btree::Db` (the real one, adapter in `btree_backend.rs`) and
//! [`MemBackend`] (a `BTreeMap`, for tests and as the model in property tests).

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::rc::Rc;

/// Why a backend operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The file would grow beyond its quota.
    NoSpace,
    /// A page failed its checksum or a structural check; names page and file.
    Corrupt(String),
    /// An I/O call failed; names the operation, file and offset. After a failed commit
    /// the backend refuses further writes until reopened.
    Io(String),
    /// A key or value beyond the configured maximum size.
    TooLarge(String),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::NoSpace => write!(f, "database space exceeded"),
            BackendError::Corrupt(m) => write!(f, "corrupt database: {m}"),
            BackendError::Io(m) => write!(f, "database I/O error: {m}"),
            BackendError::TooLarge(m) => write!(f, "too large: {m}"),
        }
    }
}

impl std::error::Error for BackendError {}

pub type BackendResult<T> = Result<T, BackendError>;

/// Ordered reads over named trees.
pub trait ReadView {
    fn get(&self, tree: &str, key: &[u8]) -> BackendResult<Option<Vec<u8>>>;
    /// Calls `f(key, value)` for each entry with `lo <= key` and (`hi` is `None` or
    /// `key < hi`), in ascending order (descending if `reverse`), until `f` returns
    /// `false`. A tree that does not exist is empty.
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> BackendResult<()>;
}

/// The I/O half of a commit: it owns what it writes and borrows nothing from its
/// backend, so it runs in any task while the backend takes writes.
pub trait BackendJob: 'static {
    /// The outcome, success or failure, for [`Backend::finish_commit`].
    type Done: 'static;
    fn run(self) -> impl Future<Output = Self::Done> + 'static;
}

/// A single-writer ordered store with named trees and batched durable commits.
#[allow(async_fn_in_trait)] // single-threaded executors: futures need not be Send
pub trait Backend: ReadView {
    type Snapshot: ReadView;
    type Job: BackendJob;
    /// A read view of the last committed version.
    fn snapshot(&self) -> Self::Snapshot;
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> BackendResult<()>;
    /// Returns whether the key existed.
    fn delete(&mut self, tree: &str, key: &[u8]) -> BackendResult<bool>;
    /// Seals every write so far as the next version and returns the job that makes it
    /// durable (`None`: nothing to commit). Writes go on at once on top of it.
    /// Panics if a job is already in flight.
    fn begin_commit(&mut self) -> BackendResult<Option<Self::Job>>;
    /// Publishes the version of the job in flight once its outcome is a success; a
    /// failure is returned, and the backend then refuses writes until reopened.
    fn finish_commit(&mut self, done: <Self::Job as BackendJob>::Done) -> BackendResult<()>;
    /// Makes every write so far durable as one atomic version.
    async fn commit(&mut self) -> BackendResult<()> {
        match self.begin_commit()? {
            None => Ok(()),
            Some(job) => {
                let done = job.run().await;
                self.finish_commit(done)
            }
        }
    }
    /// Bytes the store occupies on disk (for quota and status).
    fn size_bytes(&self) -> u64;
}

/// Named trees of key -> value.
pub type Trees = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// An in-memory backend: the model for tests. `begin_commit` copies the live state,
/// `finish_commit` makes the copy the committed state, so snapshots behave as they do
/// on disk.
#[derive(Default, Clone)]
pub struct MemBackend {
    live: Trees,
    committed: Rc<Trees>,
    in_flight: bool,
}

/// [`MemBackend`]'s commit job: the sealed state.
pub struct MemJob(Rc<Trees>);

impl BackendJob for MemJob {
    type Done = Rc<Trees>;
    fn run(self) -> impl Future<Output = Rc<Trees>> + 'static {
        std::future::ready(self.0)
    }
}

impl MemBackend {
    /// What a restart would find: a backend holding only the last committed state
    /// (every write since the last `commit` is lost), as after a crash.
    pub fn reopen_committed(&self) -> MemBackend {
        MemBackend {
            live: (*self.committed).clone(),
            committed: self.committed.clone(),
            in_flight: false,
        }
    }
}

/// A read view of a [`MemBackend`]'s committed state.
#[derive(Clone)]
pub struct MemSnapshot(Rc<Trees>);

fn scan_trees(
    trees: &Trees,
    tree: &str,
    lo: &[u8],
    hi: Option<&[u8]>,
    reverse: bool,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> BackendResult<()> {
    let Some(t) = trees.get(tree) else {
        return Ok(());
    };
    if hi.is_some_and(|h| h <= lo) {
        return Ok(());
    }
    let upper = hi.map_or(Bound::Unbounded, Bound::Excluded);
    let range = t.range::<[u8], _>((Bound::Included(lo), upper));
    if reverse {
        for (k, v) in range.rev() {
            if !f(k, v) {
                break;
            }
        }
    } else {
        for (k, v) in range {
            if !f(k, v) {
                break;
            }
        }
    }
    Ok(())
}

impl ReadView for MemBackend {
    fn get(&self, tree: &str, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        Ok(self.live.get(tree).and_then(|t| t.get(key).cloned()))
    }
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> BackendResult<()> {
        scan_trees(&self.live, tree, lo, hi, reverse, f)
    }
}

impl ReadView for MemSnapshot {
    fn get(&self, tree: &str, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        Ok(self.0.get(tree).and_then(|t| t.get(key).cloned()))
    }
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> BackendResult<()> {
        scan_trees(&self.0, tree, lo, hi, reverse, f)
    }
}

impl Backend for MemBackend {
    type Snapshot = MemSnapshot;
    type Job = MemJob;
    fn snapshot(&self) -> MemSnapshot {
        MemSnapshot(self.committed.clone())
    }
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> BackendResult<()> {
        self.live
            .entry(tree.to_string())
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete(&mut self, tree: &str, key: &[u8]) -> BackendResult<bool> {
        Ok(self
            .live
            .get_mut(tree)
            .is_some_and(|t| t.remove(key).is_some()))
    }
    fn begin_commit(&mut self) -> BackendResult<Option<MemJob>> {
        assert!(!self.in_flight, "begin_commit while a commit is in flight");
        self.in_flight = true;
        Ok(Some(MemJob(Rc::new(self.live.clone()))))
    }
    fn finish_commit(&mut self, done: Rc<Trees>) -> BackendResult<()> {
        assert!(self.in_flight, "finish_commit with no commit in flight");
        self.in_flight = false;
        self.committed = done;
        Ok(())
    }
    fn size_bytes(&self) -> u64 {
        self.live
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}
