//! Safety checks run after every simulation step:
//! - Election Safety: at most one leader per term (Raft Figure 3).
//! - Log Matching: two durable logs holding an entry with the same index and term hold
//!   the same entry and the same preceding term (so, inductively, the same prefix).
//! - State Machine Safety: no two nodes apply different entries at one index, every
//!   node applies in order, and state-machine digests agree at equal applied indexes.
//! - Leader Completeness: a new leader holds every entry some node already applied.

use crate::raft::types::{Entry, NodeId};
use std::collections::BTreeMap;

#[derive(Default)]
pub struct Checker {
    pub leaders: BTreeMap<u64, NodeId>,
    /// index → (term, data hash) of the entry applied there.
    pub applied: BTreeMap<u64, (u64, u64)>,
    /// index → state digest after applying it.
    pub sm_digest: BTreeMap<u64, u64>,
    /// (index, term) → (data hash, previous term) of durable entries.
    pub durable: BTreeMap<(u64, u64), (u64, u64)>,
    pub violations: Vec<String>,
}

pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = super::Fnv::default();
    h.write(b);
    h.finish()
}

impl Checker {
    pub fn violation(&mut self, now: u64, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("step {now}: {what}"));
        }
    }

    pub fn leader(&mut self, now: u64, term: u64, id: NodeId) {
        match self.leaders.get(&term) {
            Some(&l) if l != id => {
                self.violation(now, format!("two leaders in term {term}: {l} and {id}"))
            }
            _ => {
                self.leaders.insert(term, id);
            }
        }
    }

    pub fn applied_entry(&mut self, now: u64, node: NodeId, e: &Entry, digest: u64) {
        let h = hash_bytes(&e.data);
        match self.applied.get(&e.index) {
            Some(&(t, dh)) if (t, dh) != (e.term, h) => self.violation(
                now,
                format!(
                    "node {node} applied {}/{} but {}/{t} was applied there before (committed entry changed)",
                    e.index, e.term, e.index
                ),
            ),
            Some(_) => {}
            None => {
                self.applied.insert(e.index, (e.term, h));
            }
        }
        self.check_digest(now, node, e.index, digest);
    }

    pub fn check_digest(&mut self, now: u64, node: NodeId, index: u64, digest: u64) {
        match self.sm_digest.get(&index) {
            Some(&d) if d != digest => self.violation(
                now,
                format!("node {node}: state machine at {index} differs from another node's"),
            ),
            Some(_) => {}
            None => {
                self.sm_digest.insert(index, digest);
            }
        }
    }

    /// `prev_term` is the term of the entry before `ents[0]` in the same log.
    pub fn durable_entries(&mut self, now: u64, node: NodeId, prev_term: u64, ents: &[Entry]) {
        let mut prev = prev_term;
        for e in ents {
            let v = (hash_bytes(&e.data), prev);
            match self.durable.get(&(e.index, e.term)) {
                Some(&x) if x != v => self.violation(
                    now,
                    format!(
                        "log matching: node {node} holds {}/{} differing from another log",
                        e.index, e.term
                    ),
                ),
                Some(_) => {}
                None => {
                    self.durable.insert((e.index, e.term), v);
                }
            }
            prev = e.term;
        }
    }
}
