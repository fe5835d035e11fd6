//! One simulated node: the driver loop around a [`RawNode`] over a [`MemStorage`]
//! "disk", a small key-value state machine applied from committed entries, and crash
//! semantics: a crash loses every Ready not yet reported durable, and the state
//! machine (rebuilt from the last snapshot plus the log on restart).

use crate::raft::message::{ConfChange, Snapshot};
use crate::raft::raw_node::Ready;
use crate::raft::storage::MemStorage;
use crate::raft::types::{ConfState, Entry, EntryKind, HardState, NodeId};
use crate::raft::{Config, Message, RawNode};
use std::collections::{BTreeMap, VecDeque};

/// A Ready handed out but not yet durable.
pub struct PendingWrite {
    pub number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
    pub msgs: Vec<Message>,
}

/// The application state: puts encoded as `op|key|value`.
#[derive(Clone, Debug, Default)]
pub struct StateMachine {
    pub kv: BTreeMap<Vec<u8>, Vec<u8>>,
    pub applied: u64,
    pub conf: ConfState,
}

/// A decoded client command.
pub struct Command {
    pub op: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

pub fn encode_put(op: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = format!("{op}|").into_bytes();
    v.extend_from_slice(key);
    v.push(b'|');
    v.extend_from_slice(value);
    v
}

pub fn decode_put(data: &[u8]) -> Option<Command> {
    let mut it = data.splitn(3, |&b| b == b'|');
    let op = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let key = it.next()?.to_vec();
    let value = it.next()?.to_vec();
    Some(Command { op, key, value })
}

impl StateMachine {
    pub fn from_snapshot(s: &Snapshot) -> StateMachine {
        let mut sm = StateMachine {
            applied: s.meta.index,
            conf: s.meta.conf_state.clone(),
            ..Default::default()
        };
        let mut d = &s.data[..];
        while d.len() >= 8 {
            let kl = u32::from_le_bytes(d[0..4].try_into().unwrap()) as usize;
            let vl = u32::from_le_bytes(d[4..8].try_into().unwrap()) as usize;
            sm.kv
                .insert(d[8..8 + kl].to_vec(), d[8 + kl..8 + kl + vl].to_vec());
            d = &d[8 + kl + vl..];
        }
        sm
    }

    pub fn snapshot_data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in &self.kv {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        out
    }

    /// Applies one committed entry; returns the client op it carried, if any.
    pub fn apply(&mut self, e: &Entry) -> Option<u64> {
        assert_eq!(e.index, self.applied + 1, "state machine applies in order");
        self.applied = e.index;
        match e.kind {
            EntryKind::ConfChange => {
                if let Ok(cc) = ConfChange::decode(&e.data) {
                    self.conf = cc.apply_to(&self.conf);
                }
                None
            }
            EntryKind::Normal => {
                let c = decode_put(&e.data)?;
                self.kv.insert(c.key, c.value);
                Some(c.op)
            }
        }
    }

    pub fn digest(&self) -> u64 {
        let mut h = super::Fnv::default();
        for (k, v) in &self.kv {
            h.write(k);
            h.write(b"=");
            h.write(v);
            h.write(b";");
        }
        h.finish()
    }
}

pub struct SimNode {
    pub id: NodeId,
    pub raw: Option<RawNode<MemStorage>>,
    /// The durable disk while crashed.
    pub disk: Option<MemStorage>,
    pub pending: VecDeque<PendingWrite>,
    pub sm: StateMachine,
    /// Confirmed reads waiting for apply: (index, op).
    pub reads: Vec<(u64, u64)>,
    pub down_until: u64,
    pub incarnation: u64,
    /// A scheduled crash (the leader-killing nemesis).
    pub kill_at: Option<u64>,
}

impl SimNode {
    pub fn new(id: NodeId, storage: MemStorage, cfg: Config, boot: ConfState) -> SimNode {
        let raw = RawNode::new(cfg, storage).expect("fresh node starts");
        SimNode {
            id,
            raw: Some(raw),
            disk: None,
            pending: VecDeque::new(),
            sm: StateMachine {
                conf: boot,
                ..Default::default()
            },
            reads: Vec::new(),
            down_until: 0,
            incarnation: 0,
            kill_at: None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    /// Loses everything not durable.
    pub fn crash(&mut self) {
        let raw = self.raw.take().expect("crash an up node");
        self.disk = Some(raw.into_storage());
        self.pending.clear();
        self.reads.clear();
    }

    pub fn restart(&mut self, mut cfg: Config) {
        let disk = self.disk.take().expect("restart a crashed node");
        self.sm = if disk.snapshot().meta.index > 0 {
            StateMachine::from_snapshot(disk.snapshot())
        } else {
            StateMachine {
                conf: disk_boot_conf(&disk),
                ..Default::default()
            }
        };
        cfg.applied = self.sm.applied;
        self.incarnation += 1;
        self.raw = Some(RawNode::new(cfg, disk).expect("restart from durable state"));
    }

    /// Makes every pending write durable, in order; returns the messages that may now
    /// leave and the snapshot installed, if any.
    pub fn sync(&mut self) -> (Vec<Message>, Option<u64>) {
        let raw = self.raw.as_mut().expect("sync an up node");
        let mut msgs = Vec::new();
        let mut last = None;
        let mut installed = None;
        for w in self.pending.drain(..) {
            if let Some(s) = w.snapshot {
                self.sm = StateMachine::from_snapshot(&s);
                installed = Some(s.meta.index);
                raw.storage_mut().apply_snapshot(s);
            }
            raw.storage_mut().append(&w.entries);
            if let Some(hs) = w.hard_state {
                raw.storage_mut().set_hard_state(hs);
            }
            msgs.extend(w.msgs);
            last = Some(w.number);
        }
        if let Some(n) = last {
            raw.on_persisted(n);
            if let Some(i) = installed {
                raw.advance_apply(i);
            }
        }
        (msgs, installed)
    }

    pub fn queue_write(&mut self, rd: &mut Ready) {
        self.pending.push_back(PendingWrite {
            number: rd.number,
            hard_state: rd.hard_state,
            entries: std::mem::take(&mut rd.entries),
            snapshot: rd.snapshot.take(),
            msgs: std::mem::take(&mut rd.persisted_messages),
        });
    }
}

fn disk_boot_conf(disk: &MemStorage) -> ConfState {
    use crate::raft::types::Storage;
    disk.initial_state().map(|(_, c)| c).unwrap_or_default()
}
