//! Where each request goes: pure logic, no I/O.
//!
//! [`target_of`] names what a request needs: one group (its key's, or the group a Txn's
//! keys share, or the group a Compact names), any shard (a range over several groups —
//! the receiving shard scatters and merges — or a Txn that touches no key), or the node
//! itself (Status, Topology).
//!
//! [`Routing`] maps a group to the `host:port` of the shard that should serve it: the
//! leader node's client port for that shard when the topology names a leader whose
//! address is known, else the answering (bootstrap) node's port for the shard, which
//! forwards or redirects. Server hints update it: `WrongShard` names the right port of
//! the same node, `NotLeader` names the leader's node id.
//!
//! Invariant: `groups.len() == shard_count > 0`; every group always has an address.

use std::collections::HashMap;

use crate::mvcc::{Compare, RequestOp, TxnRequest};
use crate::proto::{group_for, groups_for_range, GroupSpan, Op, TopologyResponse};

/// What a request must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The shard serving this group.
    Group(u32),
    /// Any shard (multi-group ranges: the server merges; key-less Txns).
    Any,
    /// The node (any of its shards answers for the whole node).
    Node,
}

/// The target of `op` in a cluster of `shards` shards per node. A Txn goes to the group
/// of its first key (or single-group range); if its keys span groups the server refuses
/// it with `CrossGroupTxn`.
pub fn target_of(op: &Op, shards: u32) -> Target {
    assert!(shards > 0, "target_of: shard count must be positive");
    let span = |key: &[u8], end: &[u8]| match groups_for_range(key, end, shards) {
        GroupSpan::One(g) => Target::Group(g),
        GroupSpan::All => Target::Any,
    };
    match op {
        Op::Put(p) => Target::Group(group_for(&p.key, shards)),
        Op::Range(r) => span(&r.key, &r.range_end),
        Op::DeleteRange(d) => span(&d.key, &d.range_end),
        Op::Txn(t) => txn_group(t, shards).map_or(Target::Any, Target::Group),
        // A group that does not exist: any shard refuses it (InvalidArgument).
        Op::Compact { group, .. } if *group >= shards => Target::Any,
        Op::Compact { group, .. } => Target::Group(*group),
        Op::HashKv { group, .. } if *group >= shards => Target::Any,
        Op::HashKv { group, .. } => Target::Group(*group),
        // Membership changes go through group 0's log.
        Op::MemberAdd(_) | Op::MemberPromote { .. } | Op::MemberRemove { .. } => Target::Group(0),
        Op::Status | Op::Topology | Op::MemberList => Target::Node,
    }
}

/// The group of the first key or single-group range of a Txn (compares, then success,
/// then failure, nested Txns depth first).
fn txn_group(t: &TxnRequest, shards: u32) -> Option<u32> {
    fn one(key: &[u8], end: &[u8], shards: u32) -> Option<u32> {
        match groups_for_range(key, end, shards) {
            GroupSpan::One(g) => Some(g),
            GroupSpan::All => None,
        }
    }
    fn ops(list: &[RequestOp], shards: u32, depth: usize) -> Option<u32> {
        list.iter().find_map(|op| match op {
            RequestOp::Range(r) => one(&r.key, &r.range_end, shards),
            RequestOp::Put(p) => Some(group_for(&p.key, shards)),
            RequestOp::DeleteRange(d) => one(&d.key, &d.range_end, shards),
            // Nesting is bounded by what could be encoded (and validated) at all.
            RequestOp::Txn(t) if depth < 64 => txn(t, shards, depth + 1),
            RequestOp::Txn(_) => None,
        })
    }
    fn txn(t: &TxnRequest, shards: u32, depth: usize) -> Option<u32> {
        t.compare
            .iter()
            .find_map(|c: &Compare| one(&c.key, &c.range_end, shards))
            .or_else(|| ops(&t.success, shards, depth))
            .or_else(|| ops(&t.failure, shards, depth))
    }
    txn(t, shards, 0)
}

/// `host` of a `host:port` address (everything before the last ':').
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// Group → address table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    shard_count: u32,
    /// The node we bootstrapped from: its id and the host we reached it at.
    local_node: u64,
    local_host: String,
    /// The bootstrap node's client port of each shard (index = group = shard).
    local_ports: Vec<u16>,
    /// Current address of each group.
    groups: Vec<String>,
    /// Known members: node id → (host, client_port_base).
    nodes: HashMap<u64, (String, u16)>,
    /// Address used for `Target::Any` and `Target::Node`.
    bootstrap: String,
}

impl Routing {
    /// Before the topology is known: every group at the bootstrap address's node, shard
    /// g at `port of bootstrap - bootstrap_shard + g`.
    pub fn from_handshake(
        bootstrap: &str,
        node_id: u64,
        shard: u32,
        shard_count: u32,
    ) -> Result<Routing, String> {
        assert!(
            shard_count > 0 && shard < shard_count,
            "bad handshake shard"
        );
        let (host, port) = bootstrap
            .rsplit_once(':')
            .ok_or_else(|| format!("address {bootstrap:?} has no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|e| format!("address {bootstrap:?}: bad port: {e}"))?;
        let base = port
            .checked_sub(shard as u16)
            .ok_or_else(|| format!("port {port} is below shard {shard}"))?;
        let local_ports = (0..shard_count)
            .map(|g| {
                base.checked_add(g as u16)
                    .ok_or_else(|| format!("port base {base} + shard {g} overflows"))
            })
            .collect::<Result<Vec<u16>, String>>()?;
        let groups = local_ports.iter().map(|p| format!("{host}:{p}")).collect();
        Ok(Routing {
            shard_count,
            local_node: node_id,
            local_host: host.to_string(),
            local_ports,
            groups,
            nodes: HashMap::new(),
            bootstrap: bootstrap.to_string(),
        })
    }

    /// Applies a topology answer from the bootstrap node: ports of its shards, members,
    /// and each group's leader.
    pub fn apply_topology(&mut self, topo: &TopologyResponse) -> Result<(), String> {
        if topo.shard_count != self.shard_count {
            return Err(format!(
                "topology names {} shards, the handshake said {}",
                topo.shard_count, self.shard_count
            ));
        }
        self.nodes = topo
            .nodes
            .iter()
            .map(|n| (n.node_id, (n.host.clone(), n.client_port_base)))
            .collect();
        for g in &topo.groups {
            if g.group >= self.shard_count {
                return Err(format!(
                    "topology names group {} of {} shards",
                    g.group, self.shard_count
                ));
            }
            self.local_ports[g.group as usize] = g.client_port;
        }
        for g in 0..self.shard_count {
            self.groups[g as usize] = self.local_addr(g);
        }
        for g in &topo.groups {
            self.set_leader(g.group, g.leader);
        }
        Ok(())
    }

    fn local_addr(&self, group: u32) -> String {
        format!("{}:{}", self.local_host, self.local_ports[group as usize])
    }

    /// Routes `group` to node `leader`'s shard when its address is known; returns
    /// whether the route now points at that leader.
    fn set_leader(&mut self, group: u32, leader: u64) -> bool {
        if leader == 0 {
            return false;
        }
        if leader == self.local_node {
            self.groups[group as usize] = self.local_addr(group);
            return true;
        }
        match self.nodes.get(&leader) {
            Some((host, base)) => match base.checked_add(group as u16) {
                Some(port) => {
                    self.groups[group as usize] = format!("{host}:{port}");
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Sends node-level and any-shard requests to `addr` from now on (another endpoint,
    /// after the bootstrap node stopped answering).
    pub fn set_bootstrap(&mut self, addr: &str) {
        self.bootstrap = addr.to_string();
        // The "local" node is now another one, whose id we do not know: leaders are
        // found through the member list only (the next topology fills in the ports).
        self.local_host = host_of(addr).to_string();
        self.local_node = 0;
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The address to send a request for `target` to.
    pub fn addr_for(&self, target: Target) -> &str {
        match target {
            Target::Group(g) => {
                assert!(
                    g < self.shard_count,
                    "group {g} of {} shards",
                    self.shard_count
                );
                &self.groups[g as usize]
            }
            Target::Any | Target::Node => &self.bootstrap,
        }
    }

    /// A `WrongShard{group, client_port}` answer from the node at `from_addr`: `group`
    /// is served on `client_port` of that node.
    pub fn on_wrong_shard(&mut self, from_addr: &str, group: u32, client_port: u16) -> bool {
        if group >= self.shard_count {
            return false;
        }
        let host = host_of(from_addr);
        if host == self.local_host {
            self.local_ports[group as usize] = client_port;
        }
        self.groups[group as usize] = format!("{host}:{client_port}");
        true
    }

    /// A `NotLeader{leader}` answer about `group`: route it to that leader if its address
    /// is known. `false` = nothing learned (ask the topology again).
    pub fn on_not_leader(&mut self, group: u32, leader: u64) -> bool {
        group < self.shard_count && self.set_leader(group, leader)
    }
}
