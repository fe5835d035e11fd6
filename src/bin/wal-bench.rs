//! WAL benchmark (run through `scripts/wal-bench.sh`, release build).
//!
//! In one run, on one file system (default `/var/tmp/corekv-wal-bench`, never tmpfs):
//! 1. segment preparation: fallocate vs writing zeros (time to prepare, and the rate of
//!    4 KiB write+fdatasync into the prepared file afterwards);
//! 2. one appender appending batches of 1, 16, 128, 1024 records of 256 bytes and
//!    waiting for each to be durable, against the raw limit;
//! 3. 1..1024 concurrent appenders (glommio tasks on one executor), each appending one
//!    256-byte record and waiting for it to be durable, against the raw limit.
//!
//! Every load runs in both sync modes, each against raw in the same mode (write +
//! fdatasync, or one write to a file opened O_DSYNC): the WAL's default mode first
//! (O_DSYNC, the faster of the two at every load measured, see `docs/wal.md`).
//! The summary lines are those of the default mode.
//!
//! # The raw limit, and why the comparison is fair
//!
//! "Raw" is an aligned O_DIRECT write + fdatasync loop with no WAL logic. To be a fair
//! ceiling it does what the WAL's disk traffic does and nothing less:
//! - it writes exactly the bytes the WAL writes per group commit (the same record
//!   sizes, padded to the block: computed for the batch loads, and measured from the
//!   WAL's own counters for the concurrent ones);
//! - each write goes to fresh blocks, advancing through a 64 MiB file prepared exactly
//!   like a WAL segment (zeros written and fdatasynced per 1 MiB chunk), wrapping to
//!   its start like the WAL moving on to a recycled segment; it never rewrites one
//!   block over and over;
//! - its files are prepared once at the start of the run, long before any measurement,
//!   so the device is not still flushing them (an earlier version zero-filled a new raw
//!   file right before each comparison and, with one fdatasync at the end, left up to
//!   64 MiB for the device to flush during the raw slices: raw looked up to 4x slower);
//! - it fills a freshly allocated DMA buffer per write, as the WAL does.
//!
//! The WAL keeps all of its own work: every group write starts on a fresh block, one
//! write + one fdatasync per group, a crc per record, segment switches, a compactor
//! (as a state machine taking snapshots would: its Snapshot records and the recycling
//! of segments, with their directory fsyncs, are in the measurement).
//!
//! # Rounds
//!
//! The disk is shared (other jobs' fsyncs make single writes take 0.1 to 15 ms), so raw
//! and WAL run in `WAL_BENCH_ROUNDS` (20) interleaved rounds, each a raw slice and a WAL
//! slice back to back (alternating which goes first), `WAL_BENCH_SECS` (1.5 s) per side
//! in all. Reported: the median over rounds of each side's rate, the median of the
//! per-round WAL/raw ratios with their min..max spread, ack latency p50/p99 over all
//! rounds, and the executor thread's CPU time per append (the "one core" figure; it
//! includes the kernel's time to submit the I/O, a VM exit per write on virtio).
//! Each slice counts only acknowledged appends and ends when the last one in flight is
//! acknowledged, like the raw loop, which counts whole writes.
//!
//! Because the disk's noise swamps single ratios, each comparison also reports the
//! mean time per write spent *outside* write+fdatasync (raw: allocating and filling the
//! buffer; WAL: appending, forming the group, copying and sealing records, publishing,
//! waking the appenders). That part does not depend on the disk, and with the median
//! write+fdatasync time `io` it gives the ratio on a quiet disk:
//! `(io + raw gap) / (io + WAL gap)` at equal bytes per write.
//! With one appender each append's own time outside write+fdatasync is recorded too,
//! and its p10/p50/p90 printed: other jobs preempting the executor inflate the mean
//! gap by tens of µs from one run to the next, the median far less.
//!
//! `WAL_BENCH_ONLY=prep,batch,concurrent` picks sections; `WAL_BENCH_SIZES=1,1024` picks
//! batch sizes and appender counts; `WAL_BENCH_MODES=dsync` (or `fdatasync`) one mode;
//! `WAL_BENCH_SEG_MIB=n` the WAL's segment size (default 64; a diagnostic: 1024 makes
//! segment switches 16x rarer); `WAL_BENCH_RAW_FILES=n` makes raw rotate through n
//! prepared 64 MiB files instead of one (default 1, the baseline; a diagnostic: the
//! WAL rotates through several segment files); `WAL_BENCH_RAW_FILL=each|ahead|none`
//! how raw fills its buffers (`each`, the baseline: each buffer right before its
//! write; two diagnostics: `ahead` fills the next buffer while a write is in flight,
//! as the WAL's write window makes and touches its next buffer; `none` writes
//! buffers nobody filled, a bound no writer of real data can reach). Prints a
//! markdown summary table at the end; last line: `wal: <appends/s> appends/s at 1024
//! appenders, <ratio> of raw limit`.
//!
//! With one appender it also prints the percentiles of each append's time in
//! write+fdatasync next to raw's: the medians match; the WAL's p99 is heavier.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corekv::raft::types::{Entry, EntryKind};
use corekv::wal::format::{append_record_len, BLOCK_BYTES, REC_HEADER_LEN};
use corekv::wal::{Disk, DiskFile, DmaDisk, IoBuf, Prepare, SyncMode, Wal, WalOptions};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

#[path = "../../benches/support/wal_compact.rs"]
mod wal_compact;

const RECORD: usize = 256;
const SEG: u64 = 64 << 20;

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Measured time per side (raw or WAL) of one comparison.
fn secs() -> Duration {
    Duration::from_secs_f64(env_f64("WAL_BENCH_SECS", 1.5))
}

fn rounds() -> usize {
    env_f64("WAL_BENCH_ROUNDS", 20.0).max(1.0) as usize
}

/// The WAL's default sync mode (what a server uses unless told otherwise).
fn default_mode() -> SyncMode {
    WalOptions::default().sync_mode
}

/// The sync modes measured: both (the default first), or those `WAL_BENCH_MODES`
/// names (`dsync`, `fdatasync`, comma-separated).
fn modes() -> Vec<SyncMode> {
    let mut all = vec![default_mode()];
    all.extend(
        [SyncMode::Dsync, SyncMode::Fdatasync]
            .into_iter()
            .filter(|&m| m != default_mode()),
    );
    match std::env::var("WAL_BENCH_MODES") {
        Ok(v) => all
            .into_iter()
            .filter(|&m| v.split(',').any(|s| s == m.name()))
            .collect(),
        Err(_) => all,
    }
}

fn mode_label(m: SyncMode) -> &'static str {
    match m {
        SyncMode::Fdatasync => ", fdatasync",
        SyncMode::Dsync => ", O_DSYNC",
    }
}

fn wanted(section: &str) -> bool {
    std::env::var("WAL_BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s == section))
}

fn sizes(all: &[usize]) -> Vec<usize> {
    match std::env::var("WAL_BENCH_SIZES") {
        Ok(v) => {
            let want: Vec<usize> = v.split(',').filter_map(|s| s.parse().ok()).collect();
            all.iter().copied().filter(|n| want.contains(n)).collect()
        }
        Err(_) => all.to_vec(),
    }
}

/// Unmeasured time at the start of each comparison.
const WARMUP: Duration = Duration::from_millis(300);

/// CPU time of the calling thread (the executor: one core), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; no other memory is touched.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn pct<T: Ord + Copy + Default>(lat: &mut [T], p: f64) -> T {
    if lat.is_empty() {
        return T::default();
    }
    lat.sort_unstable();
    lat[((lat.len() - 1) as f64 * p) as usize]
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
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
            data: vec![0xab; RECORD].into(),
        })
        .collect()
}

/// One measured slice of one side.
#[derive(Default)]
struct Slice {
    appends: u64,
    secs: f64,
    cpu_ns: u64,
}

impl Slice {
    fn rate(&self) -> f64 {
        self.appends as f64 / self.secs.max(1e-9)
    }
}

/// All measured slices of one side of a comparison.
#[derive(Default)]
struct Side {
    slices: Vec<Slice>,
    lat: Vec<u32>,
}

impl Side {
    fn rates(&self) -> Vec<f64> {
        self.slices.iter().map(Slice::rate).collect()
    }
    fn cpu_us_per_append(&self) -> f64 {
        let cpu: u64 = self.slices.iter().map(|s| s.cpu_ns).sum();
        let n: u64 = self.slices.iter().map(|s| s.appends).sum();
        cpu as f64 / 1e3 / n.max(1) as f64
    }
}

/// The result of one comparison.
struct Cmp {
    label: String,
    raw_bytes: u64,
    raw: f64,
    wal: f64,
    ratio: f64,
    ratio_min: f64,
    ratio_max: f64,
    raw_p50: u32,
    raw_p99: u32,
    wal_p50: u32,
    wal_p99: u32,
    wal_cpu_us: f64,
    raw_cpu_us: f64,
    /// Mean time per write outside write+fdatasync (filling the buffer, and for the
    /// WAL: appending, group forming, sealing, publishing, waking the appenders).
    raw_gap_us: f64,
    wal_gap_us: f64,
    raw_io_mean_us: f64,
}

impl Cmp {
    fn new(label: String, raw_bytes: u64, raw: &mut Side, wal: &mut Side, wal_gap_us: f64) -> Cmp {
        let raw_secs: f64 = raw.slices.iter().map(|s| s.secs).sum();
        let raw_io_us: f64 = raw.lat.iter().map(|&l| l as f64).sum();
        let raw_gap_us = (raw_secs * 1e6 - raw_io_us) / raw.lat.len().max(1) as f64;
        let ratios: Vec<f64> = raw
            .slices
            .iter()
            .zip(&wal.slices)
            .map(|(r, w)| w.rate() / r.rate().max(1e-9))
            .collect();
        Cmp {
            label,
            raw_bytes,
            raw: median(&raw.rates()),
            wal: median(&wal.rates()),
            ratio: median(&ratios),
            ratio_min: ratios.iter().copied().fold(f64::MAX, f64::min),
            ratio_max: ratios.iter().copied().fold(0.0, f64::max),
            raw_p50: pct(&mut raw.lat, 0.5),
            raw_p99: pct(&mut raw.lat, 0.99),
            wal_p50: pct(&mut wal.lat, 0.5),
            wal_p99: pct(&mut wal.lat, 0.99),
            wal_cpu_us: wal.cpu_us_per_append(),
            raw_cpu_us: raw.cpu_us_per_append(),
            raw_gap_us,
            wal_gap_us,
            raw_io_mean_us: raw_io_us / raw.lat.len().max(1) as f64,
        }
    }

    fn show(&self) {
        println!(
            "{:<26} raw {:>9.0}/s  wal {:>9.0}/s  ratio {:.2} ({:.2}..{:.2})  \
             p50/p99 us raw {}/{} wal {}/{}  cpu us/append raw {:.2} wal {:.2}  \
             us/write outside write+fdatasync raw {:.0} wal {:.0}",
            self.label,
            self.raw,
            self.wal,
            self.ratio,
            self.ratio_min,
            self.ratio_max,
            self.raw_p50,
            self.raw_p99,
            self.wal_p50,
            self.wal_p99,
            self.raw_cpu_us,
            self.wal_cpu_us,
            self.raw_gap_us,
            self.wal_gap_us
        );
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} ({:.2}–{:.2}) | {} / {} | {} / {} | {:.0} / {:.0} | {:.2} |",
            self.label,
            self.raw_bytes,
            self.raw,
            self.wal,
            self.ratio,
            self.ratio_min,
            self.ratio_max,
            self.raw_p50,
            self.raw_p99,
            self.wal_p50,
            self.wal_p99,
            self.raw_gap_us,
            self.wal_gap_us,
            self.wal_cpu_us
        )
    }
}

/// Writes zeros over `len` bytes of `f` the way the WAL prepares a segment: 1 MiB at a
/// time, each chunk fdatasynced.
async fn zero_fill<F: DiskFile>(f: &F, len: u64) {
    let chunk = 1u64 << 20;
    let mut off = 0;
    while off < len {
        let mut b = f.alloc_buf(chunk as usize);
        b.as_mut_slice().fill(0);
        f.write_at(b, off).await.unwrap();
        f.sync().await.unwrap();
        off += chunk;
    }
}

/// How the raw loop fills its buffers (`WAL_BENCH_RAW_FILL`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum RawFill {
    /// Each buffer right before its write (the baseline).
    Each,
    /// The next buffer while the write is in flight (after `Disk::submitted`).
    Ahead,
    /// Never: writes what the DMA pool hands back.
    None,
}

impl RawFill {
    const ALL: [RawFill; 3] = [RawFill::Each, RawFill::Ahead, RawFill::None];

    /// Its value of `WAL_BENCH_RAW_FILL`.
    fn name(self) -> &'static str {
        match self {
            RawFill::Each => "each",
            RawFill::Ahead => "ahead",
            RawFill::None => "none",
        }
    }
}

fn raw_fill() -> RawFill {
    let Ok(v) = std::env::var("WAL_BENCH_RAW_FILL") else {
        return RawFill::Each;
    };
    RawFill::ALL
        .into_iter()
        .find(|m| m.name() == v)
        .unwrap_or_else(|| panic!("WAL_BENCH_RAW_FILL={v}: expected each, ahead or none"))
}

/// The raw limit: aligned writes + fdatasync into a prepared file (or files, see
/// `raw_files`), advancing through it.
struct Raw {
    disk: DmaDisk,
    fill: RawFill,
    /// The buffer filled ahead for the next write (`RawFill::Ahead`).
    next: Option<glommio::io::DmaBuffer>,
    files: Vec<corekv::wal::disk::DmaDiskFile>,
    /// The file written now (`files[cur]`) and the offset in it.
    cur: usize,
    pos: u64,
}

/// How many 64 MiB files the raw loop rotates through (`WAL_BENCH_RAW_FILES`, default
/// 1: the baseline). A diagnostic: the WAL rotates through several segment files, and
/// this virtual disk is slower over a wider range of blocks (`docs/wal.md`).
fn raw_files() -> usize {
    (env_f64("WAL_BENCH_RAW_FILES", 1.0) as usize).max(1)
}

fn raw_file_name(mode: SyncMode, i: usize) -> String {
    format!("raw-{mode:?}-{i}")
}

impl Raw {
    /// Prepares the raw files of one sync mode, each as the WAL prepares a segment.
    async fn new(base: &Path, mode: SyncMode) -> Raw {
        let disk = DmaDisk::open(base, mode).await.unwrap();
        let mut files = Vec::new();
        for i in 0..raw_files() {
            let name = raw_file_name(mode, i);
            let _ = std::fs::remove_file(base.join(&name));
            let f = disk.create(&name).await.unwrap();
            zero_fill(&f, SEG).await;
            files.push(f);
        }
        disk.sync_dir().await.unwrap();
        Raw {
            disk,
            fill: raw_fill(),
            next: None,
            files,
            cur: 0,
            pos: 0,
        }
    }

    /// Writes of `bytes` for `d`, each counting as `appends` appends.
    async fn slice(&mut self, d: Duration, bytes: u64, appends: usize, side: Option<&mut Side>) {
        let mut lat = Vec::new();
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed() < d {
            if self.pos + bytes > SEG {
                self.pos = 0;
                self.cur = (self.cur + 1) % self.files.len();
            }
            let f = &self.files[self.cur];
            let filled = |f: &corekv::wal::disk::DmaDiskFile| {
                let mut buf = f.alloc_buf(bytes as usize);
                buf.as_mut_slice().fill(7);
                buf
            };
            let buf = match self.fill {
                RawFill::Each => filled(f),
                RawFill::Ahead => match self.next.take() {
                    Some(b) if b.len() == bytes as usize => b,
                    _ => filled(f),
                },
                RawFill::None => f.alloc_buf(bytes as usize),
            };
            let t = Instant::now();
            if self.fill == RawFill::Ahead {
                let ahead = async {
                    self.disk.submitted().await;
                    filled(f)
                };
                let (w, next) = futures_lite::future::zip(f.write_at(buf, self.pos), ahead).await;
                w.unwrap();
                self.next = Some(next);
            } else {
                f.write_at(buf, self.pos).await.unwrap();
            }
            f.sync().await.unwrap();
            lat.push(t.elapsed().as_micros() as u32);
            self.pos += bytes;
            n += 1;
        }
        if let Some(side) = side {
            side.slices.push(Slice {
                appends: n * appends as u64,
                secs: t0.elapsed().as_secs_f64(),
                cpu_ns: thread_cpu_ns() - c0,
            });
            side.lat.extend(lat);
        }
    }
}

async fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
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
        segment_bytes: (env_f64("WAL_BENCH_SEG_MIB", 64.0) as u64) << 20,
        ..WalOptions::default()
    }
}

/// Compacts the log every 20 ms (once 100,000 entries are retained) to 20,000 entries
/// behind its end, as a state machine taking snapshots would, so that segments are
/// recycled. Stops when `stop` is set.
fn spawn_compactor(wal: &Wal, stop: Rc<Cell<bool>>) {
    let wal = wal.clone();
    glommio::spawn_local(async move {
        while !stop.get() {
            glommio::timer::sleep(Duration::from_millis(20)).await;
            wal_compact::compact_if_due(&wal).await;
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
    flushes: u64,
    bytes: u64,
    io_ns: u64,
    appends: u64,
    /// With one appender: each acknowledged append's time outside write+fdatasync
    /// (ns), in measured slices. Its median is robust to the preemptions (other jobs
    /// on the machine) that inflate the mean gap.
    gaps: Vec<u64>,
    /// With one appender: each acknowledged append's time in write+fdatasync (ns).
    ios: Vec<u64>,
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
            flushes: 0,
            bytes: 0,
            io_ns: 0,
            appends: 0,
            gaps: Vec::new(),
            ios: Vec::new(),
        }
    }

    /// Runs the appenders for `d`: they stop appending after `d`, and the slice ends
    /// when the last append is acknowledged. Counts acknowledged appends only.
    async fn slice(&mut self, d: Duration, side: Option<&mut Side>) {
        let lat = Rc::new(RefCell::new(Vec::with_capacity(1 << 16)));
        let done = Rc::new(Cell::new(0u64));
        let run = Rc::new(Cell::new(true));
        let gaps = Rc::new(RefCell::new(Vec::new()));
        let ios = Rc::new(RefCell::new(Vec::new()));
        let one = self.tasks == 1;
        let before = self.wal.stats();
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        let mut hs = Vec::new();
        for _ in 0..self.tasks {
            let (wal, next, lat, done, run, gaps, ios) = (
                self.wal.clone(),
                self.next.clone(),
                lat.clone(),
                done.clone(),
                run.clone(),
                gaps.clone(),
                ios.clone(),
            );
            let batch = self.batch;
            hs.push(glommio::spawn_local(async move {
                // An appender that has its entries at hand (as the server's Ready
                // does): it renumbers them instead of allocating new ones, so that
                // what is measured is the WAL, as in the raw loop.
                let mut e = entries(0, batch);
                while run.get() {
                    let i = next.get();
                    next.set(i + batch as u64);
                    for (k, x) in e.iter_mut().enumerate() {
                        x.index = i + k as u64;
                    }
                    let io0 = if one { wal.stats().io_ns } else { 0 };
                    let t = Instant::now();
                    wal.append(i, None, &e).unwrap();
                    wal.wait_durable(i).await.unwrap();
                    let el = t.elapsed();
                    lat.borrow_mut().push(el.as_micros() as u32);
                    if one {
                        let io = wal.stats().io_ns - io0;
                        gaps.borrow_mut()
                            .push((el.as_nanos() as u64).saturating_sub(io));
                        ios.borrow_mut().push(io);
                    }
                    done.set(done.get() + batch as u64);
                }
            }));
        }
        glommio::timer::sleep(d).await;
        run.set(false);
        for h in hs {
            h.await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu_ns = thread_cpu_ns() - c0;
        let s = self.wal.stats();
        if let Some(side) = side {
            side.slices.push(Slice {
                appends: done.get(),
                secs,
                cpu_ns,
            });
            side.lat.extend(lat.take());
            self.flushes += s.flushes - before.flushes;
            self.bytes += s.bytes_written - before.bytes_written;
            self.io_ns += s.io_ns - before.io_ns;
            self.appends += done.get();
            self.gaps.extend(gaps.take());
            self.ios.extend(ios.take());
        }
    }

    /// Warms up until compacted segments are being recycled (at most 3 s), as in a
    /// long-running server: the first segments of a new log must be zero-filled.
    async fn warm(&mut self) {
        let t0 = Instant::now();
        while self.wal.stats().segments_recycled < 2 && t0.elapsed() < Duration::from_secs(3) {
            self.slice(Duration::from_millis(100), None).await;
        }
        self.slice(WARMUP, None).await;
    }

    fn bytes_per_write(&self) -> u64 {
        self.bytes / self.flushes.max(1)
    }

    fn report(&self, wal_secs: f64) {
        let s = self.wal.stats();
        println!(
            "    wal: {} writes of {} B ({:.0} appends each), mean write+fdatasync {:.0} us, \
             mean cycle {:.0} us; segments: {} prepared ({} by recycling), {} inline",
            self.flushes,
            self.bytes_per_write(),
            self.appends as f64 / self.flushes.max(1) as f64,
            self.io_ns as f64 / 1e3 / self.flushes.max(1) as f64,
            wal_secs * 1e6 / self.flushes.max(1) as f64,
            s.segments_prepared,
            s.segments_recycled,
            s.inline_prepares
        );
        if !self.gaps.is_empty() {
            // Percentiles in µs of nanosecond samples.
            let us = |v: &[u64], p: f64| pct(&mut v.to_vec(), p) as f64 / 1e3;
            println!(
                "    wal: per-append time outside write+fdatasync (one appender) \
                 p10 {:.1} / p50 {:.1} / p90 {:.1} us over {} appends",
                us(&self.gaps, 0.1),
                us(&self.gaps, 0.5),
                us(&self.gaps, 0.9),
                self.gaps.len()
            );
            println!(
                "    wal: per-append time in write+fdatasync (one appender) \
                 p10 {:.0} / p50 {:.0} / p90 {:.0} / p99 {:.0} us",
                us(&self.ios, 0.1),
                us(&self.ios, 0.5),
                us(&self.ios, 0.9),
                us(&self.ios, 0.99)
            );
        }
    }
}

impl Drop for WalRun {
    fn drop(&mut self) {
        self.stop.set(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Interleaved rounds of raw (writes of `bytes`, each `appends` appends) and WAL slices.
async fn compare(
    label: String,
    raw: &mut Raw,
    bytes: u64,
    appends: usize,
    wal: &mut WalRun,
) -> Cmp {
    wal.warm().await;
    raw.slice(WARMUP, bytes, appends, None).await;
    let n = rounds();
    let d = secs() / n as u32;
    let (mut rs, mut ws) = (Side::default(), Side::default());
    for i in 0..n {
        if i % 2 == 0 {
            raw.slice(d, bytes, appends, Some(&mut rs)).await;
            wal.slice(d, Some(&mut ws)).await;
        } else {
            wal.slice(d, Some(&mut ws)).await;
            raw.slice(d, bytes, appends, Some(&mut rs)).await;
        }
    }
    let wal_secs: f64 = ws.slices.iter().map(|s| s.secs).sum();
    let wal_gap_us = (wal_secs * 1e6 - wal.io_ns as f64 / 1e3) / wal.flushes.max(1) as f64;
    let c = Cmp::new(label, bytes, &mut rs, &mut ws, wal_gap_us);
    c.show();
    println!(
        "    raw: mean write+fdatasync {:.0} us; p10 {} / p50 {} / p90 {} / p99 {} us",
        c.raw_io_mean_us,
        pct(&mut rs.lat, 0.1),
        pct(&mut rs.lat, 0.5),
        pct(&mut rs.lat, 0.9),
        pct(&mut rs.lat, 0.99)
    );
    wal.report(wal_secs);
    c
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
        "wal-bench in {} ({fs}), {:?} per side in {} interleaved rounds, {RECORD}-byte records; \
         raw: {} file(s), fill {}",
        base.display(),
        secs(),
        rounds(),
        raw_files(),
        raw_fill().name()
    );
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(4 << 20)
        .spawn(move || async move {
            let mut table: Vec<Cmp> = Vec::new();
            if wanted("prep") {
                println!("-- segment preparation (64 MiB), then 4 KiB write+fdatasync into it");
                for how in [Prepare::ZeroFill, Prepare::Fallocate] {
                    let (ms, rate) = prepare_cmp(&base, how).await;
                    println!("{how:?}: prepare {ms:.1} ms, then {rate:.0} syncs/s");
                }
            }
            let mut raw_fd = Raw::new(&base, SyncMode::Fdatasync).await;
            let mut raw_ds = Raw::new(&base, SyncMode::Dsync).await;
            if wanted("batch") {
                println!(
                    "-- batches: one appender, N records per append, raw = same bytes per write"
                );
                let mut worst: f64 = f64::MAX;
                for batch in sizes(&[1, 16, 128, 1024]) {
                    let bytes = wal_write_bytes(1, batch);
                    for mode in modes() {
                        let raw = match mode {
                            SyncMode::Fdatasync => &mut raw_fd,
                            SyncMode::Dsync => &mut raw_ds,
                        };
                        let mut wal = WalRun::new(&base, mode, 1, batch).await;
                        let label = format!("batch {batch}{}", mode_label(mode));
                        let c = compare(label, raw, bytes, batch, &mut wal).await;
                        if mode == default_mode() {
                            worst = worst.min(c.ratio);
                        }
                        table.push(c);
                    }
                }
                println!(
                    "worst median WAL/raw ratio over batch sizes ({}, the default): {worst:.2}",
                    default_mode().name()
                );
            }
            let mut last = None;
            if wanted("concurrent") {
                println!(
                    "-- concurrent appenders, one record each; raw = WAL's mean bytes per write"
                );
                for (tasks, mode) in sizes(&[1, 4, 16, 64, 256, 1024])
                    .into_iter()
                    .flat_map(|t| modes().into_iter().map(move |m| (t, m)))
                {
                    let raw = match mode {
                        SyncMode::Fdatasync => &mut raw_fd,
                        SyncMode::Dsync => &mut raw_ds,
                    };
                    // Find the WAL's write size first, then compare with raw at that size.
                    let mut wal = WalRun::new(&base, mode, tasks, 1).await;
                    wal.warm().await;
                    let mut probe = Side::default();
                    wal.slice(Duration::from_millis(300), Some(&mut probe))
                        .await;
                    let per_write =
                        wal.bytes_per_write().div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES;
                    let per = (wal.appends / wal.flushes.max(1)).max(1) as usize;
                    (wal.flushes, wal.bytes, wal.io_ns, wal.appends) = (0, 0, 0, 0);
                    let label = format!("{tasks} appenders{}", mode_label(mode));
                    let c = compare(label, raw, per_write, per, &mut wal).await;
                    if tasks == 1024 && mode == default_mode() {
                        last = Some((c.wal, c.ratio));
                    }
                    table.push(c);
                }
            }
            println!();
            println!(
                "| load | raw B/write | raw appends/s | WAL appends/s | WAL/raw median (min–max) \
                 | raw p50 / p99 µs | WAL p50 / p99 µs | µs/write outside the I/O, raw / WAL \
                 | WAL CPU µs/append |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
            for c in &table {
                println!("{}", c.row());
            }
            for mode in [SyncMode::Fdatasync, SyncMode::Dsync] {
                for i in 0..raw_files() {
                    let _ = std::fs::remove_file(base.join(raw_file_name(mode, i)));
                }
            }
            if let Some((rate, ratio)) = last {
                println!("wal: {rate:.0} appends/s at 1024 appenders, {ratio:.2} of raw limit");
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
