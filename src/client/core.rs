//! The native glommio client: bootstrap, connection pool, routing and retries.

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;

use super::conn::{with_timeout, Conn, ConnConfig, PeerInfo};
use super::routing::{target_of, Routing, Target};
use super::{
    into_compact, into_delete, into_put, into_range, into_status, into_topology, into_txn,
    ClientConfig, ClientError, Reply, RetryAction,
};
use crate::mvcc::{
    CompactRequest, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    TxnRequest, TxnResponse,
};
use crate::proto::{
    ErrorCode, Op, RangeResult, Request, Response, ResponseHeader, StatusResponse, TopologyResponse,
};

/// A random non-zero u64 (std's per-process random hash keys, mixed with the time).
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Whether `op` changes state (and so gets a sequence number for dedupe).
fn is_write(op: &Op) -> bool {
    matches!(
        op,
        Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) | Op::Compact { .. }
    )
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Put(_) => "put",
        Op::Range(_) => "range",
        Op::DeleteRange(_) => "delete",
        Op::Txn(_) => "txn",
        Op::Compact { .. } => "compact",
        Op::Status => "status",
        Op::Topology => "topology",
        Op::HashKv { .. } => "hashkv",
        Op::MemberList => "member list",
        Op::MemberAdd(_) => "member add",
        Op::MemberPromote { .. } => "member promote",
        Op::MemberRemove { .. } => "member remove",
    }
}

/// Idle write sessions kept for reuse, at most.
const IDLE_SESSIONS_MAX: usize = 1024;

/// A dedupe session: its id and the next sequence number to use.
#[derive(Clone, Copy, Debug)]
struct Session {
    id: u64,
    next_seq: u64,
}

struct Inner {
    cfg: ClientConfig,
    /// Write sessions not in use. A write takes one for its whole life (all its
    /// attempts), so a session never has two writes in flight: the server keeps only
    /// each session's last sequence number and answers an older one as already applied
    /// (`StaleSequence`), which would be wrong for a write that a broken connection lost
    /// while a later one got through.
    idle_sessions: RefCell<Vec<Session>>,
    /// Mixed into backoff jitter.
    jitter_seed: Cell<u64>,
    routing: RefCell<Routing>,
    /// Open connections by address.
    conns: RefCell<HashMap<String, Rc<Conn>>>,
    /// One opener at a time per address.
    opening: RefCell<HashMap<String, Rc<Semaphore>>>,
    bootstrap_info: PeerInfo,
}

/// The native client. Cheap to clone (shares one connection pool); `!Send`: it lives on
/// the glommio executor that created it. Use [`super::ThreadedClient`] elsewhere.
#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

impl Client {
    /// Connects to the first endpoint that answers the handshake and the topology
    /// request; the error of the last endpoint tried when none does.
    pub async fn connect(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::Connect {
                addr: String::new(),
                reason: "no endpoints given".into(),
            });
        }
        let ccfg = conn_config(&cfg);
        let mut last = None;
        for ep in &cfg.endpoints {
            match Conn::open(ep, ccfg).await {
                Ok(conn) => {
                    let info = conn.info();
                    let routing =
                        Routing::from_handshake(ep, info.node_id, info.shard, info.shard_count)
                            .map_err(|reason| ClientError::Connect {
                                addr: ep.clone(),
                                reason,
                            })?;
                    let client = Client {
                        inner: Rc::new(Inner {
                            idle_sessions: RefCell::new(Vec::new()),
                            jitter_seed: Cell::new(random_u64()),
                            routing: RefCell::new(routing),
                            conns: RefCell::new(HashMap::from([(ep.clone(), Rc::new(conn))])),
                            opening: RefCell::new(HashMap::new()),
                            bootstrap_info: info,
                            cfg: cfg.clone(),
                        }),
                    };
                    match client.refresh_topology().await {
                        Ok(_) => return Ok(client),
                        Err(e) => last = Some(e),
                    }
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one endpoint was tried"))
    }

    /// A session for one write: an idle one, or a new random one.
    fn take_session(&self) -> Session {
        self.inner
            .idle_sessions
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Session {
                id: random_u64(),
                next_seq: 1,
            })
    }

    /// Gives a session back after its write's outcome is known (the server answered);
    /// a write whose outcome is unknown drops its session instead, so that nothing
    /// sent later under it can overtake the lost one.
    fn return_session(&self, mut s: Session) {
        s.next_seq += 1;
        let mut idle = self.inner.idle_sessions.borrow_mut();
        if idle.len() < IDLE_SESSIONS_MAX {
            idle.push(s);
        }
    }

    /// Write sessions idle in the pool (for tests).
    pub fn idle_sessions(&self) -> usize {
        self.inner.idle_sessions.borrow().len()
    }

    /// Shards (= groups) per node.
    pub fn shard_count(&self) -> u32 {
        self.inner.bootstrap_info.shard_count
    }

    /// The bootstrap node's handshake.
    pub fn bootstrap_info(&self) -> PeerInfo {
        self.inner.bootstrap_info
    }

    /// A copy of the current routing table.
    pub fn routing(&self) -> Routing {
        self.inner.routing.borrow().clone()
    }

    /// Connections currently open (for tests and metrics).
    pub fn open_connections(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| !c.is_closed())
            .map(|(a, _)| a.clone())
            .collect();
        v.sort();
        v
    }

    /// Asks the bootstrap node for the topology and updates the routing table.
    pub async fn refresh_topology(&self) -> Result<Reply<TopologyResponse>, ClientError> {
        let addr = self
            .inner
            .routing
            .borrow()
            .addr_for(Target::Node)
            .to_string();
        let req = Request {
            session: 0,
            seq: 0,
            op: Op::Topology,
        };
        let conn = self.conn(&addr).await?;
        let reply = into_topology(conn.call(&req, self.inner.cfg.request_timeout).await?)?;
        self.inner
            .routing
            .borrow_mut()
            .apply_topology(&reply.body)
            .map_err(ClientError::Protocol)?;
        Ok(reply)
    }

    /// The open connection to `addr`, opened now if there is none (or it broke).
    async fn conn(&self, addr: &str) -> Result<Rc<Conn>, ClientError> {
        if let Some(c) = self.live_conn(addr) {
            return Ok(c);
        }
        let gate = self
            .inner
            .opening
            .borrow_mut()
            .entry(addr.to_string())
            .or_insert_with(|| Rc::new(Semaphore::new(1)))
            .clone();
        let _permit = gate
            .acquire_permit(1)
            .await
            .map_err(|e| ClientError::Connect {
                addr: addr.to_string(),
                reason: format!("open gate: {e}"),
            })?;
        // Someone else may have opened it while we waited.
        if let Some(c) = self.live_conn(addr) {
            return Ok(c);
        }
        let conn = Rc::new(Conn::open(addr, conn_config(&self.inner.cfg)).await?);
        self.inner
            .conns
            .borrow_mut()
            .insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// The open connection the routing table names for `target`, if there is one.
    fn cached_conn(&self, target: Target) -> Option<Rc<Conn>> {
        let routing = self.inner.routing.borrow();
        self.live_conn(routing.addr_for(target))
    }

    fn live_conn(&self, addr: &str) -> Option<Rc<Conn>> {
        let mut conns = self.inner.conns.borrow_mut();
        match conns.get(addr) {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                conns.remove(addr);
                None
            }
            None => None,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let s = self.inner.jitter_seed.get();
        let s = s ^ (s << 13);
        let s = s ^ (s >> 7);
        let s = s ^ (s << 17);
        self.inner.jitter_seed.set(s);
        self.inner.cfg.retry.backoff(attempt, s)
    }

    /// Sends `op` to the shard it belongs to and returns the answer, following
    /// `WrongShard`/`NotLeader` hints and retrying broken connections within the retry
    /// policy and the request timeout. A write keeps one (session, seq) over all its
    /// attempts, so the server applies it at most once.
    pub async fn execute(&self, op: Op) -> Result<Response, ClientError> {
        if !is_write(&op) {
            let req = Request {
                session: 0,
                seq: 0,
                op,
            };
            return self.attempt_all(req).await.0;
        }
        let session = self.take_session();
        let req = Request {
            session: session.id,
            seq: session.next_seq,
            op,
        };
        let (result, maybe_lost) = self.attempt_all(req).await;
        if !maybe_lost {
            self.return_session(session);
        }
        result
    }

    /// Runs the attempts of one request. Also says whether some attempt may have reached
    /// the server without its answer reaching us (a connection broke or the time ran out
    /// after sending): the session of such a write is retired.
    async fn attempt_all(&self, req: Request) -> (Result<Response, ClientError>, bool) {
        let mut maybe_lost = false;
        let result = self.attempts(&req, &mut maybe_lost).await;
        (result, maybe_lost)
    }

    async fn attempts(
        &self,
        req: &Request,
        maybe_lost: &mut bool,
    ) -> Result<Response, ClientError> {
        let name = op_name(&req.op);
        let budget = self.inner.cfg.request_timeout;
        let start = Instant::now();
        let mut attempt = 1u32;
        // Addresses this request could not reach: a hint pointing back at one of them
        // (a follower still naming its dead leader) is not news, so it waits.
        let mut unreachable: Vec<String> = Vec::new();
        loop {
            let remaining = budget.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                *maybe_lost = true;
                return Err(ClientError::Timeout {
                    op: name,
                    after: budget,
                });
            }
            let target = target_of(&req.op, self.shard_count());
            // The common case, an open connection to the group's shard, allocates nothing.
            let (conn, opened_for) = match self.cached_conn(target) {
                Some(c) => (Ok(c), None),
                None => {
                    let addr = self.inner.routing.borrow().addr_for(target).to_string();
                    match with_timeout(remaining, name, self.conn(&addr)).await {
                        Ok(Ok(c)) => (Ok(c), Some(addr)),
                        Ok(Err(e)) | Err(e) => (Err(e), Some(addr)),
                    }
                }
            };
            let result = match &conn {
                Ok(conn) => {
                    let r = conn.call(req, remaining).await;
                    if matches!(
                        r,
                        Err(ClientError::ConnectionLost { .. } | ClientError::Timeout { .. })
                    ) {
                        *maybe_lost = true;
                    }
                    r
                }
                Err(e) => Err(e.clone()),
            };
            let err = match result {
                Ok(r) => {
                    if let crate::proto::ResponseBody::Topology(t) = &r.body {
                        if target == Target::Node {
                            self.inner
                                .routing
                                .borrow_mut()
                                .apply_topology(t)
                                .map_err(ClientError::Protocol)?;
                        }
                    }
                    return Ok(r);
                }
                Err(e) => e,
            };
            let addr = match (opened_for, &conn) {
                (Some(addr), _) => addr,
                (None, Ok(c)) => c.addr().to_string(),
                (None, Err(_)) => unreachable!("a cached connection is always Ok"),
            };
            let action = self
                .inner
                .cfg
                .retry
                .decide(&err, attempt, start.elapsed(), budget);
            match action {
                RetryAction::Fail => return Err(err),
                RetryAction::Reroute => {
                    let learned = self.apply_hint(&err, target, &addr) && {
                        let routing = self.inner.routing.borrow();
                        let next = routing.addr_for(target);
                        !unreachable.iter().any(|a| a == next)
                    };
                    if !learned {
                        self.sleep_then_refresh(attempt, remaining).await;
                    }
                }
                RetryAction::Backoff { refresh_topology } => {
                    if matches!(
                        err,
                        ClientError::Connect { .. } | ClientError::ConnectionLost { .. }
                    ) && !unreachable.contains(&addr)
                    {
                        unreachable.push(addr.clone());
                    }
                    let wait = self.backoff(attempt).min(remaining);
                    glommio::timer::sleep(wait).await;
                    if refresh_topology {
                        self.refresh_topology_anywhere().await;
                    }
                }
            }
            attempt += 1;
        }
    }

    /// The bootstrap node at `failed` cannot be reached: use the next configured
    /// endpoint (round robin) for node-level and any-shard requests.
    fn next_bootstrap(&self, failed: &str) {
        let eps = &self.inner.cfg.endpoints;
        if eps.len() < 2 {
            return;
        }
        let next = match eps.iter().position(|e| e == failed) {
            Some(i) => &eps[(i + 1) % eps.len()],
            None => &eps[0],
        };
        self.inner.routing.borrow_mut().set_bootstrap(next);
    }

    async fn sleep_then_refresh(&self, attempt: u32, remaining: Duration) {
        glommio::timer::sleep(self.backoff(attempt).min(remaining)).await;
        self.refresh_topology_anywhere().await;
    }

    /// Best-effort topology refresh: when the bootstrap node cannot be reached (it may
    /// be the node that just died), the next configured endpoint is asked. A failure
    /// shows up again on the next attempt.
    async fn refresh_topology_anywhere(&self) {
        for _ in 0..self.inner.cfg.endpoints.len().max(1) {
            match self.refresh_topology().await {
                Err(
                    ClientError::Connect { addr, .. } | ClientError::ConnectionLost { addr, .. },
                ) => self.next_bootstrap(&addr),
                _ => return,
            }
        }
    }

    /// Applies a routing hint; `false` when it taught nothing.
    fn apply_hint(&self, err: &ClientError, target: Target, addr: &str) -> bool {
        let mut routing = self.inner.routing.borrow_mut();
        match (err.code(), target) {
            (
                Some(ErrorCode::WrongShard {
                    group, client_port, ..
                }),
                Target::Group(g),
            ) if *group == g => routing.on_wrong_shard(addr, *group, *client_port),
            (Some(ErrorCode::NotLeader { leader }), Target::Group(g)) => {
                routing.on_not_leader(g, *leader)
            }
            _ => false,
        }
    }

    /// Put `value` at `key`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Reply<PutResponse>, ClientError> {
        self.put_with(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })
        .await
    }

    pub async fn put_with(&self, req: PutRequest) -> Result<Reply<PutResponse>, ClientError> {
        into_put(self.execute(Op::Put(req)).await?)
    }

    /// A linearizable read of one key.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Reply<RangeResult>, ClientError> {
        self.range(RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })
        .await
    }

    pub async fn range(&self, req: RangeRequest) -> Result<Reply<RangeResult>, ClientError> {
        into_range(self.execute(Op::Range(req)).await?)
    }

    /// Deletes one key.
    pub async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        self.delete_range(DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        })
        .await
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<Reply<DeleteRangeResponse>, ClientError> {
        into_delete(self.execute(Op::DeleteRange(req)).await?)
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<Reply<TxnResponse>, ClientError> {
        into_txn(self.execute(Op::Txn(req)).await?)
    }

    /// Compacts `group`'s history below `revision`.
    pub async fn compact(&self, group: u32, revision: i64) -> Result<ResponseHeader, ClientError> {
        into_compact(
            self.execute(Op::Compact {
                group,
                request: CompactRequest { revision },
            })
            .await?,
        )
    }

    /// Every group of the bootstrap node.
    pub async fn status(&self) -> Result<Reply<StatusResponse>, ClientError> {
        into_status(self.execute(Op::Status).await?)
    }

    /// The bootstrap node's view of the cluster (also refreshes routing).
    pub async fn topology(&self) -> Result<Reply<TopologyResponse>, ClientError> {
        into_topology(self.execute(Op::Topology).await?)
    }
}

fn conn_config(cfg: &ClientConfig) -> ConnConfig {
    ConnConfig {
        connect_timeout: cfg.connect_timeout,
        max_in_flight: cfg.max_in_flight_per_connection,
        max_frame_bytes: cfg.max_frame_bytes,
    }
}
