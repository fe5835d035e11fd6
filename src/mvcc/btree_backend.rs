//! The [`Backend`] trait on the real B+tree: `btree::Db` is the store, a
//! `btree::Snapshot` the committed read view, a `btree::CommitJob` the commit's I/O. Errors map onto [`BackendError`] with
//! their full text (operation, file, page or offset) kept.

use std::future::Future;

use super::backend::{Backend, BackendError, BackendJob, BackendResult, ReadView};
use crate::btree::{BtreeError, CommitDone, CommitJob, Db, Disk, Snapshot};

impl From<BtreeError> for BackendError {
    fn from(e: BtreeError) -> BackendError {
        match e {
            BtreeError::NoSpace { .. } => BackendError::NoSpace,
            BtreeError::Corrupt { .. } => BackendError::Corrupt(e.to_string()),
            BtreeError::TooLarge { .. } => BackendError::TooLarge(e.to_string()),
            BtreeError::Io { .. } | BtreeError::Poisoned { .. } | BtreeError::InvalidOptions(_) => {
                BackendError::Io(e.to_string())
            }
        }
    }
}

impl<D: Disk> ReadView for Db<D> {
    fn get(&self, tree: &str, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        Ok(Db::get(self, tree, key)?)
    }
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> BackendResult<()> {
        Ok(Db::scan(self, tree, lo, hi, reverse, f)?)
    }
}

impl ReadView for Snapshot {
    fn get(&self, tree: &str, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        Ok(Snapshot::get(self, tree, key)?)
    }
    fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> BackendResult<()> {
        Ok(Snapshot::scan(self, tree, lo, hi, reverse, f)?)
    }
}

impl<D: Disk + 'static> BackendJob for CommitJob<D> {
    type Done = Result<CommitDone, BtreeError>;
    fn run(self) -> impl Future<Output = Self::Done> + 'static {
        CommitJob::run(self)
    }
}

impl<D: Disk + 'static> Backend for Db<D> {
    type Snapshot = Snapshot;
    type Job = CommitJob<D>;
    fn snapshot(&self) -> Snapshot {
        Db::snapshot(self)
    }
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> BackendResult<()> {
        Ok(Db::put(self, tree, key, value)?)
    }
    fn delete(&mut self, tree: &str, key: &[u8]) -> BackendResult<bool> {
        Ok(Db::delete(self, tree, key)?)
    }
    fn begin_commit(&mut self) -> BackendResult<Option<CommitJob<D>>> {
        Ok(Db::begin_commit(self)?)
    }
    fn finish_commit(&mut self, done: Result<CommitDone, BtreeError>) -> BackendResult<()> {
        Ok(Db::finish_commit(self, done)?)
    }
    fn size_bytes(&self) -> u64 {
        Db::size_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::{Options, SimDisk};
    use crate::mvcc::backend::MemBackend;
    use futures_lite::future::block_on;

    fn dump<V: ReadView>(v: &V, tree: &str, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = vec![];
        v.scan(tree, b"b", Some(b"y"), reverse, &mut |k, val| {
            out.push((k.to_vec(), val.to_vec()));
            true
        })
        .unwrap();
        out
    }

    /// The same operations through the trait on the B+tree and on `MemBackend` give
    /// the same answers, live and through snapshots.
    async fn ops<B: Backend>(b: &mut B) -> Vec<String> {
        let mut log = vec![];
        for i in 0..200u32 {
            let k = format!("{}{:03}", (b'a' + (i % 26) as u8) as char, i);
            b.put("kv", k.as_bytes(), &i.to_be_bytes()).unwrap();
        }
        b.put("index", b"rev", b"1").unwrap();
        b.commit().await.unwrap();
        let snap = b.snapshot();
        log.push(format!("{}", b.delete("kv", b"c002").unwrap()));
        log.push(format!("{}", b.delete("kv", b"c002").unwrap()));
        log.push(format!("{}", b.delete("nope", b"x").unwrap()));
        b.put("kv", b"big", &vec![5u8; 100_000]).unwrap();
        log.push(format!("{:?}", b.get("kv", b"c002").unwrap()));
        log.push(format!("{:?}", snap.get("kv", b"c002").unwrap()));
        log.push(format!("{:?}", dump(b, "kv", false)));
        log.push(format!("{:?}", dump(&snap, "kv", true)));
        b.commit().await.unwrap();
        log.push(format!(
            "{:?}",
            b.snapshot().get("kv", b"big").unwrap().map(|v| v.len())
        ));
        log.push(format!("{:?}", snap.get("index", b"rev").unwrap()));
        log.push(format!("{:?}", b.get("absent-tree", b"k").unwrap()));
        log
    }

    #[test]
    fn btree_backend_matches_mem_backend() {
        let mut mem = MemBackend::default();
        let mut db = block_on(Db::open_disk(SimDisk::default(), Options::default())).unwrap();
        let want = block_on(ops(&mut mem));
        let got = block_on(ops(&mut db));
        assert_eq!(got, want);
        assert!(Backend::size_bytes(&db) > 100_000);
        let too_big = vec![0u8; Options::default().max_value_bytes + 1];
        assert!(matches!(
            Backend::put(&mut db, "kv", b"k", &too_big),
            Err(BackendError::TooLarge(_))
        ));
    }

    fn put_req(k: &str, v: &str) -> crate::mvcc::WriteRequest {
        crate::mvcc::WriteRequest::Put(crate::mvcc::PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
    }

    fn value_in<V: ReadView>(v: &V, key: &str) -> Option<Vec<u8>> {
        let req = crate::mvcc::RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        crate::mvcc::range_on(v, &req, &Default::default())
            .unwrap()
            .1
            .kvs
            .first()
            .map(|kv| kv.value.clone())
    }

    /// The two-phase commit through `Store`: applies go on while a commit is in flight,
    /// the sealed applied index is the one made durable, snapshots see the sealed
    /// version only once it is finished, and a reopen finds exactly it; the same on the
    /// B+tree and on `MemBackend`.
    async fn pipelined_store<B: Backend>(
        mut store: crate::mvcc::Store<B>,
        reopen: impl Fn(&B) -> B,
    ) {
        store.commit().await.unwrap();
        for i in 1..=50u64 {
            store
                .apply(i, &put_req(&format!("k{i}"), "a"), None)
                .unwrap();
        }
        let c = store.begin_commit().unwrap().expect("something to commit");
        assert_eq!(c.applied_index, 50);
        assert!(store.commit_in_flight());
        // Applies on top of the sealed version while its job is in flight.
        for i in 51..=80u64 {
            store
                .apply(i, &put_req("k1", &format!("b{i}")), None)
                .unwrap();
        }
        let live = store
            .range(&crate::mvcc::RangeRequest {
                key: b"k1".to_vec(),
                ..Default::default()
            })
            .unwrap()
            .1;
        assert_eq!(live.kvs[0].value, b"b80");
        let before = store.snapshot();
        assert_eq!(value_in(&before, "k50"), None, "not finished yet");
        let done = c.job.run().await;
        assert_eq!(store.finish_commit(done), Ok(50));
        assert!(!store.commit_in_flight());
        assert_eq!(
            value_in(&before, "k50"),
            None,
            "an older snapshot keeps its version"
        );
        let after = store.snapshot();
        assert_eq!(value_in(&after, "k1"), Some(b"a".to_vec()));
        assert_eq!(value_in(&after, "k50"), Some(b"a".to_vec()));
        // A crash now: the sealed version, applied index 50 (51..=80 are replayed).
        let reopened = crate::mvcc::Store::open(reopen(store.backend())).unwrap();
        assert_eq!(reopened.applied_index(), 50);
        drop(reopened);
        store.commit().await.unwrap();
        assert_eq!(
            crate::mvcc::Store::open(reopen(store.backend()))
                .unwrap()
                .applied_index(),
            80
        );
    }

    #[test]
    fn pipelined_store_commit() {
        let mem = crate::mvcc::Store::open(MemBackend::default()).unwrap();
        block_on(pipelined_store(mem, |b| b.reopen_committed()));
        let disk = SimDisk::default();
        let db = block_on(Db::open_disk(disk.clone(), Options::default())).unwrap();
        let store = crate::mvcc::Store::open(db).unwrap();
        block_on(pipelined_store(store, |_| {
            // The durable image of the file, as a crash would leave it.
            let image = disk.crash_image(|_| 0);
            block_on(Db::open_disk(
                SimDisk::from_image(image),
                Options::default(),
            ))
            .unwrap()
        }));
    }
}
