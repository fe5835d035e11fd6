//! etcdctl-like output of `corekvctl`.
//!
//! Simple format: `put` prints `OK` (then the previous pair with `--prev-kv`); `get`
//! prints each key, then its value, on lines of their own (only keys with
//! `--keys-only`; the count with `--count-only`); `del` prints the number deleted (then
//! the deleted pairs with `--prev-kv`); `txn` prints `SUCCESS` or `FAILURE`, then each
//! response after a blank line. Bytes are printed as they are (lossy UTF-8).
//!
//! JSON format: etcdctl's shape — a `header` object (here with `group`, `revision`,
//! `raft_term`, `node_id`), keys and values base64-encoded, revisions as numbers.

use std::fmt::Write;

use super::{group_lags, NodeStatus};
use crate::client::Reply;
use crate::mvcc::{DeleteRangeResponse, KeyValue, PutResponse, ResponseOp, TxnResponse};
use crate::proto::{
    GroupStatus, RaftRole, RangeResult, ResponseHeader, StatusResponse, TopologyResponse,
    MULTI_GROUP,
};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn push_kv(out: &mut String, kv: &KeyValue, keys_only: bool) {
    out.push_str(&text(&kv.key));
    out.push('\n');
    if !keys_only {
        out.push_str(&text(&kv.value));
        out.push('\n');
    }
}

/// `put`, simple.
pub fn put_simple(r: &PutResponse) -> String {
    let mut out = String::from("OK\n");
    if let Some(kv) = &r.prev_kv {
        push_kv(&mut out, kv, false);
    }
    out
}

/// `get`, simple.
pub fn get_simple(r: &RangeResult, keys_only: bool, count_only: bool) -> String {
    let mut out = String::new();
    if count_only {
        let _ = writeln!(out, "{}", r.range.count);
        return out;
    }
    for kv in &r.range.kvs {
        push_kv(&mut out, kv, keys_only);
    }
    out
}

/// `del`, simple.
pub fn del_simple(r: &DeleteRangeResponse) -> String {
    let mut out = format!("{}\n", r.deleted);
    for kv in &r.prev_kvs {
        push_kv(&mut out, kv, false);
    }
    out
}

/// `txn`, simple.
pub fn txn_simple(r: &TxnResponse) -> String {
    let mut out = String::from(if r.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &r.responses {
        out.push('\n');
        match op {
            ResponseOp::Put(p) => out.push_str(&put_simple(p)),
            ResponseOp::Range(g) => {
                for kv in &g.kvs {
                    push_kv(&mut out, kv, false);
                }
            }
            ResponseOp::DeleteRange(d) => out.push_str(&del_simple(d)),
            ResponseOp::Txn(t) => out.push_str(&txn_simple(t)),
        }
    }
    out
}

/// `compact`, simple.
pub fn compact_simple(group: u32, revision: i64) -> String {
    format!("compacted group {group} at revision {revision}\n")
}

fn role_name(r: RaftRole) -> &'static str {
    match r {
        RaftRole::Follower => "follower",
        RaftRole::PreCandidate => "pre-candidate",
        RaftRole::Candidate => "candidate",
        RaftRole::Leader => "leader",
        RaftRole::Learner => "learner",
    }
}

/// Bytes in etcdctl's human style (`20 kB`, `1.2 MB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// Lays out rows (the first is the header) in aligned columns, etcdctl's table style.
pub fn table(rows: &[Vec<String>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let cols = first.len();
    let mut width = vec![0; cols];
    for r in rows {
        assert_eq!(r.len(), cols, "every table row has the header's columns");
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let sep = {
        let mut s = String::from("+");
        for w in &width {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |r: &Vec<String>| {
        let mut s = String::from("|");
        for (w, c) in width.iter().zip(r) {
            let _ = write!(s, " {c:<w$} |");
        }
        s.push('\n');
        s
    };
    let mut out = sep.clone();
    out.push_str(&line(first));
    out.push_str(&sep);
    for r in &rows[1..] {
        out.push_str(&line(r));
    }
    out.push_str(&sep);
    out
}

/// `status`, simple: a table of the node's groups.
pub fn status_simple(s: &StatusResponse) -> String {
    let mut rows = vec![[
        "GROUP",
        "ROLE",
        "LEADER",
        "TERM",
        "REVISION",
        "COMPACTED",
        "RAFT COMMIT",
        "RAFT APPLIED",
        "DB SIZE",
        "WAL SIZE",
    ]
    .map(String::from)
    .to_vec()];
    let mut groups: Vec<&GroupStatus> = s.groups.iter().collect();
    groups.sort_by_key(|g| g.group);
    for g in groups {
        rows.push(vec![
            g.group.to_string(),
            role_name(g.role).to_string(),
            if g.leader == 0 {
                "unknown".to_string()
            } else {
                g.leader.to_string()
            },
            g.term.to_string(),
            g.revision.to_string(),
            g.compact_revision.to_string(),
            g.committed_index.to_string(),
            g.applied_index.to_string(),
            human_bytes(g.db_size_bytes),
            human_bytes(g.wal_size_bytes),
        ]);
    }
    format!(
        "node {} cluster {:#x}\n{}",
        s.node_id,
        s.cluster_id,
        table(&rows)
    )
}

/// `status` of the whole cluster, simple: one table row per node and group (sorted by
/// node id, then group), an unreachable node's rows saying so, then one line per
/// unreachable node with its error. `shard_count` is the number of groups (to list an
/// unreachable node's rows).
pub fn cluster_status_simple(nodes: &[NodeStatus], cluster_id: u64, shard_count: u32) -> String {
    let lags = group_lags(nodes);
    let mut rows = vec![[
        "NODE", "NAME", "GROUP", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "REVISION",
        "DB SIZE", "WAL SIZE",
    ]
    .map(String::from)
    .to_vec()];
    let mut sorted: Vec<&NodeStatus> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.node_id);
    let mut errors = String::new();
    let mut answered = 0;
    for n in &sorted {
        let name = if n.name.is_empty() { "-" } else { &n.name };
        match &n.status {
            Ok(st) => {
                answered += 1;
                let mut groups: Vec<&GroupStatus> = st.groups.iter().collect();
                groups.sort_by_key(|g| g.group);
                for g in groups {
                    let lag = lags
                        .get(&g.group)
                        .map_or(0, |c| c.saturating_sub(g.applied_index));
                    rows.push(vec![
                        n.node_id.to_string(),
                        name.to_string(),
                        g.group.to_string(),
                        role_name(g.role).to_string(),
                        g.term.to_string(),
                        leader_name(g.leader),
                        g.committed_index.to_string(),
                        g.applied_index.to_string(),
                        lag.to_string(),
                        g.revision.to_string(),
                        human_bytes(g.db_size_bytes),
                        human_bytes(g.wal_size_bytes),
                    ]);
                }
            }
            Err(e) => {
                for g in 0..shard_count.max(1) {
                    let mut row = vec![
                        n.node_id.to_string(),
                        name.to_string(),
                        if shard_count == 0 {
                            "-".to_string()
                        } else {
                            g.to_string()
                        },
                        "unreachable".to_string(),
                    ];
                    row.resize(12, "-".to_string());
                    rows.push(row);
                }
                let at = if n.endpoint.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", n.endpoint)
                };
                let _ = writeln!(errors, "node {} ({name}){at} unreachable: {e}", n.node_id);
            }
        }
    }
    format!(
        "cluster {cluster_id:#x}: {answered} of {} members answered\n{}{errors}",
        nodes.len(),
        table(&rows)
    )
}

/// `status` of the whole cluster, JSON: every member with its groups (each with its
/// `lag`, see [`group_lags`]) or its `error`.
pub fn cluster_status_json(nodes: &[NodeStatus], cluster_id: u64) -> String {
    let lags = group_lags(nodes);
    let mut sorted: Vec<&NodeStatus> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.node_id);
    let members: Vec<String> = sorted
        .iter()
        .map(|n| {
            let head = format!(
                "\"node_id\":{},\"name\":{},\"endpoint\":{}",
                n.node_id,
                json_str(&n.name),
                json_str(&n.endpoint)
            );
            match &n.status {
                Ok(st) => {
                    let groups: Vec<String> = st
                        .groups
                        .iter()
                        .map(|g| {
                            let lag = lags
                                .get(&g.group)
                                .map_or(0, |c| c.saturating_sub(g.applied_index));
                            let mut obj = group_json(g);
                            obj.pop();
                            format!("{obj},\"lag\":{lag}}}")
                        })
                        .collect();
                    format!("{{{head},\"groups\":[{}]}}", groups.join(","))
                }
                Err(e) => format!("{{{head},\"error\":{}}}", json_str(e)),
            }
        })
        .collect();
    format!(
        "{{\"cluster_id\":{cluster_id},\"members\":[{}]}}\n",
        members.join(",")
    )
}

fn leader_name(leader: u64) -> String {
    if leader == 0 {
        "unknown".to_string()
    } else {
        leader.to_string()
    }
}

/// `topology`, simple: the node's shards, then the members.
pub fn topology_simple(t: &TopologyResponse) -> String {
    let mut rows = vec![["GROUP", "SHARD", "CLIENT PORT", "LEADER"]
        .map(String::from)
        .to_vec()];
    let mut groups: Vec<_> = t.groups.iter().collect();
    groups.sort_by_key(|g| g.group);
    for g in groups {
        rows.push(vec![
            g.group.to_string(),
            g.shard.to_string(),
            g.client_port.to_string(),
            if g.leader == 0 {
                "unknown".into()
            } else {
                g.leader.to_string()
            },
        ]);
    }
    let mut out = format!(
        "node {} cluster {:#x} shards {}\n{}",
        t.node_id,
        t.cluster_id,
        t.shard_count,
        table(&rows)
    );
    if !t.nodes.is_empty() {
        let mut rows = vec![["NODE", "HOST", "CLIENT PORT BASE", "PEER PORT BASE"]
            .map(String::from)
            .to_vec()];
        for n in &t.nodes {
            rows.push(vec![
                n.node_id.to_string(),
                n.host.clone(),
                n.client_port_base.to_string(),
                n.peer_port_base.to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

// ---------------------------------------------------------------- JSON

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (as Go's `encoding/json` writes `[]byte`).
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn header_json(h: &ResponseHeader) -> String {
    let group = if h.group == MULTI_GROUP {
        "\"all\"".to_string()
    } else {
        h.group.to_string()
    };
    format!(
        "{{\"group\":{group},\"revision\":{},\"raft_term\":{},\"node_id\":{}}}",
        h.revision, h.raft_term, h.node_id
    )
}

fn kv_json(kv: &KeyValue) -> String {
    let mut s = format!(
        "{{\"key\":{},\"create_revision\":{},\"mod_revision\":{},\"version\":{}",
        json_str(&base64(&kv.key)),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if !kv.value.is_empty() {
        let _ = write!(s, ",\"value\":{}", json_str(&base64(&kv.value)));
    }
    if kv.lease != 0 {
        let _ = write!(s, ",\"lease\":{}", kv.lease);
    }
    s.push('}');
    s
}

fn kvs_json(kvs: &[KeyValue]) -> String {
    let items: Vec<String> = kvs.iter().map(kv_json).collect();
    format!("[{}]", items.join(","))
}

/// `put`, JSON.
pub fn put_json(r: &Reply<PutResponse>) -> String {
    let mut s = format!("{{\"header\":{}", header_json(&r.header));
    if let Some(kv) = &r.body.prev_kv {
        let _ = write!(s, ",\"prev_kv\":{}", kv_json(kv));
    }
    s.push_str("}\n");
    s
}

fn range_fields(r: &crate::mvcc::RangeResponse) -> String {
    let mut s = String::new();
    if !r.kvs.is_empty() {
        let _ = write!(s, ",\"kvs\":{}", kvs_json(&r.kvs));
    }
    if r.more {
        s.push_str(",\"more\":true");
    }
    let _ = write!(s, ",\"count\":{}", r.count);
    s
}

/// `get`, JSON.
pub fn get_json(r: &Reply<RangeResult>) -> String {
    let groups: Vec<String> = r
        .body
        .groups
        .iter()
        .map(|g| format!("{{\"group\":{},\"revision\":{}}}", g.group, g.revision))
        .collect();
    format!(
        "{{\"header\":{}{},\"groups\":[{}]}}\n",
        header_json(&r.header),
        range_fields(&r.body.range),
        groups.join(",")
    )
}

/// `del`, JSON.
pub fn del_json(r: &Reply<DeleteRangeResponse>) -> String {
    let mut s = format!(
        "{{\"header\":{},\"deleted\":{}",
        header_json(&r.header),
        r.body.deleted
    );
    if !r.body.prev_kvs.is_empty() {
        let _ = write!(s, ",\"prev_kvs\":{}", kvs_json(&r.body.prev_kvs));
    }
    s.push_str("}\n");
    s
}

fn txn_body_json(t: &TxnResponse) -> String {
    let ops: Vec<String> = t
        .responses
        .iter()
        .map(|op| match op {
            ResponseOp::Put(p) => match &p.prev_kv {
                Some(kv) => format!("{{\"response_put\":{{\"prev_kv\":{}}}}}", kv_json(kv)),
                None => "{\"response_put\":{}}".to_string(),
            },
            ResponseOp::Range(r) => {
                format!("{{\"response_range\":{{{}}}}}", &range_fields(r)[1..])
            }
            ResponseOp::DeleteRange(d) => {
                let mut s = format!("{{\"response_delete_range\":{{\"deleted\":{}", d.deleted);
                if !d.prev_kvs.is_empty() {
                    let _ = write!(s, ",\"prev_kvs\":{}", kvs_json(&d.prev_kvs));
                }
                s.push_str("}}");
                s
            }
            ResponseOp::Txn(t) => format!("{{\"response_txn\":{{{}}}}}", txn_body_json(t)),
        })
        .collect();
    format!(
        "\"succeeded\":{},\"responses\":[{}]",
        t.succeeded,
        ops.join(",")
    )
}

/// `txn`, JSON.
pub fn txn_json(r: &Reply<TxnResponse>) -> String {
    format!(
        "{{\"header\":{},{}}}\n",
        header_json(&r.header),
        txn_body_json(&r.body)
    )
}

/// One group of a `status` answer as a JSON object.
fn group_json(g: &GroupStatus) -> String {
    format!(
        "{{\"group\":{},\"role\":{},\"leader\":{},\"term\":{},\"revision\":{},\"compact_revision\":{},\"raft_commit\":{},\"raft_applied\":{},\"db_size\":{},\"wal_size\":{}}}",
        g.group,
        json_str(role_name(g.role)),
        g.leader,
        g.term,
        g.revision,
        g.compact_revision,
        g.committed_index,
        g.applied_index,
        g.db_size_bytes,
        g.wal_size_bytes
    )
}

/// `status`, JSON.
pub fn status_json(s: &StatusResponse) -> String {
    let groups: Vec<String> = s.groups.iter().map(group_json).collect();
    format!(
        "{{\"node_id\":{},\"cluster_id\":{},\"groups\":[{}]}}\n",
        s.node_id,
        s.cluster_id,
        groups.join(",")
    )
}

/// `topology`, JSON.
pub fn topology_json(t: &TopologyResponse) -> String {
    let groups: Vec<String> = t
        .groups
        .iter()
        .map(|g| {
            format!(
                "{{\"group\":{},\"shard\":{},\"client_port\":{},\"leader\":{}}}",
                g.group, g.shard, g.client_port, g.leader
            )
        })
        .collect();
    let nodes: Vec<String> = t
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{{\"node_id\":{},\"host\":{},\"client_port_base\":{},\"peer_port_base\":{}}}",
                n.node_id,
                json_str(&n.host),
                n.client_port_base,
                n.peer_port_base
            )
        })
        .collect();
    format!(
        "{{\"node_id\":{},\"cluster_id\":{},\"shard_count\":{},\"groups\":[{}],\"nodes\":[{}]}}\n",
        t.node_id,
        t.cluster_id,
        t.shard_count,
        groups.join(","),
        nodes.join(",")
    )
}

/// `member` commands: the member list after the operation, one table.
pub fn members_simple(list: &crate::proto::MemberListResponse) -> String {
    let mut rows = vec![["NODE", "NAME", "HOST", "PEER PORT", "CLIENT PORT", "ROLE"]
        .map(String::from)
        .to_vec()];
    for m in &list.members {
        rows.push(vec![
            m.node_id.to_string(),
            m.name.clone(),
            m.host.clone(),
            m.peer_port_base.to_string(),
            m.client_port_base.to_string(),
            if m.learner { "learner" } else { "voter" }.to_string(),
        ]);
    }
    table(&rows)
}
