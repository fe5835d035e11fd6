//! The load loop: workers that send operations to a [`Target`] and time them.
//!
//! A run has a warm-up phase (operations sent but not recorded) and a measured phase that
//! ends after `--duration` or after `--ops` measured operations. `inflight` workers share
//! one operation counter:
//! - closed loop: each worker sends its next operation when the previous one is answered;
//!   an operation is measured if it was sent after the warm-up;
//! - open loop: operation `i` is due at `Schedule::due(i)`; a worker takes the next index,
//!   sleeps until it is due, sends it, and records latency from the due time when it was
//!   already overdue (the worker was held up by earlier answers: the coordinated-omission
//!   correction of `schedule`), or from the wake-up when the worker had to wait for it (so
//!   timer coarseness is not charged to the server). An operation is measured if it was
//!   due after the warm-up. Operations
//!   still unsent when the hard deadline (end of the window + max(timeout, 1 s)) passes
//!   are counted as `missed`: the client could not even offer the requested rate.
//!
//! Bounds: every request is cut off after `timeout`; the measured phase is bounded by
//! duration or op count; the open loop additionally by its hard deadline. `fill` is a
//! closed loop over exactly `keys` operations without warm-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::keys::{KeySpace, Rng, RANGE_KEYS};
use crate::schedule::{op_timing, Schedule};
use crate::stats;
use crate::target::{OpError, Target};
use crate::workload::{choose, Op, Workload};

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed,
    Open(Schedule),
}

/// When the measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Ops(u64),
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub workload: Workload,
    pub mode: Mode,
    pub inflight: usize,
    pub warmup: Duration,
    pub stop: Stop,
    pub timeout: Duration,
    pub seed: u64,
    pub space: KeySpace,
    pub value: Arc<Vec<u8>>,
    /// Print a progress line to stderr this often (None: never).
    pub progress_every: Option<Duration>,
    /// Names the run in progress lines.
    pub label: String,
    /// Server processes whose CPU time is measured over the measured phase (may be empty).
    pub server_pids: Vec<u32>,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunOutcome {
    /// Latency from the intended send time (equals service time in a closed loop).
    pub latency: Histogram<u64>,
    /// Time from the actual send to the answer.
    pub service: Histogram<u64>,
    /// Measured operations that succeeded.
    pub ops: u64,
    /// Measured operations that failed (timeouts included).
    pub errors: u64,
    pub timeouts: u64,
    /// Gets that found no key (the space was not filled?).
    pub not_found: u64,
    /// Compare-and-swap transactions whose compare failed.
    pub cas_failed: u64,
    /// Range reads that returned fewer than 100 keys.
    pub range_short: u64,
    /// Open loop: operations due in the window that were never sent.
    pub missed: u64,
    /// Length of the measured phase: end of warm-up to the last answer.
    pub wall: Duration,
    /// Client CPU seconds (user + system, whole process) during the measured phase.
    pub client_cpu_s: f64,
    /// CPU seconds of `server_pids` during the measured phase (None: none given, or one
    /// could not be read).
    pub server_cpu_s: Option<f64>,
    pub error_sample: Option<String>,
}

/// Latency histograms the workers share, at most this many pairs: worker `w` records into
/// pair `w % n` under its lock. A pair of 3-digit histograms up to 100 s is ~460 KB; one
/// pair per worker (256-1024 of them) was 0.1-0.5 GB that every record missed the cache
/// in (7% of the client's CPU per put in `perf`), while a few locks shared by a handful of
/// client threads are rarely contended.
const HIST_PAIRS_MAX: usize = 8;

/// The latency and service-time histograms of one share of the workers.
struct HistPair {
    latency: Histogram<u64>,
    service: Histogram<u64>,
}

#[derive(Default)]
struct Shared {
    hists: Vec<Mutex<HistPair>>,
    next_index: AtomicU64,
    measured_sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    error_sample: Mutex<Option<String>>,
}

struct WorkerResult {
    ops: u64,
    errors: u64,
    timeouts: u64,
    not_found: u64,
    cas_failed: u64,
    range_short: u64,
    last_done: Duration,
}

enum Answer {
    Done,
    NotFound,
    CasFailed,
    RangeShort,
}

/// Runs `spec` over the connections `conns` (worker `w` uses `conns[w % conns.len()]`).
pub async fn run<T: Target>(spec: &RunSpec, conns: &[T]) -> RunOutcome {
    assert!(!conns.is_empty(), "a run needs at least one connection");
    assert!(spec.inflight > 0, "a run needs at least one worker");
    let spec = Arc::new(spec.clone());
    let shared = Arc::new(Shared {
        hists: (0..spec.inflight.min(HIST_PAIRS_MAX))
            .map(|_| {
                Mutex::new(HistPair {
                    latency: stats::new_histogram(),
                    service: stats::new_histogram(),
                })
            })
            .collect(),
        ..Shared::default()
    });
    let origin = Instant::now();
    let warmup = if spec.workload == Workload::Fill {
        Duration::ZERO
    } else {
        spec.warmup
    };

    let server_pids = spec.server_pids.clone();
    let server_cpu = move || -> Option<f64> {
        if server_pids.is_empty() {
            None
        } else {
            stats::pids_cpu_seconds(&server_pids)
        }
    };
    let cpu_at_measure = {
        let server_cpu = server_cpu.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(origin + warmup).await;
            (stats::process_cpu_seconds(), server_cpu())
        });
        async move { task.await.expect("cpu snapshot task panicked") }
    };
    let progress = spec.progress_every.map(|every| {
        let shared = shared.clone();
        let label = spec.label.clone();
        tokio::spawn(progress_loop(shared, label, origin, warmup, every))
    });

    let workers: Vec<_> = (0..spec.inflight)
        .map(|w| {
            let target = conns[w % conns.len()].clone();
            let spec = spec.clone();
            let shared = shared.clone();
            tokio::spawn(worker(spec, shared, target, w, origin, warmup))
        })
        .collect();
    let mut results = Vec::with_capacity(workers.len());
    for w in workers {
        results.push(w.await.expect("load worker panicked"));
    }
    let (cpu_end, server_end) = (stats::process_cpu_seconds(), server_cpu());
    if let Some(p) = progress {
        p.abort();
    }
    let (cpu_start, server_start) = cpu_at_measure.await;

    let last_done = results.iter().map(|r| r.last_done).max().unwrap_or(warmup);
    let wall = last_done.max(warmup) - warmup;
    let missed = match (spec.mode, spec.workload) {
        (Mode::Open(s), w) if w != Workload::Fill => {
            let due = match spec.stop {
                Stop::After(d) => s.count_between(warmup, warmup + d),
                Stop::Ops(n) => n,
            };
            due.saturating_sub(shared.measured_sent.load(Ordering::Relaxed))
        }
        _ => 0,
    };
    let error_sample = shared.error_sample.lock().expect("poisoned").clone();
    let sum = |f: fn(&WorkerResult) -> u64| results.iter().map(f).sum::<u64>();
    let hists: Vec<_> = shared
        .hists
        .iter()
        .map(|h| h.lock().expect("poisoned"))
        .collect();
    RunOutcome {
        latency: stats::merge(hists.iter().map(|h| &h.latency)),
        service: stats::merge(hists.iter().map(|h| &h.service)),
        ops: sum(|r| r.ops),
        errors: sum(|r| r.errors),
        timeouts: sum(|r| r.timeouts),
        not_found: sum(|r| r.not_found),
        cas_failed: sum(|r| r.cas_failed),
        range_short: sum(|r| r.range_short),
        missed,
        wall,
        client_cpu_s: (cpu_end - cpu_start).max(0.0),
        server_cpu_s: match (server_start, server_end) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        },
        error_sample,
    }
}

async fn worker<T: Target>(
    spec: Arc<RunSpec>,
    shared: Arc<Shared>,
    mut target: T,
    worker: usize,
    origin: Instant,
    warmup: Duration,
) -> WorkerResult {
    let mut rng = Rng::for_worker(spec.seed, worker);
    let mut key = Vec::with_capacity(spec.space.key_size());
    let hists = &shared.hists[worker % shared.hists.len()];
    let mut out = WorkerResult {
        ops: 0,
        errors: 0,
        timeouts: 0,
        not_found: 0,
        cas_failed: 0,
        range_short: 0,
        last_done: Duration::ZERO,
    };
    // Open loop: the end of the window of measured due times, and the hard deadline.
    let window_end = match spec.mode {
        Mode::Open(s) => match spec.stop {
            Stop::After(d) => warmup + d,
            Stop::Ops(n) => s.due(s.first_at_or_after(warmup) + n),
        },
        Mode::Closed => Duration::MAX,
    };
    let hard_deadline = window_end.saturating_add(spec.timeout.max(Duration::from_secs(1)));

    loop {
        let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
        let (intended, measured) = match (spec.workload, spec.mode) {
            (Workload::Fill, _) => {
                if index >= spec.space.keys() {
                    break;
                }
                (origin.elapsed(), true)
            }
            (_, Mode::Closed) => {
                let now = origin.elapsed();
                if let Stop::After(d) = spec.stop {
                    if now >= warmup + d {
                        break;
                    }
                }
                (now, now >= warmup)
            }
            (_, Mode::Open(s)) => {
                let due = s.due(index);
                // With `Stop::Ops(n)` the window ends at the due time of op first + n.
                if due >= window_end {
                    break;
                }
                if origin.elapsed() > hard_deadline {
                    break;
                }
                // An op that is already overdue when a worker takes it was held up by
                // earlier answers: its latency counts from its due time. An op that is
                // not due yet finds the worker idle: the worker sleeps and the clock
                // starts when it wakes, so the timer's coarseness (tokio: 1 ms) is not
                // charged to the server.
                let intended = if due > origin.elapsed() {
                    tokio::time::sleep_until(origin + due).await;
                    origin.elapsed()
                } else {
                    due
                };
                (intended, due >= warmup)
            }
        };
        if measured && spec.workload != Workload::Fill {
            let before = shared.measured_sent.fetch_add(1, Ordering::Relaxed);
            if let (Mode::Closed, Stop::Ops(n)) = (spec.mode, spec.stop) {
                if before >= n {
                    break;
                }
            }
        }

        let op = choose(spec.workload, &spec.space, index, &mut rng);
        let sent = origin.elapsed().max(intended);
        let answer = tokio::time::timeout(spec.timeout, send(&mut target, &spec, op, &mut key))
            .await
            .unwrap_or(Err(OpError::Timeout));
        let done = origin.elapsed();
        shared.answered.fetch_add(1, Ordering::Relaxed);
        if !measured {
            continue;
        }
        out.last_done = out.last_done.max(done);
        match answer {
            Ok(answer) => {
                let timing = op_timing(intended, sent, done);
                {
                    let mut h = hists.lock().expect("poisoned");
                    stats::record(&mut h.latency, timing.latency);
                    stats::record(&mut h.service, timing.service);
                }
                out.ops += 1;
                match answer {
                    Answer::Done => {}
                    Answer::NotFound => out.not_found += 1,
                    Answer::CasFailed => out.cas_failed += 1,
                    Answer::RangeShort => out.range_short += 1,
                }
            }
            Err(e) => {
                out.errors += 1;
                if e == OpError::Timeout {
                    out.timeouts += 1;
                }
                shared.failed.fetch_add(1, Ordering::Relaxed);
                let mut sample = shared.error_sample.lock().expect("poisoned");
                if sample.is_none() {
                    *sample = Some(e.to_string());
                }
            }
        }
    }
    out
}

async fn send<T: Target>(
    target: &mut T,
    spec: &RunSpec,
    op: Op,
    key: &mut Vec<u8>,
) -> Result<Answer, OpError> {
    let value = spec.value.as_slice();
    match op {
        Op::Put { key: k } => {
            spec.space.key(k, key);
            target.put(key, value).await.map(|()| Answer::Done)
        }
        Op::Get {
            key: k,
            consistency,
        } => {
            spec.space.key(k, key);
            let found = target.get(key, consistency).await?;
            Ok(if found {
                Answer::Done
            } else {
                Answer::NotFound
            })
        }
        Op::Range { block } => {
            spec.space.range_prefix(block, key);
            let n = target.range_prefix(key).await?;
            Ok(if n < RANGE_KEYS {
                Answer::RangeShort
            } else {
                Answer::Done
            })
        }
        Op::Cas { key: k } => {
            spec.space.key(k, key);
            let swapped = target.compare_and_swap(key, value, value).await?;
            Ok(if swapped {
                Answer::Done
            } else {
                Answer::CasFailed
            })
        }
    }
}

async fn progress_loop(
    shared: Arc<Shared>,
    label: String,
    origin: Instant,
    warmup: Duration,
    every: Duration,
) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval_at(origin + every, every);
    loop {
        tick.tick().await;
        let answered = shared.answered.load(Ordering::Relaxed);
        let phase = if origin.elapsed() < warmup {
            "warm-up"
        } else {
            "measuring"
        };
        eprintln!(
            "[{label}] {:>6.1}s {phase}: {answered} answered, {:.0} ops/s now, {} errors",
            origin.elapsed().as_secs_f64(),
            (answered - last) as f64 / every.as_secs_f64(),
            shared.failed.load(Ordering::Relaxed),
        );
        last = answered;
    }
}

#[cfg(test)]
mod tests {
    //! The driver against an in-memory target under tokio's paused clock: time advances
    //! only when every task waits, so each run is deterministic and durations are virtual.

    use std::collections::BTreeMap;

    use super::*;
    use crate::target::Consistency;

    /// Test double: a map behind a mutex, answering after a virtual `delay`; request number
    /// `stall_at` (counted over all connections) takes `stall` instead; keys ending in
    /// `fail_suffix` fail.
    #[derive(Clone)]
    struct MemTarget {
        map: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
        requests: Arc<AtomicU64>,
        puts: Arc<AtomicU64>,
        delay: Duration,
        stall_at: u64,
        stall: Duration,
        fail_suffix: Option<u8>,
    }

    impl MemTarget {
        fn new(delay: Duration) -> MemTarget {
            MemTarget {
                map: Arc::default(),
                requests: Arc::default(),
                puts: Arc::default(),
                delay,
                stall_at: u64::MAX,
                stall: Duration::ZERO,
                fail_suffix: None,
            }
        }

        async fn wait(&self, key: &[u8]) -> Result<(), OpError> {
            let n = self.requests.fetch_add(1, Ordering::SeqCst);
            let pause = if n == self.stall_at {
                self.stall
            } else {
                self.delay
            };
            tokio::time::sleep(pause).await;
            if self.fail_suffix.is_some() && key.last().copied() == self.fail_suffix {
                return Err(OpError::Failed(format!(
                    "refused {}",
                    String::from_utf8_lossy(key)
                )));
            }
            Ok(())
        }
    }

    impl Target for MemTarget {
        fn name(&self) -> &'static str {
            "mem"
        }

        async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), OpError> {
            self.wait(key).await?;
            self.puts.fetch_add(1, Ordering::SeqCst);
            self.map
                .lock()
                .unwrap()
                .insert(key.to_vec(), value.to_vec());
            Ok(())
        }

        async fn get(&mut self, key: &[u8], _: Consistency) -> Result<bool, OpError> {
            self.wait(key).await?;
            Ok(self.map.lock().unwrap().contains_key(key))
        }

        async fn range_prefix(&mut self, prefix: &[u8]) -> Result<u64, OpError> {
            self.wait(prefix).await?;
            let map = self.map.lock().unwrap();
            Ok(map.keys().filter(|k| k.starts_with(prefix)).count() as u64)
        }

        async fn compare_and_swap(
            &mut self,
            key: &[u8],
            expected: &[u8],
            new: &[u8],
        ) -> Result<bool, OpError> {
            self.wait(key).await?;
            let mut map = self.map.lock().unwrap();
            if map.get(key).map(Vec::as_slice) == Some(expected) {
                map.insert(key.to_vec(), new.to_vec());
                Ok(true)
            } else {
                Ok(false)
            }
        }
    }

    fn spec(workload: Workload, mode: Mode, inflight: usize, stop: Stop) -> RunSpec {
        RunSpec {
            workload,
            mode,
            inflight,
            warmup: Duration::ZERO,
            stop,
            timeout: Duration::from_secs(5),
            seed: 1,
            space: KeySpace::new(1_000, 8).unwrap(),
            value: Arc::new(b"v".repeat(16)),
            progress_every: None,
            label: "test".into(),
            server_pids: Vec::new(),
        }
    }

    async fn filled(target: &MemTarget) {
        let fill = spec(Workload::Fill, Mode::Closed, 16, Stop::Ops(1));
        let out = run(&fill, std::slice::from_ref(target)).await;
        assert_eq!(out.ops, 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn fill_writes_each_key_exactly_once() {
        let target = MemTarget::new(Duration::from_millis(1));
        filled(&target).await;
        assert_eq!(target.puts.load(Ordering::SeqCst), 1_000);
        assert_eq!(target.map.lock().unwrap().len(), 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_op_count_excludes_warm_up() {
        let target = MemTarget::new(Duration::from_millis(1));
        filled(&target).await;
        let before = target.requests.load(Ordering::SeqCst);
        let mut s = spec(Workload::Get, Mode::Closed, 4, Stop::Ops(500));
        s.warmup = Duration::from_millis(100);
        let conns = [target.clone(), target.clone()];
        let out = run(&s, &conns).await;
        assert_eq!(out.ops, 500);
        assert_eq!((out.errors, out.not_found), (0, 0));
        let sent = target.requests.load(Ordering::SeqCst) - before;
        // 100 ms of warm-up at 4 x 1 ms is ~400 unrecorded requests on top.
        assert!((890..=910).contains(&sent), "{sent} requests sent");
        let p = crate::stats::Percentiles::of(&out.latency);
        assert!(
            (p.p50 - 1_000.0).abs() < 5.0 && (p.max - 1_000.0).abs() < 5.0,
            "{p:?}"
        );
        // 500 ops over 4 workers at 1 ms each: 125 ms of (virtual) measured time.
        assert!(
            (124..=127).contains(&out.wall.as_millis()),
            "{:?}",
            out.wall
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_duration_bounds_the_run() {
        let target = MemTarget::new(Duration::from_millis(1));
        let s = spec(
            Workload::Put,
            Mode::Closed,
            4,
            Stop::After(Duration::from_secs(1)),
        );
        let out = run(&s, &[target]).await;
        assert!((3_996..=4_004).contains(&out.ops), "{} ops", out.ops);
        assert_eq!(out.missed, 0);
    }

    /// A 1 s stall under an open loop of 500 ops/s with one worker: the latency histogram
    /// must hold the ~990 delayed ops, the service histogram only the one slow request.
    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_from_the_intended_send_time() {
        // Whole milliseconds, because tokio's timer (paused or not) has 1 ms resolution.
        let mut target = MemTarget::new(Duration::from_millis(1));
        target.stall_at = 200;
        target.stall = Duration::from_secs(1);
        let s = spec(
            Workload::Put,
            Mode::Open(Schedule::new(500.0)),
            1,
            Stop::After(Duration::from_secs(4)),
        );
        let out = run(&s, &[target]).await;
        assert_eq!((out.ops, out.missed, out.errors), (2_000, 0, 0));
        // Ops due during the stall, and the backlog after it: the worker gains 1 ms per
        // op (1 ms service, 2 ms interval), so the lag falls from ~1 s below 10 ms over
        // ~990 ops.
        let slow = |h: &Histogram<u64>| h.count_between(10_000_000, u64::MAX);
        assert_eq!(slow(&out.service), 1);
        let slow_latency = slow(&out.latency);
        assert!((980..=1_000).contains(&slow_latency), "{slow_latency}");
        assert!(out.latency.value_at_quantile(0.99) > 500_000_000);
        assert!(out.service.value_at_quantile(0.99) < 2_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_op_count_after_warm_up() {
        let target = MemTarget::new(Duration::from_millis(1));
        let mut s = spec(
            Workload::Put,
            Mode::Open(Schedule::new(1_000.0)),
            8,
            Stop::Ops(300),
        );
        s.warmup = Duration::from_millis(100);
        let out = run(&s, std::slice::from_ref(&target)).await;
        assert_eq!((out.ops, out.missed, out.errors), (300, 0, 0));
        // 100 warm-up ops plus the 300 measured ones, nothing more.
        assert_eq!(target.requests.load(Ordering::SeqCst), 400);
        assert!(
            (299..=302).contains(&out.wall.as_millis()),
            "{:?}",
            out.wall
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_reports_what_it_could_not_send() {
        // 10 ms per request, one worker, 1000 ops/s offered for 1 s: the client can send
        // ~100 in the window and ~100 more before the hard deadline (window + 1 s).
        let target = MemTarget::new(Duration::from_millis(10));
        let mut s = spec(
            Workload::Put,
            Mode::Open(Schedule::new(1_000.0)),
            1,
            Stop::After(Duration::from_secs(1)),
        );
        s.timeout = Duration::from_secs(1);
        let out = run(&s, &[target]).await;
        assert_eq!(out.ops + out.missed, 1_000);
        assert!((195..=205).contains(&out.ops), "{} ops", out.ops);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_timeouts_and_misses_are_counted() {
        let mut target = MemTarget::new(Duration::from_millis(1));
        target.fail_suffix = Some(b'7');
        target.stall_at = 3;
        target.stall = Duration::from_secs(60);
        let mut s = spec(Workload::Get, Mode::Closed, 2, Stop::Ops(1_000));
        s.timeout = Duration::from_millis(50);
        let out = run(&s, &[target]).await;
        assert_eq!(out.ops + out.errors, 1_000);
        assert_eq!(out.timeouts, 1);
        // One key in ten ends in 7; the empty map answers every other get with not-found.
        assert!((60..=140).contains(&out.errors), "{} errors", out.errors);
        assert_eq!(out.not_found, out.ops);
        let sample = out.error_sample.unwrap();
        assert!(
            sample.starts_with("refused k") || sample == "request timed out",
            "{sample}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn range_and_cas_see_the_filled_space() {
        let target = MemTarget::new(Duration::from_millis(1));
        filled(&target).await;
        let out = run(
            &spec(Workload::Range, Mode::Closed, 4, Stop::Ops(200)),
            std::slice::from_ref(&target),
        )
        .await;
        assert_eq!((out.ops, out.range_short), (200, 0));
        let out = run(
            &spec(Workload::Cas, Mode::Closed, 4, Stop::Ops(200)),
            std::slice::from_ref(&target),
        )
        .await;
        assert_eq!((out.ops, out.cas_failed), (200, 0));
        target.map.lock().unwrap().clear();
        let out = run(
            &spec(Workload::Cas, Mode::Closed, 4, Stop::Ops(50)),
            &[target],
        )
        .await;
        assert_eq!(out.cas_failed, 50);
    }
}
