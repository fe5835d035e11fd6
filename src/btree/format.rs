//! Byte layout of every page type (see the diagrams in the module docs of
//! [`crate::btree`]): chained offset constants, little-endian accessors, the page
//! checksum, the meta page codec and the structural validation of a page read from disk.
//!
//! Invariant: a page that passed [`validate_page`] can be walked with the plain slicing
//! accessors in `node.rs` without any index going out of bounds.

use crc32fast::Hasher;

/// First 8 bytes after the header of both meta pages.
pub const MAGIC: [u8; 8] = *b"CKVBTREE";
/// Bumped on any incompatible change of this file.
pub const FORMAT_VERSION: u32 = 1;
pub const PAGE_SIZE_DEFAULT: usize = 4096;
pub const PAGE_SIZE_MIN: usize = 1024;
/// Slot offsets are u16, so a page may not exceed 32 KiB.
pub const PAGE_SIZE_MAX: usize = 32 * 1024;
/// Pages 0 and 1 are the two meta slots; data pages start at 2.
pub const META_PAGES: u64 = 2;

pub const PAGE_META: u8 = 1;
pub const PAGE_BRANCH: u8 = 2;
pub const PAGE_LEAF: u8 = 3;
pub const PAGE_OVERFLOW: u8 = 4;
pub const PAGE_FREELIST: u8 = 5;

// Common header of every page.
pub const HDR_CHECKSUM: usize = 0; // u32: crc32 of bytes [4, page_size)
pub const HDR_TYPE: usize = HDR_CHECKSUM + 4; // u8
pub const HDR_RESERVED: usize = HDR_TYPE + 1; // u8, zero
pub const HDR_COUNT: usize = HDR_RESERVED + 1; // u16: cells / entries
pub const HDR_PAGE_ID: usize = HDR_COUNT + 2; // u64: the page's own number
pub const HDR_LEN: usize = HDR_PAGE_ID + 8;
const _: () = assert!(HDR_LEN == 16);

// Meta page (pages 0 and 1).
pub const META_MAGIC: usize = HDR_LEN; // [u8; 8]
pub const META_VERSION: usize = META_MAGIC + 8; // u32
pub const META_PAGE_SIZE: usize = META_VERSION + 4; // u32
pub const META_TXN: usize = META_PAGE_SIZE + 4; // u64: version number
pub const META_CATALOG_ROOT: usize = META_TXN + 8; // u64: 0 = no trees
pub const META_FREELIST_HEAD: usize = META_CATALOG_ROOT + 8; // u64: 0 = empty
pub const META_FREELIST_LEN: usize = META_FREELIST_HEAD + 8; // u64: entries
pub const META_PAGE_COUNT: usize = META_FREELIST_LEN + 8; // u64: pages in use
pub const META_END: usize = META_PAGE_COUNT + 8;
const _: () = assert!(META_END <= PAGE_SIZE_MIN);

// Slots (u16 offsets of cells, in key order) follow the header of leaves and branches.
pub const SLOT_LEN: usize = 2;

// Branch page: child0, then slots, then cells [klen u16][child u64][key].
pub const BRANCH_CHILD0: usize = HDR_LEN;
pub const BRANCH_SLOTS: usize = BRANCH_CHILD0 + 8;
pub const BCELL_KLEN: usize = 0;
pub const BCELL_CHILD: usize = BCELL_KLEN + 2;
pub const BCELL_KEY: usize = BCELL_CHILD + 8;

// Leaf page: slots, then cells [klen u16][vlen u32][key][value | overflow page u64].
pub const LEAF_SLOTS: usize = HDR_LEN;
pub const LCELL_KLEN: usize = 0;
pub const LCELL_VLEN: usize = LCELL_KLEN + 2;
pub const LCELL_KEY: usize = LCELL_VLEN + 4;
/// Bit 31 of vlen: the value lives in an overflow chain whose first page follows the key.
pub const VLEN_OVERFLOW: u32 = 1 << 31;
pub const OVERFLOW_REF_LEN: usize = 8;

// Overflow page: [next u64][len u32][data].
pub const OVF_NEXT: usize = HDR_LEN;
pub const OVF_LEN: usize = OVF_NEXT + 8;
pub const OVF_DATA: usize = OVF_LEN + 4;

// Freelist page: [next u64][entries: (freed_txn u64, page u64) * count].
pub const FREE_NEXT: usize = HDR_LEN;
pub const FREE_ENTRIES: usize = FREE_NEXT + 8;
pub const FREE_ENTRY_LEN: usize = 16;

/// The maximum cost (cell + slot) of one cell: a quarter of a page's cell area, so that
/// any overfull node splits into pieces that each fit, and every node holds >= 4 cells.
pub const fn max_cell_cost(page_size: usize) -> usize {
    (page_size - BRANCH_SLOTS) / 4
}

/// Longest key: a leaf cell with an overflow reference must stay within
/// [`max_cell_cost`] (the branch cell for the same key is smaller).
pub const fn max_key_len(page_size: usize) -> usize {
    max_cell_cost(page_size) - SLOT_LEN - LCELL_KEY - OVERFLOW_REF_LEN
}
const _: () =
    assert!(SLOT_LEN + BCELL_KEY + max_key_len(PAGE_SIZE_MIN) <= max_cell_cost(PAGE_SIZE_MIN));
const _: () = assert!(max_key_len(PAGE_SIZE_DEFAULT) == 1002);

#[inline]
pub fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
#[inline]
pub fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
#[inline]
pub fn rd_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
#[inline]
pub fn wr_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn wr_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub fn wr_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn page_type(p: &[u8]) -> u8 {
    p[HDR_TYPE]
}
pub fn page_count_field(p: &[u8]) -> usize {
    rd_u16(p, HDR_COUNT) as usize
}

pub fn checksum(page: &[u8]) -> u32 {
    let mut h = Hasher::new();
    h.update(&page[HDR_CHECKSUM + 4..]);
    h.finalize()
}

pub fn seal(page: &mut [u8]) {
    let c = checksum(page);
    wr_u32(page, HDR_CHECKSUM, c);
}

/// Writes a fresh header (count 0) into `page`.
pub fn init_header(page: &mut [u8], ty: u8, id: u64) {
    page[HDR_TYPE] = ty;
    page[HDR_RESERVED] = 0;
    wr_u16(page, HDR_COUNT, 0);
    wr_u64(page, HDR_PAGE_ID, id);
}

/// One committed version, as stored in a meta page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub txn: u64,
    pub catalog_root: u64,
    pub freelist_head: u64,
    pub freelist_len: u64,
    pub page_count: u64,
}

pub fn encode_meta(m: &Meta, slot: u64, page_size: usize) -> Vec<u8> {
    assert!(slot < META_PAGES);
    assert!(m.page_count >= META_PAGES);
    let mut p = vec![0u8; page_size];
    init_header(&mut p, PAGE_META, slot);
    p[META_MAGIC..META_MAGIC + 8].copy_from_slice(&MAGIC);
    wr_u32(&mut p, META_VERSION, FORMAT_VERSION);
    wr_u32(&mut p, META_PAGE_SIZE, page_size as u32);
    wr_u64(&mut p, META_TXN, m.txn);
    wr_u64(&mut p, META_CATALOG_ROOT, m.catalog_root);
    wr_u64(&mut p, META_FREELIST_HEAD, m.freelist_head);
    wr_u64(&mut p, META_FREELIST_LEN, m.freelist_len);
    wr_u64(&mut p, META_PAGE_COUNT, m.page_count);
    seal(&mut p);
    debug_assert_eq!(decode_meta(&p, slot, page_size), Ok(*m));
    p
}

/// Decodes and checks a meta page; the error says what is wrong with it.
pub fn decode_meta(p: &[u8], slot: u64, page_size: usize) -> Result<Meta, String> {
    if p.len() != page_size {
        return Err(format!("meta {slot}: short read of {} bytes", p.len()));
    }
    if p[META_MAGIC..META_MAGIC + 8] != MAGIC {
        return Err(format!("meta {slot}: bad magic (not a corekv btree file)"));
    }
    let stored = rd_u32(p, HDR_CHECKSUM);
    if stored != checksum(p) {
        return Err(format!("meta {slot}: checksum mismatch"));
    }
    let version = rd_u32(p, META_VERSION);
    if version != FORMAT_VERSION {
        return Err(format!(
            "meta {slot}: format version {version}, expected {FORMAT_VERSION}"
        ));
    }
    let ps = rd_u32(p, META_PAGE_SIZE) as usize;
    if ps != page_size {
        return Err(format!(
            "meta {slot}: file page size {ps}, opened with {page_size}"
        ));
    }
    if page_type(p) != PAGE_META || rd_u64(p, HDR_PAGE_ID) != slot {
        return Err(format!("meta {slot}: wrong page type or id"));
    }
    let m = Meta {
        txn: rd_u64(p, META_TXN),
        catalog_root: rd_u64(p, META_CATALOG_ROOT),
        freelist_head: rd_u64(p, META_FREELIST_HEAD),
        freelist_len: rd_u64(p, META_FREELIST_LEN),
        page_count: rd_u64(p, META_PAGE_COUNT),
    };
    let in_file = |id: u64| id == 0 || (META_PAGES..m.page_count).contains(&id);
    if m.page_count < META_PAGES || !in_file(m.catalog_root) || !in_file(m.freelist_head) {
        return Err(format!("meta {slot}: pointer out of file: {m:?}"));
    }
    Ok(m)
}

/// Checks checksum, self id and the structure of a page read from disk, so that the
/// accessors can walk it without going out of bounds. Keys in leaves and branches must
/// be strictly ascending.
pub fn validate_page(p: &[u8], id: u64) -> Result<(), String> {
    let ps = p.len();
    if rd_u32(p, HDR_CHECKSUM) != checksum(p) {
        return Err("checksum mismatch".into());
    }
    if rd_u64(p, HDR_PAGE_ID) != id {
        return Err(format!(
            "page header names page {} (misdirected write?)",
            rd_u64(p, HDR_PAGE_ID)
        ));
    }
    let n = page_count_field(p);
    match page_type(p) {
        PAGE_LEAF | PAGE_BRANCH => {
            let leaf = page_type(p) == PAGE_LEAF;
            let slots = if leaf { LEAF_SLOTS } else { BRANCH_SLOTS };
            if slots + n * SLOT_LEN > ps {
                return Err(format!("{n} slots do not fit"));
            }
            let mut prev: Option<&[u8]> = None;
            for i in 0..n {
                let off = rd_u16(p, slots + i * SLOT_LEN) as usize;
                let fixed = if leaf { LCELL_KEY } else { BCELL_KEY };
                if off < slots + n * SLOT_LEN || off + fixed > ps {
                    return Err(format!("slot {i}: offset {off} out of page"));
                }
                let klen = rd_u16(p, off) as usize;
                let mut end = off + fixed + klen;
                if leaf {
                    let vlen = rd_u32(p, off + LCELL_VLEN);
                    end += if vlen & VLEN_OVERFLOW != 0 {
                        OVERFLOW_REF_LEN
                    } else {
                        vlen as usize
                    };
                }
                if end > ps {
                    return Err(format!("slot {i}: cell ends at {end}, past the page"));
                }
                let key = &p[off + fixed..off + fixed + klen];
                if prev.is_some_and(|k| k >= key) {
                    return Err(format!("slot {i}: keys out of order"));
                }
                prev = Some(key);
            }
            Ok(())
        }
        PAGE_OVERFLOW => {
            if OVF_DATA + rd_u32(p, OVF_LEN) as usize > ps {
                return Err("overflow data length past the page".into());
            }
            Ok(())
        }
        PAGE_FREELIST => {
            if FREE_ENTRIES + n * FREE_ENTRY_LEN > ps {
                return Err(format!("{n} freelist entries do not fit"));
            }
            Ok(())
        }
        t => Err(format!("unknown page type {t}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_checks() {
        let m = Meta {
            txn: 7,
            catalog_root: 5,
            freelist_head: 0,
            freelist_len: 0,
            page_count: 9,
        };
        let mut p = encode_meta(&m, 1, 4096);
        assert_eq!(decode_meta(&p, 1, 4096), Ok(m));
        assert!(decode_meta(&p, 0, 4096).is_err());
        assert!(decode_meta(&p, 1, 8192).is_err());
        p[100] ^= 1;
        assert!(decode_meta(&p, 1, 4096).unwrap_err().contains("checksum"));
    }
}
