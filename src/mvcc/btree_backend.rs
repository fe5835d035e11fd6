//! The [`Backend`] trait on the real B+tree: `btree::Db` is the store, a
//! `btree::Snapshot` the committed read view. Errors map onto [`BackendError`] with
//! their full text (operation, file, page or offset) kept.

use super::backend::{Backend, BackendError, BackendResult, ReadView};
use crate::btree::{BtreeError, Db, Disk, Snapshot};

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

impl<D: Disk> Backend for Db<D> {
    type Snapshot = Snapshot;
    fn snapshot(&self) -> Snapshot {
        Db::snapshot(self)
    }
    fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> BackendResult<()> {
        Ok(Db::put(self, tree, key, value)?)
    }
    fn delete(&mut self, tree: &str, key: &[u8]) -> BackendResult<bool> {
        Ok(Db::delete(self, tree, key)?)
    }
    async fn commit(&mut self) -> BackendResult<()> {
        Ok(Db::commit(self).await?)
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
}
