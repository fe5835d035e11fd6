//! Leaf and branch pages: accessors over encoded pages, builders, and the split planner.
//!
//! Accessors assume a page that passed `format::validate_page` (pages read from disk) or
//! was built here (dirty pages): indexing then stays in bounds by construction, and an
//! out-of-bounds index is a bug that panics.
//!
//! Separators: child `i` of a branch holds the keys `k` with `key[i-1] <= k < key[i]`
//! (child 0 is `child0`, child `i >= 1` is the child of cell `i - 1`).

use super::format::*;

/// A value as stored in a leaf cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val<'a> {
    Inline(&'a [u8]),
    Overflow { page: u64, len: usize },
}

#[inline]
pub fn count(p: &[u8]) -> usize {
    page_count_field(p)
}

#[inline]
fn leaf_off(p: &[u8], i: usize) -> usize {
    rd_u16(p, LEAF_SLOTS + i * SLOT_LEN) as usize
}

#[inline]
fn branch_off(p: &[u8], i: usize) -> usize {
    rd_u16(p, BRANCH_SLOTS + i * SLOT_LEN) as usize
}

#[inline]
pub fn leaf_key(p: &[u8], i: usize) -> &[u8] {
    let off = leaf_off(p, i);
    let klen = rd_u16(p, off + LCELL_KLEN) as usize;
    &p[off + LCELL_KEY..off + LCELL_KEY + klen]
}

/// Length in bytes of the leaf cell starting at `off`.
#[inline]
fn leaf_cell_len(p: &[u8], off: usize) -> usize {
    let klen = rd_u16(p, off + LCELL_KLEN) as usize;
    let vlen = rd_u32(p, off + LCELL_VLEN);
    let v = if vlen & VLEN_OVERFLOW != 0 {
        OVERFLOW_REF_LEN
    } else {
        vlen as usize
    };
    LCELL_KEY + klen + v
}

#[inline]
pub fn leaf_cell(p: &[u8], i: usize) -> &[u8] {
    let off = leaf_off(p, i);
    &p[off..off + leaf_cell_len(p, off)]
}

/// Where a leaf's cells lie: the lowest cell offset and the end of the highest cell
/// (the page end and the end of the slot array for an empty leaf). Built pages pack their cells
/// against the end of the page, leaving the free space between the slots and the
/// cells; pages written by older versions packed them right after the slots. Cells
/// are in any physical order, and one replaced by a longer cell leaves a hole; a
/// rebuild (`build`) packs them again. Reads only the slot array and one cell header.
fn leaf_extent(p: &[u8]) -> (usize, usize) {
    let n = count(p);
    if n == 0 {
        return (p.len(), LEAF_SLOTS);
    }
    let (mut lo, mut hi) = (usize::MAX, 0);
    for i in 0..n {
        let off = leaf_off(p, i);
        lo = lo.min(off);
        hi = hi.max(off);
    }
    (lo, hi + leaf_cell_len(p, hi))
}

/// Puts `cell` into leaf `p` without rebuilding it: over slot `idx` when `replace`
/// (the cell there has the same key), else as a new slot at `idx`. A cell of the same
/// length is overwritten; anything else goes to free space below the lowest cell or
/// after the highest one (a new slot needs room below the cells: for a page packed
/// right after its slots, the cells move up by one slot first). Returns false, with
/// the page untouched, when the free space is too small (the caller rebuilds, which
/// packs out holes or splits).
pub fn leaf_put_in_place(p: &mut [u8], idx: usize, replace: bool, cell: &[u8]) -> bool {
    let ps = p.len();
    let n = count(p);
    let len = cell.len();
    let slots_end = LEAF_SLOTS + n * SLOT_LEN;
    if replace {
        let off = leaf_off(p, idx);
        if leaf_cell_len(p, off) == len {
            p[off..off + len].copy_from_slice(cell);
            return true;
        }
        let (lo, hi) = leaf_extent(p);
        let at = if lo >= slots_end + len {
            lo - len
        } else if hi + len <= ps {
            hi
        } else {
            return false;
        };
        p[at..at + len].copy_from_slice(cell);
        wr_u16(p, LEAF_SLOTS + idx * SLOT_LEN, at as u16);
        return true;
    }
    let (mut lo, mut hi) = leaf_extent(p);
    let below = lo - slots_end;
    let at = if below >= SLOT_LEN + len {
        lo - len
    } else if below >= SLOT_LEN && hi + len <= ps {
        hi
    } else if hi + SLOT_LEN + len <= ps {
        // No room for the slot below the cells: move them up by one slot.
        p.copy_within(lo..hi, lo + SLOT_LEN);
        for i in 0..n {
            let s = LEAF_SLOTS + i * SLOT_LEN;
            wr_u16(p, s, rd_u16(p, s) + SLOT_LEN as u16);
        }
        lo += SLOT_LEN;
        hi += SLOT_LEN;
        debug_assert!(lo >= slots_end + SLOT_LEN);
        hi
    } else {
        return false;
    };
    let slot = LEAF_SLOTS + idx * SLOT_LEN;
    p.copy_within(slot..slots_end, slot + SLOT_LEN);
    p[at..at + len].copy_from_slice(cell);
    wr_u16(p, slot, at as u16);
    wr_u16(p, HDR_COUNT, (n + 1) as u16);
    true
}

/// Key of an encoded leaf cell.
#[inline]
pub fn cell_key(cell: &[u8]) -> &[u8] {
    let klen = rd_u16(cell, LCELL_KLEN) as usize;
    &cell[LCELL_KEY..LCELL_KEY + klen]
}

/// Value of an encoded leaf cell.
#[inline]
pub fn cell_val(cell: &[u8]) -> Val<'_> {
    let klen = rd_u16(cell, LCELL_KLEN) as usize;
    let vlen = rd_u32(cell, LCELL_VLEN);
    let at = LCELL_KEY + klen;
    if vlen & VLEN_OVERFLOW != 0 {
        Val::Overflow {
            page: rd_u64(cell, at),
            len: (vlen & !VLEN_OVERFLOW) as usize,
        }
    } else {
        Val::Inline(&cell[at..at + vlen as usize])
    }
}

#[inline]
pub fn leaf_val(p: &[u8], i: usize) -> Val<'_> {
    cell_val(leaf_cell(p, i))
}

/// `Ok(i)` if key i equals `key`, else `Err(i)` with i the insertion point.
#[inline]
pub fn leaf_search(p: &[u8], key: &[u8]) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, count(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        match leaf_key(p, mid).cmp(key) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(lo)
}

#[inline]
pub fn branch_key(p: &[u8], i: usize) -> &[u8] {
    let off = branch_off(p, i);
    let klen = rd_u16(p, off + BCELL_KLEN) as usize;
    &p[off + BCELL_KEY..off + BCELL_KEY + klen]
}

#[inline]
pub fn branch_cell(p: &[u8], i: usize) -> &[u8] {
    let off = branch_off(p, i);
    let klen = rd_u16(p, off + BCELL_KLEN) as usize;
    &p[off..off + BCELL_KEY + klen]
}

/// Byte offset of child pointer `ci` (0..=count) in a branch page.
#[inline]
pub fn child_ptr_offset(p: &[u8], ci: usize) -> usize {
    if ci == 0 {
        BRANCH_CHILD0
    } else {
        branch_off(p, ci - 1) + BCELL_CHILD
    }
}

#[inline]
pub fn branch_child(p: &[u8], ci: usize) -> u64 {
    rd_u64(p, child_ptr_offset(p, ci))
}

/// Index of the child whose range holds `key`: the number of separators <= key.
#[inline]
pub fn branch_search(p: &[u8], key: &[u8]) -> usize {
    let (mut lo, mut hi) = (0, count(p));
    while lo < hi {
        let mid = (lo + hi) / 2;
        if branch_key(p, mid) <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

pub fn make_leaf_cell_inline(key: &[u8], val: &[u8]) -> Vec<u8> {
    let mut c = Vec::with_capacity(LCELL_KEY + key.len() + val.len());
    c.extend_from_slice(&(key.len() as u16).to_le_bytes());
    c.extend_from_slice(&(val.len() as u32).to_le_bytes());
    c.extend_from_slice(key);
    c.extend_from_slice(val);
    c
}

pub fn make_leaf_cell_overflow(key: &[u8], len: usize, page: u64) -> Vec<u8> {
    assert!(len < VLEN_OVERFLOW as usize);
    let mut c = Vec::with_capacity(LCELL_KEY + key.len() + OVERFLOW_REF_LEN);
    c.extend_from_slice(&(key.len() as u16).to_le_bytes());
    c.extend_from_slice(&(len as u32 | VLEN_OVERFLOW).to_le_bytes());
    c.extend_from_slice(key);
    c.extend_from_slice(&page.to_le_bytes());
    c
}

pub fn make_branch_cell(key: &[u8], child: u64) -> Vec<u8> {
    let mut c = Vec::with_capacity(BCELL_KEY + key.len());
    c.extend_from_slice(&(key.len() as u16).to_le_bytes());
    c.extend_from_slice(&child.to_le_bytes());
    c.extend_from_slice(key);
    c
}

/// Key of an encoded branch cell.
pub fn bcell_key(cell: &[u8]) -> &[u8] {
    &cell[BCELL_KEY..]
}
pub fn bcell_child(cell: &[u8]) -> u64 {
    rd_u64(cell, BCELL_CHILD)
}

/// Kind of node being built.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Leaf,
    Branch,
}

impl Kind {
    pub fn fixed(self) -> usize {
        match self {
            Kind::Leaf => LEAF_SLOTS,
            Kind::Branch => BRANCH_SLOTS,
        }
    }
}

/// Bytes a node with these cells occupies.
pub fn node_size(kind: Kind, cells: &[&[u8]]) -> usize {
    kind.fixed() + cells.iter().map(|c| c.len() + SLOT_LEN).sum::<usize>()
}

/// Encodes a node into a fresh page (id 0 until placed). Panics if it does not fit.
pub fn build(kind: Kind, child0: u64, cells: &[&[u8]], ps: usize) -> Box<[u8]> {
    assert!(node_size(kind, cells) <= ps, "node overflows its page");
    let mut p = vec![0u8; ps].into_boxed_slice();
    let (ty, slots) = match kind {
        Kind::Leaf => (PAGE_LEAF, LEAF_SLOTS),
        Kind::Branch => {
            wr_u64(&mut p, BRANCH_CHILD0, child0);
            (PAGE_BRANCH, BRANCH_SLOTS)
        }
    };
    init_header(&mut p, ty, 0);
    wr_u16(&mut p, HDR_COUNT, cells.len() as u16);
    // Cells packed against the end of the page: the free space lies between the slots
    // and the cells, where an in-place insert takes it without moving any cell.
    let mut at = ps;
    for (i, c) in cells.iter().enumerate() {
        at -= c.len();
        wr_u16(&mut p, slots + i * SLOT_LEN, at as u16);
        p[at..at + c.len()].copy_from_slice(c);
    }
    debug_assert!(at >= slots + cells.len() * SLOT_LEN);
    p
}

/// A node piece produced by a build: the separator that precedes it (None for the
/// first piece) and its page image.
pub type Piece = (Option<Vec<u8>>, Box<[u8]>);

/// Builds one or more pages from `cells`, splitting if they do not fit in one. For a
/// branch, the first cell of each later piece is promoted: its key becomes the
/// separator and its child that piece's child0. `append` biases the split for
/// ascending inserts (everything but the last cell stays left).
pub fn build_pieces(
    kind: Kind,
    child0: u64,
    cells: &[&[u8]],
    ps: usize,
    append: bool,
) -> Vec<Piece> {
    if node_size(kind, cells) <= ps {
        return vec![(None, build(kind, child0, cells, ps))];
    }
    let cuts = cut_points(kind, cells, ps, append);
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    let mut c0 = child0;
    let mut sep = None;
    for &end in cuts.iter().chain(std::iter::once(&cells.len())) {
        out.push((sep.take(), build(kind, c0, &cells[start..end], ps)));
        if end < cells.len() {
            match kind {
                Kind::Leaf => {
                    sep = Some(separator(cell_key(cells[end - 1]), cell_key(cells[end])).to_vec());
                    start = end;
                }
                Kind::Branch => {
                    sep = Some(bcell_key(cells[end]).to_vec());
                    c0 = bcell_child(cells[end]);
                    start = end + 1;
                }
            }
        }
    }
    out
}

/// The shortest prefix of `right` that is greater than `left` (suffix truncation:
/// every key of the left piece is < it, every key of the right piece >= it). Shorter
/// separators give branches more fan-out.
pub fn separator<'a>(left: &[u8], right: &'a [u8]) -> &'a [u8] {
    debug_assert!(left < right);
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    let sep = &right[..(common + 1).min(right.len())];
    debug_assert!(left < sep && sep <= right);
    sep
}

/// Where later pieces start. Greedy and balanced: a piece closes when it reached the
/// balanced target or the next cell would not fit. Every cell costs at most a quarter
/// of the page, so every piece fits.
fn cut_points(kind: Kind, cells: &[&[u8]], ps: usize, append: bool) -> Vec<usize> {
    let limit = ps - kind.fixed();
    let cost = |c: &[u8]| c.len() + SLOT_LEN;
    let n = cells.len();
    debug_assert!(cells.iter().all(|c| cost(c) <= max_cell_cost(ps)));
    let promote = usize::from(kind == Kind::Branch);
    if append && n >= 3 {
        let cut = n - 1 - promote;
        if cells[..cut].iter().map(|c| cost(c)).sum::<usize>() <= limit {
            return vec![cut];
        }
    }
    let total: usize = cells.iter().map(|c| cost(c)).sum();
    let pieces = total.div_ceil(limit).max(2);
    let target = total / pieces;
    let mut cuts = Vec::new();
    let mut first = 0; // first cell counted in the current piece
    let mut acc = 0;
    let mut i = 0;
    while i < n {
        let c = cost(cells[i]);
        let forced = acc + c > limit;
        let may_cut = i > first && (kind == Kind::Leaf || i + 1 < n || forced);
        if may_cut && (forced || acc >= target) {
            cuts.push(i);
            acc = 0;
            first = i + promote;
            i += promote;
            continue;
        }
        assert!(acc + c <= limit, "cell does not fit in a fresh piece");
        acc += c;
        i += 1;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_search_and_split_leaf() {
        let ps = 1024;
        let cells: Vec<Vec<u8>> = (0..60u32)
            .map(|i| make_leaf_cell_inline(format!("key{i:04}").as_bytes(), &[i as u8; 20]))
            .collect();
        let refs: Vec<&[u8]> = cells.iter().map(|c| c.as_slice()).collect();
        let pieces = build_pieces(Kind::Leaf, 0, &refs, ps, false);
        assert!(pieces.len() >= 2);
        let mut seen = 0;
        for (i, (sep, p)) in pieces.iter().enumerate() {
            validate_page(
                &{
                    let mut q = p.clone();
                    seal(&mut q);
                    q
                },
                0,
            )
            .unwrap();
            assert_eq!(sep.is_some(), i > 0);
            if let Some(s) = sep {
                assert!(s.as_slice() <= leaf_key(p, 0));
                assert!(leaf_key(p, 0).starts_with(s));
            }
            for j in 0..count(p) {
                assert_eq!(leaf_key(p, j), format!("key{seen:04}").as_bytes());
                assert_eq!(leaf_val(p, j), Val::Inline(&[seen as u8; 20]));
                seen += 1;
            }
        }
        assert_eq!(seen, 60);
        let p = &pieces[0].1;
        assert_eq!(leaf_search(p, b"key0003"), Ok(3));
        assert_eq!(leaf_search(p, b"key0003a"), Err(4));
        assert_eq!(leaf_search(p, b"a"), Err(0));
    }

    /// A leaf laid out the way older versions built them: cells right after the slots.
    fn build_packed_after_slots(cells: &[&[u8]], ps: usize) -> Box<[u8]> {
        let mut p = vec![0u8; ps].into_boxed_slice();
        init_header(&mut p, PAGE_LEAF, 0);
        wr_u16(&mut p, HDR_COUNT, cells.len() as u16);
        let mut at = LEAF_SLOTS + cells.len() * SLOT_LEN;
        for (i, c) in cells.iter().enumerate() {
            wr_u16(&mut p, LEAF_SLOTS + i * SLOT_LEN, at as u16);
            p[at..at + c.len()].copy_from_slice(c);
            at += c.len();
        }
        p
    }

    #[test]
    fn leaf_put_in_place_matches_a_model() {
        // Random inserts and replacements of varying lengths into one page, with the
        // rebuild a caller would do when the page is full: after every step the page
        // validates and holds exactly the model, and a refused put left it untouched.
        let ps = 1024;
        let mut model: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut page = build(Kind::Leaf, 0, &[], ps);
        let mut seed = 7u64;
        let mut rnd = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let (mut in_place, mut refused) = (0, 0);
        for _ in 0..5000 {
            let key = format!("k{:03}", rnd(60)).into_bytes();
            let val = vec![rnd(256) as u8; rnd(40) as usize];
            let cell = make_leaf_cell_inline(&key, &val);
            let (found, idx) = match leaf_search(&page, &key) {
                Ok(i) => (true, i),
                Err(i) => (false, i),
            };
            let before = page.clone();
            if leaf_put_in_place(&mut page, idx, found, &cell) {
                in_place += 1;
                model.insert(key, val);
            } else {
                refused += 1;
                assert_eq!(page, before, "a refused put changed the page");
                // Make room the way a split would: keep every other key.
                model.insert(key, val);
                let keep: Vec<Vec<u8>> = model
                    .iter()
                    .map(|(k, v)| make_leaf_cell_inline(k, v))
                    .collect();
                let keep: Vec<&[u8]> = keep.iter().step_by(2).map(|c| c.as_slice()).collect();
                page = if refused % 2 == 0 {
                    build(Kind::Leaf, 0, &keep, ps)
                } else {
                    build_packed_after_slots(&keep, ps)
                };
                model = (0..count(&page))
                    .map(|i| match leaf_val(&page, i) {
                        Val::Inline(v) => (leaf_key(&page, i).to_vec(), v.to_vec()),
                        Val::Overflow { .. } => unreachable!(),
                    })
                    .collect();
            }
            let mut sealed = page.clone();
            seal(&mut sealed);
            validate_page(&sealed, 0).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = (0..count(&page))
                .map(|i| match leaf_val(&page, i) {
                    Val::Inline(v) => (leaf_key(&page, i).to_vec(), v.to_vec()),
                    Val::Overflow { .. } => unreachable!(),
                })
                .collect();
            assert_eq!(got, model.clone().into_iter().collect::<Vec<_>>());
        }
        assert!(
            in_place > 1000 && refused > 20,
            "{in_place} in place, {refused} refused"
        );
    }

    #[test]
    fn branch_split_promotes_separator() {
        let ps = 1024;
        let cells: Vec<Vec<u8>> = (1..80u64)
            .map(|i| make_branch_cell(format!("k{i:03}").as_bytes(), 100 + i))
            .collect();
        let refs: Vec<&[u8]> = cells.iter().map(|c| c.as_slice()).collect();
        let pieces = build_pieces(Kind::Branch, 100, &refs, ps, false);
        assert!(pieces.len() >= 2);
        let mut children = vec![];
        let mut keys = vec![];
        for (sep, p) in &pieces {
            if let Some(s) = sep {
                keys.push(s.clone());
            }
            children.push(branch_child(p, 0));
            for j in 0..count(p) {
                keys.push(branch_key(p, j).to_vec());
                children.push(branch_child(p, j + 1));
            }
        }
        assert_eq!(children, (100..180).collect::<Vec<u64>>());
        assert_eq!(keys.len(), 79);
        let p = &pieces[0].1;
        assert_eq!(branch_search(p, b"k000"), 0);
        assert_eq!(branch_search(p, b"k001"), 1);
        assert_eq!(branch_search(p, b"k0015"), 1);
    }
}
