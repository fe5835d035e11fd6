//! What a simulation run is asked to do ([`SimOptions`], [`Profile`]) and what it
//! reports ([`SimReport`]).

/// Fault mixes. `Mixed` draws every knob from the seed; the others aim at specific
/// dangerous interleavings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Mixed,
    /// Three nodes, one entry per message, leaders crashing right after their election
    /// or a commit, lossy links: makes interleavings such as the paper's Figure 8 likely.
    Stormy,
    /// Long partitions that mostly isolate the current leader, read-heavy clients that
    /// keep talking to the node they believe leads: deposed leaders meet clients.
    Partitions,
}

impl Profile {
    /// The profile run for `seed` by default: mostly mixed, every fourth seed one of
    /// the targeted ones.
    pub fn for_seed(seed: u64) -> Profile {
        match seed % 8 {
            3 => Profile::Stormy,
            7 => Profile::Partitions,
            _ => Profile::Mixed,
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "mixed" => Some(Profile::Mixed),
            "stormy" => Some(Profile::Stormy),
            "partitions" => Some(Profile::Partitions),
            _ => None,
        }
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// 3 or 5; 0 picks from the seed.
    pub nodes: usize,
    /// Steps with faults before everything heals.
    pub chaos_steps: u64,
    /// Ticks allowed after healing for the cluster to commit and converge.
    pub heal_ticks: u64,
    /// Which fault mix to run.
    pub profile: Profile,
    /// Print every delivered message and Ready from this step on (debugging).
    pub trace_from_step: Option<u64>,
    #[cfg(any(test, feature = "raft-bugs"))]
    pub bugs: crate::raft::Bugs,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: 0,
            chaos_steps: 2400,
            heal_ticks: 400,
            profile: Profile::Mixed,
            trace_from_step: None,
            #[cfg(any(test, feature = "raft-bugs"))]
            bugs: Default::default(),
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    /// Client operations in the checked history (completed or of unknown outcome).
    pub ops: u64,
    pub committed: u64,
    pub elections: u64,
    pub crashes: u64,
    pub snapshots_sent: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    pub violations: Vec<String>,
    /// The linearizability search ran out of budget (no verdict).
    pub linearizability_unknown: bool,
    /// Digest of everything observable; equal seeds give equal digests.
    pub digest: u64,
}
