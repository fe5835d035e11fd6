//! A shard as the rest of the server sees it: its group, its end of the cross-shard mesh
//! and what it knows of the node. [`Shard::handle`] routes a validated request: to its
//! own group, to the owning shard over the mesh, or to every shard (a range over several
//! groups is scattered and merged; Status gathers every group).

use std::cmp::Ordering;
use std::rc::Rc;

use super::entry::MemberChange;
use super::group::{Group, Reply};
use super::mesh::{Call, Mesh};
use crate::mvcc::{KeyValue, RangeRequest, SortOrder, SortTarget, WriteRequest};
use crate::proto::{
    ErrorCode, GroupRevision, GroupTopology, MemberInfo, MemberListResponse, NodeAddr, Op,
    ProtoError, RangeResult, Request, Response, ResponseBody, ResponseHeader, Route,
    StatusResponse, TopologyResponse, MULTI_GROUP,
};

/// What every shard knows of its node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node_id: u64,
    pub cluster_id: u64,
    pub shards: u32,
    pub client_port_base: u16,
    /// Every member (this node included).
    pub members: Vec<NodeAddr>,
}

pub struct Shard {
    pub index: u32,
    pub group: Rc<Group>,
    pub mesh: Mesh,
    pub node: NodeInfo,
    /// The member table (a cluster); `None` for a single node.
    pub members: Option<super::members::SharedMembers>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ProtoError {
    ProtoError::new(code, message)
}

impl Shard {
    /// Serves `req`, already validated by `proto::validate_request`, which chose `route`.
    pub async fn handle(&self, route: Route, req: Request) -> Reply {
        if let Some(m) = &self.members {
            if m.is_removed(self.node.node_id) {
                return Err(err(
                    ErrorCode::Unavailable,
                    format!(
                        "node {} was removed from the cluster: it serves nothing",
                        self.node.node_id
                    ),
                ));
            }
        }
        match route {
            Route::Group(g) if g == self.index => self.execute_local(req).await,
            Route::Group(g) => self.mesh.call(g, Call::Execute(req)).await,
            Route::AnyGroup => self.execute_local(req).await,
            Route::AllGroups => match req.op {
                Op::Range(r) => self.range_all(r).await,
                _ => Err(err(
                    ErrorCode::InvalidArgument,
                    "only a range may span several groups",
                )),
            },
            Route::Node => match req.op {
                Op::Status => self.status().await,
                Op::Topology => self.topology().await,
                Op::MemberList => Ok(self.member_list()),
                _ => Err(err(ErrorCode::Internal, "request routed to the node")),
            },
        }
    }

    /// Serves a request of this shard's own group.
    pub async fn execute_local(&self, req: Request) -> Reply {
        let g = &self.group;
        match req.op {
            Op::Put(p) => g.write(req.session, req.seq, WriteRequest::Put(p)).await,
            Op::DeleteRange(d) => {
                g.write(req.session, req.seq, WriteRequest::DeleteRange(d))
                    .await
            }
            Op::Txn(t) => g.write(req.session, req.seq, WriteRequest::Txn(t)).await,
            Op::Compact { request, .. } => {
                g.write(req.session, req.seq, WriteRequest::Compact(request))
                    .await
            }
            Op::Range(r) => g.range(&r).await,
            Op::Status => {
                let st = g.status().await;
                Ok(Response {
                    header: self.node_header(),
                    body: ResponseBody::Status(StatusResponse {
                        node_id: self.node.node_id,
                        cluster_id: self.node.cluster_id,
                        groups: vec![st],
                    }),
                })
            }
            // Routed to the node by `handle`, never to one group.
            Op::Topology => Err(err(ErrorCode::Internal, "topology routed to one group")),
            Op::HashKv { revision, .. } => g.hash(revision).await,
            Op::MemberList => Ok(self.member_list()),
            Op::MemberAdd(a) => g.propose_member(MemberChange::Add(a)).await,
            Op::MemberPromote { node_id } => g.propose_member(MemberChange::Promote(node_id)).await,
            Op::MemberRemove { node_id } => g.propose_member(MemberChange::Remove(node_id)).await,
        }
    }

    fn node_header(&self) -> ResponseHeader {
        ResponseHeader {
            group: MULTI_GROUP,
            revision: 0,
            raft_term: 0,
            node_id: self.node.node_id,
        }
    }

    async fn on_shard(&self, s: u32, call: Call) -> Reply {
        if s == self.index {
            match call {
                Call::Execute(req) => self.execute_local(req).await,
                Call::Status => {
                    self.execute_local(Request {
                        session: 0,
                        seq: 0,
                        op: Op::Status,
                    })
                    .await
                }
            }
        } else {
            self.mesh.call(s, call).await
        }
    }

    async fn status(&self) -> Reply {
        let mut groups = Vec::with_capacity(self.node.shards as usize);
        for s in 0..self.node.shards {
            match self.on_shard(s, Call::Status).await?.body {
                ResponseBody::Status(st) => groups.extend(st.groups),
                _ => {
                    return Err(err(
                        ErrorCode::Internal,
                        "status answered with another body",
                    ))
                }
            }
        }
        Ok(Response {
            header: self.node_header(),
            body: ResponseBody::Status(StatusResponse {
                node_id: self.node.node_id,
                cluster_id: self.node.cluster_id,
                groups,
            }),
        })
    }

    fn member_list(&self) -> Response {
        let list = match &self.members {
            Some(m) => m.snapshot().list(),
            None => MemberListResponse {
                members: self
                    .node
                    .members
                    .iter()
                    .map(|a| MemberInfo {
                        node_id: a.node_id,
                        name: String::new(),
                        host: a.host.clone(),
                        peer_port_base: a.peer_port_base,
                        client_port_base: a.client_port_base,
                        learner: false,
                    })
                    .collect(),
            },
        };
        Response {
            header: self.node_header(),
            body: ResponseBody::Members(list),
        }
    }

    /// Where each group is served on this node, with the leader each group's replica
    /// knows of (asked of every shard).
    async fn topology(&self) -> Reply {
        let mut groups = Vec::with_capacity(self.node.shards as usize);
        for s in 0..self.node.shards {
            let leader = match self.on_shard(s, Call::Status).await?.body {
                ResponseBody::Status(st) => st.groups.first().map_or(0, |g| g.leader),
                _ => {
                    return Err(err(
                        ErrorCode::Internal,
                        "status answered with another body",
                    ))
                }
            };
            groups.push(GroupTopology {
                group: s,
                shard: s,
                client_port: self.node.client_port_base + s as u16,
                leader,
            });
        }
        Ok(Response {
            header: self.node_header(),
            body: ResponseBody::Topology(TopologyResponse {
                node_id: self.node.node_id,
                cluster_id: self.node.cluster_id,
                shard_count: self.node.shards,
                groups,
                nodes: match &self.members {
                    Some(m) => m
                        .snapshot()
                        .members
                        .iter()
                        .map(|m| NodeAddr {
                            node_id: m.node_id,
                            host: m.host.clone(),
                            client_port_base: m.client_port_base,
                            peer_port_base: m.peer_port_base,
                        })
                        .collect(),
                    None => self.node.members.clone(),
                },
            }),
        })
    }

    /// A range over every group: each group answers its part (each with its own
    /// revision), then the parts are merged in the requested order and cut at `limit`.
    async fn range_all(&self, r: RangeRequest) -> Reply {
        if r.revision != 0 {
            return Err(err(
                ErrorCode::InvalidArgument,
                "a range over several groups cannot name a revision: revisions are per group \
                 (give the key a hash tag to keep related keys in one group)",
            ));
        }
        let mut parts = Vec::with_capacity(self.node.shards as usize);
        for s in 0..self.node.shards {
            let req = Request {
                session: 0,
                seq: 0,
                op: Op::Range(r.clone()),
            };
            match self.on_shard(s, Call::Execute(req)).await?.body {
                ResponseBody::Range(part) => parts.push(part),
                _ => return Err(err(ErrorCode::Internal, "range answered with another body")),
            }
        }
        Ok(Response {
            header: self.node_header(),
            body: ResponseBody::Range(merge_ranges(&r, parts)),
        })
    }
}

fn compare_kv(r: &RangeRequest, a: &KeyValue, b: &KeyValue) -> Ordering {
    let by_target = match r.sort_target {
        SortTarget::Key => Ordering::Equal,
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    let ord = match r.sort_order {
        SortOrder::Descend => by_target.reverse(),
        _ => by_target,
    };
    // Ties (and the Key target) go by key: descending only when sorting keys descending.
    ord.then_with(|| match (r.sort_target, r.sort_order) {
        (SortTarget::Key, SortOrder::Descend) => b.key.cmp(&a.key),
        _ => a.key.cmp(&b.key),
    })
}

/// Merges per-group range answers: keeps the requested order, cuts at `limit`, sums the
/// counts and lists every group's revision.
pub fn merge_ranges(r: &RangeRequest, parts: Vec<RangeResult>) -> RangeResult {
    let mut out = RangeResult::default();
    let mut kvs = Vec::new();
    for p in parts {
        out.range.count += p.range.count;
        out.range.more |= p.range.more;
        kvs.extend(p.range.kvs);
        out.groups.extend(p.groups);
    }
    kvs.sort_by(|a, b| compare_kv(r, a, b));
    if r.limit > 0 && kvs.len() as i64 > r.limit {
        kvs.truncate(r.limit as usize);
        out.range.more = true;
    }
    out.range.kvs = kvs;
    out.groups.sort_by_key(|g: &GroupRevision| g.group);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::RangeResponse;

    fn kv(k: &str, version: i64) -> KeyValue {
        KeyValue {
            key: k.as_bytes().to_vec(),
            version,
            ..Default::default()
        }
    }

    fn part(group: u32, kvs: Vec<KeyValue>, count: i64, more: bool) -> RangeResult {
        RangeResult {
            range: RangeResponse { kvs, more, count },
            groups: vec![GroupRevision {
                group,
                revision: 10 + group as i64,
            }],
        }
    }

    fn keys(r: &RangeResult) -> Vec<String> {
        r.range
            .kvs
            .iter()
            .map(|k| String::from_utf8(k.key.clone()).unwrap())
            .collect()
    }

    #[test]
    fn merge_keeps_key_order_and_limit() {
        let r = RangeRequest {
            limit: 3,
            ..Default::default()
        };
        let m = merge_ranges(
            &r,
            vec![
                part(1, vec![kv("b", 1), kv("d", 1), kv("f", 1)], 5, true),
                part(0, vec![kv("a", 1), kv("c", 1)], 2, false),
            ],
        );
        assert_eq!(keys(&m), ["a", "b", "c"]);
        assert!(m.range.more);
        assert_eq!(m.range.count, 7);
        assert_eq!(m.groups.iter().map(|g| g.group).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn merge_sorts_by_target_then_key() {
        let r = RangeRequest {
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Version,
            ..Default::default()
        };
        let m = merge_ranges(
            &r,
            vec![
                part(0, vec![kv("a", 3), kv("c", 1)], 2, false),
                part(1, vec![kv("b", 3), kv("d", 2)], 2, false),
            ],
        );
        assert_eq!(keys(&m), ["a", "b", "d", "c"]);
        assert!(!m.range.more);
        let r = RangeRequest {
            sort_order: SortOrder::Descend,
            ..Default::default()
        };
        let m = merge_ranges(
            &r,
            vec![
                part(0, vec![kv("a", 1)], 1, false),
                part(1, vec![kv("b", 1)], 1, false),
            ],
        );
        assert_eq!(keys(&m), ["b", "a"]);
    }
}
