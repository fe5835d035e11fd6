//! A deterministic simulator of 3- and 5-node Raft clusters built on [`RawNode`](crate::raft::RawNode) and
//! [`MemStorage`]: random client puts and gets (gets through ReadIndex) against a
//! small key-value state machine; message drops, delays, duplicates and reordering;
//! symmetric and asymmetric partitions; crashes that lose everything not reported
//! durable; leader transfers, membership changes, compaction and snapshots.
//!
//! Every run is a pure function of its seed (one [`Rng`], `BTreeMap`s only). After
//! every step the [`checker::Checker`] checks the Raft safety properties; at the end
//! the faults heal and the cluster must commit again within a bounded number of ticks,
//! and the client history must be linearizable ([`crate::raft::linearizability`]).
//!
//! Time: the simulation advances in steps; every node ticks every [`STEPS_PER_TICK`]
//! steps; messages take 1..=`delay_max` steps.

pub mod checker;
mod clients;
pub mod network;
pub mod node;
pub mod options;

pub use options::{Profile, SimOptions, SimReport};

use crate::raft::linearizability::{self, CheckResult, KvInput, KvModel, KvOutput, Operation};
use crate::raft::message::{ConfChange, ConfChangeKind, MessageType};
use crate::raft::rng::Rng;
use crate::raft::storage::MemStorage;
use crate::raft::types::{ConfState, NodeId, Storage};
use crate::raft::{Config, Role};
use checker::Checker;
use network::{NetFaults, Network};
use node::{decode_put, SimNode};
use std::collections::BTreeMap;

pub const STEPS_PER_TICK: u64 = 4;

/// FNV-1a, for digests that must not depend on a randomly seeded hasher.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    pub fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// Per-seed fault and configuration knobs.
struct Knobs {
    crash_p: f64,
    down_steps: (u64, u64),
    partition_p: f64,
    heal_p: f64,
    sync_p: f64,
    compact_p: f64,
    transfer_p: f64,
    conf_p: f64,
    client_p: f64,
    get_ratio: f64,
    /// Chance that a new leader is crashed a few steps after its election.
    leader_kill_p: f64,
    /// Chance that a leader whose Ready commits entries (or announces its election)
    /// crashes right after persisting and applying it, before its messages leave.
    commit_crash_p: f64,
    keys: u64,
}

enum Waiting {
    Put {
        node: NodeId,
        index: u64,
        hist: usize,
    },
    Get {
        node: NodeId,
        hist: usize,
    },
}

struct Client {
    waiting: Option<(Waiting, u64)>, // with deadline step
    /// The node this client believes leads (0: unknown); updated from NotLeader
    /// answers, cleared on timeouts: clients may well talk to a deposed leader.
    leader_hint: NodeId,
}

struct Sim {
    opts: SimOptions,
    rng: Rng,
    knobs: Knobs,
    now: u64,
    clock: u64,
    nodes: Vec<SimNode>,
    base_cfg: Config,
    net: Network,
    clients: Vec<Client>,
    history: Vec<Operation<KvInput, KvOutput>>,
    /// Operations known to have failed (left out of the check).
    failed: Vec<bool>,
    next_op: u64,
    /// op id → history index
    op_hist: BTreeMap<u64, usize>,
    checker: Checker,
    report: SimReport,
    digest: Fnv,
    chaos: bool,
}

/// Runs one seed; a panic inside the run counts as a violation.
pub fn run(opts: &SimOptions) -> SimReport {
    let o = opts.clone();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run_inner(o))) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            SimReport {
                seed: opts.seed,
                violations: vec![format!("panic: {msg}")],
                ..Default::default()
            }
        }
    }
}

/// The command that replays `seed`.
pub fn reproduce_command(seed: u64) -> String {
    format!("scripts/sim.sh --seed {seed}")
}

fn run_inner(opts: SimOptions) -> SimReport {
    let mut rng = Rng::new(opts.seed);
    let n = match opts.nodes {
        0 if opts.profile == Profile::Stormy => 3,
        0 => {
            if rng.chance(0.5) {
                3
            } else {
                5
            }
        }
        k => k,
    };
    let mut base_cfg = Config::new(1);
    base_cfg.election_ticks = 10;
    base_cfg.heartbeat_ticks = 2;
    base_cfg.pre_vote = rng.chance(0.75);
    base_cfg.check_quorum = rng.chance(0.75);
    base_cfg.max_msg_bytes = if rng.chance(0.5) {
        rng.range(30, 200)
    } else {
        1 << 20
    };
    base_cfg.max_inflight_msgs = rng.range(1, 9) as usize;
    base_cfg.max_inflight_bytes = rng.range(200, 4000);
    base_cfg.max_uncommitted_bytes = if rng.chance(0.3) {
        rng.range(100, 600)
    } else {
        1 << 20
    };
    base_cfg.max_committed_bytes_per_ready = rng.range(30, 400);
    #[cfg(any(test, feature = "raft-bugs"))]
    {
        base_cfg.bugs = opts.bugs;
    }
    if opts.profile == Profile::Partitions {
        base_cfg.check_quorum = rng.chance(0.5);
    }
    if opts.profile == Profile::Stormy {
        base_cfg.max_msg_bytes = 1;
        base_cfg.max_inflight_msgs = 1;
    }
    let mut knobs = Knobs {
        crash_p: rng.range(0, 12) as f64 / 4000.0,
        down_steps: (20, rng.range(40, 400)),
        partition_p: rng.range(0, 8) as f64 / 2000.0,
        heal_p: rng.range(2, 20) as f64 / 1000.0,
        sync_p: rng.range(10, 90) as f64 / 100.0,
        compact_p: rng.range(0, 10) as f64 / 1000.0,
        transfer_p: rng.range(0, 8) as f64 / 2000.0,
        conf_p: rng.range(1, 10) as f64 / 2000.0,
        client_p: rng.range(5, 40) as f64 / 100.0,
        get_ratio: rng.range(20, 70) as f64 / 100.0,
        leader_kill_p: rng.range(0, 10) as f64 / 100.0,
        commit_crash_p: rng.range(0, 3) as f64 / 100.0,
        keys: rng.range(1, 6),
    };
    if opts.profile == Profile::Partitions {
        knobs.crash_p = 0.0;
        knobs.partition_p = 0.01;
        knobs.heal_p = 0.004;
        knobs.get_ratio = 0.6;
        knobs.client_p = 0.5;
        knobs.commit_crash_p = 0.0;
        knobs.leader_kill_p = 0.0;
    }
    if opts.profile == Profile::Stormy {
        knobs.crash_p = 0.004;
        knobs.down_steps = (10, 120);
        knobs.partition_p = 0.006;
        knobs.heal_p = 0.02;
        knobs.client_p = 0.5;
        knobs.get_ratio = 0.5;
        knobs.conf_p = 0.0;
        knobs.leader_kill_p = 0.4;
        knobs.commit_crash_p = 0.4;
    }
    let mut faults = NetFaults {
        drop_p: rng.range(0, 15) as f64 / 100.0,
        dup_p: rng.range(0, 8) as f64 / 100.0,
        delay_min: 1,
        delay_max: rng.range(1, 12),
        reorder_p: rng.range(0, 30) as f64 / 100.0,
    };
    if opts.profile == Profile::Stormy {
        faults.drop_p = 0.2;
        faults.delay_max = 8;
    }
    let unavailable_every = if rng.chance(0.3) { rng.range(3, 10) } else { 0 };
    let boot = ConfState {
        voters: (1..=n as u64).collect(),
        ..Default::default()
    };
    let mut nodes = Vec::new();
    for id in 1..=n as u64 {
        let mut st = MemStorage::new(boot.clone());
        st.set_unavailable_every(unavailable_every);
        let cfg = node_cfg(&base_cfg, id, opts.seed, 0);
        nodes.push(SimNode::new(id, st, cfg, boot.clone()));
    }
    let mut sim = Sim {
        rng,
        knobs,
        now: 0,
        clock: 0,
        nodes,
        base_cfg,
        net: Network::new(faults),
        clients: (0..4)
            .map(|_| Client {
                waiting: None,
                leader_hint: 0,
            })
            .collect(),
        history: Vec::new(),
        failed: Vec::new(),
        next_op: 1,
        op_hist: BTreeMap::new(),
        checker: Checker::default(),
        report: SimReport {
            seed: opts.seed,
            nodes: n,
            ..Default::default()
        },
        digest: Fnv::default(),
        chaos: true,
        opts,
    };
    sim.run();
    sim.finish()
}

fn node_cfg(base: &Config, id: NodeId, seed: u64, incarnation: u64) -> Config {
    let mut c = base.clone();
    c.id = id;
    c.seed = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(id * 1_000_003 + incarnation * 7919);
    c
}

impl Sim {
    fn tick_time(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn run(&mut self) {
        for _ in 0..self.opts.chaos_steps {
            self.step();
            if !self.checker.violations.is_empty() {
                return;
            }
        }
        self.heal();
        self.liveness();
    }

    fn step(&mut self) {
        self.now += 1;
        if self.chaos {
            self.faults();
        }
        self.clients_step();
        for m in self.net.due(self.now) {
            let to = m.to as usize - 1;
            if self.opts.trace_from_step.is_some_and(|s| self.now >= s) {
                eprintln!(
                    "step {} deliver {m}{}",
                    self.now,
                    if self.nodes[to].raw.is_none() {
                        " (down)"
                    } else {
                        ""
                    }
                );
            }
            let Some(raw) = self.nodes[to].raw.as_mut() else {
                continue;
            };
            if let Err(e) = raw.step(m) {
                let now = self.now;
                self.checker
                    .violation(now, format!("node {} refused a message: {e}", to + 1));
            }
        }
        if self.now.is_multiple_of(STEPS_PER_TICK) {
            for nd in self.nodes.iter_mut() {
                if let Some(raw) = nd.raw.as_mut() {
                    raw.tick();
                }
            }
        }
        for i in 0..self.nodes.len() {
            self.process_ready(i);
            if self.nodes[i].is_up()
                && !self.nodes[i].pending.is_empty()
                && (!self.chaos || self.rng.chance(self.knobs.sync_p))
            {
                self.sync(i);
                self.process_ready(i);
            }
        }
        self.client_timeouts();
    }

    fn faults(&mut self) {
        let n = self.nodes.len();
        let down = self.nodes.iter().filter(|x| !x.is_up()).count();
        for i in 0..n {
            let now = self.now;
            if self.nodes[i].is_up() {
                if self.nodes[i].kill_at.is_some_and(|t| t <= now) {
                    self.nodes[i].kill_at = None;
                    if self.nodes[i].raw.as_ref().unwrap().status().role == Role::Leader {
                        self.crash(i);
                        let (lo, hi) = self.knobs.down_steps;
                        self.nodes[i].down_until = now + self.rng.range(lo, hi);
                    }
                } else if down < (n - 1) / 2 + usize::from(self.rng.chance(0.2))
                    && self.rng.chance(self.knobs.crash_p)
                {
                    self.crash(i);
                    let (lo, hi) = self.knobs.down_steps;
                    self.nodes[i].down_until = now + self.rng.range(lo, hi);
                }
            } else if now >= self.nodes[i].down_until {
                self.restart(i);
            }
        }
        if self.rng.chance(self.knobs.partition_p) {
            self.net.heal();
            let ids: Vec<NodeId> = (1..=n as u64).collect();
            let leader = self.leader();
            let isolate = match leader {
                Some(l) if self.opts.profile == Profile::Partitions && self.rng.chance(0.7) => {
                    Some(l)
                }
                _ => None,
            };
            if let Some(l) = isolate {
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&x| x != l).collect();
                self.net.partition_symmetric(&[l], &rest);
            } else if self.rng.chance(0.6) {
                let k = self.rng.range(1, (n as u64).div_ceil(2) + 1) as usize;
                let mut a = ids.clone();
                let mut b = Vec::new();
                for _ in 0..k {
                    let j = self.rng.range(0, a.len() as u64) as usize;
                    b.push(a.remove(j));
                }
                self.net.partition_symmetric(&a, &b);
            } else {
                for _ in 0..self.rng.range(1, 4) {
                    let f = self.rng.range(1, n as u64 + 1);
                    let t = self.rng.range(1, n as u64 + 1);
                    if f != t {
                        self.net.block(f, t);
                    }
                }
            }
        } else if self.rng.chance(self.knobs.heal_p) {
            self.net.heal();
        }
        if let Some(l) = self.leader() {
            if self.rng.chance(self.knobs.transfer_p) {
                let to = self.rng.range(1, n as u64 + 1);
                self.report.transfers += 1;
                self.nodes[l as usize - 1]
                    .raw
                    .as_mut()
                    .unwrap()
                    .transfer_leader(to);
            }
            if self.rng.chance(self.knobs.conf_p) {
                self.conf_change(l);
            }
        }
        for i in 0..n {
            if self.rng.chance(self.knobs.compact_p) {
                self.compact(i);
            }
        }
    }

    fn conf_change(&mut self, leader: NodeId) {
        let n = self.nodes.len() as u64;
        let raw = self.nodes[leader as usize - 1].raw.as_mut().unwrap();
        let conf = raw.conf_state().clone();
        let outsider = (1..=n).find(|x| !conf.voters.contains(x));
        let cc = match outsider {
            Some(x) if conf.learners.contains(&x) => ConfChange {
                kind: ConfChangeKind::AddVoter,
                node: x,
            },
            Some(x) => ConfChange {
                kind: ConfChangeKind::AddLearner,
                node: x,
            },
            None => {
                let min = if n == 3 { 2 } else { 3 };
                if conf.voters.len() <= min {
                    return;
                }
                let j = self.rng.range(0, conf.voters.len() as u64) as usize;
                ConfChange {
                    kind: ConfChangeKind::RemoveNode,
                    node: conf.voters[j],
                }
            }
        };
        if raw.propose_conf_change(cc).is_ok() {
            self.report.conf_changes += 1;
        }
    }

    fn compact(&mut self, i: usize) {
        let nd = &mut self.nodes[i];
        let Some(raw) = nd.raw.as_mut() else { return };
        let applied = nd.sm.applied;
        let first = raw.storage().first_index().unwrap();
        if applied < first + 3 || applied > raw.storage().last_index().unwrap() {
            return;
        }
        raw.storage_mut()
            .compact(applied, nd.sm.conf.clone(), nd.sm.snapshot_data());
    }

    fn crash(&mut self, i: usize) {
        self.report.crashes += 1;
        self.nodes[i].crash();
        // Every client waiting on this node: puts become unknown, gets are dropped.
        let id = self.nodes[i].id;
        for c in 0..self.clients.len() {
            let on_node = match &self.clients[c].waiting {
                Some((Waiting::Put { node, .. }, _)) | Some((Waiting::Get { node, .. }, _)) => {
                    *node == id
                }
                None => false,
            };
            if on_node {
                self.give_up(c);
            }
        }
    }

    fn restart(&mut self, i: usize) {
        self.check_durable_commit(i);
        let inc = self.nodes[i].incarnation + 1;
        let cfg = node_cfg(&self.base_cfg, self.nodes[i].id, self.opts.seed, inc);
        self.nodes[i].restart(cfg);
        let (id, applied, digest) = (
            self.nodes[i].id,
            self.nodes[i].sm.applied,
            self.nodes[i].sm.digest(),
        );
        if applied > 0 {
            let now = self.now;
            self.checker.check_digest(now, id, applied, digest);
        }
    }

    /// What a crashed node kept must include every entry up to its durable commit
    /// index, and those must be the entries committed there.
    fn check_durable_commit(&mut self, i: usize) {
        let disk = self.nodes[i]
            .disk
            .as_ref()
            .expect("crashed node has a disk");
        let commit = disk.hard_state().commit;
        let first = disk.first_index().unwrap();
        let mut bad = None;
        for idx in first..=commit {
            let Some(&(t, _)) = self.checker.applied.get(&idx) else {
                continue;
            };
            if disk.term(idx) != Ok(t) {
                bad = Some((idx, t, disk.term(idx)));
                break;
            }
        }
        if let Some((idx, t, got)) = bad {
            let (now, id) = (self.now, self.nodes[i].id);
            self.checker.violation(
                now,
                format!("node {id} restarts with commit {commit} but its disk holds {got:?} at {idx}, committed {idx}/{t}"),
            );
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for nd in &self.nodes {
            if let Some(raw) = &nd.raw {
                let s = raw.status();
                if s.role == Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, nd.id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    fn sync(&mut self, i: usize) {
        self.sync_inner(i, true);
    }

    fn sync_inner(&mut self, i: usize, send: bool) {
        let now = self.now;
        let id = self.nodes[i].id;
        // Log matching over what becomes durable.
        {
            let nd = &self.nodes[i];
            let raw = nd.raw.as_ref().unwrap();
            let mut snap_term: Option<(u64, u64)> = None;
            for w in &nd.pending {
                if let Some(s) = &w.snapshot {
                    snap_term = Some((s.meta.index, s.meta.term));
                }
                if let Some(first) = w.entries.first() {
                    let prev_idx = first.index - 1;
                    let prev_term = match snap_term {
                        Some((si, st)) if si == prev_idx => st,
                        _ => pending_prev_term(nd, raw, prev_idx),
                    };
                    self.checker.durable_entries(now, id, prev_term, &w.entries);
                }
            }
        }
        let (msgs, installed) = self.nodes[i].sync();
        if let Some(idx) = installed {
            let d = self.nodes[i].sm.digest();
            self.checker.check_digest(now, id, idx, d);
        }
        for mut m in msgs {
            if !send {
                break;
            }
            if m.kind == MessageType::Snapshot {
                self.attach_snapshot(i, &mut m);
            }
            self.net.send(&mut self.rng, now, m);
        }
    }

    fn attach_snapshot(&mut self, i: usize, m: &mut crate::raft::Message) {
        let raw = self.nodes[i].raw.as_mut().unwrap();
        m.snapshot = Some(raw.storage().snapshot().clone());
        // The transport took it; delivery may still fail (the follower then rejects
        // the next probe and gets another snapshot).
        raw.report_snapshot(m.to, true);
        self.report.snapshots_sent += 1;
    }

    fn process_ready(&mut self, i: usize) {
        for _ in 0..64 {
            let id = self.nodes[i].id;
            let Some(raw) = self.nodes[i].raw.as_mut() else {
                return;
            };
            if !raw.has_ready() {
                return;
            }
            let mut rd = raw.ready();
            let is_leader = raw.status().role == Role::Leader;
            let term = raw.status().term;
            let now = self.now;
            if let Some(ss) = rd.soft_state {
                if ss.role == Role::Leader {
                    self.report.elections += 1;
                    self.checker.leader(now, term, id);
                    self.check_leader_completeness(i);
                    if self.chaos && self.rng.chance(self.knobs.leader_kill_p) {
                        self.nodes[i].kill_at = Some(now + self.rng.range(1, 40));
                    }
                }
            }
            let n = self.nodes.len();
            let down = self.nodes.iter().filter(|x| !x.is_up()).count();
            let became_leader = rd.soft_state.is_some_and(|ss| ss.role == Role::Leader);
            let crash_after = self.chaos
                && (!rd.committed_entries.is_empty() || became_leader)
                && is_leader
                && down < (n - 1) / 2
                && self.rng.chance(self.knobs.commit_crash_p);
            let msgs = std::mem::take(&mut rd.messages);
            for mut m in msgs {
                if crash_after {
                    break;
                }
                if m.kind == MessageType::Snapshot {
                    self.attach_snapshot(i, &mut m);
                }
                self.net.send(&mut self.rng, now, m);
            }
            self.nodes[i].queue_write(&mut rd);
            let committed = std::mem::take(&mut rd.committed_entries);
            for e in &committed {
                let op = self.nodes[i].sm.apply(e);
                let d = self.nodes[i].sm.digest();
                self.checker.applied_entry(now, id, e, d);
                self.digest.write_u64(id);
                self.digest.write_u64(e.index);
                self.digest.write_u64(e.term);
                self.report.committed = self.report.committed.max(e.index);
                self.on_applied(i, e.index, op);
            }
            if let Some(e) = committed.last() {
                self.nodes[i].raw.as_mut().unwrap().advance_apply(e.index);
            }
            if crash_after {
                // Crash point: after the fsync, before anything of this Ready leaves.
                self.sync_inner(i, false);
                self.crash(i);
                let (lo, hi) = self.knobs.down_steps;
                self.nodes[i].down_until = now + self.rng.range(lo, hi);
                return;
            }
            for rs in rd.read_states {
                let op = u64::from_le_bytes(rs.ctx[..8].try_into().expect("8-byte read ctx"));
                self.nodes[i].reads.push((rs.index, op));
            }
            self.serve_reads(i);
        }
    }

    fn check_leader_completeness(&mut self, i: usize) {
        let raw = self.nodes[i].raw.as_ref().unwrap();
        let s = raw.status();
        let now = self.now;
        let hi = self
            .checker
            .applied
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        let lo = s.first_index.max(hi.saturating_sub(200));
        for idx in lo..=hi {
            let Some(&(t, _)) = self.checker.applied.get(&idx) else {
                continue;
            };
            if idx < s.first_index {
                continue;
            }
            if raw.term_of(idx) != Some(t) {
                let id = self.nodes[i].id;
                self.checker.violation(
                    now,
                    format!(
                        "leader completeness: new leader {id} (term {}) lacks committed {idx}/{t}",
                        s.term
                    ),
                );
                return;
            }
        }
    }

    fn heal(&mut self) {
        self.chaos = false;
        self.net.heal();
        self.net.faults.drop_p = 0.0;
        self.net.faults.dup_p = 0.0;
        for i in 0..self.nodes.len() {
            if !self.nodes[i].is_up() {
                self.restart(i);
            }
        }
    }

    /// After healing, the cluster must commit a new entry and every member must apply
    /// it within `heal_ticks`.
    fn liveness(&mut self) {
        let limit = self.now + self.opts.heal_ticks * STEPS_PER_TICK;
        let mut probe: Option<(usize, u64)> = None; // (history index, log index) of a probe put
        while self.now < limit {
            for _ in 0..STEPS_PER_TICK {
                self.step();
            }
            if !self.checker.violations.is_empty() {
                return;
            }
            let done = probe.is_some_and(|(h, _)| self.history[h].ret != u64::MAX);
            if !done && self.clients[0].waiting.is_none() {
                if self.issue(0, Some(b"probe")) {
                    if let Some((Waiting::Put { index, hist, .. }, _)) = &self.clients[0].waiting {
                        probe = Some((*hist, *index));
                    }
                }
                continue;
            }
            if done {
                if let Some(l) = self.leader() {
                    let raw = self.nodes[l as usize - 1].raw.as_ref().unwrap();
                    let s = raw.status();
                    let members: Vec<NodeId> = s
                        .conf
                        .voters
                        .iter()
                        .chain(s.conf.learners.iter())
                        .copied()
                        .collect();
                    let probe_index = probe.map_or(0, |(_, i)| i);
                    let converged = members
                        .iter()
                        .all(|&m| self.nodes[m as usize - 1].sm.applied >= probe_index);
                    if converged {
                        return;
                    }
                }
            }
        }
        let now = self.now;
        let statuses: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.raw.as_ref())
            .map(|r| {
                let s = r.status();
                format!(
                    "{}:{:?} t{} lead{} c{} a{} last{} voters{:?} {:?}",
                    s.id,
                    s.role,
                    s.term,
                    s.leader,
                    s.commit,
                    s.applied,
                    s.last_index,
                    s.conf.voters,
                    s.progress
                )
            })
            .collect();
        self.checker.violation(
            now,
            format!(
                "liveness: no commit/convergence within {} ticks after healing [{}]",
                self.opts.heal_ticks,
                statuses.join("; ")
            ),
        );
    }

    fn finish(mut self) -> SimReport {
        let ops: Vec<Operation<KvInput, KvOutput>> = self
            .history
            .iter()
            .zip(&self.failed)
            .filter(|(_, f)| !**f)
            .map(|(o, _)| o.clone())
            // A get that never returned has no effect; leave it out.
            .filter(|o| !(matches!(o.input, KvInput::Get { .. }) && o.ret == u64::MAX))
            .collect();
        self.report.ops = ops.len() as u64;
        for o in &ops {
            self.digest.write_u64(o.call);
            self.digest.write_u64(o.ret);
        }
        if self.checker.violations.is_empty() {
            match linearizability::check(&KvModel, ops, 2_000_000) {
                CheckResult::Linearizable => {}
                CheckResult::Violation { partition, ops } => self.checker.violations.push(format!(
                    "history not linearizable (key partition {partition}):\n{ops}"
                )),
                CheckResult::Unknown => self.report.linearizability_unknown = true,
            }
        }
        self.digest.write_u64(self.report.committed);
        self.digest.write_u64(self.net.sent);
        self.report.digest = self.digest.finish();
        self.report.violations = std::mem::take(&mut self.checker.violations);
        self.report
    }
}

/// Term of `idx` in `nd`'s log as it will be once its pending writes are durable:
/// the latest pending write holding `idx`, else the durable storage.
fn pending_prev_term(nd: &SimNode, raw: &crate::raft::RawNode<MemStorage>, idx: u64) -> u64 {
    for w in nd.pending.iter().rev() {
        if let Some(e) = w.entries.iter().find(|e| e.index == idx) {
            return e.term;
        }
    }
    raw.storage().term(idx).unwrap_or(0)
}

/// Parses a put payload (for tools that read logs).
pub fn describe_entry(data: &[u8]) -> Option<(u64, Vec<u8>, Vec<u8>)> {
    decode_put(data).map(|c| (c.op, c.key, c.value))
}
