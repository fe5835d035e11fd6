//! Runs the deterministic Raft simulator (`corekv::raft::sim`) over many seeds.
//!
//! `corekv-sim --seeds N [--start S]` runs seeds S..S+N; `--seed S` replays one seed
//! (verbose); `--minutes M` runs consecutive seeds for M minutes. `--profile
//! mixed|stormy|partitions` forces a fault mix (default: chosen per seed), `--nodes 3|5`
//! forces the cluster size. A failing seed prints the exact command that reproduces
//! it. The last line is `sim: <seeds> seeds, <ops> client ops, <violations> violations`.

use corekv::raft::sim::{run, Profile, SimOptions};
use std::time::{Duration, Instant};

struct Args {
    start: u64,
    seeds: Option<u64>,
    one: Option<u64>,
    minutes: Option<f64>,
    profile: Option<Profile>,
    nodes: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!("corekv-sim: {msg}");
    eprintln!(
        "usage: corekv-sim [--seeds N [--start S] | --seed S | --minutes M] [--profile mixed|stormy|partitions] [--nodes 3|5]"
    );
    std::process::exit(2);
}

fn parse() -> Args {
    let mut a = Args {
        start: 0,
        seeds: None,
        one: None,
        minutes: None,
        profile: None,
        nodes: 0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let val = |i: usize| -> &str {
            argv.get(i + 1)
                .map(String::as_str)
                .unwrap_or_else(|| usage(&format!("{} needs a value", argv[i])))
        };
        let num = |i: usize| -> u64 {
            val(i)
                .parse()
                .unwrap_or_else(|_| usage(&format!("{} needs a number", argv[i])))
        };
        match argv[i].as_str() {
            "--seeds" => a.seeds = Some(num(i)),
            "--start" => a.start = num(i),
            "--seed" => a.one = Some(num(i)),
            "--minutes" => {
                a.minutes = Some(
                    val(i)
                        .parse()
                        .unwrap_or_else(|_| usage("--minutes needs a number")),
                )
            }
            "--profile" => {
                a.profile = Some(Profile::parse(val(i)).unwrap_or_else(|| usage("unknown profile")))
            }
            "--nodes" => a.nodes = num(i) as usize,
            other => usage(&format!("unknown argument {other}")),
        }
        i += 2;
    }
    a
}

fn main() {
    let args = parse();
    let deadline = args
        .minutes
        .map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let (first, count) = match (args.one, args.seeds) {
        (Some(s), _) => (s, 1),
        (None, Some(n)) => (args.start, n),
        (None, None) if deadline.is_some() => (args.start, u64::MAX),
        _ => (0, 100),
    };
    let extra = {
        let mut e = String::new();
        if let Some(p) = args.profile {
            e.push_str(&format!(" --profile {}", format!("{p:?}").to_lowercase()));
        }
        if args.nodes != 0 {
            e.push_str(&format!(" --nodes {}", args.nodes));
        }
        e
    };
    let (mut seeds, mut ops, mut violations) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for seed in first..first.saturating_add(count) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut o = SimOptions::new(seed);
        o.profile = args.profile.unwrap_or(Profile::for_seed(seed));
        o.nodes = args.nodes;
        let r = run(&o);
        seeds += 1;
        ops += r.ops;
        if args.one.is_some() {
            println!(
                "seed {seed}: profile {:?}, {} nodes, {} client ops, committed up to {}, {} elections, {} crashes, {} snapshots, {} membership changes, {} transfers, digest {:016x}",
                o.profile, r.nodes, r.ops, r.committed, r.elections, r.crashes, r.snapshots_sent, r.conf_changes, r.transfers, r.digest
            );
        }
        if r.linearizability_unknown {
            println!("seed {seed}: linearizability search ran out of budget (no verdict)");
        }
        if !r.violations.is_empty() {
            violations += r.violations.len() as u64;
            println!("seed {seed} FAILED ({:?}):", o.profile);
            for v in &r.violations {
                println!("  {v}");
            }
            println!("  reproduce: scripts/sim.sh --seed {seed}{extra}");
        }
    }
    eprintln!("({:.1}s)", started.elapsed().as_secs_f64());
    println!("sim: {seeds} seeds, {ops} client ops, {violations} violations");
    if violations > 0 {
        std::process::exit(1);
    }
}
