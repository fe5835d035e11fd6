//! The narrow file-system interface the WAL runs on, and its production implementation
//! on glommio's `DmaFile` (O_DIRECT, io_uring).
//!
//! The WAL only ever: creates a new file, opens an existing one, writes a whole number
//! of aligned blocks at an aligned offset, reads, fdatasyncs, preallocates, renames and
//! removes a file, lists the directory and syncs the directory. [`super::sim::SimDisk`] implements
//! the same traits in memory with crash and fault injection, so the same WAL code runs
//! on both. Every operation of [`DmaDisk`] goes through glommio (io_uring or glommio's
//! blocking-thread pool for `readdir`), never a blocking call on the executor.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaBuffer, DmaFile, OpenOptions};
use glommio::nop::NopSubmitter;

/// A buffer the WAL fills and hands to [`DiskFile::write_at`].
pub trait IoBuf {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shortens the buffer to its first `len` bytes (what `write_at` then writes).
    fn trim_to(&mut self, len: usize);
    /// Writes every byte once, in one bulk pass (contents unspecified afterwards), so
    /// that the CPU owns all of the buffer's cache lines before the encoder's small
    /// stores land in them (see `Staging` in `src/wal/mod.rs` for why it pays).
    fn touch(&mut self);
}

impl IoBuf for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
    fn trim_to(&mut self, len: usize) {
        self.trim_to_size(len);
    }
    fn touch(&mut self) {
        self.as_bytes_mut().fill(0);
    }
}

/// The byte a fresh simulated buffer holds (stale contents, like a reused DMA buffer's),
/// and what touching a `Vec` buffer writes: a byte the encoder leaves unwritten shows.
pub const STALE_BYTE: u8 = 0xEE;

impl IoBuf for Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self
    }
    fn trim_to(&mut self, len: usize) {
        assert!(len <= self.len(), "trim_to {len} of {}", self.len());
        self.truncate(len);
    }
    /// [`STALE_BYTE`], as the simulated disk's fresh buffers hold, so that its tests still
    /// see stale bytes wherever the encoder would leave one unwritten.
    fn touch(&mut self) {
        self.fill(STALE_BYTE);
    }
}

/// One open file. Offsets and lengths of writes are multiples of
/// [`super::format::BLOCK_BYTES`].
#[allow(async_fn_in_trait)]
pub trait DiskFile {
    type Buf: IoBuf;
    /// A buffer of exactly `len` bytes suitable for `write_at` (contents unspecified).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Writes all of `buf` at `off` (a short write is an error).
    async fn write_at(&self, buf: Self::Buf, off: u64) -> io::Result<()>;
    /// Reads up to `len` bytes at `off`; fewer only at end of file.
    async fn read_at(&self, off: u64, len: usize) -> io::Result<Vec<u8>>;
    /// fdatasync: everything written so far is durable when this returns Ok.
    async fn sync(&self) -> io::Result<()>;
    /// fallocate(0, len): reserve blocks and set the size to at least `len`.
    async fn allocate(&self, len: u64) -> io::Result<()>;
    /// Current file size in bytes.
    async fn size(&self) -> io::Result<u64>;
}

/// One WAL directory.
#[allow(async_fn_in_trait)]
pub trait Disk {
    type File: DiskFile;
    /// Creates a new, empty file (fails if it exists). Durable only after `sync_dir`.
    async fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, name: &str) -> io::Result<Self::File>;
    /// Removes a file. Durable only after `sync_dir`.
    async fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file (replacing nothing: `to` must not exist). Durable after `sync_dir`.
    async fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Names of the files in the directory.
    async fn list(&self) -> io::Result<Vec<String>>;
    /// fsync of the directory: creations and removals so far are durable.
    async fn sync_dir(&self) -> io::Result<()>;
    /// How `name` is shown in error messages (a path).
    fn describe(&self, name: &str) -> String;
    /// Resolves once the I/O requests made so far (a `write_at` polled once) are in the
    /// kernel's hands, so that what runs after it overlaps them. At once by default
    /// (a disk whose calls complete when first polled).
    async fn submitted(&self) {}
}

/// How a group-commit write is made durable on a real disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// `write` then `fdatasync`.
    Fdatasync,
    /// Files opened with `O_DSYNC`: each write is durable when it completes, `sync` is a
    /// no-op (the default; see the module docs of [`crate::wal`] for the measurement).
    Dsync,
}

impl SyncMode {
    /// The name a flag or an environment variable gives it.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Fdatasync => "fdatasync",
            SyncMode::Dsync => "dsync",
        }
    }

    /// The mode `name` names ("dsync" or "fdatasync").
    pub fn from_name(name: &str) -> Option<SyncMode> {
        [SyncMode::Dsync, SyncMode::Fdatasync]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// The production disk: a directory of O_DIRECT files driven by glommio.
pub struct DmaDisk {
    dir: PathBuf,
    handle: Directory,
    mode: SyncMode,
}

impl DmaDisk {
    /// Opens (creating if missing) the directory `dir`. Must run on a glommio executor.
    pub async fn open(dir: impl AsRef<Path>, mode: SyncMode) -> io::Result<DmaDisk> {
        // glommio resolves a relative path with a blocking canonicalize(); give it an
        // absolute one (std::path::absolute is pure string work plus getcwd).
        let dir = std::path::absolute(dir.as_ref())?;
        let handle = Directory::create(&dir).await.map_err(io::Error::from)?;
        probe_iopoll(&dir).await?;
        Ok(DmaDisk { dir, handle, mode })
    }

    fn options(&self) -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if self.mode == SyncMode::Dsync {
            o.custom_flags(libc::O_DSYNC);
        }
        o
    }
}

/// glommio decides once per block device whether to use its IOPOLL ring, by reading
/// the first block of the first `DmaFile` opened there. When that file is new and empty
/// the read hits EOF, "succeeds", and IOPOLL is wrongly enabled; on a device without
/// poll queues every later read then fails with EOPNOTSUPP. So open a file that has
/// data first: written through the page cache, then opened as a `DmaFile`.
async fn probe_iopoll(dir: &Path) -> io::Result<()> {
    let path = dir.join(".iopoll-probe");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(&path)
        .await?;
    f.write_at(vec![0u8; 4096], 0).await?;
    f.close().await?;
    let d = DmaFile::open(&path).await?;
    d.close().await?;
    glommio::io::remove(&path).await?;
    Ok(())
}

/// A segment file on a [`DmaDisk`].
pub struct DmaDiskFile {
    file: Rc<DmaFile>,
    mode: SyncMode,
}

impl DiskFile for DmaDiskFile {
    type Buf = DmaBuffer;

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        self.file.alloc_dma_buffer(len)
    }

    async fn write_at(&self, buf: DmaBuffer, off: u64) -> io::Result<()> {
        let len = buf.len();
        let n = self
            .file
            .write_at(buf, off)
            .await
            .map_err(io::Error::from)?;
        if n != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {len} bytes at offset {off}"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let r = self.file.read_at(off, len).await.map_err(io::Error::from)?;
        Ok(r.to_vec())
    }

    async fn sync(&self) -> io::Result<()> {
        match self.mode {
            SyncMode::Fdatasync => self.file.fdatasync().await.map_err(io::Error::from),
            SyncMode::Dsync => Ok(()),
        }
    }

    async fn allocate(&self, len: u64) -> io::Result<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(io::Error::from)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(io::Error::from)
    }
}

impl Disk for DmaDisk {
    type File = DmaDiskFile;

    async fn create(&self, name: &str) -> io::Result<DmaDiskFile> {
        let mut o = self.options();
        o.create_new(true);
        let file = o.dma_open(self.dir.join(name)).await?;
        Ok(DmaDiskFile {
            file: Rc::new(file),
            mode: self.mode,
        })
    }

    async fn open(&self, name: &str) -> io::Result<DmaDiskFile> {
        let file = self.options().dma_open(self.dir.join(name)).await?;
        Ok(DmaDiskFile {
            file: Rc::new(file),
            mode: self.mode,
        })
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        glommio::io::remove(self.dir.join(name))
            .await
            .map_err(io::Error::from)
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        glommio::io::rename(self.dir.join(from), self.dir.join(to))
            .await
            .map_err(io::Error::from)
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        // readdir has no io_uring opcode: run it on glommio's blocking-thread pool.
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || -> io::Result<Vec<String>> {
                let mut names = Vec::new();
                for e in std::fs::read_dir(&dir)? {
                    if let Some(n) = e?.file_name().to_str() {
                        names.push(n.to_string());
                    }
                }
                Ok(names)
            })
            .await
    }

    async fn sync_dir(&self) -> io::Result<()> {
        self.handle.sync().await.map_err(io::Error::from)
    }

    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// glommio hands queued requests to the kernel only once no task is runnable (it
    /// submits at the top of its loop). A no-op request queued behind them completes
    /// in that same submission, and its completion wakes the caller in the next turn
    /// of the loop: no timer, no sleep (a 1 µs timer cost 15-25 µs of CPU per write,
    /// `docs/wal.md`). It cannot fail in a way that matters here: an error only means
    /// the caller goes on earlier. The submitter is made on the spot: it belongs to the
    /// executor running now, which is the one the write was queued on.
    async fn submitted(&self) {
        let _ = NopSubmitter::new().run_nop().await;
    }
}
