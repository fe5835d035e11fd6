//! On-disk format of the WAL: segment header, record header, record payloads.
//!
//! See the module docs of [`crate::wal`] and `docs/wal.md` for the byte diagrams and
//! the crash argument. Everything is little-endian. This file only encodes and decodes
//! bytes; it knows nothing about files or Raft semantics.

use crate::raft::types::{ConfState, Entry, EntryKind, HardState, Payload, SnapshotMeta};

/// Every group-commit write starts and ends on a multiple of this many bytes, and every
/// O_DIRECT offset and length is a multiple of it (it is a multiple of 512 and of the
/// usual 4 KiB logical block size).
pub const BLOCK_BYTES: u64 = 4096;
/// Media assumption: a sector write is atomic (all or nothing). Used by the test disk.
pub const SECTOR_BYTES: u64 = 512;
const _: () = assert!(BLOCK_BYTES.is_multiple_of(SECTOR_BYTES));

// ---- segment header (block 0 of every segment file) ----
pub const SEGMENT_MAGIC: [u8; 8] = *b"COREKVWL";
pub const FORMAT_VERSION: u32 = 1;
pub const SEG_MAGIC_OFF: usize = 0;
pub const SEG_VERSION_OFF: usize = SEG_MAGIC_OFF + 8;
pub const SEG_BLOCK_OFF: usize = SEG_VERSION_OFF + 4;
pub const SEG_SEQ_OFF: usize = SEG_BLOCK_OFF + 4;
pub const SEG_BYTES_OFF: usize = SEG_SEQ_OFF + 8;
pub const SEG_CRC_OFF: usize = SEG_BYTES_OFF + 8;
pub const SEG_HEADER_LEN: usize = SEG_CRC_OFF + 4;
/// Records start here: the header owns the whole first block.
pub const SEG_FIRST_RECORD: u64 = BLOCK_BYTES;
const _: () = assert!(SEG_HEADER_LEN == 36);
const _: () = assert!(SEG_HEADER_LEN as u64 <= SECTOR_BYTES);

// ---- record header ----
pub const REC_LEN_OFF: usize = 0;
pub const REC_CRC_OFF: usize = REC_LEN_OFF + 4;
pub const REC_KIND_OFF: usize = REC_CRC_OFF + 4;
pub const REC_RESERVED_OFF: usize = REC_KIND_OFF + 1;
pub const REC_WSN_OFF: usize = REC_RESERVED_OFF + 7;
pub const REC_HEADER_LEN: usize = REC_WSN_OFF + 8;
/// The crc covers the header from here (kind, reserved, wsn) plus the payload.
pub const REC_CRC_FROM: usize = REC_KIND_OFF;
const _: () = assert!(REC_HEADER_LEN == 24);
// A pad record (header only) always fits in what is left of a block, or in one more.
const _: () = assert!(BLOCK_BYTES as usize >= 2 * REC_HEADER_LEN);

/// Record kinds. 0 is never valid, so a zeroed sector never parses as a record.
pub const KIND_APPEND: u8 = 1;
pub const KIND_SNAPSHOT: u8 = 2;
pub const KIND_PAD: u8 = 3;

// ---- Append payload ----
pub const APP_READY_OFF: usize = 0;
pub const APP_FLAGS_OFF: usize = APP_READY_OFF + 8;
pub const APP_HS_OFF: usize = APP_FLAGS_OFF + 8;
pub const HS_LEN: usize = 24;
pub const APP_COUNT_OFF: usize = APP_HS_OFF + HS_LEN;
pub const APP_ENTRIES_OFF: usize = APP_COUNT_OFF + 8;
pub const APP_FLAG_HAS_HS: u8 = 1;
// entry header inside an Append payload
pub const ENT_TERM_OFF: usize = 0;
pub const ENT_INDEX_OFF: usize = ENT_TERM_OFF + 8;
pub const ENT_KIND_OFF: usize = ENT_INDEX_OFF + 8;
pub const ENT_DATA_LEN_OFF: usize = ENT_KIND_OFF + 4;
pub const ENT_HEADER_LEN: usize = ENT_DATA_LEN_OFF + 4;
const _: () = assert!(APP_ENTRIES_OFF == 48);
const _: () = assert!(ENT_HEADER_LEN == 24);

// ---- Snapshot payload ----
pub const SNAP_HS_OFF: usize = 0;
pub const SNAP_INDEX_OFF: usize = SNAP_HS_OFF + HS_LEN;
pub const SNAP_TERM_OFF: usize = SNAP_INDEX_OFF + 8;
pub const SNAP_COUNTS_OFF: usize = SNAP_TERM_OFF + 8;
pub const SNAP_IDS_OFF: usize = SNAP_COUNTS_OFF + 16;
const _: () = assert!(SNAP_IDS_OFF == 56);

/// Bytes one append of `entries` takes as a record (header included).
pub fn append_record_len(entries: &[Entry]) -> usize {
    REC_HEADER_LEN
        + APP_ENTRIES_OFF
        + entries
            .iter()
            .map(|e| ENT_HEADER_LEN + e.data.len())
            .sum::<usize>()
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Writes a record header with wsn 0 and crc 0; [`seal_record`] fills both at flush.
fn begin_record(out: &mut Vec<u8>, kind: u8, payload_len: usize) {
    put_u32(
        out,
        u32::try_from(payload_len).expect("record payload over 4 GiB"),
    );
    put_u32(out, 0);
    out.push(kind);
    out.extend_from_slice(&[0; 7]);
    put_u64(out, 0);
}

fn put_hs(out: &mut Vec<u8>, hs: &HardState) {
    put_u64(out, hs.term);
    put_u64(out, hs.vote);
    put_u64(out, hs.commit);
}

/// Appends an Append record (unsealed) to `out`.
pub fn encode_append(out: &mut Vec<u8>, ready: u64, hs: Option<&HardState>, entries: &[Entry]) {
    let start = out.len();
    out.resize(start + append_record_len(entries), 0);
    encode_append_into(&mut out[start..], ready, hs, entries);
}

/// Writes an Append record (unsealed: wsn and crc 0) into `out`, which must be exactly
/// [`append_record_len`]`(entries)` bytes long. Every byte of `out` is written (its old
/// contents do not matter: the staging buffer is reused without being zeroed).
pub fn encode_append_into(out: &mut [u8], ready: u64, hs: Option<&HardState>, entries: &[Entry]) {
    // The caller sized `out` with `append_record_len`; the entries below fill it
    // exactly or a bounds check / the final assert catches the mismatch (no second
    // pass over the entries to recompute it).
    let total = out.len();
    assert!(
        total >= REC_HEADER_LEN + APP_ENTRIES_OFF,
        "append record length mismatch"
    );
    let mut w = SliceWriter { out, at: 0 };
    w.u32(u32::try_from(total - REC_HEADER_LEN).expect("record payload over 4 GiB"));
    w.zeros(REC_KIND_OFF - REC_CRC_OFF);
    w.u8(KIND_APPEND);
    w.zeros(REC_HEADER_LEN - REC_RESERVED_OFF);
    debug_assert_eq!(w.at, REC_HEADER_LEN);
    w.u64(ready);
    w.u8(if hs.is_some() { APP_FLAG_HAS_HS } else { 0 });
    w.zeros(APP_HS_OFF - APP_FLAGS_OFF - 1);
    let hs = hs.copied().unwrap_or_default();
    w.u64(hs.term);
    w.u64(hs.vote);
    w.u64(hs.commit);
    w.u32(entries.len() as u32);
    w.zeros(APP_ENTRIES_OFF - APP_COUNT_OFF - 4);
    debug_assert_eq!(w.at, REC_HEADER_LEN + APP_ENTRIES_OFF);
    // Each entry: its header and data in one range (one bounds check per entry).
    let (out, mut at) = (w.out, w.at);
    for e in entries {
        let len = e.data.len();
        let dst = &mut out[at..at + ENT_HEADER_LEN + len];
        let (head, data) = dst.split_at_mut(ENT_HEADER_LEN);
        let mut h = [0u8; ENT_HEADER_LEN];
        h[ENT_TERM_OFF..ENT_TERM_OFF + 8].copy_from_slice(&e.term.to_le_bytes());
        h[ENT_INDEX_OFF..ENT_INDEX_OFF + 8].copy_from_slice(&e.index.to_le_bytes());
        h[ENT_KIND_OFF] = match e.kind {
            EntryKind::Normal => 0,
            EntryKind::ConfChange => 1,
        };
        let len32 = u32::try_from(len).expect("entry over 4 GiB");
        h[ENT_DATA_LEN_OFF..ENT_DATA_LEN_OFF + 4].copy_from_slice(&len32.to_le_bytes());
        head.copy_from_slice(&h);
        data.copy_from_slice(&e.data);
        at += ENT_HEADER_LEN + len;
    }
    assert_eq!(at, total, "append record length mismatch");
}

/// Writes little-endian fields into a slice, front to back.
struct SliceWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl SliceWriter<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.out[self.at] = v;
        self.at += 1;
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn zeros(&mut self, n: usize) {
        self.out[self.at..self.at + n].fill(0);
        self.at += n;
    }
}

/// Where the data of each entry lies in an encoded Append record (header included),
/// in order: (offset, length). The inverse of [`encode_append_into`]'s layout (the
/// tests check the encoding against it).
#[cfg(test)]
pub fn append_data_offsets(entries: &[Entry]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut off = REC_HEADER_LEN + APP_ENTRIES_OFF;
    entries.iter().map(move |e| {
        let at = off + ENT_HEADER_LEN;
        off = at + e.data.len();
        (at, e.data.len())
    })
}

/// Appends a Snapshot record (unsealed) to `out`.
pub fn encode_snapshot(out: &mut Vec<u8>, hs: &HardState, meta: &SnapshotMeta) {
    let cs = &meta.conf_state;
    let ids = cs.voters.len() + cs.learners.len() + cs.voters_outgoing.len();
    let start = out.len();
    begin_record(out, KIND_SNAPSHOT, SNAP_IDS_OFF + 8 * ids);
    put_hs(out, hs);
    put_u64(out, meta.index);
    put_u64(out, meta.term);
    put_u32(out, cs.voters.len() as u32);
    put_u32(out, cs.learners.len() as u32);
    put_u32(out, cs.voters_outgoing.len() as u32);
    put_u32(out, 0);
    for id in cs
        .voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
    {
        put_u64(out, *id);
    }
    assert_eq!(out.len() - start, REC_HEADER_LEN + SNAP_IDS_OFF + 8 * ids);
}

/// Writes a Pad record header covering `rec[..]` (the slice is the whole record, header
/// included, its payload already zero) and seals it.
pub fn write_pad(rec: &mut [u8], wsn: u64) {
    assert!(
        rec.len() >= REC_HEADER_LEN,
        "pad record too short: {}",
        rec.len()
    );
    let payload = rec.len() - REC_HEADER_LEN;
    rec[..REC_HEADER_LEN].fill(0);
    rec[REC_LEN_OFF..REC_LEN_OFF + 4].copy_from_slice(&(payload as u32).to_le_bytes());
    rec[REC_KIND_OFF] = KIND_PAD;
    seal_record(rec, wsn);
}

/// Bytes a record is copied in by [`copy_sealed`] before its crc is taken over them
/// (while they are still in the L1 cache).
const SEAL_PIECE_BYTES: usize = 16 << 10;

/// Copies the encoded record `src` (unsealed) into `dst` (exactly as long) and seals the
/// copy with `wsn`: the same result as copying, then [`seal_record`], but in one pass
/// over the bytes (the crc reads each piece right after it was copied).
pub fn copy_sealed(dst: &mut [u8], src: &[u8], wsn: u64) {
    let len = get_u32(src, REC_LEN_OFF) as usize;
    assert!(
        src.len() == REC_HEADER_LEN + len && dst.len() == src.len(),
        "copy_sealed: record of {} bytes (header says {}) into {} bytes",
        src.len(),
        REC_HEADER_LEN + len,
        dst.len()
    );
    dst[..REC_HEADER_LEN].copy_from_slice(&src[..REC_HEADER_LEN]);
    dst[REC_WSN_OFF..REC_WSN_OFF + 8].copy_from_slice(&wsn.to_le_bytes());
    // One crc update per piece (the first also covers the header): for the many small
    // records of concurrent appenders, each update call has a fixed cost.
    let mut h = crc32fast::Hasher::new();
    let (mut from, mut at) = (REC_CRC_FROM, REC_HEADER_LEN);
    loop {
        let end = (at + SEAL_PIECE_BYTES).min(src.len());
        dst[at..end].copy_from_slice(&src[at..end]);
        h.update(&dst[from..end]);
        if end == src.len() {
            break;
        }
        (from, at) = (end, end);
    }
    dst[REC_CRC_OFF..REC_CRC_OFF + 4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Stamps the write sequence number and the crc into an encoded record.
pub fn seal_record(rec: &mut [u8], wsn: u64) {
    let len = get_u32(rec, REC_LEN_OFF) as usize;
    assert_eq!(
        rec.len(),
        REC_HEADER_LEN + len,
        "seal: record length mismatch"
    );
    rec[REC_WSN_OFF..REC_WSN_OFF + 8].copy_from_slice(&wsn.to_le_bytes());
    let crc = crc32fast::hash(&rec[REC_CRC_FROM..]);
    rec[REC_CRC_OFF..REC_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record header that passed its checks, as found at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u8,
    pub wsn: u64,
    pub payload_len: usize,
}

/// Checks the record at the start of `buf` (the rest of the segment): known kind,
/// zero reserved bytes, length within `buf`, crc. `None` means "not a record here"
/// (torn, zeroed, corrupted or stale); never panics on any input.
pub fn check_record(buf: &[u8]) -> Option<RecordHeader> {
    if buf.len() < REC_HEADER_LEN {
        return None;
    }
    let kind = buf[REC_KIND_OFF];
    if !matches!(kind, KIND_APPEND | KIND_SNAPSHOT | KIND_PAD) {
        return None;
    }
    if buf[REC_RESERVED_OFF..REC_WSN_OFF].iter().any(|&b| b != 0) {
        return None;
    }
    let payload_len = get_u32(buf, REC_LEN_OFF) as usize;
    if payload_len > buf.len() - REC_HEADER_LEN {
        return None;
    }
    let crc = get_u32(buf, REC_CRC_OFF);
    if crc32fast::hash(&buf[REC_CRC_FROM..REC_HEADER_LEN + payload_len]) != crc {
        return None;
    }
    Some(RecordHeader {
        kind,
        wsn: get_u64(buf, REC_WSN_OFF),
        payload_len,
    })
}

/// A decoded Append record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRecord {
    pub ready: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
}

fn get_hs(p: &[u8], off: usize) -> HardState {
    HardState {
        term: get_u64(p, off),
        vote: get_u64(p, off + 8),
        commit: get_u64(p, off + 16),
    }
}

/// Decodes an Append payload whose crc already matched. A structural error here means
/// a writer bug or a crc collision; it is reported, never a panic. The entries' data
/// are slices of `payload` (shared, not copied).
pub fn decode_append(payload: &Payload) -> Result<AppendRecord, String> {
    let p: &[u8] = payload;
    if p.len() < APP_ENTRIES_OFF {
        return Err(format!("append payload of {} bytes is too short", p.len()));
    }
    let flags = p[APP_FLAGS_OFF];
    if flags & !APP_FLAG_HAS_HS != 0 {
        return Err(format!("unknown append flags {flags:#x}"));
    }
    let hard_state = (flags & APP_FLAG_HAS_HS != 0).then(|| get_hs(p, APP_HS_OFF));
    let count = get_u32(p, APP_COUNT_OFF) as usize;
    let mut entries = Vec::with_capacity(count.min(p.len() / ENT_HEADER_LEN));
    let mut off = APP_ENTRIES_OFF;
    for i in 0..count {
        if p.len() - off < ENT_HEADER_LEN {
            return Err(format!("entry {i} header runs past the record"));
        }
        let kind = match p[off + ENT_KIND_OFF] {
            0 => EntryKind::Normal,
            1 => EntryKind::ConfChange,
            k => return Err(format!("entry {i} has unknown kind {k}")),
        };
        let len = get_u32(p, off + ENT_DATA_LEN_OFF) as usize;
        let data_at = off + ENT_HEADER_LEN;
        if p.len() - data_at < len {
            return Err(format!("entry {i} data ({len} bytes) runs past the record"));
        }
        let e = Entry {
            term: get_u64(p, off + ENT_TERM_OFF),
            index: get_u64(p, off + ENT_INDEX_OFF),
            kind,
            data: payload.slice(data_at..data_at + len),
        };
        if let Some(prev) = entries.last() {
            let prev: &Entry = prev;
            if e.index != prev.index + 1 || e.term < prev.term {
                return Err(format!(
                    "entry {i} (index {}, term {}) does not follow index {} term {}",
                    e.index, e.term, prev.index, prev.term
                ));
            }
        }
        entries.push(e);
        off = data_at + len;
    }
    if off != p.len() {
        return Err(format!(
            "{} trailing bytes after the entries",
            p.len() - off
        ));
    }
    Ok(AppendRecord {
        ready: get_u64(p, APP_READY_OFF),
        hard_state,
        entries,
    })
}

/// Decodes a Snapshot payload: (hard state, snapshot metadata).
pub fn decode_snapshot(p: &[u8]) -> Result<(HardState, SnapshotMeta), String> {
    if p.len() < SNAP_IDS_OFF {
        return Err(format!(
            "snapshot payload of {} bytes is too short",
            p.len()
        ));
    }
    let counts = [
        get_u32(p, SNAP_COUNTS_OFF) as usize,
        get_u32(p, SNAP_COUNTS_OFF + 4) as usize,
        get_u32(p, SNAP_COUNTS_OFF + 8) as usize,
    ];
    let ids: usize = counts.iter().sum();
    if p.len() != SNAP_IDS_OFF + 8 * ids {
        return Err(format!(
            "snapshot payload is {} bytes, expected {} for {ids} ids",
            p.len(),
            SNAP_IDS_OFF + 8 * ids
        ));
    }
    let mut at = SNAP_IDS_OFF;
    let mut take = |n: usize| {
        let v: Vec<u64> = (0..n).map(|i| get_u64(p, at + 8 * i)).collect();
        at += 8 * n;
        v
    };
    let conf_state = ConfState {
        voters: take(counts[0]),
        learners: take(counts[1]),
        voters_outgoing: take(counts[2]),
    };
    Ok((
        get_hs(p, SNAP_HS_OFF),
        SnapshotMeta {
            index: get_u64(p, SNAP_INDEX_OFF),
            term: get_u64(p, SNAP_TERM_OFF),
            conf_state,
        },
    ))
}

/// The segment header block (only the first [`SEG_HEADER_LEN`] bytes are non-zero).
pub fn encode_segment_header(seq: u64, segment_bytes: u64) -> [u8; SEG_HEADER_LEN] {
    let mut h = [0u8; SEG_HEADER_LEN];
    h[SEG_MAGIC_OFF..SEG_MAGIC_OFF + 8].copy_from_slice(&SEGMENT_MAGIC);
    h[SEG_VERSION_OFF..SEG_VERSION_OFF + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[SEG_BLOCK_OFF..SEG_BLOCK_OFF + 4].copy_from_slice(&(BLOCK_BYTES as u32).to_le_bytes());
    h[SEG_SEQ_OFF..SEG_SEQ_OFF + 8].copy_from_slice(&seq.to_le_bytes());
    h[SEG_BYTES_OFF..SEG_BYTES_OFF + 8].copy_from_slice(&segment_bytes.to_le_bytes());
    let crc = crc32fast::hash(&h[..SEG_CRC_OFF]);
    h[SEG_CRC_OFF..SEG_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment header; returns its sequence number.
pub fn check_segment_header(b: &[u8]) -> Result<u64, String> {
    if b.len() < SEG_HEADER_LEN {
        return Err(format!("file is {} bytes, shorter than a header", b.len()));
    }
    if b[SEG_MAGIC_OFF..SEG_MAGIC_OFF + 8] != SEGMENT_MAGIC {
        return Err("bad magic".into());
    }
    if crc32fast::hash(&b[..SEG_CRC_OFF]) != get_u32(b, SEG_CRC_OFF) {
        return Err("segment header crc mismatch".into());
    }
    let version = get_u32(b, SEG_VERSION_OFF);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported format version {version}"));
    }
    let block = get_u32(b, SEG_BLOCK_OFF) as u64;
    if block != BLOCK_BYTES {
        return Err(format!("block size {block}, expected {BLOCK_BYTES}"));
    }
    Ok(get_u64(b, SEG_SEQ_OFF))
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

/// Parses a segment file name back into its sequence number.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_round_trip() {
        let entries: Vec<Entry> = (5..9)
            .map(|i| Entry {
                term: 2,
                index: i,
                kind: if i == 6 {
                    EntryKind::ConfChange
                } else {
                    EntryKind::Normal
                },
                data: vec![i as u8; i as usize].into(),
            })
            .collect();
        let hs = HardState {
            term: 2,
            vote: 3,
            commit: 4,
        };
        let mut buf = Vec::new();
        encode_append(&mut buf, 77, Some(&hs), &entries);
        assert_eq!(buf.len(), append_record_len(&entries));
        for ((at, len), e) in append_data_offsets(&entries).zip(&entries) {
            assert_eq!(&buf[at..at + len], &e.data[..]);
        }
        seal_record(&mut buf, 9);
        let h = check_record(&buf).expect("valid");
        assert_eq!((h.kind, h.wsn), (KIND_APPEND, 9));
        let rec = decode_append(&Payload::copy_from_slice(&buf[REC_HEADER_LEN..])).unwrap();
        assert_eq!(rec.ready, 77);
        assert_eq!(rec.hard_state, Some(hs));
        assert_eq!(rec.entries, entries);
        // any single bit flip is caught by the crc or the header checks
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if let Some(h2) = check_record(&b) {
                panic!("bit {bit} flipped yet record checks: {h2:?}");
            }
        }
    }

    /// The encoder writes every byte (the staging buffer holds stale bytes), and
    /// `copy_sealed` gives the same bytes as a copy followed by `seal_record`, for
    /// records shorter and longer than one of its pieces.
    #[test]
    fn encode_over_stale_bytes_and_copy_sealed_match_seal_record() {
        for (n, len) in [(0usize, 0usize), (3, 5), (70, 256), (300, 1000)] {
            let entries: Vec<Entry> = (1..=n as u64)
                .map(|i| Entry {
                    term: 7,
                    index: i,
                    kind: EntryKind::Normal,
                    data: vec![i as u8; len].into(),
                })
                .collect();
            let hs = HardState {
                term: 7,
                vote: 2,
                commit: 1,
            };
            let mut clean = Vec::new();
            encode_append(&mut clean, 5, Some(&hs), &entries);
            let mut stale = vec![0xa5u8; clean.len()];
            encode_append_into(&mut stale, 5, Some(&hs), &entries);
            assert_eq!(stale, clean);
            let mut sealed = clean.clone();
            seal_record(&mut sealed, 42);
            let mut copied = vec![0x5au8; clean.len()];
            copy_sealed(&mut copied, &clean, 42);
            assert_eq!(copied, sealed);
            assert_eq!(check_record(&copied).map(|h| h.wsn), Some(42));
        }
    }

    #[test]
    fn snapshot_and_header_round_trip() {
        let meta = SnapshotMeta {
            index: 10,
            term: 3,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![],
            },
        };
        let hs = HardState {
            term: 3,
            vote: 1,
            commit: 10,
        };
        let mut buf = Vec::new();
        encode_snapshot(&mut buf, &hs, &meta);
        seal_record(&mut buf, 1);
        assert!(check_record(&buf).is_some());
        assert_eq!(decode_snapshot(&buf[REC_HEADER_LEN..]).unwrap(), (hs, meta));
        let h = encode_segment_header(42, 1 << 20);
        assert_eq!(check_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[SEG_SEQ_OFF] ^= 1;
        assert!(check_segment_header(&bad).is_err());
        assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
        assert_eq!(parse_segment_name("x.wal"), None);
    }

    #[test]
    fn oversized_length_is_not_a_record() {
        let mut buf = Vec::new();
        encode_append(&mut buf, 1, None, &[]);
        seal_record(&mut buf, 1);
        buf[REC_LEN_OFF..REC_LEN_OFF + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(check_record(&buf), None);
        assert_eq!(check_record(&[0u8; 100]), None);
        assert_eq!(check_record(&[0u8; 3]), None);
    }
}
