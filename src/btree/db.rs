//! The database: one writer with an open in-memory write transaction, committed
//! versions, snapshots, page allocation and the freelist.
//!
//! Write path: `put`/`delete` copy-on-write the root-to-leaf path into *dirty* pages
//! (memory only; a page allocated in this transaction is modified in place; the
//! mutations themselves are in `write.rs`). [`Db::begin_commit`] writes the catalog
//! and the freelist, then moves the dirty pages into the *in-flight* set, shared with
//! the [`CommitJob`] that writes them, syncs, then writes the meta page and syncs again
//! (see the crash argument in the module docs); [`Db::finish_commit`] publishes the
//! version. Reads through the `Db` see dirty pages, then in-flight pages, then the file.
//!
//! Page reuse: a page freed by transaction `t` is still reachable from version `t - 1`.
//! It becomes allocatable once every live snapshot has version >= `t` **and**
//! `t <= committed - 1`, where `committed` is the last *finished* version: then neither
//! meta slot (the newest and the one before it, which a corrupt newest meta falls back
//! to) nor the in-flight version can reach it.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::rc::Rc;

use super::disk::{Disk, GlommioDisk};
use super::format::*;
use super::node::{self, Val};
use super::read::{self, Cursor, PageSource, Pages, Result, MAX_DEPTH};
use super::{BtreeError, Options};

/// Hasher for page ids (no DoS concern: ids come from the allocator).
#[derive(Default)]
pub struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// The first page of a node that was rewritten, and the (separator, page) of each
/// extra piece it split into.
pub(super) type Rep = (u64, Vec<(Vec<u8>, u64)>);

pub(super) enum Del {
    NotFound,
    /// The node lost its last entry and was freed.
    Gone,
    Kept {
        rep: Rep,
        underflow: bool,
    },
}

/// Where the pages of the file are (see [`Db::check_integrity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageStats {
    /// Pages after the two meta pages.
    pub total: u64,
    /// Pages reachable from the catalog and the trees.
    pub reachable: u64,
    /// Free pages (allocatable now or once snapshots allow).
    pub free: u64,
    /// Pages holding the freelist.
    pub freelist: u64,
}

/// Versions of live snapshots: version -> number of snapshots.
type Registry = Rc<RefCell<BTreeMap<u64, usize>>>;

/// A copy-on-write B+tree file with named trees. See the module docs.
pub struct Db<D: Disk = GlommioDisk> {
    /// Shared with the in-flight [`CommitJob`], if any.
    pub(super) disk: Rc<D>,
    pub(super) opts: Options,
    pub(super) pages: Pages,
    /// The last committed version (durable, published to snapshots).
    pub(super) meta: Meta,
    pub(super) committed_roots: Rc<BTreeMap<String, u64>>,
    /// Live roots (0 = empty tree).
    pub(super) roots: BTreeMap<String, u64>,
    pub(super) dirty: IdMap<Box<[u8]>>,
    /// Live page count (the file's high-water mark, in pages).
    pub(super) page_count: u64,
    /// Pages that may be allocated now.
    pub(super) reusable: Vec<u64>,
    /// Pages freed by committed transactions: freed_txn -> pages.
    pub(super) pending: BTreeMap<u64, Vec<u64>>,
    /// Committed pages freed by the open transaction.
    pub(super) freed_now: Vec<u64>,
    /// Pages holding the freelist of the last sealed version (committed or in flight).
    pub(super) freelist_pages: Vec<u64>,
    /// The version sealed by `begin_commit` whose job has not finished.
    pub(super) inflight: Option<InFlight>,
    /// Set when a commit job is dropped before its I/O completed.
    pub(super) abandoned: Rc<Cell<bool>>,
    pub(super) snapshots: Registry,
    pub(super) changed: bool,
    pub(super) poisoned: Option<String>,
    /// The right edge of the tree the last put appended to: its root, then the last
    /// child of each level down to its rightmost leaf (empty: none known). A hint only:
    /// [`Db::append_in_place`] checks every link before it trusts it.
    pub(super) right_edge: Vec<u64>,
}

/// A read view of one committed version; it keeps seeing that version (and keeps its
/// pages from being reused) as long as it lives.
pub struct Snapshot {
    pages: Pages,
    meta: Meta,
    roots: Rc<BTreeMap<String, u64>>,
    registry: Registry,
}

impl Db<GlommioDisk> {
    /// Opens or creates the file at `path` (glommio executor required).
    pub async fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db<GlommioDisk>> {
        let path = path.as_ref();
        let disk = GlommioDisk::open(path, opts.use_mmap, opts.write_pool)
            .await
            .map_err(|e| BtreeError::io("open", &path.display().to_string(), 0, e))?;
        Db::open_disk(disk, opts).await
    }
}

fn meta_at(
    store: &dyn super::store::PageStore,
    slot: u64,
    ps: usize,
) -> (std::result::Result<Meta, String>, bool) {
    match store.read(slot * ps as u64, ps) {
        Ok(p) => (decode_meta(&p, slot, ps), p.iter().all(|&b| b == 0)),
        Err(e) => (
            Err(format!("meta {slot}: {e}")),
            store.len() <= slot * ps as u64,
        ),
    }
}

impl<D: Disk> Db<D> {
    /// Opens the file behind `disk`, creating an empty database if it is empty (or
    /// holds only zeros where the meta pages go: a creation that crashed).
    pub async fn open_disk(disk: D, opts: Options) -> Result<Db<D>> {
        opts.validate()?;
        let ps = opts.page_size;
        let name: Rc<str> = disk.name().into();
        let io = |op: &'static str, off: u64| {
            let name = name.clone();
            move |e| BtreeError::io(op, &name, off, e)
        };
        let store = disk.store().map_err(io("map", 0))?;
        let (mut r0, z0) = meta_at(&*store, 0, ps);
        let (mut r1, z1) = meta_at(&*store, 1, ps);
        if r0.is_err() && r1.is_err() && z0 && z1 {
            // Fresh file: both slots hold version 0 (empty).
            let m = Meta {
                txn: 0,
                catalog_root: 0,
                freelist_head: 0,
                freelist_len: 0,
                page_count: META_PAGES,
            };
            disk.grow(META_PAGES * ps as u64)
                .await
                .map_err(io("grow", 0))?;
            for slot in 0..META_PAGES {
                let off = slot * ps as u64;
                disk.write_at(off, encode_meta(&m, slot, ps))
                    .await
                    .map_err(io("write meta", off))?;
            }
            disk.sync().await.map_err(io("fdatasync", 0))?;
            (r0, r1) = (Ok(m), Ok(m));
        }
        let meta = match (r0, r1) {
            (Ok(a), Ok(b)) => {
                if a.txn >= b.txn {
                    a
                } else {
                    b
                }
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => a,
            (Err(a), Err(b)) => {
                return Err(BtreeError::Corrupt {
                    file: name.to_string(),
                    page: 0,
                    msg: format!("no valid meta page: {a}; {b}"),
                })
            }
        };
        if meta.page_count * ps as u64 > disk.len() {
            return Err(BtreeError::Corrupt {
                file: name.to_string(),
                page: meta.page_count,
                msg: format!(
                    "file of {} bytes shorter than its {} pages",
                    disk.len(),
                    meta.page_count
                ),
            });
        }
        let store = disk.store().map_err(io("map", 0))?;
        let pages = Pages {
            store,
            verified: Rc::default(),
            page_size: ps,
            name,
        };
        let mut db = Db {
            disk: Rc::new(disk),
            opts,
            pages,
            meta,
            committed_roots: Rc::default(),
            roots: BTreeMap::new(),
            dirty: IdMap::default(),
            page_count: meta.page_count,
            reusable: Vec::new(),
            pending: BTreeMap::new(),
            freed_now: Vec::new(),
            freelist_pages: Vec::new(),
            inflight: None,
            abandoned: Rc::default(),
            snapshots: Registry::default(),
            changed: false,
            right_edge: Vec::new(),
            poisoned: None,
        };
        db.load_catalog()?;
        db.load_freelist()?;
        Ok(db)
    }

    fn load_catalog(&mut self) -> Result<()> {
        let mut roots = BTreeMap::new();
        let mut bad = None;
        read::scan(
            self,
            self.meta.catalog_root,
            b"",
            None,
            false,
            &mut |k, v| match (std::str::from_utf8(k), <[u8; 8]>::try_from(v)) {
                (Ok(name), Ok(root)) => {
                    roots.insert(name.to_string(), u64::from_le_bytes(root));
                    true
                }
                _ => {
                    bad = Some(format!("bad catalog entry {k:?}"));
                    false
                }
            },
        )?;
        if let Some(m) = bad {
            return Err(self.corrupt(self.meta.catalog_root, m));
        }
        self.roots = roots.clone();
        self.committed_roots = Rc::new(roots);
        Ok(())
    }

    fn load_freelist(&mut self) -> Result<()> {
        let per = (self.opts.page_size - FREE_ENTRIES) / FREE_ENTRY_LEN;
        let max_pages = (self.meta.freelist_len as usize).div_ceil(per) + 1;
        let mut id = self.meta.freelist_head;
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for _ in 0..max_pages {
            if id == 0 {
                break;
            }
            let p = self.pages.get(id, self.meta.page_count)?;
            if page_type(&p) != PAGE_FREELIST {
                return Err(self.corrupt(
                    id,
                    format!("expected a freelist page, found type {}", page_type(&p)),
                ));
            }
            for e in 0..page_count_field(&p) {
                let at = FREE_ENTRIES + e * FREE_ENTRY_LEN;
                let (txn, page) = (rd_u64(&p, at), rd_u64(&p, at + 8));
                if !(META_PAGES..self.meta.page_count).contains(&page)
                    || txn > self.meta.txn
                    || !seen.insert(page)
                {
                    return Err(
                        self.corrupt(id, format!("bad freelist entry (txn {txn}, page {page})"))
                    );
                }
                self.pending.entry(txn).or_default().push(page);
                total += 1;
            }
            let next = rd_u64(&p, FREE_NEXT);
            drop(p);
            if !seen.insert(id) {
                return Err(self.corrupt(id, "freelist page listed as free".into()));
            }
            self.freelist_pages.push(id);
            id = next;
        }
        if id != 0 || total != self.meta.freelist_len {
            return Err(self.corrupt(
                self.meta.freelist_head,
                format!(
                    "freelist holds {total} entries, meta says {}",
                    self.meta.freelist_len
                ),
            ));
        }
        Ok(())
    }

    fn corrupt(&self, page: u64, msg: String) -> BtreeError {
        self.pages.corrupt(page, msg)
    }

    /// Closes the file now (uncommitted writes are dropped). Dropping a `Db` closes it
    /// too, but glommio closes files asynchronously, so the lock may outlive the drop.
    /// Fails while a commit job still holds the file.
    pub async fn close(self) -> Result<()> {
        let name = self.pages.name.to_string();
        match Rc::try_unwrap(self.disk) {
            Ok(disk) => disk
                .close()
                .await
                .map_err(|e| BtreeError::io("close", &name, 0, e)),
            Err(_) => Err(BtreeError::Io {
                op: "close",
                file: name,
                offset: 0,
                msg: "a commit job still holds the file".into(),
            }),
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The number of the last committed version (durable, seen by new snapshots).
    pub fn committed_txn(&self) -> u64 {
        self.meta.txn
    }

    /// Whether page `id` belongs to the in-flight version's written pages.
    pub(super) fn in_flight_page(&self, id: u64) -> bool {
        self.inflight
            .as_ref()
            .is_some_and(|f| f.pages.contains_key(&id))
    }

    /// The newest sealed version: the in-flight one, else the last committed.
    fn sealed_meta(&self) -> Meta {
        self.inflight.as_ref().map_or(self.meta, |f| f.meta)
    }

    /// Bytes the file occupies (at least the pages in use).
    pub fn size_bytes(&self) -> u64 {
        self.disk
            .len()
            .max(self.page_count * self.opts.page_size as u64)
    }

    /// Bytes of the pages the open write transaction changed and nobody has sealed yet
    /// (memory only: the version being built, not the one in flight). O(1).
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty.len() as u64 * self.opts.page_size as u64
    }

    /// Names of the trees that hold at least one entry (live state).
    pub fn tree_names(&self) -> Vec<String> {
        self.roots
            .iter()
            .filter(|(_, &r)| r != 0)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn root(&self, tree: &str) -> u64 {
        self.roots.get(tree).copied().unwrap_or(0)
    }

    /// Latest value of `key` in `tree` (committed or not).
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        read::get(self, self.root(tree), key)
    }

    /// Like [`Db::get`], lending the value to `f` instead of copying it.
    pub fn get_with<R>(
        &self,
        tree: &str,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        read::get_with(self, self.root(tree), key, f)
    }

    /// Ordered scan of the live state; see [`read::scan`].
    pub fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        read::scan(self, self.root(tree), lo, hi, reverse, f)
    }

    /// A cursor over the live state of `tree`.
    pub fn cursor(&self, tree: &str) -> Cursor<'_> {
        Cursor::new(self, self.root(tree))
    }

    /// A read view of the last committed version.
    pub fn snapshot(&self) -> Snapshot {
        *self
            .snapshots
            .borrow_mut()
            .entry(self.meta.txn)
            .or_default() += 1;
        Snapshot {
            pages: self.pages.clone(),
            meta: self.meta,
            roots: self.committed_roots.clone(),
            registry: self.snapshots.clone(),
        }
    }

    fn check_writable(&self) -> Result<()> {
        let cause = match &self.poisoned {
            Some(cause) => cause.clone(),
            None if self.abandoned.get() => {
                "a commit job was dropped before it completed (cancelled)".into()
            }
            None => return Ok(()),
        };
        Err(BtreeError::Poisoned {
            file: self.pages.name.to_string(),
            cause,
        })
    }

    fn check_sizes(&self, tree: &str, key: &[u8], value_len: usize) -> Result<()> {
        let max_key = self.opts.max_key_bytes();
        for (what, len) in [("key", key.len()), ("tree name", tree.len())] {
            if len > max_key {
                return Err(BtreeError::TooLarge {
                    what,
                    len,
                    max: max_key,
                });
            }
        }
        if value_len > self.opts.max_value_bytes {
            return Err(BtreeError::TooLarge {
                what: "value",
                len: value_len,
                max: self.opts.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Runs a write operation; an error after it began leaves the live state unknown,
    /// so it poisons the writer (reopen to continue from the last commit).
    fn guarded<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = op(self);
        if let Err(e) = &r {
            self.poisoned = Some(e.to_string());
        }
        r
    }

    /// Inserts or replaces `key` in `tree` (created on first use).
    pub fn put(&mut self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_sizes(tree, key, value.len())?;
        let ps = self.opts.page_size;
        let inline = SLOT_LEN + LCELL_KEY + key.len() + value.len() <= max_cell_cost(ps);
        let ovf_pages = if inline {
            0
        } else {
            value.len().div_ceil(read::overflow_per_page(ps))
        };
        // Puts leave one slack's worth for deletes and commits, so that a full file
        // can still shrink.
        self.ensure_capacity(ovf_pages as u64 + 2 * SLACK_PAGES)?;
        self.guarded(|db| {
            let cell = if inline {
                node::make_leaf_cell_inline(key, value)
            } else {
                let first = db.write_overflow(value)?;
                node::make_leaf_cell_overflow(key, value.len(), first)
            };
            let root = db.root(tree);
            if db.append_in_place(root, key, &cell)? {
                return Ok(());
            }
            let root = db.insert_root(root, key, &cell)?;
            db.set_root(tree, root);
            db.find_right_edge(root, key)
        })
    }

    /// The fast path of a put whose key is greater than every key of its tree (the
    /// revision tree's puts): when `right_edge` still leads from `root` down to a dirty
    /// rightmost leaf whose last key is below `key` and which has room, the cell is
    /// appended there, without searching any page on the way. False: take the normal
    /// path.
    fn append_in_place(&mut self, root: u64, key: &[u8], cell: &[u8]) -> Result<bool> {
        let Some((&leaf, branches)) = self.right_edge.split_last() else {
            return Ok(false);
        };
        if root == 0 || self.right_edge[0] != root || !self.dirty.contains_key(&leaf) {
            return Ok(false);
        }
        for (i, &id) in branches.iter().enumerate() {
            let p = self.page(id)?;
            if page_type(&p) != PAGE_BRANCH
                || node::branch_child(&p, node::count(&p)) != self.right_edge[i + 1]
            {
                return Ok(false);
            }
        }
        let buf = self.dirty.get_mut(&leaf).expect("checked above");
        let n = node::count(buf);
        if page_type(buf) != PAGE_LEAF || n == 0 || node::leaf_key(buf, n - 1) >= key {
            return Ok(false);
        }
        if !node::leaf_put_in_place(buf, n, false, cell) {
            return Ok(false);
        }
        self.changed = true;
        Ok(true)
    }

    /// Records the right edge of the tree under `root` (see `right_edge`) if `key`, just
    /// put, is the tree's last key; forgets it otherwise.
    fn find_right_edge(&mut self, root: u64, key: &[u8]) -> Result<()> {
        self.right_edge.clear();
        let mut id = root;
        loop {
            self.right_edge.push(id);
            let p = self.page(id)?;
            match page_type(&p) {
                PAGE_BRANCH if self.right_edge.len() < MAX_DEPTH => {
                    id = node::branch_child(&p, node::count(&p));
                }
                PAGE_LEAF
                    if node::count(&p) > 0 && node::leaf_key(&p, node::count(&p) - 1) == key =>
                {
                    return Ok(());
                }
                _ => {
                    drop(p);
                    self.right_edge.clear();
                    return Ok(());
                }
            }
        }
    }

    /// Removes `key` from `tree`; returns whether it existed.
    pub fn delete(&mut self, tree: &str, key: &[u8]) -> Result<bool> {
        self.check_writable()?;
        let root = self.root(tree);
        if root == 0 {
            return Ok(false);
        }
        self.ensure_capacity(SLACK_PAGES)?;
        self.guarded(|db| match db.delete_root(root, key)? {
            None => Ok(false),
            Some(r) => {
                db.set_root(tree, r);
                Ok(true)
            }
        })
    }

    fn set_root(&mut self, tree: &str, root: u64) {
        self.changed = true;
        match self.roots.get_mut(tree) {
            Some(r) => *r = root,
            None => {
                self.roots.insert(tree.to_string(), root);
            }
        }
    }

    /// Checks that every page of the file is accounted for exactly once: reachable
    /// from the catalog or a tree (branch, leaf, overflow pages), free (allocatable,
    /// waiting for snapshots, or freed by the open transaction), or holding the
    /// freelist. Walks the whole file: for tests and tooling.
    pub fn check_integrity(&self) -> Result<PageStats> {
        let mut owner: HashMap<u64, &'static str> = HashMap::new();
        let mut claim = |id: u64, what: &'static str| -> Result<()> {
            if !(META_PAGES..self.page_count).contains(&id) {
                return Err(self.corrupt(id, format!("{what} page outside the file")));
            }
            match owner.insert(id, what) {
                Some(prev) => Err(self.corrupt(id, format!("page is both {prev} and {what}"))),
                None => Ok(()),
            }
        };
        let mut reachable = 0u64;
        let catalog = self.sealed_meta().catalog_root;
        let roots = std::iter::once(catalog).chain(self.roots.values().copied());
        for root in roots.filter(|&r| r != 0) {
            let mut stack = vec![(root, 0usize)];
            while let Some((id, depth)) = stack.pop() {
                if depth >= MAX_DEPTH {
                    return Err(self.corrupt(id, "tree too deep".into()));
                }
                claim(id, "tree")?;
                reachable += 1;
                let p = self.page(id)?;
                let n = node::count(&p);
                match page_type(&p) {
                    PAGE_BRANCH => {
                        stack.extend((0..=n).map(|ci| (node::branch_child(&p, ci), depth + 1)))
                    }
                    PAGE_LEAF => {
                        for i in 0..n {
                            if let Some((first, len)) = overflow_of(node::leaf_val(&p, i)) {
                                let pages = len
                                    .div_ceil(read::overflow_per_page(self.opts.page_size))
                                    .max(1);
                                let mut o = first;
                                for _ in 0..pages {
                                    claim(o, "overflow")?;
                                    reachable += 1;
                                    o = rd_u64(&self.page(o)?, OVF_NEXT);
                                }
                            }
                        }
                    }
                    t => return Err(self.corrupt(id, format!("page type {t} inside a tree"))),
                }
            }
        }
        let free: Vec<u64> = self
            .reusable
            .iter()
            .chain(self.pending.values().flatten())
            .chain(&self.freed_now)
            .copied()
            .collect();
        for &id in &free {
            claim(id, "free")?;
        }
        for &id in &self.freelist_pages {
            claim(id, "freelist")?;
        }
        let total = self.page_count - META_PAGES;
        if owner.len() as u64 != total {
            return Err(self.corrupt(
                0,
                format!("{} of {total} pages accounted for (leak)", owner.len()),
            ));
        }
        Ok(PageStats {
            total,
            reachable,
            free: free.len() as u64,
            freelist: self.freelist_pages.len() as u64,
        })
    }

    // ---- commit ----

    /// Makes every write so far durable as one atomic version: [`Db::begin_commit`],
    /// the job's I/O, [`Db::finish_commit`]. On failure the Db refuses further writes
    /// (reopen). Dropping the future before it completes poisons the Db too.
    ///
    /// Panics if a job from `begin_commit` is still in flight.
    pub async fn commit(&mut self) -> Result<()> {
        let Some(job) = self.begin_commit()? else {
            return Ok(());
        };
        let done = job.run().await;
        self.finish_commit(done)
    }

    /// Whether a job from [`Db::begin_commit`] has not been finished yet.
    pub fn commit_in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    /// Seals the open write transaction as version `committed_txn() + 1` and returns the
    /// job that makes it durable (`None`: nothing was written since the last commit).
    /// Synchronous and cheap: the catalog and the freelist are written copy-on-write
    /// like any tree, and the dirty pages move into the in-flight set. The Db goes on
    /// taking writes at once, in a new transaction on top of the sealed version; reads
    /// see dirty pages, then in-flight pages, then the file. Snapshots keep seeing the
    /// last finished version until [`Db::finish_commit`].
    ///
    /// Panics if a job is already in flight: at most one commit at a time (the caller
    /// finishes the previous one first).
    pub fn begin_commit(&mut self) -> Result<Option<CommitJob<D>>> {
        self.check_writable()?;
        assert!(
            self.inflight.is_none(),
            "{}: begin_commit while version {} is in flight (finish its job first)",
            self.pages.name,
            self.meta.txn + 1
        );
        if !self.changed {
            return Ok(None);
        }
        let txn = self.meta.txn + 1;
        // A failure half way leaves the catalog or the freelist half written.
        let (catalog_root, (freelist_head, freelist_len, list_pages)) =
            self.guarded(|db| Ok((db.update_catalog()?, db.write_freelist(txn)?)))?;
        let meta = Meta {
            txn,
            catalog_root,
            freelist_head,
            freelist_len,
            page_count: self.page_count,
        };
        let pages = Rc::new(std::mem::take(&mut self.dirty));
        self.freelist_pages = list_pages;
        self.inflight = Some(InFlight {
            meta,
            pages: pages.clone(),
            roots: Rc::new(self.roots.clone()),
        });
        self.changed = false;
        Ok(Some(CommitJob {
            disk: self.disk.clone(),
            pages,
            meta,
            page_size: self.opts.page_size,
            grow_step_bytes: self.opts.grow_step_bytes,
            max_file_bytes: self.opts.max_file_bytes,
            name: self.pages.name.clone(),
            guard: JobGuard {
                abandoned: self.abandoned.clone(),
                armed: true,
            },
        }))
    }

    /// Takes the outcome of the in-flight job. Ok: the sealed version is committed and
    /// published (snapshots from now on see it, its pages are read from the file, which
    /// is remapped if it grew). Err: the Db is poisoned (every later write and commit is
    /// refused; reopen) and the error is returned.
    ///
    /// Panics without a job in flight, or with the outcome of another job.
    pub fn finish_commit(&mut self, done: Result<CommitDone>) -> Result<()> {
        let sealed = self
            .inflight
            .as_ref()
            .map(|f| f.meta.txn)
            .unwrap_or_else(|| {
                panic!(
                    "{}: finish_commit with no commit in flight",
                    self.pages.name
                )
            });
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                self.poisoned = Some(e.to_string());
                return Err(e);
            }
        };
        assert_eq!(
            done.txn, sealed,
            "{}: outcome of another commit",
            self.pages.name
        );
        if self.disk.len() > self.pages.store.len() {
            match self.disk.store() {
                Ok(store) => self.pages.store = store,
                Err(e) => {
                    let e = BtreeError::io("map", &self.pages.name, 0, e);
                    self.poisoned = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        let f = self.inflight.take().expect("checked above");
        // The bytes just written were sealed from these very pages (structure validated
        // in debug builds); trust them as verified.
        for id in f.pages.keys() {
            self.pages.mark_verified(*id);
        }
        self.meta = f.meta;
        self.committed_roots = f.roots;
        Ok(())
    }

    fn update_catalog(&mut self) -> Result<u64> {
        let mut catalog = self.meta.catalog_root;
        let changes: Vec<(String, u64)> = self
            .roots
            .iter()
            .filter(|(n, r)| self.committed_roots.get(*n).copied().unwrap_or(0) != **r)
            .map(|(n, r)| (n.clone(), *r))
            .collect();
        for (name, root) in changes {
            if root == 0 {
                catalog = self
                    .delete_root(catalog, name.as_bytes())?
                    .unwrap_or(catalog);
            } else {
                let cell = node::make_leaf_cell_inline(name.as_bytes(), &root.to_le_bytes());
                catalog = self.insert_root(catalog, name.as_bytes(), &cell)?;
            }
        }
        self.roots.retain(|_, r| *r != 0);
        Ok(catalog)
    }

    /// Writes the freelist (all free pages with the txn that freed them, 0 = free now)
    /// into pages taken from the free pages themselves or the end of the file.
    fn write_freelist(&mut self, txn: u64) -> Result<(u64, u64, Vec<u64>)> {
        let freed = std::mem::take(&mut self.freed_now);
        let old_list = std::mem::take(&mut self.freelist_pages);
        let e = self.pending.entry(txn).or_default();
        e.extend(freed);
        e.extend(old_list);
        let ps = self.opts.page_size;
        let per = (ps - FREE_ENTRIES) / FREE_ENTRY_LEN;
        let entries =
            |db: &Self| db.reusable.len() + db.pending.values().map(Vec::len).sum::<usize>();
        // Taking a free page for the list shrinks the list; this may leave the last
        // list page empty, which is allowed.
        let mut list_pages = Vec::new();
        while list_pages.len() < entries(self).div_ceil(per) {
            let id = match self.reusable.pop() {
                Some(id) => id,
                None => self.alloc()?,
            };
            list_pages.push(id);
        }
        let all: Vec<(u64, u64)> = self
            .reusable
            .iter()
            .map(|&p| (0, p))
            .chain(
                self.pending
                    .iter()
                    .flat_map(|(&t, ps)| ps.iter().map(move |&p| (t, p))),
            )
            .collect();
        let mut chunks = all.chunks(per);
        for i in 0..list_pages.len() {
            let chunk = chunks.next().unwrap_or(&[]);
            let mut p = vec![0u8; ps].into_boxed_slice();
            init_header(&mut p, PAGE_FREELIST, list_pages[i]);
            wr_u16(&mut p, HDR_COUNT, chunk.len() as u16);
            wr_u64(
                &mut p,
                FREE_NEXT,
                list_pages.get(i + 1).copied().unwrap_or(0),
            );
            for (j, (t, pg)) in chunk.iter().enumerate() {
                wr_u64(&mut p, FREE_ENTRIES + j * FREE_ENTRY_LEN, *t);
                wr_u64(&mut p, FREE_ENTRIES + j * FREE_ENTRY_LEN + 8, *pg);
            }
            self.put_dirty(list_pages[i], p);
        }
        assert!(chunks.next().is_none() && list_pages.len() <= all.len().div_ceil(per) + 1);
        Ok((
            list_pages.first().copied().unwrap_or(0),
            all.len() as u64,
            list_pages,
        ))
    }
}

/// Pages a commit job copies and seals before it yields to the executor.
const YIELD_EVERY_PAGES: usize = 256;

/// The version sealed by [`Db::begin_commit`] whose job has not finished.
pub(super) struct InFlight {
    meta: Meta,
    /// Its pages, shared with the job that writes them.
    pages: Rc<IdMap<Box<[u8]>>>,
    roots: Rc<BTreeMap<String, u64>>,
}

/// Marks the Db poisoned if the job is dropped before its I/O completed (cancelled):
/// the state of the file is then unknown.
struct JobGuard {
    abandoned: Rc<Cell<bool>>,
    armed: bool,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        if self.armed {
            self.abandoned.set(true);
        }
    }
}

/// The I/O of one commit, detached from its [`Db`]: it owns a handle to the disk and
/// the sealed pages, so the Db takes writes (and serves reads) while it runs. Run it,
/// then hand the outcome to [`Db::finish_commit`].
pub struct CommitJob<D: Disk = GlommioDisk> {
    disk: Rc<D>,
    pages: Rc<IdMap<Box<[u8]>>>,
    meta: Meta,
    page_size: usize,
    grow_step_bytes: u64,
    max_file_bytes: u64,
    name: Rc<str>,
    guard: JobGuard,
}

/// A commit job whose I/O completed: the version is durable.
#[derive(Debug)]
pub struct CommitDone {
    txn: u64,
}

impl<D: Disk> CommitJob<D> {
    /// The version this job commits.
    pub fn txn(&self) -> u64 {
        self.meta.txn
    }

    /// Pages this job writes (besides the meta page).
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Grows the file if needed, writes the sealed pages, fdatasync, writes the meta
    /// page into slot `txn % 2`, fdatasync (the crash argument is in the module docs).
    /// The returned future borrows nothing from the Db.
    pub async fn run(mut self) -> Result<CommitDone> {
        let r = self.io().await;
        self.guard.armed = false;
        r.map(|()| CommitDone { txn: self.meta.txn })
    }

    async fn io(&self) -> Result<()> {
        let disk = &*self.disk;
        let ps = self.page_size as u64;
        let name = &self.name;
        let io = |op: &'static str, off: u64| move |e| BtreeError::io(op, name, off, e);
        // 1. Grow the file (in steps, so that most commits do not change its size).
        let need = self.meta.page_count * ps;
        if need > disk.len() {
            let step = (disk.len() / 8).max(self.grow_step_bytes);
            let target = need
                .max(disk.len() + step)
                .min(self.max_file_bytes.max(need));
            let target = target.div_ceil(ps) * ps;
            disk.grow(target).await.map_err(io("grow", target))?;
        }
        // 2. Write the pages, each sealed with its checksum in the buffer written,
        // contiguous runs as one write, all submitted at once.
        let mut ids: Vec<u64> = self.pages.keys().copied().collect();
        ids.sort_unstable();
        let mut writes = Vec::new();
        let mut i = 0;
        let mut since_yield = 0;
        while i < ids.len() {
            // Copying and sealing is CPU work on the writer's executor: let the other
            // tasks (the driver) run between slices of it.
            if since_yield >= YIELD_EVERY_PAGES {
                futures_lite::future::yield_now().await;
                since_yield = 0;
            }
            let mut j = i + 1;
            while j < ids.len() && ids[j] == ids[j - 1] + 1 && j - i < 256 {
                j += 1;
            }
            since_yield += j - i;
            let mut buf = Vec::with_capacity((j - i) * ps as usize);
            for id in &ids[i..j] {
                let at = buf.len();
                buf.extend_from_slice(&self.pages[id]);
                seal(&mut buf[at..]);
                debug_assert_eq!(validate_page(&buf[at..], *id), Ok(()));
            }
            writes.push((ids[i] * ps, buf));
            i = j;
        }
        let first = ids.first().map_or(0, |id| id * ps);
        disk.write_many(writes).await.map_err(io("write", first))?;
        // 3. Make them durable before any meta can point at them.
        disk.sync().await.map_err(io("fdatasync", 0))?;
        // 4. Write and sync the meta page into the slot of the version before last.
        let slot = self.meta.txn % META_PAGES;
        let off = slot * ps;
        let page = encode_meta(&self.meta, slot, ps as usize);
        disk.write_at(off, page)
            .await
            .map_err(io("write meta", off))?;
        disk.sync().await.map_err(io("fdatasync meta", off))?;
        Ok(())
    }
}

pub(super) fn overflow_of(v: Val<'_>) -> Option<(u64, usize)> {
    match v {
        Val::Overflow { page, len } => Some((page, len)),
        Val::Inline(_) => None,
    }
}

/// Pages a single put or delete may allocate beyond its value's overflow pages (a
/// split or merge at every level of the deepest possible path, plus new root levels).
pub(super) const SLACK_PAGES: u64 = 3 * MAX_DEPTH as u64;

impl<D: Disk> PageSource for Db<D> {
    #[inline]
    fn page(&self, id: u64) -> Result<Cow<'_, [u8]>> {
        if !self.dirty.is_empty() {
            if let Some(b) = self.dirty.get(&id) {
                return Ok(Cow::Borrowed(b));
            }
        }
        if let Some(f) = &self.inflight {
            if let Some(b) = f.pages.get(&id) {
                return Ok(Cow::Borrowed(b));
            }
        }
        self.pages.get(id, self.meta.page_count)
    }
    fn page_size(&self) -> usize {
        self.opts.page_size
    }
    fn corrupt(&self, page: u64, msg: String) -> BtreeError {
        self.pages.corrupt(page, msg)
    }
}

impl Snapshot {
    /// The committed version this snapshot sees.
    pub fn txn(&self) -> u64 {
        self.meta.txn
    }
    fn root(&self, tree: &str) -> u64 {
        self.roots.get(tree).copied().unwrap_or(0)
    }
    pub fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        read::get(self, self.root(tree), key)
    }
    /// Like [`Snapshot::get`], lending the value to `f` instead of copying it.
    pub fn get_with<R>(
        &self,
        tree: &str,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        read::get_with(self, self.root(tree), key, f)
    }
    pub fn scan(
        &self,
        tree: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        read::scan(self, self.root(tree), lo, hi, reverse, f)
    }
    pub fn cursor(&self, tree: &str) -> Cursor<'_> {
        Cursor::new(self, self.root(tree))
    }
}

impl PageSource for Snapshot {
    #[inline]
    fn page(&self, id: u64) -> Result<Cow<'_, [u8]>> {
        self.pages.get(id, self.meta.page_count)
    }
    fn page_size(&self) -> usize {
        self.pages.page_size
    }
    fn corrupt(&self, page: u64, msg: String) -> BtreeError {
        self.pages.corrupt(page, msg)
    }
}

impl Clone for Snapshot {
    fn clone(&self) -> Snapshot {
        *self.registry.borrow_mut().entry(self.meta.txn).or_default() += 1;
        Snapshot {
            pages: self.pages.clone(),
            meta: self.meta,
            roots: self.roots.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut r = self.registry.borrow_mut();
        let n = r.get_mut(&self.meta.txn).expect("snapshot registered");
        *n -= 1;
        if *n == 0 {
            r.remove(&self.meta.txn);
        }
    }
}
