//! WAL tests: a reference model and crash images on the simulated disk, torn tails and
//! bit flips, fail injection, reads through `Storage`, and real SIGKILL crashes of a
//! child process writing a real O_DIRECT WAL.

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use futures_lite::future::block_on;

use super::format::*;
use super::sim::{Rng, SimDisk};
use super::*;
use crate::raft::types::{ConfState, EntryKind};

/// `COREKV_WAL_SEEDS=n` runs the randomized tests n times longer (soak runs).
fn seed_factor() -> u64 {
    std::env::var("COREKV_WAL_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn small_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 16 * BLOCK_BYTES,
        group_commit_bytes_max: 2 * BLOCK_BYTES,
        cache_bytes_max: 2048,
        fetch_bytes_max: 4096,
        ..WalOptions::default()
    }
}

/// The reference model: what the log should hold.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    hs: HardState,
    snap: SnapshotMeta,
    entries: Vec<Entry>,
}

impl Model {
    fn last(&self) -> u64 {
        self.snap.index + self.entries.len() as u64
    }
    fn term(&self, i: u64) -> Option<u64> {
        if i == self.snap.index {
            return Some(self.snap.term);
        }
        if i < self.snap.index || i > self.last() {
            return None;
        }
        Some(self.entries[(i - self.snap.index - 1) as usize].term)
    }
    fn append(&mut self, hs: Option<HardState>, ents: &[Entry]) {
        if let Some(e0) = ents.first() {
            self.entries
                .truncate((e0.index - self.snap.index - 1) as usize);
            self.entries.extend_from_slice(ents);
        }
        if let Some(hs) = hs {
            self.hs = hs;
        }
    }
    fn compact(&mut self, meta: &SnapshotMeta) {
        if self.term(meta.index) == Some(meta.term) {
            self.entries
                .drain(..(meta.index - self.snap.index) as usize);
        } else {
            self.entries.clear();
        }
        self.snap = meta.clone();
    }
    fn of(r: &Recovered) -> Model {
        Model {
            hs: r.hard_state,
            snap: r.snapshot.clone(),
            entries: r.entries.clone(),
        }
    }
}

enum Op {
    Append(Option<HardState>, Vec<Entry>),
    Compact(SnapshotMeta),
    Flush,
}

fn random_op(rng: &mut Rng, m: &Model) -> Op {
    let roll = rng.below(100);
    if roll < 8 && m.hs.commit > m.snap.index {
        let index = m.snap.index + 1 + rng.below(m.hs.commit - m.snap.index);
        return Op::Compact(SnapshotMeta {
            index,
            term: m.term(index).unwrap(),
            conf_state: ConfState {
                voters: (1..=rng.below(4) + 1).collect(),
                learners: vec![],
                voters_outgoing: vec![],
            },
        });
    }
    if roll < 10 {
        // A snapshot installed from a leader, beyond our log.
        let index = m.last() + 1 + rng.below(5);
        return Op::Compact(SnapshotMeta {
            index,
            term: m.hs.term.max(m.term(m.last()).unwrap_or(0)) + 1,
            conf_state: ConfState::default(),
        });
    }
    if roll < 35 {
        return Op::Flush;
    }
    let floor = m.hs.commit.max(m.snap.index);
    let last = m.last();
    let first = if last > floor && rng.chance(15) {
        floor + 1 + rng.below(last - floor)
    } else {
        last + 1
    };
    let mut term = m.term(first - 1).unwrap().max(m.hs.term);
    if rng.chance(10) {
        term += 1;
    }
    let n = rng.below(5);
    let ents: Vec<Entry> = (0..n)
        .map(|k| Entry {
            term,
            index: first + k,
            kind: if rng.chance(5) {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data: (0..rng.below(600)).map(|_| rng.next_u64() as u8).collect(),
        })
        .collect();
    let new_last = if n > 0 { first + n - 1 } else { last };
    // With no entries: usually a hard state, sometimes nothing at all (an empty Ready,
    // which has no record but is part of a group).
    let hs = if n == 0 {
        !rng.chance(20)
    } else {
        rng.chance(50)
    };
    let hs = hs.then(|| HardState {
        term: term.max(m.hs.term),
        vote: rng.below(4),
        commit: (m.hs.commit + rng.below(3)).min(new_last).max(m.hs.commit),
    });
    Op::Append(hs, ents)
}

/// Runs `steps` random operations on `wal` starting from `model`. Returns the model
/// after every operation (history[0] = start) and how many of them are durable.
fn run_random(
    wal: &Wal<SimDisk>,
    rng: &mut Rng,
    model: &Model,
    steps: usize,
) -> (Vec<Model>, usize, Option<WalError>) {
    let mut history = vec![model.clone()];
    let mut durable = 0;
    let mut m = model.clone();
    for _ in 0..steps {
        match random_op(rng, &m) {
            Op::Append(hs, ents) => {
                let ready = wal.last_ready() + rng.below(2);
                if let Err(e) = wal.append(ready, hs, &ents) {
                    return (history, durable, Some(e));
                }
                m.append(hs, &ents);
                history.push(m.clone());
            }
            Op::Compact(meta) => {
                m.compact(&meta);
                history.push(m.clone());
                match block_on(wal.compact(meta)) {
                    Ok(()) => durable = history.len() - 1,
                    Err(e) => return (history, durable, Some(e)),
                }
            }
            Op::Flush => match block_on(wal.flush()) {
                Ok(_) => durable = history.len() - 1,
                Err(e) => return (history, durable, Some(e)),
            },
        }
    }
    (history, durable, None)
}

thread_local! {
    /// How often recovery returned more than what was reported durable (a test that
    /// never sees this does not exercise torn writes).
    static RECOVERED_BEYOND_DURABLE: Cell<u64> = const { Cell::new(0) };
}

/// The recovered state must be one of history[durable..].
fn check_recovered(r: &Recovered, history: &[Model], durable: usize, ctx: &str) -> Model {
    let got = Model::of(r);
    if let Some(k) = history[durable..].iter().rposition(|h| *h == got) {
        RECOVERED_BEYOND_DURABLE.with(|c| c.set(c.get() + (k > 0) as u64));
        return got;
    }
    let best = history
        .iter()
        .rposition(|h| h.entries.len() == got.entries.len());
    panic!(
        "{ctx}: recovered state is not a durable prefix.\n got hs {:?} snap {:?} last {}\n \
         durable {durable} of {} states; a same-length state: {best:?}",
        got.hs,
        got.snap.index,
        got.last(),
        history.len() - 1
    );
}

fn check_storage(wal: &Wal<SimDisk>, m: &Model) {
    assert_eq!(wal.first_index().unwrap(), m.snap.index + 1);
    assert_eq!(wal.last_index().unwrap(), m.last());
    assert_eq!(wal.term(m.snap.index).unwrap(), m.snap.term);
    let lo = m.snap.index + 1;
    let hi = m.last() + 1;
    let got = loop {
        match wal.entries(lo, hi, u64::MAX) {
            Ok(v) => break v,
            Err(StorageError::TemporarilyUnavailable) => block_on(wal.fetch_pending()).unwrap(),
            Err(e) => panic!("entries: {e}"),
        }
    };
    // fetch_pending is bounded; keep fetching until the whole range was served.
    let mut all = got;
    while (all.len() as u64) < hi - lo {
        let from = lo + all.len() as u64;
        match wal.entries(from, hi, u64::MAX) {
            Ok(v) => all.extend(v),
            Err(StorageError::TemporarilyUnavailable) => block_on(wal.fetch_pending()).unwrap(),
            Err(e) => panic!("entries: {e}"),
        }
    }
    assert_eq!(all, m.entries, "Storage::entries differs from the model");
}

#[test]
fn crash_images_at_random_points_match_model() {
    let (mut torn, mut recycled) = (0, 0);
    for seed in 0..400 * seed_factor() {
        let mut rng = Rng::new(seed);
        let mut disk = SimDisk::new();
        let (mut wal, r) = block_on(Wal::open_on(disk.clone(), small_opts())).unwrap();
        let mut model = Model::of(&r);
        for generation in 0..4 {
            let steps = 20 + rng.below(80) as usize;
            let (mut history, durable, err) = run_random(&wal, &mut rng, &model, steps);
            assert!(err.is_none(), "seed {seed}: {err:?}");
            if generation == 0 {
                check_storage(&wal, history.last().unwrap());
            }
            if rng.chance(80) {
                // Crash with a group-commit write issued but its fdatasync not done.
                let mut m = history.last().unwrap().clone();
                for _ in 0..1 + rng.below(12) {
                    if let Op::Append(hs, ents) = random_op(&mut rng, &m) {
                        wal.append(wal.last_ready() + 1, hs, &ents).unwrap();
                        m.append(hs, &ents);
                        history.push(m.clone());
                    }
                }
                let mut flush = Box::pin(wal.flush());
                let _ = block_on(futures_lite::future::poll_once(&mut flush));
            }
            recycled += wal.stats().segments_recycled;
            drop(wal);
            disk = disk.crash(&mut rng, 50);
            let (w, r) = block_on(Wal::open_on(disk.clone(), small_opts())).unwrap_or_else(|e| {
                panic!("seed {seed} gen {generation}: reopen: {e}\n{}", dump(&disk))
            });
            model = check_recovered(
                &r,
                &history,
                durable,
                &format!("seed {seed} gen {generation}"),
            );
            check_storage(&w, &model);
            torn += r.torn_tail.is_some() as u64;
            wal = w;
        }
    }
    // The crashes really tore writes and kept some undurable appends.
    assert!(torn > 10, "only {torn} torn tails");
    assert!(recycled > 10, "only {recycled} segments recycled");
    assert!(RECOVERED_BEYOND_DURABLE.with(|c| c.get()) > 10);
}

#[test]
fn crash_at_every_sync_boundary() {
    for seed in 100..100 + 40 * seed_factor() {
        // Count the syncs of a fault-free run.
        let total = {
            let disk = SimDisk::new();
            let (wal, r) = block_on(Wal::open_on(disk.clone(), small_opts())).unwrap();
            let mut rng = Rng::new(seed);
            let (_, _, err) = run_random(&wal, &mut rng, &Model::of(&r), 150);
            assert!(err.is_none());
            disk.syncs()
        };
        assert!(total > 10, "too few syncs ({total}) to be interesting");
        for s in 0..total {
            let disk = SimDisk::new();
            disk.fail_sync_after(s);
            let mut rng = Rng::new(seed);
            let opened = block_on(Wal::open_on(disk.clone(), small_opts()));
            let (history, durable) = match opened {
                Ok((wal, r)) => {
                    let (h, d, _) = run_random(&wal, &mut rng, &Model::of(&r), 150);
                    (h, d)
                }
                Err(_) => (vec![Model::default()], 0),
            };
            let mut crng = Rng::new(seed * 1000 + s);
            let image = disk.crash(&mut crng, 50);
            let (_, r) = block_on(Wal::open_on(image.clone(), small_opts()))
                .unwrap_or_else(|e| panic!("seed {seed} crash at sync {s}: {e}\n{}", dump(&image)));
            check_recovered(&r, &history, durable, &format!("seed {seed} sync {s}"));
        }
    }
}

/// Appends `n` flushes worth of entries; returns the disk, the model history and the
/// byte range of the last write in the active segment.
fn build_log(n: usize, seed: u64) -> (SimDisk, Vec<Model>, String, u64, u64) {
    let disk = SimDisk::new();
    let opts = WalOptions {
        segment_bytes: 64 * BLOCK_BYTES,
        ..small_opts()
    };
    let (wal, _) = block_on(Wal::open_on(disk.clone(), opts)).unwrap();
    let mut rng = Rng::new(seed);
    let mut m = Model::default();
    let mut history = vec![m.clone()];
    let mut last_write = (0, 0);
    for i in 0..n {
        let before = wal.stats().bytes_written;
        for _ in 0..3 {
            let first = m.last() + 1;
            let ents: Vec<Entry> = (0..3)
                .map(|k| Entry {
                    term: 1,
                    index: first + k,
                    kind: EntryKind::Normal,
                    data: vec![rng.next_u64() as u8; 100 + i * 7].into(),
                })
                .collect();
            wal.append(wal.last_ready() + 1, None, &ents).unwrap();
            m.append(None, &ents);
            history.push(m.clone());
        }
        let pos = wal.inner.st.borrow().write_pos;
        block_on(wal.flush()).unwrap();
        let after = wal.stats().bytes_written;
        last_write = (pos, pos + (after - before));
    }
    let name = segment_name(wal.inner.st.borrow().active);
    (disk, history, name, last_write.0, last_write.1)
}

fn opts64() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * BLOCK_BYTES,
        ..small_opts()
    }
}

#[test]
fn torn_tail_at_every_byte_offset_of_last_block() {
    let (disk, history, name, start, end) = build_log(6, 7);
    let before_last = history.len() - 1 - 3;
    let last_block = end - BLOCK_BYTES;
    let mut torn_seen = 0;
    for cut in (start.max(last_block)..end).chain(start..start + 64) {
        let mut rng = Rng::new(cut);
        let img = disk.crash(&mut rng, 100);
        img.corrupt(&name, cut as usize, |b| b[..(end - cut) as usize].fill(0));
        let (_, r) =
            block_on(Wal::open_on(img, opts64())).unwrap_or_else(|e| panic!("torn at {cut}: {e}"));
        check_recovered(&r, &history, before_last, &format!("cut {cut}"));
        torn_seen += r.torn_tail.is_some() as u32;
    }
    // Coverage mark: the torn-tail branch really ran.
    assert!(torn_seen > 0);
}

#[test]
fn bit_flip_in_tail_truncates_and_in_middle_refuses() {
    let (disk, history, name, start, end) = build_log(8, 9);
    let before_last = history.len() - 1 - 3;
    let mut rng = Rng::new(1);
    for _ in 0..200 {
        let at = start + rng.below(end - start);
        let bit = rng.below(8);
        let img = disk.crash(&mut rng, 100);
        img.corrupt(&name, at as usize, |b| b[0] ^= 1 << bit);
        let (_, r) = block_on(Wal::open_on(img, opts64())).unwrap();
        check_recovered(&r, &history, before_last, &format!("tail flip at {at}"));
        let (f, off) = r.torn_tail.expect("a flipped tail is reported");
        assert!(f.ends_with(&name) && off <= at);
    }
    for _ in 0..200 {
        let at = SEG_FIRST_RECORD + rng.below(start - SEG_FIRST_RECORD);
        let bit = rng.below(8);
        let img = disk.crash(&mut rng, 100);
        img.corrupt(&name, at as usize, |b| b[0] ^= 1 << bit);
        match block_on(Wal::open_on(img, opts64())) {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert!(file.ends_with(&name), "{file}");
                assert!(offset <= at, "error offset {offset} after the flip at {at}");
            }
            Err(e) => panic!("mid flip at {at}: unexpected {e}"),
            Ok(_) => panic!("mid flip at {at}: opened silently"),
        }
    }
}

/// Rewrites the record at `off` of `name` with `f` applied to its payload and a fresh
/// crc: a well-formed record with bad content.
fn forge(img: &SimDisk, name: &str, off: usize, f: impl FnOnce(&mut [u8])) {
    img.corrupt(name, off, |b| {
        let len = get_u32(b, REC_LEN_OFF) as usize;
        let wsn = get_u64(b, REC_WSN_OFF);
        f(&mut b[REC_HEADER_LEN..REC_HEADER_LEN + len]);
        seal_record(&mut b[..REC_HEADER_LEN + len], wsn);
    });
}

#[test]
fn bad_records_mid_log_are_named_errors() {
    let (disk, _, name, _, _) = build_log(4, 3);
    let first = SEG_FIRST_RECORD as usize;
    let second =
        first + get_u32(&disk.file_bytes(&name).unwrap()[first..], 0) as usize + REC_HEADER_LEN;
    type Damage<'a> = Box<dyn Fn(&SimDisk) + 'a>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "oversized length",
            Box::new(|img: &SimDisk| {
                img.corrupt(&name, second, |b| {
                    b[..4].copy_from_slice(&u32::MAX.to_le_bytes())
                })
            }),
        ),
        (
            "zeroed sector",
            Box::new(|img: &SimDisk| img.corrupt(&name, first + 512, |b| b[..512].fill(0))),
        ),
        (
            "index gap",
            Box::new(|img: &SimDisk| {
                forge(img, &name, second, |p| {
                    // shift all three entries of the second record up by 5
                    let mut off = APP_ENTRIES_OFF;
                    for _ in 0..3 {
                        let i = get_u64(p, off + ENT_INDEX_OFF) + 5;
                        p[off + ENT_INDEX_OFF..off + ENT_INDEX_OFF + 8]
                            .copy_from_slice(&i.to_le_bytes());
                        off += ENT_HEADER_LEN + get_u32(p, off + ENT_DATA_LEN_OFF) as usize;
                    }
                })
            }),
        ),
        (
            "index regression below commit",
            Box::new(|img: &SimDisk| {
                // First record claims commit 3; the second then rewrites index 2.
                forge(img, &name, first, |p| {
                    p[APP_FLAGS_OFF] = APP_FLAG_HAS_HS;
                    p[APP_HS_OFF + 16..APP_HS_OFF + 24].copy_from_slice(&3u64.to_le_bytes());
                });
                forge(img, &name, second, |p| {
                    let mut off = APP_ENTRIES_OFF;
                    for k in 0..3u64 {
                        p[off + ENT_INDEX_OFF..off + ENT_INDEX_OFF + 8]
                            .copy_from_slice(&(2 + k).to_le_bytes());
                        off += ENT_HEADER_LEN + get_u32(p, off + ENT_DATA_LEN_OFF) as usize;
                    }
                });
            }),
        ),
        (
            "bad crc",
            Box::new(|img: &SimDisk| img.corrupt(&name, second + 30, |b| b[0] ^= 0x40)),
        ),
        (
            "segment header",
            Box::new(|img: &SimDisk| img.corrupt(&name, SEG_SEQ_OFF, |b| b[0] ^= 1)),
        ),
    ];
    for (what, damage) in cases {
        let mut rng = Rng::new(0);
        let img = disk.crash(&mut rng, 100);
        damage(&img);
        match block_on(Wal::open_on(img, opts64())) {
            Err(WalError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert!(file.ends_with(&name), "{what}: {file}");
                eprintln!("{what}: refused at {offset}: {reason}");
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(_) => panic!("{what}: opened silently"),
        }
    }
}

#[test]
fn failed_fdatasync_poisons_the_log() {
    let disk = SimDisk::new();
    let (wal, _) = block_on(Wal::open_on(disk.clone(), small_opts())).unwrap();
    let e = |i: u64| Entry {
        term: 1,
        index: i,
        kind: EntryKind::Normal,
        data: vec![i as u8; 10].into(),
    };
    wal.append(1, None, &[e(1)]).unwrap();
    block_on(wal.wait_durable(1)).unwrap();
    disk.fail_sync_after(0);
    wal.append(2, None, &[e(2)]).unwrap();
    match block_on(wal.wait_durable(2)) {
        Err(WalError::Io { op, .. }) => assert_eq!(op, "fdatasync"),
        other => panic!("expected the sync error, got {other:?}"),
    }
    assert_eq!(wal.durable_ready(), 1);
    // Even once the disk "works" again, the log stays poisoned (fsyncgate).
    disk.fail_sync_after(u64::MAX);
    assert!(matches!(
        wal.append(3, None, &[e(3)]),
        Err(WalError::Poisoned(_))
    ));
    assert!(matches!(block_on(wal.flush()), Err(WalError::Poisoned(_))));
    assert!(matches!(
        block_on(wal.wait_durable(2)),
        Err(WalError::Poisoned(_))
    ));
    // Reopening recovers what is really on disk.
    let (wal2, r) = block_on(Wal::open_on(disk.crash(&mut Rng::new(5), 0), small_opts())).unwrap();
    assert_eq!(r.entries, vec![e(1)]);
    wal2.append(2, None, &[e(2)]).unwrap();
    block_on(wal2.wait_durable(2)).unwrap();

    // A failed write poisons as well.
    disk.fail_write_after(0);
    let d2 = SimDisk::new();
    let (wal3, _) = block_on(Wal::open_on(d2.clone(), small_opts())).unwrap();
    d2.fail_write_after(0);
    wal3.append(1, None, &[e(1)]).unwrap();
    assert!(matches!(
        block_on(wal3.flush()),
        Err(WalError::Io { op: "write", .. })
    ));
    assert!(matches!(
        wal3.append(2, None, &[]),
        Err(WalError::Poisoned(_))
    ));
}

#[test]
fn compaction_removes_segments_and_survives_reopen() {
    let disk = SimDisk::new();
    // Keep one compacted segment for recycling, remove the others.
    let opts = WalOptions {
        recycle_segments: 1,
        ..small_opts()
    };
    let (wal, _) = block_on(Wal::open_on(disk.clone(), opts.clone())).unwrap();
    let mut m = Model::default();
    for i in 1..=400u64 {
        let e = Entry {
            term: 1 + i / 100,
            index: i,
            kind: EntryKind::Normal,
            data: vec![i as u8; 200].into(),
        };
        let hs = HardState {
            term: e.term,
            vote: 1,
            commit: i.saturating_sub(3),
        };
        wal.append(i, Some(hs), std::slice::from_ref(&e)).unwrap();
        m.append(Some(hs), &[e]);
        if i % 7 == 0 {
            block_on(wal.wait_durable(i)).unwrap();
        }
    }
    block_on(wal.flush()).unwrap();
    let segs_before = disk.names().len();
    assert!(
        segs_before > 2,
        "expected several segments, got {segs_before}"
    );
    let meta = SnapshotMeta {
        index: 350,
        term: m.term(350).unwrap(),
        conf_state: ConfState {
            voters: vec![1, 2, 3],
            ..ConfState::default()
        },
    };
    block_on(wal.compact(meta.clone())).unwrap();
    m.compact(&meta);
    let s = wal.stats();
    assert!(s.segments_removed > 0, "{s:?}");
    assert!(disk.names().len() < segs_before);
    assert_eq!(wal.entries(10, 20, u64::MAX), Err(StorageError::Compacted));
    check_storage(&wal, &m);
    let (wal2, r) = block_on(Wal::open_on(disk.clone(), opts.clone())).unwrap();
    assert_eq!(Model::of(&r), m);
    check_storage(&wal2, &m);
    // Installing a snapshot beyond the log drops everything.
    let far = SnapshotMeta {
        index: 1000,
        term: 9,
        conf_state: ConfState::default(),
    };
    block_on(wal2.compact(far.clone())).unwrap();
    m.compact(&far);
    assert_eq!(wal2.last_index().unwrap(), 1000);
    let e = Entry {
        term: 9,
        index: 1001,
        kind: EntryKind::Normal,
        data: b"after".to_vec().into(),
    };
    wal2.append(500, None, std::slice::from_ref(&e)).unwrap();
    m.append(None, &[e]);
    block_on(wal2.flush()).unwrap();
    let (_, r) = block_on(Wal::open_on(disk, opts.clone())).unwrap();
    assert_eq!(Model::of(&r), m);
    // An older snapshot is refused.
    assert!(matches!(
        block_on(wal2.compact(meta)),
        Err(WalError::Invalid(_))
    ));
}

#[test]
fn storage_reads_below_cache_are_fetched() {
    let disk = SimDisk::new();
    let (wal, _) = block_on(Wal::open_on(disk, small_opts())).unwrap();
    for i in 1..=100u64 {
        let e = Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: vec![i as u8; 100].into(),
        };
        wal.append(i, None, &[e]).unwrap();
    }
    // Nothing is evicted before it is on disk.
    assert!(wal.entries(1, 101, u64::MAX).is_ok());
    block_on(wal.flush()).unwrap();
    assert_eq!(
        wal.entries(1, 5, u64::MAX),
        Err(StorageError::TemporarilyUnavailable)
    );
    block_on(wal.fetch_pending()).unwrap();
    let got = wal.entries(1, 5, u64::MAX).unwrap();
    assert_eq!(
        got.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(got[2].data, vec![3u8; 100]);
    // max_bytes limits, but at least one entry comes back.
    assert_eq!(wal.entries(1, 5, 1).unwrap().len(), 1);
    assert_eq!(wal.entries(1, 5, 250).unwrap().len(), 2);
    assert_eq!(wal.term(50), Ok(1));
    assert_eq!(
        wal.entries(90, 102, u64::MAX),
        Err(StorageError::Unavailable)
    );
}

/// Raft's start reads the whole retained log at once (to replay membership changes),
/// synchronously: a reopened log bigger than the cache must serve that read, also after
/// an append of only a hard state (as `Group::open` does); the cache is bounded again
/// from the first append of entries on.
#[test]
fn a_reopened_log_bigger_than_the_cache_serves_raft_start() {
    let disk = SimDisk::new();
    let (wal, _) = block_on(Wal::open_on(disk.clone(), small_opts())).unwrap();
    let entry = |i: u64| Entry {
        term: 1,
        index: i,
        kind: EntryKind::Normal,
        data: vec![i as u8; 100].into(),
    };
    for i in 1..=100u64 {
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: i - 1,
        };
        wal.append(i, Some(hs), &[entry(i)]).unwrap();
    }
    block_on(wal.flush()).unwrap();
    drop(wal);
    let (wal, r) = block_on(Wal::open_on(disk, small_opts())).unwrap();
    assert_eq!(r.entries.len(), 100);
    let hs = HardState {
        term: 1,
        vote: 1,
        commit: 100,
    };
    wal.append(r.last_ready, Some(hs), &[]).unwrap();
    block_on(wal.flush()).unwrap();
    let all = wal.entries(1, 101, u64::MAX).unwrap();
    assert_eq!(all, (1..=100).map(entry).collect::<Vec<_>>());
    let node = crate::raft::RawNode::new(crate::raft::Config::new(1), wal.clone()).unwrap();
    assert_eq!(node.status().last_index, 100);
    drop(node);
    // The first append of entries ends it: the cache is bounded again.
    wal.append(r.last_ready + 1, None, &[entry(101)]).unwrap();
    block_on(wal.flush()).unwrap();
    assert_eq!(
        wal.entries(1, 5, u64::MAX),
        Err(StorageError::TemporarilyUnavailable)
    );
}

#[test]
fn group_commit_batches_concurrent_waiters() {
    // Many waiters, one executor: the appends made while a write is in flight leave
    // together in the next write.
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    ex.run(async {
        let disk = SimDisk::new();
        let opts = WalOptions {
            segment_bytes: 1 << 20,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open_on(disk, opts).await.unwrap();
        let next = Rc::new(Cell::new(1u64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (wal, next) = (wal.clone(), next.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..20 {
                    let i = next.get();
                    next.set(i + 1);
                    let e = Entry {
                        term: 1,
                        index: i,
                        kind: EntryKind::Normal,
                        data: vec![0; 256].into(),
                    };
                    wal.append(i, None, &[e]).unwrap();
                    wal.wait_durable(i).await.unwrap();
                    glommio::yield_if_needed().await;
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let s = wal.stats();
        assert_eq!(wal.durable_ready(), 64 * 20);
        assert!(s.flushes < s.appends / 4, "no batching: {s:?}");
    });
}

/// A compaction whose Snapshot record is appended while a Ready's group is in flight
/// borrows that Ready's number, but must not hold its durability back: the Ready is
/// acknowledged by its own flush, and the record leaves with the next one.
#[test]
fn a_snapshot_record_does_not_hold_back_the_ready_in_flight() {
    block_on(async {
        let (wal, _) = Wal::open_on(SimDisk::new(), small_opts()).await.unwrap();
        let ent = |i: u64| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: vec![i as u8; 40].into(),
        };
        for i in 1..=3 {
            wal.append(i, None, &[ent(i)]).unwrap();
            wal.wait_durable(i).await.unwrap();
        }
        wal.append(4, None, &[ent(4)]).unwrap();
        let f0 = wal.stats().flushes;
        let waiter = async {
            wal.wait_durable(4).await.unwrap();
            wal.stats().flushes - f0
        };
        let compactor = async {
            // The waiter claims and yields, then starts its flush, whose sync yields
            // once: after one yield of ours it is in flight.
            YieldOnce(false).await;
            assert!(
                wal.inner.flushing.get(),
                "the flush of Ready 4 is in flight"
            );
            let meta = SnapshotMeta {
                index: 2,
                term: 1,
                conf_state: ConfState::default(),
            };
            wal.compact(meta).await.unwrap();
        };
        let (flushes_for_ready_4, ()) = futures_lite::future::zip(waiter, compactor).await;
        assert_eq!(
            flushes_for_ready_4, 1,
            "Ready 4 waited for the Snapshot record"
        );
        assert_eq!(wal.durable_ready(), 4);
        assert_eq!(wal.first_index().unwrap(), 3);
    });
}

/// A waiter that claimed the next flush and is cancelled during its yield must not
/// leave the waiters that saw its claim asleep: dropping the claim wakes them, and one
/// of them flushes.
#[test]
fn cancelled_flush_claim_wakes_the_other_waiters() {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap();
    ex.run(async {
        let (wal, _) = Wal::open_on(SimDisk::new(), small_opts()).await.unwrap();
        let e = |i| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: vec![1; 16].into(),
        };
        wal.append(1, None, &[e(1)]).unwrap();
        let mut first = Box::pin(wal.wait_durable(1));
        assert!(futures_lite::future::poll_once(first.as_mut())
            .await
            .is_none());
        assert!(
            wal.inner.flush_due.get(),
            "the first waiter claimed the flush"
        );
        wal.append(2, None, &[e(2)]).unwrap();
        let done = Rc::new(Cell::new(false));
        let (w, d) = (wal.clone(), done.clone());
        let second = glommio::spawn_local(async move {
            w.wait_durable(2).await.unwrap();
            d.set(true);
        });
        for _ in 0..3 {
            glommio::yield_if_needed().await;
            futures_lite::future::yield_now().await;
        }
        assert!(
            !done.get(),
            "the second waiter listens while the flush is claimed"
        );
        drop(first);
        assert!(!wal.inner.flush_due.get());
        for _ in 0..100 {
            if done.get() {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        assert!(done.get(), "the second waiter was left asleep");
        second.await;
        assert_eq!(wal.durable_ready(), 2);
        assert_eq!(wal.stats().flushes, 1);
    });
}

/// The staging buffer that holds the encoded pending records (see `Staging`): a record
/// bigger than the buffer grows it; a group cut by `group_commit_bytes_max` leaves the
/// rest at the front; appends (one replacing entries of the group being written) made
/// while a write is in flight land in the emptied buffer and are readable at once; a
/// group that is all of the buffer is written from it (sealed in place). The log then
/// reads back and reopens as the model.
#[test]
fn staging_buffer_edges_keep_the_log_intact() {
    let opts = WalOptions {
        segment_bytes: 64 * BLOCK_BYTES,
        group_commit_bytes_max: 2 * BLOCK_BYTES,
        cache_bytes_max: 1 << 20,
        ..WalOptions::default()
    };
    let ent = |i: u64, term: u64, len: usize| Entry {
        term,
        index: i,
        kind: EntryKind::Normal,
        data: (0..len).map(|k| (i as usize * 7 + k) as u8).collect(),
    };
    let disk = SimDisk::new();
    let (wal, _) = block_on(Wal::open_on(disk.clone(), opts.clone())).unwrap();
    let staged = |wal: &Wal<SimDisk>| {
        let st = wal.inner.st.borrow();
        assert_eq!(st.staging.used as u64, st.pending_bytes);
        (st.staging.used, st.staging.cap())
    };
    let mut m = Model::default();
    let mut ready = 0;
    let mut append = |wal: &Wal<SimDisk>, m: &mut Model, hs: Option<HardState>, e: Vec<Entry>| {
        ready += 1;
        wal.append(ready, hs, &e).unwrap();
        m.append(hs, &e);
        ready
    };
    // Small records, then one bigger than the buffer and than a group: it grows the
    // buffer and later goes alone.
    for i in 1..=3 {
        append(&wal, &mut m, None, vec![ent(i, 1, 500)]);
        // A Ready with nothing to persist: no record, but part of the group.
        append(&wal, &mut m, None, vec![]);
    }
    let (_, len_before) = staged(&wal);
    let big: Vec<Entry> = (4..=40).map(|i| ent(i, 1, 600)).collect();
    append(&wal, &mut m, None, big);
    let (used, len) = staged(&wal);
    assert!(
        len > len_before && len >= used,
        "the buffer grew: {len_before} -> {len}"
    );
    append(&wal, &mut m, None, vec![ent(41, 1, 300), ent(42, 1, 300)]);
    check_storage(&wal, &m);
    let (used, _) = staged(&wal);
    // One group commit while writes are in flight: the first write takes only the three
    // small records (the group is cut), leaving the big one and the last at the front.
    block_on(async {
        let mut f = Box::pin(wal.flush());
        assert!(futures_lite::future::poll_once(f.as_mut()).await.is_none());
        assert!(wal.inner.flushing.get(), "a write is in flight");
        assert_eq!(wal.stats().flushes, 0);
        let (used_in_flight, _) = staged(&wal);
        let small = append_record_len(&[ent(1, 1, 500)]);
        assert_eq!(
            used_in_flight,
            used - 3 * small,
            "the group left the buffer"
        );
        // Meanwhile: a hard state, and entries replacing 41..=42 (still pending) and
        // then 40 (in the big record, also pending).
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 3,
        };
        append(&wal, &mut m, Some(hs), vec![ent(41, 2, 100)]);
        append(&wal, &mut m, None, vec![ent(40, 2, 50), ent(41, 2, 60)]);
        check_storage(&wal, &m);
        f.await.unwrap();
    });
    block_on(wal.flush()).unwrap();
    assert!(wal.stats().flushes >= 3, "{:?}", wal.stats());
    let (used, len) = staged(&wal);
    assert_eq!((used, len), (0, 0), "the last buffer went to its write");
    check_storage(&wal, &m);
    // More appends after the shrink, then reopen from what is durable.
    for i in 42..=60 {
        append(&wal, &mut m, None, vec![ent(i, 2, 200)]);
    }
    let r = block_on(wal.wait_durable(ready));
    r.unwrap();
    check_storage(&wal, &m);
    let image = disk.crash(&mut Rng::new(1), 50);
    let (_, rec) = block_on(Wal::open_on(image, opts)).unwrap();
    assert_eq!(Model::of(&rec), m);
}

/// The staging buffer on its own: pending bytes survive growth and a cut group's
/// leftovers move to the front; a group that is all of the buffer leaves with it; the
/// next buffer is sized after the last group, so one burst does not make every later
/// buffer as big.
#[test]
fn staging_buffer_grows_keeps_bytes_and_is_sized_after_the_last_group() {
    let alloc = |n: usize| vec![0xEEu8; n];
    let mut s: Staging<Vec<u8>> = Staging::new();
    s.push(3000, alloc).fill(1);
    let small = s.cap();
    assert!(small >= padded_len(3000) as usize);
    s.push(100_000, alloc).fill(2);
    assert!(
        s.cap() >= padded_len(103_000) as usize,
        "grown: {}",
        s.cap()
    );
    assert!(
        s.bytes()[..3000].iter().all(|&b| b == 1),
        "kept across growth"
    );
    assert!(s.bytes()[3000..].iter().all(|&b| b == 2));
    // A group of only the first record: not the whole buffer, so it is not taken; the
    // caller copies it out and consumes it, and the rest moves to the front.
    assert!(s.take_whole(3000, padded_len(3000) as usize).is_none());
    s.consume(3000);
    assert_eq!(s.used, 100_000);
    assert!(s.bytes().iter().all(|&b| b == 2));
    // The rest is the whole buffer: it goes to the write as it is.
    let total = padded_len(100_000) as usize;
    let b = s.take_whole(100_000, total).expect("whole group");
    assert!(b.len() >= total && b[..100_000].iter().all(|&x| x == 2));
    assert_eq!((s.used, s.cap()), (0, 0));
    // The next buffer is as big as that group; after a small group, small again.
    s.push(500, alloc).fill(3);
    assert_eq!(s.cap(), total);
    let t = padded_len(500) as usize;
    s.take_whole(500, t).expect("whole group");
    s.push(500, alloc);
    assert_eq!(s.cap(), t, "a burst does not size every later buffer");
    s.consume(500);
    assert_eq!((s.used, s.cap()), (0, 0), "an emptied buffer is let go");
}

/// Every new staging buffer is written over in full before the first record goes in
/// (`IoBuf::touch`; 0xEE for the sim's `Vec` buffers), whether it is the first of a
/// group or a grown one, and growth keeps the pending bytes.
#[test]
fn a_new_staging_buffer_is_touched_in_full_before_use() {
    let zeroed = |n: usize| vec![0u8; n];
    let mut s: Staging<Vec<u8>> = Staging::new();
    s.push(100, zeroed).fill(1);
    let b = s.buf.as_ref().expect("a buffer");
    assert!(b[100..].iter().all(|&x| x == 0xEE), "the rest was touched");
    s.push(50_000, zeroed).fill(2);
    let b = s.buf.as_ref().expect("a grown buffer");
    assert!(b[..100].iter().all(|&x| x == 1), "kept across growth");
    assert!(b[100..50_100].iter().all(|&x| x == 2));
    assert!(b[50_100..].iter().all(|&x| x == 0xEE), "the grown one too");
}

/// Entries `lo..=hi` of term 1, each sharing `data` (so its share count tells how many
/// the WAL still holds).
fn shared_entries(lo: u64, hi: u64, data: &Payload) -> Vec<Entry> {
    (lo..=hi)
        .map(|i| Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: data.clone(),
        })
        .collect()
}

fn window_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 8 << 20,
        group_commit_bytes_max: 1 << 20,
        cache_bytes_max: 64 << 20,
        ..WalOptions::default()
    }
}

/// Appends entries sharing `data` and keeps the model in step.
struct Writer {
    ready: u64,
    last: u64,
    m: Model,
}

impl Writer {
    /// Appends `n` more entries sharing `data` (not yet flushed); returns their length.
    fn append<D: Disk>(&mut self, wal: &Wal<D>, n: u64, data: &Payload) -> usize {
        let e = shared_entries(self.last + 1, self.last + n, data);
        self.ready += 1;
        wal.append(self.ready, None, &e).unwrap();
        self.m.append(None, &e);
        self.last += n;
        append_record_len(&e)
    }
    fn compact<D: Disk>(&mut self, wal: &Wal<D>, index: u64) {
        let meta = SnapshotMeta {
            index,
            term: 1,
            ..SnapshotMeta::default()
        };
        block_on(wal.compact(meta.clone())).unwrap();
        self.m.compact(&meta);
    }
}

/// The work done while a write is in flight (`Wal::write_window`): after a write of at
/// least `WINDOW_MIN_BYTES` the next staging buffer is already there (as big as that
/// group, touched, empty) and the next append goes into it; the cached entries a
/// compaction set aside are released by the following writes, at least `REAP_SLICE`
/// and at least as many as were appended since the previous write, none by the
/// compaction itself; the log reads back and reopens as the model.
#[test]
fn write_windows_prepare_the_next_buffer_and_release_compacted_entries() {
    let disk = SimDisk::new();
    let opts = window_opts();
    let (wal, _) = block_on(Wal::open_on(disk.clone(), opts.clone())).unwrap();
    let data = Payload::from(vec![5u8; 200]);
    let mut w = Writer {
        ready: 0,
        last: 0,
        m: Model::default(),
    };
    let staged = |wal: &Wal<SimDisk>| {
        let st = wal.inner.st.borrow();
        let b = st.staging.buf.as_ref().map(|b| b.as_slice().to_vec());
        (st.staging.used, st.staging.hint, b)
    };
    // 400 entries of 200 bytes: a ~90 KB record, over WINDOW_MIN_BYTES.
    w.append(&wal, 400, &data);
    block_on(wal.flush()).unwrap();
    let (used, hint, buf) = staged(&wal);
    let buf = buf.expect("the next buffer was made during the write");
    assert!(hint as u64 >= WINDOW_MIN_BYTES);
    assert_eq!((used, buf.len()), (0, hint), "empty, sized after the group");
    assert!(
        buf.iter().all(|&b| b == disk::STALE_BYTE),
        "touched in full"
    );
    // The next append fills that buffer instead of making one.
    let len = w.append(&wal, 400, &data);
    let (used, _, buf) = staged(&wal);
    assert_eq!(buf.map(|b| b.len()), Some(hint), "the same buffer");
    assert_eq!(used, len);
    for _ in 0..28 {
        w.append(&wal, 400, &data);
        block_on(wal.flush()).unwrap();
    }
    assert_eq!(w.last, 12_000);
    // Compacting 10,000 of the 12,000 cached entries sets them aside: the compaction's
    // own Snapshot write releases the first slice, the next writes the rest. (The
    // payload's share count covers the WAL's cache and the model's entries.)
    let before = data.shares();
    w.compact(&wal, 10_000);
    let retired = |wal: &Wal<SimDisk>| wal.inner.st.borrow().log.retired_len();
    assert_eq!(retired(&wal), 10_000 - REAP_SLICE);
    assert_eq!(data.shares(), before - 10_000 - REAP_SLICE);
    // Small writes (one entry each) still get a window while entries wait.
    let mut writes = 0;
    while retired(&wal) > 0 {
        w.append(&wal, 1, &data);
        block_on(wal.flush()).unwrap();
        writes += 1;
        assert!(writes <= 2, "each write releases at least {REAP_SLICE}");
    }
    assert_eq!(data.shares(), before - 20_000 + 2 * writes);
    // A window releases at least as many as were appended since the last write: 6,000
    // are pending when a compaction sets 11,000 + `writes` aside.
    let small = Payload::from(vec![1u8; 8]);
    w.append(&wal, 9_000, &small);
    block_on(wal.flush()).unwrap();
    let upto = w.last;
    w.append(&wal, 6_000, &small);
    w.compact(&wal, upto);
    assert_eq!(retired(&wal), 11_000 + writes - 6_000);
    while retired(&wal) > 0 {
        w.append(&wal, 1, &small);
        block_on(wal.flush()).unwrap();
    }
    // Writes that take no window (small, nothing set aside) still restart the count:
    // after 5,000 of them, a compaction's window releases REAP_SLICE, not 5,000.
    for _ in 0..5_000 {
        w.append(&wal, 1, &small);
        block_on(wal.flush()).unwrap();
    }
    let first = wal.first_index().unwrap();
    w.compact(&wal, w.last - 10);
    assert_eq!(
        retired(&wal) as u64,
        w.last - 10 - first + 1 - REAP_SLICE as u64
    );
    while retired(&wal) > 0 {
        w.append(&wal, 1, &small);
        block_on(wal.flush()).unwrap();
    }
    check_storage(&wal, &w.m);
    let image = disk.crash(&mut Rng::new(7), 50);
    let (_, rec) = block_on(Wal::open_on(image, opts)).unwrap();
    assert_eq!(Model::of(&rec), w.m);
}

// ---------- real files and real crashes ----------

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("corekv-wal-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn on_executor<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

fn run_glommio<F: Future<Output = T> + 'static, T: Send + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> T {
    on_executor(move || {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .make()
            .unwrap()
            .run(f())
    })
}

fn crash_entry(i: u64) -> Entry {
    Entry {
        term: 1,
        index: i,
        kind: EntryKind::Normal,
        data: format!("entry {i} {}", "x".repeat((i % 200) as usize))
            .into_bytes()
            .into(),
    }
}

fn crash_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 1 << 20,
        group_commit_bytes_max: 256 << 10,
        ..WalOptions::default()
    }
}

#[test]
fn dma_disk_round_trip() {
    let dir = temp_dir("dma");
    let d2 = dir.clone();
    let n = run_glommio(move || async move {
        let (wal, r) = Wal::open(&d2, crash_opts()).await.unwrap();
        assert!(r.entries.is_empty());
        glommio::spawn_local({
            let w = wal.clone();
            async move { w.run_background().await }
        })
        .detach();
        for i in 1..=3000u64 {
            wal.append(i, None, &[crash_entry(i)]).unwrap();
            if i % 100 == 0 {
                wal.wait_durable(i).await.unwrap();
            }
        }
        wal.flush().await.unwrap();
        let (_, r) = Wal::open(&d2, crash_opts()).await.unwrap();
        r.entries.len()
    });
    assert_eq!(n, 3000);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The write window on a real disk: glommio's no-op request resolves `submitted`, the
/// next staging buffer is made and compacted entries are released during the writes,
/// and the log reopens whole.
#[test]
fn dma_disk_write_windows_run() {
    let dir = temp_dir("window");
    let d2 = dir.clone();
    run_glommio(move || async move {
        let (wal, _) = Wal::open(&d2, window_opts()).await.unwrap();
        let data = Payload::from(vec![3u8; 200]);
        let mut w = Writer {
            ready: 0,
            last: 0,
            m: Model::default(),
        };
        for _ in 0..30 {
            w.append(&wal, 400, &data);
            wal.flush().await.unwrap();
            let st = wal.inner.st.borrow();
            assert!(st.staging.buf.is_some(), "the window made the next buffer");
        }
        let meta = SnapshotMeta {
            index: 10_000,
            term: 1,
            ..SnapshotMeta::default()
        };
        wal.compact(meta.clone()).await.unwrap();
        w.m.compact(&meta);
        for _ in 0..3 {
            w.append(&wal, 1, &data);
            wal.flush().await.unwrap();
        }
        assert_eq!(wal.inner.st.borrow().log.retired_len(), 0);
        assert_eq!(data.shares(), 1 + 2 * (2_000 + 3), "released");
        drop(wal);
        let (_, rec) = Wal::open(&d2, window_opts()).await.unwrap();
        assert_eq!(rec.entries.last().map(|e| e.index), Some(w.last));
        assert_eq!(Model::of(&rec), w.m);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The child side of `sigkill_under_load_keeps_every_ack`: appends from many tasks and
/// prints "ack <index>" once each append is durable. Does nothing unless started by it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("COREKV_WAL_CRASH_DIR") else {
        return;
    };
    run_glommio(move || async move {
        let (wal, r) = Wal::open(&dir, crash_opts()).await.unwrap();
        let start = r.snapshot.index + r.entries.len() as u64 + 1;
        if start > 6000 {
            let meta = SnapshotMeta {
                index: start - 3000,
                term: 1,
                conf_state: ConfState::default(),
            };
            wal.compact(meta).await.unwrap();
        }
        glommio::spawn_local({
            let w = wal.clone();
            async move { w.run_background().await }
        })
        .detach();
        let next = Rc::new(Cell::new(start));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (wal, next) = (wal.clone(), next.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..100_000 {
                    let i = next.get();
                    next.set(i + 1);
                    wal.append(i, None, &[crash_entry(i)]).unwrap();
                    wal.wait_durable(i).await.unwrap();
                    println!("ack {i}");
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
}

#[test]
fn sigkill_under_load_keeps_every_ack() {
    let dir = temp_dir("sigkill");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(42);
    let mut acked_total = BTreeSet::new();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "wal::tests::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("COREKV_WAL_CRASH_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let want = 1 + rng.below(1500);
        let mut acks = BTreeSet::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while (acks.len() as u64) < want {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(i) = line.strip_prefix("ack ") {
                acks.insert(i.parse::<u64>().unwrap());
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            acks.len() as u64,
            want,
            "round {round}: child stopped early"
        );
        let d = dir.clone();
        // Entries share their record's buffer (not Send): compared on the executor.
        let (snap, count, damaged) = run_glommio(move || async move {
            let (_, r) = Wal::open(&d, crash_opts()).await.unwrap();
            let snap = r.snapshot.index;
            let damaged = (r.entries.iter().enumerate())
                .find(|&(k, e)| *e != crash_entry(snap + 1 + k as u64))
                .map(|(_, e)| format!("{e:?}"));
            (snap, r.entries.len() as u64, damaged)
        });
        assert_eq!(damaged, None, "round {round}: entry damaged");
        let last = snap + count;
        acked_total.extend(acks);
        for &i in acked_total.range(snap + 1..) {
            assert!(
                i <= last,
                "round {round}: acked entry {i} lost (last {last})"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Debug aid: every record of every segment, one line each.
#[allow(dead_code)]
fn dump(disk: &SimDisk) -> String {
    let mut out = String::new();
    for name in disk.names() {
        let b = disk.file_bytes(&name).unwrap();
        out += &format!(
            "{name}: {} bytes, header {:?}\n",
            b.len(),
            check_segment_header(&b)
        );
        let mut pos = SEG_FIRST_RECORD as usize;
        while pos + REC_HEADER_LEN <= b.len() {
            match check_record(&b[pos..]) {
                None => {
                    out += &format!("  {pos}: invalid\n");
                    pos = (pos / 4096 + 1) * 4096;
                    continue;
                }
                Some(h) => {
                    let p = &b[pos + REC_HEADER_LEN..pos + REC_HEADER_LEN + h.payload_len];
                    let what = match h.kind {
                        KIND_APPEND => {
                            let a = decode_append(&crate::raft::types::Payload::copy_from_slice(p))
                                .unwrap();
                            format!(
                                "append ready {} hs {:?} entries {:?}",
                                a.ready,
                                a.hard_state.map(|h| h.commit),
                                a.entries.first().map(|e| (e.index, a.entries.len()))
                            )
                        }
                        KIND_SNAPSHOT => {
                            let (hs, m) = decode_snapshot(p).unwrap();
                            format!("snapshot {} term {} commit {}", m.index, m.term, hs.commit)
                        }
                        _ => "pad".into(),
                    };
                    out += &format!("  {pos}: wsn {} {what}\n", h.wsn);
                    pos += REC_HEADER_LEN + h.payload_len;
                }
            }
        }
    }
    out
}

// ---------- compaction concurrent with appends (real files) ----------

/// What the tasks of `compaction_races_appends_truncations_and_flushes` share.
#[derive(Default)]
struct Race {
    /// The log as appended and compacted so far, in the order of the calls.
    model: Model,
    /// (Ready number, commit index) of each hard state appended, until durable.
    commits: VecDeque<(u64, u64)>,
    /// The commit index of the newest durable hard state: what may be compacted (the
    /// group compacts behind its durable applied index, which is committed).
    durable_commit: u64,
    /// A compaction is running (one at a time, as in the group).
    compacting: bool,
    compactions: u64,
    /// Compactions during which the active segment was switched.
    compactions_across_rotation: u64,
    /// The appender is finished.
    done: bool,
}

fn race_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 16 * BLOCK_BYTES,
        group_commit_bytes_max: 4 * BLOCK_BYTES,
        cache_bytes_max: 16 << 10,
        fetch_bytes_max: 8 << 10,
        recycle_segments: 2,
        ..WalOptions::default()
    }
}

/// Compacts `wal` to `index` (in the log, committed), updating the model in the same
/// synchronous step as the call's own (`compact` records the snapshot before its first
/// await), and counts whether a segment switch happened meanwhile.
async fn race_compact(wal: &Wal<DmaDisk>, race: &RefCell<Race>, index: u64, voters: u64) {
    let meta = {
        let mut r = race.borrow_mut();
        assert!(!r.compacting);
        r.compacting = true;
        let meta = SnapshotMeta {
            index,
            term: r.model.term(index).expect("compaction index in the log"),
            conf_state: ConfState {
                voters: (1..=voters).collect(),
                ..ConfState::default()
            },
        };
        r.model.compact(&meta);
        meta
    };
    let switched = wal.stats().segments_switched;
    wal.compact(meta.clone())
        .await
        .unwrap_or_else(|e| panic!("compacting to {}: {e}", meta.index));
    let mut r = race.borrow_mut();
    r.compacting = false;
    r.compactions += 1;
    if wal.stats().segments_switched > switched {
        r.compactions_across_rotation += 1;
    }
}

/// Reads the whole retained log through `Storage` (fetching what fell out of the
/// cache) and compares it with the model.
async fn check_storage_async(wal: &Wal<DmaDisk>, m: &Model) {
    assert_eq!(wal.first_index().unwrap(), m.snap.index + 1);
    assert_eq!(wal.last_index().unwrap(), m.last());
    let got = read_range(wal, m.snap.index + 1, m.last() + 1).await;
    assert!(got == m.entries, "Storage::entries differs from the model");
}

/// Entries `lo..hi` through `Storage`, fetching what fell out of the cache.
async fn read_range(wal: &Wal<DmaDisk>, lo: u64, hi: u64) -> Vec<Entry> {
    let mut all: Vec<Entry> = Vec::new();
    while (all.len() as u64) < hi - lo {
        match wal.entries(lo + all.len() as u64, hi, u64::MAX) {
            Ok(v) => all.extend(v),
            Err(StorageError::TemporarilyUnavailable) => wal.fetch_pending().await.unwrap(),
            Err(e) => panic!("entries {lo}..{hi}: {e}"),
        }
    }
    all
}

/// The driver's side: appends (a conflicting suffix now and then) and hard states, and
/// sometimes makes a compaction race a segment switch on purpose: two records that
/// cannot share one segment are pending when the compaction's snapshot record is
/// appended behind them.
async fn race_appender(wal: Wal<DmaDisk>, race: Rc<RefCell<Race>>, seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let big = (race_opts().segment_bytes as usize) * 5 / 8;
    for step in 0..steps {
        let forced = step % 97 == 50;
        let (hs, ents) = {
            let r = race.borrow();
            let m = &r.model;
            let floor = m.hs.commit.max(m.snap.index);
            let last = m.last();
            let first = if last > floor && rng.chance(12) && !forced {
                floor + 1 + rng.below(last - floor)
            } else {
                last + 1
            };
            let mut term = m.term(first - 1).unwrap().max(m.hs.term);
            if first <= last || rng.chance(3) {
                term += 1;
            }
            let n = if forced { 1 } else { rng.below(4) };
            let ents: Vec<Entry> = (0..n)
                .map(|k| Entry {
                    term,
                    index: first + k,
                    kind: EntryKind::Normal,
                    data: if forced {
                        vec![(first + k) as u8; big].into()
                    } else {
                        let len = rng.below(900) as usize;
                        (0..len).map(|_| rng.next_u64() as u8).collect()
                    },
                })
                .collect();
            let new_last = if n > 0 { first + n - 1 } else { last };
            // Commit only what is already in the log and was never truncated.
            let hs = (n == 0 || rng.chance(60)).then(|| HardState {
                term,
                vote: 1 + rng.below(3),
                commit: (m.hs.commit + rng.below(6))
                    .min(new_last)
                    .min(if first <= last { first - 1 } else { new_last })
                    .max(m.hs.commit),
            });
            (hs, ents)
        };
        let ready = wal.last_ready() + (rng.chance(80) || forced) as u64;
        wal.append(ready, hs, &ents)
            .unwrap_or_else(|e| panic!("step {step}: append: {e}"));
        {
            let mut r = race.borrow_mut();
            r.model.append(hs, &ents);
            if let Some(hs) = hs {
                r.commits.push_back((ready, hs.commit));
            }
        }
        if forced {
            // A second record that cannot share a segment with the first.
            let second = {
                let m = &race.borrow().model;
                Entry {
                    term: m.term(m.last()).unwrap(),
                    index: m.last() + 1,
                    kind: EntryKind::Normal,
                    data: vec![7; big].into(),
                }
            };
            wal.append(ready, None, std::slice::from_ref(&second))
                .unwrap_or_else(|e| panic!("step {step}: append: {e}"));
            race.borrow_mut().model.append(None, &[second]);
            let (compactable, snap) = {
                let r = race.borrow();
                (!r.compacting, r.model.snap.index)
            };
            let upto = race.borrow().durable_commit;
            if compactable && upto > snap {
                let index = snap + 1 + rng.below(upto - snap);
                let before = race.borrow().compactions_across_rotation;
                race_compact(&wal, &race, index, 3).await;
                assert_eq!(
                    race.borrow().compactions_across_rotation,
                    before + 1,
                    "step {step}: {big} bytes pending twice did not switch segments"
                );
            }
        }
        match rng.below(100) {
            0..=39 => futures_lite::future::yield_now().await,
            40..=44 => wal.wait_durable(ready).await.unwrap(),
            45..=49 => glommio::timer::sleep(std::time::Duration::from_micros(300)).await,
            _ => {}
        }
    }
    race.borrow_mut().done = true;
}

/// The flusher: group-commits whatever was appended and learns the durable commit.
async fn race_flusher(wal: Wal<DmaDisk>, race: Rc<RefCell<Race>>) {
    loop {
        let last = wal.last_ready();
        if last <= wal.durable_ready() {
            if race.borrow().done {
                return;
            }
            glommio::timer::sleep(std::time::Duration::from_micros(100)).await;
            continue;
        }
        wal.wait_durable(last).await.unwrap();
        let durable = wal.durable_ready();
        let mut r = race.borrow_mut();
        while r.commits.front().is_some_and(|(n, _)| *n <= durable) {
            let (_, c) = r.commits.pop_front().unwrap();
            r.durable_commit = r.durable_commit.max(c);
        }
    }
}

/// The committer's side: compactions at random moments behind the durable commit.
async fn race_compactor(wal: Wal<DmaDisk>, race: Rc<RefCell<Race>>, seed: u64) {
    let mut rng = Rng::new(seed ^ 0x00c0_ffee);
    let mut checks = 0;
    loop {
        glommio::timer::sleep(std::time::Duration::from_micros(rng.below(1500))).await;
        let (done, busy, snap, upto) = {
            let r = race.borrow();
            (r.done, r.compacting, r.model.snap.index, r.durable_commit)
        };
        if done {
            return;
        }
        if busy || upto <= snap {
            continue;
        }
        let index = snap + 1 + rng.below(upto - snap);
        race_compact(&wal, &race, index, 1 + rng.below(5)).await;
        checks += 1;
        if checks % 8 == 0 {
            // The committed part of the live log (no truncation reaches it, and no
            // compaction runs meanwhile) reads back as the model, also what is read
            // from segment files while appends, switches and recycling go on.
            let (lo, hi, want) = {
                let mut r = race.borrow_mut();
                r.compacting = true;
                let m = &r.model;
                let hi = r.durable_commit.min(m.last()) + 1;
                let want = m.entries[..(hi - m.snap.index - 1) as usize].to_vec();
                (m.snap.index + 1, hi, want)
            };
            let got = read_range(&wal, lo, hi).await;
            assert!(got == want, "entries {lo}..{hi} differ from the model");
            race.borrow_mut().compacting = false;
        }
    }
}

/// `Wal::compact` runs in the committer task while the driver appends (truncating
/// conflicting suffixes) and the flusher group-commits, on real files with segments of
/// 16 blocks (a switch every few flushes, compacted segments recycled or removed).
/// After the race the log reads back as the model; reopened, it holds exactly the
/// acknowledged state: every durable entry above the compaction point, intact, and
/// nothing of an append that was never flushed.
#[test]
fn compaction_races_appends_truncations_and_flushes() {
    for seed in 0..4 * seed_factor() {
        let dir = temp_dir(&format!("race-{seed}"));
        let d = dir.clone();
        let (compactions, across) = run_glommio(move || async move {
            let (wal, _) = Wal::open(&d, race_opts()).await.unwrap();
            let background = glommio::spawn_local({
                let w = wal.clone();
                async move { w.run_background().await }
            });
            let race = Rc::new(RefCell::new(Race::default()));
            let tasks = [
                glommio::spawn_local(race_appender(wal.clone(), race.clone(), seed, 1500)),
                glommio::spawn_local(race_flusher(wal.clone(), race.clone())),
                glommio::spawn_local(race_compactor(wal.clone(), race.clone(), seed)),
            ];
            for t in tasks {
                t.await;
            }
            wal.flush().await.unwrap();
            let m = race.borrow().model.clone();
            check_storage_async(&wal, &m).await;
            let s = wal.stats();
            assert!(
                s.segments_removed + s.segments_recycled > 0 && s.segments_switched > 4,
                "seed {seed}: {s:?}"
            );
            // Acknowledged: everything up to here. Then an append that never flushes.
            let next = m.last() + 1;
            let term = m.term(m.last()).unwrap().max(m.hs.term);
            let lost = Entry {
                term,
                index: next,
                kind: EntryKind::Normal,
                data: b"never flushed".to_vec().into(),
            };
            wal.append(wal.last_ready() + 1, None, &[lost]).unwrap();
            drop(background);
            drop(wal);
            let (wal, r) = Wal::open(&d, race_opts()).await.unwrap();
            assert!(
                Model::of(&r) == m,
                "seed {seed}: recovered (snapshot {}, last {}, {:?}) is not the acknowledged \
                 log (snapshot {}, last {}, {:?})",
                r.snapshot.index,
                Model::of(&r).last(),
                r.hard_state,
                m.snap.index,
                m.last(),
                m.hs
            );
            check_storage_async(&wal, &m).await;
            let r = race.borrow();
            eprintln!(
                "seed {seed}: {} compactions, {} across a switch, last {}, snapshot {}, {:?}",
                r.compactions,
                r.compactions_across_rotation,
                m.last(),
                m.snap.index,
                s
            );
            (r.compactions, r.compactions_across_rotation)
        });
        assert!(
            compactions >= 10,
            "seed {seed}: only {compactions} compactions"
        );
        assert!(
            across >= 1,
            "seed {seed}: no compaction across a segment switch"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
