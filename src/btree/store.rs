//! Read access to the B+tree file: the [`PageStore`] trait with a memory-map
//! implementation ([`MmapStore`]) and a pread one ([`PreadStore`], for tests and as a
//! fallback), plus the two other system calls the module needs (`dup`, `flock`).
//!
//! **Every `unsafe` block of `src/btree` is in this file.** The safety argument for the
//! memory map, which hands out `&[u8]` slices of file bytes:
//!
//! 1. *Nobody writes bytes that a live slice can see.* The file is written only by the
//!    one `Db` that holds an exclusive `flock` on it (so no second `Db`, in this process
//!    or another, writes it while we map it). That writer is copy-on-write: it writes
//!    only pages that no committed version reachable by a live reader uses (pages from
//!    the end of the file, or freed pages that no live snapshot and neither meta slot can
//!    reach); meta pages 0 and 1 are never read through a map (they are read once at
//!    open, through [`PageStore::read`], and copied). A commit job that runs while the
//!    `Db` serves reads (two-phase commit) writes only its own sealed pages, which the
//!    `Db` reads from memory, not from the map, until the job has finished. A slice
//!    handed out for a page is therefore never modified while it lives. Modification of the file by some other
//!    program is outside the contract (as with LMDB and bbolt).
//! 2. *The mapped range stays backed by the file.* The file only grows; it is never
//!    truncated below a length that some live map covers, so no access faults with
//!    SIGBUS. Each map covers exactly the file length at the time it was made.
//! 3. *The map outlives the slices.* A slice borrows the `MmapStore`; stores are shared
//!    through `Rc`, and a snapshot keeps the store it was made with alive, so a remap
//!    after growth never unmaps memory that is still borrowed.
//!
//! Reads check bounds and return an error for a range outside the store.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

use memmap2::{Mmap, MmapOptions};

/// Random-access reads of file bytes.
pub trait PageStore {
    /// Bytes `[offset, offset + len)`. Borrowed where the store can (a map).
    fn read(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>>;
    /// Length of the file this store covers.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn out_of_range(offset: u64, len: usize, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at offset {offset} past the end ({size} bytes)"),
    )
}

/// A read-only shared map of the first `len` bytes of the file.
pub struct MmapStore {
    map: Option<Mmap>,
    len: u64,
}

impl MmapStore {
    /// Maps the first `len` bytes of `fd` (which must be at least that long).
    pub fn map_fd(fd: RawFd, len: u64) -> io::Result<MmapStore> {
        if len == 0 {
            return Ok(MmapStore { map: None, len });
        }
        let size = usize::try_from(len).map_err(io::Error::other)?;
        // SAFETY: see the module docs: the mapped bytes are never written while a slice
        // of them lives, and the file is never shrunk below `len` while this map lives.
        let map = unsafe { MmapOptions::new().len(size).map(fd)? };
        Ok(MmapStore {
            map: Some(map),
            len,
        })
    }
}

impl PageStore for MmapStore {
    #[inline]
    fn read(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        let end = offset.checked_add(len as u64);
        match (&self.map, end) {
            (Some(map), Some(end)) if end <= self.len => {
                Ok(Cow::Borrowed(&map[offset as usize..end as usize]))
            }
            _ => Err(out_of_range(offset, len, self.len)),
        }
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// Reads with `pread(2)` into owned buffers (a blocking call: the fallback path).
pub struct PreadStore {
    file: File,
    len: u64,
}

impl PreadStore {
    pub fn new(file: File, len: u64) -> PreadStore {
        PreadStore { file, len }
    }
}

impl PageStore for PreadStore {
    fn read(&self, offset: u64, len: usize) -> io::Result<Cow<'_, [u8]>> {
        if offset.checked_add(len as u64).is_none_or(|e| e > self.len) {
            return Err(out_of_range(offset, len, self.len));
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(Cow::Owned(buf))
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// A `File` owning a duplicate of `fd` (for pread alongside glommio's own descriptor),
/// close-on-exec so that a spawned process cannot inherit it (and with it the lock).
pub fn dup_file(fd: RawFd) -> io::Result<File> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) has no memory-safety preconditions; the result is
    // checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(new) })
}

/// Takes an exclusive, non-blocking advisory lock on the whole file (released when the
/// descriptor closes). Fails with `WouldBlock` if another open `Db` holds it.
pub fn lock_exclusive(fd: RawFd) -> io::Result<()> {
    // SAFETY: flock has no memory-safety preconditions; LOCK_NB keeps it non-blocking.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
