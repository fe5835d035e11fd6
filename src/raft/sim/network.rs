//! The simulated network: per-message delay (so reordering), drops, duplicates, and
//! partitions as a set of blocked directed links (symmetric or asymmetric).

use crate::raft::message::Message;
use crate::raft::rng::Rng;
use crate::raft::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug)]
pub struct NetFaults {
    pub drop_p: f64,
    pub dup_p: f64,
    pub delay_min: u64,
    pub delay_max: u64,
    /// Chance that a message may overtake earlier ones on its link (otherwise links
    /// are FIFO, like a TCP connection).
    pub reorder_p: f64,
}

pub struct Network {
    pub faults: NetFaults,
    /// (deliver at, sequence, message)
    in_flight: Vec<(u64, u64, Message)>,
    seq: u64,
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Latest delivery time scheduled per link (for FIFO links).
    link_tail: BTreeMap<(NodeId, NodeId), u64>,
    pub sent: u64,
    pub delivered: u64,
}

impl Network {
    pub fn new(faults: NetFaults) -> Network {
        Network {
            faults,
            in_flight: Vec::new(),
            seq: 0,
            blocked: BTreeSet::new(),
            link_tail: BTreeMap::new(),
            sent: 0,
            delivered: 0,
        }
    }

    pub fn send(&mut self, rng: &mut Rng, now: u64, m: Message) {
        self.sent += 1;
        if rng.chance(self.faults.drop_p) {
            return;
        }
        let copies = if rng.chance(self.faults.dup_p) { 2 } else { 1 };
        for _ in 0..copies {
            let d = rng.range(self.faults.delay_min, self.faults.delay_max + 1);
            let mut at = now + d;
            let tail = self.link_tail.entry((m.from, m.to)).or_insert(0);
            if !rng.chance(self.faults.reorder_p) {
                at = at.max(*tail);
            }
            *tail = (*tail).max(at);
            self.seq += 1;
            self.in_flight.push((at, self.seq, m.clone()));
        }
    }

    /// Messages due at `now` whose link is open, in (time, sequence) order. Messages
    /// on a blocked link are lost.
    pub fn due(&mut self, now: u64) -> Vec<Message> {
        let mut due: Vec<(u64, u64, Message)> = Vec::new();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for x in self.in_flight.drain(..) {
            if x.0 <= now {
                due.push(x);
            } else {
                keep.push(x);
            }
        }
        self.in_flight = keep;
        due.sort_by_key(|x| (x.0, x.1));
        let out: Vec<Message> = due
            .into_iter()
            .map(|x| x.2)
            .filter(|m| !self.blocked.contains(&(m.from, m.to)))
            .collect();
        self.delivered += out.len() as u64;
        out
    }

    /// Splits `ids` in two groups that cannot talk (both directions).
    pub fn partition_symmetric(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
