//! An in-memory [`Disk`] for tests and simulation: every file has a live image (what
//! reads see) and a durable image (what survives a crash). A write reaches the durable
//! image only at `sync`; directory entries (create, remove) only at `sync_dir`.
//!
//! [`SimDisk::crash`] returns the disk as a power cut would leave it: each write not
//! yet synced is dropped or applied per 512-byte sector at random (sectors are atomic,
//! the order among them is not), unsynced directory changes are lost. Faults: a
//! countdown after which `sync` (or `write_at`) fails with EIO.
//!
//! `sync` yields once (so appends can arrive while it is "in flight"); nothing else
//! waits, so tests may drive the WAL with `futures_lite::future::block_on`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::disk::{Disk, DiskFile};
use super::format::SECTOR_BYTES;
use super::YieldOnce;

/// A small seeded PRNG (splitmix64) so crash images are reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default, Clone)]
struct SimInode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, bytes).
    unsynced: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct SimState {
    inodes: Vec<SimInode>,
    live_dir: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    /// Number of further `sync` calls that succeed; `Some(0)` = the next one fails.
    syncs_left: Option<u64>,
    /// Number of further `write_at` calls that succeed.
    writes_left: Option<u64>,
    syncs: u64,
}

/// The in-memory test disk. Cloning gives another handle to the same disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    st: Rc<RefCell<SimState>>,
}

/// A file on a [`SimDisk`].
pub struct SimFile {
    st: Rc<RefCell<SimState>>,
    ino: usize,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO on {what}"))
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// After `n` more successful syncs, every sync fails.
    pub fn fail_sync_after(&self, n: u64) {
        self.st.borrow_mut().syncs_left = Some(n);
    }

    /// After `n` more successful writes, every write fails.
    pub fn fail_write_after(&self, n: u64) {
        self.st.borrow_mut().writes_left = Some(n);
    }

    /// Number of successful file syncs so far.
    pub fn syncs(&self) -> u64 {
        self.st.borrow().syncs
    }

    /// The disk as a power cut now would leave it (this handle is unchanged).
    /// `torn_percent`: chance that each unsynced sector is applied.
    pub fn crash(&self, rng: &mut Rng, torn_percent: u64) -> SimDisk {
        let st = self.st.borrow();
        let mut inodes = Vec::with_capacity(st.inodes.len());
        for ino in &st.inodes {
            let mut img = ino.durable.clone();
            for (off, data) in &ino.unsynced {
                let mut s = 0;
                while s < data.len() {
                    let e = (s + SECTOR_BYTES as usize).min(data.len());
                    if rng.chance(torn_percent) {
                        let at = *off as usize + s;
                        if img.len() < at + (e - s) {
                            img.resize(at + (e - s), 0);
                        }
                        img[at..at + (e - s)].copy_from_slice(&data[s..e]);
                    }
                    s = e;
                }
            }
            inodes.push(SimInode {
                live: img.clone(),
                durable: img,
                unsynced: Vec::new(),
            });
        }
        SimDisk {
            st: Rc::new(RefCell::new(SimState {
                inodes,
                live_dir: st.durable_dir.clone(),
                durable_dir: st.durable_dir.clone(),
                ..SimState::default()
            })),
        }
    }

    /// The live bytes of a file (for tests that corrupt or inspect files).
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.st.borrow();
        st.live_dir.get(name).map(|&i| st.inodes[i].live.clone())
    }

    /// Overwrites bytes of a file durably, as corruption on the media would.
    pub fn corrupt(&self, name: &str, off: usize, f: impl FnOnce(&mut [u8])) {
        let mut st = self.st.borrow_mut();
        let i = st.live_dir[name];
        let ino = &mut st.inodes[i];
        assert!(
            ino.unsynced.is_empty(),
            "corrupt() on a file with unsynced writes"
        );
        f(&mut ino.live[off..]);
        ino.durable = ino.live.clone();
    }

    /// Names of the files (live view).
    pub fn names(&self) -> Vec<String> {
        self.st.borrow().live_dir.keys().cloned().collect()
    }
}

impl DiskFile for SimFile {
    type Buf = Vec<u8>;

    fn alloc_buf(&self, len: usize) -> Vec<u8> {
        // Stale contents, like a reused DMA buffer: whoever fills it must write it all.
        vec![super::disk::STALE_BYTE; len]
    }

    async fn write_at(&self, buf: Vec<u8>, off: u64) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        if let Some(n) = st.writes_left {
            if n == 0 {
                return Err(eio("write"));
            }
            st.writes_left = Some(n - 1);
        }
        assert_eq!(
            off % SECTOR_BYTES,
            0,
            "unaligned O_DIRECT write offset {off}"
        );
        assert_eq!(buf.len() as u64 % SECTOR_BYTES, 0, "unaligned write length");
        let ino = &mut st.inodes[self.ino];
        let end = off as usize + buf.len();
        if ino.live.len() < end {
            ino.live.resize(end, 0);
        }
        ino.live[off as usize..end].copy_from_slice(&buf);
        ino.unsynced.push((off, buf));
        Ok(())
    }

    async fn read_at(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let st = self.st.borrow();
        let live = &st.inodes[self.ino].live;
        let s = (off as usize).min(live.len());
        let e = (s + len).min(live.len());
        Ok(live[s..e].to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        // A real fdatasync takes time: let other tasks run (and append) meanwhile.
        YieldOnce(false).await;
        let mut st = self.st.borrow_mut();
        if let Some(n) = st.syncs_left {
            if n == 0 {
                // Like Linux after a failed writeback: the dirty data may or may not be
                // on disk, and the error is reported once. The WAL must not trust it.
                return Err(eio("fdatasync"));
            }
            st.syncs_left = Some(n - 1);
        }
        st.syncs += 1;
        let ino = &mut st.inodes[self.ino];
        for (off, data) in std::mem::take(&mut ino.unsynced) {
            let end = off as usize + data.len();
            if ino.durable.len() < end {
                ino.durable.resize(end, 0);
            }
            ino.durable[off as usize..end].copy_from_slice(&data);
        }
        debug_assert_eq!(ino.durable.len(), ino.live.len());
        Ok(())
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        let ino = &mut st.inodes[self.ino];
        if (ino.live.len() as u64) < len {
            let old = ino.live.len();
            ino.live.resize(len as usize, 0);
            // Size changes reach the durable image at sync, like data.
            ino.unsynced.push((old as u64, vec![0; len as usize - old]));
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(self.st.borrow().inodes[self.ino].live.len() as u64)
    }
}

impl Disk for SimDisk {
    type File = SimFile;

    async fn create(&self, name: &str) -> io::Result<SimFile> {
        let mut st = self.st.borrow_mut();
        if st.live_dir.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                name.to_string(),
            ));
        }
        st.inodes.push(SimInode::default());
        let ino = st.inodes.len() - 1;
        st.live_dir.insert(name.to_string(), ino);
        Ok(SimFile {
            st: self.st.clone(),
            ino,
        })
    }

    async fn open(&self, name: &str) -> io::Result<SimFile> {
        let st = self.st.borrow();
        match st.live_dir.get(name) {
            Some(&ino) => Ok(SimFile {
                st: self.st.clone(),
                ino,
            }),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_string())),
        }
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        match self.st.borrow_mut().live_dir.remove(name) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, name.to_string())),
        }
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        if st.live_dir.contains_key(to) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, to.to_string()));
        }
        match st.live_dir.remove(from) {
            Some(ino) => {
                st.live_dir.insert(to.to_string(), ino);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::NotFound, from.to_string())),
        }
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        st.durable_dir = st.live_dir.clone();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}
