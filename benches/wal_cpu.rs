//! The WAL's own CPU per group commit, without a disk: one appender appends batches of
//! 1, 16, 128 and 1024 records of 256 bytes and flushes each, on a disk that discards
//! what is written and completes every call at once. What is left is everything the
//! WAL does around the I/O (checks, encoding, crc, the index and cache of entries,
//! publishing, compaction and segment recycling), the part `scripts/wal-bench.sh`
//! reports as "µs/write outside write+fdatasync", here free of the disk's noise, so
//! that a change to that path can be A/B'd in seconds.
//!
//! `cargo bench --bench wal_cpu` (release, 2 s per batch size). Under `cargo test`
//! (no `--bench` argument) it runs a short smoke pass so the gate stays fast. Numeric
//! arguments pick the batch sizes: `cargo bench --bench wal_cpu -- 1024`.
//!
//! As in wal-bench, the appender has its entries at hand (it renumbers them rather
//! than allocating new ones) and the log is compacted to 20,000 entries behind its end
//! once it holds 100,000, so segments are recycled as in a long-running server.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv::raft::types::{Entry, EntryKind};
use corekv::wal::{Disk, DiskFile, SyncMode, Wal, WalOptions};
use futures_lite::future::block_on;

#[path = "support/run_length.rs"]
mod run_length;
#[path = "support/wal_compact.rs"]
mod wal_compact;
use run_length::RunLength;

/// Buffers written and given back, reused as a DMA buffer pool would be (a fresh
/// zeroed allocation per write would measure the allocator, not the WAL).
type Pool = Rc<RefCell<Vec<Vec<u8>>>>;

/// A file that keeps only its size.
struct NullFile {
    size: Cell<u64>,
    pool: Pool,
}

impl DiskFile for NullFile {
    type Buf = Vec<u8>;
    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        let mut b = self.pool.borrow_mut().pop().unwrap_or_default();
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0);
        }
        b
    }
    async fn write_at(&self, buf: Vec<u8>, off: u64) -> io::Result<()> {
        self.size.set(self.size.get().max(off + buf.len() as u64));
        let mut pool = self.pool.borrow_mut();
        if pool.len() < 4 {
            pool.push(buf);
        }
        Ok(())
    }
    async fn read_at(&self, _off: u64, _len: usize) -> io::Result<Vec<u8>> {
        Err(io::Error::other("null disk: nothing to read"))
    }
    async fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.size.set(self.size.get().max(len));
        Ok(())
    }
    async fn size(&self) -> io::Result<u64> {
        Ok(self.size.get())
    }
}

/// A directory of [`NullFile`]s (names only).
#[derive(Default)]
struct NullDisk {
    files: RefCell<BTreeMap<String, Rc<NullFile>>>,
    pool: Pool,
}

/// What the WAL holds: a shared handle, so a renamed file is the same file.
struct Handle(Rc<NullFile>);

impl DiskFile for Handle {
    type Buf = Vec<u8>;
    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        self.0.alloc_buf(len)
    }
    async fn write_at(&self, buf: Vec<u8>, off: u64) -> io::Result<()> {
        self.0.write_at(buf, off).await
    }
    async fn read_at(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        self.0.read_at(off, len).await
    }
    async fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.0.allocate(len).await
    }
    async fn size(&self) -> io::Result<u64> {
        self.0.size().await
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, name.to_string())
}

impl Disk for NullDisk {
    type File = Handle;
    async fn create(&self, name: &str) -> io::Result<Handle> {
        let f = Rc::new(NullFile {
            size: Cell::new(0),
            pool: self.pool.clone(),
        });
        let mut files = self.files.borrow_mut();
        if files.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        files.insert(name.to_string(), f.clone());
        Ok(Handle(f))
    }
    async fn open(&self, name: &str) -> io::Result<Handle> {
        let files = self.files.borrow();
        files
            .get(name)
            .map(|f| Handle(f.clone()))
            .ok_or_else(|| not_found(name))
    }
    async fn remove(&self, name: &str) -> io::Result<()> {
        self.files
            .borrow_mut()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(name))
    }
    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut files = self.files.borrow_mut();
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_string(), f);
        Ok(())
    }
    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files.borrow().keys().cloned().collect())
    }
    async fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self, name: &str) -> String {
        format!("null:{name}")
    }
}

const RECORD: usize = 256;

/// Appends batches of `batch` records for `run_for`; returns (appends, writes, secs).
fn run(batch: usize, run_for: Duration) -> (u64, u64, f64) {
    block_on(async {
        let opts = WalOptions {
            sync_mode: SyncMode::Dsync,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open_on(NullDisk::default(), opts).await.unwrap();
        let mut e: Vec<Entry> = (0..batch)
            .map(|k| Entry {
                term: 1,
                index: 0,
                kind: EntryKind::Normal,
                data: vec![k as u8; RECORD].into(),
            })
            .collect();
        let mut next = 1u64;
        let mut appends = 0u64;
        let flushes0 = wal.stats().flushes;
        let start = Instant::now();
        while start.elapsed() < run_for {
            for _ in 0..16 {
                for (k, x) in e.iter_mut().enumerate() {
                    x.index = next + k as u64;
                }
                wal.append(next, None, &e).unwrap();
                wal.wait_durable(next).await.unwrap();
                next += batch as u64;
                appends += batch as u64;
                wal_compact::compact_if_due(&wal).await;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        (appends, wal.stats().flushes - flushes0, secs)
    })
}

fn main() {
    let length = RunLength::from_args();
    // Numeric arguments pick batch sizes (`cargo bench --bench wal_cpu -- 1024`).
    let picked: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let sizes = if picked.is_empty() {
        vec![1, 16, 128, 1024]
    } else {
        picked
    };
    for batch in sizes {
        let (appends, writes, secs) = run(batch, length.per_case);
        assert!(appends > 0 && writes > 0);
        println!(
            "wal_cpu: batch {batch:>4} x {RECORD} B, null disk: {:>10.0} appends/s, {:>7.2} us per write ({writes} writes in {secs:.2}s){}",
            appends as f64 / secs,
            secs * 1e6 / writes as f64,
            length.tag()
        );
    }
}
