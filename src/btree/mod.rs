//! A copy-on-write B+tree in one file of fixed-size pages, with named trees, one writer
//! and many snapshot readers — corekv's state-machine store (as bbolt is etcd's).
//!
//! # Model
//!
//! * One writer ([`Db`]): `put`/`delete` go into an open in-memory write transaction
//!   (dirty pages; sync and cheap); reads through the `Db` see the latest written state;
//!   [`Db::commit`] makes everything so far durable as one atomic version. Callers batch
//!   many writes per commit. A put whose key is above every key of its tree (the
//!   revision tree's appends) goes straight into the tree's dirty rightmost leaf when
//!   the remembered right edge still leads there and the leaf has room, without
//!   searching the pages on the way down.
//! * Two-phase commit, so that the writer never waits for the disk:
//!   [`Db::begin_commit`] (sync, cheap) seals the open transaction as the next version
//!   and returns a [`CommitJob`] that owns the sealed pages and a handle to the disk;
//!   the `Db` at once takes writes again, in a new transaction on top of the sealed
//!   version. The job's future ([`CommitJob::run`]: page writes, fdatasync, meta page,
//!   fdatasync) borrows nothing from the `Db`, so it runs in another task while the
//!   writer goes on; [`Db::finish_commit`] then publishes the version (or poisons the
//!   `Db` if the job failed). At most one job is in flight. `Db::commit` is the three in
//!   a row.
//! * Readers ([`Snapshot`]): a view of one committed version that stays valid, and keeps
//!   its pages from reuse, for as long as it lives, across later writes and commits.
//! * Reads go through a [`PageStore`]: a `memmap2` map ([`MmapStore`]) or pread
//!   ([`PreadStore`]). Writes go through the page cache with glommio
//!   ([`GlommioDisk`]: fdatasync and meta writes over io_uring; a commit's page writes
//!   either as io_uring `BufferedFile` writes or, by default, as pwrites on glommio's
//!   blocking pool in one hand-off, since io_uring punts every buffered write to a
//!   worker; the executor never blocks either way). Never O_DIRECT, which does not
//!   mix with mmap. All `unsafe` is in `store.rs`, with its argument.
//! * Cancellation: a commit future or job dropped before its I/O completes poisons the
//!   writer.
//! * Keys are compared bytewise. Several named trees live in one file; a catalog tree
//!   maps each name to its root.
//!
//! # Limits (4 KiB pages)
//!
//! | limit | default | rule |
//! |---|---|---|
//! | page size | 4096 | power of two, 1 KiB ..= 32 KiB, fixed at creation |
//! | key (and tree name) | 1002 bytes | a cell may take at most 1/4 of a page: `(page - 24)/4 - 16` |
//! | value | 1 MiB | `Options::max_value_bytes` (< 2 GiB); values that do not fit inline go to overflow pages |
//! | file | 8 GiB | `Options::max_file_bytes`: beyond it, writes fail with `NoSpace` |
//! | depth | 32 levels | deeper is treated as a cycle: `Corrupt` |
//!
//! # File format (version 1, little-endian)
//!
//! The file is an array of pages; page `n` starts at byte `n * page_size`. Pages 0 and
//! 1 are the meta slots; tree, overflow and freelist pages start at 2. Every page starts
//! with the same 16-byte header:
//!
//! ```text
//!  0       4    5    6       8               16
//!  +-------+----+----+-------+----------------+
//!  | crc32 |type|rsvd| count |    page id     |   crc32 covers bytes [4, page_size)
//!  +-------+----+----+-------+----------------+   type: 1 meta 2 branch 3 leaf
//!                                                       4 overflow 5 freelist
//! meta (pages 0, 1):
//!  16        24     28        32    40         48              56             64           72
//!  | magic   | ver  | pagesize | txn | catalog  | freelist head | freelist len | page count |
//!  |CKVBTREE | u32  |   u32    | u64 | root u64 |     u64       |     u64      |    u64     |
//!
//! branch (count = number of keys; count + 1 children):
//!  16         24                 24+2*count
//!  | child0   | slot[0..count] u16 | cells: [klen u16][child u64][key] ...
//!  child i (i >= 1) is the child of cell i-1; child i holds keys in [key[i-1], key[i]).
//!
//! leaf:
//!  16                   16+2*count
//!  | slot[0..count] u16 | cells: [klen u16][vlen u32][key][value]
//!  vlen bit 31 set: the value (length vlen & 0x7fffffff) is in an overflow chain and the
//!  cell holds its first page number (u64) instead of the value.
//!
//! overflow:   16 [next page u64] 24 [len u32] 28 [data: len bytes]
//! freelist:   16 [next page u64] 24 [count * (freed_txn u64, page u64)]
//! ```
//!
//! Slots hold cell offsets in key order; keys within a page are strictly ascending.
//! Cells may lie anywhere between the slot array and the page end, in any physical
//! order, with holes (readers follow offsets only). A freshly built page packs its
//! cells against the page end, so its free space lies between the slots and the
//! cells; a leaf insert or replacement that fits that space (or the space after the
//! cells, on pages built by earlier versions, which packed cells right after the
//! slots) changes the page in place, and only one that does not fit rebuilds it.
//! The catalog is a tree like the others: key = tree name (UTF-8), value = root (u64).
//! A freelist entry `(t, p)` says page `p` was freed by transaction `t` (0: free now).
//! Offsets are chained constants in [`format`], with `const` assertions.
//!
//! # Commit and crash argument
//!
//! Commit of version `t` (previous committed version `t-1` is in slot `(t-1) % 2`):
//!
//! 1. catalog and freelist are rewritten copy-on-write like any tree;
//! 2. the file is grown if needed (fallocate), every dirty page is written (sealed with
//!    its checksum), then **fdatasync**;
//! 3. the meta page for `t` is written into slot `t % 2`, then **fdatasync**;
//! 4. only now is the commit acknowledged (`finish_commit`) and version `t` published
//!    to new snapshots.
//!
//! No page reachable from version `t-1` or `t-2` (the versions in the two slots before
//! the commit) is written by it: pages come from the end of the file or from pages
//! freed by a transaction `<= t-2` that no live snapshot can reach.
//!
//! With pipelining (steps 2-4 run in a [`CommitJob`] while transaction `t+1` takes
//! writes on top of the sealed version `t`), the rule for reusing a page is: a page
//! freed by transaction `f` is reachable from the versions before `f`; it may be
//! allocated only once `f <= c - 1` and `f <=` the oldest live snapshot, where `c` is
//! the last *finished* (durable) version. The versions a crash can leave are `c`, `c-1`
//! (the other slot, until the in-flight meta lands there) and the in-flight `c+1`; all
//! of them are `>= c-1 >= f`, so none reaches the page. Pages of the in-flight version
//! are committed pages to transaction `t+1`: modifying one copies it, freeing one
//! records it as freed by `t+1` (reusable only once `t+1 <= c-1`), never as free now.
//! Since transaction `t+1`'s pages were allocated while `c` was `t-1` or `t`, commit
//! `t+1` writes only pages freed by a transaction `<= t-1`, so the claim above (no page
//! of the two versions in the slots is written) holds for every commit, pipelined or
//! not. The job writes only its own sealed pages; the `Db` reads those from memory
//! until `finish_commit`, never from the file, so no live slice of the map sees them
//! change (`store.rs`).
//!
//! * Crash during or after step 2 but before the meta write reaches the disk: both
//!   slots still hold `t-1` and `t-2`, whose pages were not touched; reopen gives `t-1`,
//!   the last acknowledged version. Pages written past the old page count are ignored
//!   (the old meta's page count ends before them) and get reused.
//! * Crash while the meta write of step 3 is in flight: if it is torn, its checksum
//!   fails and reopen falls back to slot `(t-1) % 2`, version `t-1`; if it landed whole,
//!   reopen gives `t` (all its pages were made durable in step 2 first).
//! * A meta that later rots (bad checksum) falls back to the other slot, whose version
//!   is intact because its pages are never reused while it sits in a slot.
//!
//! Assumptions about the media: fdatasync returns only after the written data (and the
//! size change) is durable; a torn write of a page leaves any mix of old and new
//! sectors, which the page checksum detects; writing one page never damages another.
//! After a failed write or fdatasync the `Db` refuses further writes (`Poisoned`): the
//! state of the page cache is unknown (fsyncgate), so the caller reopens.
//!
//! # Reads and corruption
//!
//! Each page is verified on its first read from the file (checksum, its own page id,
//! type, slot and cell bounds, key order); committed pages are immutable while
//! reachable, so the verdict is cached per page id (a bitset) for the life of the `Db`.
//! Pages this process writes are sealed from the very buffer it writes and enter the
//! cache as verified (a flip that happens on the media later is caught after a
//! reopen, not while the same process keeps the page cached). A bad page is an error
//! (`Corrupt`, naming file and page) on the read that touches it, never a wrong
//! answer or a panic. Traversals check page types and are depth-bounded, so a pointer
//! cycle is an error. Leaf splits store the shortest separating prefix in the parent
//! (suffix truncation), which raises branch fan-out.

mod db;
pub mod disk;
pub mod format;
mod node;
pub mod read;
pub mod store;
mod write;

#[cfg(test)]
mod tests;

pub use db::{CommitDone, CommitJob, Db, PageStats, Snapshot};
pub use disk::{Disk, GlommioDisk, SimDisk};
pub use read::Cursor;
pub use store::{MmapStore, PageStore, PreadStore};

use format::{max_key_len, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, PAGE_SIZE_MIN};

/// Configuration of a [`Db`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Page size in bytes, fixed when the file is created.
    pub page_size: usize,
    /// Largest value accepted by `put`.
    pub max_value_bytes: usize,
    /// File size quota: allocations beyond it fail with `NoSpace`.
    pub max_file_bytes: u64,
    /// Read through a memory map (true) or pread (false).
    pub use_mmap: bool,
    /// Write a commit's pages with pwrite on glommio's blocking thread pool (true), or
    /// with one io_uring write per contiguous run (false). See `disk.rs`.
    pub write_pool: bool,
    /// Minimum growth of the file when it must grow.
    pub grow_step_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            page_size: PAGE_SIZE_DEFAULT,
            max_value_bytes: 1 << 20,
            max_file_bytes: 8 << 30,
            use_mmap: true,
            write_pool: true,
            grow_step_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// Longest key (and tree name) `put` accepts.
    pub fn max_key_bytes(&self) -> usize {
        max_key_len(self.page_size)
    }

    fn validate(&self) -> Result<(), BtreeError> {
        let ps = self.page_size;
        if !ps.is_power_of_two() || !(PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&ps) {
            return Err(BtreeError::InvalidOptions(format!(
                "page size {ps} must be a power of two in {PAGE_SIZE_MIN}..={PAGE_SIZE_MAX}"
            )));
        }
        if self.max_value_bytes >= (1 << 31) {
            return Err(BtreeError::InvalidOptions(
                "max value size must be below 2 GiB".into(),
            ));
        }
        if self.max_file_bytes < 4 * ps as u64 {
            return Err(BtreeError::InvalidOptions(
                "file quota below four pages".into(),
            ));
        }
        Ok(())
    }
}

/// Why a B+tree operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BtreeError {
    /// An I/O call failed: operation, file, byte offset, cause.
    Io {
        op: &'static str,
        file: String,
        offset: u64,
        msg: String,
    },
    /// A page failed its checksum or a structural check.
    Corrupt {
        file: String,
        page: u64,
        msg: String,
    },
    /// The file would grow beyond its quota.
    NoSpace {
        file: String,
        need_bytes: u64,
        quota_bytes: u64,
    },
    /// A key, tree name or value beyond its limit.
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// An earlier write or commit failed; writes are refused until reopen.
    Poisoned {
        file: String,
        cause: String,
    },
    InvalidOptions(String),
}

impl BtreeError {
    pub(crate) fn io(op: &'static str, file: &str, offset: u64, e: std::io::Error) -> BtreeError {
        BtreeError::Io {
            op,
            file: file.to_string(),
            offset,
            msg: e.to_string(),
        }
    }
}

impl std::fmt::Display for BtreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BtreeError::Io {
                op,
                file,
                offset,
                msg,
            } => write!(f, "{op} {file} at offset {offset}: {msg}"),
            BtreeError::Corrupt { file, page, msg } => {
                write!(f, "corrupt {file}, page {page}: {msg}")
            }
            BtreeError::NoSpace {
                file,
                need_bytes,
                quota_bytes,
            } => write!(
                f,
                "{file}: no space: {need_bytes} bytes needed, quota {quota_bytes}"
            ),
            BtreeError::TooLarge { what, len, max } => {
                write!(f, "{what} of {len} bytes exceeds the maximum of {max}")
            }
            BtreeError::Poisoned { file, cause } => {
                write!(
                    f,
                    "{file}: writes refused after an earlier failure: {cause}"
                )
            }
            BtreeError::InvalidOptions(m) => write!(f, "invalid options: {m}"),
        }
    }
}

impl std::error::Error for BtreeError {}
