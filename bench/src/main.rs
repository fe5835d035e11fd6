//! `corekv-bench`: a load harness that drives etcd and corekv
//! with the same workload, and reports throughput, latency percentiles, client CPU and
//! errors as JSON lines and markdown tables. See `config::USAGE` for the command line and
//! `scripts/bench-vs-etcd.sh` for the comparison it was built for.
//!
//! Modules: `keys` (key space, values, seeded RNG), `workload` (which op next),
//! `schedule` (open-loop timing, coordinated-omission correction), `driver` (the load
//! loop), `target` (the server interface) and `etcd` (its etcd implementation), `stats`
//! (histograms, CPU), `output` (records, tables, ratios, CDF series), `config` (arguments).

mod config;
mod corekv;
mod driver;
mod etcd;
mod keys;
mod output;
mod schedule;
mod stats;
mod target;
mod workload;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use config::{Command, ReportArgs, RunArgs, TargetKind};
use driver::{Mode, RunOutcome, RunSpec, Stop};
use output::RunRecord;
use schedule::Schedule;
use target::Target;
use workload::Workload;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match config::parse(&args) {
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            Ok(())
        }
        Ok(Command::Run(run)) => run_command(&run),
        Ok(Command::Report(report)) => report_command(&report),
        Err(e) => Err(format!("{e}\n(see corekv-bench --help)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corekv-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: &RunArgs) -> Result<(), String> {
    let threads = args.client_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if args.sched_batch {
        // Before any thread starts: every thread this process creates inherits it.
        sched_batch()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    runtime.block_on(async {
        match args.target {
            TargetKind::Etcd => {
                let conns = args.conns.min(*args.inflight.iter().max().unwrap_or(&1));
                let mut targets = Vec::with_capacity(conns);
                for _ in 0..conns {
                    targets.push(etcd::connect(&args.endpoints, args.timeout).await?);
                }
                run_all(args, threads, &targets).await
            }
            TargetKind::Corekv => {
                let conns = args.conns.min(*args.inflight.iter().max().unwrap_or(&1));
                let targets =
                    corekv::connect_many(&args.endpoints, args.timeout, conns, threads).await?;
                run_all(args, threads, &targets).await
            }
        }
    })
}

/// Puts the calling thread (and so every thread it starts later) under SCHED_BATCH: a
/// thread woken by another on the same CPU does not preempt it. The bench's workers and
/// a corekv client's I/O thread (or tonic's tasks) hand requests and answers to each
/// other; under SCHED_OTHER each hand-off on a shared client CPU was a context switch
/// (one every ~8 us, a put's worth of work), under SCHED_BATCH they cross in batches.
fn sched_batch() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on this thread with a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(format!(
            "--client-sched batch: sched_setscheduler: {} (use --client-sched normal)",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

async fn run_all<T: Target>(args: &RunArgs, threads: usize, targets: &[T]) -> Result<(), String> {
    let value = Arc::new(keys::make_value(args.value_size, args.seed));
    let mut json_out: Box<dyn std::io::Write> = match &args.json {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open --json {path}: {e}"))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut plan: Vec<(Workload, usize)> = Vec::new();
    if args.fill {
        let most = *args.inflight.iter().max().expect("checked non-empty");
        plan.push((Workload::Fill, most.min(256)));
    }
    for &w in &args.workloads {
        for &n in &args.inflight {
            plan.push((w, n));
        }
    }
    let mut records = Vec::new();
    for (workload, inflight) in plan {
        let conns = &targets[..targets.len().min(inflight)];
        let label = format!("{} {workload} x{inflight}", targets[0].name());
        let spec = RunSpec {
            workload,
            mode: match args.rate {
                Some(r) => Mode::Open(Schedule::new(r)),
                None => Mode::Closed,
            },
            inflight,
            warmup: args.warmup,
            stop: match (args.duration, args.ops) {
                (_, Some(n)) => Stop::Ops(n),
                (Some(d), None) => Stop::After(d),
                (None, None) => unreachable!("config sets a default duration"),
            },
            timeout: args.timeout,
            seed: args.seed,
            space: args.space.clone(),
            value: value.clone(),
            progress_every: args.progress,
            label: label.clone(),
            server_pids: args.server_pids.clone(),
        };
        let outcome = driver::run(&spec, conns).await;
        let rec = make_record(
            args,
            targets[0].name(),
            &spec,
            conns.len(),
            threads,
            &outcome,
        );
        eprintln!(
            "[{label}] {:.0} ops/s, p50 {:.0}µs p99 {:.0}µs max {:.0}µs, {} errors, client busy {:.2} cores",
            rec.ops_per_s,
            rec.latency_us.p50,
            rec.latency_us.p99,
            rec.latency_us.max,
            rec.errors,
            rec.client_busy
        );
        if let Some(e) = &rec.error_sample {
            eprintln!("[{label}] first error: {e}");
        }
        if workload.reads_loaded_keys() && (rec.not_found > 0 || rec.range_short > 0) {
            eprintln!(
                "[{label}] warning: {} gets found no key, {} ranges were short: was the key space filled (--fill)?",
                rec.not_found, rec.range_short
            );
        }
        writeln!(json_out, "{}", rec.to_json_line())
            .and_then(|()| json_out.flush())
            .map_err(|e| format!("cannot write a JSON line: {e}"))?;
        records.push(rec);
    }
    let table = output::markdown_table(&records) + &output::paired_rounds(&records);
    if args.json.is_some() {
        print!("{table}");
    } else {
        eprint!("{table}");
    }
    Ok(())
}

fn make_record(
    args: &RunArgs,
    target: &str,
    spec: &RunSpec,
    conns: usize,
    threads: usize,
    outcome: &RunOutcome,
) -> RunRecord {
    let wall_s = outcome.wall.as_secs_f64();
    let per_s = |x: f64| if wall_s > 0.0 { x / wall_s } else { 0.0 };
    RunRecord {
        schema: output::SCHEMA,
        target: target.to_string(),
        labels: args.labels.iter().cloned().collect(),
        workload: spec.workload.name().to_string(),
        mode: match spec.mode {
            Mode::Closed => "closed".into(),
            Mode::Open(_) => "open".into(),
        },
        rate: args.rate,
        inflight: spec.inflight,
        conns,
        keys: spec.space.keys(),
        key_size: spec.space.key_size(),
        value_size: spec.value.len(),
        warmup_s: if spec.workload == Workload::Fill {
            0.0
        } else {
            spec.warmup.as_secs_f64()
        },
        wall_s,
        ops: outcome.ops,
        errors: outcome.errors,
        timeouts: outcome.timeouts,
        missed: outcome.missed,
        not_found: outcome.not_found,
        cas_failed: outcome.cas_failed,
        range_short: outcome.range_short,
        ops_per_s: per_s(outcome.ops as f64),
        latency_us: stats::Percentiles::of(&outcome.latency),
        service_us: stats::Percentiles::of(&outcome.service),
        client_cpu_s: outcome.client_cpu_s,
        client_busy: per_s(outcome.client_cpu_s),
        client_threads: threads,
        client_sched: if args.sched_batch { "batch" } else { "normal" }.into(),
        server_cpu_s: outcome.server_cpu_s,
        server_cpu_us_per_op: outcome
            .server_cpu_s
            .filter(|_| outcome.ops > 0)
            .map(|s| s * 1e6 / outcome.ops as f64),
        error_sample: outcome.error_sample.clone(),
        unix_time: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
        hist: stats::encode(&outcome.latency),
    }
}

fn report_command(args: &ReportArgs) -> Result<(), String> {
    let mut records = Vec::new();
    for path in &args.inputs {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        records.extend(output::parse_records(path, &text)?);
    }
    if let Some((w, t, n, target)) = &args.median_ops {
        return match output::median_ops(&records, w, t, *n, target) {
            Some(ops) => {
                println!("{ops:.0}");
                Ok(())
            }
            None => Err(format!(
                "no closed-loop {w} runs of {target} at {n} in flight in topology {t}"
            )),
        };
    }
    let table = output::markdown_table(&records) + &output::paired_rounds(&records);
    match &args.md {
        Some(path) => {
            std::fs::write(path, &table).map_err(|e| format!("cannot write {path}: {e}"))?
        }
        None => print!("{table}"),
    }
    if let Some(path) = &args.cdf {
        let series = output::cdf_series(&records)?;
        let text = serde_json::to_string(&series).expect("CDF series always serialise");
        std::fs::write(path, text).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    if args.ratio_line {
        for line in output::open_lines(&records) {
            println!("{line}");
        }
        println!("{}", output::ratio_line(&records));
    }
    Ok(())
}
