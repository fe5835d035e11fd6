//! WAL benchmark (run through `scripts/wal-bench.sh`, release build).
//!
//! In one run, on one file system (default `/var/tmp/corekv-wal-bench`, never tmpfs):
//! 1. segment preparation: fallocate vs writing zeros (time to prepare, and the rate of
//!    4 KiB write+fdatasync into the prepared file afterwards);
//! 2. the raw limit: an aligned O_DIRECT write + fdatasync loop (and the O_DSYNC
//!    variant) with exactly the bytes the WAL writes per group commit, no WAL logic;
//! 3. the WAL with one appender appending batches of 1, 16, 128, 1024 records of 256
//!    bytes and waiting for each to be durable;
//! 4. the WAL with 1..1024 concurrent appenders (glommio tasks on one executor), each
//!    appending one 256-byte record and waiting for it to be durable.
//!
//! Prints durable appends/s, MB/s of records, p50/p99 ack latency. Last line:
//! `wal: <appends/s> appends/s at 1024 appenders, <ratio> of raw limit`.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv::raft::types::{ConfState, Entry, EntryKind, SnapshotMeta, Storage};
use corekv::wal::format::{append_record_len, BLOCK_BYTES, REC_HEADER_LEN};
use corekv::wal::{Disk, DiskFile, DmaDisk, IoBuf, Prepare, SyncMode, Wal, WalOptions};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

const RECORD: usize = 256;
const SEG: u64 = 64 << 20;

fn secs() -> Duration {
    let s: f64 = std::env::var("WAL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.5);
    Duration::from_secs_f64(s)
}

/// Unmeasured time at the start of each measurement (the device is still flushing what
/// preparing the files wrote).
const WARMUP: Duration = Duration::from_millis(300);

fn pct(lat: &mut [u32], p: f64) -> u32 {
    if lat.is_empty() {
        return 0;
    }
    lat.sort_unstable();
    lat[((lat.len() - 1) as f64 * p) as usize]
}

/// Bytes the WAL writes for one group of `n` appends of `per` entries each.
fn wal_write_bytes(n: usize, per: usize) -> u64 {
    let e = entries(0, per);
    let data = (append_record_len(&e) * n) as u64;
    let mut total = data.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
    if total - data < REC_HEADER_LEN as u64 {
        total += BLOCK_BYTES;
    }
    total
}

fn entries(first: u64, n: usize) -> Vec<Entry> {
    (0..n as u64)
        .map(|i| Entry {
            term: 1,
            index: first + i,
            kind: EntryKind::Normal,
            data: vec![0xab; RECORD],
        })
        .collect()
}

struct Res {
    appends_s: f64,
    mb_s: f64,
    p50: u32,
    p99: u32,
}

fn show(label: &str, r: &Res) {
    println!(
        "{label:<44} {:>10.0} appends/s {:>8.1} MB/s  p50 {:>6} us  p99 {:>6} us",
        r.appends_s, r.mb_s, r.p50, r.p99
    );
}

async fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The raw limit: `bytes` (aligned) written + synced in a loop into a prepared file,
/// each write counting for `appends` appends. Measured in slices interleaved with the
/// WAL's, so that the (noisy, shared) disk treats both alike.
struct Raw {
    f: corekv::wal::disk::DmaDiskFile,
    dir: PathBuf,
    bytes: u64,
    appends: usize,
    pos: u64,
    acc: Acc,
}

#[derive(Default)]
struct Acc {
    appends: u64,
    secs: f64,
    lat: Vec<u32>,
}

impl Acc {
    fn res(&mut self) -> Res {
        Res {
            appends_s: self.appends as f64 / self.secs,
            mb_s: (self.appends * RECORD as u64) as f64 / self.secs / 1e6,
            p50: pct(&mut self.lat, 0.5),
            p99: pct(&mut self.lat, 0.99),
        }
    }
}

impl Raw {
    async fn new(base: &Path, mode: SyncMode, bytes: u64, appends: usize) -> Raw {
        let dir = fresh_dir(base, "raw").await;
        let disk = DmaDisk::open(&dir, mode).await.unwrap();
        let f = disk.create("raw").await.unwrap();
        zero_fill(&f, SEG).await;
        Raw {
            f,
            dir,
            bytes,
            appends,
            pos: 0,
            acc: Acc::default(),
        }
    }

    async fn slice(&mut self, d: Duration, measure: bool) {
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed() < d {
            if self.pos + self.bytes > SEG {
                self.pos = 0;
            }
            let mut buf = self.f.alloc_buf(self.bytes as usize);
            buf.as_mut_slice().fill(7);
            let t = Instant::now();
            self.f.write_at(buf, self.pos).await.unwrap();
            self.f.sync().await.unwrap();
            if measure {
                self.acc.lat.push(t.elapsed().as_micros() as u32);
            }
            self.pos += self.bytes;
            n += 1;
        }
        if measure {
            self.acc.appends += n * self.appends as u64;
            self.acc.secs += t0.elapsed().as_secs_f64();
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn zero_fill<F: DiskFile>(f: &F, len: u64) {
    let chunk = 1u64 << 20;
    let mut off = 0;
    while off < len {
        let mut b = f.alloc_buf(chunk as usize);
        b.as_mut_slice().fill(0);
        f.write_at(b, off).await.unwrap();
        off += chunk;
    }
    f.sync().await.unwrap();
}

/// Segment preparation: time to prepare, then 4 KiB write+fdatasync rate into it.
async fn prepare_cmp(base: &Path, how: Prepare) -> (f64, f64) {
    let dir = fresh_dir(base, "prep").await;
    let disk = DmaDisk::open(&dir, SyncMode::Fdatasync).await.unwrap();
    let f = disk.create("seg").await.unwrap();
    let t = Instant::now();
    match how {
        Prepare::ZeroFill => zero_fill(&f, SEG).await,
        Prepare::Fallocate => {
            f.allocate(SEG).await.unwrap();
            f.sync().await.unwrap();
        }
    }
    disk.sync_dir().await.unwrap();
    let prep_ms = t.elapsed().as_secs_f64() * 1e3;
    let (mut n, mut pos) = (0u64, 0u64);
    let t0 = Instant::now();
    while t0.elapsed() < secs() && pos + 4096 <= SEG {
        let mut b = f.alloc_buf(4096);
        b.as_mut_slice().fill(1);
        f.write_at(b, pos).await.unwrap();
        f.sync().await.unwrap();
        pos += 4096;
        n += 1;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    (prep_ms, rate)
}

fn wal_opts(mode: SyncMode) -> WalOptions {
    WalOptions {
        sync_mode: mode,
        ..WalOptions::default()
    }
}

/// Compacts the log every 20 ms (once 100,000 entries are retained) to 20,000 entries behind its end, as a state machine
/// taking snapshots would, so that segments are recycled. Stops when `stop` is set.
fn spawn_compactor(wal: &Wal, stop: Rc<Cell<bool>>) {
    let wal = wal.clone();
    glommio::spawn_local(async move {
        while !stop.get() {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let (first, last) = (wal.first_index().unwrap(), wal.last_index().unwrap());
            if last > first + 100_000 {
                let meta = SnapshotMeta {
                    index: last - 20_000,
                    term: 1,
                    conf_state: ConfState::default(),
                };
                wal.compact(meta).await.unwrap();
            }
        }
    })
    .detach();
}

/// An open WAL under load: `tasks` appenders of `batch` records each.
struct WalRun {
    wal: Wal,
    dir: PathBuf,
    stop: Rc<Cell<bool>>,
    next: Rc<Cell<u64>>,
    tasks: usize,
    batch: usize,
    acc: Acc,
    flushes: u64,
    bytes: u64,
    io_ns: u64,
}

impl WalRun {
    async fn new(base: &Path, mode: SyncMode, tasks: usize, batch: usize) -> WalRun {
        let dir = fresh_dir(base, "wal").await;
        let (wal, _) = Wal::open(&dir, wal_opts(mode)).await.unwrap();
        let bg = glommio::executor().create_task_queue(
            Shares::Static(50),
            Latency::NotImportant,
            "wal-background",
        );
        let w = wal.clone();
        glommio::spawn_local_into(async move { w.run_background().await }, bg)
            .unwrap()
            .detach();
        wal.prepare_spare().await.unwrap();
        let stop = Rc::new(Cell::new(false));
        spawn_compactor(&wal, stop.clone());
        WalRun {
            wal,
            dir,
            stop,
            next: Rc::new(Cell::new(1)),
            tasks,
            batch,
            acc: Acc::default(),
            flushes: 0,
            bytes: 0,
            io_ns: 0,
        }
    }

    /// Runs the appenders for `d`.
    async fn slice(&mut self, d: Duration, measure: bool) {
        let lat = Rc::new(RefCell::new(Vec::new()));
        let run = Rc::new(Cell::new(true));
        let before = self.wal.stats();
        let first = self.next.get();
        let t0 = Instant::now();
        let mut hs = Vec::new();
        for _ in 0..self.tasks {
            let (wal, next, lat, run) = (
                self.wal.clone(),
                self.next.clone(),
                lat.clone(),
                run.clone(),
            );
            let batch = self.batch;
            hs.push(glommio::spawn_local(async move {
                while run.get() {
                    let i = next.get();
                    next.set(i + batch as u64);
                    let e = entries(i, batch);
                    let t = Instant::now();
                    wal.append(i, None, &e).unwrap();
                    wal.wait_durable(i).await.unwrap();
                    lat.borrow_mut().push(t.elapsed().as_micros() as u32);
                }
            }));
        }
        glommio::timer::sleep(d).await;
        let n = self.next.get() - first;
        let el = t0.elapsed().as_secs_f64();
        let s = self.wal.stats();
        run.set(false);
        for h in hs {
            h.await;
        }
        if measure {
            self.acc.appends += n;
            self.acc.secs += el;
            self.acc.lat.extend(lat.take());
            self.flushes += s.flushes - before.flushes;
            self.bytes += s.bytes_written - before.bytes_written;
            self.io_ns += s.io_ns - before.io_ns;
        }
    }

    /// Warms up until compacted segments are being recycled (at most 3 s), as in a
    /// long-running server: the first segments of a new log must be zero-filled.
    async fn warm(&mut self) {
        let t0 = Instant::now();
        while self.wal.stats().segments_recycled < 2 && t0.elapsed() < Duration::from_secs(3) {
            self.slice(Duration::from_millis(100), false).await;
        }
        self.slice(WARMUP, false).await;
    }

    fn bytes_per_write(&self) -> u64 {
        self.bytes / self.flushes.max(1)
    }

    fn report(&self) {
        let s = self.wal.stats();
        println!(
            "    {} writes of {} B, mean write+fdatasync {:.0} us, mean cycle {:.0} us; \
             segments: {} zero-filled, {} recycled, {} inline",
            self.flushes,
            self.bytes_per_write(),
            self.io_ns as f64 / 1e3 / self.flushes.max(1) as f64,
            self.acc.secs * 1e6 / self.flushes.max(1) as f64,
            s.segments_prepared,
            s.segments_recycled,
            s.inline_prepares
        );
    }
}

impl Drop for WalRun {
    fn drop(&mut self) {
        self.stop.set(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Interleaves raw and WAL slices; returns (raw, wal).
async fn compare(raw: &mut Raw, wal: &mut WalRun) -> (Res, Res) {
    wal.warm().await;
    raw.slice(WARMUP, false).await;
    let slices = 6;
    let d = secs() / slices;
    for _ in 0..slices {
        raw.slice(d, true).await;
        wal.slice(d, true).await;
    }
    (raw.acc.res(), wal.acc.res())
}

fn fs_type(p: &Path) -> String {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    out
}

fn main() {
    let base = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/var/tmp/corekv-wal-bench".into()),
    );
    std::fs::create_dir_all(&base).unwrap();
    let fs = fs_type(&base);
    assert!(
        fs != "tmpfs",
        "{} is tmpfs: O_DIRECT numbers would be meaningless",
        base.display()
    );
    println!(
        "wal-bench in {} ({fs}), {:?} per measurement, {RECORD}-byte records",
        base.display(),
        secs()
    );
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(4 << 20)
        .spawn(move || async move {
            let only_concurrent = std::env::var("WAL_BENCH_ONLY").is_ok_and(|v| v == "concurrent");
            if !only_concurrent {
                println!("-- segment preparation (64 MiB), then 4 KiB write+fdatasync into it");
                for how in [Prepare::ZeroFill, Prepare::Fallocate] {
                    let (ms, rate) = prepare_cmp(&base, how).await;
                    println!("{how:?}: prepare {ms:.1} ms, then {rate:.0} syncs/s");
                }
                println!(
                    "-- batches: one appender, N records per append, raw = same bytes per write"
                );
                let mut worst: f64 = f64::MAX;
                for batch in [1usize, 16, 128, 1024] {
                    let bytes = wal_write_bytes(1, batch);
                    for mode in [SyncMode::Fdatasync, SyncMode::Dsync] {
                        let mut raw = Raw::new(&base, mode, bytes, batch).await;
                        let mut wal = WalRun::new(&base, mode, 1, batch).await;
                        let (r, w) = compare(&mut raw, &mut wal).await;
                        show(&format!("raw {mode:?} batch {batch} ({bytes} B/write)"), &r);
                        show(&format!("wal {mode:?} batch {batch}"), &w);
                        wal.report();
                        let ratio = w.appends_s / r.appends_s;
                        println!("    ratio {ratio:.2}");
                        if mode == SyncMode::Fdatasync {
                            worst = worst.min(ratio);
                        }
                    }
                }
                println!("worst WAL/raw ratio over batch sizes (fdatasync): {worst:.2}");
            }
            println!("-- concurrent appenders, one record each; raw = WAL's mean bytes per write");
            let mut last = (0.0, 0.0);
            for tasks in [1usize, 4, 16, 64, 256, 1024] {
                // Find the WAL's write size first, then compare with raw at that size.
                let mut wal = WalRun::new(&base, SyncMode::Fdatasync, tasks, 1).await;
                wal.warm().await;
                wal.slice(Duration::from_millis(300), true).await;
                let per_write = wal.bytes_per_write().div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES;
                let per = (wal.acc.appends / wal.flushes.max(1)).max(1) as usize;
                wal.acc = Acc::default();
                (wal.flushes, wal.bytes, wal.io_ns) = (0, 0, 0);
                let mut raw = Raw::new(&base, SyncMode::Fdatasync, per_write, per).await;
                let (r, w) = compare(&mut raw, &mut wal).await;
                show(&format!("raw {per_write} B/write = {per} appends"), &r);
                show(&format!("wal {tasks} appenders"), &w);
                wal.report();
                println!("    ratio {:.2}", w.appends_s / r.appends_s);
                if tasks == 1024 {
                    last = (w.appends_s, w.appends_s / r.appends_s);
                }
            }
            println!(
                "wal: {:.0} appends/s at 1024 appenders, {:.2} of raw limit",
                last.0, last.1
            );
        })
        .unwrap()
        .join()
        .unwrap();
}
