//! Recovery: replay every segment in order, check every record, find the end of the
//! log, and decide whether a bad record is a torn tail (truncate) or corruption
//! (refuse to open, naming file and offset).
//!
//! The rule (argued in the module docs of [`crate::wal`]): group-commit writes are
//! serial — write `w + 1` is issued only after write `w` and its fdatasync completed —
//! and each write carries its write sequence number (wsn) in every record. So at the
//! first bad record, inside write `c` (or where write `c` would start), the log ends
//! there if and only if no valid record of a later write (wsn > c) exists anywhere
//! after it. If one does, write `c` had been synced: the bad record is corruption.

use std::rc::Rc;

use super::disk::{Disk, DiskFile};
use super::format::*;
use super::log::{DiskLoc, LogIndex};
use super::WalError;
use crate::raft::types::Payload;

pub(super) struct SegInfo<F> {
    pub seq: u64,
    pub file: Rc<F>,
    /// Highest entry index written into this segment (0 if none).
    pub max_index: u64,
}

pub(super) struct Recovery<F> {
    /// Segments holding log records, in order; the last one is the active segment.
    pub segments: Vec<SegInfo<F>>,
    /// Prepared, unused segments after the active one.
    pub spares: Vec<SegInfo<F>>,
    pub write_pos: u64,
    pub next_wsn: u64,
    pub next_seq: u64,
    pub log: LogIndex,
    pub last_ready: u64,
    /// Segment of the latest Snapshot record, if any.
    pub snap_seq: Option<u64>,
    /// Where a torn or invalid tail was cut off, if it was.
    pub torn_tail: Option<(String, u64)>,
    /// A block to write (and sync) before appending: closes a write torn mid-way with a
    /// Pad record. (segment seq, offset, bytes).
    pub close_write: Option<(u64, u64, Vec<u8>)>,
    /// Files of incomplete spare segments (bad header, no records) to remove.
    pub remove: Vec<String>,
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

async fn read_all<F: DiskFile>(f: &F, what: &str) -> Result<Vec<u8>, WalError> {
    const CHUNK: usize = 128 << 10;
    let len = f
        .size()
        .await
        .map_err(|e| WalError::io("stat", what.to_string(), 0, e))?;
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let off = out.len() as u64;
        let n = CHUNK.min((len - off) as usize);
        let b = f
            .read_at(off, n)
            .await
            .map_err(|e| WalError::io("read", what.to_string(), off, e))?;
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// First block boundary at or after `from` holding a valid record with wsn >= `min_wsn`.
fn scan_later(bytes: &[u8], from: u64, min_wsn: u64) -> Option<u64> {
    let mut b = align_up(from);
    while b as usize + REC_HEADER_LEN <= bytes.len() {
        if let Some(h) = check_record(&bytes[b as usize..]) {
            if h.wsn >= min_wsn {
                return Some(b);
            }
        }
        b += BLOCK_BYTES;
    }
    None
}

struct Tail {
    file: String,
    pos: u64,
    min_wsn: u64,
}

fn corrupt(file: &str, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        file: file.to_string(),
        offset,
        reason: reason.into(),
    }
}

/// Replays the segments in `disk`. `Ok(None)`: there are none (a new log).
pub(super) async fn recover<D: Disk>(disk: &D) -> Result<Option<Recovery<D::File>>, WalError> {
    let names = disk
        .list()
        .await
        .map_err(|e| WalError::io("list", disk.describe(""), 0, e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();
    if seqs.is_empty() {
        return Ok(None);
    }
    for w in seqs.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(corrupt(
                &disk.describe(&segment_name(w[0] + 1)),
                0,
                format!("segment missing between {} and {}", w[0], w[1]),
            ));
        }
    }

    let mut log = LogIndex::new();
    log.base_known = seqs[0] == 0;
    let mut r = Recovery {
        segments: Vec::new(),
        spares: Vec::new(),
        write_pos: SEG_FIRST_RECORD,
        next_wsn: 1,
        next_seq: seqs[seqs.len() - 1] + 1,
        log,
        last_ready: 0,
        snap_seq: None,
        torn_tail: None,
        close_write: None,
        remove: Vec::new(),
    };
    // wsn the next write must carry / of the write being parsed.
    let mut expected: Option<u64> = None;
    let mut in_write: Option<u64> = None;
    let mut tail: Option<Tail> = None;
    let mut preloaded: Option<(D::File, Vec<u8>)> = None;

    for (i, &seq) in seqs.iter().enumerate() {
        let name = segment_name(seq);
        let path = disk.describe(&name);
        let (file, bytes) = match preloaded.take() {
            Some(p) => p,
            None => {
                let f = disk
                    .open(&name)
                    .await
                    .map_err(|e| WalError::io("open", path.clone(), 0, e))?;
                let b = read_all(&f, &path).await?;
                (f, b)
            }
        };
        let header = check_segment_header(&bytes).and_then(|s| {
            if s == seq {
                Ok(())
            } else {
                Err(format!("header names segment {s}"))
            }
        });

        if let Some(t) = &tail {
            // Past the end of the log: only unused spares may follow.
            let from = if header.is_ok() { SEG_FIRST_RECORD } else { 0 };
            if let Some(at) = scan_later(&bytes, from, t.min_wsn) {
                return Err(corrupt(
                    &t.file,
                    t.pos,
                    format!("invalid record, yet {path} holds a later write at offset {at}"),
                ));
            }
            if header.is_ok() {
                r.spares.push(SegInfo {
                    seq,
                    file: Rc::new(file),
                    max_index: 0,
                });
            } else {
                r.remove.push(name);
            }
            continue;
        }

        if let Err(reason) = header {
            // An incomplete spare (crash while preparing it) is the only innocent
            // reason; it never received a record.
            let min_wsn = expected.unwrap_or(1);
            if let Some(at) = scan_later(&bytes, 0, min_wsn) {
                return Err(corrupt(
                    &path,
                    0,
                    format!("bad segment header ({reason}) but a record at offset {at}"),
                ));
            }
            r.remove.push(name);
            tail = Some(Tail {
                file: path,
                pos: 0,
                min_wsn,
            });
            continue;
        }

        let mut seg = SegInfo {
            seq,
            file: Rc::new(file),
            max_index: 0,
        };
        let mut pos = SEG_FIRST_RECORD;
        loop {
            let h = if (pos as usize) < bytes.len() {
                check_record(&bytes[pos as usize..]).filter(|h| match in_write {
                    Some(w) => h.wsn == w,
                    None => expected.is_none_or(|x| h.wsn == x),
                })
            } else {
                None
            };
            let Some(h) = h else {
                // End of this segment's records.
                if in_write.is_none() {
                    if let Some(x) = expected {
                        if i + 1 < seqs.len() {
                            let next = segment_name(seqs[i + 1]);
                            let npath = disk.describe(&next);
                            let f = disk
                                .open(&next)
                                .await
                                .map_err(|e| WalError::io("open", npath.clone(), 0, e))?;
                            let nb = read_all(&f, &npath).await?;
                            let switched = check_segment_header(&nb) == Ok(seqs[i + 1])
                                && nb.len() > SEG_FIRST_RECORD as usize
                                && check_record(&nb[SEG_FIRST_RECORD as usize..])
                                    .is_some_and(|h| h.wsn == x);
                            preloaded = Some((f, nb));
                            if switched {
                                if let Some(at) = scan_later(&bytes, pos, x) {
                                    return Err(corrupt(
                                        &path,
                                        at,
                                        "stray record from a later write after the segment's end",
                                    ));
                                }
                                break;
                            }
                        }
                    }
                }
                let min_wsn = in_write.or(expected).map_or(2, |w| w + 1);
                if let Some(at) = scan_later(&bytes, pos + 1, min_wsn) {
                    return Err(corrupt(
                        &path,
                        pos,
                        format!("invalid record, yet a later write follows at offset {at}"),
                    ));
                }
                let tail_bytes = &bytes[(pos as usize).min(bytes.len())..];
                let clean = in_write.is_none()
                    && tail_bytes[..tail_bytes.len().min(BLOCK_BYTES as usize)]
                        .iter()
                        .all(|&b| b == 0);
                if !clean {
                    r.torn_tail = Some((path.clone(), pos));
                }
                if let Some(w) = in_write {
                    // Close the torn write with a Pad so later writes follow a whole one.
                    let bs = pos - pos % BLOCK_BYTES;
                    let mut end = align_up(pos);
                    if end - pos < REC_HEADER_LEN as u64 {
                        end += BLOCK_BYTES;
                    }
                    if end as usize > bytes.len() {
                        return Err(corrupt(&path, pos, "torn write runs past the segment end"));
                    }
                    let mut block = bytes[bs as usize..end as usize].to_vec();
                    block[(pos - bs) as usize..].fill(0);
                    write_pad(&mut block[(pos - bs) as usize..], w);
                    r.close_write = Some((seq, bs, block));
                    r.write_pos = end;
                    r.next_wsn = w + 1;
                } else {
                    r.write_pos = pos;
                    r.next_wsn = expected.unwrap_or(1);
                }
                tail = Some(Tail {
                    file: path.clone(),
                    pos,
                    min_wsn,
                });
                break;
            };
            if in_write.is_none() {
                in_write = Some(h.wsn);
                expected = Some(h.wsn);
            }
            let rec_len = REC_HEADER_LEN + h.payload_len;
            let payload = &bytes[pos as usize + REC_HEADER_LEN..pos as usize + rec_len];
            match h.kind {
                KIND_APPEND => {
                    // One copy of the payload; the cached entries share it.
                    let a = decode_append(&Payload::copy_from_slice(payload))
                        .map_err(|m| corrupt(&path, pos, m))?;
                    r.log
                        .check_append(&a.entries)
                        .map_err(|m| corrupt(&path, pos, m))?;
                    r.log.append(
                        &a.entries,
                        Some(DiskLoc {
                            seq,
                            offset: pos,
                            len: rec_len as u32,
                        }),
                    );
                    if let Some(hs) = a.hard_state {
                        r.log.hard_state = hs;
                    }
                    if let Some(e) = a.entries.last() {
                        seg.max_index = seg.max_index.max(e.index);
                    }
                    r.last_ready = r.last_ready.max(a.ready);
                }
                KIND_SNAPSHOT => {
                    let (hs, meta) =
                        decode_snapshot(payload).map_err(|m| corrupt(&path, pos, m))?;
                    r.log
                        .apply_snapshot(hs, &meta)
                        .map_err(|m| corrupt(&path, pos, m))?;
                    r.snap_seq = Some(seq);
                }
                KIND_PAD => {
                    if !(pos + rec_len as u64).is_multiple_of(BLOCK_BYTES) {
                        return Err(corrupt(&path, pos, "pad record does not end on a block"));
                    }
                    let w = in_write.take().expect("pad outside a write");
                    expected = Some(w + 1);
                }
                k => unreachable!("check_record let kind {k} through"),
            }
            pos += rec_len as u64;
        }
        r.segments.push(seg);
    }

    // Removed incomplete spares are the highest numbers; reuse theirs so the sequence
    // stays gapless.
    if let Some(low) = r.remove.iter().filter_map(|n| parse_segment_name(n)).min() {
        if let Some(s) = r.spares.iter().find(|s| s.seq > low) {
            return Err(corrupt(
                &disk.describe(&segment_name(low)),
                0,
                format!(
                    "incomplete segment {low} followed by prepared segment {}",
                    s.seq
                ),
            ));
        }
        r.next_seq = low;
    }
    match r.segments.first() {
        Some(first) => r.log.finish_replay().map_err(|m| {
            corrupt(
                &disk.describe(&segment_name(first.seq)),
                SEG_FIRST_RECORD,
                m,
            )
        })?,
        None => r.log.base_known = true, // nothing was ever written
    }
    // Entries the replayed snapshot records dropped: nothing else runs yet.
    r.log.reap(usize::MAX);
    Ok(Some(r))
}
