//! Tests of the B+tree: random operations against a `BTreeMap` model (several trees,
//! overflow values, deletes to empty, snapshots held across commits), crash images at
//! every sync boundary, corruption (bit flips, bad metas, bad pointers, cycles), a real
//! file through glommio (mmap and pread), and a SIGKILL loop in a child process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_lite::future::block_on;

use super::format::*;
use super::*;

mod pipeline;

type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// SplitMix64: seeded, deterministic.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A temp directory removed on drop.
pub struct TempDir(PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "corekv-btree-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn small_opts() -> Options {
    Options {
        page_size: 1024,
        max_value_bytes: 64 << 10,
        ..Options::default()
    }
}

fn open_sim(disk: &SimDisk, opts: &Options) -> Result<Db<SimDisk>, BtreeError> {
    block_on(Db::open_disk(disk.clone(), opts.clone()))
}

fn dump_tree(
    scan: impl Fn(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), BtreeError>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut last: Option<Vec<u8>> = None;
    scan(&mut |k, v| {
        assert!(last.as_deref().is_none_or(|l| l < k), "scan out of order");
        last = Some(k.to_vec());
        out.insert(k.to_vec(), v.to_vec());
        true
    })
    .unwrap();
    out
}

/// Checks every tree of `model` (and `extra` tree names) against the Db's live state.
fn check_db<D: Disk>(db: &Db<D>, model: &Model) {
    for (name, m) in model {
        let got = dump_tree(|f| db.scan(name, b"", None, false, f));
        assert_eq!(got.len(), m.len(), "tree {name}: entry count");
        assert!(got == *m, "tree {name}: contents differ from the model");
    }
    let names: Vec<String> = model
        .iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(db.tree_names(), names);
}

fn check_snapshot(s: &Snapshot, model: &Model) {
    for (name, m) in model {
        let got = dump_tree(|f| s.scan(name, b"", None, false, f));
        assert!(got == *m, "snapshot {}: tree {name} differs", s.txn());
    }
}

fn random_key(rng: &mut Rng, shape: u64) -> Vec<u8> {
    match shape {
        // Dense small integers: many updates of the same keys.
        0 => format!("k{:05}", rng.below(3000)).into_bytes(),
        // Random binary keys of random length (including empty).
        1 => {
            let n = rng.below(40) as usize;
            rng.bytes(n)
        }
        // Long shared prefixes, some long keys.
        _ => {
            let mut k = vec![b'p'; 1 + rng.below(200) as usize];
            k.extend_from_slice(format!("{:04}", rng.below(500)).as_bytes());
            k
        }
    }
}

fn random_value(rng: &mut Rng) -> Vec<u8> {
    let n = match rng.below(10) {
        0..=5 => rng.below(64),
        6..=7 => rng.below(400),
        8 => 1000 + rng.below(3000),
        _ => rng.below(40_000), // overflow chains of many pages
    } as usize;
    let b = rng.next() as u8;
    (0..n).map(|i| b.wrapping_add(i as u8)).collect()
}

/// Random puts, deletes, commits and snapshots against the model, on one Db.
fn model_run(seed: u64, opts: Options, ops: usize) {
    let mut rng = Rng::new(seed);
    let disk = SimDisk::default();
    let mut db = open_sim(&disk, &opts).unwrap();
    let trees = ["alpha", "beta", "gamma"];
    let mut model = Model::new();
    let mut committed = model.clone();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    for t in trees {
        model.insert(t.to_string(), BTreeMap::new());
    }
    // Shape 3: each tree's own ascending keys, greater than the other shapes' (but
    // for rare random ones): the revision tree's appends at the right edge.
    let mut next_append = [0u64; 3];
    for step in 0..ops {
        let ti = rng.below(3) as usize;
        let t = trees[ti];
        let shape = rng.below(4);
        // Phases: grow, then shrink everything to nothing, then grow again.
        let deleting = (step / (ops / 4)) % 2 == 1;
        let r = rng.below(100);
        if r < 2 {
            block_on(db.commit()).unwrap();
            committed = model.clone();
            check_db(&db, &model);
            if rng.below(2) == 0 {
                snaps.push((db.snapshot(), committed.clone()));
            }
            if snaps.len() > 3 || (rng.below(4) == 0 && !snaps.is_empty()) {
                let i = rng.below(snaps.len() as u64) as usize;
                let (s, m) = snaps.swap_remove(i);
                check_snapshot(&s, &m);
            }
        } else if r < 3 {
            // Reopen: uncommitted work is lost; the model goes back to the commit.
            block_on(db.commit()).unwrap();
            committed = model.clone();
            snaps.clear();
            drop(db);
            db = open_sim(&disk, &opts).unwrap();
            check_db(&db, &committed);
        } else if (deleting && r < 90) || r < 25 {
            let m = model.get_mut(t).unwrap();
            let key = if !m.is_empty() && rng.below(4) != 0 {
                let i = rng.below(m.len() as u64) as usize;
                m.keys().nth(i).unwrap().clone()
            } else {
                random_key(&mut rng, shape % 3)
            };
            let existed = db.delete(t, &key).unwrap();
            assert_eq!(existed, m.remove(&key).is_some(), "delete result");
        } else {
            let key = if shape == 3 {
                next_append[ti] += 1 + rng.below(3);
                let mut k = vec![0xff, 0xff];
                k.extend_from_slice(&next_append[ti].to_be_bytes());
                k
            } else {
                random_key(&mut rng, shape)
            };
            let value = random_value(&mut rng);
            db.put(t, &key, &value).unwrap();
            model.get_mut(t).unwrap().insert(key, value);
        }
        if step % 97 == 0 {
            db.check_integrity().unwrap();
            let m = &model[t];
            let probe = random_key(&mut rng, shape % 3);
            assert_eq!(db.get(t, &probe).unwrap().as_ref(), m.get(&probe));
            check_range(&db, t, m, &mut rng);
        }
    }
    block_on(db.commit()).unwrap();
    check_db(&db, &model);
    for (s, m) in &snaps {
        check_snapshot(s, m);
    }
    let _ = committed;
    // Delete everything: trees shrink to nothing, and the file's pages become free.
    for t in trees {
        for k in model[t].keys() {
            assert!(db.delete(t, k).unwrap());
        }
        model.get_mut(t).unwrap().clear();
    }
    check_db(&db, &model);
    block_on(db.commit()).unwrap();
    drop(snaps);
    drop(db);
    let db = open_sim(&disk, &opts).unwrap();
    check_db(&db, &model);
    // Empty trees: nothing reachable, every page free or holding the freelist.
    let stats = db.check_integrity().unwrap();
    assert_eq!(stats.reachable, 0, "{stats:?}");
    assert_eq!(stats.free + stats.freelist, stats.total);
}

/// A random bounded range scan, both directions, against the model.
fn check_range<D: Disk>(db: &Db<D>, t: &str, m: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut Rng) {
    let keys: Vec<&Vec<u8>> = m.keys().collect();
    let pick = |rng: &mut Rng| -> Vec<u8> {
        if keys.is_empty() || rng.below(3) == 0 {
            {
                let shape = rng.below(3);
                random_key(rng, shape)
            }
        } else {
            keys[rng.below(keys.len() as u64) as usize].clone()
        }
    };
    let lo = pick(rng);
    let hi = if rng.below(4) == 0 {
        None
    } else {
        Some(pick(rng))
    };
    let limit = 1 + rng.below(50) as usize;
    for reverse in [false, true] {
        let mut got = Vec::new();
        db.scan(t, &lo, hi.as_deref(), reverse, &mut |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            got.len() < limit
        })
        .unwrap();
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = if hi.as_ref().is_some_and(|h| *h <= lo) {
            vec![]
        } else {
            let upper = hi.as_ref().map_or(std::ops::Bound::Unbounded, |h| {
                std::ops::Bound::Excluded(h.clone())
            });
            m.range((std::ops::Bound::Included(lo.clone()), upper))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        if reverse {
            want.reverse();
        }
        want.truncate(limit);
        assert_eq!(got, want, "scan {lo:?}..{hi:?} reverse={reverse}");
    }
}

#[test]
fn model_small_pages() {
    for seed in 0..3 {
        model_run(seed, small_opts(), 6000);
    }
}

#[test]
fn model_default_pages() {
    model_run(
        100,
        Options {
            max_value_bytes: 64 << 10,
            ..Options::default()
        },
        8000,
    );
}

#[test]
fn cursor_walks_both_ways() {
    let disk = SimDisk::default();
    let mut db = open_sim(&disk, &small_opts()).unwrap();
    let n = 2000u32;
    for i in 0..n {
        db.put("t", format!("{:06}", i * 2).as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    let check = |c: &mut Cursor<'_>, i: u32| {
        let (k, v) = c.entry().unwrap().unwrap();
        assert_eq!(k, format!("{:06}", i * 2).into_bytes());
        assert_eq!(v, i.to_le_bytes());
    };
    for committed in [false, true] {
        let mut c = db.cursor("t");
        assert!(c.first().unwrap());
        for i in 0..n {
            check(&mut c, i);
            assert_eq!(c.next().unwrap(), i + 1 < n);
        }
        assert!(!c.valid());
        assert!(c.last().unwrap());
        for i in (0..n).rev() {
            check(&mut c, i);
            assert_eq!(c.prev().unwrap(), i > 0);
        }
        // Seek between keys lands on the next one; past the end is invalid.
        assert!(c.seek(b"000101").unwrap());
        check(&mut c, 51);
        assert!(c.prev().unwrap());
        check(&mut c, 50);
        assert!(!c.seek(b"999999").unwrap());
        drop(c);
        if !committed {
            block_on(db.commit()).unwrap();
        }
    }
    assert!(!db.cursor("missing").first().unwrap());
}

#[test]
fn snapshot_keeps_its_version_while_pages_are_reused() {
    let disk = SimDisk::default();
    let mut db = open_sim(&disk, &small_opts()).unwrap();
    for i in 0..500u32 {
        db.put("t", &i.to_be_bytes(), &[1u8; 100]).unwrap();
    }
    block_on(db.commit()).unwrap();
    let snap = db.snapshot();
    let v1: BTreeMap<_, _> = dump_tree(|f| snap.scan("t", b"", None, false, f));
    // Many rewrites: freed pages get reused, but never the snapshot's.
    for round in 0..20u8 {
        for i in 0..500u32 {
            db.put("t", &i.to_be_bytes(), &[round + 2; 100]).unwrap();
        }
        block_on(db.commit()).unwrap();
    }
    assert_eq!(dump_tree(|f| snap.scan("t", b"", None, false, f)), v1);
    let size_with_snapshot = db.size_bytes();
    drop(snap);
    for round in 0..20u8 {
        for i in 0..500u32 {
            db.put("t", &i.to_be_bytes(), &[round + 50; 100]).unwrap();
        }
        block_on(db.commit()).unwrap();
    }
    // Without a snapshot pinning old pages, the file stops growing.
    assert!(db.size_bytes() <= size_with_snapshot + (1 << 20));
    assert_eq!(
        db.get("t", &7u32.to_be_bytes()).unwrap(),
        Some(vec![69u8; 100])
    );
}

/// A SimDisk whose fdatasync yields once (returns Pending before completing).
struct YieldingDisk(SimDisk);

impl Disk for YieldingDisk {
    fn name(&self) -> &str {
        "yielding"
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
    async fn write_at(&self, offset: u64, data: Vec<u8>) -> std::io::Result<()> {
        self.0.write_at(offset, data).await
    }
    async fn sync(&self) -> std::io::Result<()> {
        futures_lite::future::yield_now().await;
        self.0.sync().await
    }
    async fn grow(&self, len: u64) -> std::io::Result<()> {
        self.0.grow(len).await
    }
    fn store(&self) -> std::io::Result<std::rc::Rc<dyn PageStore>> {
        self.0.store()
    }
}

#[test]
fn cancelled_commit_poisons_the_writer() {
    let sim = SimDisk::default();
    let mut db = block_on(Db::open_disk(YieldingDisk(sim.clone()), small_opts())).unwrap();
    db.put("t", b"k", b"v").unwrap();
    block_on(db.commit()).unwrap(); // completes across the yields
    db.put("t", b"k2", b"v").unwrap();
    {
        // Poll once: it stops at the first fdatasync; then drop it (cancel).
        let mut fut = std::pin::pin!(db.commit());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(fut.as_mut(), &mut cx).is_pending());
    }
    let err = db.put("t", b"k3", b"v").unwrap_err();
    assert!(matches!(err, BtreeError::Poisoned { .. }), "{err}");
    assert!(block_on(db.commit()).is_err());
    drop(db);
    // Reopen: the last completed commit.
    let db = open_sim(&sim, &small_opts()).unwrap();
    assert_eq!(db.get("t", b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db.get("t", b"k2").unwrap(), None);
}

#[test]
fn limits_are_errors() {
    let disk = SimDisk::default();
    let opts = Options {
        max_file_bytes: 512 << 10,
        ..small_opts()
    };
    let mut db = open_sim(&disk, &opts).unwrap();
    let max_key = opts.max_key_bytes();
    assert!(db.put("t", &vec![1; max_key], b"v").is_ok());
    assert!(matches!(
        db.put("t", &vec![1; max_key + 1], b"v"),
        Err(BtreeError::TooLarge { what: "key", .. })
    ));
    assert!(matches!(
        db.put("t", b"k", &vec![0; opts.max_value_bytes + 1]),
        Err(BtreeError::TooLarge { what: "value", .. })
    ));
    assert!(db.put("t", b"k", &vec![0; opts.max_value_bytes]).is_ok());
    let mut i = 0u32;
    let err = loop {
        match db.put("t", &i.to_be_bytes(), &[7; 200]) {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 100_000, "quota never reached");
    };
    assert!(matches!(err, BtreeError::NoSpace { .. }), "{err}");
    // NoSpace is refused up front: the Db still works, and commits what it holds.
    block_on(db.commit()).unwrap();
    assert_eq!(
        db.get("t", &0u32.to_be_bytes()).unwrap(),
        Some(vec![7; 200])
    );
    assert!(db.delete("t", &0u32.to_be_bytes()).unwrap());
}

// ---- crashes ----

/// One deterministic workload: `commits` batches of random writes, each committed.
/// Returns the model after each commit (index 0 = empty).
fn crash_workload(
    db: &mut Db<SimDisk>,
    seed: u64,
    commits: usize,
) -> Result<Vec<Model>, BtreeError> {
    let mut rng = Rng::new(seed);
    let mut model = Model::new();
    let mut versions = vec![model.clone()];
    for _ in 0..commits {
        for _ in 0..1 + rng.below(60) {
            let t = ["a", "b"][rng.below(2) as usize];
            let key = format!("{:04}", rng.below(400)).into_bytes();
            if rng.below(4) == 0 {
                db.delete(t, &key)?;
                model.entry(t.into()).or_default().remove(&key);
            } else {
                let v = random_value(&mut rng);
                db.put(t, &key, &v)?;
                model.entry(t.into()).or_default().insert(key, v);
            }
        }
        block_on(db.commit())?;
        versions.push(model.clone());
    }
    Ok(versions)
}

fn model_of(db: &Db<SimDisk>, names: &[&str]) -> Model {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                dump_tree(|f| db.scan(n, b"", None, false, f)),
            )
        })
        .collect()
}

fn normalize(m: &Model) -> Model {
    ["a", "b"]
        .iter()
        .map(|n| (n.to_string(), m.get(*n).cloned().unwrap_or_default()))
        .collect()
}

#[test]
fn crash_at_every_sync_gives_last_committed_version() {
    let opts = small_opts();
    let commits = 12;
    // A clean run tells how many syncs the workload makes, and every version.
    let disk = SimDisk::default();
    let mut db = open_sim(&disk, &opts).unwrap();
    let syncs_at_open = disk.syncs();
    let versions = crash_workload(&mut db, 7, commits).unwrap();
    let total = disk.syncs() - syncs_at_open;
    assert_eq!(total, 2 * commits as u64);
    let mut rng = Rng::new(99);
    for crash_at in 0..total {
        for variant in 0..3 {
            let disk = SimDisk::default();
            let mut db = open_sim(&disk, &opts).unwrap();
            disk.crash_at_sync(crash_at);
            let err = crash_workload(&mut db, 7, commits).unwrap_err();
            assert!(matches!(err, BtreeError::Io { .. }), "{err}");
            // Poisoned after the failed commit.
            assert!(matches!(
                db.put("a", b"x", b"y"),
                Err(BtreeError::Poisoned { .. })
            ));
            drop(db);
            // Variant 0: every unsynced write lost; 1: all applied; 2: random mix of
            // dropped, applied and torn writes.
            let image = disk.crash_image(|_| match variant {
                0 => 0,
                1 => 1,
                _ => rng.below(6),
            });
            let reopened = SimDisk::from_image(image);
            let db = open_sim(&reopened, &opts).unwrap();
            let acked = (crash_at / 2) as usize; // commits acknowledged before the crash
            let got = normalize(&model_of(&db, &["a", "b"]));
            let at_meta_sync = crash_at % 2 == 1;
            let ok = got == normalize(&versions[acked])
                || (at_meta_sync && variant != 0 && got == normalize(&versions[acked + 1]));
            assert!(
                ok,
                "crash at sync {crash_at} variant {variant}: wrong version"
            );
            if variant == 0 {
                assert_eq!(db.committed_txn(), acked as u64);
            }
            db.check_integrity().unwrap();
            // The reopened Db keeps working from there.
            let mut db = db;
            db.put("a", b"after", b"crash").unwrap();
            block_on(db.commit()).unwrap();
            assert_eq!(db.get("a", b"after").unwrap(), Some(b"crash".to_vec()));
        }
    }
}

// ---- corruption ----

fn sample_db(opts: &Options) -> (SimDisk, Model) {
    let disk = SimDisk::default();
    let mut db = open_sim(&disk, opts).unwrap();
    let mut rng = Rng::new(5);
    let versions = crash_workload(&mut db, 3, 6).unwrap();
    for i in 0..300u32 {
        db.put("big", &i.to_be_bytes(), &rng.bytes(50)).unwrap();
    }
    db.put("big", b"overflow", &vec![9; 5000]).unwrap();
    block_on(db.commit()).unwrap();
    let mut m = versions.last().unwrap().clone();
    m.insert(
        "big".into(),
        dump_tree(|f| db.scan("big", b"", None, false, f)),
    );
    (disk, m)
}

fn full_check(db: &Db<SimDisk>) -> Result<(), BtreeError> {
    for t in ["a", "b", "big"] {
        db.scan(t, b"", None, false, &mut |_, _| true)?;
        db.scan(t, b"", None, true, &mut |_, _| true)?;
    }
    Ok(())
}

#[test]
fn bit_flip_in_any_data_page_is_an_error_not_a_wrong_answer() {
    let opts = small_opts();
    let (disk, model) = sample_db(&opts);
    let image = disk.live();
    let ps = opts.page_size;
    let pages = image.len() / ps;
    let mut rng = Rng::new(11);
    let mut errors = 0;
    for page in 2..pages {
        let mut img = image.clone();
        let at = page * ps + rng.below(ps as u64) as usize;
        img[at] ^= 1 << rng.below(8);
        let disk = SimDisk::from_image(img);
        // A flip in a free page is harmless; in a reachable page it must be an error
        // from open (catalog, freelist) or from the read that touches it.
        match open_sim(&disk, &opts) {
            Err(e) => {
                assert!(matches!(e, BtreeError::Corrupt { .. }), "{e}");
                errors += 1;
            }
            Ok(db) => match full_check(&db) {
                Err(e) => {
                    assert!(
                        matches!(&e, BtreeError::Corrupt { page: p, .. } if *p == page as u64),
                        "{e}"
                    );
                    errors += 1;
                }
                Ok(()) => {
                    for (t, m) in &model {
                        assert!(dump_tree(|f| db.scan(t, b"", None, false, f)) == *m);
                    }
                }
            },
        }
    }
    assert!(errors > 10, "only {errors} flips were detected");
}

#[test]
fn bad_meta_falls_back_to_the_other_slot() {
    let opts = small_opts();
    let (disk, model) = sample_db(&opts);
    let db = open_sim(&disk, &opts).unwrap();
    let txn = db.committed_txn();
    drop(db);
    let newest = (txn % 2) as usize * opts.page_size;
    disk.corrupt(newest + META_TXN, |b| *b ^= 0x40);
    let db = open_sim(&disk, &opts).unwrap();
    assert_eq!(db.committed_txn(), txn - 1);
    // Version txn-1 is intact: its pages were not reused by version txn.
    full_check(&db).unwrap();
    drop(db);
    // Both metas bad: refuse to open.
    let other = ((txn + 1) % 2) as usize * opts.page_size;
    disk.corrupt(other + 200, |b| *b ^= 1);
    let err = open_sim(&disk, &opts).err().expect("open must fail");
    assert!(err.to_string().contains("no valid meta"), "{err}");
    let _ = model;
}

/// Rewrites page `id` of an image with `f` and reseals its checksum (so that only the
/// structural checks can catch it).
fn edit_page(img: &mut [u8], ps: usize, id: usize, f: impl Fn(&mut [u8])) {
    let p = &mut img[id * ps..(id + 1) * ps];
    f(p);
    seal(p);
}

fn root_of(disk: &SimDisk, opts: &Options, tree: &str) -> u64 {
    // Find the root through the catalog, by reading pages of the image directly.
    let img = disk.live();
    let ps = opts.page_size;
    let m0 = decode_meta(&img[..ps], 0, ps).ok();
    let m1 = decode_meta(&img[ps..2 * ps], 1, ps).ok();
    let meta = [m0, m1]
        .into_iter()
        .flatten()
        .max_by_key(|m| m.txn)
        .unwrap();
    let mut id = meta.catalog_root as usize;
    loop {
        let p = &img[id * ps..(id + 1) * ps];
        if page_type(p) == PAGE_BRANCH {
            id = super::node::branch_child(p, super::node::branch_search(p, tree.as_bytes()))
                as usize;
            continue;
        }
        let i = super::node::leaf_search(p, tree.as_bytes()).unwrap();
        match super::node::leaf_val(p, i) {
            super::node::Val::Inline(v) => return u64::from_le_bytes(v.try_into().unwrap()),
            _ => unreachable!(),
        }
    }
}

#[test]
fn bad_pointers_wrong_types_and_cycles_are_errors() {
    let opts = small_opts();
    let (disk, _) = sample_db(&opts);
    let ps = opts.page_size;
    let root = root_of(&disk, &opts, "big") as usize;
    let img = disk.live();
    assert_eq!(
        page_type(&img[root * ps..]),
        PAGE_BRANCH,
        "tree 'big' must be deep"
    );
    type Edit = Box<dyn Fn(&mut [u8])>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "pointer out of file",
            Box::new(|p| wr_u64(p, BRANCH_CHILD0, 1 << 40)),
        ),
        (
            "pointer to a meta page",
            Box::new(|p| wr_u64(p, BRANCH_CHILD0, 0)),
        ),
        (
            "cycle",
            Box::new(move |p| wr_u64(p, BRANCH_CHILD0, root as u64)),
        ),
        ("wrong page type", Box::new(|p| p[HDR_TYPE] = PAGE_FREELIST)),
        (
            "slot out of page",
            Box::new(|p| wr_u16(p, BRANCH_SLOTS, 60000)),
        ),
    ];
    for (what, f) in cases {
        let mut bad = img.clone();
        edit_page(&mut bad, ps, root, &*f);
        let db = open_sim(&SimDisk::from_image(bad), &opts).unwrap();
        let r = db.get("big", &0u32.to_be_bytes());
        assert!(
            matches!(r, Err(BtreeError::Corrupt { .. })),
            "{what}: {r:?}"
        );
        let r = db.scan("big", b"", None, false, &mut |_, _| true);
        assert!(
            matches!(r, Err(BtreeError::Corrupt { .. })),
            "{what}: {r:?}"
        );
        // The writer refuses too, and poisons itself instead of writing garbage.
        let mut db = db;
        assert!(db.put("big", &0u32.to_be_bytes(), b"x").is_err(), "{what}");
        assert!(matches!(
            db.put("other", b"k", b"v"),
            Err(BtreeError::Poisoned { .. })
        ));
    }
}

// ---- the real file ----

pub fn run_glommio<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn real_file_round_trip(use_mmap: bool, write_pool: bool) {
    let dir = TempDir::new("real");
    let path = dir.path().join("db");
    let opts = Options {
        use_mmap,
        write_pool,
        ..Options::default()
    };
    let p2 = path.clone();
    let o2 = opts.clone();
    run_glommio(move || {
        async move {
            let mut db = Db::open(&p2, o2.clone()).await.unwrap();
            let mut model = BTreeMap::new();
            let mut rng = Rng::new(3);
            let mut first = None;
            for round in 0..5 {
                for _ in 0..2000 {
                    let k = rng.bytes(16);
                    let n = if rng.below(50) == 0 { 20_000 } else { 100 };
                    let v = rng.bytes(n);
                    db.put("t", &k, &v).unwrap();
                    model.insert(k, v);
                }
                db.commit().await.unwrap();
                let s = db.snapshot();
                assert_eq!(s.txn(), round + 1);
                assert!(dump_tree(|f| s.scan("t", b"", None, false, f)) == model);
                if round == 0 {
                    first = Some((s, model.clone(), db.size_bytes()));
                }
            }
            // The first snapshot outlived file growth (remaps) and page reuse.
            let (s, m, size) = first.take().unwrap();
            assert!(db.size_bytes() > size, "the file must have grown");
            assert!(dump_tree(|f| s.scan("t", b"", None, false, f)) == m);
            drop(s);
            // A second Db on the same file is refused (exclusive lock).
            assert!(Db::open(&p2, o2.clone()).await.is_err());
            db.close().await.unwrap();
            let db = Db::open(&p2, o2).await.unwrap();
            assert!(dump_tree(|f| db.scan("t", b"", None, false, f)) == model);
        }
    });
}

#[test]
fn real_file_mmap() {
    real_file_round_trip(true, true);
}

#[test]
fn real_file_pread() {
    real_file_round_trip(false, false);
}

// ---- SIGKILL ----

const SIGKILL_ENV: &str = "CKV_BTREE_SIGKILL_DIR";

fn kill_value(i: u64) -> Vec<u8> {
    let n = if i.is_multiple_of(7) {
        9000
    } else {
        10 + (i % 300) as usize
    };
    (0..n).map(|j| (i as usize + j) as u8).collect()
}

/// Key `k{j}` exists at counter `c` iff j <= c and not (j + 40 <= c and j.is_multiple_of(3)).
fn kill_expected(j: u64, c: u64) -> bool {
    j <= c && !(j + 40 <= c && j.is_multiple_of(3))
}

/// Opens the file, retrying while the lock is still held: a killed process's io_uring
/// requests may keep its file (and lock) for a moment after it died.
async fn open_when_unlocked(path: &Path) -> Db {
    for _ in 0..500 {
        match Db::open(path, Options::default()).await {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("lock") => {
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("open: {e}"),
        }
    }
    panic!("{} stayed locked", path.display());
}

async fn kill_check(path: &Path) -> u64 {
    let db = open_when_unlocked(path).await;
    let c = db
        .get("meta", b"counter")
        .unwrap()
        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
    let mut seen = 0;
    db.scan("data", b"", None, false, &mut |k, v| {
        let j: u64 = std::str::from_utf8(&k[1..]).unwrap().parse().unwrap();
        assert!(kill_expected(j, c), "key {j} must not exist at counter {c}");
        assert_eq!(v, kill_value(j), "value of key {j}");
        seen += 1;
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=c).filter(|&j| kill_expected(j, c)).count());
    db.close().await.unwrap();
    c
}

/// The child side of `sigkill_loop`: commits forever, printing each durable commit.
#[test]
#[ignore = "child process of sigkill_loop"]
fn sigkill_child() {
    let Ok(dir) = std::env::var(SIGKILL_ENV) else {
        return;
    };
    run_glommio(move || async move {
        let path = Path::new(&dir).join("db");
        let start = kill_check(&path).await;
        let mut db = open_when_unlocked(&path).await;
        for i in start + 1..start + 100_000 {
            db.put("data", format!("k{i:08}").as_bytes(), &kill_value(i))
                .unwrap();
            if i > 40 && (i - 40).is_multiple_of(3) {
                assert!(db
                    .delete("data", format!("k{:08}", i - 40).as_bytes())
                    .unwrap());
            }
            db.put("meta", b"counter", &i.to_le_bytes()).unwrap();
            db.commit().await.unwrap();
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "committed {i}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[test]
fn sigkill_loop() {
    use std::io::BufRead;
    let dir = TempDir::new("sigkill");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(2024);
    let mut acked = 0;
    for round in 0..20 {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "btree::tests::sigkill_child",
                "--ignored",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(SIGKILL_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let target = 1 + rng.below(12);
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut got = 0;
        while got < target {
            let Some(line) = lines.next() else { break };
            if let Some(n) = line.unwrap().strip_prefix("committed ") {
                acked = n.parse().unwrap();
                got += 1;
            }
        }
        assert_eq!(got, target, "round {round}: child exited early");
        // Kill at a random moment: right away, or while later commits are in flight.
        std::thread::sleep(std::time::Duration::from_micros(rng.below(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Lines printed after we stopped reading were acknowledged too.
        for line in lines.map_while(|l| l.ok()) {
            if let Some(n) = line.strip_prefix("committed ") {
                acked = n.parse().unwrap();
            }
        }
        let path = dir.path().join("db");
        let c = run_glommio(move || async move { kill_check(&path).await });
        assert!(
            c >= acked,
            "round {round}: counter {c} < acknowledged {acked}"
        );
        acked = c;
    }
    assert!(acked >= 20);
}
