//! The write-ahead log of one Raft group: O_DIRECT segment files, group commit, recovery.
//!
//! Every acknowledged write lives here until the B+tree has it. The log is a directory of
//! segment files (`{seq:016x}.wal`, 64 MiB by default) written only by appending whole
//! aligned blocks through glommio's `DmaFile` (O_DIRECT, io_uring). `docs/wal.md` has
//! the same description with the measurements behind the choices.
//!
//! # Format (all integers little-endian)
//!
//! ```text
//! segment file:  | header block (4096) | write | write | ... | zeros (prepared, unused) |
//! header block:  0 magic "COREKVWL" | 8 version u32 (=1) | 12 block size u32 (=4096)
//!                | 16 seq u64 | 24 segment bytes u64 | 32 crc32(0..32) u32 | 36.. zero
//! write:         | record | record | ... | Pad record up to the next block boundary |
//!                starts and ends on a 4096-byte boundary; one write = one group commit
//! record:        0 len u32 (payload bytes) | 4 crc32 u32 over bytes 8..24+len
//!                | 8 kind u8 | 9 reserved [u8;7] = 0 | 16 wsn u64 | 24 payload (len)
//! kinds:         1 Append   payload: 0 ready u64 | 8 flags u8 (1 = has hard state) [7]
//!                           | 16 hard state (term, vote, commit: 3 x u64) | 40 count u32 [4]
//!                           | 48 entries: (term u64, index u64, kind u8 [3], len u32, data)*
//!                2 Snapshot payload: 0 hard state (24) | 24 index u64 | 32 term u64
//!                           | 40 voters u32, learners u32, outgoing u32 [4] | 56 ids u64*
//!                3 Pad      payload: zeros (ends the write on a block boundary)
//!                0 is never a kind, so zeroed bytes never parse as a record.
//! ```
//! `wsn` is the write sequence number: +1 per group-commit write, the same in every
//! record of one write. The offsets are chained constants in [`format`] with
//! `const` assertions on the layout.
//!
//! # Write path and crash argument
//!
//! Each append encodes its record once, into the staging buffer: a DMA write buffer
//! holding the pending records back to back (written over once in bulk when it is
//! allocated, see `Staging`; after a write of 64 KiB or more, that is done while the
//! write is in flight, see `Wal::write_window`). The cache of recent entries shares their
//! data with the caller ([`Payload`]: a reference count, no copy of the bytes), and the
//! append returns at once. A flush is done by the first waiter in
//! [`Wal::wait_durable`] that finds no write in flight: it claims the flush (later
//! waiters only listen), yields once so that the runnable appenders join its group,
//! then takes everything pending (or [`Wal::flush`] does), up to
//! `group_commit_bytes_max`. If that is all the staging buffer holds (the usual case),
//! it stamps wsn and crc into the records where they are, pads to a block and writes
//! that very buffer; a group cut short is copied into a new buffer, sealed in the same
//! pass. ONE O_DIRECT write at the next free block of the active segment, then ONE
//! fdatasync. Only one write is in flight at a time; appends arriving meanwhile
//! form the next group. After the sync, the highest Ready number whose appends are all
//! durable is published and the waiters are woken. While a write is in flight the
//! executor would idle: the flusher then makes and touches the next staging buffer
//! and releases cached entries that compactions set aside (`Wal::write_window`,
//! started by a no-op request queued behind the write: glommio submits only when no
//! task is runnable).
//!
//! * A write never touches a block an earlier write used: each starts on a fresh block,
//!   so no acknowledged byte is ever rewritten (a torn rewrite cannot lose it).
//! * If a write is torn (power cut before its fdatasync returned), any subset of its
//!   512-byte sectors may be on disk. Recovery keeps the records before the first bad
//!   one; none of them was acknowledged, all were appended in this order, so what comes
//!   back is a prefix of the appends, at least everything acknowledged.
//! * Writes are serial, so a valid record of write `w + 1` proves write `w` was synced:
//!   a bad record followed (anywhere later) by a valid record with a higher wsn is
//!   corruption, and open fails naming the file and offset. A bad record followed only
//!   by zeros or stale records (wsn not higher: leftovers of an earlier torn write) is
//!   the torn tail and is cut off. A write torn mid-way is closed at open by a Pad
//!   written into its own (never acknowledged) last block and synced before any append.
//! * Segments are created and filled (header + zeros, or fallocate) and fsynced, with
//!   the directory fsynced, *before* use, so an fdatasync of a write never has to commit
//!   file size or extent metadata. A crash while preparing leaves a file with a bad
//!   header and no records: recovery removes it.
//! * Compaction appends a Snapshot record (snapshot metadata + current hard state),
//!   waits until it is durable, then takes whole segments below it out of the log,
//!   oldest first, one directory change (and fsync) at a time, so the segment files on
//!   disk are always contiguous: up to `recycle_segments` are kept and later recycled
//!   as spares (rename to the next number + fsync dir, then rewrite the header +
//!   fdatasync; a crash in between leaves a trailing file with a foreign header and
//!   only older-wsn records, removed at recovery), the rest are removed.
//! * A failed write or fdatasync poisons the log: the kernel may have dropped the dirty
//!   data and will not report it again (fsyncgate), so every later operation fails
//!   until the log is reopened and recovered from what is really on disk.
//!
//! # Choices (measured by `scripts/wal-bench.sh`, numbers in `docs/wal.md`)
//!
//! Segments are zero-filled, not fallocated ([`Prepare`]): fallocate leaves unwritten
//! extents whose conversion turns each later fdatasync into a journal commit. Durability
//! uses one write to a file opened O_DSYNC by default ([`SyncMode`]): the kernel
//! flushes right after the write, without a completion and a second submission through
//! the executor in between, and every load of the bench was faster that way (1.5x at
//! one append at a time); write + fdatasync is the other mode.
//!
//! # Reads
//!
//! [`Wal`] implements [`Storage`] from memory: terms of all retained entries and a cache
//! of the most recent entries (`cache_bytes_max`). A read starting below the cache
//! returns `TemporarilyUnavailable` (or the prefix it could serve) and records the
//! missing range; [`Wal::fetch_pending`] loads it from disk asynchronously so the next
//! call succeeds. The Storage view includes entries
//! appended but not yet durable; durability is reported by [`Wal::durable_ready`].
//! After [`Wal::open`] the whole recovered log stays cached until the first append of
//! entries: Raft's start reads all of it in one synchronous call (recovery held it in
//! memory anyway).

pub mod disk;
pub mod format;
mod log;
mod recover;
pub mod sim;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::raft::types::{
    ConfState, Entry, HardState, Payload, SnapshotMeta, Storage, StorageError,
};

pub use disk::{Disk, DiskFile, DmaDisk, IoBuf, SyncMode};
use format::*;
use log::{DiskLoc, LogIndex};
pub use sim::SimDisk;

/// How a new segment file is made ready before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// Write the whole file with zeros, then fdatasync. Later fdatasyncs of WAL writes
    /// then only flush data. The default: see the module docs for the measurement.
    ZeroFill,
    /// fallocate the file. Leaves unwritten extents, whose conversion makes the first
    /// fdatasync of each block commit metadata.
    Fallocate,
}

/// Options of one WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of each segment file (a multiple of 4096, at least 2 blocks).
    pub segment_bytes: u64,
    /// Most bytes one group-commit write takes (a single bigger record goes alone).
    pub group_commit_bytes_max: u64,
    /// Most bytes of entries kept in memory for `Storage` reads.
    pub cache_bytes_max: u64,
    /// Most bytes of entries one `fetch_pending` loads.
    pub fetch_bytes_max: u64,
    pub prepare: Prepare,
    /// Compacted segments kept (at the front of the log) for reuse as spares instead of
    /// being removed: a recycled segment is already written, so it needs neither a
    /// zero-fill nor extent allocation.
    pub recycle_segments: usize,
    /// Only used by [`Wal::open`] (the DmaDisk).
    pub sync_mode: SyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            group_commit_bytes_max: 4 << 20,
            cache_bytes_max: 64 << 20,
            fetch_bytes_max: 4 << 20,
            prepare: Prepare::ZeroFill,
            recycle_segments: 4,
            sync_mode: SyncMode::Dsync,
        }
    }
}

/// Errors of the WAL. I/O errors name the operation, the file and the offset.
#[derive(Debug)]
pub enum WalError {
    Io {
        op: &'static str,
        file: String,
        offset: u64,
        source: io::Error,
    },
    /// Bad data before the tail: the log refuses to open.
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// An earlier write or sync failed; reopen the log.
    Poisoned(String),
    /// One append is bigger than a segment can hold.
    TooLarge { bytes: u64, max: u64 },
    /// A request the log's state does not allow (e.g. compacting to an older snapshot).
    Invalid(String),
}

impl WalError {
    fn io(op: &'static str, file: String, offset: u64, source: io::Error) -> WalError {
        WalError::Io {
            op,
            file,
            offset,
            source,
        }
    }
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalError::Io {
                op,
                file,
                offset,
                source,
            } => write!(f, "wal: {op} {file} at offset {offset}: {source}"),
            WalError::Corrupt {
                file,
                offset,
                reason,
            } => write!(f, "wal: corrupt {file} at offset {offset}: {reason}"),
            WalError::Poisoned(m) => write!(f, "wal: poisoned by an earlier failure: {m}"),
            WalError::TooLarge { bytes, max } => {
                write!(
                    f,
                    "wal: append of {bytes} bytes exceeds the {max}-byte limit"
                )
            }
            WalError::Invalid(m) => write!(f, "wal: {m}"),
        }
    }
}

impl std::error::Error for WalError {}

/// What recovery found on open.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// All retained entries, `snapshot.index + 1 ..= last`.
    pub entries: Vec<Entry>,
    /// Highest Ready number found; number new Readies above it.
    pub last_ready: u64,
    /// Where a torn or invalid tail was cut off (file, offset), if one was.
    pub torn_tail: Option<(String, u64)>,
}

/// Counters for benchmarks and tests.
#[derive(Debug, Clone, Default)]
pub struct WalStats {
    pub flushes: u64,
    pub bytes_written: u64,
    pub pad_bytes: u64,
    pub appends: u64,
    /// Segments prepared inline by a flush because no spare was ready.
    pub inline_prepares: u64,
    pub segments_prepared: u64,
    pub segments_removed: u64,
    pub segments_recycled: u64,
    /// Times the active segment was full and a spare took its place.
    pub segments_switched: u64,
    /// Nanoseconds spent from issuing group-commit writes to their fdatasync returning.
    pub io_ns: u64,
}

/// A one-shot-per-generation notification (single-threaded).
#[derive(Default)]
struct Event {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Event {
    fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        let mut wakers = self.wakers.take();
        for w in wakers.drain(..) {
            w.wake();
        }
        // Keep the allocation for the next generation's listeners (a group commit
        // wakes up to one waiter per appender, every time).
        let mut cur = self.wakers.borrow_mut();
        if cur.is_empty() {
            *cur = wakers;
        }
    }
    fn listen(&self) -> Listen<'_> {
        Listen {
            ev: self,
            generation: self.generation.get(),
        }
    }
}

struct Listen<'a> {
    ev: &'a Event,
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.ev.generation.get() != self.generation {
            Poll::Ready(())
        } else {
            self.ev.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Returns Pending once (waking itself at once), then Ready.
pub(crate) struct YieldOnce(pub(crate) bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// A waiter's claim on the next flush ([`Inner::flush_due`]). Released by
/// [`FlushClaim::release`]; if the claiming task is cancelled during its yield instead,
/// dropping the claim releases it and wakes the listeners, so one of them flushes.
struct FlushClaim<'a, D: Disk>(&'a Inner<D>, bool);

impl<'a, D: Disk> FlushClaim<'a, D> {
    fn new(inner: &'a Inner<D>) -> Self {
        assert!(!inner.flush_due.get(), "wal: two flush claims at once");
        inner.flush_due.set(true);
        FlushClaim(inner, false)
    }
    fn release(mut self) {
        self.0.flush_due.set(false);
        self.1 = true;
    }
}

impl<D: Disk> Drop for FlushClaim<'_, D> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.flush_due.set(false);
            self.0.flushed.notify();
        }
    }
}

struct Segment<F> {
    file: Rc<F>,
    max_index: u64,
}

enum PendingKind {
    Append { rec_id: u64, last_index: u64 },
    Snapshot,
    Empty,
}

struct Pending {
    ready: u64,
    /// Bytes of its encoded record in [`Staging`] (0 for an empty append).
    len: u32,
    kind: PendingKind,
}

impl Pending {
    fn len(&self) -> u64 {
        self.len as u64
    }
}

/// The encoded records of the pending appends, back to back in append order (unsealed:
/// wsn and crc are stamped at flush): the first `used` bytes of `buf`.
///
/// `buf` is a write buffer (DMA memory on a real disk), so a flush that takes all that
/// is pending (the usual case) seals the records where they are, pads them and hands
/// this very buffer to the write: each record's bytes are written to memory once, by
/// the encoder. Only a group cut short by `group_commit_bytes_max` (or a buffer with
/// no room for the pad) is copied into a new buffer and sealed there, the rest moving
/// to the front. The next buffer is as big as the last group (so usually one per
/// group): made while that group's write is in flight when it was at least
/// `WINDOW_MIN_BYTES` ([`Wal::write_window`]), else at the first append after the
/// flush; it grows (moving what it holds) when outgrown.
///
/// A new buffer is written over once in bulk ([`IoBuf::touch`]) before the first
/// record goes in. The pool hands the same memory back group after group, and the
/// device has just read it for the previous write. On this project's virtual disk the
/// encoder's small stores into those lines were at times 2-3x slower, for whole runs
/// (wal-bench, batch 1024: time outside the I/O p50 50-60 µs instead of 18-24), most
/// likely because the host thread serving the disk, on another core, had read them
/// last. One bulk pass takes the lines back at streaming speed: it costs ~3 µs per
/// 290 KB where nothing is slow, and no run with it was slow (`docs/wal.md`,
/// session 11).
struct Staging<B> {
    buf: Option<B>,
    used: usize,
    /// Size of the next buffer: that of the last group written from one.
    hint: usize,
}

impl<B: IoBuf> Staging<B> {
    fn new() -> Staging<B> {
        Staging {
            buf: None,
            used: 0,
            hint: BLOCK_BYTES as usize,
        }
    }

    fn cap(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.as_slice().len())
    }

    /// The next `len` bytes (stale contents), which become part of `used`; `alloc`
    /// gives a new buffer of the size asked for when this one is too small.
    fn push(&mut self, len: usize, alloc: impl FnOnce(usize) -> B) -> &mut [u8] {
        let at = self.used;
        // Room for the records and the Pad that will close them.
        let need = padded_len((at + len) as u64) as usize;
        if self.cap() < need {
            let mut nb = Self::new_buf(need.max(self.hint).max(2 * self.cap()), alloc);
            if let Some(old) = &self.buf {
                nb.as_mut_slice()[..at].copy_from_slice(&old.as_slice()[..at]);
            }
            self.buf = Some(nb);
        }
        self.used = at + len;
        &mut self.buf.as_mut().expect("staging buffer").as_mut_slice()[at..at + len]
    }

    /// Makes the next buffer now (sized after the last group, touched) if there is
    /// none, so that the next append finds it ready.
    fn prepare(&mut self, alloc: impl FnOnce(usize) -> B) {
        if self.buf.is_none() {
            self.buf = Some(Self::new_buf(self.hint, alloc));
        }
    }

    /// A new buffer of `len` bytes, written over once in bulk before use.
    fn new_buf(len: usize, alloc: impl FnOnce(usize) -> B) -> B {
        let mut nb = alloc(len);
        nb.touch();
        nb
    }

    /// The pending bytes.
    fn bytes(&self) -> &[u8] {
        self.buf
            .as_ref()
            .map_or(&[], |b| &b.as_slice()[..self.used])
    }

    /// Takes the buffer with all pending records if it can be written as it is (it
    /// holds exactly `len` bytes of records and has room for `total`).
    fn take_whole(&mut self, len: usize, total: usize) -> Option<B> {
        if self.used != len || self.cap() < total {
            return None;
        }
        let b = self.buf.take()?;
        // The next buffer is sized after this group, not after this buffer: one burst
        // must not make every later buffer as big as it was.
        self.hint = total;
        self.used = 0;
        Some(b)
    }

    /// Drops the first `len` bytes (a group copied into a write buffer); the rest moves
    /// to the front. Lets the buffer go once it is empty.
    fn consume(&mut self, len: usize) {
        assert!(len <= self.used, "staging: consume {len} of {}", self.used);
        let (used, buf) = (self.used, self.buf.as_mut().expect("staging buffer"));
        buf.as_mut_slice().copy_within(len..used, 0);
        self.used -= len;
        if self.used == 0 {
            self.buf = None;
        }
    }
}

struct State<F: DiskFile> {
    poisoned: Option<String>,
    segments: BTreeMap<u64, Segment<F>>,
    active: u64,
    write_pos: u64,
    spares: VecDeque<(u64, Rc<F>)>,
    /// Compacted segments (the lowest sequence numbers on disk, in order) to recycle.
    recyclable: VecDeque<(u64, Rc<F>)>,
    next_seq: u64,
    next_wsn: u64,
    /// Bytes of the records in `appends` (appended, not yet handed to a write).
    pending_bytes: u64,
    appends: VecDeque<Pending>,
    /// Their encoded records (`pending_bytes` of them).
    staging: Staging<F::Buf>,
    last_ready: u64,
    durable_ready: u64,
    /// Entries up to here have their records on disk (may be evicted from the cache).
    located_upto: u64,
    /// Snapshot records appended / durable (counts), and where the last durable one is.
    snaps_appended: u64,
    snaps_durable: u64,
    snap_seq: Option<u64>,
    /// The whole recovered log stays in the cache until the first append of entries:
    /// Raft's start reads all of it at once, synchronously (nothing could fetch).
    keep_recovered: bool,
    log: LogIndex,
    /// Entries appended since the last group was taken for a write: that write's window
    /// releases at least as many set-aside entries (see [`Wal::write_window`]).
    appended_since_write: usize,
    stats: WalStats,
}

struct Inner<D: Disk> {
    disk: D,
    opts: WalOptions,
    st: RefCell<State<D::File>>,
    flushing: Cell<bool>,
    /// A waiter has claimed the next flush and is yielding once before it starts (so
    /// that the runnable appenders join the group); other waiters just listen.
    flush_due: Cell<bool>,
    preparing: Cell<bool>,
    /// Held while renaming or removing segments, so that the segment files on disk stay
    /// contiguous at every crash point.
    dir_busy: Cell<bool>,
    dir_event: Event,
    flushed: Event,
    spare_event: Event,
    fetch_want: RefCell<Option<(u64, u64)>>,
    fetched: RefCell<VecDeque<Entry>>,
}

/// The WAL of one Raft group. A cheap handle: clones share the same log (one executor).
pub struct Wal<D: Disk = DmaDisk> {
    inner: Rc<Inner<D>>,
}

impl<D: Disk> Clone for Wal<D> {
    fn clone(&self) -> Self {
        Wal {
            inner: self.inner.clone(),
        }
    }
}

/// Cached entries a compaction set aside that one write window releases at least
/// (~10-20 µs of work; see [`Wal::write_window`]).
const REAP_SLICE: usize = 4096;

/// A group-commit write at least this big gets a write window ([`Wal::write_window`])
/// for the next staging buffer; smaller ones only when compacted entries wait to be
/// released. Below it, making and touching the buffer inline costs less than the
/// window's no-op request (~1 µs).
const WINDOW_MIN_BYTES: u64 = 64 * 1024;

/// Bytes of a group-commit write of `data_len` bytes of records: up to the next block
/// boundary, one block more if the Pad record's header would not fit before it.
fn padded_len(data_len: u64) -> u64 {
    if data_len == 0 {
        return 0;
    }
    let total = align_up(data_len);
    if total - data_len < REC_HEADER_LEN as u64 {
        total + BLOCK_BYTES
    } else {
        total
    }
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

impl Wal<DmaDisk> {
    /// Opens (or creates) the WAL in `dir` on a real disk. Must run on a glommio executor.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal<DmaDisk>, Recovered), WalError> {
        let disk = DmaDisk::open(dir.as_ref(), opts.sync_mode)
            .await
            .map_err(|e| WalError::io("open dir", dir.as_ref().display().to_string(), 0, e))?;
        Wal::open_on(disk, opts).await
    }
}

async fn prepare_segment<D: Disk>(
    disk: &D,
    seq: u64,
    opts: &WalOptions,
) -> Result<D::File, WalError> {
    let name = segment_name(seq);
    let path = disk.describe(&name);
    let f = disk
        .create(&name)
        .await
        .map_err(|e| WalError::io("create", path.clone(), 0, e))?;
    let header = encode_segment_header(seq, opts.segment_bytes);
    const CHUNK: u64 = 1 << 20;
    let first = match opts.prepare {
        Prepare::Fallocate => {
            f.allocate(opts.segment_bytes)
                .await
                .map_err(|e| WalError::io("fallocate", path.clone(), 0, e))?;
            BLOCK_BYTES
        }
        Prepare::ZeroFill => CHUNK.min(opts.segment_bytes),
    };
    let mut off = 0;
    let mut end = first;
    while off < end {
        let mut buf = f.alloc_buf((end - off) as usize);
        let b = buf.as_mut_slice();
        b.fill(0);
        if off == 0 {
            b[..SEG_HEADER_LEN].copy_from_slice(&header);
        }
        f.write_at(buf, off)
            .await
            .map_err(|e| WalError::io("write", path.clone(), off, e))?;
        // Sync each chunk: on a device with a volatile write cache, every fdatasync of
        // the WAL flushes the whole cache, so 64 MiB of zeros left there would be paid
        // for by the next group commit.
        f.sync()
            .await
            .map_err(|e| WalError::io("fdatasync", path.clone(), off, e))?;
        off = end;
        if opts.prepare == Prepare::ZeroFill {
            end = (end + CHUNK).min(opts.segment_bytes);
        }
    }
    f.sync()
        .await
        .map_err(|e| WalError::io("fdatasync", path.clone(), 0, e))?;
    disk.sync_dir()
        .await
        .map_err(|e| WalError::io("fsync dir", disk.describe(""), 0, e))?;
    Ok(f)
}

impl<D: Disk> Wal<D> {
    /// Opens the WAL on `disk`: recovers what is there (see the module docs) or starts
    /// an empty log.
    pub async fn open_on(disk: D, opts: WalOptions) -> Result<(Wal<D>, Recovered), WalError> {
        assert!(
            opts.segment_bytes.is_multiple_of(BLOCK_BYTES) && opts.segment_bytes >= 4 * BLOCK_BYTES,
            "segment_bytes {} must be a multiple of {BLOCK_BYTES}, at least 4 blocks",
            opts.segment_bytes
        );
        assert!(opts.group_commit_bytes_max >= BLOCK_BYTES);
        let rec = recover::recover(&disk).await?;
        let mut segments = BTreeMap::new();
        let mut spares = VecDeque::new();
        let mut recovered = Recovered::default();
        let (log, active, write_pos, next_seq, next_wsn, last_ready, snap_seq);
        match rec {
            Some(r) => {
                for name in &r.remove {
                    disk.remove(name)
                        .await
                        .map_err(|e| WalError::io("remove", disk.describe(name), 0, e))?;
                }
                if !r.remove.is_empty() {
                    disk.sync_dir()
                        .await
                        .map_err(|e| WalError::io("fsync dir", disk.describe(""), 0, e))?;
                }
                if let Some((seq, off, block)) = &r.close_write {
                    let f = &r.segments.last().expect("close_write without segment").file;
                    assert_eq!(r.segments.last().unwrap().seq, *seq);
                    let path = disk.describe(&segment_name(*seq));
                    let mut buf = f.alloc_buf(block.len());
                    buf.as_mut_slice().copy_from_slice(block);
                    f.write_at(buf, *off)
                        .await
                        .map_err(|e| WalError::io("write", path.clone(), *off, e))?;
                    f.sync()
                        .await
                        .map_err(|e| WalError::io("fdatasync", path, *off, e))?;
                }
                for s in &r.spares {
                    spares.push_back((s.seq, s.file.clone()));
                }
                let mut seg_list = r.segments;
                let mut pos = r.write_pos;
                if seg_list.is_empty() {
                    // Nothing was ever written: use a spare or make a segment.
                    let (seq, file) = match spares.pop_front() {
                        Some(s) => s,
                        None => (
                            r.next_seq,
                            Rc::new(prepare_segment(&disk, r.next_seq, &opts).await?),
                        ),
                    };
                    seg_list.push(recover::SegInfo {
                        seq,
                        file,
                        max_index: 0,
                    });
                    pos = SEG_FIRST_RECORD;
                }
                active = seg_list.last().unwrap().seq;
                next_seq = r.next_seq.max(active + 1);
                for s in seg_list {
                    segments.insert(
                        s.seq,
                        Segment {
                            file: s.file,
                            max_index: s.max_index,
                        },
                    );
                }
                write_pos = pos;
                next_wsn = r.next_wsn;
                last_ready = r.last_ready;
                snap_seq = r.snap_seq;
                recovered = Recovered {
                    hard_state: r.log.hard_state,
                    snapshot: r.log.snapshot.clone(),
                    entries: r.log.cached_entries(),
                    last_ready: r.last_ready,
                    torn_tail: r.torn_tail,
                };
                log = r.log;
            }
            None => {
                let f = prepare_segment(&disk, 0, &opts).await?;
                segments.insert(
                    0,
                    Segment {
                        file: Rc::new(f),
                        max_index: 0,
                    },
                );
                log = LogIndex::new();
                active = 0;
                write_pos = SEG_FIRST_RECORD;
                next_seq = 1;
                next_wsn = 1;
                last_ready = 0;
                snap_seq = None;
            }
        }
        let located_upto = log.last_index();
        let st = State {
            poisoned: None,
            segments,
            active,
            write_pos,
            spares,
            recyclable: VecDeque::new(),
            next_seq,
            next_wsn,
            pending_bytes: 0,
            appends: VecDeque::new(),
            staging: Staging::new(),
            appended_since_write: 0,
            last_ready,
            durable_ready: last_ready,
            located_upto,
            snaps_appended: 0,
            snaps_durable: 0,
            snap_seq,
            keep_recovered: true,
            log,
            stats: WalStats::default(),
        };
        let wal = Wal {
            inner: Rc::new(Inner {
                disk,
                opts,
                st: RefCell::new(st),
                flushing: Cell::new(false),
                flush_due: Cell::new(false),
                preparing: Cell::new(false),
                dir_busy: Cell::new(false),
                dir_event: Event::default(),
                flushed: Event::default(),
                spare_event: Event::default(),
                fetch_want: RefCell::new(None),
                fetched: RefCell::new(VecDeque::new()),
            }),
        };
        Ok((wal, recovered))
    }

    fn check_poisoned(st: &State<D::File>) -> Result<(), WalError> {
        match &st.poisoned {
            Some(m) => Err(WalError::Poisoned(m.clone())),
            None => Ok(()),
        }
    }

    /// Buffers the persistent part of Ready number `ready`: the new hard state (if it
    /// changed) and new entries (if any; a first index <= the last index truncates the
    /// conflicting suffix). Returns at once; durability comes with a flush.
    ///
    /// Ready numbers must not decrease. Entries must be contiguous, must not leave a
    /// gap, and must not replace committed or compacted entries (Raft guarantees all
    /// three; a violation is a bug in the caller and panics).
    pub fn append(
        &self,
        ready: u64,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), WalError> {
        let inner = &*self.inner;
        let mut st = inner.st.borrow_mut();
        let st = &mut *st;
        Self::check_poisoned(st)?;
        assert!(
            ready >= st.last_ready,
            "wal: ready number {ready} after {}",
            st.last_ready
        );
        let max = inner.opts.segment_bytes - SEG_FIRST_RECORD - 2 * BLOCK_BYTES;
        let bytes = append_record_len(entries) as u64;
        if bytes > max {
            return Err(WalError::TooLarge { bytes, max });
        }
        if let Err(m) = st.log.check_append(entries) {
            panic!("wal: append of Ready {ready} breaks the log: {m}");
        }
        st.last_ready = ready;
        st.stats.appends += 1;
        if hard_state.is_none() && entries.is_empty() {
            st.appends.push_back(Pending {
                ready,
                len: 0,
                kind: PendingKind::Empty,
            });
            return Ok(());
        }
        // Encoded once, into the staging buffer; the cache shares the entries' data.
        let file = &st.segments[&st.active].file;
        let staged = st.staging.push(bytes as usize, |n| file.alloc_buf(n));
        encode_append_into(staged, ready, hard_state.as_ref(), entries);
        if let Some(hs) = hard_state {
            st.log.hard_state = hs;
        }
        let rec_id = st.log.append(entries, None);
        st.appended_since_write += entries.len();
        if let Some(e0) = entries.first() {
            st.keep_recovered = false;
            st.located_upto = st.located_upto.min(e0.index - 1);
            let mut fetched = inner.fetched.borrow_mut();
            if fetched.back().is_some_and(|e| e.index >= e0.index) {
                fetched.clear();
            }
        }
        let last_index = entries.last().map_or(0, |e| e.index);
        st.pending_bytes += bytes;
        st.appends.push_back(Pending {
            ready,
            len: bytes as u32,
            kind: PendingKind::Append { rec_id, last_index },
        });
        debug_assert_eq!(st.pending_bytes, st.staging.used as u64);
        Ok(())
    }

    /// Bytes the log's segment files occupy on disk (live and spare segments).
    pub fn size_bytes(&self) -> u64 {
        let st = self.inner.st.borrow();
        (st.segments.len() + st.spares.len()) as u64 * self.inner.opts.segment_bytes
    }

    /// Highest Ready number whose appends are all durable.
    pub fn durable_ready(&self) -> u64 {
        self.inner.st.borrow().durable_ready
    }

    /// Highest Ready number appended.
    pub fn last_ready(&self) -> u64 {
        self.inner.st.borrow().last_ready
    }

    /// Bytes appended and not yet handed to a write.
    pub fn pending_bytes(&self) -> u64 {
        self.inner.st.borrow().pending_bytes
    }

    pub fn stats(&self) -> WalStats {
        self.inner.st.borrow().stats.clone()
    }

    /// Waits until every append with a Ready number <= `ready` is durable. The first
    /// waiter that finds no write in flight performs the next group commit itself, so
    /// no separate flusher task is needed (one may still call [`Wal::flush`]).
    pub async fn wait_durable(&self, ready: u64) -> Result<(), WalError> {
        loop {
            {
                let st = self.inner.st.borrow();
                Self::check_poisoned(&st)?;
                if st.durable_ready >= ready {
                    return Ok(());
                }
                assert!(
                    ready <= st.last_ready,
                    "wal: waiting for Ready {ready}, never appended (last {})",
                    st.last_ready
                );
            }
            let inner = &*self.inner;
            if inner.flushing.get() || inner.flush_due.get() {
                inner.flushed.listen().await;
            } else {
                // Claim the next flush, and let the other runnable tasks append first,
                // so that they join this group instead of waiting for the next one.
                // They see the claim and only listen (one poll each, not two).
                let claim = FlushClaim::new(inner);
                YieldOnce(false).await;
                claim.release();
                if !inner.flushing.get() && inner.st.borrow().durable_ready < ready {
                    self.flush_once().await?;
                } else if !inner.flushing.get() {
                    // Another task made our Ready durable meanwhile: the waiters that
                    // saw our claim must look again.
                    inner.flushed.notify();
                }
            }
        }
    }

    /// Makes everything appended so far durable (one or more group commits) and
    /// returns the durable Ready number.
    pub async fn flush(&self) -> Result<u64, WalError> {
        let target = self.inner.st.borrow().last_ready;
        loop {
            {
                let st = self.inner.st.borrow();
                Self::check_poisoned(&st)?;
                if st.appends.is_empty() && !self.inner.flushing.get() {
                    return Ok(st.durable_ready);
                }
            }
            if self.inner.flushing.get() {
                self.inner.flushed.listen().await;
            } else {
                self.flush_once().await?;
                if self.inner.st.borrow().durable_ready >= target
                    && self.inner.st.borrow().appends.is_empty()
                {
                    return Ok(self.durable_ready());
                }
            }
        }
    }

    fn poison(&self, e: &WalError) {
        let mut st = self.inner.st.borrow_mut();
        if st.poisoned.is_none() {
            st.poisoned = Some(e.to_string());
        }
    }

    /// One group commit: everything pending (up to `group_commit_bytes_max`) as one
    /// write and one fdatasync. Precondition: no flush in flight.
    async fn flush_once(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        assert!(!inner.flushing.get(), "wal: two flushes at once");
        inner.flushing.set(true);
        let r = self.flush_inner().await;
        inner.flushing.set(false);
        if let Err(e) = &r {
            self.poison(e);
        }
        inner.flushed.notify();
        r
    }

    async fn flush_inner(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        // 1. Take a group: the first `n` pending appends (whole ones, at most
        //    group_commit_bytes_max, at least one). They stay at the front of `appends`
        //    until published: appends and snapshots only ever push at the back.
        let (n, data_len, total) = {
            let st = inner.st.borrow();
            if st.appends.is_empty() {
                return Ok(());
            }
            let mut n = 0;
            let mut end = 0;
            for a in &st.appends {
                if n > 0 && end + a.len() > inner.opts.group_commit_bytes_max {
                    break;
                }
                end += a.len();
                n += 1;
            }
            (n, end as usize, padded_len(end))
        };
        let mut loc = None;
        if total > 0 {
            // 2. Room in the active segment, else switch to a prepared spare.
            let fits = {
                let st = inner.st.borrow();
                st.write_pos + total <= inner.opts.segment_bytes
            };
            if !fits {
                self.switch_segment().await?;
            }
            // 3. One aligned buffer: the records sealed with wsn + crc (in the staging
            //    buffer itself when the group is all of it, else copied into a new
            //    one and sealed in the same pass), then a Pad.
            let (file, pos, seq, buf, reap) = {
                let mut st = inner.st.borrow_mut();
                let st = &mut *st;
                let seg = &st.segments[&st.active];
                let (file, pos, wsn, seq) =
                    (seg.file.clone(), st.write_pos, st.next_wsn, st.active);
                assert!(pos % BLOCK_BYTES == 0 && pos + total <= inner.opts.segment_bytes);
                let records = st.appends.iter().take(n).filter(|a| a.len > 0);
                let mut s = 0;
                let mut buf = match st.staging.take_whole(data_len, total as usize) {
                    Some(mut buf) => {
                        let b = buf.as_mut_slice();
                        for a in records {
                            let e = s + a.len as usize;
                            seal_record(&mut b[s..e], wsn);
                            debug_assert!(check_record(&b[s..]).is_some());
                            s = e;
                        }
                        buf.trim_to(total as usize);
                        buf
                    }
                    None => {
                        let mut buf = file.alloc_buf(total as usize);
                        let (b, staged) = (buf.as_mut_slice(), st.staging.bytes());
                        for a in records {
                            let e = s + a.len as usize;
                            copy_sealed(&mut b[s..e], &staged[s..e], wsn);
                            debug_assert!(check_record(&b[s..]).is_some());
                            s = e;
                        }
                        st.staging.consume(data_len);
                        buf
                    }
                };
                assert_eq!(s, data_len);
                let b = buf.as_mut_slice();
                b[data_len..].fill(0);
                write_pad(&mut b[data_len..], wsn);
                st.pending_bytes -= data_len as u64;
                let reap = REAP_SLICE.max(std::mem::take(&mut st.appended_since_write));
                (file, pos, seq, buf, reap)
            };
            // 4. One write, one fdatasync.
            let path = || inner.disk.describe(&segment_name(seq));
            let t0 = std::time::Instant::now();
            let window = total >= WINDOW_MIN_BYTES || inner.st.borrow().log.retired_len() > 0;
            let write = file.write_at(buf, pos);
            let written = if window {
                let window = async {
                    inner.disk.submitted().await;
                    self.write_window(reap);
                };
                futures_lite::future::zip(write, window).await.0
            } else {
                write.await
            };
            written.map_err(|e| WalError::io("write", path(), pos, e))?;
            file.sync()
                .await
                .map_err(|e| WalError::io("fdatasync", path(), pos, e))?;
            loc = Some((seq, pos));
            inner.st.borrow_mut().stats.io_ns += t0.elapsed().as_nanos() as u64;
        }
        // 5. Publish.
        let mut st = inner.st.borrow_mut();
        let st = &mut *st;
        if let Some((_, pos)) = loc {
            st.write_pos = pos + total;
            let half = inner.opts.segment_bytes / 2;
            if pos < half && st.write_pos >= half {
                inner.spare_event.notify();
            }
            st.next_wsn += 1;
            st.stats.flushes += 1;
            st.stats.bytes_written += total;
            st.stats.pad_bytes += total - data_len as u64;
        }
        let mut hint = 0;
        let mut last = 0;
        let mut offset = loc.map_or(0, |(_, pos)| pos);
        for a in st.appends.drain(..n) {
            last = a.ready;
            let Some((seq, _)) = loc else {
                continue;
            };
            let len = a.len();
            offset += len;
            match a.kind {
                PendingKind::Append { rec_id, last_index } => {
                    let at = DiskLoc {
                        seq,
                        offset: offset - len,
                        len: len as u32,
                    };
                    hint = st.log.locate(hint, rec_id, at);
                    if last_index > 0 {
                        st.located_upto = last_index;
                        let seg = st.segments.get_mut(&seq).expect("active segment");
                        seg.max_index = seg.max_index.max(last_index);
                    }
                }
                PendingKind::Snapshot => {
                    st.snaps_durable += 1;
                    st.snap_seq = Some(seq);
                }
                PendingKind::Empty => {}
            }
        }
        // Ready `last` is durable unless an append of it is still pending. A pending
        // Snapshot record does not count: it borrows the number of the last Ready
        // appended before it (numbers never decrease) but is no part of that Ready,
        // and counting it made the Ready wait for one more flush whenever a
        // compaction came while its group was in flight (wal-bench: a second
        // write+flush, +0.3-0.5 ms, for the append during which each compaction began).
        let next_ready = st
            .appends
            .iter()
            .find(|a| !matches!(a.kind, PendingKind::Snapshot))
            .map(|a| a.ready);
        let durable = match next_ready {
            Some(r) if r == last => last.saturating_sub(1),
            _ => last,
        };
        st.durable_ready = st.durable_ready.max(durable);
        let located = st.located_upto;
        if !st.keep_recovered {
            st.log.evict(inner.opts.cache_bytes_max, located);
        }
        Ok(())
    }

    /// Work for the time a group-commit write is in flight (the CPU is otherwise idle
    /// then; this runs once the write is submitted, see [`Disk::submitted`]): the next
    /// staging buffer is made and touched, and cached entries that compactions set
    /// aside are released, `reap` of them: at least [`REAP_SLICE`] and at least as
    /// many as were appended since the last write (so releasing keeps up with
    /// compacting, and no backlog of appends makes one window release a mountain). Done
    /// inline instead, the touch of a 290 KB buffer adds ~3-5 µs to every batch-1024
    /// write, and the release of a compaction's 80,000 entries ran back to back
    /// before the next write was even submitted (glommio submits only when no task is
    /// runnable).
    fn write_window(&self, reap: usize) {
        let mut st = self.inner.st.borrow_mut();
        let st = &mut *st;
        if st.staging.hint as u64 >= WINDOW_MIN_BYTES {
            let file = &st.segments[&st.active].file;
            st.staging.prepare(|n| file.alloc_buf(n));
        }
        st.log.reap(reap);
    }

    async fn switch_segment(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        loop {
            let spare = inner.st.borrow_mut().spares.pop_front();
            if let Some((seq, file)) = spare {
                let mut st = inner.st.borrow_mut();
                assert!(seq > st.active);
                st.segments.insert(seq, Segment { file, max_index: 0 });
                st.active = seq;
                st.write_pos = SEG_FIRST_RECORD;
                st.stats.segments_switched += 1;
                drop(st);
                inner.spare_event.notify();
                return Ok(());
            }
            if inner.preparing.get() {
                inner.spare_event.listen().await;
            } else {
                inner.st.borrow_mut().stats.inline_prepares += 1;
                self.prepare_spare().await?;
            }
        }
    }

    /// Prepares one spare segment if none is ready (or waits for one being prepared).
    /// Call it from a background task; a flush that finds no spare calls it inline.
    pub async fn prepare_spare(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        loop {
            {
                let st = inner.st.borrow();
                Self::check_poisoned(&st)?;
                if !st.spares.is_empty() {
                    return Ok(());
                }
            }
            if !inner.preparing.get() {
                break;
            }
            inner.spare_event.listen().await;
        }
        inner.preparing.set(true);
        let (seq, old) = {
            let mut st = inner.st.borrow_mut();
            st.next_seq += 1;
            (st.next_seq - 1, st.recyclable.pop_front())
        };
        let r = match old {
            Some((old_seq, file)) => self.recycle_segment(old_seq, file, seq).await,
            None => prepare_segment(&inner.disk, seq, &inner.opts)
                .await
                .map(Rc::new),
        };
        inner.preparing.set(false);
        let r = match r {
            Ok(f) => {
                let mut st = inner.st.borrow_mut();
                st.spares.push_back((seq, f));
                st.stats.segments_prepared += 1;
                Ok(())
            }
            Err(e) => {
                // A half-made segment would break the contiguity of sequence numbers.
                self.poison(&e);
                Err(e)
            }
        };
        inner.spare_event.notify();
        r
    }

    /// Background upkeep for the shard's low-priority task queue: keeps one spare
    /// segment ready. A compacted segment is recycled as soon as there is one; a new
    /// segment is zero-filled only once the active one is half full (giving compaction a
    /// chance to free one first). Returns only when the log is poisoned.
    pub async fn run_background(&self) -> WalError {
        loop {
            let need = {
                let st = self.inner.st.borrow();
                if let Some(m) = &st.poisoned {
                    return WalError::Poisoned(m.clone());
                }
                st.spares.is_empty()
                    && (!st.recyclable.is_empty()
                        || st.write_pos >= self.inner.opts.segment_bytes / 2)
            };
            let listen = self.inner.spare_event.listen();
            if need {
                if let Err(e) = self.prepare_spare().await {
                    return e;
                }
                continue;
            }
            // A spare taken, a segment compacted, or the active one half full.
            listen.await;
        }
    }

    /// Records a snapshot and compacts the log: entries up to `meta.index` are dropped
    /// (all entries, if the log does not hold `meta.index` with `meta.term`, as when a
    /// snapshot from the leader is installed). Appends a Snapshot record, waits until it
    /// is durable, then removes the segments wholly below it.
    pub async fn compact(&self, meta: SnapshotMeta) -> Result<(), WalError> {
        let inner = &*self.inner;
        let my_snap = {
            let mut st = inner.st.borrow_mut();
            Self::check_poisoned(&st)?;
            let hs = st.log.hard_state;
            st.log
                .apply_snapshot(hs, &meta)
                .map_err(WalError::Invalid)?;
            if st.log.last_index() == meta.index {
                st.located_upto = st.located_upto.max(meta.index);
            }
            let mut rec = Vec::new();
            encode_snapshot(&mut rec, &hs, &meta);
            let ready = st.last_ready;
            st.pending_bytes += rec.len() as u64;
            let file = st.segments[&st.active].file.clone();
            st.staging
                .push(rec.len(), |n| file.alloc_buf(n))
                .copy_from_slice(&rec);
            st.appends.push_back(Pending {
                ready,
                len: rec.len() as u32,
                kind: PendingKind::Snapshot,
            });
            st.snaps_appended += 1;
            inner.fetched.borrow_mut().clear();
            st.snaps_appended
        };
        loop {
            {
                let st = inner.st.borrow();
                Self::check_poisoned(&st)?;
                if st.snaps_durable >= my_snap {
                    break;
                }
            }
            if inner.flushing.get() {
                inner.flushed.listen().await;
            } else {
                self.flush_once().await?;
            }
        }
        // The cached entries the compaction set aside are released by the next writes,
        // a slice per write while it is in flight (`write_window`), not here: glommio
        // runs a task queue until no task is runnable, so slices released here between
        // yields ran back to back, and a write queued meanwhile waited for the last.
        self.remove_compacted().await
    }

    async fn lock_dir(&self) {
        while self.inner.dir_busy.get() {
            self.inner.dir_event.listen().await;
        }
        self.inner.dir_busy.set(true);
    }

    fn unlock_dir(&self) {
        self.inner.dir_busy.set(false);
        self.inner.dir_event.notify();
    }

    /// Turns compacted segment `old` (the lowest on disk) into spare `seq` (above all).
    /// Crash argument: the rename first (made durable), so the front of the log stays
    /// contiguous; until the new header is durable the file is a trailing segment whose
    /// header names another sequence number and which holds only records of older
    /// writes (lower wsn), which recovery removes as an incomplete spare. Stale records
    /// left in a recycled segment never match the wsn a replay expects.
    async fn recycle_segment(
        &self,
        old: u64,
        file: Rc<D::File>,
        seq: u64,
    ) -> Result<Rc<D::File>, WalError> {
        let inner = &*self.inner;
        let (from, to) = (segment_name(old), segment_name(seq));
        let path = inner.disk.describe(&to);
        self.lock_dir().await;
        let r = async {
            inner
                .disk
                .rename(&from, &to)
                .await
                .map_err(|e| WalError::io("rename", inner.disk.describe(&from), 0, e))?;
            inner
                .disk
                .sync_dir()
                .await
                .map_err(|e| WalError::io("fsync dir", inner.disk.describe(""), 0, e))
        }
        .await;
        self.unlock_dir();
        r?;
        let mut buf = file.alloc_buf(BLOCK_BYTES as usize);
        let b = buf.as_mut_slice();
        b.fill(0);
        b[..SEG_HEADER_LEN].copy_from_slice(&encode_segment_header(seq, inner.opts.segment_bytes));
        file.write_at(buf, 0)
            .await
            .map_err(|e| WalError::io("write", path.clone(), 0, e))?;
        file.sync()
            .await
            .map_err(|e| WalError::io("fdatasync", path, 0, e))?;
        inner.st.borrow_mut().stats.segments_recycled += 1;
        Ok(file)
    }

    async fn remove_compacted(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        loop {
            let victim = {
                let st = inner.st.borrow();
                let snap_seq = st.snap_seq.expect("snapshot record durable");
                let snap_index = st.log.snapshot.index;
                st.segments
                    .iter()
                    .next()
                    .filter(|(&seq, s)| {
                        seq < snap_seq && seq != st.active && s.max_index <= snap_index
                    })
                    .map(|(&seq, _)| seq)
            };
            let Some(seq) = victim else {
                return Ok(());
            };
            // Keep it for recycling; past the limit remove the lowest kept one, so the
            // segments on disk stay contiguous.
            let remove = {
                let mut st = inner.st.borrow_mut();
                let seg = st.segments.remove(&seq).expect("victim");
                st.recyclable.push_back((seq, seg.file));
                if st.recyclable.len() > inner.opts.recycle_segments {
                    st.recyclable.pop_front().map(|(s, _)| s)
                } else {
                    None
                }
            };
            let Some(seq) = remove else {
                inner.spare_event.notify();
                continue;
            };
            let name = segment_name(seq);
            self.lock_dir().await;
            let r = async {
                inner
                    .disk
                    .remove(&name)
                    .await
                    .map_err(|e| WalError::io("remove", inner.disk.describe(&name), 0, e))?;
                inner
                    .disk
                    .sync_dir()
                    .await
                    .map_err(|e| WalError::io("fsync dir", inner.disk.describe(""), 0, e))
            }
            .await;
            self.unlock_dir();
            if let Err(e) = r {
                self.poison(&e);
                return Err(e);
            }
            inner.st.borrow_mut().stats.segments_removed += 1;
        }
    }

    /// Loads the entries a `Storage::entries` call found missing from the cache (the
    /// range it recorded), so that the call succeeds when repeated. No-op if none.
    pub async fn fetch_pending(&self) -> Result<(), WalError> {
        let inner = &*self.inner;
        let Some((lo, hi)) = inner.fetch_want.borrow_mut().take() else {
            return Ok(());
        };
        let mut out: VecDeque<Entry> = VecDeque::new();
        let mut bytes = 0;
        let mut idx = lo;
        loop {
            let (loc, file, first, count, stop) = {
                let st = inner.st.borrow();
                let stop = st.log.cache_first().min(hi);
                if idx >= stop || idx < st.log.first_index() || bytes >= inner.opts.fetch_bytes_max
                {
                    break;
                }
                let r = st
                    .log
                    .rec_for(idx)
                    .expect("retained entry without a record");
                let at = r.at.expect("entry below the cache is not on disk");
                let file = st.segments[&at.seq].file.clone();
                (at, file, r.first, r.count, stop)
            };
            let path = inner.disk.describe(&segment_name(loc.seq));
            let b = file
                .read_at(loc.offset, loc.len as usize)
                .await
                .map_err(|e| WalError::io("read", path.clone(), loc.offset, e))?;
            {
                // Compaction may have retired this segment (and a spare may have
                // recycled its file) while the read was in flight: the entries are then
                // gone from the log, and what was read is not evidence of corruption.
                // Raft, asking again, gets `Compacted` (a snapshot for that follower).
                let st = inner.st.borrow();
                if idx < st.log.first_index() || !st.segments.contains_key(&loc.seq) {
                    break;
                }
            }
            let n = b.len();
            let rec = match check_record(&b) {
                Some(h) if h.kind == KIND_APPEND => {
                    // The entries share the buffer read (no second copy).
                    decode_append(&Payload::from(b).slice(REC_HEADER_LEN..n)).map_err(|m| {
                        WalError::Corrupt {
                            file: path.clone(),
                            offset: loc.offset,
                            reason: m,
                        }
                    })?
                }
                _ => {
                    return Err(WalError::Corrupt {
                        file: path,
                        offset: loc.offset,
                        reason: "record changed on disk since it was written".into(),
                    })
                }
            };
            for e in rec.entries {
                if e.index >= idx && e.index < (first + count).min(stop) {
                    bytes += e.size_bytes();
                    out.push_back(e);
                    idx += 1;
                }
            }
            if idx < (first + count).min(stop) {
                return Err(WalError::Corrupt {
                    file: path,
                    offset: loc.offset,
                    reason: format!("record lacks entry {idx}"),
                });
            }
        }
        *inner.fetched.borrow_mut() = out;
        Ok(())
    }
}

impl<D: Disk> Storage for Wal<D> {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        let st = self.inner.st.borrow();
        Ok((st.log.hard_state, st.log.snapshot.conf_state.clone()))
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let st = self.inner.st.borrow();
        let log = &st.log;
        if lo < log.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > log.last_index() + 1 || lo > hi {
            return Err(StorageError::Unavailable);
        }
        let cache_first = log.cache_first();
        let fetched = self.inner.fetched.borrow();
        let mut out = Vec::new();
        let mut bytes = 0;
        for idx in lo..hi {
            let (size, e) = if idx >= cache_first {
                (log.cached_size(idx), Ok(()))
            } else {
                let f0 = fetched.front().map_or(u64::MAX, |e| e.index);
                match fetched.get(idx.wrapping_sub(f0) as usize) {
                    Some(e) if idx >= f0 && log.term(idx) == Some(e.term) => {
                        (e.size_bytes(), Err(e))
                    }
                    _ => {
                        // Start loading the rest; serve the prefix we have, if any.
                        *self.inner.fetch_want.borrow_mut() = Some((idx, hi));
                        if out.is_empty() {
                            return Err(StorageError::TemporarilyUnavailable);
                        }
                        return Ok(out);
                    }
                }
            };
            bytes += size;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(match e {
                Ok(()) => log.cached_entry(idx),
                Err(fetched) => fetched.clone(),
            });
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        let st = self.inner.st.borrow();
        if index < st.log.snapshot.index {
            return Err(StorageError::Compacted);
        }
        st.log.term(index).ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<u64, StorageError> {
        Ok(self.inner.st.borrow().log.first_index())
    }

    fn last_index(&self) -> Result<u64, StorageError> {
        Ok(self.inner.st.borrow().log.last_index())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.inner.st.borrow().log.snapshot.clone())
    }
}
