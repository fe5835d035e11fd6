//! A synchronous test cluster: every Ready is persisted at once, messages wait in a
//! mailbox until delivered, and everything that happens is written to a transcript.

use crate::raft::message::write_entries_string;
use crate::raft::{ConfState, Config, Entry, MemStorage, Message, RawNode, Ready, Storage};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

pub struct Cluster {
    pub nodes: BTreeMap<u64, RawNode<MemStorage>>,
    pub mailbox: Vec<Message>,
    pub applied: BTreeMap<u64, Vec<Entry>>,
    pub isolated: BTreeSet<u64>,
    pub out: String,
    pub cfg: Config,
    /// The bootstrap configuration: a joining node starts from it and learns later
    /// changes from the log (or from a snapshot).
    pub boot: ConfState,
}

impl Cluster {
    pub fn new(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            mailbox: Vec::new(),
            applied: BTreeMap::new(),
            isolated: BTreeSet::new(),
            out: String::new(),
            cfg: Config::new(1),
            boot: ConfState::default(),
        };
        tweak(&mut c.cfg);
        let conf = ConfState {
            voters: (1..=n).collect(),
            ..Default::default()
        };
        c.boot = conf.clone();
        for id in 1..=n {
            c.add_node(id, conf.clone());
        }
        c
    }

    pub fn add_node(&mut self, id: u64, conf: ConfState) {
        let mut cfg = self.cfg.clone();
        cfg.id = id;
        cfg.seed = id;
        let node = RawNode::new(cfg, MemStorage::new(conf)).expect("new node");
        self.nodes.insert(id, node);
        self.applied.insert(id, Vec::new());
    }

    pub fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Handles every pending Ready of `id`: persist at once, queue messages, apply.
    pub fn process_ready(&mut self, id: u64) -> bool {
        let mut any = false;
        while self.nodes[&id].has_ready() {
            any = true;
            let rd = self.node(id).ready();
            let line = fmt_ready(id, &rd);
            self.out.push_str(&line);
            let Ready {
                number,
                hard_state,
                entries,
                snapshot,
                messages,
                persisted_messages,
                committed_entries,
                ..
            } = rd;
            let node = self.node(id);
            if let Some(s) = snapshot {
                node.storage_mut().apply_snapshot(s.clone());
                node.on_persisted(number);
                node.advance_apply(s.meta.index);
                let applied = self.applied.get_mut(&id).unwrap();
                applied.clear();
            }
            let node = self.node(id);
            node.storage_mut().append(&entries);
            if let Some(hs) = hard_state {
                node.storage_mut().set_hard_state(hs);
            }
            node.on_persisted(number);
            if let Some(e) = committed_entries.last() {
                node.advance_apply(e.index);
            }
            for mut m in messages.into_iter().chain(persisted_messages) {
                if m.kind == crate::raft::MessageType::Snapshot {
                    let snap = self.nodes[&id].storage().snapshot().clone();
                    m.snapshot = Some(snap);
                }
                self.mailbox.push(m);
            }
            self.applied.get_mut(&id).unwrap().extend(committed_entries);
        }
        any
    }

    pub fn process_all(&mut self) -> bool {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.process_ready(id);
        }
        any
    }

    /// Delivers the messages now in the mailbox (those touching `drop` or an isolated
    /// node are dropped); returns how many were delivered.
    pub fn deliver(&mut self, drop: &[u64]) -> usize {
        let msgs = std::mem::take(&mut self.mailbox);
        let mut n = 0;
        for m in msgs {
            let dropped = drop.contains(&m.from)
                || drop.contains(&m.to)
                || self.isolated.contains(&m.from)
                || self.isolated.contains(&m.to)
                || !self.nodes.contains_key(&m.to);
            let _ = writeln!(self.out, "  {}{m}", if dropped { "DROP " } else { "" });
            if !dropped {
                n += 1;
                let to = m.to;
                if let Err(e) = self.node(to).step(m) {
                    let _ = writeln!(self.out, "  error: {e}");
                }
            }
        }
        n
    }

    /// Process readies and deliver until quiet.
    pub fn stabilize(&mut self) {
        for _ in 0..200 {
            let a = self.process_all();
            let had_msgs = !self.mailbox.is_empty();
            self.deliver(&[]);
            if !a && !had_msgs {
                return;
            }
        }
        panic!("cluster did not stabilize in 200 rounds");
    }

    pub fn tick(&mut self, id: u64, n: u64) {
        for _ in 0..n {
            self.node(id).tick();
        }
    }

    pub fn log(&self, id: u64) -> Vec<Entry> {
        let s = self.nodes[&id].storage();
        let (f, l) = (s.first_index().unwrap(), s.last_index().unwrap());
        s.entries(f, l + 1, u64::MAX).unwrap_or_default()
    }

    pub fn take_out(&mut self) -> String {
        std::mem::take(&mut self.out)
    }
}

pub fn fmt_ready(id: u64, rd: &Ready) -> String {
    let mut s = format!("n{id} Ready#{}", rd.number);
    if let Some(ss) = rd.soft_state {
        let _ = write!(s, " soft={:?}/lead{}", ss.role, ss.leader);
    }
    if let Some(hs) = rd.hard_state {
        let _ = write!(s, " hard=t{}/v{}/c{}", hs.term, hs.vote, hs.commit);
    }
    if !rd.entries.is_empty() {
        let _ = write!(s, " ents={}", write_entries_string(&rd.entries));
    }
    if let Some(sn) = &rd.snapshot {
        let _ = write!(s, " snap={}/{}", sn.meta.index, sn.meta.term);
    }
    if !rd.committed_entries.is_empty() {
        let _ = write!(s, " apply={}", write_entries_string(&rd.committed_entries));
    }
    for r in &rd.read_states {
        let _ = write!(s, " read={}@{}", String::from_utf8_lossy(&r.ctx), r.index);
    }
    s.push('\n');
    for m in &rd.messages {
        let _ = writeln!(s, "  send {m}");
    }
    for m in &rd.persisted_messages {
        let _ = writeln!(s, "  send-after-persist {m}");
    }
    s
}
