//! Reading trees: the [`PageSource`] abstraction (committed pages through a
//! [`PageStore`], plus the writer's dirty pages), point lookups, overflow chains, and
//! ordered cursors. Every traversal is depth-bounded ([`MAX_DEPTH`]) and checks page
//! types, so a cycle or a wrong pointer is an error, never a hang or a wrong answer.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use super::format::*;
use super::node::{self, Val};
use super::store::PageStore;
use super::BtreeError;

/// No tree is deeper than this (a node holds at least 4 cells, so 32 levels is far
/// beyond any file a u64 page number can address); deeper means a cycle.
pub const MAX_DEPTH: usize = 32;

pub type Result<T> = std::result::Result<T, BtreeError>;

/// Something pages can be read from.
pub trait PageSource {
    fn page(&self, id: u64) -> Result<Cow<'_, [u8]>>;
    fn page_size(&self) -> usize;
    fn corrupt(&self, page: u64, msg: String) -> BtreeError;
}

/// Committed pages of one file: a store plus the set of page ids already checked.
///
/// Each page is verified (checksum, self id, structure) on its first read from the
/// file; committed pages are immutable while reachable, so later reads skip the check.
/// Pages this process writes are sealed from the same buffer that is written and
/// marked verified at commit. The bitset is shared by the Db and all its snapshots.
#[derive(Clone)]
pub struct Pages {
    pub store: Rc<dyn PageStore>,
    pub verified: Rc<RefCell<Vec<u64>>>,
    pub page_size: usize,
    pub name: Rc<str>,
}

impl Pages {
    #[inline]
    pub fn get(&self, id: u64, page_count: u64) -> Result<Cow<'_, [u8]>> {
        if !(META_PAGES..page_count).contains(&id) {
            return Err(self.corrupt(
                id,
                format!("page pointer out of file (page count {page_count})"),
            ));
        }
        let off = id * self.page_size as u64;
        let p = self
            .store
            .read(off, self.page_size)
            .map_err(|e| BtreeError::io("read", &self.name, off, e))?;
        let (w, b) = ((id / 64) as usize, id % 64);
        let known = self
            .verified
            .borrow()
            .get(w)
            .is_some_and(|x| x & (1 << b) != 0);
        if !known {
            validate_page(&p, id).map_err(|m| self.corrupt(id, m))?;
            self.mark_verified(id);
        }
        Ok(p)
    }

    /// Records that `id` holds bytes known to be good (the writer just wrote them).
    pub fn mark_verified(&self, id: u64) {
        let (w, b) = ((id / 64) as usize, id % 64);
        let mut v = self.verified.borrow_mut();
        if v.len() <= w {
            v.resize(w + 1, 0);
        }
        v[w] |= 1 << b;
    }

    pub fn corrupt(&self, page: u64, msg: String) -> BtreeError {
        BtreeError::Corrupt {
            file: self.name.to_string(),
            page,
            msg,
        }
    }
}

fn expect_node<S: PageSource + ?Sized>(src: &S, id: u64, p: &[u8]) -> Result<u8> {
    match page_type(p) {
        t @ (PAGE_BRANCH | PAGE_LEAF) => Ok(t),
        t => Err(src.corrupt(
            id,
            format!("expected a branch or leaf page, found type {t}"),
        )),
    }
}

fn too_deep<S: PageSource + ?Sized>(src: &S, root: u64) -> BtreeError {
    src.corrupt(
        root,
        format!("tree deeper than {MAX_DEPTH} levels (cycle in branch pointers?)"),
    )
}

/// Point lookup in the tree rooted at `root` (0 = empty).
pub fn get<S: PageSource + ?Sized>(src: &S, root: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
    get_with(src, root, key, |v| v.to_vec())
}

/// Point lookup that lends the value to `f` instead of copying it (zero-copy for inline
/// values read through a map).
pub fn get_with<S: PageSource + ?Sized, R>(
    src: &S,
    root: u64,
    key: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> Result<Option<R>> {
    if root == 0 {
        return Ok(None);
    }
    let mut id = root;
    for _ in 0..MAX_DEPTH {
        let p = src.page(id)?;
        if expect_node(src, id, &p)? == PAGE_BRANCH {
            id = node::branch_child(&p, node::branch_search(&p, key));
            continue;
        }
        return match node::leaf_search(&p, key) {
            Ok(i) => match node::leaf_val(&p, i) {
                Val::Inline(v) => Ok(Some(f(v))),
                v => Ok(Some(f(&value(src, v)?))),
            },
            Err(_) => Ok(None),
        };
    }
    Err(too_deep(src, root))
}

/// The bytes of a stored value (follows an overflow chain).
pub fn value<S: PageSource + ?Sized>(src: &S, v: Val<'_>) -> Result<Vec<u8>> {
    match v {
        Val::Inline(b) => Ok(b.to_vec()),
        Val::Overflow { page, len } => read_overflow(src, page, len),
    }
}

/// Data bytes per overflow page.
pub fn overflow_per_page(page_size: usize) -> usize {
    page_size - OVF_DATA
}

pub fn read_overflow<S: PageSource + ?Sized>(src: &S, first: u64, len: usize) -> Result<Vec<u8>> {
    let pages = len.div_ceil(overflow_per_page(src.page_size())).max(1);
    let mut out = Vec::with_capacity(len);
    let mut id = first;
    for _ in 0..pages {
        let p = src.page(id)?;
        if page_type(&p) != PAGE_OVERFLOW {
            return Err(src.corrupt(
                id,
                format!("expected an overflow page, found type {}", page_type(&p)),
            ));
        }
        let n = rd_u32(&p, OVF_LEN) as usize;
        if out.len() + n > len {
            return Err(src.corrupt(
                id,
                format!("overflow chain longer than its value ({len} bytes)"),
            ));
        }
        out.extend_from_slice(&p[OVF_DATA..OVF_DATA + n]);
        id = rd_u64(&p, OVF_NEXT);
        if out.len() == len {
            return Ok(out);
        }
    }
    Err(src.corrupt(
        first,
        format!("overflow chain shorter than its value ({len} bytes)"),
    ))
}

/// A visitor of entries that may fail.
type EntryFn<'f> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'f;

/// A position in one tree: the path of (page, index) from the root to a leaf entry.
/// At a branch the index is the child taken; at the leaf it is the entry.
pub struct Cursor<'a> {
    src: &'a dyn PageSource,
    root: u64,
    stack: Vec<(u64, usize)>,
}

enum Edge<'k> {
    First,
    Last,
    Seek(&'k [u8]),
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a dyn PageSource, root: u64) -> Cursor<'a> {
        Cursor {
            src,
            root,
            stack: Vec::new(),
        }
    }

    /// Whether the cursor is on an entry.
    pub fn valid(&self) -> bool {
        !self.stack.is_empty()
    }

    fn descend(&mut self, mut id: u64, edge: Edge<'_>) -> Result<()> {
        loop {
            if self.stack.len() >= MAX_DEPTH {
                let root = self.root;
                self.stack.clear();
                return Err(too_deep(self.src, root));
            }
            let p = self.src.page(id)?;
            let n = node::count(&p);
            if expect_node(self.src, id, &p)? == PAGE_BRANCH {
                let ci = match edge {
                    Edge::First => 0,
                    Edge::Last => n,
                    Edge::Seek(k) => node::branch_search(&p, k),
                };
                self.stack.push((id, ci));
                id = node::branch_child(&p, ci);
                continue;
            }
            if n == 0 {
                return Err(self.src.corrupt(id, "empty leaf inside a tree".into()));
            }
            let i = match edge {
                Edge::First => 0,
                Edge::Last => n - 1,
                Edge::Seek(k) => node::leaf_search(&p, k).unwrap_or_else(|i| i),
            };
            self.stack.push((id, i));
            return Ok(());
        }
    }

    fn start(&mut self, edge: Edge<'_>) -> Result<bool> {
        self.stack.clear();
        if self.root == 0 {
            return Ok(false);
        }
        let seek = matches!(edge, Edge::Seek(_));
        let r = self.descend(self.root, edge);
        if let Err(e) = r {
            self.stack.clear();
            return Err(e);
        }
        if seek {
            // The insertion point may be one past the leaf's last entry.
            let (id, i) = *self.stack.last().unwrap();
            if i >= node::count(&self.src.page(id)?) {
                return self.next_leaf();
            }
        }
        Ok(true)
    }

    /// Positions on the first entry >= `key`; false if there is none.
    pub fn seek(&mut self, key: &[u8]) -> Result<bool> {
        self.start(Edge::Seek(key))
    }
    pub fn first(&mut self) -> Result<bool> {
        self.start(Edge::First)
    }
    pub fn last(&mut self) -> Result<bool> {
        self.start(Edge::Last)
    }

    /// Moves to the first entry of the next leaf (the current leaf is exhausted).
    fn next_leaf(&mut self) -> Result<bool> {
        self.stack.pop();
        while let Some((id, ci)) = self.stack.pop() {
            let p = self.src.page(id)?;
            if ci < node::count(&p) {
                let child = node::branch_child(&p, ci + 1);
                drop(p);
                self.stack.push((id, ci + 1));
                self.descend(child, Edge::First)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves to the next entry; false (and invalid) past the end.
    #[allow(clippy::should_implement_trait)] // fallible: Result<bool>, not Option
    pub fn next(&mut self) -> Result<bool> {
        let Some(&(id, i)) = self.stack.last() else {
            return Ok(false);
        };
        if i + 1 < node::count(&self.src.page(id)?) {
            self.stack.last_mut().unwrap().1 = i + 1;
            return Ok(true);
        }
        self.next_leaf()
    }

    /// Moves to the previous entry; false (and invalid) before the start.
    pub fn prev(&mut self) -> Result<bool> {
        let Some(&(_, i)) = self.stack.last() else {
            return Ok(false);
        };
        if i > 0 {
            self.stack.last_mut().unwrap().1 = i - 1;
            return Ok(true);
        }
        self.stack.pop();
        while let Some((id, ci)) = self.stack.pop() {
            if ci > 0 {
                let child = node::branch_child(&self.src.page(id)?, ci - 1);
                self.stack.push((id, ci - 1));
                self.descend(child, Edge::Last)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Calls `f` with the current entry's key and value.
    pub fn with_entry<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> R) -> Result<Option<R>> {
        let Some(&(id, i)) = self.stack.last() else {
            return Ok(None);
        };
        let p = self.src.page(id)?;
        let cell = node::leaf_cell(&p, i);
        match node::cell_val(cell) {
            Val::Inline(v) => Ok(Some(f(node::cell_key(cell), v))),
            v => {
                let v = value(self.src, v)?;
                Ok(Some(f(node::cell_key(cell), &v)))
            }
        }
    }

    /// The current entry, copied.
    pub fn entry(&self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.with_entry(|k, v| (k.to_vec(), v.to_vec()))
    }

    /// Visits entries from the current one onwards (`reverse`: backwards) while `f`
    /// returns true, a leaf at a time.
    fn run(&mut self, reverse: bool, f: &mut EntryFn<'_>) -> Result<()> {
        while let Some(&(id, start)) = self.stack.last() {
            let p = self.src.page(id)?;
            let n = node::count(&p);
            let mut visit = |i: usize| -> Result<bool> {
                let cell = node::leaf_cell(&p, i);
                match node::cell_val(cell) {
                    Val::Inline(v) => f(node::cell_key(cell), v),
                    v => {
                        let v = value(self.src, v)?;
                        f(node::cell_key(cell), &v)
                    }
                }
            };
            if reverse {
                for i in (0..=start).rev() {
                    if !visit(i)? {
                        return Ok(());
                    }
                }
                drop(p);
                self.stack.last_mut().unwrap().1 = 0;
                self.prev()?;
            } else {
                for i in start..n {
                    if !visit(i)? {
                        return Ok(());
                    }
                }
                drop(p);
                self.stack.last_mut().unwrap().1 = n - 1;
                self.next()?;
            }
        }
        Ok(())
    }
}

/// Ordered scan of `[lo, hi)` (hi None = unbounded), ascending or descending, until `f`
/// returns false.
pub fn scan(
    src: &dyn PageSource,
    root: u64,
    lo: &[u8],
    hi: Option<&[u8]>,
    reverse: bool,
    f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    if hi.is_some_and(|h| h <= lo) {
        return Ok(());
    }
    let mut c = Cursor::new(src, root);
    if !reverse {
        c.seek(lo)?;
        c.run(false, &mut |k, v| Ok(hi.is_none_or(|h| k < h) && f(k, v)))
    } else {
        match hi {
            Some(h) if c.seek(h)? => {
                c.prev()?;
            }
            _ => {
                c.last()?;
            }
        }
        c.run(true, &mut |k, v| Ok(k >= lo && f(k, v)))
    }
}
