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

use corekv::raft::types::{Entry, EntryKind};
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

/// Raw limit: write `bytes` (aligned) + sync in a loop into a prepared file; each write
/// counts for `appends` appends.
async fn raw(base: &Path, mode: SyncMode, bytes: u64, appends: usize) -> Res {
    let dir = fresh_dir(base, "raw").await;
    let disk = DmaDisk::open(&dir, mode).await.unwrap();
    let f = disk.create("raw").await.unwrap();
    zero_fill(&f, SEG).await;
    let mut lat = Vec::new();
    let (mut pos, mut n) = (0u64, 0u64);
    let mut t0 = Instant::now();
    let mut warm = true;
    while t0.elapsed() < secs() {
        if warm && t0.elapsed() >= WARMUP {
            (warm, n, t0) = (false, 0, Instant::now());
            lat.clear();
        }
        if pos + bytes > SEG {
            pos = 0;
        }
        let mut buf = f.alloc_buf(bytes as usize);
        buf.as_mut_slice().fill(7);
        let t = Instant::now();
        f.write_at(buf, pos).await.unwrap();
        f.sync().await.unwrap();
        lat.push(t.elapsed().as_micros() as u32);
        pos += bytes;
        n += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    Res {
        appends_s: (n as f64 * appends as f64) / el,
        mb_s: n as f64 * (appends * RECORD) as f64 / el / 1e6,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
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

async fn open_wal(base: &Path, mode: SyncMode) -> (Wal, PathBuf) {
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
    (wal, dir)
}

/// One appender, batches of `batch` records per append, waiting for each.
async fn wal_batches(base: &Path, mode: SyncMode, batch: usize) -> Res {
    let (wal, dir) = open_wal(base, mode).await;
    let mut lat = Vec::new();
    let (mut next, mut ready, mut n) = (1u64, 0u64, 0u64);
    let mut t0 = Instant::now();
    let mut warm = true;
    while t0.elapsed() < secs() {
        if warm && t0.elapsed() >= WARMUP {
            (warm, n, t0) = (false, 0, Instant::now());
            lat.clear();
        }
        let e = entries(next, batch);
        next += batch as u64;
        ready += 1;
        let t = Instant::now();
        wal.append(ready, None, &e).unwrap();
        wal.wait_durable(ready).await.unwrap();
        lat.push(t.elapsed().as_micros() as u32);
        n += batch as u64;
    }
    let el = t0.elapsed().as_secs_f64();
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    Res {
        appends_s: n as f64 / el,
        mb_s: (n * RECORD as u64) as f64 / el / 1e6,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
    }
}

/// `tasks` concurrent appenders of one record each. Returns the result and the mean
/// bytes per group-commit write.
async fn wal_concurrent(base: &Path, mode: SyncMode, tasks: usize) -> (Res, u64) {
    let (wal, dir) = open_wal(base, mode).await;
    let next = Rc::new(Cell::new(1u64));
    let lat = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(Cell::new(false));
    let mut hs = Vec::new();
    for _ in 0..tasks {
        let (wal, next, lat, stop) = (wal.clone(), next.clone(), lat.clone(), stop.clone());
        hs.push(glommio::spawn_local(async move {
            let mut done = 0u64;
            while !stop.get() {
                let i = next.get();
                next.set(i + 1);
                let e = entries(i, 1);
                let t = Instant::now();
                wal.append(i, None, &e).unwrap();
                wal.wait_durable(i).await.unwrap();
                lat.borrow_mut().push(t.elapsed().as_micros() as u32);
                done += 1;
            }
            done
        }));
    }
    glommio::timer::sleep(WARMUP).await;
    let (before, first) = (wal.stats(), next.get());
    lat.borrow_mut().clear();
    let t0 = Instant::now();
    glommio::timer::sleep(secs()).await;
    let n = next.get() - first;
    let el = t0.elapsed().as_secs_f64();
    let s = wal.stats();
    stop.set(true);
    for h in hs {
        h.await;
    }
    let flushes = (s.flushes - before.flushes).max(1);
    let per_flush = (s.bytes_written - before.bytes_written) / flushes;
    println!(
        "    {flushes} writes, mean cycle {:.0} us, of which write+fdatasync {:.0} us",
        el * 1e6 / flushes as f64,
        (s.io_ns - before.io_ns) as f64 / 1e3 / flushes as f64
    );
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    let mut lat = lat.take();
    (
        Res {
            appends_s: n as f64 / el,
            mb_s: (n * RECORD as u64) as f64 / el / 1e6,
            p50: pct(&mut lat, 0.5),
            p99: pct(&mut lat, 0.99),
        },
        per_flush,
    )
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
                        let r = raw(&base, mode, bytes, batch).await;
                        show(&format!("raw {mode:?} batch {batch} ({bytes} B/write)"), &r);
                        let w = wal_batches(&base, mode, batch).await;
                        show(&format!("wal {mode:?} batch {batch}"), &w);
                        let ratio = w.appends_s / r.appends_s;
                        println!("    ratio {ratio:.2}");
                        if mode == SyncMode::Fdatasync {
                            worst = worst.min(ratio);
                        }
                    }
                }
                println!("worst WAL/raw ratio over batch sizes (fdatasync): {worst:.2}");
            }
            println!("-- concurrent appenders, one record each");
            let mut last = (0.0, 0.0);
            for tasks in [1usize, 4, 16, 64, 256, 1024] {
                let (r, per_flush) = wal_concurrent(&base, SyncMode::Fdatasync, tasks).await;
                show(&format!("wal {tasks} appenders ({per_flush} B/write)"), &r);
                if tasks == 1024 {
                    // Raw limit at the same mean write size (whole blocks).
                    let per = (per_flush as usize / append_record_len(&entries(0, 1))).max(1);
                    let bytes = per_flush.div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES;
                    let rr = raw(&base, SyncMode::Fdatasync, bytes, per).await;
                    show(&format!("raw same bytes/write ({per} appends)"), &rr);
                    last = (r.appends_s, r.appends_s / rr.appends_s);
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
