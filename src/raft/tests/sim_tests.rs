//! Simulator runs: many seeds must show no violation; the same seed must replay the
//! same run; each deliberately broken rule must be caught within a bounded number of
//! seeds (the simulator's teeth).

use crate::raft::sim::{reproduce_command, run, Profile, SimOptions};
use crate::raft::Bugs;

#[test]
fn sim_320_seeds_no_violation() {
    let mut ops = 0;
    let mut bad = Vec::new();
    for seed in 0..320 {
        let mut o = SimOptions::new(seed);
        o.profile = Profile::for_seed(seed);
        let r = run(&o);
        ops += r.ops;
        if !r.violations.is_empty() {
            bad.push(format!(
                "seed {seed} ({:?}) failed; reproduce: {}\n  {}",
                o.profile,
                reproduce_command(seed),
                r.violations.join("\n  ")
            ));
        }
    }
    assert!(ops > 10_000, "only {ops} client operations in 320 seeds");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn sim_same_seed_same_run() {
    for seed in [1, 3, 7, 42] {
        let mut o = SimOptions::new(seed);
        o.profile = Profile::for_seed(seed);
        let (a, b) = (run(&o), run(&o));
        assert_eq!(a.digest, b.digest, "seed {seed} replayed differently");
        assert_eq!(a.ops, b.ops);
        assert_eq!(a.committed, b.committed);
        assert!(a.committed > 0 && a.ops > 0, "seed {seed} did nothing");
    }
    let (x, y) = (run(&SimOptions::new(1)), run(&SimOptions::new(2)));
    assert_ne!(x.digest, y.digest, "different seeds should differ");
}

/// The first seed (below `max_seeds`) at which the simulator reports a violation.
fn first_catch(bugs: Bugs, profile: Profile, max_seeds: u64) -> (u64, String) {
    for seed in 0..max_seeds {
        let mut o = SimOptions::new(seed);
        o.bugs = bugs;
        o.profile = profile;
        let r = run(&o);
        if let Some(v) = r.violations.first() {
            return (seed, v.lines().next().unwrap_or_default().to_string());
        }
    }
    panic!("{bugs:?} not caught in {max_seeds} {profile:?} seeds");
}

#[test]
fn teeth_commit_counting_older_term_entries() {
    let (seed, v) = first_catch(
        Bugs {
            commit_old_term: true,
            ..Default::default()
        },
        Profile::Stormy,
        300,
    );
    eprintln!("commit_old_term caught at seed {seed}: {v}");
}

#[test]
fn teeth_vote_without_log_check() {
    let (seed, v) = first_catch(
        Bugs {
            vote_ignores_log: true,
            ..Default::default()
        },
        Profile::Mixed,
        50,
    );
    eprintln!("vote_ignores_log caught at seed {seed}: {v}");
}

#[test]
fn teeth_read_index_without_leadership_round() {
    let (seed, v) = first_catch(
        Bugs {
            read_without_round: true,
            ..Default::default()
        },
        Profile::Partitions,
        100,
    );
    eprintln!("read_without_round caught at seed {seed}: {v}");
}

#[test]
fn teeth_ack_before_durable() {
    let (seed, v) = first_catch(
        Bugs {
            ack_before_durable: true,
            ..Default::default()
        },
        Profile::Stormy,
        150,
    );
    eprintln!("ack_before_durable caught at seed {seed}: {v}");
}

/// Manual: `RATE_BUG=commit_old_term RATE_SEEDS=3000 PROFILE=stormy cargo test --lib
/// catch_rate -- --ignored --nocapture` counts how often a bug is caught.
#[test]
#[ignore]
fn catch_rate() {
    let name = std::env::var("RATE_BUG").unwrap_or_default();
    let n: u64 = std::env::var("RATE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut b = Bugs::default();
    match name.as_str() {
        "commit_old_term" => b.commit_old_term = true,
        "vote_ignores_log" => b.vote_ignores_log = true,
        "read_without_round" => b.read_without_round = true,
        "ack_before_durable" => b.ack_before_durable = true,
        _ => {}
    }
    let profile = std::env::var("PROFILE")
        .ok()
        .and_then(|p| Profile::parse(&p));
    let mut caught = Vec::new();
    for seed in 0..n {
        let mut o = SimOptions::new(seed);
        o.bugs = b;
        o.profile = profile.unwrap_or(Profile::for_seed(seed));
        if !run(&o).violations.is_empty() {
            caught.push(seed);
        }
    }
    eprintln!(
        "{name} {profile:?}: caught {} of {n}: {:?}",
        caught.len(),
        &caught[..caught.len().min(30)]
    );
}

/// Manual: `SEED=N cargo test --lib replay_seed -- --ignored --nocapture`.
#[test]
#[ignore]
fn replay_seed() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let mut o = SimOptions::new(seed);
    o.profile = Profile::for_seed(seed);
    o.trace_from_step = std::env::var("TRACE_FROM")
        .ok()
        .and_then(|s| s.parse().ok());
    let r = run(&o);
    eprintln!("{r:#?}");
}
