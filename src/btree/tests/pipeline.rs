//! The two-phase commit: writes go on while a commit's job is in flight. Random
//! operations against a model with the job polled one I/O step at a time (a yielding
//! `SimDisk`), snapshots held across commits, page reuse; crashes at every sync
//! boundary and at random points of a pipelined run (reopen gives the last finished
//! version or the in-flight one, nothing else); failed and dropped jobs poison.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures_lite::future::block_on;

use super::{check_db, check_snapshot, model_of, open_sim, random_value, small_opts, Model, Rng};
use crate::btree::{BtreeError, CommitDone, Db, Options, SimDisk, Snapshot};

type JobFuture = Pin<Box<dyn Future<Output = Result<CommitDone, BtreeError>>>>;

/// A Db on a yielding SimDisk, the live model, the model of every sealed version, and
/// at most one job in flight.
struct Pipe {
    disk: SimDisk,
    db: Db<SimDisk>,
    model: Model,
    /// Sealed version -> its contents (version 0: empty).
    versions: BTreeMap<u64, Model>,
    job: Option<(u64, JobFuture)>,
    /// Job steps polled (each I/O operation yields once).
    polls: u64,
}

const TREES: [&str; 3] = ["a", "b", "c"];

fn norm(m: &Model) -> Model {
    TREES
        .iter()
        .map(|n| (n.to_string(), m.get(*n).cloned().unwrap_or_default()))
        .collect()
}

impl Pipe {
    fn new(opts: &Options) -> Pipe {
        let disk = SimDisk::default();
        let db = open_sim(&disk, opts).unwrap();
        disk.set_yielding(true);
        Pipe {
            disk,
            db,
            model: norm(&Model::new()),
            versions: BTreeMap::from([(0, norm(&Model::new()))]),
            job: None,
            polls: 0,
        }
    }

    /// One random put or delete (mostly deletes when `deleting`), on the Db and model.
    fn write(&mut self, rng: &mut Rng, deleting: bool) -> Result<(), BtreeError> {
        let t = TREES[rng.below(3) as usize];
        let m = self.model.get_mut(t).unwrap();
        if (deleting && rng.below(10) < 8) || rng.below(5) == 0 {
            let key = if !m.is_empty() && rng.below(4) != 0 {
                let i = rng.below(m.len() as u64) as usize;
                m.keys().nth(i).unwrap().clone()
            } else {
                format!("{:04}", rng.below(2000)).into_bytes()
            };
            let existed = self.db.delete(t, &key)?;
            assert_eq!(existed, m.remove(&key).is_some(), "delete result");
        } else {
            let key = format!("{:04}", rng.below(2000)).into_bytes();
            let value = random_value(rng);
            self.db.put(t, &key, &value)?;
            m.insert(key, value);
        }
        Ok(())
    }

    /// Seals the live state as a new version and starts its job (unless one is in
    /// flight or nothing changed).
    fn begin(&mut self) -> Result<(), BtreeError> {
        if self.job.is_some() {
            return Ok(());
        }
        if let Some(job) = self.db.begin_commit()? {
            let txn = job.txn();
            assert_eq!(txn, self.db.committed_txn() + 1);
            assert!(self.db.commit_in_flight());
            self.versions.insert(txn, self.model.clone());
            self.job = Some((txn, Box::pin(job.run())));
        }
        Ok(())
    }

    /// Polls the job one step; when it completes, finishes the commit. Returns whether
    /// a commit finished.
    fn poll(&mut self) -> Result<bool, BtreeError> {
        let Some((txn, fut)) = &mut self.job else {
            return Ok(false);
        };
        self.polls += 1;
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(done) = fut.as_mut().poll(&mut cx) else {
            return Ok(false);
        };
        let txn = *txn;
        self.job = None;
        self.db.finish_commit(done)?;
        assert_eq!(self.db.committed_txn(), txn);
        assert!(!self.db.commit_in_flight());
        Ok(true)
    }

    /// Runs the job in flight (if any) to completion.
    fn drain(&mut self) -> Result<(), BtreeError> {
        while self.job.is_some() {
            self.poll()?;
        }
        Ok(())
    }

    /// The sealed version not finished yet (a failed job's too: its meta write may
    /// have reached the disk).
    fn in_flight(&self) -> Option<u64> {
        let txn = self.db.committed_txn() + 1;
        if let Some((t, _)) = &self.job {
            assert_eq!(*t, txn);
        }
        self.db.commit_in_flight().then_some(txn)
    }

    /// Reopens a crash image of the disk as it is now (`choose` as in
    /// `SimDisk::crash_image`) and checks it holds the last finished version or the
    /// one in flight, intact and writable. Returns the version found.
    fn check_crash_image(&self, opts: &Options, choose: impl FnMut(usize) -> u64) -> u64 {
        let image = self.disk.crash_image(choose);
        let disk = SimDisk::from_image(image);
        let mut db = open_sim(&disk, opts).unwrap();
        let txn = db.committed_txn();
        let finished = self.db.committed_txn();
        assert!(
            txn == finished || Some(txn) == self.in_flight(),
            "reopened version {txn}: finished {finished}, in flight {:?}",
            self.in_flight()
        );
        let got = norm(&model_of(&db, &TREES));
        assert!(got == self.versions[&txn], "version {txn}: contents differ");
        db.check_integrity().unwrap();
        db.put("a", b"after", b"crash").unwrap();
        block_on(db.commit()).unwrap();
        assert_eq!(db.get("a", b"after").unwrap(), Some(b"crash".to_vec()));
        txn
    }
}

/// Random writes with commits pipelined (a job polled one I/O step at a time while
/// writes go on), snapshots taken while jobs are in flight and held across commits,
/// phases that delete most keys so pages are freed and reused; the live state, the
/// snapshots and `check_integrity` stay right throughout, and a reopen gives the last
/// finished version.
#[test]
fn pipelined_commits_match_the_model() {
    let opts = small_opts();
    for seed in 0..3 {
        let mut rng = Rng::new(1000 + seed);
        let mut p = Pipe::new(&opts);
        let mut snaps: Vec<(Snapshot, u64)> = Vec::new();
        let mut finished = 0;
        let mut writes_in_flight = 0;
        let steps = 5000;
        for step in 0..steps {
            let deleting = (step / 800) % 2 == 1;
            match rng.below(100) {
                0..=59 => {
                    writes_in_flight += p.job.is_some() as u64;
                    p.write(&mut rng, deleting).unwrap();
                }
                60..=64 => p.begin().unwrap(),
                65..=94 => finished += p.poll().unwrap() as u64,
                95..=97 => {
                    // A snapshot sees the last finished version, never the in-flight one.
                    let s = p.db.snapshot();
                    assert_eq!(s.txn(), p.db.committed_txn());
                    check_snapshot(&s, &p.versions[&s.txn()]);
                    let txn = s.txn();
                    snaps.push((s, txn));
                    if snaps.len() > 4 {
                        let i = rng.below(snaps.len() as u64) as usize;
                        snaps.swap_remove(i);
                    }
                }
                _ => {
                    for (s, txn) in &snaps {
                        check_snapshot(s, &p.versions[txn]);
                    }
                    if rng.below(3) == 0 {
                        snaps.clear();
                    }
                }
            }
            if step % 61 == 0 {
                check_db(&p.db, &p.model);
                p.db.check_integrity().unwrap();
            }
        }
        assert!(
            finished > 50,
            "seed {seed}: only {finished} commits finished"
        );
        assert!(writes_in_flight > 500, "seed {seed}: {writes_in_flight}");
        for (s, txn) in &snaps {
            check_snapshot(s, &p.versions[txn]);
        }
        // Reopen after the last job: the last finished version, intact.
        p.drain().unwrap();
        let last = p.db.committed_txn();
        drop(snaps);
        let Pipe { disk, db, .. } = p;
        let stats = db.check_integrity().unwrap();
        drop(db);
        disk.set_yielding(false);
        let db = open_sim(&disk, &opts).unwrap();
        assert_eq!(db.committed_txn(), last);
        assert_eq!(db.check_integrity().unwrap().total, stats.total);
    }
}

/// Rewriting the same keys over and over with pipelined commits: freed pages are
/// reused (the file stops growing), and a snapshot held meanwhile keeps its version.
#[test]
fn pipelined_rewrites_reuse_pages() {
    let opts = small_opts();
    let mut p = Pipe::new(&opts);
    let round = |p: &mut Pipe, r: u8| {
        for i in 0..300u32 {
            let t = TREES[(i % 3) as usize];
            let v = vec![r; 150];
            p.db.put(t, &i.to_be_bytes(), &v).unwrap();
            p.model
                .get_mut(t)
                .unwrap()
                .insert(i.to_be_bytes().to_vec(), v);
            // The previous round's job makes progress between writes.
            if i % 10 == 0 {
                p.poll().unwrap();
            }
        }
        p.drain().unwrap();
        p.begin().unwrap();
    };
    for r in 0..5 {
        round(&mut p, r);
    }
    p.drain().unwrap();
    let snap = p.db.snapshot();
    let snap_model = p.versions[&snap.txn()].clone();
    for r in 5..15 {
        round(&mut p, r);
    }
    check_snapshot(&snap, &snap_model);
    drop(snap);
    for r in 15..25 {
        round(&mut p, r);
    }
    let size = p.db.size_bytes();
    for r in 25..60 {
        round(&mut p, r);
        p.db.check_integrity().unwrap();
    }
    check_db(&p.db, &p.model);
    assert!(
        p.db.size_bytes() <= size + (64 << 10),
        "file grew from {size} to {} bytes: pages are not reused",
        p.db.size_bytes()
    );
}

/// One deterministic pipelined run: `commits` versions are sealed, each job polled
/// step by step while the next batch of writes goes in. Stops at the first error
/// (a failed sync) and returns it, with the Pipe as it was then.
fn pipelined_workload(p: &mut Pipe, seed: u64, commits: usize) -> Result<(), BtreeError> {
    let mut rng = Rng::new(seed);
    let mut sealed = 0;
    while sealed < commits {
        for _ in 0..1 + rng.below(40) {
            p.write(&mut rng, false)?;
            if rng.below(3) == 0 {
                p.poll()?;
            }
        }
        // Wait for the previous job, then seal the next version.
        p.drain()?;
        p.begin()?;
        sealed += 1;
    }
    p.drain()
}

/// A crash at every sync of a pipelined run, with the unsynced writes dropped,
/// applied, or a random mix of dropped, applied and torn: reopen gives the last
/// finished version or the one in flight (only if its meta write was issued), never
/// anything else; the failed job poisons the Db.
#[test]
fn crash_at_every_sync_of_a_pipelined_run() {
    let opts = small_opts();
    let commits = 10;
    let mut clean = Pipe::new(&opts);
    let syncs_at_open = clean.disk.syncs();
    pipelined_workload(&mut clean, 21, commits).unwrap();
    let total = clean.disk.syncs() - syncs_at_open;
    assert_eq!(total, 2 * commits as u64);
    let mut rng = Rng::new(77);
    let mut seen_in_flight = 0;
    for crash_at in 0..total {
        let mut p = Pipe::new(&opts);
        p.disk.crash_at_sync(crash_at);
        let err = pipelined_workload(&mut p, 21, commits).unwrap_err();
        assert!(matches!(err, BtreeError::Io { .. }), "{err}");
        // The failed job poisoned the Db: no more writes, no more commits.
        assert!(matches!(
            p.db.put("a", b"x", b"y"),
            Err(BtreeError::Poisoned { .. })
        ));
        assert!(matches!(
            p.db.begin_commit(),
            Err(BtreeError::Poisoned { .. })
        ));
        // The failed version stays sealed (in flight) in the poisoned Db.
        let in_flight = p.in_flight().expect("the failed job's version");
        let at_meta_sync = crash_at % 2 == 1;
        for variant in 0..3 {
            let txn = p.check_crash_image(&opts, |_| match variant {
                0 => 0,
                1 => 1,
                _ => rng.below(6),
            });
            if txn == in_flight {
                assert!(at_meta_sync && variant != 0, "crash at sync {crash_at}");
                seen_in_flight += 1;
            }
            if variant == 0 {
                assert_eq!(txn, crash_at / 2, "crash at sync {crash_at}");
            }
        }
    }
    assert!(seen_in_flight >= commits, "{seen_in_flight}");
}

/// Crash images taken at random points of a pipelined run (between any two I/O
/// steps of a job, with writes of the next version going on) hold the last finished
/// version or the in-flight one.
#[test]
fn crash_at_random_points_of_a_pipelined_run() {
    let opts = small_opts();
    let mut rng = Rng::new(5);
    let mut p = Pipe::new(&opts);
    let mut found = BTreeMap::<bool, u32>::new();
    for step in 0..3000 {
        match rng.below(10) {
            0..=4 => p.write(&mut rng, (step / 600) % 2 == 1).unwrap(),
            5 => p.begin().unwrap(),
            _ => {
                p.poll().unwrap();
            }
        }
        if step % 23 == 0 {
            let txn = p.check_crash_image(&opts, |_| rng.below(8));
            *found.entry(Some(txn) == p.in_flight()).or_default() += 1;
        }
    }
    assert!(found.get(&true).is_some_and(|n| *n > 0), "{found:?}");
    assert!(found.get(&false).is_some_and(|n| *n > 0), "{found:?}");
}

/// A job dropped before its I/O completed (and one never run) poisons the Db; the
/// file still holds the last finished version.
#[test]
fn dropped_job_poisons() {
    let opts = small_opts();
    for polls in [0, 1, 2] {
        let mut p = Pipe::new(&opts);
        p.db.put("a", b"k", b"v1").unwrap();
        block_on(p.db.commit()).unwrap();
        p.db.put("a", b"k", b"v2").unwrap();
        let job = p.db.begin_commit().unwrap().unwrap();
        if polls == 0 {
            drop(job);
        } else {
            let mut fut = Box::pin(job.run());
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..polls {
                assert!(fut.as_mut().poll(&mut cx).is_pending());
            }
        }
        let err = p.db.put("a", b"k2", b"v").unwrap_err();
        assert!(matches!(err, BtreeError::Poisoned { .. }), "{err}");
        // Reads still see the live state.
        assert_eq!(p.db.get("a", b"k").unwrap(), Some(b"v2".to_vec()));
        let Pipe { disk, db, .. } = p;
        drop(db);
        disk.set_yielding(false);
        let db = open_sim(&disk, &opts).unwrap();
        assert_eq!(db.get("a", b"k").unwrap(), Some(b"v1".to_vec()));
    }
}

/// At most one commit in flight: sealing another before finishing the first is a bug
/// of the caller.
#[test]
#[should_panic(expected = "begin_commit while version 2 is in flight")]
fn second_begin_while_in_flight_panics() {
    let mut p = Pipe::new(&small_opts());
    p.db.put("a", b"k", b"v").unwrap();
    block_on(p.db.commit()).unwrap();
    p.db.put("a", b"k", b"v2").unwrap();
    let _job = p.db.begin_commit().unwrap();
    p.db.put("a", b"k", b"v3").unwrap();
    let _ = p.db.begin_commit();
}

/// On the real file through glommio (mmap, pwrite pool): each job runs in its own
/// task while the writer keeps putting; the file grows (remaps) under in-flight jobs;
/// reads through the Db and through snapshots stay right; a reopen gives the last
/// finished version.
#[test]
fn pipelined_commits_on_the_real_file() {
    use super::{dump_tree, run_glommio, TempDir};
    let dir = TempDir::new("pipelined");
    let path = dir.path().join("db");
    run_glommio(move || async move {
        let opts = Options::default();
        let mut db = Db::open(&path, opts.clone()).await.unwrap();
        let mut rng = Rng::new(8);
        let mut model = BTreeMap::new();
        let mut sealed = BTreeMap::from([(0, BTreeMap::new())]);
        let mut overlapped = 0;
        for round in 0..8u64 {
            let job = db.begin_commit().unwrap();
            let task = job.map(|j| {
                sealed.insert(j.txn(), model.clone());
                glommio::spawn_local(j.run())
            });
            // Writes of the next version while the job runs in its task.
            for i in 0..1500 {
                let k = rng.below(20_000).to_be_bytes().to_vec();
                let v = vec![round as u8; if i % 100 == 0 { 9000 } else { 200 }];
                db.put("t", &k, &v).unwrap();
                model.insert(k, v);
                if i % 300 == 0 {
                    glommio::yield_if_needed().await;
                    futures_lite::future::yield_now().await;
                }
            }
            let s = db.snapshot();
            assert!(dump_tree(|f| s.scan("t", b"", None, false, f)) == sealed[&s.txn()]);
            if let Some(task) = task {
                overlapped += db.commit_in_flight() as u32;
                db.finish_commit(task.await).unwrap();
            }
            assert!(dump_tree(|f| db.scan("t", b"", None, false, f)) == model);
        }
        assert!(overlapped > 0);
        db.commit().await.unwrap();
        let last = db.committed_txn();
        db.close().await.unwrap();
        let db = Db::open(&path, opts).await.unwrap();
        assert_eq!(db.committed_txn(), last);
        assert!(dump_tree(|f| db.scan("t", b"", None, false, f)) == model);
        db.check_integrity().unwrap();
    });
}
