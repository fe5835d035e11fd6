//! Simulated clients: each issues one operation at a time (puts through proposals,
//! gets through ReadIndex) to the node it believes leads, and records the call and
//! return in the history the linearizability checker reads. A put whose outcome is
//! unknown (timeout, crash) stays in the history without a return; an operation
//! that certainly failed is left out.

use super::node::encode_put;
use super::{Sim, Waiting, STEPS_PER_TICK};
use crate::raft::linearizability::{KvInput, KvOutput, Operation};

impl Sim {
    pub(super) fn on_applied(&mut self, i: usize, index: u64, op: Option<u64>) {
        let id = self.nodes[i].id;
        for c in 0..self.clients.len() {
            let hit = match &self.clients[c].waiting {
                Some((
                    Waiting::Put {
                        node,
                        index: pi,
                        hist,
                    },
                    _,
                )) if *node == id && *pi == index => Some(*hist),
                _ => None,
            };
            if let Some(h) = hit {
                let mine = op.and_then(|o| self.op_hist.get(&o).copied()) == Some(h);
                if mine {
                    self.history[h].ret = self.tick_time();
                } else {
                    // Another entry is committed at our index: ours never will be.
                    self.failed[h] = true;
                }
                self.clients[c].waiting = None;
            }
        }
    }

    pub(super) fn serve_reads(&mut self, i: usize) {
        let applied = self.nodes[i].sm.applied;
        let ready: Vec<(u64, u64)> = self.nodes[i]
            .reads
            .iter()
            .copied()
            .filter(|(idx, _)| *idx <= applied)
            .collect();
        self.nodes[i].reads.retain(|(idx, _)| *idx > applied);
        for (_, op) in ready {
            let Some(&h) = self.op_hist.get(&op) else {
                continue;
            };
            let Some(c) = self.clients.iter().position(
                |c| matches!(&c.waiting, Some((Waiting::Get { hist, .. }, _)) if *hist == h),
            ) else {
                continue; // gave up already
            };
            let key = self.history[h].input.key().to_vec();
            let v = self.nodes[i].sm.kv.get(&key).cloned();
            self.history[h].output = KvOutput::Value(v);
            self.history[h].ret = self.tick_time();
            self.clients[c].waiting = None;
        }
    }

    pub(super) fn clients_step(&mut self) {
        for c in 0..self.clients.len() {
            if self.clients[c].waiting.is_some() || !self.rng.chance(self.knobs.client_p) {
                continue;
            }
            if !self.chaos {
                continue;
            }
            self.issue(c, None);
        }
    }

    /// Issues a random op (or a put to `probe_key`); returns whether it was accepted.
    pub(super) fn issue(&mut self, c: usize, probe_key: Option<&[u8]>) -> bool {
        let n = self.nodes.len() as u64;
        let hint = if probe_key.is_some() {
            self.leader().unwrap_or(0)
        } else {
            self.clients[c].leader_hint
        };
        let target = if hint != 0 && !self.rng.chance(0.1) {
            hint
        } else {
            self.rng.range(1, n + 1)
        };
        self.clients[c].leader_hint = target;
        let i = target as usize - 1;
        if self.nodes[i].raw.is_none() {
            return false;
        }
        let op = self.next_op;
        let key = match probe_key {
            Some(k) => k.to_vec(),
            None => format!("k{}", self.rng.range(0, self.knobs.keys)).into_bytes(),
        };
        let get = probe_key.is_none() && self.rng.chance(self.knobs.get_ratio);
        let raw = self.nodes[i].raw.as_mut().unwrap();
        let deadline = self.now + 60 * STEPS_PER_TICK;
        let not_leader = |e: crate::raft::ProposeError| match e {
            crate::raft::ProposeError::NotLeader { leader } => leader,
            _ => target,
        };
        if get {
            if let Err(e) = raw.read_index(op.to_le_bytes().to_vec()) {
                self.clients[c].leader_hint = not_leader(e);
                return false;
            }
            let call = self.tick_time();
            let h = self.push_op(op, c, KvInput::Get { key }, KvOutput::Value(None), call);
            self.clients[c].waiting = Some((
                Waiting::Get {
                    node: target,
                    hist: h,
                },
                deadline,
            ));
        } else {
            let value = format!("v{op}").into_bytes();
            let index = match raw.propose(vec![encode_put(op, &key, &value)]) {
                Ok(i) => i,
                Err(e) => {
                    self.clients[c].leader_hint = not_leader(e);
                    return false;
                }
            };
            let call = self.tick_time();
            let h = self.push_op(op, c, KvInput::Put { key, value }, KvOutput::PutOk, call);
            self.clients[c].waiting = Some((
                Waiting::Put {
                    node: target,
                    index,
                    hist: h,
                },
                deadline,
            ));
        }
        self.next_op += 1;
        true
    }

    pub(super) fn push_op(
        &mut self,
        op: u64,
        c: usize,
        input: KvInput,
        output: KvOutput,
        call: u64,
    ) -> usize {
        self.history.push(Operation {
            client: c as u64,
            input,
            output,
            call,
            ret: u64::MAX,
        });
        self.failed.push(false);
        self.op_hist.insert(op, self.history.len() - 1);
        self.history.len() - 1
    }

    pub(super) fn give_up(&mut self, c: usize) {
        self.clients[c].leader_hint = 0;
        if let Some((w, _)) = self.clients[c].waiting.take() {
            match w {
                Waiting::Put { .. } => {} // unknown outcome: ret stays u64::MAX
                Waiting::Get { hist, .. } => self.failed[hist] = true,
            }
        }
    }

    pub(super) fn client_timeouts(&mut self) {
        for c in 0..self.clients.len() {
            if let Some((_, deadline)) = &self.clients[c].waiting {
                if self.now >= *deadline {
                    self.give_up(c);
                }
            }
        }
    }
}
