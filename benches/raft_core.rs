//! Raft core throughput: committed entries per second of a 3-node group in one
//! process, in memory (MemStorage, instant "disk"), with batched proposals. No I/O,
//! no network: this is the cost of the consensus state machine itself.
//!
//! `cargo bench --bench raft_core` (release, 2 s per batch size). Under `cargo test`
//! (no `--bench` argument) it runs a short smoke pass so the gate stays fast.

use corekv::raft::{ConfState, Config, MemStorage, Message, RawNode, Role};
use std::collections::VecDeque;
use std::time::Instant;

#[path = "support/run_length.rs"]
mod run_length;
use run_length::RunLength;

fn cluster() -> Vec<RawNode<MemStorage>> {
    let conf = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    (1..=3)
        .map(|id| {
            let mut cfg = Config::new(id);
            cfg.max_inflight_msgs = 64;
            RawNode::new(cfg, MemStorage::new(conf.clone())).unwrap()
        })
        .collect()
}

/// Persists and delivers until quiet; returns entries applied at node 1.
fn drive(nodes: &mut [RawNode<MemStorage>], net: &mut VecDeque<Message>) -> u64 {
    let mut applied = 0;
    loop {
        let mut any = false;
        for (i, n) in nodes.iter_mut().enumerate() {
            while n.has_ready() {
                any = true;
                let rd = n.ready();
                net.extend(rd.messages);
                n.storage_mut().append(&rd.entries);
                if let Some(hs) = rd.hard_state {
                    n.storage_mut().set_hard_state(hs);
                }
                n.on_persisted(rd.number);
                net.extend(rd.persisted_messages);
                if let Some(e) = rd.committed_entries.last() {
                    if i == 0 {
                        applied += rd.committed_entries.len() as u64;
                    }
                    n.advance_apply(e.index);
                    // Keep memory bounded: compact what every node has applied.
                    let first = e.index.saturating_sub(10_000);
                    if first > n.storage().snapshot().meta.index + 10_000 {
                        let conf = n.conf_state().clone();
                        n.storage_mut().compact(first, conf, Vec::new());
                    }
                }
            }
        }
        while let Some(m) = net.pop_front() {
            any = true;
            let to = m.to as usize - 1;
            nodes[to].step(m).unwrap();
        }
        if !any {
            return applied;
        }
    }
}

fn main() {
    let length = RunLength::from_args();
    let payload = vec![7u8; 128];
    for batch in [1usize, 16, 128] {
        let mut nodes = cluster();
        let mut net = VecDeque::new();
        nodes[0].campaign();
        drive(&mut nodes, &mut net);
        assert_eq!(nodes[0].status().role, Role::Leader);
        let start = Instant::now();
        let mut committed = 0u64;
        let mut rounds = 0u64;
        while start.elapsed() < length.per_case {
            for _ in 0..8 {
                nodes[0].propose(vec![payload.clone(); batch]).unwrap();
            }
            committed += drive(&mut nodes, &mut net);
            rounds += 1;
            if rounds.is_multiple_of(64) {
                for n in nodes.iter_mut() {
                    n.tick();
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "raft_core: 3 nodes, batch {batch:>3} x 128 B, 8 batches in flight: {:>10.0} committed entries/s ({committed} in {secs:.2}s){}",
            committed as f64 / secs,
            length.tag()
        );
    }
}
