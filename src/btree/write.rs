//! The tree mutations of the write transaction: page allocation and freeing,
//! copy-on-write, insert with splits, delete with merges and rebalancing, overflow
//! chains. Every function here changes only dirty pages (allocated by this
//! transaction) and records committed pages it replaces as freed.

use super::db::{overflow_of, Db, Del, Rep};
use super::disk::Disk;
use super::format::*;
use super::node::{self, Kind, Piece};
use super::read::{self, PageSource, Result, MAX_DEPTH};
use super::BtreeError;

impl<D: Disk> Db<D> {
    // ---- allocation ----

    pub(super) fn horizon(&self) -> u64 {
        let oldest = self.snapshots.borrow().keys().next().copied();
        let h = self.meta.txn.saturating_sub(1);
        oldest.map_or(h, |o| o.min(h))
    }

    pub(super) fn release_pending(&mut self) {
        let h = self.horizon();
        let mut released = false;
        while let Some(e) = self.pending.first_entry() {
            if *e.key() > h {
                break;
            }
            self.reusable.extend(e.remove());
            released = true;
        }
        // Hand out the lowest ids first: neighbours freed together are allocated
        // together, so a commit writes longer contiguous runs. (Only when the list
        // changed: this runs before every write, and the list can be long.)
        if released {
            self.reusable.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    pub(super) fn quota_pages(&self) -> u64 {
        self.opts.max_file_bytes / self.opts.page_size as u64
    }

    /// Fails with NoSpace unless `pages` can be allocated: checked before a write
    /// operation touches anything, so it never fails half way for lack of space.
    pub(super) fn ensure_capacity(&mut self, pages: u64) -> Result<()> {
        self.release_pending();
        let free = self.reusable.len() as u64 + self.quota_pages().saturating_sub(self.page_count);
        if free < pages {
            return Err(BtreeError::NoSpace {
                file: self.pages.name.to_string(),
                need_bytes: (self.page_count + pages - free) * self.opts.page_size as u64,
                quota_bytes: self.opts.max_file_bytes,
            });
        }
        Ok(())
    }

    pub(super) fn alloc(&mut self) -> Result<u64> {
        if self.reusable.is_empty() {
            self.release_pending();
        }
        if let Some(id) = self.reusable.pop() {
            debug_assert!(!self.dirty.contains_key(&id));
            debug_assert!(!self.in_flight_page(id));
            return Ok(id);
        }
        if self.page_count + 1 > self.quota_pages() {
            return Err(BtreeError::NoSpace {
                file: self.pages.name.to_string(),
                need_bytes: (self.page_count + 1) * self.opts.page_size as u64,
                quota_bytes: self.opts.max_file_bytes,
            });
        }
        self.page_count += 1;
        Ok(self.page_count - 1)
    }

    pub(super) fn free(&mut self, id: u64) {
        assert!(
            (META_PAGES..self.page_count).contains(&id),
            "freeing page {id} outside the file"
        );
        if self.dirty.remove(&id).is_some() {
            // Allocated by this transaction: no committed version can reach it.
            self.reusable.push(id);
        } else {
            self.freed_now.push(id);
        }
    }

    /// The page id a modified copy of `id` goes to: itself if already dirty.
    pub(super) fn cow(&mut self, id: u64) -> Result<u64> {
        if self.dirty.contains_key(&id) {
            return Ok(id);
        }
        self.free(id);
        self.alloc()
    }

    pub(super) fn put_dirty(&mut self, id: u64, mut buf: Box<[u8]>) {
        debug_assert_eq!(buf.len(), self.opts.page_size);
        wr_u64(&mut buf, HDR_PAGE_ID, id);
        self.dirty.insert(id, buf);
    }

    /// Places built pieces: the first at `old`'s copy-on-write id (or a new page).
    pub(super) fn place(&mut self, old: Option<u64>, pieces: Vec<Piece>) -> Result<Rep> {
        let mut first = 0;
        let mut extras = Vec::with_capacity(pieces.len() - 1);
        for (i, (sep, buf)) in pieces.into_iter().enumerate() {
            let id = match (i, old) {
                (0, Some(o)) => self.cow(o)?,
                _ => self.alloc()?,
            };
            self.put_dirty(id, buf);
            match sep {
                None => first = id,
                Some(s) => extras.push((s, id)),
            }
        }
        Ok((first, extras))
    }

    pub(super) fn write_overflow(&mut self, value: &[u8]) -> Result<u64> {
        let ps = self.opts.page_size;
        let chunks: Vec<&[u8]> = value.chunks(read::overflow_per_page(ps)).collect();
        let ids = (0..chunks.len())
            .map(|_| self.alloc())
            .collect::<Result<Vec<u64>>>()?;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut p = vec![0u8; ps].into_boxed_slice();
            init_header(&mut p, PAGE_OVERFLOW, ids[i]);
            wr_u64(&mut p, OVF_NEXT, ids.get(i + 1).copied().unwrap_or(0));
            wr_u32(&mut p, OVF_LEN, chunk.len() as u32);
            p[OVF_DATA..OVF_DATA + chunk.len()].copy_from_slice(chunk);
            self.put_dirty(ids[i], p);
        }
        Ok(ids[0])
    }

    pub(super) fn free_overflow(&mut self, first: u64, len: usize) -> Result<()> {
        let pages = len
            .div_ceil(read::overflow_per_page(self.opts.page_size))
            .max(1);
        let mut id = first;
        for _ in 0..pages {
            let p = self.page(id)?;
            if page_type(&p) != PAGE_OVERFLOW {
                return Err(self.corrupt(id, "expected an overflow page".into()));
            }
            let next = rd_u64(&p, OVF_NEXT);
            drop(p);
            self.free(id);
            id = next;
        }
        Ok(())
    }

    pub(super) fn free_value(&mut self, v: Option<(u64, usize)>) -> Result<()> {
        match v {
            Some((first, len)) => self.free_overflow(first, len),
            None => Ok(()),
        }
    }

    // ---- insert ----

    pub(super) fn insert_root(&mut self, root: u64, key: &[u8], cell: &[u8]) -> Result<u64> {
        let ps = self.opts.page_size;
        let rep = if root == 0 {
            let id = self.alloc()?;
            self.put_dirty(id, node::build(Kind::Leaf, 0, &[cell], ps));
            (id, vec![])
        } else {
            self.insert_at(root, key, cell, 0, true)?
        };
        self.grow_root(rep)
    }

    /// Turns a split root into new root levels until one page holds it.
    pub(super) fn grow_root(&mut self, (mut first, mut extras): Rep) -> Result<u64> {
        while !extras.is_empty() {
            let cells: Vec<Vec<u8>> = extras
                .iter()
                .map(|(k, c)| node::make_branch_cell(k, *c))
                .collect();
            let refs: Vec<&[u8]> = cells.iter().map(|c| c.as_slice()).collect();
            let pieces = node::build_pieces(Kind::Branch, first, &refs, self.opts.page_size, false);
            (first, extras) = self.place(None, pieces)?;
        }
        Ok(first)
    }

    pub(super) fn insert_at(
        &mut self,
        id: u64,
        key: &[u8],
        cell: &[u8],
        depth: usize,
        rightmost: bool,
    ) -> Result<Rep> {
        if depth >= MAX_DEPTH {
            return Err(self.corrupt(id, format!("tree deeper than {MAX_DEPTH} levels (cycle?)")));
        }
        let ps = self.opts.page_size;
        let p = self.page(id)?;
        match page_type(&p) {
            PAGE_LEAF => {
                let n = node::count(&p);
                let (found, idx) = match node::leaf_search(&p, key) {
                    Ok(i) => (true, i),
                    Err(i) => (false, i),
                };
                let old = if found {
                    overflow_of(node::leaf_val(&p, idx))
                } else {
                    None
                };
                // Fast path: the cell fits the page's free space. A dirty page is
                // changed where it is; a committed one is copied once, then changed.
                // Otherwise fall through with the page, to rebuild it.
                let p = if self.dirty.contains_key(&id) {
                    drop(p);
                    let buf = self.dirty.get_mut(&id).expect("dirty page");
                    if node::leaf_put_in_place(buf, idx, found, cell) {
                        self.free_value(old)?;
                        return Ok((id, vec![]));
                    }
                    self.page(id)?
                } else {
                    let mut buf: Box<[u8]> = p.to_vec().into_boxed_slice();
                    if node::leaf_put_in_place(&mut buf, idx, found, cell) {
                        drop(p);
                        self.free_value(old)?;
                        let nid = self.cow(id)?;
                        self.put_dirty(nid, buf);
                        return Ok((nid, vec![]));
                    }
                    p
                };
                // It does not fit: rebuild, packing out holes, splitting if need be.
                let mut cells: Vec<&[u8]> = Vec::with_capacity(n + 1);
                cells.extend((0..idx).map(|i| node::leaf_cell(&p, i)));
                cells.push(cell);
                cells.extend((idx + usize::from(found)..n).map(|i| node::leaf_cell(&p, i)));
                let append = rightmost && !found && idx == n;
                let pieces = node::build_pieces(Kind::Leaf, 0, &cells, ps, append);
                drop(cells);
                drop(p);
                self.free_value(old)?;
                self.place(Some(id), pieces)
            }
            PAGE_BRANCH => {
                let n = node::count(&p);
                let ci = node::branch_search(&p, key);
                let child = node::branch_child(&p, ci);
                drop(p);
                let right = rightmost && ci == n;
                let rep = self.insert_at(child, key, cell, depth + 1, right)?;
                self.replace_child(id, ci, child, rep, right)
            }
            t => Err(self.corrupt(
                id,
                format!("expected a branch or leaf page, found type {t}"),
            )),
        }
    }

    /// Rewrites branch `id` after its child `ci` (was `old_child`) became `rep`.
    pub(super) fn replace_child(
        &mut self,
        id: u64,
        ci: usize,
        old_child: u64,
        rep: Rep,
        append: bool,
    ) -> Result<Rep> {
        let (first, extras) = rep;
        if extras.is_empty() {
            if first == old_child {
                // Modified in place: the child was dirty, so this page is too.
                debug_assert!(self.dirty.contains_key(&id));
                return Ok((id, vec![]));
            }
            if let Some(buf) = self.dirty.get_mut(&id) {
                let off = node::child_ptr_offset(buf, ci);
                wr_u64(buf, off, first);
                return Ok((id, vec![]));
            }
            let mut buf: Box<[u8]> = self.page(id)?.to_vec().into_boxed_slice();
            let off = node::child_ptr_offset(&buf, ci);
            wr_u64(&mut buf, off, first);
            let nid = self.cow(id)?;
            self.put_dirty(nid, buf);
            return Ok((nid, vec![]));
        }
        let p = self.page(id)?;
        let n = node::count(&p);
        let child0 = if ci == 0 {
            first
        } else {
            node::branch_child(&p, 0)
        };
        let patched = (ci > 0).then(|| node::make_branch_cell(node::branch_key(&p, ci - 1), first));
        let extra_cells: Vec<Vec<u8>> = extras
            .iter()
            .map(|(k, c)| node::make_branch_cell(k, *c))
            .collect();
        let mut cells: Vec<&[u8]> = Vec::with_capacity(n + extra_cells.len());
        for i in 0..ci {
            cells.push(if i + 1 == ci {
                patched.as_deref().unwrap()
            } else {
                node::branch_cell(&p, i)
            });
        }
        cells.extend(extra_cells.iter().map(|c| c.as_slice()));
        cells.extend((ci..n).map(|i| node::branch_cell(&p, i)));
        let pieces = node::build_pieces(Kind::Branch, child0, &cells, self.opts.page_size, append);
        drop(cells);
        drop(p);
        self.place(Some(id), pieces)
    }

    // ---- delete ----

    /// Returns the new root (0 = empty), or None if the key was not there.
    pub(super) fn delete_root(&mut self, root: u64, key: &[u8]) -> Result<Option<u64>> {
        let mut root = match self.delete_at(root, key, 0)? {
            Del::NotFound => return Ok(None),
            Del::Gone => 0,
            Del::Kept { rep, .. } => self.grow_root(rep)?,
        };
        // Collapse branch roots with a single child.
        for _ in 0..MAX_DEPTH {
            if root == 0 {
                break;
            }
            let p = self.page(root)?;
            if page_type(&p) != PAGE_BRANCH || node::count(&p) > 0 {
                break;
            }
            let child = node::branch_child(&p, 0);
            drop(p);
            self.free(root);
            root = child;
        }
        Ok(Some(root))
    }

    pub(super) fn underflow(&self, size: usize) -> bool {
        size < self.opts.page_size / 4
    }

    pub(super) fn delete_at(&mut self, id: u64, key: &[u8], depth: usize) -> Result<Del> {
        if depth >= MAX_DEPTH {
            return Err(self.corrupt(id, format!("tree deeper than {MAX_DEPTH} levels (cycle?)")));
        }
        let ps = self.opts.page_size;
        let p = self.page(id)?;
        match page_type(&p) {
            PAGE_LEAF => {
                let Ok(idx) = node::leaf_search(&p, key) else {
                    return Ok(Del::NotFound);
                };
                let n = node::count(&p);
                let old = overflow_of(node::leaf_val(&p, idx));
                if n == 1 {
                    drop(p);
                    self.free_value(old)?;
                    self.free(id);
                    return Ok(Del::Gone);
                }
                let cells: Vec<&[u8]> = (0..n)
                    .filter(|&i| i != idx)
                    .map(|i| node::leaf_cell(&p, i))
                    .collect();
                let size = node::node_size(Kind::Leaf, &cells);
                let buf = node::build(Kind::Leaf, 0, &cells, ps);
                drop(cells);
                drop(p);
                self.free_value(old)?;
                let nid = self.cow(id)?;
                self.put_dirty(nid, buf);
                Ok(Del::Kept {
                    rep: (nid, vec![]),
                    underflow: self.underflow(size),
                })
            }
            PAGE_BRANCH => {
                let ci = node::branch_search(&p, key);
                let child = node::branch_child(&p, ci);
                drop(p);
                match self.delete_at(child, key, depth + 1)? {
                    Del::NotFound => Ok(Del::NotFound),
                    Del::Gone => self.remove_child(id, ci),
                    Del::Kept { rep, underflow } if !underflow || !rep.1.is_empty() => {
                        Ok(Del::Kept {
                            rep: self.replace_child(id, ci, child, rep, false)?,
                            underflow: false,
                        })
                    }
                    Del::Kept { rep, .. } => self.rebalance(id, ci, child, rep.0),
                }
            }
            t => Err(self.corrupt(
                id,
                format!("expected a branch or leaf page, found type {t}"),
            )),
        }
    }

    /// Drops child `ci` (now empty) from branch `id`.
    pub(super) fn remove_child(&mut self, id: u64, ci: usize) -> Result<Del> {
        let p = self.page(id)?;
        let n = node::count(&p);
        if n == 0 {
            drop(p);
            self.free(id);
            return Ok(Del::Gone);
        }
        let (child0, skip) = if ci == 0 {
            (node::bcell_child(node::branch_cell(&p, 0)), 0)
        } else {
            (node::branch_child(&p, 0), ci - 1)
        };
        let cells: Vec<&[u8]> = (0..n)
            .filter(|&i| i != skip)
            .map(|i| node::branch_cell(&p, i))
            .collect();
        let size = node::node_size(Kind::Branch, &cells);
        let buf = node::build(Kind::Branch, child0, &cells, self.opts.page_size);
        drop(cells);
        drop(p);
        let nid = self.cow(id)?;
        self.put_dirty(nid, buf);
        Ok(Del::Kept {
            rep: (nid, vec![]),
            underflow: self.underflow(size),
        })
    }

    /// Child `ci` of branch `id` (was `old_child`, now `new_child`) is underfull: merge
    /// it with a sibling (and split the result again if it does not fit one page).
    pub(super) fn rebalance(
        &mut self,
        id: u64,
        ci: usize,
        old_child: u64,
        new_child: u64,
    ) -> Result<Del> {
        let p = self.page(id)?;
        let n = node::count(&p);
        if n == 0 {
            drop(p);
            let rep = self.replace_child(id, 0, old_child, (new_child, vec![]), false)?;
            return Ok(Del::Kept {
                rep,
                underflow: true,
            });
        }
        let li = if ci > 0 { ci - 1 } else { 0 };
        let child_at = |i: usize| {
            if i == ci {
                new_child
            } else {
                node::branch_child(&p, i)
            }
        };
        let (left, right) = (child_at(li), child_at(li + 1));
        let sep = node::branch_key(&p, li).to_vec();
        drop(p);
        let pieces = self.merge_pair(left, right, &sep)?;
        let (first, extras) = self.place(None, pieces)?;
        let p = self.page(id)?;
        let child0 = if li == 0 {
            first
        } else {
            node::branch_child(&p, 0)
        };
        let patched = (li > 0).then(|| node::make_branch_cell(node::branch_key(&p, li - 1), first));
        let extra_cells: Vec<Vec<u8>> = extras
            .iter()
            .map(|(k, c)| node::make_branch_cell(k, *c))
            .collect();
        let mut cells: Vec<&[u8]> = Vec::with_capacity(n + extra_cells.len());
        for i in 0..n {
            if i == li {
                cells.extend(extra_cells.iter().map(|c| c.as_slice()));
            } else if li > 0 && i == li - 1 {
                cells.push(patched.as_deref().unwrap());
            } else {
                cells.push(node::branch_cell(&p, i));
            }
        }
        let size = node::node_size(Kind::Branch, &cells);
        let pieces = node::build_pieces(Kind::Branch, child0, &cells, self.opts.page_size, false);
        drop(cells);
        drop(p);
        let single = pieces.len() == 1;
        let rep = self.place(Some(id), pieces)?;
        Ok(Del::Kept {
            rep,
            underflow: single && self.underflow(size),
        })
    }

    /// Concatenates two sibling nodes (separated by `sep`) into one or more pieces and
    /// frees both.
    pub(super) fn merge_pair(&mut self, left: u64, right: u64, sep: &[u8]) -> Result<Vec<Piece>> {
        let lp = self.page(left)?;
        let rp = self.page(right)?;
        let (lt, rt) = (page_type(&lp), page_type(&rp));
        if lt != rt || !(lt == PAGE_LEAF || lt == PAGE_BRANCH) {
            return Err(self.corrupt(right, format!("sibling page types differ ({lt} vs {rt})")));
        }
        let (ln, rn) = (node::count(&lp), node::count(&rp));
        let pieces = if lt == PAGE_LEAF {
            let mut cells: Vec<&[u8]> = (0..ln).map(|i| node::leaf_cell(&lp, i)).collect();
            cells.extend((0..rn).map(|i| node::leaf_cell(&rp, i)));
            node::build_pieces(Kind::Leaf, 0, &cells, self.opts.page_size, false)
        } else {
            let mid = node::make_branch_cell(sep, node::branch_child(&rp, 0));
            let mut cells: Vec<&[u8]> = (0..ln).map(|i| node::branch_cell(&lp, i)).collect();
            cells.push(&mid);
            cells.extend((0..rn).map(|i| node::branch_cell(&rp, i)));
            node::build_pieces(
                Kind::Branch,
                node::branch_child(&lp, 0),
                &cells,
                self.opts.page_size,
                false,
            )
        };
        drop(lp);
        drop(rp);
        self.free(left);
        self.free(right);
        Ok(pieces)
    }
}
