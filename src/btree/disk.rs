//! File I/O behind a small trait, so that tests can swap the real file for a crash
//! simulator.
//!
//! [`Disk`] is the writer's view of the file: positional writes, `fdatasync`, growth,
//! and a [`PageStore`] for reads. [`GlommioDisk`] is the real one: a glommio
//! `BufferedFile` (writes go through the page cache, so the memory map sees them; never
//! O_DIRECT), with io_uring writes and fdatasync, so nothing blocks the executor. With
//! `write_pool` (the default) a commit's page copies run on glommio's blocking pool,
//! which also paces their writeback (sync_file_range every 512 KiB) so that a commit
//! does not reach the shared disk as one burst ahead of the WAL's fdatasync.
//! [`SimDisk`] keeps a *live* and a *durable* image: a write reaches the durable image
//! only at `sync`; [`SimDisk::crash_image`] builds what a crash could leave behind
//! (every unsynced write dropped, applied, or applied in part at 512-byte sector
//! granularity), and a countdown makes the n-th sync fail, as a crash there would.
//!
//! Every method takes `&self` (the writer keeps its disk behind an `Rc`): a commit's
//! I/O runs in a [`super::CommitJob`] that holds its own handle to the disk while the
//! `Db` keeps taking writes.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{BufferedFile, OpenOptions};

use super::store::{dup_file, lock_exclusive, MmapStore, PageStore, PreadStore};

/// Pages a commit writes before it waits for them to reach the device (see
/// `GlommioDisk::write_many`).
const WRITEBACK_CHUNK_BYTES: u64 = 512 << 10;

/// Starts writeback of `[lo, hi)` and waits for it (sync_file_range: data only, no
/// device cache flush; the commit's fdatasync follows). Blocking: pool threads only.
fn write_out(file: &File, lo: u64, hi: u64) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on a file descriptor this File owns.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), lo as i64, (hi - lo) as i64, flags) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("sync_file_range of bytes {lo}..{hi}: {e}"),
        ));
    }
    Ok(())
}

/// The writer's access to the B+tree file.
#[allow(async_fn_in_trait)] // single-threaded executors: futures need not be Send
pub trait Disk {
    /// Names the file in errors.
    fn name(&self) -> &str;
    /// Current file length in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    async fn write_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()>;
    /// Several writes, in any order or concurrently; all done when it returns Ok.
    async fn write_many(&self, writes: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        for (offset, data) in writes {
            self.write_at(offset, data).await?;
        }
        Ok(())
    }
    /// fdatasync: every write before it is durable when it returns Ok.
    async fn sync(&self) -> io::Result<()>;
    /// Grows the file to `len` bytes (never shrinks it).
    async fn grow(&self, len: u64) -> io::Result<()>;
    /// A read view covering the current length.
    fn store(&self) -> io::Result<Rc<dyn PageStore>>;
    /// Closes the file (and releases its lock) now rather than at some later point.
    async fn close(self) -> io::Result<()>
    where
        Self: Sized,
    {
        Ok(())
    }
}

/// The real file, through glommio's buffered (page cache) file.
pub struct GlommioDisk {
    file: BufferedFile,
    name: String,
    len: Cell<u64>,
    use_mmap: bool,
    /// Set: commits write their pages with pwrite on glommio's blocking thread pool
    /// (one hand-off per commit); unset: one io_uring write per contiguous run.
    pool: Option<Arc<File>>,
}

impl GlommioDisk {
    /// Opens (creating if missing) `path` and locks it exclusively.
    pub async fn open(path: &Path, use_mmap: bool, write_pool: bool) -> io::Result<GlommioDisk> {
        let name = path.display().to_string();
        let ctx =
            |op: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{op} {name}: {e}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(|e| ctx("open", &e))?;
        lock_exclusive(file.as_raw_fd()).map_err(|e| ctx("lock (is it open elsewhere?)", &e))?;
        let len = file.file_size().await.map_err(|e| ctx("stat", &e))?;
        let pool = if write_pool {
            Some(Arc::new(
                dup_file(file.as_raw_fd()).map_err(|e| ctx("dup", &e))?,
            ))
        } else {
            None
        };
        Ok(GlommioDisk {
            file,
            name,
            len: Cell::new(len),
            use_mmap,
            pool,
        })
    }
}

/// Writes in flight at once per `write_many` window. Each pending glommio operation
/// holds a clone of the task's waker, whose count is an i16: stay far below it.
pub const WRITES_IN_FLIGHT_MAX: usize = 64;

impl GlommioDisk {
    async fn write_window(&self, writes: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        assert!(writes.len() <= WRITES_IN_FLIGHT_MAX);
        let file = &self.file;
        let mut end = self.len.get();
        let mut futs: Vec<_> = writes
            .into_iter()
            .map(|(offset, data)| {
                let total = data.len();
                end = end.max(offset + total as u64);
                Some(Box::pin(async move {
                    let done = file
                        .write_at(data, offset)
                        .await
                        .map_err(|e| io::Error::other(format!("write at offset {offset}: {e}")))?;
                    if done < total {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("short write at offset {offset}: {done} of {total} bytes"),
                        ));
                    }
                    Ok(())
                }))
            })
            .collect();
        let mut first_err = None;
        futures_lite::future::poll_fn(|cx| {
            let mut pending = false;
            for slot in futs.iter_mut() {
                if let Some(f) = slot {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(r) => {
                            if let Err(e) = r {
                                first_err.get_or_insert(e);
                            }
                            *slot = None;
                        }
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        if let Some(e) = first_err {
            return Err(e);
        }
        self.len.set(self.len.get().max(end));
        Ok(())
    }
}

impl Disk for GlommioDisk {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len.get()
    }
    async fn write_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        let total = data.len();
        let done = self.file.write_at(data, offset).await.map_err(gio)?;
        // A short write only happens when the device is out of space; it is an error
        // (the commit fails and the Db refuses further writes).
        if done < total {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {done} of {total} bytes"),
            ));
        }
        self.len.set(self.len.get().max(offset + total as u64));
        Ok(())
    }
    /// Submits the writes in windows of [`WRITES_IN_FLIGHT_MAX`] (io_uring runs each
    /// window concurrently) and waits for every one of them.
    async fn write_many(&self, writes: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let end = writes
            .iter()
            .map(|(off, d)| off + d.len() as u64)
            .fold(self.len.get(), u64::max);
        if let Some(file) = &self.pool {
            // Buffered pwrites are page-cache copies; io_uring punts each of them to a
            // worker (~10 us apiece here), so a commit's many scattered runs go to
            // glommio's blocking pool in one hand-off instead. The executor never
            // blocks: it awaits the pool's completion.
            let file = file.clone();
            glommio::executor()
                .spawn_blocking(move || -> io::Result<()> {
                    // Paced writeback: after every WRITEBACK_CHUNK_BYTES of page-cache
                    // copies, write that range out and wait for it. The device then
                    // sees a commit as a stream of small writes that the WAL's
                    // write+fdatasync can slip between, not as one burst of megabytes
                    // queued ahead of it at the commit's fdatasync (which still follows
                    // and is what makes the pages durable).
                    let mut chunk_start: Option<u64> = None;
                    for (off, data) in &writes {
                        file.write_all_at(data, *off).map_err(|e| {
                            io::Error::new(e.kind(), format!("write at offset {off}: {e}"))
                        })?;
                        let end = off + data.len() as u64;
                        let lo = *chunk_start.get_or_insert(*off);
                        if end - lo >= WRITEBACK_CHUNK_BYTES {
                            write_out(&file, lo, end)?;
                            chunk_start = None;
                        }
                    }
                    Ok(())
                })
                .await?;
            self.len.set(self.len.get().max(end));
            return Ok(());
        }
        let mut writes = writes.into_iter().peekable();
        while writes.peek().is_some() {
            let window: Vec<_> = writes.by_ref().take(WRITES_IN_FLIGHT_MAX).collect();
            self.write_window(window).await?;
        }
        Ok(())
    }
    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(gio)
    }
    async fn grow(&self, len: u64) -> io::Result<()> {
        if len <= self.len.get() {
            return Ok(());
        }
        // fallocate reserves the blocks (fewer metadata updates at fdatasync); fall back
        // to ftruncate on file systems without it.
        if self.file.pre_allocate(len, false).await.is_err() {
            self.file.truncate(len).await.map_err(gio)?;
        }
        self.len.set(len);
        Ok(())
    }
    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(gio)
    }
    fn store(&self) -> io::Result<Rc<dyn PageStore>> {
        let fd = self.file.as_raw_fd();
        if self.use_mmap {
            Ok(Rc::new(MmapStore::map_fd(fd, self.len.get())?))
        } else {
            Ok(Rc::new(PreadStore::new(dup_file(fd)?, self.len.get())))
        }
    }
}

/// A simulated disk with a live and a durable image (tests).
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

#[derive(Default)]
struct SimState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes (and growths, as zero-length writes at the new end) since the last sync.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// When Some(0), the next sync fails and the disk refuses everything after.
    syncs_until_crash: Option<u64>,
    crashed: bool,
    syncs: u64,
    /// Every operation returns Pending once before it runs (tests interleave other
    /// work with a commit's I/O).
    yielding: bool,
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash")
}

impl SimDisk {
    /// A disk whose durable and live images are both `image`.
    pub fn from_image(image: Vec<u8>) -> SimDisk {
        let s = SimState {
            live: image.clone(),
            durable: image,
            ..SimState::default()
        };
        SimDisk {
            state: Rc::new(RefCell::new(s)),
        }
    }
    /// Makes sync number `n` (counting from 0 from now) fail as a crash.
    pub fn crash_at_sync(&self, n: u64) {
        self.state.borrow_mut().syncs_until_crash = Some(n);
    }
    /// Makes every later write, sync and growth yield once (return Pending, waking
    /// itself) before it takes effect, so that a test can poll a commit step by step.
    pub fn set_yielding(&self, on: bool) {
        self.state.borrow_mut().yielding = on;
    }
    async fn maybe_yield(&self) {
        let y = self.state.borrow().yielding;
        if y {
            futures_lite::future::yield_now().await;
        }
    }
    pub fn has_crashed(&self) -> bool {
        self.state.borrow().crashed
    }
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }
    /// Live image (what a reader sees now).
    pub fn live(&self) -> Vec<u8> {
        self.state.borrow().live.clone()
    }
    /// Mutates the live and durable image at `offset` (bit-flip tests).
    pub fn corrupt(&self, offset: usize, f: impl Fn(&mut u8)) {
        let mut s = self.state.borrow_mut();
        f(&mut s.live[offset]);
        f(&mut s.durable[offset]);
    }
    /// What the file could hold after a crash now: the durable image plus, for each
    /// unsynced write, per `choose(i)`: 0 = dropped, 1 = applied, k >= 2 = the first
    /// `k - 2` sectors of it applied (a torn write).
    pub fn crash_image(&self, mut choose: impl FnMut(usize) -> u64) -> Vec<u8> {
        let s = self.state.borrow();
        let mut img = s.durable.clone();
        for (i, (off, data)) in s.unsynced.iter().enumerate() {
            let c = choose(i);
            let n = match c {
                0 => continue,
                1 => data.len(),
                k => (((k - 2) * 512) as usize).min(data.len()),
            };
            let end = *off as usize + data.len();
            if img.len() < end {
                img.resize(end, 0);
            }
            img[*off as usize..*off as usize + n].copy_from_slice(&data[..n]);
        }
        img
    }
}

impl Disk for SimDisk {
    fn name(&self) -> &str {
        "simdisk"
    }
    fn len(&self) -> u64 {
        self.state.borrow().live.len() as u64
    }
    async fn write_at(&self, offset: u64, data: Vec<u8>) -> io::Result<()> {
        self.maybe_yield().await;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(crashed_err());
        }
        let end = offset as usize + data.len();
        if s.live.len() < end {
            s.live.resize(end, 0);
        }
        s.live[offset as usize..end].copy_from_slice(&data);
        s.unsynced.push((offset, data));
        Ok(())
    }
    async fn sync(&self) -> io::Result<()> {
        self.maybe_yield().await;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(crashed_err());
        }
        if let Some(n) = s.syncs_until_crash {
            if n == 0 {
                s.crashed = true;
                return Err(crashed_err());
            }
            s.syncs_until_crash = Some(n - 1);
        }
        s.syncs += 1;
        let writes = std::mem::take(&mut s.unsynced);
        for (off, data) in writes {
            let end = off as usize + data.len();
            if s.durable.len() < end {
                s.durable.resize(end, 0);
            }
            s.durable[off as usize..end].copy_from_slice(&data);
        }
        let live_len = s.live.len();
        if s.durable.len() < live_len {
            s.durable.resize(live_len, 0);
        }
        Ok(())
    }
    async fn grow(&self, len: u64) -> io::Result<()> {
        self.maybe_yield().await;
        let mut s = self.state.borrow_mut();
        if s.crashed {
            return Err(crashed_err());
        }
        if (len as usize) > s.live.len() {
            s.live.resize(len as usize, 0);
        }
        Ok(())
    }
    fn store(&self) -> io::Result<Rc<dyn PageStore>> {
        Ok(Rc::new(SimStore {
            state: self.state.clone(),
            len: self.len(),
        }))
    }
}

struct SimStore {
    state: Rc<RefCell<SimState>>,
    len: u64,
}

impl PageStore for SimStore {
    fn read(&self, offset: u64, len: usize) -> io::Result<std::borrow::Cow<'_, [u8]>> {
        let s = self.state.borrow();
        let end = offset as usize + len;
        if end as u64 > self.len || end > s.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("simdisk read past the end: {offset}+{len}"),
            ));
        }
        Ok(std::borrow::Cow::Owned(
            s.live[offset as usize..end].to_vec(),
        ))
    }
    fn len(&self) -> u64 {
        self.len
    }
}

fn gio(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::other(e.to_string())
}
